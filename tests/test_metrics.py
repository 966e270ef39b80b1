"""Tests for imtranslate.metrics (L1/PSNR/SSIM, accumulator, FID and LPIPS with random weights)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imtranslate import metrics as M
from imtranslate.errors import WeightsMissingError

skimage_metrics = pytest.importorskip("skimage.metrics")


def _pair(shape, seed=0, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g) * 2 - 1
    b = (a + noise * torch.randn(shape, generator=g)).clamp(-1, 1)
    return a, b


# ------------------------------------------------------------------ L1 / PSNR
def test_l1_and_psnr_constant_offset():
    target = torch.zeros(2, 3, 16, 16)  # 0.5 in [0, 1] units
    pred = torch.full_like(target, 0.2)  # 0.6 -> error 0.1 in [0, 1] units
    assert torch.allclose(M.l1(pred, target), torch.tensor([0.1, 0.1]), atol=1e-6)
    p = M.psnr(pred, target)
    assert p.shape == (2,)
    assert torch.allclose(p, torch.tensor([20.0, 20.0]), atol=1e-4)
    # data_range scales the peak: 20 log10(2) dB more
    assert torch.allclose(M.psnr(pred, target, data_range=2.0), p + 20 * math.log10(2), atol=1e-4)


def test_one_psnr_convention_for_images_and_video():
    from imtranslate.infer.video_translate import video_psnr

    assert M.MSE_FLOOR == 1e-10
    assert M.psnr_from_mse(0.0) == pytest.approx(100.0) and M.psnr_from_mse(0.01) == pytest.approx(20.0)
    assert torch.allclose(M.psnr_from_mse(torch.tensor([0.0, 0.01])), torch.tensor([100.0, 20.0]))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    noisy = [np.clip(f.astype(int) + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8) for f in frames]
    assert video_psnr(frames, frames) == pytest.approx(100.0)  # identical clips: the image cap, not inf
    # a one-frame clip and the same frame as an image tensor give one number
    as_tensor = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 127.5 - 1 for f in (frames[0], noisy[0])]
    assert video_psnr(frames[:1], noisy[:1]) == pytest.approx(float(M.psnr(*as_tensor)[0]), abs=1e-4)


def test_psnr_identical_is_capped():
    a, _ = _pair((3, 3, 8, 8))
    p = M.psnr(a, a)
    assert torch.isfinite(p).all()
    assert torch.allclose(p, torch.full((3,), 100.0))  # 10 log10(1 / 1e-10)
    assert (M.l1(a, a) == 0).all()


def test_per_image_values_are_independent():
    a, b = _pair((4, 3, 12, 12))
    full = M.psnr(a, b)
    for i in range(4):
        assert torch.allclose(full[i], M.psnr(a[i : i + 1], b[i : i + 1])[0])


def test_inputs_are_clamped_and_shapes_checked():
    t = torch.zeros(1, 1, 8, 8)
    assert torch.allclose(M.l1(torch.full_like(t, 5.0), t), torch.tensor([0.5]))
    with pytest.raises(ValueError):
        M.l1(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError):
        M.ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


# ------------------------------------------------------------------ SSIM
@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 1, 40, 33), (1, 3, 11, 11), (1, 3, 23, 70)])
def test_ssim_matches_skimage(shape):
    a, b = _pair(shape, seed=sum(shape))
    ours = M.ssim(a, b)
    assert ours.shape == (shape[0],)
    for i in range(shape[0]):
        x = ((a[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        y = ((b[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        ref = skimage_metrics.structural_similarity(
            x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0, channel_axis=-1,
        )
        assert abs(float(ours[i]) - ref) < 1e-3, (float(ours[i]), ref)


def test_ssim_identical_is_one_and_differentiable():
    a, b = _pair((2, 3, 32, 32))
    assert torch.allclose(M.ssim(a, a), torch.ones(2), atol=1e-5)
    b = b.clone().requires_grad_(True)
    M.ssim(a, b).sum().backward()
    assert b.grad is not None and torch.isfinite(b.grad).all()


def _ssim_bruteforce(x, y, win, sigma=1.5):
    """Direct per-window SSIM of one (H, W) channel in [0, 1]: the documented definition."""
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            px, py = x[i : i + win, j : j + win], y[i : i + win, j : j + win]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * (px - mx) ** 2).sum()
            vy = (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("hw,win", [((7, 9), 7), ((10, 10), 9), ((3, 5), 3), ((1, 4), 1)])
def test_ssim_small_images_shrink_the_window(hw, win):
    a, b = _pair((1, 2) + hw, seed=3)
    ours = float(M.ssim(a, b)[0])
    x, y = ((a[0] + 1) / 2).double().numpy(), ((b[0] + 1) / 2).double().numpy()
    ref = np.mean([_ssim_bruteforce(x[c], y[c], win) for c in range(2)])
    assert math.isfinite(ours)
    assert abs(ours - ref) < 1e-4


# ------------------------------------------------------------------ accumulator
def test_metric_accumulator_means():
    acc = M.MetricAccumulator()
    assert acc.count == 0
    assert all(math.isnan(v) for v in acc.compute().values())
    batches = [_pair((n, 3, 16, 16), seed=n) for n in (3, 1, 4)]
    for a, b in batches:
        per_image = acc.update(a, b)
        assert set(per_image) == {"l1", "psnr", "ssim"} and per_image["psnr"].shape == (a.shape[0],)
    assert acc.count == 8
    a = torch.cat([p for p, _ in batches])
    b = torch.cat([t for _, t in batches])
    got = acc.compute()
    assert set(got) == {"l1", "psnr", "ssim"}
    assert got["l1"] == pytest.approx(float(M.l1(a, b).mean()), abs=1e-6)
    assert got["psnr"] == pytest.approx(float(M.psnr(a, b).mean()), abs=1e-4)
    assert got["ssim"] == pytest.approx(float(M.ssim(a, b).mean()), abs=1e-6)
    assert all(isinstance(v, float) for v in got.values())
    acc.reset()
    assert acc.count == 0


# ------------------------------------------------------------------ Fréchet distance
def test_frechet_distance_hand_cases():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    mu, sigma = M.feature_statistics(feats)
    assert M.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # Same covariance, shifted means: the distance is the squared mean distance.
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 0.25])
    mu2, sigma2 = M.feature_statistics(feats + shift)
    assert M.frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(
        float(shift @ shift), rel=1e-8
    )
    # Diagonal covariances: sum((sqrt(a) - sqrt(b))^2) + |dmu|^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    d = np.array([1.0, 1.0, 0.0])
    expected = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + d @ d)
    got = M.frechet_distance(np.zeros(3), np.diag(a), d, np.diag(b))
    assert got == pytest.approx(expected, abs=1e-6)


def _frechet_reference(f1, f2):
    """The textbook FID route (pytorch-fid's): np.cov statistics and scipy's matrix square root."""
    from scipy import linalg

    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_routes_agree():
    rng = np.random.default_rng(1)
    f1 = rng.normal(size=(300, 20))
    f2 = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20)) * 0.5 + 0.3
    m1, s1 = M.feature_statistics(f1)
    m2, s2 = M.feature_statistics(f2)
    scipy_value = _frechet_reference(f1, f2)
    assert M.frechet_distance(m1, s1, m2, s2) == pytest.approx(scipy_value, rel=1e-8)
    assert M.fid_from_features(f1, f2) == pytest.approx(scipy_value, rel=1e-8)
    # Fewer samples than dimensions: features and statistics give the same distance.
    g1, g2 = f1[:12], f2[:15]
    direct = M.frechet_distance(*M.feature_statistics(g1), *M.feature_statistics(g2))
    assert M.fid_from_features(g1, g2) == pytest.approx(direct, rel=1e-6)
    assert M.fid_from_features(g1, g1) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        M.feature_statistics(f1[:1])
    with pytest.raises(ValueError, match="at least 2"):
        M.fid_from_features(f1[:1], f2)


# Today's numbers (before FID and LPIPS moved to torchmetrics), computed by the hand-written
# implementation on these fixed inputs and weights and pinned here: the torchmetrics-based code must
# give the same values.
PINNED_FID_FEATURES = {"n>d": 12.050160810678186, "n<=d": 67.0264496225807}
PINNED_FID_IMAGES = 530252.9652030335
PINNED_LPIPS = {"vgg": [0.001991027733311057, 0.002018583472818136],
                "alex": [0.001849511987529695, 0.0017774103907868266]}


def test_fid_from_features_agrees_with_the_hand_written_fid():
    rng = np.random.default_rng(5)
    f1 = rng.normal(size=(40, 16))
    f2 = rng.normal(size=(30, 16)) * 1.5 + 0.25
    assert M.fid_from_features(f1, f2) == pytest.approx(PINNED_FID_FEATURES["n>d"], rel=1e-9)
    g1 = rng.normal(size=(6, 64))
    g2 = rng.normal(size=(9, 64)) * 0.5 + 0.1
    assert M.fid_from_features(g1, g2) == pytest.approx(PINNED_FID_FEATURES["n<=d"], rel=1e-7)


# ------------------------------------------------------------------ FID / LPIPS with local weights
@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """Random Inception-v3 weights, BatchNorm statistics calibrated so features are O(1)."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average of one batch = that batch's statistics
    net.train()
    with torch.no_grad():
        net(torch.rand(1, 3, 299, 299) * 2 - 1)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}  # fc optional
    path = tmp_path_factory.mktemp("weights") / M.FID_WEIGHTS_NAME
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_fid_agrees_with_the_hand_written_fid(inception_file):
    a, b = _pair((3, 3, 32, 32), seed=21, noise=0.8)
    assert M.fid(a, b, weights=inception_file) == pytest.approx(PINNED_FID_IMAGES, rel=1e-5)
    # streamed in batches of any size: the same statistics
    assert M.fid([a[:1], a[1:]], [b[:2], b[2:]], weights=inception_file, batch_size=1) == pytest.approx(
        PINNED_FID_IMAGES, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 real"):
        M.fid(a[:1], b, weights=inception_file)


VGG16_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
               14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512),
               28: (512, 512)}
ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


