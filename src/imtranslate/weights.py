"""Every pretrained network imtranslate uses, and where its weights are found. Nothing is downloaded.

Each network in :data:`NETWORKS` names the files it accepts, the ``.safetensors`` name first.
:func:`find` looks for them in one order:

1. an **explicit path** (``--vgg-weights PATH``, ``model.vgg_weights=PATH``, ``--fid-weights``,
   ``--lpips-weights``, ``--raft-weights``, ``weights=`` arguments): that file and nothing else;
2. the folder named by **$IMTRANSLATE_WEIGHTS** (when unset: ``~/.cache/imtranslate/weights``);
3. the **torch hub cache**, ``<torch.hub.get_dir()>/checkpoints`` (``~/.cache/torch/hub/checkpoints``,
   moved by ``$TORCH_HOME``), where torchvision keeps what it downloaded on a machine with internet,
   e.g. ``vgg19-dcbb9e9d.pth``.

A file that is missing raises :class:`~imtranslate.errors.WeightsMissingError` with one text
(:func:`missing_message`): the file to provide, the folders to put it in, where it comes from, the
option that points at it, and how to convert a ``.pth`` (``imtranslate weights convert``).

Files are read by :func:`read_state_dict`: ``.safetensors`` (preferred: no code can run on
loading), anything else with ``torch.load(..., weights_only=True)`` (tensors only, no pickle code).
``imtranslate weights`` prints :func:`status` for every network.

The loaders live with their networks (``nets/vgg.py``, ``metrics.py``, ``infer/flow.py``); the
face detector and face parser are registered here ahead of theirs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WeightsMissingError

if TYPE_CHECKING:  # torch is imported where a file is read: listing the networks stays light
    import torch

__all__ = [
    "WEIGHTS_ENV", "Network", "NETWORKS", "weights_dir", "hub_dir", "search_dirs", "locate", "find",
    "resolve", "missing_message", "read_state_dict", "convert_to_safetensors", "Lookup", "status", "install",
]

WEIGHTS_ENV = "IMTRANSLATE_WEIGHTS"
RANDOM = "random"
CONVERT_HINT = "Convert a .pth to .safetensors with `imtranslate weights convert IN.pth OUT.safetensors`"


@dataclass(frozen=True)
class Network:
    """A pretrained network: what it is, the file names it accepts (preferred first), where to get it."""

    name: str  # registry key, e.g. "vgg19"
    title: str  # what it is, for messages
    files: tuple[str, ...]  # names looked for in every search folder, in order (.safetensors first)
    source: str  # where the file comes from (a URL or the project that publishes it)
    option: str  # how to give a path explicitly
    used_by: str  # which part of imtranslate loads it
    random_ok: bool = False  # "random" is an accepted choice (tests only)
    hint: str = ""  # extra advice appended to the missing-file message
    loader: str = ""  # the function that builds the network; "" while none exists yet


def _torchvision(file: str) -> str:
    return f"https://download.pytorch.org/models/{file}"


NETWORKS: dict[str, Network] = {n.name: n for n in (
    Network("vgg19", "VGG-19 (ImageNet)", ("vgg19.safetensors", "vgg19-dcbb9e9d.pth"),
            _torchvision("vgg19-dcbb9e9d.pth") + " (torchvision VGG19_Weights.IMAGENET1K_V1)",
            "--vgg-weights PATH / model.vgg_weights=PATH",
            "perceptual and style losses (pix2pixhd, multires), style swap encoder (styleswap, stylize, serve)",
            random_ok=True, loader="imtranslate.nets.vgg.VGG19Features"),
    Network("inception_fid", "Inception-v3 (ImageNet) for FID",
            ("inception_v3_fid.safetensors", "inception_v3_google-0cc3c7bd.pth"),
            _torchvision("inception_v3_google-0cc3c7bd.pth") + " (torchvision Inception_V3_Weights.IMAGENET1K_V1)",
            "--fid-weights PATH", "imtranslate eval (FID)", loader="imtranslate.metrics.inception_features"),
    Network("lpips", "LPIPS (VGG16 backbone + v0.1 linear layers)", ("lpips_vgg.safetensors", "vgg16-397923af.pth"),
            _torchvision("vgg16-397923af.pth") + " (torchvision VGG16 backbone; the LPIPS v0.1 linear layers "
            "ship with torchmetrics)", "--lpips-weights PATH", "imtranslate eval (LPIPS)",
            hint="A single file holding backbone and linear layers is made by "
                 "imtranslate.metrics.convert_lpips_weights(backbone_path, lin_path, out_path).",
            loader="imtranslate.metrics.lpips"),
    Network("raft_large", "RAFT-large optical flow", ("raft_large.safetensors", "raft_large_C_T_SKHT_V2-ff5fadd5.pth"),
            _torchvision("raft_large_C_T_SKHT_V2-ff5fadd5.pth") + " (torchvision Raft_Large_Weights.C_T_SKHT_V2)",
            "--raft-weights PATH (with --flow raft)", "imtranslate video --flow raft / raft-large",
            hint="--flow dis-fast or dis-medium runs without any weights.", loader="imtranslate.infer.flow.RAFTFlow"),
    Network("raft_small", "RAFT-small optical flow", ("raft_small.safetensors", "raft_small_C_T_V2-01064c6d.pth"),
            _torchvision("raft_small_C_T_V2-01064c6d.pth") + " (torchvision Raft_Small_Weights.C_T_V2)",
            "--raft-weights PATH (with --flow raft-small)", "imtranslate video --flow raft / raft-small",
            hint="--flow dis-fast or dis-medium runs without any weights.", loader="imtranslate.infer.flow.RAFTFlow"),
    # MTCNN's three stages: `imtranslate weights install mtcnn` takes them from the facenet-pytorch wheel.
    *(Network(f"mtcnn_{k}", f"MTCNN {k[0].upper()}-Net face detector stage", (f"mtcnn_{k}.safetensors", f"{k}.pt"),
              f"MTCNN (Zhang et al. 2016) {k[0].upper()}-Net weights inside the facenet-pytorch wheel on PyPI "
              f"(facenet_pytorch/data/{k}.pt)", "--mtcnn-weights FOLDER",
              "face detection (imtranslate restore, demo faces, serve)",
              hint="`imtranslate weights install mtcnn` fetches that wheel (no dependencies) with pip and converts "
                   "the three files here; or pass --detector yunet --yunet-model face_detection_yunet_2023mar.onnx.",
              loader="imtranslate.nets.face_detect.MTCNN") for k in ("pnet", "rnet", "onet")),
    # The face parser below has no loader yet; its files are registered so `imtranslate weights`
    # already tells a user what to place where.
    Network("face_parser", "BiSeNet face parser (CelebAMask-HQ, 19 classes)",
            ("face_parser_bisenet.safetensors", "79999_iter.pth"),
            "face-parsing.PyTorch (zllrunning) 79999_iter.pth", "(loader not written yet)", "face parsing (coming)"),
    Network("arcface", "ArcFace IResNet-50 identity net", ("arcface_iresnet50.safetensors", "arcface_iresnet50.pth"),
            "insightface arcface_torch IResNet-50 backbone.pth (e.g. ms1mv3_arcface_r50), renamed",
            "model.identity=PATH (faceenhance; off = no identity loss)", "faceenhance identity loss, eval identity",
            random_ok=True, loader="imtranslate.nets.face_recog.load_identity_net",
            hint="Or train without it: model.identity=off."),
)}


def _network(name: str) -> Network:
    try:
        return NETWORKS[name]
    except KeyError:
        raise WeightsMissingError(f"unknown pretrained network {name!r}; known: {', '.join(NETWORKS)}") from None


def weights_dir() -> Path:
    """``$IMTRANSLATE_WEIGHTS`` if set, else ``~/.cache/imtranslate/weights`` (read at each call)."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imtranslate" / "weights"


