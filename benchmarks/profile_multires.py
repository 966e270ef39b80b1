"""Where a multi-resolution training step's time goes (SPEC S1, docs/BENCHMARKS.md §1).

Times, in the joint stage (every level active), each part of one training step separately:
the pyramid, the generator's forward and backward, each level's discriminator in the D phase
(real + fake forward, backward) and in the G phase (forward, backward into the output), each
level's style loss (VGG-19 on output and target, backward), the L1 terms and the two optimiser
steps; then the whole ``train_step`` as the loop runs it (per step, averaged over the
period of ``style_every`` / ``coarse_every``). The fastest of ``--repeats`` after a
warm-up; process CPU time (``--clock cpu``, steady on a shared machine) or wall clock.

    python benchmarks/profile_multires.py                      # quality-benchmark and bench widths
    python benchmarks/profile_multires.py --preset quality --variant cheap=model.style_layers_coarse=[relu1_1,relu2_1]
    python benchmarks/profile_multires.py --quick              # smoke run (tiny widths)

``--variant NAME=OVERRIDE[,OVERRIDE...]`` adds a column of the same step with those config
overrides (the "step" row then compares the variants).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from imtranslate.tasks import load_config  # noqa: E402
from imtranslate.train.stepping import build_task  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import METHODS  # noqa: E402

# name -> (overrides, batch, crop): the quality benchmark's multires at 64 px, batch 8 (label-map
# input), and `imtranslate bench`'s multires-256 (the defaults at 256 px, batch 1)
PRESETS = {
    "quality": (METHODS["multires"] + ["data.dataset=synthetic", "data.synthetic.input=label"], 8, 64),
    "bench": ([], 1, 256),
    "quick": (["model.ngf=4", "model.max_channels=16", "model.n_res_blocks=1", "model.ndf=4",
               "model.style_layers=[relu1_1,relu2_1]"], 2, 32),
}


def clock(kind: str):
    return time.process_time if kind == "cpu" else time.perf_counter


def best_time(fn, repeats: int, now) -> float:
    """The fastest of ``repeats`` calls after a warm-up (the least disturbed by other load)."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = now()
        fn()
        ts.append(now() - t0)
    return min(ts)


