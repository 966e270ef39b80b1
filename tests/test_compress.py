"""Compression: distillation, structural pruning in rounds, separable conversion, int8."""
import copy

import pytest
import torch

from imtranslate.losses.distill import DistillLoss, FeatureTaps, feature_distill, feature_layers, layer_channels
from imtranslate.nets import build_net


# ---- distillation --------------------------------------------------------------------------------
def test_distill_loss_is_zero_for_identical_nets_and_positive_otherwise():
    torch.manual_seed(0)
    net = build_net("unet", in_channels=3, out_channels=3, num_downs=3, ngf=4).eval()
    other = build_net("unet", in_channels=3, out_channels=3, num_downs=3, ngf=4).eval()
    names = feature_layers(net, 3)
    assert len(names) == 3
    x = torch.randn(2, 3, 32, 32)
    loss = DistillLoss(layer_channels(net, names), layer_channels(net, names))
    with FeatureTaps(net, names) as t1, torch.no_grad():
        y = net(x)
        f = t1.take()
    with FeatureTaps(net, names) as t2, torch.no_grad():
        y2 = net(x)
        f2 = t2.take()
    assert float(loss(y, y2, f, f2)) == 0.0
    with FeatureTaps(other, names) as t3, torch.no_grad():
        yo = other(x)
        fo = t3.take()
    terms = loss.terms(yo, y, fo, f)
    assert float(terms["out"]) > 0 and float(terms["feat"]) > 0


def test_distill_adapters_map_narrower_student_features_and_learn():
    s, t = torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 5, 16, 16)
    loss = DistillLoss([3], [5])
    value = loss(torch.zeros(1), torch.zeros(1), [s], [t])
    value.backward()
    assert loss.adapters[0].weight.grad is not None and s.grad is not None
    with pytest.raises(ValueError, match="adapter"):
        feature_distill([s], [t])


# ---- shared pieces -------------------------------------------------------------------------------
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import tiny_config, tiny_overrides  # noqa: E402
from imtranslate.cli import main  # noqa: E402
from imtranslate.compress import count_params, make_separable, prunable_layers, prune_channels  # noqa: E402
from imtranslate.prune.channels import mark_compressed  # noqa: E402
from imtranslate.prune.rounds import prune_in_rounds  # noqa: E402
from imtranslate.ops import crop_to, pad_to_multiple  # noqa: E402
from imtranslate.tasks import get_task  # noqa: E402
from imtranslate.train.stepping import build_task  # noqa: E402

NETS = {  # task, extra overrides: every generator shape in the project
    "unet": ("pix2pix", []),
    "resnet": ("pix2pix", ["model.generator=resnet", "model.n_blocks=2"]),
    "pix2pixhd": ("pix2pixhd", ["model.features=false", "data.use_instance=false"]),
    "multires": ("multires", []),
    "stylesr": ("stylesr", []),
    "face_enhancer": ("faceenhance", []),
}


def _generator(tmp_path, net):
    task_name, extra = NETS[net]
    cfg = tiny_config(task_name, tmp_path, extra=extra)
    task = build_task(cfg, "cpu")
    G = task.generator.eval()
    if hasattr(G, "set_active_levels"):  # a finished run: every level active
        G.set_active_levels(G.n_levels)
    item = task.build_dataset(cfg, "val")[0]
    A, _ = task.eval_inputs(torch.utils.data.default_collate([item]), cfg)
    cls = get_task(cfg.task)

    def fwd(G, A):
        return cls.translate(G, A, cfg, task.extra_tensors())

    return task, cfg, G, A, fwd


