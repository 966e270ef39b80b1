"""Stylise + super-resolve (SPEC S4): the net's sizes and parameter count, the LR inputs made on the
fly, every target's training step, checkpoints, and the CLI (CPU, tiny widths, 32-64 px)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from imtranslate.cli import main
from imtranslate.errors import ConfigError
from imtranslate.nets import build_net
from imtranslate.tasks import get_task, load_config

TINY_NET = ["model.ngf=4", "model.n_levels=2", "model.n_blocks=1", "model.ndf=4", "model.n_layers_d=2",
            "model.vgg_weights=random"]


@pytest.fixture(scope="module")
def synroot(tmp_path_factory):
    return tmp_path_factory.mktemp("stylesr_syn")


def _overrides(synroot, tmp_path, *extra, steps=2):
    return ["task=stylesr", "data.dataset=photos", f"data.synthetic.root={synroot}", "data.synthetic.n_train=6",
            "data.synthetic.n_val=2", "data.synthetic.size=48", "data.crop_size=32", "train.batch_size=2",
            f"train.steps={steps}", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
            "train.val_every=0", "train.image_every=0", "train.log_every=1", "train.ema_decay=0.5",
            f"train.out_dir={tmp_path / 'runs'}", *TINY_NET, *extra]


def _batch(task_cls, task, cfg, split="train"):
    return task.to_device(next(iter(DataLoader(task_cls.build_dataset(cfg, split), batch_size=2))))


# --------------------------------------------------------------------------------------------
# The net
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("size", [(13, 17), (31, 9), (1, 1)])
def test_output_is_exactly_scale_times_any_input(scale, separable, size):
    torch.manual_seed(0)
    net = build_net("stylesr", scale=scale, ngf=4, n_levels=3, n_blocks=1, separable=separable)
    assert net.scale == scale and net.multiple == 4
    x = torch.rand(2, 3, *size) * 2 - 1
    y = net(x)
    assert y.shape == (2, 3, scale * size[0], scale * size[1])
    assert torch.isfinite(y).all() and y.abs().max() <= 1


def test_residual_net_starts_near_bicubic_and_fusion_sees_every_scale():
    from imtranslate.data.degrade import upscale_bicubic

    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 1.6 - 0.8
    net = build_net("stylesr", scale=4, ngf=4, n_levels=3, n_blocks=1)
    bic = upscale_bicubic(x, 4)
    plain = build_net("stylesr", scale=4, ngf=4, n_levels=3, n_blocks=1, residual=False)
    # the residual net begins at the baseline; without the residual the output is far from it
    assert (net(x) - bic).abs().mean() < 0.5 * (plain(x) - bic).abs().mean()
    # each decoder level fuses the level above and all three encoder scales: 1x1 over 2*w2 + w1 + w0 ... channels
    assert [f[0].in_channels for f in net.fuse] == [16 + 4 + 8 + 16, 8 + 4 + 8 + 16]


def _expected_params(c3, w0, w1, hw, n_blocks):
    """The parameter count of a 2-level stylesr net, layer by layer, given the cost of a 3x3 conv."""
    def full(ci, co):
        return ci * co * 9 + co

    def blocks(c):
        return n_blocks * 2 * c3(c, c)

    return (full(3, w0) + blocks(w0)  # stem (always a full conv) + level 0
            + c3(w0, w1) + blocks(w1)  # stride-2 down + level 1
            + (w1 + w0 + w1) * w0 + w0 + blocks(w0)  # 1x1 fuse of up(d1), e0, up(e1) + decoder level 0
            + c3(w0, 4 * hw) + c3(hw, 4 * hw)  # two x2 pixel-shuffle stages (x4)
            + full(hw, 3))  # output conv (always full)


@pytest.mark.parametrize("separable", [False, True])
def test_separable_variant_has_the_expected_parameter_count(separable):
    def full(ci, co):
        return ci * co * 9 + co

    def sep(ci, co):  # depthwise 3x3 (no bias) + pointwise 1x1 with bias
        return ci * 9 + ci * co + co

    net = build_net("stylesr", scale=4, widths=[6, 10], n_levels=2, n_blocks=1, head_width=5, separable=separable)
    got = sum(p.numel() for p in net.parameters())
    assert got == _expected_params(sep if separable else full, 6, 10, 5, 1)
    if separable:  # and the light net is much smaller than the full one
        assert got < 0.5 * _expected_params(full, 6, 10, 5, 1)


def test_icnr_makes_the_shuffled_subpixels_start_equal():
    net = build_net("stylesr", scale=2, ngf=4, n_levels=1, n_blocks=0)
    w = net.head[0].weight  # (4 * hw, C, 3, 3): groups of 4 consecutive filters feed one shuffled channel
    assert torch.equal(w[0::4], w[1::4]) and torch.equal(w[0::4], w[3::4])
    feat = net.head[:2](torch.randn(1, 4, 5, 5))  # conv + pixel shuffle: every 2x2 block is constant
    assert torch.allclose(feat[..., 0::2, 0::2], feat[..., 1::2, 1::2])


# --------------------------------------------------------------------------------------------
# LR inputs made on the fly
# --------------------------------------------------------------------------------------------
def test_degradation_is_seeded_and_matches_its_definition():
    from imtranslate.data.degrade import Degradation, degrade_batch, downscale, gaussian_blur

    torch.manual_seed(0)
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(downscale(hr, 4, "area"), hr.reshape(2, 3, 8, 4, 8, 4).mean((3, 5)))
    assert torch.equal(gaussian_blur(hr, torch.tensor([0.0, 0.0])), hr)
    blurred = gaussian_blur(hr, torch.tensor([0.0, 1.5]))
    assert torch.allclose(blurred[0], hr[0], atol=1e-6) and blurred[1].std() < hr[1].std()
    d = Degradation(scale=4, blur=(0.5, 1.5), noise=(1.0, 8.0), jpeg=(40, 90))
    seeds = torch.tensor([7, 8])
    a, b = degrade_batch(hr, seeds, d), degrade_batch(hr, seeds, d)
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b)
    assert not torch.equal(a, degrade_batch(hr, torch.tensor([9, 8]), d))
    with pytest.raises(ValueError):
        Degradation(noise=(3.0, 1.0))


def test_items_carry_seeds_fresh_per_epoch_in_training_fixed_held_out(synroot, tmp_path):
    cfg = load_config(None, _overrides(synroot, tmp_path))
    task_cls = get_task("stylesr")
    train, val = task_cls.build_dataset(cfg, "train"), task_cls.build_dataset(cfg, "val")
    s0 = [int(train[i]["seed"]) for i in range(len(train))]
    v0 = int(val[0]["seed"])
    train.set_epoch(1)
    val.set_epoch(1)
    assert [int(train[i]["seed"]) for i in range(len(train))] != s0 and int(val[0]["seed"]) == v0
    item = train[0]
    assert item["A"].shape == (3, 32, 32) and torch.equal(item["A"], item["B"])  # a photo is its own target


# --------------------------------------------------------------------------------------------
# Each target's training step
# --------------------------------------------------------------------------------------------
def _step_changes_everything(task_cls, task, cfg):
    batch = _batch(task_cls, task, cfg)
    assert batch["A"].shape == (2, 3, 8, 8) and batch["hr"].shape == (2, 3, 32, 32)
    before = {k: {n: p.detach().clone() for n, p in net.named_parameters()} for k, net in task.nets.items()}
    logs = task.train_step(batch, 0)
    assert logs and all(np.isfinite(v) for v in logs.values())
    for k, net in task.nets.items():
        unchanged = [n for n, p in net.named_parameters() if torch.equal(before[k][n], p)]
        assert not unchanged, f"{k}: parameters that did not learn: {unchanged[:4]}"
    with torch.no_grad():
        figures = task.validation_metrics(task.generator, _batch(task_cls, task, cfg, "val"))
    assert figures and all(v.shape == (2,) and torch.isfinite(v).all() for v in figures.values())
    return logs, figures


@pytest.mark.parametrize("target", ["sr", "style"])
def test_train_step_of_target(target, synroot, tmp_path):
    torch.manual_seed(0)
    cfg = load_config(None, _overrides(synroot, tmp_path, f"model.target={target}", "model.blur=[0.2,1.0]",
                                       "model.noise=[0,4]", "model.jpeg=[60,95]", "model.lambda_tv=0.001"))
    task_cls = get_task("stylesr")
    task = task_cls(cfg, "cpu")
    logs, figures = _step_changes_everything(task_cls, task, cfg)
    if target == "sr":
        assert {"G_l1", "G_perceptual", "G_gan", "loss_D"} <= set(logs)
        assert {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(figures)
    else:
        assert {"G_content", "G_style", "G_gan", "loss_D"} <= set(logs)
        assert {"content", "style", "bicubic_style"} <= set(figures)


@pytest.fixture(scope="module")
def styleswap_ckpt(tmp_path_factory):
    """An (untrained) tiny styleswap checkpoint: enough to run the teacher pipeline."""
    from imtranslate.train.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("teacher")
    for folder, seed in (("content", 0), ("style", 1)):
        (root / folder).mkdir()
        for i in range(2):
            arr = np.random.default_rng([seed, i]).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / folder / f"p{i}.png")
    cfg = load_config(None, ["task=styleswap", "data.dataset=unpaired", f"data.root={root / 'content'}",
                             f"data.style_root={root / 'style'}", "model.vgg_weights=random",
                             "model.encoder_layer=relu2_1", "model.ngf=4", "model.depth=3", "data.crop_size=24"])
    torch.manual_seed(0)
    return save_checkpoint(root / "styleswap.safetensors", get_task("styleswap")(cfg, "cpu"), 1)


def test_teacher_target_is_the_style_swap_output_cached_on_disk(synroot, tmp_path, styleswap_ckpt, monkeypatch):
    from imtranslate.data import read_image
    from imtranslate.infer.stylize import Stylizer
    from imtranslate.tasks.stylesr import TeacherTargets

    torch.manual_seed(0)
    cfg = load_config(None, _overrides(synroot, tmp_path, "model.target=teacher", f"model.teacher={styleswap_ckpt}",
                                       f"model.teacher_cache={tmp_path / 'cache'}"))
    task_cls = get_task("stylesr")
    assert task_cls.check_data(cfg)["teacher_targets"] == 8
    cached = sorted((tmp_path / "cache").glob("*.png"))
    assert len(cached) == 8
    # the cached target is exactly what `imtranslate stylize` makes of the photo with that style
    teacher = TeacherTargets(cfg)
    rec = task_cls._records(cfg, "val")[0]
    st = Stylizer.from_checkpoint(styleswap_ckpt, device="cpu")
    assert np.array_equal(read_image(rec.b, "rgb"), st.stylize(read_image(rec.a, "rgb"), teacher.style))
    # a second run computes nothing; another style is another key
    monkeypatch.setattr(TeacherTargets, "stylise", lambda self, photo: pytest.fail("recomputed a cached target"))
    task_cls.check_data(cfg)
    other = load_config(None, _overrides(synroot, tmp_path, "model.target=teacher", f"model.teacher={styleswap_ckpt}",
                                         f"model.teacher_cache={tmp_path / 'cache'}", "model.style_size=48"))
    assert TeacherTargets(other).target_file(rec.a) != rec.b
    monkeypatch.undo()

    task = task_cls(cfg, "cpu")
    logs, figures = _step_changes_everything(task_cls, task, cfg)
    assert {"G_l1", "G_gan"} <= set(logs) and {"psnr", "bicubic_psnr", "style"} <= set(figures)


def test_config_errors_say_what_to_change(synroot, tmp_path):
    with pytest.raises(ConfigError, match="multiple of model.scale"):
        load_config(None, _overrides(synroot, tmp_path, "data.crop_size=30"))
    synthetic = load_config(None, _overrides(synroot, tmp_path, "data.dataset=synthetic"))  # resolves (defaults do)
    for attempt in (lambda: get_task("stylesr")(synthetic, "cpu"), lambda: get_task("stylesr").check_data(synthetic)):
        with pytest.raises(ConfigError, match="data.dataset=photos"):
            attempt()
    with pytest.raises(ConfigError, match="model.teacher"):
        load_config(None, _overrides(synroot, tmp_path, "model.target=teacher"))
    with pytest.raises(ConfigError, match="model.blur"):
        load_config(None, _overrides(synroot, tmp_path, "model.blur=[2,1]"))
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(None, _overrides(synroot, tmp_path, "model.target=styl"))
    with pytest.raises(ConfigError, match="model.scale"):
        load_config(None, _overrides(synroot, tmp_path, "model.scale=3"))


# --------------------------------------------------------------------------------------------
# Checkpoints and the CLI
# --------------------------------------------------------------------------------------------
def test_checkpoint_rebuilds_identical_outputs_with_a_widths_list(synroot, tmp_path):
    from imtranslate.checkpoint_file import load_generator
    from imtranslate.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = load_config(None, _overrides(synroot, tmp_path, "model.widths=[5,7]", "model.separable=true",
                                       "model.scale=2", "model.lambda_perceptual=0"))
    task_cls = get_task("stylesr")
    task = task_cls(cfg, "cpu")
    task.train_step(_batch(task_cls, task, cfg), 0)
    ckpt = save_checkpoint(tmp_path / "s.safetensors", task, 1)
    G, meta, _ = load_generator(ckpt, use_ema=False)
    assert meta["nets"]["G"]["kwargs"]["widths"] == [5, 7] and G.widths == [5, 7] and G.scale == 2
    x = torch.rand(1, 3, 11, 14) * 2 - 1
    task.generator.eval()
    with torch.no_grad():
        assert torch.equal(G.eval()(x), task.generator(x))
        assert torch.equal(task_cls.translate(G, x, cfg), G(x)) and G(x).shape == (1, 3, 22, 28)


def test_train_light_config_from_the_cli(synroot, tmp_path):
    import json

    rc = main(["train", "stylesr_light_x4", f"data.synthetic.root={synroot}", "data.synthetic.n_train=6",
               "data.synthetic.n_val=2", "data.synthetic.size=48", "data.crop_size=32", "train.steps=2",
               "train.batch_size=2", "train.val_every=0", "train.image_every=1", "train.tensorboard=true",
               "train.progress=false", f"train.out_dir={tmp_path / 'runs'}", "model.ngf=4", "model.head_width=4",
               "model.ndf=4", "model.n_layers_d=2"])
    assert rc == 0
    run = sorted((tmp_path / "runs").iterdir())[-1]
    assert (run / "checkpoints" / "last.safetensors").is_file()
    vals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [v for v in vals if v["kind"] == "val"]
    assert vals and {"psnr", "bicubic_psnr"} <= set(vals[-1])
    from imtranslate.checkpoint_file import read_meta

    spec = read_meta(run / "checkpoints" / "last.safetensors")["nets"]["G"]
    assert spec["name"] == "stylesr" and spec["kwargs"]["separable"] is True and spec["kwargs"]["scale"] == 4

    # translate: every picture comes out 4x its own (odd) size, whole or in seam-free tiles
    from PIL import Image

    src = tmp_path / "lr"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (21, 27, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 33, 3), dtype=np.uint8)).save(src / "b.png")
    ckpt = str(run / "checkpoints" / "last.safetensors")
    assert main(["translate", ckpt, str(src), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert Image.open(tmp_path / "out" / "a.png").size == (27 * 4, 21 * 4)
    assert Image.open(tmp_path / "out" / "b.png").size == (33 * 4, 40 * 4)
    assert main(["translate", ckpt, str(src / "b.png"), "-o", str(tmp_path / "tiled"), "--quiet", "--tile", "16"]) == 0
    whole = np.asarray(Image.open(tmp_path / "out" / "b.png"), dtype=np.float64)
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "b.png"), dtype=np.float64)
    assert tiled.shape == whole.shape and np.abs(tiled - whole).max() <= 2  # 8-bit rounding at most

    # stylize --stylesr: the net's output blended per channel with the content up-sampled (bicubic)
    assert main(["stylize", str(src / "a.png"), "--stylesr", ckpt, "--blend-rgb", "1,0,0.5", "-o",
                 str(tmp_path / "blend"), "--quiet"]) == 0
    got = np.asarray(Image.open(tmp_path / "blend" / "a.png"), dtype=np.float64)
    net = np.asarray(Image.open(tmp_path / "out" / "a.png"), dtype=np.float64)
    up = np.asarray(Image.open(src / "a.png").resize((27 * 4, 21 * 4), Image.Resampling.BICUBIC), dtype=np.float64)
    assert got.shape == (21 * 4, 27 * 4, 3)
    assert np.array_equal(got[..., 0], up[..., 0]) and np.array_equal(got[..., 1], net[..., 1])
    assert np.abs(got[..., 2] - (up[..., 2] + net[..., 2]) / 2).max() <= 0.5 + 1e-9
    import imtranslate

    pil = imtranslate.load_stylesr(ckpt, device="cpu")(Image.open(src / "a.png"), blend=0.0)
    assert pil.size == (27 * 4, 21 * 4) and np.array_equal(np.asarray(pil, dtype=np.float64), net)
    assert main(["stylize", str(src / "a.png"), "--stylesr", ckpt, "--style", str(src / "b.png"), "-o",
                 str(tmp_path / "x")]) == 2

    # eval: LR made from each held-out photo as in training, the photo itself the target
    from imtranslate.evaluate import evaluate
    from imtranslate.metrics import psnr

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (34, 41, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    res = evaluate(ckpt, photos, device="cpu", progress=False, log=lambda m: None)
    assert res["count"] == 2 and np.isfinite(res["metrics"]["psnr"])
    # the same figure by hand for one photo: 32x40 (whole LR pixels), its own degraded copy in
    from imtranslate.data import read_image, to_tensor
    from imtranslate.infer import Predictor as _P
    from imtranslate.tasks import get_task

    p = _P.from_checkpoint(ckpt, device="cpu")
    hr = to_tensor(read_image(photos / "p0.png", "rgb"))[None]
    lr, target = get_task("stylesr").eval_inputs({"A": hr}, p.cfg)
    assert lr.shape[-2:] == (8, 10) and target.shape[-2:] == (32, 40)
    single = float(psnr(p.translate_tensor(lr), target)[0])
    one = tmp_path / "one"
    one.mkdir()
    (one / "p0.png").write_bytes((photos / "p0.png").read_bytes())
    assert evaluate(ckpt, one, device="cpu", progress=False, log=lambda m: None)["metrics"]["psnr"] == \
        pytest.approx(single, abs=1e-4)

    # the web page offers it as a translation model: 4x pictures, the predictor's pixels
    pytest.importorskip("fastapi")
    import base64
    import io

    from fastapi.testclient import TestClient
    from imtranslate.web.app import create_app

    client = TestClient(create_app(None, p))
    r = client.post("/api/translate", files={"image": ("a.png", (src / "a.png").read_bytes(), "image/png")})
    assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (27 * 4, 21 * 4)
    shown = Image.open(io.BytesIO(base64.b64decode(r.json()["output"].split(",", 1)[1])))
    assert np.array_equal(np.asarray(shown, dtype=np.float64), net)

    # ONNX: the exported graph gives the predictor's 4x output (the export command checks parity itself)
    pytest.importorskip("onnxruntime")
    assert main(["export", ckpt, "--onnx", str(tmp_path / "sr.onnx")]) == 0
    import onnxruntime as ort
    from imtranslate.infer import Predictor

    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    x = torch.rand(1, 3, 19, 23) * 2 - 1
    sess = ort.InferenceSession(str(tmp_path / "sr.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    ref = pred.translate_tensor(x).numpy()
    assert y.shape == (1, 3, 76, 92) and np.abs(y - ref).max() < 1e-4


def test_photos_from_a_folder_of_odd_sized_pictures(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        arr = np.random.default_rng(i).integers(0, 256, (37 + i, 41, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"ph{i}.png")
    cfg = load_config(None, ["task=stylesr", "data.dataset=photos", f"data.root={folder}", "data.crop_size=32",
                             "data.val_fraction=0.2", *TINY_NET])
    task_cls = get_task("stylesr")
    summary = task_cls.check_data(cfg)
    assert (summary["train"], summary["val"], summary["min_size"]) == (4, 1, (37, 41))
    Image.new("RGB", (20, 20)).save(folder / "small.png")
    from imtranslate.errors import DataError

    with pytest.raises(DataError, match="small.png"):
        task_cls.check_data(cfg)


def test_demo_upscale_writes_the_report(tmp_path):
    from imtranslate.cli import build_parser
    from imtranslate.demo import run_upscale_demo

    args = build_parser().parse_args(["demo", "upscale", "--steps", "3"])
    assert args.which == "upscale" and args.steps == 3
    assert build_parser().parse_args(["demo"]).which == "multires"  # the S1 demo stays the default
    res = run_upscale_demo(tmp_path / "demo", steps=2, device="cpu", log=lambda m: None, overrides=[
        "data.synthetic.n_train=4", "data.synthetic.n_val=2", "data.synthetic.size=40", "data.crop_size=32",
        "train.batch_size=2", "train.progress=false", "train.tensorboard=false", "model.ngf=4",
        "model.head_width=4", "model.ndf=4", "model.n_layers_d=2"])
    html = res["report"].read_text()
    assert "<th>bicubic</th>" in html and "PSNR ours (dB)" in html and html.count('class="ex"') == 2 * 4
    assert len(res["psnr_ours"]) == 2 and all(np.isfinite(res["psnr_ours"] + res["psnr_bicubic"]))