def profile(overrides: list[str], batch: int, crop: int, repeats: int, clock_kind: str) -> tuple[dict[str, float], str]:
    cfg = load_config(None, ["task=multires", f"train.batch_size={batch}", f"data.crop_size={crop}",
                             "train.device=cpu", "model.vgg_weights=random", "model.stage_steps=[0,0,0]"]
                      + overrides)
    torch.manual_seed(0)
    task = build_task(cfg, "cpu")
    task.set_stage(cfg.model.n_levels)  # joint: every level active
    G, m, now = task.nets["G"], task.m, clock(clock_kind)
    A = torch.rand(batch, task.in_channels, crop, crop) * 2 - 1
    B = torch.rand(batch, task.out_channels, crop, crop) * 2 - 1
    batch_ = {"A": A, "B": B}
    n = m.n_levels
    A_pyr, B_pyr = task.pyramids(batch_)
    Ds = task.level_discriminators(n)
    out: dict[str, float] = {}
    out["pyramids"] = best_time(lambda: task.pyramids(batch_), repeats, now)

    def g_fwd():
        return G(A_pyr, return_all=True)

    def g_fwd_bwd():
        outs = G(A_pyr, return_all=True)
        sum(o.mean() for o in outs).backward()
        G.zero_grad(set_to_none=True)

    out["G forward (all levels)"] = best_time(g_fwd, repeats, now)
    out["G backward (all levels)"] = max(0.0, best_time(g_fwd_bwd, repeats, now) - out["G forward (all levels)"])
    with torch.no_grad():
        outs = [o.detach() for o in G(A_pyr, return_all=True)]
    gan = task.gan
    for i in range(n):
        D, a, b, o = Ds[i], A_pyr[i], B_pyr[i], outs[i]
        lvl = f"level {i} ({a.shape[-1]} px)"

        def d_phase(D=D, a=a, b=b, o=o):
            loss = 0.5 * gan.d_loss(D(torch.cat([a, b], 1)), D(torch.cat([a, o], 1)))
            loss.backward()
            D.zero_grad(set_to_none=True)

        def g_phase(D=D, a=a, o=o):
            oo = o.clone().requires_grad_(True)
            gan.g_loss(D(torch.cat([a, oo], 1))).backward()

        out[f"{lvl}: D, D phase"] = best_time(d_phase, repeats, now)
        D.requires_grad_(False)
        out[f"{lvl}: D, G phase"] = best_time(g_phase, repeats, now)
        D.requires_grad_(True)
        vgg = task.vgg_loss if i == n - 1 else task.vgg_loss_coarse
        if vgg is not None:
            def style(vgg=vgg, b=b, o=o):
                oo = o.clone().requires_grad_(True)
                vgg(oo, b)["style"].backward()

            out[f"{lvl}: style (VGG)"] = best_time(style, repeats, now)

    def l1s():
        oo = [o.clone().requires_grad_(True) for o in outs]
        sum(torch.nn.functional.l1_loss(o, b) for o, b in zip(oo, B_pyr)).backward()

    out["L1 terms (all levels)"] = best_time(l1s, repeats, now)
    for key, opt in task.optimizers.items():
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p) * 1e-3
        out[f"optimiser {key}"] = best_time(opt.step, repeats, now)
        opt.zero_grad(set_to_none=True)
    out["sum of the parts"] = sum(out.values())
    task.set_stage(n)
    # with style_every / coarse_every > 1 steps differ: time whole periods, report per step
    period = math.lcm(m.style_every, m.coarse_every)

    def train_steps():
        for s in range(period):
            task.train_step(batch_, 1200 + s)  # 1200: past every stage, a multiple of the periods

    out["whole train_step"] = best_time(train_steps, repeats, now) / period
    style = (f"style {','.join(task.vgg_loss.style_layers)} (coarse: {','.join(task.vgg_loss_coarse.style_layers)})"
             if task.vgg_loss is not None else "no style loss")
    desc = (f"D {m.discriminator}, {style}, style_every {m.style_every}, coarse_every {m.coarse_every}, "
            f"G {sum(p.numel() for p in G.parameters()) / 1e6:.2f}M params")
    return out, desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quality,bench", help=f"of {', '.join(PRESETS)} (comma-separated)")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=OVERRIDE[,OVERRIDE...] (a column of the same step with these overrides)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    ap.add_argument("--quick", action="store_true", help="tiny widths, 2 repeats (smoke run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = ["quick"] if args.quick else args.preset.split(",")
    repeats = 2 if args.quick else args.repeats
    variants = [("as configured", [])]
    for v in args.variant:
        name, _, rest = v.partition("=")
        overrides = []  # split on commas outside brackets: a=[x,y],b=2
        depth, cur = 0, ""
        for ch in rest:
            depth += ch == "["
            depth -= ch == "]"
            if ch == "," and depth == 0:
                overrides.append(cur)
                cur = ""
            else:
                cur += ch
        overrides += [cur] if cur else []
        variants.append((name, overrides))
    unit = "CPU ms" if args.clock == "cpu" else "ms"
    for preset in presets:
        base, batch, crop = PRESETS[preset]
        cols, descs = [], []
        for name, over in variants:
            times, desc = profile(base + over, batch, crop, repeats, args.clock)
            cols.append((name, times))
            descs.append(f"- {name}: {desc}")
        print(f"\n### {preset}: {crop} px, batch {batch}, {torch.get_num_threads()} threads, {unit} "
              f"(fastest of {repeats})\n")
        print("\n".join(descs) + "\n")
        print("| part | " + " | ".join(f"{name} {unit}" for name, _ in cols) + " | share |")
        print("|---|" + "---|" * len(cols) + "---|")
        rows = list(dict.fromkeys(k for _, c in cols for k in c))
        total = cols[0][1]["whole train_step"]
        for r in rows:
            cells = " | ".join(f"{c[r] * 1e3:.1f}" if r in c else "–" for _, c in cols)
            share = (f"{100 * cols[0][1][r] / total:.0f} %" if r in cols[0][1] and r != "whole train_step"
                     else "")
            print(f"| {r} | {cells} | {share} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
