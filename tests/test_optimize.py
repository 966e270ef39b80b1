import torch

from imtranslate.infer.optimize import fold_batchnorm
from imtranslate.nets import build_net


def test_batchnorm_folding_keeps_the_function():
    torch.manual_seed(0)
    net = build_net("unet", in_channels=3, out_channels=3, num_downs=5, ngf=8, norm="batch", dropout=True)
    net.train()
    for _ in range(3):  # give the running statistics non-trivial values
        net(torch.randn(2, 3, 32, 32))
    net.eval()
    x = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        ref = net(x)
        n = fold_batchnorm(net)
        got = net(x)
    assert n == 7  # every normalised down and up block of a 5-level U-Net
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(got, ref, atol=1e-5)


def test_subpixel_rewrite_of_transposed_convs_keeps_the_function():
    from imtranslate.infer.optimize import SubpixelUpConv, subpixel_transposed_convs

    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(5, 3, 4, stride=2, padding=1)
    x = torch.randn(2, 5, 7, 9)  # odd sizes: every phase meets the border
    with torch.no_grad():
        assert torch.allclose(SubpixelUpConv(deconv)(x), deconv(x), atol=1e-5)

    net = build_net("unet", in_channels=3, out_channels=3, num_downs=5, ngf=8).eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        ref = net(x)
        n = subpixel_transposed_convs(net, max_out_channels=8)  # only the narrow ones
        assert n == 2  # the output head (3 out) and the ngf-wide one above it
        assert torch.allclose(net(x), ref, atol=1e-5)
        n += subpixel_transposed_convs(net)
        assert n == 5  # every up-sampling layer of a 5-level U-Net
        assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
        assert torch.allclose(net(x), ref, atol=1e-5)


def test_transposed_form_undoes_the_rewrite_for_export():
    from imtranslate.infer.optimize import SubpixelUpConv, subpixel_transposed_convs, transposed_form

    net = build_net("unet", in_channels=3, out_channels=3, num_downs=5, ngf=8).eval()
    subpixel_transposed_convs(net, max_out_channels=4)  # the head, as the predictor does
    back = transposed_form(net)
    assert any(isinstance(m, SubpixelUpConv) for m in net.modules())  # the predictor's net unchanged
    assert not any(isinstance(m, SubpixelUpConv) for m in back.modules())
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in back.modules()) == 5
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), net(x), atol=1e-5)
