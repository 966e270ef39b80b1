"""The speed and memory levers change how the maths runs, never the maths: each is checked
against the plain path it replaces."""
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from conftest import ALL_TASKS
from imtranslate.data import build_dataset, check_dataset
from imtranslate.nets import layers
from imtranslate.tasks import get_task
from imtranslate.train.stepping import build_task


def _check_same_conv(fast, ref, x):
    ref.load_state_dict(fast.state_dict())  # same parameters, same keys
    calls = []
    orig = layers._NativeConv.apply
    layers._NativeConv.apply = lambda *a: calls.append(1) or orig(*a)
    try:
        y = fast(x)
    finally:
        layers._NativeConv.apply = orig
    assert calls, "the GEMM path was not taken"
    y_ref = ref(x)
    assert y.shape == y_ref.shape and torch.allclose(y, y_ref, atol=1e-5)
    g = torch.autograd.grad(y.square().sum(), [x, *fast.parameters()])
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *ref.parameters()])
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    with torch.inference_mode():
        assert torch.allclose(fast(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm_conv_on_small_wide_maps_matches_conv2d(pad_mode, bias):
    torch.manual_seed(0)
    fast = layers.Conv2d(1024, 8, 3, padding=1, padding_mode=pad_mode, bias=bias)
    x = torch.randn(2, 1024, 5, 6, requires_grad=True)
    assert layers._native_conv_wins(x, fast.weight)  # this shape takes the GEMM path
    _check_same_conv(fast, nn.Conv2d(1024, 8, 3, padding=1, padding_mode=pad_mode, bias=bias), x)


@pytest.mark.parametrize("shape", [(1024, 8, 3, 5), (16, 3, 9, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_gemm_conv_transpose_matches_conv_transpose2d(shape, bias):
    c_in, c_out, h, w = shape
    torch.manual_seed(0)
    fast = layers.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)
    x = torch.randn(2, c_in, h, w, requires_grad=True)
    assert layers._native_conv_transpose_wins(x, fast.weight)
    _check_same_conv(fast, nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias), x)


def test_gemm_conv_is_not_used_where_onednn_is_faster():
    w = torch.zeros(8, 512, 3, 3)
    assert not layers._native_conv_wins(torch.zeros(1, 512, 16, 16), w)  # 512 channels on 16x16
    assert layers._native_conv_wins(torch.zeros(1, 512, 8, 8), w)  # ... on 8x8: the GEMM path
    assert not layers._native_conv_wins(torch.zeros(1, 256, 8, 8), torch.zeros(64, 256, 3, 3))
    # tiny convolutions (<= 256 k multiply-adds per picture on <= 16x16 output positions, groups 1)
    assert layers._native_conv_wins(torch.zeros(1, 8, 16, 16), torch.zeros(8, 8, 4, 4), (2, 2))
    assert not layers._native_conv_wins(torch.zeros(1, 8, 16, 16), torch.zeros(8, 1, 4, 4), (2, 2), groups=8)
    assert not layers._native_conv_wins(torch.zeros(1, 4, 128, 128), torch.zeros(4, 4, 4, 4), (2, 2))  # 64x64 out
    assert not layers._native_conv_wins(torch.zeros(1, 32, 16, 16), torch.zeros(32, 32, 4, 4), (2, 2))  # 1 M
    for batch in (1, 4):  # per picture: a batch runs the kernels its pictures run one by one
        assert layers._native_conv_wins(torch.zeros(batch, 16, 16, 16), torch.zeros(16, 16, 4, 4), (2, 2))
        assert layers._native_conv_transpose_wins(torch.zeros(batch, 16, 4, 4), torch.zeros(16, 8, 4, 4))
    assert not layers._native_conv_transpose_wins(torch.zeros(1, 16, 16, 16), torch.zeros(16, 8, 4, 4))  # 524 k
    assert not layers._native_conv_transpose_wins(torch.zeros(1, 8, 32, 32), torch.zeros(8, 8, 4, 4))
    w = torch.zeros(8, 1024, 3, 3)
    assert not layers._native_conv_wins(torch.zeros(1, 1024, 32, 32), w)  # a large map
    assert layers._native_conv_wins(torch.zeros(1, 1024, 16, 32), w)
    assert not layers._native_conv_wins(torch.zeros(1, 1024, 16, 16, dtype=torch.bfloat16), w.bfloat16())
    wt = torch.zeros(1024, 256, 4, 4)
    assert not layers._native_conv_transpose_wins(torch.zeros(1, 1024, 16, 16), wt)
    assert not layers._native_conv_transpose_wins(torch.zeros(1, 256, 64, 64), torch.zeros(256, 64, 4, 4))
    assert layers._native_conv_transpose_wins(torch.zeros(1, 512, 1, 1), torch.zeros(512, 512, 4, 4))
    assert not layers._native_conv_transpose_wins(torch.zeros(1, 512, 16, 16), torch.zeros(512, 128, 4, 4))


def test_weight_bound_layers_of_a_bf16_run_take_the_fp32_gemm_path():
    """Under CPU bf16 autocast a weight-bound layer (512 channels on an 8x8 map) runs in fp32 on
    the GEMM path and hands on bf16 as autocast's conv would; compute-bound ones stay bf16."""
    torch.manual_seed(0)
    fast = layers.Conv2d(512, 16, 4, stride=2, padding=1)
    ref = nn.Conv2d(512, 16, 4, stride=2, padding=1)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 512, 8, 8, requires_grad=True)
    calls = []
    orig = layers._NativeConv.apply
    layers._NativeConv.apply = lambda *a: calls.append(a[0].dtype) or orig(*a)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layers._native_conv_wins(x, fast.weight, (2, 2))
            y = fast(x)
    finally:
        layers._NativeConv.apply = orig
    assert calls == [torch.float32]  # the GEMM path, in fp32
    assert y.dtype is torch.bfloat16
    y_ref = ref(x)  # fp32
    assert torch.allclose(y.float(), y_ref, rtol=1e-2, atol=1e-2 * y_ref.abs().max().item())
    (gx,) = torch.autograd.grad(y.float().square().sum(), [x])
    (gx_ref,) = torch.autograd.grad(y_ref.square().sum(), [x])
    assert gx.dtype is torch.float32 and torch.allclose(gx, gx_ref, rtol=0.05, atol=0.05 * gx_ref.abs().max().item())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # pix2pixHD's residual blocks: compute-bound, bf16
        assert not layers._native_conv_wins(torch.zeros(1, 1024, 16, 16), torch.zeros(8, 1024, 3, 3))
        assert not layers._native_conv_transpose_wins(torch.zeros(1, 64, 64, 64), torch.zeros(64, 3, 4, 4))
        assert layers._native_conv_transpose_wins(torch.zeros(1, 1024, 4, 4), torch.zeros(1024, 512, 4, 4))
    assert layers._native_conv_wins(torch.zeros(1, 1024, 16, 16), torch.zeros(8, 1024, 3, 3))  # fp32: GEMM
    assert layers._native_conv_transpose_wins(torch.zeros(1, 64, 64, 64), torch.zeros(64, 3, 4, 4))  # fp32 head


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
def test_nhwc_inference_conv_for_odd_input_widths(pad_mode):
    """pix2pixHD's first layer (36 channels in, 7x7) runs via NHWC in inference, same numbers."""
    torch.manual_seed(0)
    fast = layers.Conv2d(36, 8, 7, padding=3, padding_mode=pad_mode)
    ref = nn.Conv2d(36, 8, 7, padding=3, padding_mode=pad_mode)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 36, 128, 130)
    calls = []
    orig = torch.Tensor.contiguous
    with torch.no_grad():
        assert layers._nhwc_conv_wins(x, fast.weight, fast.bias, 1)
        torch.Tensor.contiguous = lambda t, *a, **k: calls.append(k.get("memory_format")) or orig(t, *a, **k)
        try:
            y = fast(x)
        finally:
            torch.Tensor.contiguous = orig
        assert torch.channels_last in calls  # it did run in NHWC
        assert y.is_contiguous() and torch.allclose(y, ref(x), atol=1e-5)
    # training, 3x3 kernels, widths that are a multiple of 16, few channels, small maps: NCHW as before
    assert not layers._nhwc_conv_wins(x, fast.weight, fast.bias, 1)  # grad enabled, weight needs it
    with torch.no_grad():
        assert not layers._nhwc_conv_wins(x, torch.zeros(8, 36, 3, 3), None, 1)
        assert not layers._nhwc_conv_wins(torch.zeros(1, 32, 128, 128), torch.zeros(8, 32, 7, 7), None, 1)
        assert not layers._nhwc_conv_wins(torch.zeros(1, 3, 256, 256), torch.zeros(8, 3, 7, 7), None, 1)
        assert not layers._nhwc_conv_wins(torch.zeros(1, 36, 64, 64), torch.zeros(8, 36, 7, 7), None, 1)


def _run_steps(cfg, steps=3):
    check_dataset(cfg.data)
    ds = build_dataset(cfg.data, "train", seed=0)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    torch.manual_seed(0)
    task = build_task(cfg, "cpu")  # with the training loop's stepper, as train() runs it
    batch = task.to_device(batch)
    losses = []
    for step in range(steps):
        task.on_step_start(step)
        torch.manual_seed(100 + step)  # dropout, temporal warps: the same draws in both runs
        losses.append(task.train_step(batch, step))
    return task, losses


@pytest.mark.parametrize("task_name", ALL_TASKS)
def test_step_in_backward_gives_the_same_updates(tiny, task_name):
    """Each parameter's Adam update applied inside backward() (its gradient freed at once) gives
    the same parameters, moments and losses as the usual step after backward()."""
    a, la = _run_steps(tiny(task_name, extra=["train.step_in_backward=true"]))
    b, lb = _run_steps(tiny(task_name, extra=["train.step_in_backward=false"]))
    assert a.stepper.hooked and not b.stepper.hooked
    for x, y in zip(la, lb):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), k
    for key in a.nets:
        for (name, p), q in zip(a.nets[key].named_parameters(), b.nets[key].parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), f"{key}.{name}"
    for key in a.optimizers:
        sa, sb = a.optimizers[key].state_dict()["state"], b.optimizers[key].state_dict()["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            assert torch.equal(sa[i]["step"], sb[i]["step"])
            assert torch.allclose(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"], rtol=1e-4, atol=1e-10)
    # no gradient is left behind
    assert all(p.grad is None for n in a.nets.values() for p in n.parameters())


def test_pix2pixhd_runs_the_discriminator_once_per_picture(tiny):
    """One D pass over the real and one over the generated picture serve the D loss, the G
    adversarial loss and feature matching (as pix2pixHD computes them from the same D)."""
    cfg = tiny("pix2pixhd")
    check_dataset(cfg.data)
    batch = next(iter(DataLoader(build_dataset(cfg.data, "train", seed=0), batch_size=2)))
    task = get_task("pix2pixhd")(cfg, "cpu")
    task.on_step_start(0)
    D = task.nets["D"]
    calls = []
    handle = D.register_forward_hook(lambda *a: calls.append(1))
    before = [p.detach().clone() for p in D.parameters()]
    task.train_step(task.to_device(batch), 0)
    handle.remove()
    assert len(calls) == 2
    assert any(not torch.equal(p, q) for p, q in zip(D.parameters(), before))  # D did learn
