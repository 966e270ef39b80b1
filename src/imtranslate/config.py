"""Typed configuration: dataclasses, YAML as the file format, checked ``a.b=value`` overrides.

A run's configuration has four sections::

    task: multires            # which method (see ``imtranslate.tasks``)
    data:  {...}              # DataConfig: where the pairs come from and how they are cut
    train: {...}              # TrainConfig: the loop (steps, optimiser, EMA, logging, ...)
    model: {...}              # the task's own dataclass (nets, loss weights, schedule)

Unknown keys are errors (with a "did you mean" hint) and every value is checked against the
field's type, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError


# --------------------------------------------------------------------------------------------
# Fixed sets of choices: a Literal field is checked by the loader, with a "did you mean" hint
# --------------------------------------------------------------------------------------------
#: every kind of dataset ``data.dataset`` may name (the one list; data/ and the checks use it)
#: ``photos``: one folder of photographs, each item its own input and target (tasks that make the
#: input from the target, e.g. super-resolution); no ``data.root`` = the synthetic scenes' photos
#: ``synthetic_faces``: the built-in rendered faces (data/synthetic_faces.py) as ``photos``, sized
#: by ``data.synthetic`` (n_train, n_val, size, seed, root)
DatasetKind = Literal["synthetic", "folders", "aligned", "labelmap", "unpaired", "photos", "synthetic_faces"]
DATASET_KINDS: tuple[str, ...] = typing.get_args(DatasetKind)
#: dataset kinds read from a user's folder (``data.root`` required)
FOLDER_DATASETS = ("folders", "aligned", "labelmap", "unpaired")


# --------------------------------------------------------------------------------------------
# Sections shared by every task
# --------------------------------------------------------------------------------------------
@dataclass
class SyntheticConfig:
    """The built-in synthetic scenes (see ``imtranslate.data.synthetic``)."""

    input: Literal["label", "contour"] = "label"  # what the model translates from
    n_train: int = 256  # scenes in the training split
    n_val: int = 32  # held-out scenes
    size: int = 64  # side of each square scene, pixels
    n_classes: int = 6  # object classes (label 0 is the background)
    seed: int = 0  # the whole dataset is a function of this seed
    root: str = ""  # where the scenes are written; "" = <run dir>/synthetic


@dataclass
class DataConfig:
    """Where training pairs come from and how they are prepared."""

    dataset: DatasetKind = "synthetic"  # synthetic | folders | aligned | labelmap | unpaired | photos | synthetic_faces
    root: str = ""  # dataset folder; must hold train/ (and optionally val/) or A/ and B/ directly
    style_root: str = ""  # unpaired (style transfer): folder of style pictures; root = content pictures
    a_dir: str = "A"  # sub-folder of inputs (folders / labelmap)
    b_dir: str = "B"  # sub-folder of targets, matched to inputs by file stem
    inst_dir: str = ""  # sub-folder of instance maps (labelmap); "" = none
    direction: Literal["AtoB", "BtoA"] = "AtoB"  # aligned side-by-side files
    input_kind: Literal["rgb", "grey", "label"] = "rgb"  # label = integer class map, one-hot encoded
    output_channels: int = 3  # channels of the target images (3 = RGB, 1 = grey)
    n_classes: int = 0  # label maps: number of classes (values 0..n_classes-1)
    dont_care: int = -1  # label maps: value that means "no label" (-1 = none); maps to all-zero
    use_instance: bool = False  # label maps: add the instance boundary map as one more channel
    load_size: int = 0  # resize the shorter side to this before cropping (0 = keep)
    crop_size: int = 64  # random crop (train) / centre crop (val) side; 0 = whole image
    flip: bool = True  # random horizontal flip in training
    val_root: str = ""  # held-out data folder; "" = <root>/val if present, else a split
    val_fraction: float = 0.1  # fraction held out when no val folder exists
    max_items: int = 0  # use at most this many training pairs (0 = all)
    num_workers: int = 0  # DataLoader worker processes
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class TrainConfig:
    """The training loop shared by every task."""

    steps: int = 2000  # total optimisation steps (one D step + one G step each)
    # wall-clock budget in seconds of training (0 = none): the run stops at the first step past
    # it, validates and writes its last checkpoint as at train.steps (equal-time comparisons)
    time_limit: float = 0.0
    # the same budget in CPU seconds of this process (time.process_time: every thread of it, not
    # DataLoader workers; 0 = none): steadier than wall clock on a machine other jobs share
    cpu_time_limit: float = 0.0
    batch_size: int = 4
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_policy: Literal["constant", "linear", "cosine", "step"] = "linear"
    lr_decay_start: float = 0.5  # fraction of the run after which linear/cosine decay starts
    lr_step_every: int = 1000  # step policy: halve the learning rate every this many steps
    ema_decay: float = 0.999  # EMA of the generator; 0 disables
    ema_start: int = 0  # step from which the EMA starts averaging (before: copies)
    # mixed precision: bf16 on CUDA, or on a CPU with native bf16 (avx512_bf16 / amx_bf16; an
    # error on one without); fp16 (with loss scaling) on CUDA only, ignored on CPU with a warning
    amp: Literal["none", "bf16", "fp16"] = "none"
    # torch.compile every net of the task (forward and backward; inductor generates fused C++ /
    # Triton kernels). Same maths. "none" by default: on a 2-core CPU compiling takes minutes (and
    # again per new shape or frozen/unfrozen net); `imtranslate bench --variants compiled` gives the
    # compile time and pay-back step count (docs/BENCHMARKS.md). aot_eager traces without
    # generating kernels (a check of the compile path, no speed-up)
    compile: Literal["none", "inductor", "aot_eager"] = "none"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0 = torch's default)
    # "reuse": glibc keeps freed memory for the next step instead of unmapping it (no page faults
    # per step: pix2pix 82k -> 0, see imtranslate/allocator.py; resident memory stays at the
    # peak); "system": glibc's defaults. IMTRANSLATE_MALLOC=system in the environment does the same
    malloc: Literal["reuse", "system"] = "reuse"
    # NHWC memory format: "auto" = on CUDA (cuDNN / tensor cores), off on CPU, where it measured
    # slower for training (imtranslate bench); true / false force it
    channels_last: bool | Literal["auto"] = "auto"
    # apply each parameter's Adam update as soon as its gradient is complete and free that
    # gradient: same updates, without holding every gradient at once (pix2pix-256: -0.22 GB).
    # Single process without fp16 loss scaling only; elsewhere the usual step is taken.
    step_in_backward: bool = True
    seed: int = 0
    # start a new run from this checkpoint's weights (nets and EMA whose shapes fit; fresh
    # optimisers, step 0, this config). "" = random init. Exact continuation is --resume instead.
    init_from: str = ""
    # distil from this teacher checkpoint (same task) after every step: output L1 (lambda_distill)
    # and inner-feature MSE (lambda_distill_feat); "" = off (imtranslate.train.distill)
    distill_from: str = ""
    lambda_distill: float = 10.0
    lambda_distill_feat: float = 0.0
    log_every: int = 10  # scalars to TensorBoard / progress bar every N steps
    image_every: int = 200  # image grids to TensorBoard every N steps (0 = never)
    val_every: int = 200  # validation (L1 / PSNR / SSIM on held-out data); 0 = only at the end
    val_batches: int = 0  # limit validation to N batches (0 = all)
    ckpt_every: int = 500  # checkpoint every N steps (and always at the end)
    keep_ckpts: int = 3  # keep this many numbered checkpoints besides last.safetensors
    out_dir: str = "runs"  # numbered run folders are created under this
    name: str = ""  # run folder name suffix (default: the task name)
    progress: bool = True  # tqdm progress bar
    tensorboard: bool = True


@dataclass
class Config:
    task: str = "multires"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: Any = None  # the task's own dataclass, filled in by ``resolve``


# --------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks
# --------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if tp is bool:
        return "true/false"
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; convert where it is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        names = [str(a) for a in args]
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(names)}{hint}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not {' or '.join(_type_name(a) for a in args if a is not type(None))}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of options, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 2e-4 and 1e30 (no dot, or no sign in the exponent) as strings;
            # they are how most people write learning rates
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _resolve_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = _resolve_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        full = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown option {full}{hint}; known: {', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], full)
    return cls(**kwargs)


def to_dict(obj) -> Any:
    """Dataclass (nested) -> plain dict of JSON/YAML-friendly values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------------
