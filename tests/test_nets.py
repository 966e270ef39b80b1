"""Every registered net at tiny widths on CPU: shapes at odd sizes, gradients, rebuild from config,
plus the behaviours specific to each net (multires staging, pix2pixHD scales, VGG weights)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from imtranslate.errors import WeightsMissingError
from imtranslate.nets import (
    NETS,
    MultiResGenerator,
    PatchDiscriminator,
    Pix2PixHDGenerator,
    VGG19Features,
    build_net,
    downsample_avg,
    instance_mean_features,
)
from imtranslate.ops import pad_to_size
from imtranslate.nets.vgg import imagenet_weights_path

B = 2
SIZES = [(32, 32), (37, 45), (64, 48)]

# Tiny constructor arguments for every registered net.
TINY = {
    "unet": dict(in_channels=3, out_channels=2, num_downs=5, ngf=4),
    "resnet": dict(in_channels=3, out_channels=2, ngf=4, n_downsampling=2, n_blocks=1),
    "pix2pixhd": dict(in_channels=3, out_channels=2, ngf=4, n_downsampling=2, n_blocks=1, n_blocks_local=1),
    "pix2pixhd_encoder": dict(in_channels=3, feat_channels=3, ngf=4, n_downsampling=2),
    "multires": dict(in_channels=3, out_channels=2, n_levels=3, ngf=4, max_channels=8, n_bottleneck_down=1,
                     n_res_blocks=1),
    "patch": dict(in_channels=5, ndf=4, n_layers=2),
    "multiscale": dict(in_channels=5, ndf=4, n_layers=2, num_d=2),
    "style_inverse": dict(in_channels=5, n_up=2, ngf=4, depth=4),
    "stylesr": dict(in_channels=3, out_channels=3, scale=2, ngf=4, n_levels=3, n_blocks=1, separable=True),
    "vid2vid": dict(in_channels=3, out_channels=2, ngf=4, n_downsampling=2, n_blocks=1, flow_ngf=4,
                    flow_downsampling=2, flow_blocks=1),
    "face_enhancer": dict(in_channels=3, out_channels=3, widths=[4, 6, 5], dec_widths=[3, 5, 7], latent_dim=8),
    "face_discriminator": dict(in_channels=3, widths=[4, 6]),
    "face_parser": dict(n_classes=5, width=4),
}


def make_pyramid(x: torch.Tensor, n_levels: int) -> list[torch.Tensor]:
    """Coarsest-first pyramid of ``x``, each level half the next."""
    pyramid = [x]
    for _ in range(n_levels - 1):
        pyramid.insert(0, downsample_avg(pyramid[0]))
    return pyramid


def make_inputs(name: str, net, size, seed: int = 0) -> tuple:
    """The positional arguments of ``net.forward`` for a batch of ``size`` pictures."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    c_in = net.config["in_channels"]
    x = torch.rand(B, c_in, h, w, generator=g) * 2 - 1
    if name == "multires":
        return (make_pyramid(x, net.n_levels),)
    if name == "pix2pixhd_encoder":
        return (x, torch.randint(0, 4, (B, h, w), generator=g))
    if name == "vid2vid":  # current frame, previous frame, previous output: the flow branch is used
        prev_out = torch.rand(B, net.config["out_channels"], h, w, generator=g) * 2 - 1
        return (x, torch.rand(B, c_in, h, w, generator=g) * 2 - 1, prev_out)
    return (x,)


def modes(name: str, net):
    """(label, setup) pairs: every configuration of the net that must be exercised."""
    if name == "pix2pixhd":
        return [("k=0", lambda: net.set_active_enhancers(0)), ("full", lambda: net.set_active_enhancers(1))]
    if name == "multires":
        return [
            (f"k={k},all={ra}", lambda k=k, ra=ra: (net.set_active_levels(k), setattr(net, "_ra", ra)))
            for k in range(1, net.n_levels + 1) for ra in (True, False)
        ]
    return [("default", lambda: None)]


