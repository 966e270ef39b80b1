"""Winograd F(2x2, 3x3) for inference (nets/winograd.py, Conv2d.winograd, infer/optimize.py)."""
import pytest
import torch
import torch.nn.functional as F

from imtranslate.nets.layers import Conv2d
from imtranslate.nets.winograd import winograd_conv3x3, winograd_filters, winograd_wins


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("h,w", [(6, 6), (7, 10), (3, 3), (12, 5)])
def test_valid_conv_equals_conv2d(h, w):
    torch.manual_seed(0)
    x, wt, b = torch.randn(2, 5, h, w), torch.randn(4, 5, 3, 3), torch.randn(4)
    got = winograd_conv3x3(x, winograd_filters(wt), b)
    ref = F.conv2d(x, wt, b)
    assert got.shape == ref.shape and got.is_contiguous()
    assert _rel(got, ref) < 1e-5
    # in float64 the transforms are exact: the same function, not an approximation of it
    got64 = winograd_conv3x3(x.double(), winograd_filters(wt.double()), b.double())
    assert _rel(got64, F.conv2d(x.double(), wt.double(), b.double())) < 1e-12


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="3x3 filters"):
        winograd_filters(torch.randn(4, 5, 5, 5))
    with pytest.raises(ValueError, match="input channels"):
        winograd_conv3x3(torch.randn(1, 6, 8, 8), winograd_filters(torch.randn(4, 5, 3, 3)))


def test_rule():
    assert winograd_wins(1024, 1024, 16 * 16)  # pix2pixHD's residual blocks at 256^2
    assert winograd_wins(512, 512, 32 * 32)
    assert not winograd_wins(1024, 1024, 4 * 4)  # too few tiles
    assert not winograd_wins(1024, 1024, 128 * 64)  # large maps: oneDNN is faster
    assert not winograd_wins(128, 128, 32 * 32)  # narrow convs: memory-bound, no gain


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_conv_module_runs_it_in_inference_only(mode):
    torch.manual_seed(0)
    m = Conv2d(256, 260, 3, 1, 1, padding_mode=mode).eval()
    x = torch.randn(3, 256, 9, 11)  # odd output size: tiles cropped
    with torch.no_grad():
        ref = m(x)
        m.winograd = True
        got = m(x)
        one_by_one = torch.cat([m(x[i:i + 1]) for i in range(3)])
    assert "_winograd_cache" in m.__dict__  # it did run
    assert _rel(got, ref) < 1e-5
    assert torch.equal(got, one_by_one)  # a batch gives exactly what its pictures give alone
    # channels-last in, channels-last out (the net's memory format is kept)
    with torch.no_grad():
        got_cl = m(x.contiguous(memory_format=torch.channels_last))
    assert got_cl.is_contiguous(memory_format=torch.channels_last) and _rel(got_cl, ref) < 1e-5
    # with a gradient wanted it is PyTorch's conv (and its gradient)
    m.__dict__.pop("_winograd_cache")
    xg = x[:1].clone().requires_grad_()
    m(xg).sum().backward()
    assert "_winograd_cache" not in m.__dict__ and xg.grad is not None


def test_small_maps_and_narrow_convs_keep_pytorch_kernels():
    m = Conv2d(256, 256, 3, 1, 1).eval()
    m.winograd = True
    with torch.no_grad():
        m(torch.randn(1, 256, 4, 4))  # 16 positions
    assert "_winograd_cache" not in m.__dict__


def test_cache_follows_the_weights():
    torch.manual_seed(0)
    m = Conv2d(256, 256, 3, 1, 1).eval()
    m.winograd = True
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        m(x)
        m.weight.mul_(-2.0)  # in place, as load_state_dict does
        got = m(x)
        m.winograd = False
        ref = m(x)
        m.winograd = True
        m.weight = torch.nn.Parameter(torch.randn_like(m.weight))  # a new tensor
        got_new = m(x)
        m.winograd = False
        ref_new = m(x)
    assert _rel(got, ref) < 1e-5 and _rel(got_new, ref_new) < 1e-5


