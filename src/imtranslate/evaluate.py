"""``imtranslate eval``: a checkpoint's metrics on a folder of held-out pairs.

L1 / PSNR / SSIM always; FID and LPIPS when their pretrained weights are on this machine, found
by :mod:`imtranslate.weights` (otherwise the result says which file is missing and where to put
it). Images are translated at their own size through the same predictor ``imtranslate translate``
uses.
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
    if d.dataset == "synthetic_faces":  # any folder of face crops, each its own target
        d.dataset = "photos"
    d.root = str(root)
    d.val_root = str(root)
    d.crop_size = 0
    d.flip = False
    d.max_items = 0
    return d


def evaluate(checkpoint, data_root, *, device="auto", use_ema=True, batch_size=1, fid_weights=None,
             lpips_weights=None, progress=True, log=print, precision="fp32") -> dict:
    """Returns ``{"count": n, "metrics": {name: value}, "skipped": {name: reason}}``.
    ``precision="bf16"``: the generator runs under bf16 autocast (what it costs in quality)."""
    pred = Predictor.from_checkpoint(checkpoint, device=device, use_ema=use_ema, precision=precision)
    own = getattr(pred.task_cls, "evaluate", None)  # a task whose held-out figures are not images (faceparse: IoU)
    if own is not None:
        return own(pred, Path(data_root), log=log)
    dcfg = eval_data_config(pred.cfg.data, Path(data_root))
    check_dataset(dcfg)
    ds = build_dataset(dcfg, "val")
    # whole images differ in size, so batch only when asked (same-size sets)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    acc = MetricAccumulator()
    skipped = {}
    from . import metrics

    def weights_or_skip(metric, explicit):
        """The weights file of ``metric`` (explicit path, $IMTRANSLATE_WEIGHTS, torch hub cache), or None
        with the reason recorded: FID and LPIPS are optional, so a missing file skips them."""
        try:
            return metrics.find_weights(metric, explicit)
        except WeightsMissingError as e:
            skipped[metric] = str(e)
            return None

    fid_path, lpips_path = weights_or_skip("fid", fid_weights), weights_or_skip("lpips", lpips_weights)
    fid_meter = None
    lpips_sum, n = 0.0, 0
    recog, id_sum = None, 0.0
    id_spec = getattr(pred.cfg.model, "identity", None)  # face tasks: identity similarity with an identity net
    if id_spec is not None:
        if id_spec == "off":
            skipped["identity"] = "model.identity=off (give model.identity=PATH or place the arcface weights)"
        else:
            from .nets.face_recog import load_identity_net

            try:
                recog = load_identity_net(id_spec, pred.device)
            except WeightsMissingError as e:
                skipped["identity"] = str(e)
    from tqdm import tqdm

    for batch in tqdm(loader, disable=not progress, desc="eval", unit="batch"):
        A, target = pred.task_cls.eval_inputs(batch, pred.cfg)
        out = pred.translate_tensor(A)
        target = target.to(out.device)
        acc.update(out, target)
        if fid_path is not None:
            try:
                if fid_meter is None:
                    fid_meter = metrics.fid_metric(fid_path, out.device)
                fid_meter.update(target, real=True)  # streamed: only the feature statistics are kept
                fid_meter.update(out, real=False)
            except WeightsMissingError as e:
                fid_path, fid_meter, skipped["fid"] = None, None, str(e)
        if lpips_path is not None:
            try:
                lpips_sum += float(metrics.lpips(out, target, weights=lpips_path).sum())
            except WeightsMissingError as e:
                lpips_path, skipped["lpips"] = None, str(e)
        if recog is not None:
            from .losses.identity import identity_similarity

            with torch.no_grad():
                id_sum += float(identity_similarity(recog(out), recog(target)).sum())
        n += out.shape[0]
    res = dict(acc.compute())
    if recog is not None and n:
        res["identity"] = id_sum / n
    if lpips_path is not None and n:
        res["lpips"] = lpips_sum / n
    if fid_meter is not None:
        if n < 2:
            skipped["fid"] = f"FID needs at least 2 image pairs, {data_root} has {n}"
        else:
            res["fid"] = metrics.fid_value(fid_meter)
    return {"count": n, "metrics": res, "skipped": skipped}