def run(name: str, net, inputs) -> list[torch.Tensor]:
    """Every tensor the net returns, flattened."""
    if name == "multires":
        out = net(*inputs, return_all=getattr(net, "_ra", None))
        return out if isinstance(out, list) else [out]
    out = net(*inputs)
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for scale in out for t in scale]


def expected_shapes(name: str, net, size) -> list[tuple] | None:
    h, w = size
    cfg = net.config
    if name in ("unet", "resnet", "vid2vid"):
        assert net.scale == 1
        return [(B, cfg["out_channels"], h, w)]
    if name == "pix2pixhd_encoder":
        return [(B, cfg["feat_channels"], h, w)]
    if name == "face_enhancer":
        return [(B, cfg["out_channels"], h, w)]
    if name == "stylesr":  # scale x the input, exactly
        return [(B, cfg["out_channels"], cfg["scale"] * h, cfg["scale"] * w)]
    if name == "pix2pixhd":
        s = net.output_scale()
        return [(B, cfg["out_channels"], math.ceil(h / s), math.ceil(w / s))]
    if name == "multires":
        k = net.active_levels
        sizes = [tuple(p.shape[-2:]) for p in make_pyramid(torch.zeros(1, 1, h, w), net.n_levels)][:k]
        sizes = sizes if getattr(net, "_ra", None) else sizes[-1:]
        return [(B, cfg["out_channels"], *s) for s in sizes]
    if name == "style_inverse":  # features -> pictures, the encoder's down factor larger
        assert net.scale == 2 ** cfg["n_up"]
        return [(B, cfg["out_channels"], h * net.scale, w * net.scale)]
    return None  # discriminators: checked by their own tests


def test_every_registered_net_has_a_test_case():
    assert set(NETS) == set(TINY)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(TINY))
def test_net_shapes_finite_and_gradients(name, size):
    torch.manual_seed(0)
    net = build_net(name, **TINY[name]).train()
    inputs = make_inputs(name, net, size)
    with_grad = set()
    for label, setup in modes(name, net):
        setup()
        net.zero_grad(set_to_none=True)
        outputs = run(name, net, inputs)
        shapes = expected_shapes(name, net, size)
        if shapes is not None:
            assert [tuple(o.shape) for o in outputs] == shapes, label
            assert all(o.abs().max() <= 1 for o in outputs), f"{label}: generator output outside [-1, 1]"
        if name == "face_parser":  # per-pixel logits, not a picture: the shape alone
            assert [tuple(o.shape) for o in outputs] == [(B, net.config["n_classes"], *size)]
        assert all(torch.isfinite(o).all() for o in outputs), label
        # Random weights: a plain mean would be blind to anything before an instance norm.
        loss = sum((o * torch.randn_like(o)).mean() for o in outputs)
        loss.backward()
        for pname, p in net.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), f"{label}: {pname}"
                if p.grad.abs().sum() > 0:
                    with_grad.add(pname)
    missing = {n for n, _ in net.named_parameters()} - with_grad
    assert not missing, f"parameters that never received a gradient: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_rebuild_from_config(name):
    torch.manual_seed(1)
    net = build_net(name, **TINY[name]).eval()
    config = json.loads(json.dumps(net.config))  # what a checkpoint header holds
    clone = build_net(net.net_name, **config).eval()
    assert clone.config == net.config
    assert [p.shape for p in clone.parameters()] == [p.shape for p in net.parameters()]
    clone.load_state_dict(net.state_dict())
    inputs = make_inputs(name, net, (37, 45))
    with torch.no_grad():
        for a, b in zip(run(name, net, inputs), run(name, clone, inputs), strict=True):
            assert torch.equal(a, b)


def test_build_net_errors():
    with pytest.raises(ValueError, match="known nets: .*unet"):
        build_net("no-such-net")
    with pytest.raises(ValueError, match="ngff"):
        build_net("unet", ngff=4)


# ------------------------------------------------------------------------------------- multires
def tiny_multires(**kwargs) -> MultiResGenerator:
    torch.manual_seed(0)
    return MultiResGenerator(**{**TINY["multires"], **kwargs}).eval()


