"""Predictors: a trained generator rebuilt from a checkpoint file alone, ready to call.

    >>> import imtranslate
    >>> p = imtranslate.load("runs/0001-multires/checkpoints/last.safetensors")
    >>> out = p(Image.open("scene.png"))            # PIL in -> PIL out, scale x the size
    >>> p.translate_files(["a.png", "dir/"], "out/") # files, folders and globs

Every input is translated at its own size: it is padded (reflect) up to the model's size
multiple and the output is cropped back to ``scale`` times the input's size (``scale`` = output
size / input size, 1 for same-size translators; ``Task.size_scale``) — never silently resized. An image whose translation
would not fit the memory budget is translated in overlapping tiles (``infer/tiling.py``).
"""
from __future__ import annotations

import contextlib
import glob
from pathlib import Path

import numpy as np
import torch

from ..allocator import reuse_freed_memory
from ..config import Config, autocast_dtype, use_channels_last
from ..data import encode_input, input_channels, input_read_mode, list_images, read_image, to_uint8, write_image
from ..errors import DataError, ImtranslateError
from ..ops import crop_to, pad_to_multiple
from ..tasks import get_task, resolve
from .optimize import optimize_for_inference
from ..checkpoint_file import load_generator, load_tensors
from .tiling import (TilingChoice, TilingError, choose_tiling, default_budget, instance_norms, measure_edge_effect,
                     measure_memory, memory_in_use, overlap_for_edge, probe_input, round_up, tile_translate)