def _lpips_state(net):
    """LPIPS weights in the file layout, drawn from a seeded generator (independent of the code tested)."""
    g = torch.Generator().manual_seed(123)
    convs = {i: (o, c, 3) for i, (o, c) in VGG16_CONVS.items()} if net == "vgg" else ALEX_CONVS
    chans = [64, 128, 256, 512, 512] if net == "vgg" else [64, 192, 384, 256, 256]
    state = {}
    for i, (o, c, k) in convs.items():
        state[f"features.{i}.weight"] = torch.randn(o, c, k, k, generator=g) * (2.0 / (c * k * k)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(o, generator=g) * 0.01
    for k, c in enumerate(chans):
        state[f"lin.{k}.weight"] = torch.rand(1, c, 1, 1, generator=g) / c
    return state


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_agrees_with_the_hand_written_lpips(tmp_path, net):
    from safetensors.torch import save_file

    path = tmp_path / f"lpips_{net}.safetensors"
    save_file(_lpips_state(net), str(path), metadata={"format": M.LPIPS_FORMAT, "net": net})
    a, b = _pair((2, 3, 64, 64), seed=11)
    got = M.lpips(a, b, weights=path)
    assert got.shape == (2,)
    assert torch.allclose(got, torch.tensor(PINNED_LPIPS[net]), rtol=1e-5, atol=0)


def test_lpips_from_a_bare_torchvision_backbone(tmp_path):
    """The hub cache's vgg16-397923af.pth alone works: the linear layers are torchmetrics' copy of
    the official v0.1 ones."""
    state = _lpips_state("vgg")
    backbone = {k: v for k, v in state.items() if k.startswith("features.")}
    backbone["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file holds the classifier too
    torch.save(backbone, tmp_path / "vgg16-397923af.pth")
    lins, _ = M._weights.read_state_dict(M._bundled_lins("vgg"))
    full = dict(backbone)
    full.update({f"lin.{k}.weight": lins[f"lin{k}.model.1.weight"] for k in range(5)})
    del full["classifier.0.weight"]
    save_file_path = tmp_path / "full.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in full.items()}, str(save_file_path), metadata={"net": "vgg"})
    a, b = _pair((1, 3, 32, 32), seed=3)
    assert torch.allclose(M.lpips(a, b, weights=tmp_path / "vgg16-397923af.pth"), M.lpips(a, b, weights=save_file_path))


def test_fid_end_to_end_with_random_weights(inception_file):
    a, b = _pair((2, 3, 32, 32), seed=1, noise=0.8)
    feats = M.inception_features(a, weights=inception_file)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and feats.std(0).mean() > 1e-3
    # batches may come as a list; batching does not change the features
    again = M.inception_features([a[:1], a[1:]], weights=inception_file)
    assert np.allclose(again, feats, rtol=1e-4, atol=1e-5 * np.abs(feats).max())
    d_same = M.fid_from_features(feats, again)
    d_diff = M.fid(a, b, weights=inception_file)
    assert math.isfinite(d_diff) and d_diff > 0
    assert abs(d_same) < 1e-4 * d_diff
    grey = M.inception_features(a[:1, :1], weights=inception_file)
    assert grey.shape == (1, 2048)


def test_fid_default_path_and_missing(inception_file, tmp_path, monkeypatch):
    monkeypatch.setenv(M.WEIGHTS_ENV, str(inception_file.parent))
    assert M.optional_metrics_status()["fid"][0] is True
    a, b = _pair((2, 3, 16, 16), seed=2)
    assert np.isfinite(M.inception_features(a[:1])).all()  # found via $IMTRANSLATE_WEIGHTS
    monkeypatch.setenv(M.WEIGHTS_ENV, str(tmp_path))
    ok, message = M.optional_metrics_status()["fid"]
    assert not ok and str(tmp_path / M.FID_WEIGHTS_NAME) in message
    with pytest.raises(WeightsMissingError) as e:
        M.fid(a, b)
    assert str(tmp_path / M.FID_WEIGHTS_NAME) in str(e.value)


def test_lpips_end_to_end_with_random_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = M.LPIPSNet("vgg").save(tmp_path / M.LPIPS_WEIGHTS_NAME)
    a, b = _pair((3, 3, 64, 64), seed=4)
    d = M.lpips(a, b, weights=path)
    assert d.shape == (3,) and torch.isfinite(d).all() and (d > 0).all()
    assert torch.equal(M.lpips(a, a, weights=path), torch.zeros(3))
    assert M.lpips(a[:, :1], b[:, :1], weights=path).shape == (3,)
    # default location from $IMTRANSLATE_WEIGHTS
    monkeypatch.setenv(M.WEIGHTS_ENV, str(tmp_path))
    assert M.optional_metrics_status()["lpips"][0] is True
    assert torch.allclose(M.lpips(a, b), d)
    # gradients reach the inputs
    x = b.clone().requires_grad_(True)
    M.lpips(a, x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_lpips_missing_and_broken_weights(tmp_path, monkeypatch):
    a, b = _pair((1, 3, 32, 32))
    monkeypatch.setenv(M.WEIGHTS_ENV, str(tmp_path))
    ok, message = M.optional_metrics_status()["lpips"]
    expected = tmp_path / M.LPIPS_WEIGHTS_NAME
    assert not ok and str(expected) in message and "convert_lpips_weights" in message
    with pytest.raises(WeightsMissingError) as e:
        M.lpips(a, b)
    assert str(expected) in str(e.value)
    other = tmp_path / "elsewhere.safetensors"
    with pytest.raises(WeightsMissingError, match="elsewhere.safetensors"):
        M.lpips(a, b, weights=other)
    other.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsMissingError, match="elsewhere.safetensors"):
        M.lpips(a, b, weights=other)


def test_convert_lpips_weights(tmp_path):
    torch.manual_seed(1)
    ref = M.LPIPSNet("alex")
    state = ref.file_state_dict()  # the layout of the weights file
    # What a user downloads: torchvision's backbone checkpoint (classifier included) ...
    backbone = {k: v for k, v in state.items() if k.startswith("features.")}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)
    torch.save(backbone, tmp_path / "alexnet-owt.pth")
    # ... and the official linear layers (Dropout at index 0, the 1x1 conv at index 1).
    lins = {f"lin{k}.model.1.weight": state[f"lin.{k}.weight"] for k in range(5)}
    torch.save(lins, tmp_path / "alex.pth")
    out = M.convert_lpips_weights(tmp_path / "alexnet-owt.pth", tmp_path / "alex.pth",
                                  tmp_path / "out" / "lpips_alex.safetensors")
    assert out.is_file()
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["net"] == "alex"
        assert not any(k.startswith("classifier") for k in f.keys())
    a, b = _pair((2, 3, 64, 64), seed=5)
    with torch.no_grad():
        expected = ref.eval()(a, b)
    assert torch.allclose(M.lpips(a, b, weights=out), expected, atol=1e-6)
    # Linear layers made for another backbone are refused with a clear message.
    torch.save({f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1)
                for k, c in enumerate([64, 128, 256, 512, 512])}, tmp_path / "vgg.pth")
    with pytest.raises(WeightsMissingError, match="lin1"):
        M.convert_lpips_weights(tmp_path / "alexnet-owt.pth", tmp_path / "vgg.pth",
                                tmp_path / "bad.safetensors")


