"""The ``imtranslate`` command line. It only parses arguments and calls the library.

    imtranslate demo                                   train on built-in synthetic scenes, write report.html
    imtranslate demo upscale                           train the light x4 super-resolution net, report.html
    imtranslate demo faces                             face restoration on composites and the astronaut, report.html
    imtranslate train [CONFIG.yaml] [key=value ...]    train any task (--dry-run, --resume RUN)
    imtranslate translate CKPT INPUT... -o OUT         files, folders, globs; each at its own size
    imtranslate eval CKPT DATA                         L1 / PSNR / SSIM (+ FID / LPIPS with local weights)
    imtranslate video CKPT INPUT -o OUTPUT             video file / frame folder, flicker-free (--report)
    imtranslate data pairs SRC DST --kind contours     make training pairs from photographs
    imtranslate data synthetic DST                     write the built-in synthetic scenes
    imtranslate data synthetic-video DST               animated synthetic clips with exact flow (frames + mp4)
    imtranslate data synthetic-faces DST               write the built-in synthetic faces (labels, landmarks)
    imtranslate data check [CONFIG.yaml] [key=value]   run every dataset check, train nothing
    imtranslate export CKPT --onnx OUT.onnx            ONNX with dynamic sizes, checked against onnxruntime
    imtranslate stylize CONTENT... --style S --inverse CKPT -o OUT   style swap + per-channel blend (--blend-rgb)
    imtranslate serve [--inverse CKPT] [--translate CKPT]           web page: stylise with live sliders, translate
    imtranslate tasks                                  list the methods
    imtranslate weights                                each pretrained network: files, where looked for, found?
    imtranslate weights convert IN.pth OUT.safetensors  a .pth state dict as safetensors (no pickle)
    imtranslate weights install mtcnn                  MTCNN face detector weights from the facenet-pytorch wheel
    imtranslate restore PHOTOS... -o OUT               faces restored: SR picture, detect, enhance, parse, fuse
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .errors import ImtranslateError, TrainingInterrupted


def _configs_dir() -> Path:
    return Path(__file__).parent / "configs"


def _find_config(name: str | None) -> str | None:
    """A YAML path, or the name of a built-in config (``multires_synthetic``)."""
    if not name:
        return None
    p = Path(name)
    if p.exists():
        return str(p)
    # a built-in config by its name, with or without .yaml (the README's `multires_synthetic.yaml`)
    builtin = _configs_dir() / f"{p.stem if p.suffix in ('.yaml', '.yml') and p.parent == Path('.') else name}.yaml"
    if builtin.exists():
        return str(builtin)
    if p.suffix in (".yaml", ".yml"):
        return str(p)  # load_config says the file is not there
    known = ", ".join(sorted(q.stem for q in _configs_dir().glob("*.yaml")))
    raise ImtranslateError(f"{name}: no such config file, and not a built-in config (built-in: {known})")


def _split_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    """``train`` takes an optional config then key=value pairs, in any order."""
    config, overrides = None, []
    for it in items:
        if "=" in it:
            overrides.append(it)
        elif config is None:
            config = it
        else:
            raise ImtranslateError(f"unexpected argument {it!r}: only one config file, then key=value overrides")
    return config, overrides


def _uses_vgg(model_cfg) -> bool:
    return any(f.name == "vgg_weights" for f in dataclasses.fields(model_cfg))


def _check_vgg_option(task_name: str) -> None:
    """``--vgg-weights`` for a task whose nets use no VGG is a mistake worth one clear line."""
    from .tasks import get_task, task_names

    if not _uses_vgg(get_task(task_name).Config):
        users = [t for t in task_names() if _uses_vgg(get_task(t).Config)]
        raise ImtranslateError(f"--vgg-weights: task {task_name} uses no VGG network, so it takes no VGG weights "
                               f"(the tasks that do: {', '.join(users)}); leave the option out")


def _resumed_task(resume) -> str:
    from .checkpoint_file import read_meta
    from .train.loop import find_resume_checkpoint

    return read_meta(find_resume_checkpoint(resume))["task"]


def cmd_train(args) -> None:
    from .tasks import load_config
    from .train.loop import train

    config, overrides = _split_overrides(args.items)
    if args.resume:
        if config:
            raise ImtranslateError(f"--resume continues the saved run with its own config; drop {config!r} "
                                   "(options that may change are given as key=value)")
        if args.vgg_weights:  # the same VGG-19 file, kept elsewhere on this machine
            _check_vgg_option(_resumed_task(args.resume))
            overrides.append(f"model.vgg_weights={args.vgg_weights}")
        train(None, resume=args.resume, overrides=overrides, dry_run=args.dry_run)
        return
    cfg = load_config(_find_config(config), overrides)
    if args.vgg_weights:
        _check_vgg_option(cfg.task)
        cfg = load_config(_find_config(config), overrides + [f"model.vgg_weights={args.vgg_weights}"])
    train(cfg, dry_run=args.dry_run)


def _load_predictor(args):
    from .infer.predictor import Predictor

    return Predictor.from_checkpoint(args.checkpoint, device=args.device, use_ema=not args.no_ema,
                                     batch_size=args.batch_size, precision=getattr(args, "precision", "fp32"),
                                     compile="inductor" if getattr(args, "compile", False) else False)


def cmd_translate(args) -> None:
    from .data import prepare_output_dir

    p = _load_predictor(args)
    prepare_output_dir(args.output)  # a bad -o fails here, in one line, before any work
    options = {}
    if args.cluster is not None:
        options["cluster"] = args.cluster
    options.update(tile=args.tile, overlap=args.tile_overlap, max_memory=args.max_memory, norm_stats=args.norm_stats)
    written = p.translate_files(args.inputs, args.output, suffix=args.suffix, progress=not args.quiet,
                                inst_dir=args.inst_dir, **options)
    for f, choice in p.tiling_log:
        print(f"{f.name}: {choice.reason}, {choice.overlap} px overlap" + "".join(f"; {n}" for n in choice.notes),
              file=sys.stderr)
    print(f"wrote {len(written)} image(s) to {args.output} ({p.source} weights of {args.checkpoint})")


def cmd_eval(args) -> None:
    from .evaluate import evaluate

    res = evaluate(args.checkpoint, args.data, device=args.device, use_ema=not args.no_ema,
                   batch_size=args.batch_size, fid_weights=args.fid_weights, lpips_weights=args.lpips_weights,
                   progress=not args.quiet, log=lambda m: print(m, file=sys.stderr), precision=args.precision)
    width = max(len(k) for k in res["metrics"])
    print(f"{res['count']} image pair(s) from {args.data}")
    for k, v in res["metrics"].items():
        print(f"  {k:<{width}}  {v:.4f}")
    for k, why in res["skipped"].items():
        print(f"  {k:<{width}}  skipped: {why}")


def cmd_video(args) -> None:
    from .infer.video_translate import VideoTranslator, format_report

    vt = VideoTranslator.from_checkpoint(args.checkpoint, device=args.device, use_ema=not args.no_ema,
                                         batch_size=args.batch_size, flow=args.flow, temporal=args.temporal,
                                         scene_cut_threshold=args.scene_cut, raft_weights=args.raft_weights,
                                         flow_smooth=args.flow_smooth)
    result = vt.translate_video(args.input, args.output, report=args.report, progress=not args.quiet,
                                lossless=args.lossless, yuv444=args.yuv444, fps=args.fps)
    print(format_report(result))


def cmd_data(args) -> None:
    from . import data

    if args.data_cmd == "pairs":
        n = data.make_pairs(args.src, args.dst, args.kind, size=args.size, scale=args.scale, seed=args.seed,
                            degradations=args.degradations)
        print(f"wrote {n} pair(s) to {args.dst}/A and {args.dst}/B")
    elif args.data_cmd == "synthetic":
        root = data.generate_synthetic(args.dst, n_train=args.n_train, n_val=args.n_val, size=args.size,
                                       n_classes=args.n_classes, seed=args.seed)
        print(f"synthetic scenes in {root} (train/ and val/, each with label/ instance/ contour/ photo/)")
    elif args.data_cmd == "synthetic-video":
        from .data.synthetic_video import generate_synthetic_video

        root = generate_synthetic_video(args.dst, n_train=args.n_train, n_val=args.n_val, n_frames=args.frames,
                                        size=args.size, n_classes=args.n_classes, seed=args.seed, motion=args.motion,
                                        light=args.light, cut_every=args.cut_every, videos=not args.no_video)
        print(f"synthetic clips in {root} (train/ and val/: label/ contour/ photo/ frame folders per clip, "
              f"flow/ exact flow and occlusion masks" + ("" if args.no_video else ", video/ contour and photo mp4") + ")")
    elif args.data_cmd == "synthetic-faces":
        from .data.synthetic_faces import write_synthetic_faces

        root = write_synthetic_faces(args.dst, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed)
        print(f"synthetic faces in {root} (train/ and val/, each with image/ label/ landmarks.json)")
    elif args.data_cmd == "check":
        from .tasks import load_config

        config, overrides = _split_overrides(args.items)
        cfg = load_config(_find_config(config), overrides)
        from .tasks import get_task

        summary = get_task(cfg.task).check_data(cfg)  # the task's own checks (unpaired data for styleswap)
        print("dataset OK: " + ", ".join(f"{k}={v}" for k, v in summary.items()))


def cmd_demo(args) -> None:
    from .demo import run_demo

    if args.which == "faces":
        from .demo_faces import run_faces_demo

        res = run_faces_demo(out=args.out or "demo_faces", steps=args.steps, device=args.device, seed=args.seed)
        for name, fig in res["photos"].items():
            print(f"{name}: {fig['faces']} face(s) enhanced; PSNR {fig['psnr']} dB (Lanczos {fig['lanczos_psnr']} dB)")
        print(f"report: {res['report']}")
        return
    if args.which == "upscale":
        from .demo import run_upscale_demo

        run_upscale_demo(out=args.out or "demo_upscale", steps=args.steps, device=args.device, seed=args.seed)
        return
    run_demo(out=args.out or "demo_out", steps=args.steps, vgg_weights=args.vgg_weights, device=args.device,
             seed=args.seed)


def cmd_bench(args) -> None:
    from .bench import HEADER, run_bench

    if args.json:
        from .data import prepare_output_file

        prepare_output_file(args.json)  # before the minutes of measuring, not after
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    run_bench(args.only.split(",") if args.only else None, device=args.device, batch=args.batch,
              warmup=args.warmup, repeats=args.repeats, plain=args.plain, threads=args.threads,
              json_path=args.json, scale=args.scale,
              variants=args.variants.split(",") if args.variants else None, compile_backend=args.compile_backend)


def cmd_export(args) -> None:
    from .data import prepare_output_file
    from .infer.export import export_onnx

    prepare_output_file(args.onnx)
    res = export_onnx(args.checkpoint, args.onnx, opset=args.opset, cluster=args.cluster or 0,
                      use_ema=not args.no_ema, tolerance=args.tolerance)
    worst = max(d for _, d in res["checks"])
    print(f"wrote {args.onnx} (dynamic batch, height, width; {res['exporter']} exporter); "
          f"onnxruntime matches torch to {worst:.1e}")


def print_compress_table(table, quality: str) -> None:
    """The per-round table of ``imtranslate compress`` as Markdown."""
    print(f"| round | MACs (M) | params (k) | latency (ms) | {quality.split(':')[0]} vs teacher | layers cut | held back |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        if r["round"] == "int8":
            print(f"| int8 (onnxruntime) | | | {r['latency_ms']:.1f} (fp32 onnx {r['latency_fp32_onnx_ms']:.1f}) "
                  f"| {r['psnr_vs_fp32']:.2f} dB vs fp32 | | |")
            continue
        cut = [n for n, v in r["layers"].items() if v.get("passed") or v.get("separable")]
        held = ", ".join(r["held_back"][:6]) + (" ..." if len(r["held_back"]) > 6 else "")
        print(f"| {r['round']} | {r['macs'] / 1e6:.2f} | {r['params'] / 1e3:.1f} | {r['latency_ms']:.1f} "
              f"| {r['quality']:.3f} | {len(cut)} | {len(r['held_back'])} {held} |")


def cmd_compress(args) -> None:
    import json

    from .compress import compress
    from .data import prepare_output_file

    prepare_output_file(args.output)
    out, table = compress(args.checkpoint, args.output, ratio=args.ratio, rounds=args.rounds,
                          round_steps=args.round_steps, quality=args.quality, target_macs=args.target_macs,
                          importance=args.importance, separable=args.separable, int8=args.int8,
                          int8_min_psnr=args.int8_min_psnr, overrides=args.overrides, device=args.device,
                          ratio_by=args.ratio_by)
    print_compress_table(table, args.quality)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1, default=str))
    print(f"wrote {out}")


def _blend_weights(args) -> tuple:
    """``--blend A`` or ``--blend-rgb a,b,c`` -> (A,) or (a, b, c)."""
    if args.blend is not None and args.blend_rgb is not None:
        raise ImtranslateError("give --blend A (one weight) or --blend-rgb a,b,c, not both")
    if args.blend_rgb is not None:
        try:
            weights = tuple(float(v) for v in args.blend_rgb.split(","))
        except ValueError:
            weights = ()
        if len(weights) != 3:
            raise ImtranslateError(f"--blend-rgb takes three numbers a,b,c (R, G, B), got {args.blend_rgb!r}")
        return weights
    return (args.blend if args.blend is not None else 0.0,)


def cmd_stylize(args) -> None:
    from .infer.stylize import Stylizer

    weights = _blend_weights(args)
    if args.stylesr:  # one net stylises and up-scales; the blend is with the up-sampled content
        from .data import prepare_output_dir
        from .infer.stylize import StyleSRBlender

        if args.inverse or args.optimize or args.style:
            raise ImtranslateError("--stylesr carries its style in the net: give it without --style, --inverse "
                                   "or --optimize")
        b = StyleSRBlender.from_checkpoint(args.stylesr, device=args.device, use_ema=not args.no_ema)
        prepare_output_dir(args.output)
        written = b.stylize_files(args.contents, args.output, blend=weights, preserve_color=args.preserve_color,
                                  suffix=args.suffix, progress=not args.quiet)
        print(f"wrote {len(written)} picture(s), {b.scale}x their size, to {args.output} (blend "
              f"{','.join(map(str, weights))}; {b.predictor.source} weights of {args.stylesr})")
        return
    if not args.style:
        raise ImtranslateError("give --style PICTURE (or --stylesr CKPT, a net trained with task=stylesr)")
    if args.inverse:
        st = Stylizer.from_checkpoint(args.inverse, vgg_weights=args.vgg_weights, device=args.device, tile=args.tile,
                                      use_ema=not args.no_ema)
    elif args.optimize:
        st = Stylizer(None, encoder_layer=args.layer, vgg_weights=args.vgg_weights or "imagenet",
                      device=args.device, tile=args.tile)
    else:
        raise ImtranslateError("give --inverse CKPT (a network trained with task=styleswap), or --optimize to "
                               "invert the swapped features by gradient descent instead")
    from .data import prepare_output_dir

    prepare_output_dir(args.output)
    written = st.stylize_files(args.contents, args.style, args.output, blend=weights,
                               preserve_color=args.preserve_color, suffix=args.suffix, progress=not args.quiet,
                               patch=args.patch, stride=args.stride, fast=args.fast, optimize=args.optimize,
                               steps=args.steps)
    how = "optimisation" if args.optimize else st.source
    print(f"wrote {len(written)} picture(s) to {args.output} (style {args.style}; blend {','.join(map(str, weights))}; "
          f"{how})")


def cmd_serve(args) -> None:
    from .web.app import serve

    serve(inverse=args.inverse, translate=args.translate, vgg_weights=args.vgg_weights, host=args.host,
          port=args.port, device=args.device, max_mb=args.max_mb, max_pixels=args.max_pixels,
          optimize_only=args.optimize_only,
          restore=dict(sr=args.restore_sr, enhancer=args.restore_enhancer, parser=args.restore_parser,
                       upscale=args.restore_upscale) if args.restore else None)


def cmd_tasks(args) -> None:
    from .tasks import get_task, task_names

    for name in task_names():
        doc = (get_task(name).__module__ and sys.modules[get_task(name).__module__].__doc__ or "").strip()
        print(f"{name:<10} {doc.splitlines()[0] if doc else ''}")


def _restorer(args):
    from .infer.restore import Restorer

    regions = tuple(r for r in (args.regions or "").split(",") if r) or None
    return Restorer.from_options(
        sr=args.sr, enhancer=args.enhancer, parser=args.parser, detector=args.detector,
        mtcnn_weights=args.mtcnn_weights, yunet_model=args.yunet_model, device=args.device, upscale=args.upscale,
        min_face=args.min_face, max_faces=args.max_faces, only_center_face=args.only_center_face,
        face_size=args.face_size, **({"regions": regions} if regions else {}))


def cmd_restore(args) -> None:
    written = _restorer(args).restore_files(args.photos, args.output, suffix=args.suffix, save_faces=args.save_faces,
                                            save_masks=args.save_masks)
    print(f"wrote {len(written)} picture(s) to {args.output} (x{args.upscale}; sr {args.sr}, enhancer "
          f"{args.enhancer}, parser {args.parser})")


def cmd_weights(args) -> None:
    from . import weights

    if args.items[:1] == ["convert"]:
        if len(args.items) != 3:
            raise ImtranslateError("usage: imtranslate weights convert IN.pth OUT.safetensors")
        out = weights.convert_to_safetensors(*args.items[1:])
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
        return
    if args.items[:1] == ["install"]:
        if len(args.items) != 2:
            raise ImtranslateError(f"usage: imtranslate weights install NAME (one of: {', '.join(weights.INSTALLABLE)})")
        weights.install(args.items[1], wheel=args.wheel)
        return
    lookups = weights.status()
    if args.items:
        lookups = [lk for lk in lookups if lk.network.name in args.items]
        unknown = sorted(set(args.items) - {lk.network.name for lk in lookups})
        if unknown:
            raise ImtranslateError(f"unknown network(s) {', '.join(unknown)}; known: {', '.join(weights.NETWORKS)}")
    print("search order: explicit path (the option below) -> " + " -> ".join(
        f"{label} {folder}" for label, folder in weights.search_dirs()))
    for lk in lookups:
        net = lk.network
        print(f"\n{net.name:<14} {net.title}" + ("" if net.loader else "  [no loader yet]"))
        print(f"  {'used by':<10} {net.used_by}")
        print(f"  {'files':<10} {', '.join(net.files)}" + ("  (or 'random', tests only)" if net.random_ok else ""))
        print(f"  {'option':<10} {net.option}")
        print(f"  {'source':<10} {net.source}")
        print(f"  {'found':<10} {lk.found}" if lk.found else f"  {'found':<10} no (looked for {len(lk.candidates)} paths)")
    n_found = sum(lk.found is not None for lk in lookups)
    print(f"\n{n_found} of {len(lookups)} found; nothing is ever downloaded. "
          "Convert a .pth with: imtranslate weights convert IN.pth OUT.safetensors")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="imtranslate", description="Generative image-to-image translation.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--version", action="version", version=f"imtranslate {__import__('imtranslate').__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train the multi-resolution model (or, with `upscale`, the light x4 "
                                    "super-resolution net) on synthetic scenes and write report.html")
    p.add_argument("which", nargs="?", choices=["multires", "upscale", "faces"], default="multires",
                   help="multires (default): SPEC S1's translator; upscale: the light x4 stylesr net (SPEC S4); "
                        "faces: face restoration (SPEC S5: parser and enhancer on synthetic faces, restored photos)")
    p.add_argument("--out", default=None, help="output folder (default: demo_out, or demo_upscale)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: a few CPU minutes)")
    p.add_argument("--vgg-weights", default=None,
                   help="VGG-19 weights for the style loss (file); default: the torch cache, else random features")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a task from a YAML config and key=value overrides")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key=value]",
                   help="a YAML file or built-in config name, then overrides such as train.steps=500")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder or checkpoint exactly where it stopped")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    p.add_argument("--vgg-weights", metavar="PATH", help="local VGG-19 weights (.safetensors or .pth)")
    p.set_defaults(func=cmd_train)

    def predictor_args(p):
        p.add_argument("checkpoint", metavar="CKPT", help="a .safetensors checkpoint written by imtranslate train")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--batch-size", type=int, default=4)
        p.add_argument("--no-ema", action="store_true", help="use the raw generator weights, not the EMA")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    def precision_arg(p):
        p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                       help="bf16: mixed precision (CUDA, or a CPU with native bf16: avx512_bf16 / AMX)")

    p = sub.add_parser("translate", help="translate images with a trained checkpoint")
    predictor_args(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    precision_arg(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the generator (inductor): minutes to compile, then faster per image")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--suffix", default=".png", help="output file extension (default .png)")
    p.add_argument("--inst-dir", default=None, help="instance maps (same stems) for label inputs that use them")
    p.add_argument("--cluster", type=int, default=None,
                   help="pix2pixHD with instance features: which K-means cluster to use for every class")
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help="translate in N-pixel tiles (0: never tile); default: only images that would not fit "
                        "--max-memory")
    p.add_argument("--tile-overlap", type=int, default=None, metavar="M",
                   help="pixels neighbouring tiles share (default: measured for the model)")
    p.add_argument("--max-memory", type=float, default=None, metavar="GB",
                   help="memory budget of a translation (CPU: the whole process; default: its size plus half "
                        "the available memory, at least 2 GB; GPU: 90%% of it)")
    p.add_argument("--norm-stats", choices=["exact", "fast"], default="exact",
                   help="instance-norm statistics of tiled images: exact (streamed over the tiles) or fast "
                        "(from a shrunk copy; approximate)")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("eval", help="held-out L1 / PSNR / SSIM (+ FID / LPIPS when their weights are local)")
    predictor_args(p)
    p.add_argument("data", metavar="DATA", help="a folder laid out like the training data (e.g. with A/ and B/)")
    precision_arg(p)
    p.add_argument("--fid-weights", default=None, help="Inception-v3 weights file for FID")
    p.add_argument("--lpips-weights", default=None, help="LPIPS weights file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("video", help="translate a video file or frame folder, consistent from frame to frame")
    predictor_args(p)
    p.add_argument("input", metavar="INPUT", help="video file (mp4, mov, mkv, webm, ...) or a folder of frames")
    p.add_argument("-o", "--output", required=True, help="video file (extension picks the format) or a folder for PNGs")
    p.add_argument("--flow", default="dis-medium", help="dis-ultrafast | dis-fast | dis-medium (default) | farneback | raft")
    p.add_argument("--temporal", type=float, default=0.9, help="blend strength in [0, 1): 0 = per-frame (default 0.9)")
    p.add_argument("--scene-cut", type=float, default=0.5, help="scene-cut threshold in [0, 1] (1 = never reset)")
    p.add_argument("--flow-smooth", default="0", metavar="SIGMA|auto",
                   help="blur (px) of the frames the flow is computed on (default 0 = none; auto = 2 px for "
                        "line drawings only); see docs/VIDEO.md")
    p.add_argument("--lossless", action="store_true", help="bit-exact RGB video (large; for measuring)")
    p.add_argument("--yuv444", action="store_true", help="full-resolution colour instead of 4:2:0")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a frame-folder input (default 25)")
    p.add_argument("--report", action="store_true", help="print warping error (per-frame vs blended) and PSNR")
    p.add_argument("--raft-weights", default=None, metavar="PATH", help="local torchvision RAFT weights for --flow raft")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="TOOL")
    q = dsub.add_parser("pairs", help="make A/ (input) and B/ (photo) pairs from a folder of photographs")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("--kind", required=True, choices=["contours", "grey", "downscale", "degrade"])
    q.add_argument("--size", type=int, default=0, help="resize the shorter side to this first (0 = keep)")
    q.add_argument("--scale", type=int, default=4, help="downscale factor for --kind downscale")
    q.add_argument("--degradations", default="",
                   help="--kind degrade: the pipeline, type:coefficient[:kernel],... in order (docs/FACE.md); "
                        "default gaussian_blur:0.3,downscale:0.3,gaussian_noise:0.2,jpeg:0.4")
    q.add_argument("--seed", type=int, default=0)
    q = dsub.add_parser("synthetic", help="write the built-in synthetic scenes to a folder")
    q.add_argument("dst")
    q.add_argument("--n-train", type=int, default=256)
    q.add_argument("--n-val", type=int, default=32)
    q.add_argument("--size", type=int, default=64)
    q.add_argument("--n-classes", type=int, default=6)
    q.add_argument("--seed", type=int, default=0)
    q = dsub.add_parser("synthetic-video", help="write animated synthetic clips with exact flow (frame folders + mp4)")
    q.add_argument("dst")
    q.add_argument("--n-train", type=int, default=16)
    q.add_argument("--n-val", type=int, default=4)
    q.add_argument("--frames", type=int, default=16, help="frames per clip")
    q.add_argument("--size", type=int, default=64)
    q.add_argument("--n-classes", type=int, default=6)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--motion", type=float, default=1.0, help="scales every velocity (0 = still)")
    q.add_argument("--light", type=float, default=0.05, help="amplitude of the slow light change")
    q.add_argument("--cut-every", type=int, default=0, help="cut to a new scene every N frames (0 = never)")
    q.add_argument("--no-video", action="store_true", help="frame folders only, no mp4 files")
    q = dsub.add_parser("synthetic-faces", help="write the built-in synthetic faces (parsing labels, 5 landmarks)")
    q.add_argument("dst")
    q.add_argument("--n-train", type=int, default=512)
    q.add_argument("--n-val", type=int, default=64)
    q.add_argument("--size", type=int, default=128)
    q.add_argument("--seed", type=int, default=0)
    q = dsub.add_parser("check", help="run every dataset check of a config and stop")
    q.add_argument("items", nargs="*", metavar="[CONFIG] [key=value]")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("bench", help="speed / memory / FLOPs of the reference architectures")
    p.add_argument("--only", default="", help="comma-separated configurations (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--plain", action="store_true", help="also measure with every speed lever off")
    p.add_argument("--variants", default="",
                   help="comma-separated rows per configuration: imtranslate (default), plain, compiled, bf16, "
                        "bf16+compiled, system-malloc")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled variants (aot_eager: a quick check of the path)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--scale", type=float, default=1.0, help="shrink every image size by this factor (smoke runs)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export the generator to ONNX and check it against onnxruntime")
    p.add_argument("checkpoint", metavar="CKPT", help="a .safetensors checkpoint written by imtranslate train")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--cluster", type=int, default=None,
                   help="pix2pixHD with instance features: the K-means cluster baked into the graph (default 0)")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator weights, not the EMA")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest accepted |onnxruntime - torch| on the check inputs (default 1e-3)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compress", help="make a generator smaller and faster: pruning in rounds, separable, int8")
    p.add_argument("checkpoint", metavar="CKPT", help="a .safetensors checkpoint written by imtranslate train")
    p.add_argument("-o", "--output", required=True, metavar="SMALL.safetensors", help="the checkpoint to write")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides for the training / held-out data (e.g. data.root=FOLDER)")
    p.add_argument("--ratio", type=float, default=0.25, help="share of each layer's channels cut per round (0.25)")
    p.add_argument("--rounds", type=int, default=3, help="pruning rounds (3; 0 = none)")
    p.add_argument("--round-steps", type=int, default=50, help="fine-tuning steps after each round's cut (50)")
    p.add_argument("--quality", default="psnr:30",
                   help="quality index against the unpruned net on held-out inputs: psnr:DB, ssim:X or l1:X")
    p.add_argument("--target-macs", type=float, default=0, help="stop once the MACs are at most this (0 = no target)")
    p.add_argument("--importance", default="activation", choices=["l2", "activation", "bn"],
                   help="channel ranking: mean activation (default), filter L2 norm, or batch-norm scale")
    p.add_argument("--ratio-by", default="uniform", choices=["uniform", "macs", "pixels"],
                   help="starting ratio per layer: the same (default), or scaled by the layer's share of the MACs "
                        "or of the activation pixels (capped at 0.75)")
    p.add_argument("--separable", action="store_true", help="then make k x k convs depthwise + pointwise, distilled")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (static int8, onnxruntime)")
    p.add_argument("--int8-min-psnr", type=float, default=30.0,
                   help="tolerance: the int8 output's PSNR against the fp32 export, in dB (30)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--json", default=None, help="write the per-round table here")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("stylize", help="style transfer by style swap (SPEC S3), blended with the content per channel")
    p.add_argument("contents", nargs="+", metavar="CONTENT", help="content pictures: files, folders or globs")
    p.add_argument("--style", metavar="STYLE", help="the style picture (not with --stylesr)")
    p.add_argument("--stylesr", metavar="CKPT", help="a stylesr checkpoint: stylise and up-scale in one pass, "
                   "then blend with the content up-sampled to the output size")
    p.add_argument("--inverse", metavar="CKPT", help="inverse network: a checkpoint trained with task=styleswap")
    p.add_argument("-o", "--output", required=True, help="output folder (one picture per content, same size)")
    p.add_argument("--blend", type=float, default=None, metavar="A",
                   help="weight of the content in every channel: 0 = stylised (default), 1 = content")
    p.add_argument("--blend-rgb", default=None, metavar="a,b,c", help="separate weights for R, G and B")
    p.add_argument("--preserve-color", action="store_true", help="keep the content's colours (stylised luminance)")
    p.add_argument("--optimize", action="store_true",
                   help="invert the swapped features by gradient descent (no inverse network needed; slow)")
    p.add_argument("--steps", type=int, default=100, help="gradient steps for --optimize (default 100)")
    p.add_argument("--patch", type=int, default=None, help="swap patch side in feature pixels (default: the checkpoint's, 3)")
    p.add_argument("--stride", type=int, default=None, help="swap stride in feature pixels (default: the checkpoint's, 1)")
    p.add_argument("--fast", action="store_true", help="approximate coarse-to-fine swap (several times faster)")
    p.add_argument("--vgg-weights", metavar="PATH", default=None,
                   help="VGG-19 weights file (default: what the checkpoint was trained with; imagenet = torch cache)")
    p.add_argument("--no-ema", action="store_true", help="use the raw inverse-net weights, not the EMA")
    p.add_argument("--layer", default="relu3_1", help="encoder layer for --optimize without --inverse")
    p.add_argument("--tile", type=int, default=1024, help="encode/decode pictures larger than this by tiles (pixels)")
    p.add_argument("--device", default="auto")
    p.add_argument("--suffix", default=".png", help="output file extension (default .png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("serve", help="web page: style transfer with live per-channel sliders, and translation")
    p.add_argument("--inverse", metavar="CKPT", help="styleswap checkpoint for the style transfer tab")
    p.add_argument("--translate", metavar="CKPT", help="paired-translation checkpoint for the translation tab")
    p.add_argument("--vgg-weights", metavar="PATH", default=None, help="VGG-19 weights file for the encoder")
    p.add_argument("--optimize-only", action="store_true",
                   help="no inverse network: stylise by optimisation (slow; needs --vgg-weights or the torch cache)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-mb", type=float, default=10.0, help="largest accepted upload, MB (default 10)")
    p.add_argument("--max-pixels", type=int, default=4_000_000, help="largest accepted picture, pixels (default 4M)")
    p.add_argument("--restore", action="store_true", help="the Restore tab: faces restored as `imtranslate restore` does")
    p.add_argument("--restore-sr", default="none", metavar="CKPT|none", help="Restore tab: the SR checkpoint")
    p.add_argument("--restore-enhancer", default="none", metavar="CKPT|none", help="Restore tab: the face enhancer")
    p.add_argument("--restore-parser", default="landmarks", metavar="CKPT|landmarks", help="Restore tab: the parser")
    p.add_argument("--restore-upscale", type=int, default=2, choices=(1, 2, 4), help="Restore tab: output / input size")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("restore", help="restore faces in photographs: SR picture, detect, enhance, parse, fuse")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photographs: files, folders or globs; any size")
    p.add_argument("-o", "--output", required=True, help="output folder (one picture per photo, upscale x its size)")
    p.add_argument("--upscale", type=int, default=2, choices=(1, 2, 4), help="output size / input size (default 2)")
    p.add_argument("--sr", default="none", metavar="CKPT|none",
                   help="whole-picture SR: a stylesr checkpoint trained with target=sr (tiled when large); "
                        "none = Lanczos (default)")
    p.add_argument("--enhancer", default="none", metavar="CKPT|none",
                   help="face enhancer: a faceenhance checkpoint (or any face-crop generator); none = identity")
    p.add_argument("--parser", default="landmarks", metavar="CKPT|landmarks",
                   help="face parser: a faceparse checkpoint, or landmarks = a feathered face ellipse (default)")
    p.add_argument("--regions", default=None, metavar="a,b,...",
                   help="parser classes pasted back (default: skin,brows,eyes,nose,upper_lip,lower_lip,mouth,glasses)")
    p.add_argument("--detector", default="auto", choices=("auto", "mtcnn", "yunet"),
                   help="auto: MTCNN when installed (imtranslate weights install mtcnn), else YuNet with --yunet-model")
    p.add_argument("--mtcnn-weights", metavar="FOLDER", default=None, help="folder holding mtcnn_{p,r,o}net.safetensors")
    p.add_argument("--yunet-model", metavar="FILE.onnx", default=None, help="OpenCV Zoo's YuNet ONNX file")
    p.add_argument("--min-face", type=int, default=0, help="ignore faces smaller than this (input pixels)")
    p.add_argument("--max-faces", type=int, default=0, help="enhance at most this many faces, largest first (0 = all)")
    p.add_argument("--only-center-face", action="store_true", help="enhance only the face nearest the centre")
    p.add_argument("--face-size", type=int, default=0, help="aligned crop side (default: the enhancer's crop, else 256)")
    p.add_argument("--save-faces", action="store_true", help="also write the aligned and enhanced crops (faces/)")
    p.add_argument("--save-masks", action="store_true", help="also write the paste masks and parsing maps (masks/)")
    p.add_argument("--suffix", default=".png", help="output file extension (default .png)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("tasks", help="list the available methods")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("weights", help="list the pretrained networks: files looked for, where, and what was found")
    p.add_argument("items", nargs="*", metavar="NAME | convert IN.pth OUT.safetensors",
                   help="only these networks (default: all); or `convert IN.pth OUT.safetensors` to write a .pth "
                        "state dict (read with weights_only=True) as safetensors; or `install mtcnn` to fetch "
                        "MTCNN's weights from the facenet-pytorch wheel (pip, no dependencies) as safetensors")
    p.add_argument("--wheel", metavar="FILE.whl", default=None, help="install: use this wheel instead of pip download")
    p.set_defaults(func=cmd_weights)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ImtranslateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:  # the loop wrote a checkpoint and said how to resume
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