def expand_inputs(inputs) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> a list of image files."""
    files: list[Path] = []
    for item in inputs:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DataError(p, "folder holds no images")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif any(ch in s for ch in "*?["):
            matched = sorted(Path(m) for m in glob.glob(s, recursive=True) if Path(m).is_file())
            if not matched:
                raise DataError(s, "pattern matched no files")
            files.extend(matched)
        else:
            raise DataError(p, "no such file or folder")
    return files


class Predictor:
    """A generator and the recipe (config, task) that turns raw images into its inputs."""

    def __init__(self, G: torch.nn.Module, cfg: Config, extras: dict | None = None, device="cpu",
                 batch_size: int = 4, source: str = "", optimize: bool = True, precision: str = "fp32",
                 compile: bool | str = False):
        """``precision``: "fp32", or "bf16" (autocast; CUDA, or a CPU with native bf16 — a
        ConfigError elsewhere). ``compile``: True / "inductor" (or another torch.compile backend)
        compiles the generator on its first call (minutes on a small CPU; then faster per image)."""
        if precision not in ("fp32", "bf16"):
            raise ImtranslateError(f"precision must be fp32 or bf16, got {precision!r}")
        self.G = G.to(device).eval()
        self.precision = precision
        self.amp_dtype = autocast_dtype("bf16" if precision == "bf16" else "none", device, what="--precision")
        self.cfg = cfg
        self.task_cls = get_task(cfg.task)
        self.extras = {k: v.to(device) for k, v in (extras or {}).items()}
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.source = source
        self.read_mode = input_read_mode(cfg.data)
        if optimize:  # same function, faster (see infer/optimize.py), NHWC where that is faster
            if cfg.train.malloc == "reuse":
                reuse_freed_memory()  # no page faults per call for the activations (allocator.py)
            self.channels_last = optimize_for_inference(self.G, cfg.train, self.device)
        else:  # the net as it trained
            self.channels_last = use_channels_last(cfg.train, self.device)
            if self.channels_last:
                self.G.to(memory_format=torch.channels_last)
        if compile:
            self.G.compile(backend="inductor" if compile is True else compile)
        self.multiple = self.task_cls.size_multiple(self.G, cfg)
        self.scale = self.task_cls.size_scale(self.G, cfg)  # output size / input size
        self._memory = None  # tiling.MemoryModel, measured on first need
        self._overlap = None  # (overlap, note), measured on first need
        self.last_tiling: TilingChoice | None = None  # how the last translate_tensor ran
        self.tiling_log: list[tuple[Path, TilingChoice]] = []  # tiled images of the last translate_files

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", use_ema: bool = True, batch_size: int = 4,
                        optimize: bool = True, precision: str = "fp32", compile: bool | str = False) -> "Predictor":
        """Rebuild the generator named in the checkpoint from its saved kwargs and load its weights."""
        G, meta, source = load_generator(path, use_ema=use_ema)
        cfg = resolve(meta["config"])
        extras = load_tensors(path, "extra/")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(G, cfg, extras, device=device, batch_size=batch_size, source=source, optimize=optimize,
                   precision=precision, compile=compile)

    # ---- encoding ----------------------------------------------------------------------------
    def encode(self, x, inst=None) -> torch.Tensor:
        """PIL / ndarray / path -> the model input (C, H, W), exactly as the training data was encoded."""
        name = "<input>"
        if isinstance(x, (str, Path)):
            name = str(x)  # errors about the contents (class ids out of range) name the file
            x = read_image(x, self.read_mode)
        elif not isinstance(x, np.ndarray):  # PIL image
            from PIL import Image

            if not isinstance(x, Image.Image):
                raise ImtranslateError(f"cannot translate an object of type {type(x).__name__}; "
                                       "give a PIL image, a numpy array, a tensor or a path")
            if self.read_mode == "label":
                x = np.asarray(x).astype(np.int64)
            else:
                x = np.asarray(x.convert("RGB" if self.read_mode == "rgb" else "L"))
        if isinstance(inst, (str, Path)):
            inst = read_image(inst, "label")
        return encode_input(x, self.cfg.data, inst=inst, name=name)

    # ---- running -----------------------------------------------------------------------------
    @torch.inference_mode()
    def translate_tensor(self, A: torch.Tensor, tile: int | None = None, overlap: int | None = None,
                         max_memory: float | None = None, norm_stats: str = "exact", **options) -> torch.Tensor:
        """Encoded inputs (B, C, H, W) -> outputs (B, C_out, scale H, scale W) in [-1, 1], any H and W.

        Tiling (see :meth:`plan_tiling`): ``tile`` None = automatic (tiles only when the whole
        image would not fit ``max_memory`` GB), 0 = never, N = N-pixel tiles; ``overlap`` in
        pixels (None: measured for this model); ``norm_stats`` "exact" or "fast" (whole-image
        instance-norm statistics streamed exactly, or taken on a shrunk copy). Tiled outputs
        are on the CPU.
        """
        choice = self.plan_tiling(A.shape, tile=tile, overlap=overlap, max_memory=max_memory,
                                  norm_stats=norm_stats, **options)
        self.last_tiling = choice
        if choice.tile:
            return tile_translate(self._tile_fn(options), A.float(), choice.tile, choice.overlap, self.multiple,
                                  scale=self.scale, model=self.G, stats=choice.stats, stats_scale=choice.stats_scale,
                                  is_label=self.read_mode == "label", device=self.device)
        A = A.to(self.device, torch.float32)
        A_pad = pad_to_multiple(A, self.multiple)
        if self.channels_last:
            A_pad = A_pad.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.task_cls.translate(self.G, A_pad, self.cfg, self.extras, **options)
        return crop_to(out, A.shape[-2:], self.scale).float()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ---- tiling --------------------------------------------------------------------------------
    def _tile_fn(self, options: dict):
        """The model on one padded tile (B, C, h, w) -> (B, C_out, scale h, scale w)."""

        def fn(x: torch.Tensor) -> torch.Tensor:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                return self.task_cls.translate(self.G, x, self.cfg, self.extras, **options).float()

        return fn

    def memory_model(self, **options):
        """Peak memory of one forward as ``fixed + per_pixel * pixels`` (measured once, cached)."""
        if self._memory is None:
            self._memory = measure_memory(self._tile_fn(options), input_channels(self.cfg.data), self.multiple,
                                          self.device, model=self.G, scale=self.scale)
        return self._memory

    def tile_overlap(self, **options) -> tuple[int, str]:
        """The default tile overlap for this model, and a note when it is only a lower bound.

        Twice the distance over which a tile border changes the output by more than half a
        grey level, measured on a synthetic probe (a larger probe when the first one is too
        small to see the effect die out); cached.
        """
        if self._overlap is None:
            fn = self._tile_fn(options)
            size = round_up(max(256, 2 * self.multiple), self.multiple)
            note = ""
            while True:
                probe = probe_input(input_channels(self.cfg.data), size, size, self.read_mode == "label").to(self.device)
                dist, saturated = measure_edge_effect(fn, probe, self.multiple, model=self.G, scale=self.scale)
                if not saturated:
                    break
                if size * 2 > 1024:
                    note = (f"a tile border changes the output at least {dist} px inward (more than a "
                            f"{size} px probe shows); overlap {overlap_for_edge(dist)} px")
                    break
                size *= 2
            self._overlap = (max(16, overlap_for_edge(dist)), note)
        return self._overlap

    def plan_tiling(self, shape, tile: int | None = None, overlap: int | None = None,
                    max_memory: float | None = None, norm_stats: str = "exact", **options) -> TilingChoice:
        """Whether (and how) an input of ``shape`` (B, C, H, W) is tiled; see :meth:`translate_tensor`.

        The budget is the peak memory of the whole process on the CPU (its resident size), or
        of the CUDA allocator; default :func:`tiling.default_budget`.
        """
        if norm_stats not in ("exact", "fast"):
            raise TilingError(f"norm_stats must be 'exact' or 'fast', got {norm_stats!r}")
        if tile == 0:
            return TilingChoice(0, reason="untiled (asked for)")
        if tile is not None and tile < 0:
            raise TilingError(f"--tile must be 0 (untiled) or a tile size in pixels, got {tile}")
        if max_memory is not None and max_memory <= 0:
            raise TilingError(f"--max-memory must be a positive number of GB, got {max_memory}")
        b, _, h, w = shape
        norms = bool(instance_norms(self.G))
        mem = self.memory_model(**options) if (tile is None or norms) else None
        budget = max_memory * 2**30 if max_memory else default_budget(self.device)
        in_use = memory_in_use(self.device)
        if tile is None and mem.bytes_for(b, round_up(h, self.multiple), round_up(w, self.multiple)) <= budget - in_use:
            return choose_tiling(mem, shape, self.multiple, budget, in_use)  # untiled; no overlap needed
        notes = []
        measured = overlap is None
        if measured:
            overlap, note = self.tile_overlap(**options)
            notes += [note] if note else []
            if tile is not None and overlap > tile // 2:
                notes.append(f"{tile} px tiles are small for this model (it needs {overlap} px of overlap); "
                             f"tile borders may show")
                overlap = tile // 2
        choice = choose_tiling(mem, shape, self.multiple, budget, in_use, tile=tile, overlap=overlap,
                               overlap_measured=measured, instance_norm=norms, fast_stats=norm_stats == "fast")
        choice.notes += notes
        return choice

    def __call__(self, x, inst=None, **options):
        """Translate one image. PIL in -> PIL out; ndarray in -> uint8 ndarray out; tensor in -> tensor out.

        A tensor is taken as already encoded: (C, H, W) or (B, C, H, W), pictures in [-1, 1].
        """
        if torch.is_tensor(x):
            batched = x.dim() == 4
            out = self.translate_tensor(x if batched else x[None], **options)
            return out if batched else out[0]
        A = self.encode(x, inst)[None]
        out = to_uint8(self.translate_tensor(A, **options)[0])
        if isinstance(x, np.ndarray):
            return out
        from PIL import Image

        return Image.fromarray(out)

    def translate_files(self, inputs, out_dir, suffix: str = ".png", progress: bool = True,
                        inst_dir=None, **options) -> list[Path]:
        """Translate files / folders / globs into ``out_dir`` (one output per input, same stem).

        Images of the same size are batched together (``batch_size``); each keeps its own size.
        """
        files = expand_inputs(inputs)
        self.tiling_log = []  # (file, TilingChoice) of every image translated in tiles
        seen: dict[str, Path] = {}
        for f in files:
            if f.stem in seen:
                raise DataError(f, f"has the same name as {seen[f.stem]}; outputs would overwrite each other")
            seen[f.stem] = f
        from ..train.distributed import env

        rank, world, _ = env()
        files = files[rank::world]  # under torchrun each process writes its own share, each file once
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # group by size so batches need no resizing
        encoded: dict[tuple, list] = {}
        written: list[Path] = []
        from tqdm import tqdm

        bar = tqdm(total=len(files), disable=not progress, desc="translate", unit="img")

        def flush(key):
            items = encoded.pop(key)
            outs = self.translate_tensor(torch.stack([a for a, _ in items]), **options)
            for (a, f), o in zip(items, outs):
                dst = out_dir / (f.stem + suffix)
                write_image(dst, to_uint8(o))
                written.append(dst)
            bar.update(len(items))

        for f in files:
            inst = None
            if inst_dir is not None:
                cands = [p for p in Path(inst_dir).glob(f.stem + ".*")]
                if not cands:
                    raise DataError(Path(inst_dir) / f.stem, "instance map missing for this input")
                inst = cands[0]
            A = self.encode(f, inst)
            key = tuple(A.shape)
            if options.get("tile") != 0 and self.plan_tiling((1, *A.shape), **options).tile:
                # an image that needs tiles is translated alone: a batch of them would multiply
                # the memory of the output being blended
                encoded[("alone",)] = [(A, f)]
                flush(("alone",))
                self.tiling_log.append((f, self.last_tiling))
                continue
            encoded.setdefault(key, []).append((A, f))
            if len(encoded[key]) >= self.batch_size:
                flush(key)
        for key in list(encoded):
            flush(key)
        bar.close()
        return written