def test_predictor_rewrite_keeps_the_function():
    from imtranslate.infer.optimize import optimize_for_inference, winograd_convs
    from imtranslate.nets import Pix2PixHDGenerator
    from imtranslate.tasks import load_config

    torch.manual_seed(0)
    G = Pix2PixHDGenerator(in_channels=3, out_channels=3, ngf=16, n_downsampling=4, n_blocks=1,
                           n_local_enhancers=0).eval()  # 256-wide residual blocks at 1/16
    ref_net = Pix2PixHDGenerator(in_channels=3, out_channels=3, ngf=16, n_downsampling=4, n_blocks=1,
                                 n_local_enhancers=0).eval()
    ref_net.load_state_dict(G.state_dict())
    x = torch.randn(1, 3, 128, 128)  # 8x8 maps at the residual blocks
    cfg = load_config(None, ["task=pix2pixhd"])
    with torch.no_grad():
        ref = ref_net(x)
        nhwc = optimize_for_inference(G, cfg.train, "cpu")
        got = G(x.contiguous(memory_format=torch.channels_last) if nhwc else x)
    flagged = [m for m in G.modules() if getattr(m, "winograd", False)]
    assert len(flagged) == 2  # the residual block's two 256 -> 256 convs
    assert all("_winograd_cache" in m.__dict__ for m in flagged)
    assert torch.allclose(got, ref, atol=1e-4)
    with pytest.raises(ValueError, match="eval-mode"):
        winograd_convs(ref_net.train())


def test_environment_turns_it_off(monkeypatch):
    from imtranslate.infer.optimize import optimize_for_inference
    from imtranslate.nets import Pix2PixHDGenerator
    from imtranslate.tasks import load_config

    cfg = load_config(None, ["task=pix2pixhd"])
    make = lambda: Pix2PixHDGenerator(in_channels=3, out_channels=3, ngf=16, n_downsampling=4, n_blocks=1,
                                      n_local_enhancers=0).eval()
    monkeypatch.setenv("IMTRANSLATE_WINOGRAD", "0")
    G = make()
    optimize_for_inference(G, cfg.train, "cpu")
    assert not any(getattr(m, "winograd", False) for m in G.modules())
    monkeypatch.setenv("IMTRANSLATE_WINOGRAD", "1")
    G = make()
    optimize_for_inference(G, cfg.train, "cpu")
    assert any(getattr(m, "winograd", False) for m in G.modules())


def test_translate_cli_uses_it_and_agrees_without(tmp_path, monkeypatch):
    """``imtranslate translate`` of a pix2pixHD checkpoint whose residual blocks are 256 wide:
    the predictor runs them on Winograd, and the PNGs match those written without it."""
    import numpy as np
    from PIL import Image

    from conftest import tiny_overrides
    from imtranslate.cli import main
    from imtranslate.nets import layers

    over = tiny_overrides("pix2pixhd", tmp_path, steps=1) + [
        "model.ngf=16", "model.n_downsampling=4", "model.n_local_enhancers=0", "model.global_fraction=0",
        "model.features=false", "train.ckpt_every=1", "data.synthetic.size=64", "data.crop_size=64"]
    assert main(["train", *over]) == 0
    ckpt = next((tmp_path / "runs").iterdir()) / "checkpoints" / "last.safetensors"
    label = sorted((tmp_path / "synthetic" / "val" / "label").glob("*.png"))[0]
    big = tmp_path / "big"
    big.mkdir()
    Image.open(label).resize((128, 128), Image.NEAREST).save(big / "a.png")  # 8x8 maps at the blocks
    ran = []
    orig = layers.Conv2d._winograd_forward
    monkeypatch.setattr(layers.Conv2d, "_winograd_forward",
                        lambda self, *a: (lambda y: ran.append(y is not None) or y)(orig(self, *a)))
    outs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("IMTRANSLATE_WINOGRAD", flag)
        ran.clear()
        assert main(["translate", str(ckpt), str(big), "-o", str(tmp_path / f"out{flag}"), "--quiet"]) == 0
        outs[flag] = np.asarray(Image.open(tmp_path / f"out{flag}" / "a.png"), dtype=np.int16)
        assert any(ran) == (flag == "1")
    assert np.abs(outs["1"] - outs["0"]).max() <= 1  # 8-bit PNGs: at most one grey level of rounding