def test_eval_finds_fid_and_lpips_weights_in_the_weights_folder(inception_file, tmp_path, monkeypatch):
    """`imtranslate eval` streams FID and LPIPS when their files are in $IMTRANSLATE_WEIGHTS."""
    import shutil

    from conftest import tiny_overrides
    from imtranslate.config import load_config
    from imtranslate.evaluate import evaluate
    from imtranslate.train.loop import train

    run = train(load_config(None, tiny_overrides("pix2pix", tmp_path, steps=1)), log=lambda m: None)
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(inception_file, folder / M.FID_WEIGHTS_NAME)
    torch.manual_seed(0)
    M.LPIPSNet("vgg").save(folder / M.LPIPS_WEIGHTS_NAME)
    monkeypatch.setenv(M.WEIGHTS_ENV, str(folder))
    res = evaluate(run / "checkpoints" / "last.safetensors", tmp_path / "synthetic" / "val", device="cpu",
                   progress=False, log=lambda m: None)
    assert res["count"] == 4 and res["skipped"] == {}
    assert math.isfinite(res["metrics"]["fid"]) and res["metrics"]["fid"] >= 0
    assert math.isfinite(res["metrics"]["lpips"]) and res["metrics"]["lpips"] > 0
    monkeypatch.setenv(M.WEIGHTS_ENV, str(tmp_path / "empty"))
    res = evaluate(run / "checkpoints" / "last.safetensors", tmp_path / "synthetic" / "val", device="cpu",
                   progress=False, log=lambda m: None)
    assert set(res["skipped"]) == {"fid", "lpips"} and "fid" not in res["metrics"]
    assert str(tmp_path / "empty" / M.FID_WEIGHTS_NAME) in res["skipped"]["fid"]