@pytest.mark.parametrize("net", list(NETS))
def test_pruning_keeps_every_net_runnable_at_odd_sizes_and_rebuilds_from_its_config(tmp_path, net):
    torch.manual_seed(0)
    task, cfg, G, A, fwd = _generator(tmp_path, net)
    layers = prunable_layers(G, A, fwd)
    assert layers, "no prunable layer found"
    params = count_params(G)
    widths = prune_channels(G, A, fwd, {l.name: max(1, l.channels // 4) for l in layers})
    assert all(widths[l.name] == l.channels - max(1, l.channels // 4) for l in layers)
    mark_compressed(G)
    assert count_params(G) < params and G.config["surgery"]["shapes"]
    cls, mult = get_task(cfg.task), get_task(cfg.task).size_multiple(G, cfg)
    scale = cls.size_scale(G, cfg)
    for h, w in [(37, 45), (29, 64)]:  # odd sizes, padded to the multiple and cropped back as predictors do
        x = torch.randn(1, A.shape[1], h, w).clamp(-1, 1)
        out = crop_to(fwd(G, pad_to_multiple(x, mult)), (h, w), scale)
        assert out.shape == (1, 3, round(h * scale), round(w * scale)) and torch.isfinite(out).all()
    # the same net from its config alone (what a checkpoint stores), same outputs
    G2 = build_net(G.net_name, **G.config).eval()
    G2.load_state_dict(G.state_dict())
    if hasattr(G, "run_state"):
        G2.load_run_state(G.run_state())
    with torch.no_grad():
        assert torch.equal(fwd(G2, A), fwd(G, A))


def test_a_layer_that_fails_the_quality_check_gets_a_smaller_ratio_next_round(tmp_path):
    """A U-Net without norms where the 2 channels a 1/4 cut takes are dead (zero filters and
    bias) in every layer but one: those cuts cost nothing, the other layer's cut breaks the index."""
    torch.manual_seed(0)
    cfg = tiny_config("pix2pix", tmp_path, extra=["model.norm=none", "model.dropout=false"])
    task = build_task(cfg, "cpu")
    G = task.generator.eval()
    item = task.build_dataset(cfg, "val")[0]
    A = torch.utils.data.default_collate([item])["A"]

    def fwd(G, A):
        return G(A)

    layers = prunable_layers(G, A, fwd)
    modules = dict(G.named_modules())
    sensitive = "downs.2.1"
    assert sensitive in {l.name for l in layers}
    with torch.no_grad():
        for l in layers:
            conv = modules[l.name]
            k = int(0.25 * l.channels)
            if l.name == sensitive:
                conv.weight.mul_(20)  # every channel of it matters
            else:  # output channels: dim 0 of a conv's weight, dim 1 of a transposed conv's
                (conv.weight[:, :k] if isinstance(conv, torch.nn.ConvTranspose2d) else conv.weight[:k]).zero_()
                conv.bias[:k].zero_()
    teacher = copy.deepcopy(G)
    res = prune_in_rounds(task, teacher, [A], [task.to_device(item | {"A": A[0], "B": A[0, :3]})], fwd,
                          ratio=0.25, rounds=1, round_steps=0, quality="psnr:80", importance="activation",
                          latency_repeats=1, log=lambda m: None)
    row = res.table[1]
    assert sensitive in row["held_back"] and not row["layers"][sensitive]["passed"]
    assert res.ratios[sensitive] == pytest.approx(0.125)  # halved for the next round
    assert dict(res.net.named_modules())[sensitive].out_channels == modules[sensitive].out_channels  # restored
    others = [l for l in layers if l.name != sensitive and int(0.25 * l.channels) > 0]
    assert others and all(row["layers"][l.name]["passed"] and res.ratios[l.name] == 0.25 for l in others)
    assert all(dict(res.net.named_modules())[l.name].out_channels == l.channels - int(0.25 * l.channels)
               for l in others)
    assert row["quality"] >= 80 and row["macs"] < res.table[0]["macs"]


def test_separable_conversion_parameter_count_and_rebuild():
    torch.manual_seed(0)
    G = build_net("unet", in_channels=3, out_channels=3, num_downs=4, ngf=8, norm="none").eval()
    modules = dict(G.named_modules())
    before = count_params(G)
    names = make_separable(G)
    assert names
    saved = 0
    for n in names:
        c = modules[n]
        k, ci, co = c.kernel_size[0], c.in_channels, c.out_channels
        saved += ci * co * k * k - (ci * k * k + ci * co)  # the bias stays (on the pointwise conv)
    assert count_params(G) == before - saved
    G2 = build_net(G.net_name, **G.config).eval()
    G2.load_state_dict(G.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(G2(x), G(x))


# ---- a trained checkpoint through the CLI --------------------------------------------------------
@pytest.fixture(scope="module")
def pix2pix_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compress_ckpt")
    assert main(["train", *tiny_overrides("pix2pix", tmp, steps=2, **{"data.synthetic.input": "contour"})]) == 0
    return next((tmp / "runs").iterdir()) / "checkpoints" / "last.safetensors"


def test_cli_compress_then_translate_eval_export_tile_and_video(tmp_path, pix2pix_ckpt, capsys):
    small = tmp_path / "small.safetensors"
    assert main(["compress", str(pix2pix_ckpt), "-o", str(small), "--rounds", "1", "--round-steps", "1",
                 "--quality", "psnr:10", "--separable", "--ratio-by", "pixels", "--json", str(tmp_path / "t.json")]) == 0
    text = capsys.readouterr().out
    assert "| round | MACs (M)" in text and "| separable |" in text and f"wrote {small}" in text
    from imtranslate.checkpoint_file import load_generator, read_meta

    G = load_generator(small).net
    assert G.config["surgery"]["shapes"] and G.config["surgery"]["separable"]
    table = read_meta(small)["compress"]["table"]
    assert table[1]["params"] < table[0]["params"]
    # --ratio-by pixels: the outermost (full-resolution) layer is cut harder than any other
    cuts = {n: r["cut"] / r["width"] for n, r in table[1]["layers"].items()}
    assert cuts["downs.0.0"] == max(cuts.values()) > 0.25 and min(cuts.values()) < 0.25
    img = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 45, 3), dtype=np.uint8)).save(img)
    assert main(["translate", str(small), str(img), "-o", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "out" / "in.png").size == (45, 37)
    assert main(["translate", str(small), str(img), "-o", str(tmp_path / "tiled"), "--quiet", "--device", "cpu",
                 "--tile", "32", "--tile-overlap", "8"]) == 0
    assert Image.open(tmp_path / "tiled" / "in.png").size == (45, 37)
    capsys.readouterr()
    assert main(["eval", str(small), str(pix2pix_ckpt.parents[3] / "synthetic" / "val"), "--quiet"]) == 0
    assert "psnr" in capsys.readouterr().out
    assert main(["export", str(small), "--onnx", str(tmp_path / "s.onnx")]) == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 40, 3), 40 * i, np.uint8)).save(frames / f"{i:03d}.png")
    assert main(["video", str(small), str(frames), "-o", str(tmp_path / "vid"), "--quiet"]) == 0
    assert len(list((tmp_path / "vid").glob("*.png"))) == 3


def test_int8_model_runs_within_its_tolerance(tmp_path, pix2pix_ckpt):
    import onnxruntime as ort

    from imtranslate import compress

    out, table = compress(pix2pix_ckpt, tmp_path / "q.safetensors", rounds=0, int8=True, latency_repeats=1,
                          log=lambda m: None)
    row = table[-1]
    assert row["round"] == "int8" and row["psnr_vs_fp32"] >= row["tolerance_psnr"] == 30.0
    s = ort.InferenceSession(str(tmp_path / "q.int8.onnx"), providers=["CPUExecutionProvider"])
    c = s.get_inputs()[0].shape[1]
    y = s.run(None, {"A": np.random.default_rng(0).uniform(-1, 1, (1, c, 37, 45)).astype(np.float32)})[0]
    assert y.shape == (1, 3, 37, 45) and np.isfinite(y).all()
    assert any("QuantizeLinear" == n.op_type for n in __import__("onnx").load(str(tmp_path / "q.int8.onnx")).graph.node)
    # the measured defaults (compress/quantize.py): QOperator U8S8, only Conv quantised, percentile calibration
    assert row["settings"] == {"format": "qoperator", "activations": "uint8", "weights": "int8", "per_channel": True,
                               "op_types": ["Conv"], "calibration": "percentile"}
    ops = [n.op_type for n in __import__("onnx").load(str(tmp_path / "q.int8.onnx")).graph.node]
    assert "QLinearConv" in ops and "Conv" not in ops and "ConvTranspose" in ops  # ConvTranspose: no int8 kernel


def test_int8_settings_change_the_graph_and_bad_ones_are_a_clear_error(tmp_path, pix2pix_ckpt):
    """QDQ keeps float ops between QuantizeLinear / DequantizeLinear pairs; op_types=None also
    quantises the ConvTranspose layers; an unknown setting is an ExportError naming the file."""
    import onnx

    from imtranslate.compress.quantize import quantize_onnx
    from imtranslate.infer.export import ExportError, export_onnx

    fp32 = tmp_path / "m.onnx"
    export_onnx(pix2pix_ckpt, fp32, log=lambda m: None)
    c = onnx.load(str(fp32)).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = [np.random.default_rng(i).uniform(-1, 1, (1, c, 32, 32)).astype(np.float32) for i in range(3)]
    res = quantize_onnx(fp32, tmp_path / "qdq.onnx", x, fmt="qdq", activations="int8", op_types=None,
                        calibration_method="minmax", min_psnr=0, log=lambda m: None)
    g = onnx.load(str(res["path"])).graph
    weights_dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    convt = [n for n in g.node if n.op_type == "ConvTranspose"]
    assert convt and all(n.input[1] in weights_dq for n in convt)  # ConvTranspose weights quantised too
    assert "QLinearConv" not in {n.op_type for n in g.node}
    assert res["settings"]["format"] == "qdq" and res["settings"]["op_types"] == "all"
    with pytest.raises(ExportError, match="bad.onnx.*calibration_method='median'"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", x, calibration_method="median")


def test_bad_quality_index_is_a_clear_error(pix2pix_ckpt, tmp_path, capsys):
    assert main(["compress", str(pix2pix_ckpt), "-o", str(tmp_path / "x.safetensors"), "--quality", "fid:3"]) == 2
    assert "quality index 'fid:3'" in capsys.readouterr().err


def test_distillation_through_the_config_trains_towards_the_teacher(tmp_path, pix2pix_ckpt):
    """train.distill_from: any task distils from a teacher checkpoint; with the task's own losses
    off (lr_d 0, lambda_l1 0, lambda_gan 0) only distillation moves G, towards the teacher."""
    from imtranslate.checkpoint_file import load_generator
    from imtranslate.tasks import load_config
    from imtranslate.train.loop import train

    over = tiny_overrides("pix2pix", tmp_path, steps=6, **{"data.synthetic.input": "contour"}) + [
        f"train.distill_from={pix2pix_ckpt}", "train.lambda_distill=1", "train.lambda_distill_feat=1",
        "model.lambda_l1=0", "model.lambda_gan=0", "train.lr_g=0.002", "train.ema_decay=0", "train.lr_policy=constant"]
    run = train(load_config(None, over), log=lambda m: None)
    rows = [__import__("json").loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["distill_out"] for r in rows if r.get("kind") == "train" and "distill_out" in r]
    assert len(losses) == 6 and "distill_feat" in next(r for r in rows if "distill_out" in r)
    assert losses[-1] < losses[0]
    with pytest.raises(Exception, match="distill_from"):
        train(load_config(None, tiny_overrides("multires", tmp_path, steps=1) + [f"train.distill_from={pix2pix_ckpt}"]),
              log=lambda m: None)


def test_ratio_by_macs_or_pixels_cuts_the_costly_layers_harder(tmp_path):
    """--ratio-by: a layer's starting ratio is --ratio times its cost over the mean cost (MACs or
    conv output pixels that cutting one of its channels saves, measured on a copy), capped at 0.75;
    on a U-Net the outer, high-resolution layers cost the most pixels, and an unknown mode is a
    clear error."""
    from imtranslate.errors import ConfigError
    from imtranslate.prune.channels import count_macs
    from imtranslate.prune.rounds import MAX_RATIO, layer_costs, starting_ratios

    task, cfg, G, A, fwd = _generator(tmp_path, "unet")
    layers = prunable_layers(G, A, fwd)
    assert starting_ratios(G, A, fwd, layers, 0.3, "uniform") == {l.name: 0.3 for l in layers}
    macs = layer_costs(G, A, fwd, layers, "macs")
    l0 = layers[0]  # checked by hand: a one-channel cut on a copy saves cost / width MACs
    trial = copy.deepcopy(G)
    prune_channels(trial, A, fwd, {l0.name: 1})
    assert macs[l0.name] == (count_macs(G, A, fwd) - count_macs(trial, A, fwd)) * l0.channels > 0
    for by in ("macs", "pixels"):
        cost, r = layer_costs(G, A, fwd, layers, by), starting_ratios(G, A, fwd, layers, 0.3, by)
        mean = sum(cost.values()) / len(cost)
        assert all(r[n] == pytest.approx(min(MAX_RATIO, 0.3 * cost[n] / mean)) for n in cost)
        assert len(set(r.values())) > 1 and max(r.values()) <= MAX_RATIO
    pixels = layer_costs(G, A, fwd, layers, "pixels")
    outer, inner = "downs.0.0", max(layers, key=lambda l: int(l.name.split(".")[1]) if l.name.startswith("downs") else -1)
    assert pixels[outer] > pixels[inner.name]  # high resolution first
    with pytest.raises(ConfigError, match="--ratio-by 'flops'"):
        starting_ratios(G, A, fwd, layers, 0.3, "flops")