def test_multires_fine_level_reaches_coarse_output_only_when_active():
    net = tiny_multires()
    x = torch.rand(1, 3, 32, 40) * 2 - 1
    pyramid = make_pyramid(x, 3)
    changed = list(pyramid)
    changed[2] = -pyramid[2]  # only the finest input differs
    with torch.no_grad():
        for k in (3, 2, 1):
            net.set_active_levels(k)
            a, b = net(pyramid, return_all=True), net(changed, return_all=True)
            assert len(a) == k
            coarsest_changes = not torch.allclose(a[0], b[0])
            assert coarsest_changes == (k == 3), f"k={k}"
        net.set_active_levels(2)
        changed = [pyramid[0], -pyramid[1], pyramid[2]]
        assert not torch.allclose(net(pyramid, return_all=True)[0], net(changed, return_all=True)[0])


def test_multires_return_modes_and_short_pyramid():
    net = tiny_multires()
    pyramid = make_pyramid(torch.rand(2, 3, 37, 45), 3)
    with torch.no_grad():
        full = net(pyramid)  # eval: one tensor, the size of the original input
        assert isinstance(full, torch.Tensor) and full.shape == (2, 2, 37, 45)
        net.set_active_levels(2)
        only_active = net(pyramid[:2], return_all=True)
        assert [o.shape[-2:] for o in only_active] == [p.shape[-2:] for p in pyramid[:2]]
        assert torch.equal(net(pyramid, return_all=True)[1], only_active[1])
        net.train()
        assert isinstance(net(pyramid), list)


def test_multires_sum_fusion_and_single_level():
    for kwargs in (dict(fusion="sum"), dict(n_levels=1), dict(n_bottleneck_down=0)):
        net = tiny_multires(**kwargs)
        pyramid = make_pyramid(torch.rand(1, 3, 33, 31), net.n_levels)
        with torch.no_grad():
            assert net(pyramid).shape == (1, 2, 33, 31), kwargs


def test_multires_rejects_bad_pyramids():
    net = tiny_multires()
    pyramid = make_pyramid(torch.rand(1, 3, 32, 32), 3)
    with pytest.raises(ValueError, match="3 pyramid levels"):
        net(pyramid[:2])
    with pytest.raises(ValueError, match="half the size"):
        net([pyramid[0], pyramid[0], pyramid[2]])
    with pytest.raises(ValueError, match="3 pyramid levels"):
        net(pyramid[2])
    with pytest.raises(ValueError):
        net.set_active_levels(0)


def test_multires_level_parameters_partition_all_parameters():
    net = tiny_multires()
    per_level = [{id(p) for p in net.level_parameters(i)} for i in range(net.n_levels)]
    assert sum(len(s) for s in per_level) == len(set().union(*per_level))  # disjoint
    assert set().union(*per_level) == {id(p) for p in net.parameters()}
    net.set_active_levels(2)
    assert {id(p) for p in net.active_parameters()} == per_level[0] | per_level[1]


def test_multires_inactive_levels_get_no_gradient():
    net = tiny_multires().train()
    net.set_active_levels(2)
    outs = net(make_pyramid(torch.rand(2, 3, 32, 32), 3))
    sum((o * torch.randn_like(o)).mean() for o in outs).backward()
    assert all(p.grad is None for p in net.level_parameters(2))
    assert all(p.grad is not None for i in (0, 1) for p in net.level_parameters(i))


# ------------------------------------------------------------------------------------- pix2pixHD
def test_pix2pixhd_scales_and_coarse_output():
    torch.manual_seed(0)
    net = Pix2PixHDGenerator(**{**TINY["pix2pixhd"], "n_local_enhancers": 2}).eval()
    x = torch.rand(1, 3, 37, 45) * 2 - 1
    with torch.no_grad():
        for k, (h, w) in zip(range(3), [(10, 12), (19, 23), (37, 45)]):
            net.set_active_enhancers(k)
            assert net.output_scale() == 2 ** (2 - k)
            assert net(x).shape == (1, 2, h, w)
    with pytest.raises(ValueError):
        net.set_active_enhancers(3)