# Files and overrides
# --------------------------------------------------------------------------------------------
def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (task:, data:, train:, model:)")
    base = data.pop("base", None)
    if base:  # a config may extend another one, relative to its own folder
        parent = load_yaml((path.parent / base) if not Path(base).is_absolute() else base)
        data = merge(parent, data)
    return data


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items) -> dict:
    """``["train.steps=10", "model.ngf=8"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.steps=100")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has no key")
        try:
            value = yaml.safe_load(raw) if raw.strip() != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def assemble(data: dict, model_cls: type) -> Config:
    """A raw mapping (YAML + overrides) -> typed :class:`Config`, with ``model`` built as ``model_cls``.

    The task layer knows which dataclass a task's ``model:`` section is; it calls this (see
    :func:`imtranslate.tasks.resolve`), so this module never imports the tasks.
    """
    data = dict(data or {})
    unknown = set(data) - {"task", "data", "train", "model"}
    if unknown:
        raise ConfigError(f"unknown top-level option(s) {sorted(unknown)}; known: task, data, train, model")
    cfg = Config(
        task=str(data.get("task", "multires")),
        data=from_dict(DataConfig, data.get("data") or {}, "data"),
        train=from_dict(TrainConfig, data.get("train") or {}, "train"),
        model=from_dict(model_cls, data.get("model") or {}, "model"),
    )
    check(cfg)
    return cfg


#: what may change when a run is resumed: how long, how fast, how it reports and where it runs.
#: Everything else (nets, losses, data, batch size, seed, EMA) defines the run and would make the
#: saved weights and optimiser state mean something else.
RESUMABLE = frozenset({
    "train.steps", "train.time_limit", "train.cpu_time_limit", "train.lr_g", "train.lr_d", "train.lr_policy", "train.lr_decay_start",
    "train.lr_step_every", "train.log_every", "train.image_every", "train.val_every",
    "train.val_batches", "train.ckpt_every", "train.keep_ckpts", "train.progress", "train.tensorboard",
    "train.device", "train.threads", "train.malloc", "train.step_in_backward", "train.channels_last", "data.num_workers",
    "train.compile",  # how the same maths runs, not what it computes
    # where this machine keeps the same pretrained VGG-19 (the file may move between machines)
    "model.vgg_weights",
})


def flatten_keys(data: dict, prefix: str = "") -> list[str]:
    """``{"train": {"steps": 1}}`` -> ``["train.steps"]``."""
    out = []
    for k, v in data.items():
        full = f"{prefix}.{k}" if prefix else str(k)
        out.extend(flatten_keys(v, full) if isinstance(v, dict) else [full])
    return out


def check_resume_overrides(overrides: dict) -> None:
    """Only :data:`RESUMABLE` options may be overridden on ``--resume``; say which may."""
    for key in flatten_keys(overrides):
        if key not in RESUMABLE:
            raise ConfigError(f"{key} cannot change on --resume: it defines the saved run (nets, data, "
                              f"losses). Options that may change: {', '.join(sorted(RESUMABLE))}. "
                              f"To train a changed model from these weights use train.init_from=CHECKPOINT")


def check(cfg: Config) -> None:
    """Value checks that types alone do not catch (fixed choices are ``Literal`` fields)."""
    t, d = cfg.train, cfg.data
    if t.steps < 1:
        raise ConfigError("train.steps must be at least 1")
    if t.time_limit < 0 or t.cpu_time_limit < 0:
        raise ConfigError("train.time_limit and train.cpu_time_limit are seconds >= 0 (0 = no budget)")
    if t.batch_size < 1:
        raise ConfigError("train.batch_size must be at least 1")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError("train.ema_decay must be in [0, 1)")
    if d.dataset in FOLDER_DATASETS and not d.root:
        raise ConfigError(f"data.root is required for data.dataset={d.dataset}")
    if d.dataset == "unpaired" and not d.style_root:
        raise ConfigError("data.style_root (a folder of style pictures) is required for data.dataset=unpaired")
    if d.dataset == "labelmap" or d.input_kind == "label":
        if d.dataset != "synthetic" and d.n_classes < 2:
            raise ConfigError("label-map data needs data.n_classes >= 2")
    if not t.device.startswith(("auto", "cpu", "cuda")):
        raise ConfigError(f"train.device: {t.device!r} is not auto, cpu, cuda or cuda:N")


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_to_json(cfg: Config) -> str:
    return json.dumps(to_dict(cfg))


def use_channels_last(train_cfg: TrainConfig, device) -> bool:
    """Whether ``train.channels_last`` means NHWC on ``device``."""
    import torch

    value = train_cfg.channels_last
    if isinstance(value, bool):
        return value
    return torch.device(device).type == "cuda"  # "auto"


def cpu_bf16_supported() -> bool:
    """Whether this CPU does bf16 arithmetic natively (avx512_bf16 or AMX), as oneDNN reports it."""
    import torch

    mkldnn = getattr(torch.ops, "mkldnn", None)
    check = getattr(mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            if not check():
                return False
        except RuntimeError:
            return False
    try:  # oneDNN also says yes on plain AVX-512 (emulated, slow): ask for the native instructions
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return check is not None  # not Linux: trust oneDNN
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def autocast_dtype(amp: str, device, what: str = "train.amp"):
    """The autocast dtype ``amp`` ("none" / "bf16" / "fp16") means on ``device``, or None (fp32).

    bf16 on a CPU without native bf16 is a ConfigError (it would be emulated, several times slower);
    fp16 on a CPU is None: the caller says it trains in fp32 instead."""
    import torch

    kind = torch.device(device).type
    if amp == "none" or (amp == "fp16" and kind != "cuda"):
        return None
    if amp == "bf16" and kind == "cpu" and not cpu_bf16_supported():
        raise ConfigError(f"{what}=bf16: this CPU has no native bf16 arithmetic (avx512_bf16 or amx_bf16 in "
                          f"/proc/cpuinfo); use {what}=none (fp32) here")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
