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