def test_instance_mean_features_matches_a_loop():
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 5, 6, requires_grad=True)
    inst = torch.randint(0, 3, (2, 5, 6)) * 1000  # large, sparse ids
    out = instance_mean_features(feat, inst)
    for b in range(2):  # same id in two images = two instances
        for i in inst[b].unique():
            mask = inst[b] == i
            expected = feat[b][:, mask].mean(dim=1)
            assert torch.allclose(out[b][:, mask], expected[:, None].expand(-1, int(mask.sum())), atol=1e-6)
    out.sum().backward()
    assert feat.grad is not None


# ------------------------------------------------------------------------------------- discriminators
def test_patch_discriminator_is_70x70():
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=1, ndf=4, n_layers=3, norm="none")
    x = torch.randn(1, 1, 160, 160, requires_grad=True)
    feats = d(x)
    assert len(feats) == 1 and len(feats[0]) == 5 and feats[0][-1].shape[1] == 1
    logits = feats[0][-1]
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    rows, cols = (x.grad[0, 0] != 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_discriminators_reject_too_small_inputs():
    d = build_net("multiscale", **TINY["multiscale"])
    assert len(d(torch.randn(1, 5, d.min_size, d.min_size))) == 2
    with pytest.raises(ValueError, match="at least"):
        d(torch.randn(1, 5, d.min_size - 1, 64))


def test_pad_to_size_falls_back_to_replicate():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    assert pad_to_size(x, (8, 8)).shape == (1, 1, 8, 8)  # too big to reflect
    assert torch.equal(pad_to_size(x, (3, 3))[0, 0, 2, :2], x[0, 0, 0])  # reflect


# ------------------------------------------------------------------------------------- VGG
LAYERS = ("relu1_1", "relu2_1")


def test_vgg_random_weights_are_frozen():
    torch.manual_seed(0)
    vgg = VGG19Features(layers=("conv1_1",) + LAYERS, weights="random")
    assert len(vgg.features) == 7  # truncated after relu2_1
    feats = vgg(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert {k: v.shape[1:] for k, v in feats.items()} == {
        "conv1_1": (64, 32, 32), "relu1_1": (64, 32, 32), "relu2_1": (128, 16, 16)}
    assert (feats["conv1_1"] < 0).any()  # a ReLU after it must not have overwritten it
    assert not any(p.requires_grad for p in vgg.parameters())
    assert not vgg.train().training
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        VGG19Features(layers=("relu9_9",), weights="random")


def test_vgg_imagenet_missing_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert imagenet_weights_path() == expected
    with pytest.raises(WeightsMissingError) as err:
        VGG19Features(layers=LAYERS)
    assert str(expected) in str(err.value) and "--vgg-weights" in str(err.value)
    assert "random" in str(err.value)


def test_vgg_imagenet_loads_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    ref = VGG19Features(layers=("relu1_1",), weights="random")
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in ref.features.state_dict().items()}, path)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(VGG19Features(layers=("relu1_1",))(x)["relu1_1"], ref(x)["relu1_1"])


@pytest.mark.parametrize("suffix,prefix", [(".safetensors", "features."), (".pth", "features."), (".pt", "")])
def test_vgg_loads_a_weights_file(tmp_path, suffix, prefix):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = VGG19Features(layers=LAYERS, weights="random")
    state = {f"{prefix}{k}": v.contiguous() for k, v in ref.features.state_dict().items()}
    path = tmp_path / f"vgg{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({**state, "classifier.0.bias": torch.zeros(3)} if prefix else state, path)
    torch.manual_seed(1)  # a different random init, overwritten by the file
    loaded = VGG19Features(layers=LAYERS, weights=path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for name, feat in ref(x).items():
        assert torch.equal(loaded(x)[name], feat)


def test_vgg_bad_weights_files(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        VGG19Features(layers=LAYERS, weights=tmp_path / "nope.safetensors")
    path = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, path)
    with pytest.raises(WeightsMissingError, match="missing"):
        VGG19Features(layers=LAYERS, weights=path)
