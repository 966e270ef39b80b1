"""The house every method lives in: starting from weights, task state, nets the task rebuilds,
the loop's stepper, one teacher loader, typed choices, and layers that only import downwards."""
import ast
import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from imtranslate.checkpoint_file import load_generator, load_tensors, read_meta
from imtranslate.errors import CheckpointError, ConfigError
from imtranslate.nets import build_net
from imtranslate.tasks import TASKS, load_config, register_task
from imtranslate.tasks.pix2pix import Pix2PixTask
from imtranslate.train.loop import train

SRC = Path(__file__).resolve().parents[1] / "src" / "imtranslate"
QUIET = dict(log=lambda m: None)


def _train_rows(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


# ---- train.init_from ---------------------------------------------------------------------------
def test_init_from_starts_a_new_run_from_the_weights(tmp_path):
    first = train(load_config(None, tiny_overrides("pix2pix", tmp_path, steps=2)), **QUIET)
    ckpt = first / "checkpoints" / "last.safetensors"
    ema = load_tensors(ckpt, "ema/G/")

    # a new run of one step whose config asks for those weights: step counter and Adam are fresh
    second = train(load_config(None, tiny_overrides("pix2pix", tmp_path, steps=1)
                               + [f"train.init_from={ckpt}", "train.lr_g=0", "train.lr_d=0"]), **QUIET)
    assert second != first
    meta = read_meta(second / "checkpoints" / "last.safetensors")
    assert meta["step"] == 1 and [r["step"] for r in _train_rows(second)] == [1]
    steps = load_tensors(second / "checkpoints" / "last.safetensors", "opt/G/")
    assert all(int(v) == 1 for k, v in steps.items() if k.endswith("/step"))  # fresh moments
    # lr 0: the generator is still exactly the EMA weights it started from
    got = load_tensors(second / "checkpoints" / "last.safetensors", "net/G/")
    for k, v in ema.items():
        if v.is_floating_point() and "running" not in k and "num_batches" not in k:
            assert torch.equal(got[k], v), k


def test_init_from_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    run = train(load_config(None, tiny_overrides("pix2pixhd", tmp_path, steps=1)), **QUIET)
    cfg = load_config(None, tiny_overrides("pix2pix", tmp_path, steps=1)
                      + [f"train.init_from={run / 'checkpoints' / 'last.safetensors'}"])
    with pytest.raises(CheckpointError, match="none of its weights fit"):
        train(cfg, **QUIET)


# ---- task state ---------------------------------------------------------------------------------
class CountingPix2Pix(Pix2PixTask):
    """pix2pix that owns state besides its nets: a JSON counter and a tensor that drift per step."""

    name = "pix2pix_counting"

    def build(self):
        super().build()
        self.count = 0
        self.strength = torch.zeros(3)

    def train_step(self, batch, step):
        logs = super().train_step(batch, step)
        self.count += 1
        self.strength += torch.rand(3)  # draws from the RNG the checkpoint also restores
        logs["strength"] = float(self.strength.sum())
        return logs

    def state_dict(self):
        return {"count": self.count, "strength": self.strength.clone()}

    def load_state_dict(self, state):
        self.count = int(state["count"])
        self.strength = state["strength"].clone()


@pytest.fixture
def counting_task():
    register_task(CountingPix2Pix)
    yield CountingPix2Pix.name
    TASKS.pop(CountingPix2Pix.name)


def test_task_state_is_saved_and_restored_exactly_on_resume(tmp_path, counting_task):
    over = tiny_overrides("pix2pix", tmp_path, steps=4) + [f"task={counting_task}", "train.ckpt_every=2"]
    full = train(load_config(None, over), run_dir=tmp_path / "full", **QUIET)
    meta = read_meta(full / "checkpoints" / "last.safetensors")
    assert meta["task_state"] == {"count": 4}
    s4 = load_tensors(full / "checkpoints" / "last.safetensors", "state/")["strength"]

    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    (part / "last.safetensors").write_bytes((full / "checkpoints" / "step_00000002.safetensors").read_bytes())
    resumed = train(None, resume=tmp_path / "part", **QUIET)
    assert read_meta(resumed / "checkpoints" / "last.safetensors")["task_state"] == {"count": 4}
    assert torch.equal(load_tensors(resumed / "checkpoints" / "last.safetensors", "state/")["strength"], s4)
    ref = {r["step"]: r["strength"] for r in _train_rows(full)}
    assert {r["step"]: r["strength"] for r in _train_rows(resumed)} == {3: ref[3], 4: ref[4]}


def test_generator_run_state_is_restored_on_resume(tmp_path):
    """multires saved mid-schedule (2 of 3 levels active) resumes with 2 levels, as it was."""
    from imtranslate.train.checkpoint import restore_training_state
    from imtranslate.train.ema import EMA
    from imtranslate.train.stepping import build_task

    over = tiny_overrides("multires", tmp_path, steps=2)
    run = train(load_config(None, over), **QUIET)
    ckpt = run / "checkpoints" / "last.safetensors"
    assert read_meta(ckpt)["generator_state"] == {"active_levels": 2}
    task = build_task(load_config(None, over), "cpu")
    ema = EMA(task.generator, 0.9)
    assert task.generator.active_levels == 1 and ema.module.active_levels == 1  # as built: stage 0
    restore_training_state(ckpt, task, ema)
    assert task.generator.active_levels == 2 and ema.module.active_levels == 2
    assert load_generator(ckpt).net.active_levels == 2  # and so does a predictor's / teacher's copy


# ---- nets the task rebuilds (per-layer widths) ----------------------------------------------------
def test_a_rebuilt_net_is_followed_by_specs_optimisers_hooks_ema_and_checkpoints(tmp_path):
    from imtranslate.infer import Predictor
    from imtranslate.train.checkpoint import restore_training_state, save_checkpoint
    from imtranslate.train.ema import EMA
    from imtranslate.train.stepping import build_task

    cfg = load_config(None, tiny_overrides("pix2pix", tmp_path, steps=2))
    task = build_task(cfg, "cpu")
    ema = EMA(task.generator, 0.9)
    task._net_listeners.append(lambda key, net: setattr(ema, "net", net) or setattr(ema, "module", EMA(net).module))
    widths = [4, 6, 5, 8, 8]  # not ngf * 2**j: what channel pruning leaves
    spec = dict(task.net_specs["G"]["kwargs"], widths=widths)
    small = build_net("unet", **spec)
    task.replace_net("G", small)
    assert task.generator is small and task.net_specs["G"]["kwargs"]["widths"] == widths
    opt_params = {id(p) for g in task.optimizers["G"].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in small.parameters()}
    assert "G" in task.stepper.hooked

    from imtranslate.data import build_dataset, check_dataset
    from torch.utils.data import DataLoader

    check_dataset(cfg.data)
    batch = task.to_device(next(iter(DataLoader(build_dataset(cfg.data, "train", seed=0), batch_size=2))))
    before = [p.detach().clone() for p in small.parameters()]
    logs = task.train_step(batch, 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, small.parameters()))  # the new net learns
    assert all(p.grad is None for p in small.parameters())  # stepped inside backward, freed
    ema.update(0)

    ckpt = save_checkpoint(tmp_path / "pruned.safetensors", task, 1, ema)
    # rebuilt from the file alone: same widths, identical outputs
    pred = Predictor.from_checkpoint(ckpt, device="cpu", use_ema=False, optimize=False)
    assert pred.G.config["widths"] == widths
    task.generator.eval()
    with torch.no_grad():
        x = batch["A"][:1]
        assert torch.equal(pred.translate_tensor(x), task.generator(x))
    # and a resumed run rebuilds the same net before loading its weights and Adam moments
    fresh = build_task(cfg, "cpu")
    restore_training_state(ckpt, fresh)
    assert fresh.net_specs["G"]["kwargs"]["widths"] == widths
    assert all(torch.equal(a, b) for a, b in zip(fresh.generator.parameters(), small.parameters()))