def hub_dir() -> Path:
    """The torch hub checkpoints folder, where torchvision keeps its downloads (honours TORCH_HOME)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs() -> list[tuple[str, Path]]:
    """The folders searched after an explicit path, in order, each with a label for messages."""
    env = f"${WEIGHTS_ENV}" + ("" if os.environ.get(WEIGHTS_ENV) else " unset: default")
    return [(env, weights_dir()), ("torch hub cache", hub_dir())]


def _candidates(net: Network) -> list[Path]:
    return [folder / f for _, folder in search_dirs() for f in net.files]


def locate(name: str, explicit=None) -> Path | None:
    """The first existing file of the search order, or None. An explicit path is the only candidate."""
    net = _network(name)
    if explicit not in (None, ""):
        path = Path(explicit).expanduser()
        return path if path.is_file() else None
    return next((p for p in _candidates(net) if p.is_file()), None)


def missing_message(name: str, explicit=None) -> str:
    """The one text for a missing weights file: what to provide, where, from where, how to convert."""
    net = _network(name)
    alt = f"; or {RANDOM} (tests only: random weights make its outputs meaningless)" if net.random_ok else ""
    hint = f" {net.hint}" if net.hint else ""
    if explicit not in (None, ""):
        (_, env), (_, hub) = search_dirs()
        return (f"{Path(explicit).expanduser()} does not exist: give the path of a .safetensors or .pth file "
                f"holding {net.title} weights, or leave the option out to search {env} and {hub}{alt}.{hint}")
    (env_label, env), (hub_label, hub) = search_dirs()
    preferred, original = net.files[0], net.files[-1]
    return (f"{net.title} weights not found, and imtranslate never downloads weights. Put {env / preferred} "
            f"({env_label}) or {hub / original} ({hub_label}, moved by $TORCH_HOME) on this machine "
            f"(any of {', '.join(net.files)} in either folder); the file is {net.source}. Or pass {net.option}"
            f"{alt}. {CONVERT_HINT}.{hint}")


def find(name: str, explicit=None) -> Path:
    """The weights file of network ``name`` by the search order; raises WeightsMissingError."""
    path = locate(name, explicit)
    if path is None:
        raise WeightsMissingError(missing_message(name, explicit))
    return path


def resolve(name: str, spec=None, *, default: str = "") -> Path | str:
    """``"random"`` (where the network allows it) or a found file for an option value.

    ``spec``: None, ``""`` or ``default`` (a keyword meaning "search", e.g. VGG's ``"imagenet"``)
    searches; ``"random"`` returns ``"random"``; anything else is an explicit path.
    """
    net = _network(name)
    if spec is not None and str(spec) == RANDOM:
        if not net.random_ok:
            raise WeightsMissingError(f"{net.title}: 'random' weights are not accepted; give a weights file")
        return RANDOM
    if spec is None or str(spec) in ("", default):
        return find(name)
    return find(name, spec)


def read_state_dict(path, what: str = "weights") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` from a ``.safetensors`` file or any ``torch.load``-able file.

    ``.pth``/``.pt``/... are read with ``weights_only=True`` (tensors and plain containers only; no
    pickled code runs). A dict nested under ``state_dict``/``model``/``net`` is unwrapped and a
    ``module.`` prefix (DataParallel) stripped. Errors name the file. ``what`` names the network.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, wrong format, or pickled code that weights_only refuses
        raise WeightsMissingError(f"{path}: cannot be read as {what} ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsMissingError(f"{path}: holds a {type(obj).__name__}, not a state dict of {what}")
    tensors = {(k[len("module."):] if k.startswith("module.") else k): v
               for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsMissingError(f"{path}: holds no tensors, not a state dict of {what}")
    return tensors, {}


def convert_to_safetensors(src, dst) -> Path:
    """Write the tensors of ``src`` (.pth read with weights_only=True, or .safetensors) to ``dst``.

    Tensors that share memory (tied weights) are stored once each as their own copy, because a
    safetensors file holds no aliases. The header metadata names the source file.
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_file():
        raise WeightsMissingError(f"{src} does not exist")
    if dst.suffix != ".safetensors":
        raise WeightsMissingError(f"{dst}: the output file must end in .safetensors")
    from safetensors.torch import save_file

    tensors, meta = read_state_dict(src)
    seen, out = set(), {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        out[k] = v.detach().clone().contiguous() if ptr in seen or not v.is_contiguous() else v.detach()
        seen.add(ptr)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(out, str(tmp), metadata={**meta, "converted_from": src.name})
    os.replace(tmp, dst)  # a crash mid-write never leaves a truncated file under the final name
    return dst


@dataclass(frozen=True)
class Lookup:
    """Where one network's weights were searched and what was found."""

    network: Network
    candidates: tuple[Path, ...]
    found: Path | None


def status() -> list[Lookup]:
    """One :class:`Lookup` per registered network, for the default search (no explicit path)."""
    out = []
    for net in NETWORKS.values():
        cands = tuple(_candidates(net))
        out.append(Lookup(net, cands, next((p for p in cands if p.is_file()), None)))
    return out


# ---- installing weights that ship inside a package of the package index ------------------------------
INSTALLABLE = {"mtcnn": ("facenet-pytorch", {f"mtcnn_{k}": f"facenet_pytorch/data/{k}.pt" for k in ("pnet", "rnet", "onet")})}


def install(what: str, *, wheel=None, dest=None, log=print) -> list[Path]:
    """Obtain the weights ``what`` (``"mtcnn"``) and write them as ``.safetensors`` into :func:`weights_dir`.

    MTCNN's weights ship inside the ``facenet-pytorch`` wheel. ``pip download --no-deps`` fetches that
    wheel alone (its dependencies would pin an old torch) into a temporary folder — the one use of the
    network, by an explicit user command, never at run time. ``wheel=PATH`` uses a wheel already on disk.
    Each ``.pt`` file is read with ``torch.load(weights_only=True)`` and written as safetensors.
    """
    import subprocess
    import sys
    import tempfile
    import zipfile

    if what not in INSTALLABLE:
        raise WeightsMissingError(f"imtranslate weights install: unknown {what!r}; installable: {', '.join(INSTALLABLE)}")
    package, members = INSTALLABLE[what]
    dest = Path(dest).expanduser() if dest else weights_dir()
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, package]
            log(f"fetching the {package} wheel (no dependencies): {' '.join(cmd[2:])}")
            r = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if r.returncode != 0 or not wheels:
                last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no wheel written"]
                raise WeightsMissingError(f"pip download {package} failed ({last[0]}); download the wheel by hand "
                                          f"and run `imtranslate weights install {what} --wheel FILE.whl`")
            wheel = wheels[0]
        wheel = Path(wheel).expanduser()
        try:
            zf = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as e:
            raise WeightsMissingError(f"{wheel}: not a readable wheel ({e})") from None
        out = []
        with zf:
            names = set(zf.namelist())
            for net, member in members.items():
                if member not in names:
                    raise WeightsMissingError(f"{wheel}: has no {member}; is it a {package} wheel?")
                src = Path(tmp) / Path(member).name
                src.write_bytes(zf.read(member))
                dst = convert_to_safetensors(src, dest / NETWORKS[net].files[0])
                log(f"wrote {dst}")
                out.append(dst)
    return out
