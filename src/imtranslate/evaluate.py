"""``imtranslate eval``: a checkpoint's metrics on a folder of held-out pairs.

L1 / PSNR / SSIM always; FID and LPIPS when their pretrained weights are on this machine
(otherwise the result says which file is missing). Images are translated at their own size
through the same predictor ``imtranslate translate`` uses.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .data import build_dataset, check_dataset
from .errors import WeightsMissingError
from .infer.predictor import Predictor
from .metrics import MetricAccumulator


def eval_data_config(data_cfg, root):
    """The checkpoint's data config pointed at ``root``: whole images, no random transforms."""
    d = copy.deepcopy(data_cfg)
    if d.dataset == "synthetic":
        # a synthetic split folder holds label/ instance/ contour/ photo/ like any label-map set
        label = d.synthetic.input == "label"
        d.dataset = "labelmap" if label else "folders"
        d.input_kind = "label" if label else "grey"
        d.a_dir, d.b_dir = ("label" if label else "contour"), "photo"
        d.inst_dir = "instance" if label else ""
        d.n_classes = d.synthetic.n_classes
    d.root = str(root)
    d.val_root = str(root)
    d.crop_size = 0
    d.flip = False
    d.max_items = 0
    return d


def evaluate(checkpoint, data_root, *, device="auto", use_ema=True, batch_size=1, fid_weights=None,
             lpips_weights=None, progress=True, log=print) -> dict:
    """Returns ``{"count": n, "metrics": {name: value}, "skipped": {name: reason}}``."""
    pred = Predictor.from_checkpoint(checkpoint, device=device, use_ema=use_ema)
    dcfg = eval_data_config(pred.cfg.data, Path(data_root))
    check_dataset(dcfg)
    ds = build_dataset(dcfg, "val")
    # whole images differ in size, so batch only when asked (same-size sets)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    acc = MetricAccumulator()
    reals, fakes = [], []
    want_fid = want_lpips = True
    skipped = {}
    from . import metrics

    status = metrics.optional_metrics_status()
    fid_path = fid_weights or (metrics.default_weights_path("fid") if status["fid"][0] else None)
    lpips_path = lpips_weights or (metrics.default_weights_path("lpips") if status["lpips"][0] else None)
    if fid_path is None:
        want_fid = False
        skipped["fid"] = status["fid"][1]
    if lpips_path is None:
        want_lpips = False
        skipped["lpips"] = status["lpips"][1]
    lpips_sum, n = 0.0, 0
    from tqdm import tqdm

    for batch in tqdm(loader, disable=not progress, desc="eval", unit="batch"):
        out = pred.translate_tensor(batch["A"])
        target = batch["B"].to(out.device)
        acc.update(out, target)
        if want_fid:
            reals.append(target.cpu())
            fakes.append(out.cpu())
        if want_lpips:
            try:
                lpips_sum += float(metrics.lpips(out, target, weights=lpips_path).sum())
            except WeightsMissingError as e:
                want_lpips, skipped["lpips"] = False, str(e)
        n += out.shape[0]
    res = dict(acc.compute())
    if want_lpips and n:
        res["lpips"] = lpips_sum / n
    if want_fid:
        try:
            res["fid"] = float(metrics.fid(reals, fakes, weights=fid_path))
        except WeightsMissingError as e:
            skipped["fid"] = str(e)
    return {"count": n, "metrics": res, "skipped": skipped}