def test_widths_must_match_the_depth():
    with pytest.raises(ValueError, match="widths needs 5"):
        build_net("unet", num_downs=5, ngf=4, widths=[4, 8])


# ---- typed choices and the resolving layer ---------------------------------------------------------
@pytest.mark.parametrize("option, message", [
    ("data.dataset=folder", "did you mean folders"),
    ("model.gan_mode=lsgann", "did you mean lsgan"),
    ("model.norm=instanse", "did you mean instance"),
    ("train.lr_policy=cosin", "did you mean cosine"),
    ("model.generator=unett", "did you mean unet"),
])
def test_fixed_choices_are_checked_by_the_loader_with_a_hint(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, tiny_overrides("pix2pix", tmp_path) + [option])


def test_one_list_of_dataset_kinds():
    import typing

    from imtranslate.config import DATASET_KINDS, DataConfig
    from imtranslate.data.datasets import PAIRED_DATASETS

    assert typing.get_args(typing.get_type_hints(DataConfig)["dataset"]) == DATASET_KINDS
    assert set(PAIRED_DATASETS) == set(DATASET_KINDS) - {"unpaired"}


LAYERS = ["errors", "ops", "config", "weights", "data", "nets", "losses", "prune", "checkpoint_file", "tasks", "train",
          "infer", "compress"]


def _imports(path: Path) -> set[str]:
    """First-level imtranslate modules a source file imports (relative imports resolved)."""
    pkg = path.relative_to(SRC).parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(pkg[: len(pkg) - (node.level - 1)])
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                out.add(parts[0])
            else:  # "from . import x" at the top of the package
                out.update(a.name.split(".")[0] for a in node.names)
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_the_layers_below_them(layer):
    """errors/ops -> config -> weights -> data -> nets -> losses -> prune -> checkpoint_file -> tasks -> train -> infer -> compress."""
    files = sorted((SRC / layer).rglob("*.py")) if (SRC / layer).is_dir() else [SRC / f"{layer}.py"]
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    for f in files:
        wrong = _imports(f) & above
        assert not wrong, f"{f.relative_to(SRC)} imports {sorted(wrong)}, a layer above it"
