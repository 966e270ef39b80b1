"""Face enhancement: generator shapes, identity / distillation losses, dynamic degradation,
coefficients across resume, and the CLI train -> translate -> eval (tiny, CPU, seconds)."""
from __future__ import annotations

import shutil

import pytest
import torch

from conftest import tiny_overrides
from imtranslate.nets import build_net
from imtranslate.tasks import load_config
from imtranslate.tasks import faceenhance as fe
from imtranslate.train.checkpoint import read_meta
from imtranslate.train.loop import train
from imtranslate.train.stepping import build_task


@pytest.mark.parametrize("size", [128, 256])
def test_generator_shapes_and_odd_widths(size):
    G = build_net("face_enhancer", widths=[3, 5, 7, 5, 9], dec_widths=[5, 3, 9, 7, 3], latent_dim=6).eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        y = G(x)
        feats, w = G.encode(x)
    assert y.shape == x.shape and y.abs().max() <= 1 and torch.isfinite(y).all()
    assert [f.shape[1] for f in feats] == [3, 5, 7, 5, 9] and [f.shape[-1] for f in feats] == [size >> i for i in range(5)]
    assert w.shape == (1, 6)  # the attribute vector of the mapping network
    assert G.feature_channels() == [7, 9, 3, 5]  # decoder levels coarse to fine, dec_widths[3..0]
    D = build_net("face_discriminator", widths=[3, 5, 7])
    out = D(y)
    assert len(out) == 1 and out[0][-1].shape == (1, 1, size // 8, size // 8) and len(out[0]) == 4


def test_identity_and_distillation_zero_for_identical_inputs():
    from imtranslate.losses import DistillLoss, FeatureTaps, identity_loss
    from imtranslate.nets.face_recog import load_identity_net

    R = load_identity_net("random")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert float(identity_loss(R, x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(identity_loss(R, x, torch.flip(x, (2,)))) > 1e-4  # and it sees a different face
    G = build_net("face_enhancer", widths=[4, 6, 8], latent_dim=8)
    T = build_net("face_enhancer", **G.config)
    T.load_state_dict(G.state_dict())
    with FeatureTaps(G, G.feature_names()) as tg, FeatureTaps(T, T.feature_names()) as tt:
        loss = DistillLoss(G.feature_channels(), T.feature_channels())(G(x), T(x), tg.take(), tt.take())
    assert float(loss.detach()) == 0.0


def test_identity_net_missing_says_what_to_provide(tmp_path, monkeypatch):
    from imtranslate.errors import WeightsMissingError
    from imtranslate.nets.face_recog import IResNet, load_identity_net

    monkeypatch.setenv("IMTRANSLATE_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsMissingError, match=r"arcface_iresnet50\.safetensors.*|model.identity"):
        load_identity_net("arcface")
    # a user's file (IResNet layout, here tiny) loads through the weights module, .pth without pickle
    net = IResNet(layers=(1, 2, 1, 1), widths=(8, 8, 16, 16), embedding=16, stem=8)
    torch.save(net.state_dict(), tmp_path / "r.pth")
    loaded = load_identity_net(str(tmp_path / "r.pth"))
    x = torch.rand(1, 3, 112, 112)
    net.eval()
    assert torch.allclose(loaded(x), net(x))


def test_augmentation_factor_moves_coefficients_the_documented_way():
    # D: degraded -1, real +1; enhanced near real -> factor ~1 (too easy: raise), near degraded -> lower
    assert fe.augmentation_factor(-1.0, 1.0, 0.9) == pytest.approx(0.95)
    assert fe.augmentation_factor(-1.0, 1.0, -0.9) == pytest.approx(0.05)
    assert fe.augmentation_factor(0.5, 0.5, 3.0) == 0.0  # D sees no difference: no signal
    band = [0.3, 0.7]
    assert fe.adapt_coefficients([0.2, 0.5], 0.95, band, 0.1, 0.0, 1.0) == pytest.approx([0.3, 0.6])
    assert fe.adapt_coefficients([0.2, 0.5], 0.05, band, 0.1, 0.0, 1.0) == pytest.approx([0.1, 0.4])
    assert fe.adapt_coefficients([0.2, 0.5], 0.5, band, 0.1, 0.0, 1.0) == [0.2, 0.5]
    assert fe.adapt_coefficients([0.98, 0.02], 0.9, band, 0.1, 0.05, 1.0) == pytest.approx([1.0, 0.12])


def test_task_adapts_from_crafted_discriminator_outputs(tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides("faceenhance", tmp_path) + ["model.adapt_step=0.1"])
    task = build_task(cfg, "cpu")
    ds = task.build_dataset(cfg, "train")
    batch = task.to_device(torch.utils.data.default_collate([ds[0], ds[1]]))
    start = list(task.coefficients)
    outputs = iter([-1.0, 1.0, 0.95, -1.0, 1.0, -0.95])  # (degraded, real, enhanced) twice
    monkeypatch.setattr(fe, "d_mean", lambda D, x: next(outputs))
    logs = task.train_step(batch, 1)
    assert task.coefficients == pytest.approx([c + 0.1 for c in start]) and logs["aug_factor"] == pytest.approx(0.975)
    task.train_step(batch, 2)
    assert task.coefficients == pytest.approx(start)
    assert [h[0] for h in task.history] == [1.0, 2.0]
    # the next batch is degraded at the new coefficients; held-out ones at the config's
    assert "coef_jpeg" in logs and "coef_gaussian_blur" in logs


def test_coefficients_survive_resume_bit_exactly(tmp_path):
    over = tiny_overrides("faceenhance", tmp_path, steps=6) + ["train.ckpt_every=3", "model.adapt_step=0.037"]
    full = train(load_config(None, over), run_dir=tmp_path / "full", log=lambda m: None)
    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "step_00000003.safetensors", part / "last.safetensors")
    shutil.copy(full / "config.yaml", tmp_path / "part" / "config.yaml")
    mid = read_meta(part / "last.safetensors")["task_state"]
    assert len(mid["history"]) == 2  # adapted at steps 1 and 2 (steps count from 0)
    resumed = train(None, resume=tmp_path / "part", log=lambda m: None)
    a = read_meta(full / "checkpoints" / "last.safetensors")["task_state"]
    b = read_meta(resumed / "checkpoints" / "last.safetensors")["task_state"]
    assert a == b and len(a["history"]) == 5  # floats compared exactly
    assert a["history"][:2] == mid["history"] and a["coefficients"] == a["history"][-1][2:]


def test_cli_train_translate_eval(tmp_path, capsys):
    from PIL import Image

    from imtranslate.cli import main
    from imtranslate.data.synthetic_faces import render_face

    over = tiny_overrides("faceenhance", tmp_path, steps=2) + ["train.val_every=2"]
    assert main(["train", *over]) == 0
    ckpt = next((tmp_path / "runs").glob("*/checkpoints/last.safetensors"))
    faces = tmp_path / "crops"
    faces.mkdir()
    for i in range(2):
        Image.fromarray(render_face(100 + i, 40).image).save(faces / f"c{i}.png")
    assert main(["translate", str(ckpt), str(faces), "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[:2] == ["c0.png", "c1.png"]
    capsys.readouterr()
    assert main(["eval", str(ckpt), str(faces)]) == 0
    out = capsys.readouterr().out
    assert "psnr" in out and "ssim" in out and "identity" in out  # the tiny config's random identity net
    from imtranslate.evaluate import evaluate

    res = evaluate(ckpt, faces, progress=False)
    assert res["count"] == 2 and -1 <= res["metrics"]["identity"] <= 1


def test_a_pruning_round_shrinks_the_face_enhancer_and_keeps_it_runnable(tmp_path):
    """Channel reduction in rounds after training: imtranslate compress (prune/rounds.py, one implementation)."""
    from imtranslate.checkpoint_file import load_generator
    from imtranslate.compress import compress, count_params

    full = train(load_config(None, tiny_overrides("faceenhance", tmp_path, steps=2)), run_dir=tmp_path / "run",
                 log=lambda m: None)
    ckpt = full / "checkpoints" / "last.safetensors"
    out, table = compress(ckpt, tmp_path / "small.safetensors", ratio=0.25, rounds=1, round_steps=1,
                          quality="psnr:0", latency_repeats=1, log=lambda m: None)
    big, small = load_generator(ckpt).net, load_generator(out).net
    assert count_params(small) < count_params(big) and table[-1]["macs"] < table[0]["macs"]
    x = torch.rand(1, 3, 40, 36) * 2 - 1  # any size: padded to the multiple and cropped back
    with torch.no_grad():
        y = small(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def _prune_over(tmp_path, steps, *extra):
    return tiny_overrides("faceenhance", tmp_path, steps=steps) + [
        "model.widths=[8,16,16]", "model.prune_rounds=2", "model.prune_ratio=0.25", *extra]


def test_prune_rounds_inside_training_shrink_the_generator_and_rebuild_alone(tmp_path):
    """model.prune_rounds: the run prunes after rounds 1 and 2 of 3 (steps 2 and 4 of 6) with the
    compress code (imtranslate.prune.rounds), keeps training the smaller net, and its checkpoint
    rebuilds alone; each round is in metrics.jsonl and the task state."""
    import json

    from imtranslate.checkpoint_file import load_generator
    from imtranslate.prune import count_params

    run = train(load_config(None, _prune_over(tmp_path, 6, "model.prune_quality=psnr:10")), run_dir=tmp_path / "run",
                log=lambda m: None)
    ckpt = run / "checkpoints" / "last.safetensors"
    meta = read_meta(ckpt)
    state = meta["task_state"]["prune"]
    assert state["done"] == 2 and [r["step"] for r in state["table"]] == [2, 4]
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    pr = [r for r in recs if r["kind"] == "prune"]
    assert [r["step"] for r in pr] == [2, 4] and pr[0]["macs"] < pr[0]["macs_before"] and pr[1]["macs"] < pr[0]["macs"]
    assert pr[1]["params"] < pr[0]["params"] < pr[0]["params_before"]
    assert any(r["kind"] == "val" and r["step"] == 4 for r in recs)  # held-out figures right after the cut
    assert "surgery" in meta["nets"]["G"]["kwargs"]
    G = load_generator(ckpt).net
    fresh = build_net("face_enhancer", **{k: v for k, v in meta["nets"]["G"]["kwargs"].items() if k != "surgery"})
    assert count_params(G) == pr[1]["params"] < count_params(fresh)
    x = torch.rand(1, 3, 40, 36) * 2 - 1
    with torch.no_grad():
        assert G(x).shape == x.shape


def test_a_cut_that_breaks_the_quality_index_is_held_back_and_its_ratio_halved(tmp_path):
    """psnr:1000 cannot be met by any cut: nothing is cut, every layer's ratio is halved each round."""
    from imtranslate.prune import count_params

    run = train(load_config(None, _prune_over(tmp_path, 3, "model.prune_quality=psnr:1000")), run_dir=tmp_path / "r",
                log=lambda m: None)
    meta = read_meta(run / "checkpoints" / "last.safetensors")
    state = meta["task_state"]["prune"]
    assert state["done"] == 2 and set(state["ratios"].values()) == {0.0625}
    assert all(len(r["held_back"]) == len(r["layers"]) > 0 for r in state["table"])
    assert "surgery" not in meta["nets"]["G"]["kwargs"]


def test_resume_across_a_pruning_round_is_the_uninterrupted_run(tmp_path):
    """Checkpoint at step 3 (after the first cut, before the second): the resumed run prunes at
    step 4 exactly as the uninterrupted one did, and ends with the same widths, weights and state."""
    from safetensors.torch import load_file

    over = _prune_over(tmp_path, 6, "model.prune_quality=psnr:10", "train.ckpt_every=3")
    full = train(load_config(None, over), run_dir=tmp_path / "full", log=lambda m: None)
    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "step_00000003.safetensors", part / "last.safetensors")
    shutil.copy(full / "config.yaml", tmp_path / "part" / "config.yaml")
    assert read_meta(part / "last.safetensors")["task_state"]["prune"]["done"] == 1
    resumed = train(None, resume=tmp_path / "part", log=lambda m: None)
    a, b = (read_meta(r / "checkpoints" / "last.safetensors") for r in (full, resumed))
    assert a["task_state"] == b["task_state"] and a["nets"] == b["nets"]
    ta, tb = (load_file(r / "checkpoints" / "last.safetensors") for r in (full, resumed))
    nets = [k for k in ta if k.startswith(("net/", "ema/"))]
    assert nets and all(torch.equal(ta[k], tb[k]) for k in nets)


def test_prune_options_are_checked():
    from imtranslate.errors import ConfigError

    with pytest.raises(ConfigError, match="prune_ratio"):
        load_config(None, ["task=faceenhance", "model.prune_rounds=2", "model.prune_ratio=1.5"])
    with pytest.raises(ConfigError, match="quality index"):
        load_config(None, ["task=faceenhance", "model.prune_rounds=2", "model.prune_quality=psnr"])


def test_a_cut_carries_the_adam_moments_and_the_ema_of_the_kept_channels(tmp_path):
    """Pruning mid-run keeps what the optimiser and the EMA know about the channels that stay
    (cut like the weights), instead of restarting them (which cost ~0.9 dB in a face run)."""
    import copy

    from imtranslate.prune import prunable_layers, prune_channels
    from imtranslate.prune.channels import KEPT, apply_kept
    from imtranslate.train.ema import EMA

    cfg = load_config(None, tiny_overrides("faceenhance", tmp_path) + ["model.widths=[8,16,16]"])
    task = build_task(cfg, "cpu")
    batch = task.to_device({"B": torch.rand(2, 3, 32, 32) * 2 - 1, "seed": torch.arange(2)})
    ema = EMA(task.nets["G"], 0.5)
    for s in range(2):
        task.train_step(dict(batch), s)
        ema.update(s)
    task._net_listeners.append(lambda k, n: ema.follow(n) if k == "G" else None)
    G = task.nets["G"]
    opt = task.optimizers["G"]
    old_m = {n: opt.state[p]["exp_avg"].clone() for n, p in G.named_parameters()}
    old_e = {n: p.detach().clone() for n, p in ema.module.named_parameters()}
    x = batch["A"][:1]
    cand = copy.deepcopy(G).eval()
    prune_channels(cand, x, lambda n, a: n(a), {l.name: l.channels // 4 for l in prunable_layers(cand, x, lambda n, a: n(a))})
    new = task.replace_net("G", cand)
    cut = [(n, p) for n, p in new.named_parameters() if getattr(p, KEPT, None)]
    assert len(cut) > 10
    opt = task.optimizers["G"]
    for n, p in cut:
        ops = getattr(p, KEPT)
        assert torch.equal(opt.state[p]["exp_avg"], apply_kept(old_m[n], ops)), n
        assert torch.equal(dict(ema.module.named_parameters())[n], apply_kept(old_e[n], ops)), n
    task.train_step(dict(batch), 2)  # and training goes on with the carried state
