"""Losses: zero where they should be, positive otherwise, gradients reach the prediction,
GAN objectives point the right way, Gram matrices by hand."""
from __future__ import annotations

import math

import pytest
import torch

from imtranslate.losses import (
    GANLoss,
    VGGLoss,
    feature_matching_loss,
    gram_matrix,
    l1_loss,
    perceptual_loss,
    pyramid_l1,
    style_loss,
    tv_loss,
)
from imtranslate.nets import VGG19Features


def pictures(seed: int, shape=(2, 3, 32, 32)) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG19Features(layers=("relu1_1", "relu2_1", "relu3_1"), weights="random")


# ------------------------------------------------------------------------------------- pixel, tv
def test_l1_and_pyramid_l1():
    target = pictures(0)
    assert l1_loss(target, target.clone()) == 0
    pred = pictures(1).requires_grad_()
    loss = l1_loss(pred, target)
    assert loss > 0
    loss.backward()
    assert pred.grad.abs().sum() > 0

    preds, targets = [pictures(2, (1, 3, 8, 8)), pictures(3)], [pictures(4, (1, 3, 8, 8)), pictures(5)]
    expected = (l1_loss(preds[0], targets[0]) + l1_loss(preds[1], targets[1])) / 2
    assert torch.allclose(pyramid_l1(preds, targets), expected)
    assert pyramid_l1(targets, targets) == 0
    with pytest.raises(ValueError):
        pyramid_l1(preds, targets[:1])


def test_tv_loss():
    assert tv_loss(torch.full((1, 3, 8, 8), 0.3)) == 0
    stripes = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)  # horizontal steps of 1
    assert tv_loss(stripes) == 1
    x = pictures(0).requires_grad_()
    tv_loss(x).backward()
    assert x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- GAN
def d_outputs(logit: float, n_scales: int = 2) -> list[list[torch.Tensor]]:
    """Fake discriminator outputs: one feature map and a constant logit map per scale."""
    return [[torch.ones(1, 2, 4, 4), torch.full((1, 1, 3, 3), logit)] for _ in range(n_scales)]


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "hinge"])
def test_gan_loss_directions(mode):
    gan = GANLoss(mode)
    good_d = gan.d_loss(d_outputs(2.0), d_outputs(-2.0))  # real scored high, fake low
    bad_d = gan.d_loss(d_outputs(-2.0), d_outputs(2.0))
    assert good_d < bad_d
    assert gan.g_loss(d_outputs(2.0)) < gan.g_loss(d_outputs(-2.0))  # fooling D is better for G
    # The generator's gradient pushes fake logits up.
    fake = torch.full((1, 1, 3, 3), 0.5, requires_grad=True)
    gan.g_loss([[fake]]).backward()
    assert (fake.grad < 0).all()
    # And the discriminator's pushes them down and real ones up.
    real, fake = (torch.full((1, 1, 3, 3), 0.5, requires_grad=True) for _ in range(2))
    gan.d_loss([[real]], [[fake]]).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()


def test_gan_loss_values():
    assert GANLoss("lsgan").d_loss(d_outputs(1.0), d_outputs(0.0)) == 0
    assert GANLoss("hinge").d_loss(d_outputs(1.5), d_outputs(-1.0)) == 0
    assert torch.isclose(GANLoss("vanilla").d_loss(d_outputs(0.0), d_outputs(0.0)), torch.tensor(2 * math.log(2)))
    assert torch.isclose(GANLoss("hinge").g_loss(d_outputs(0.5)), torch.tensor(-0.5))
    # Averaged over scales.
    two = [[torch.full((1, 1, 2, 2), 1.0)], [torch.full((1, 1, 2, 2), 0.0)]]
    assert torch.isclose(GANLoss("lsgan").g_loss(two), torch.tensor(0.5))
    with pytest.raises(ValueError, match="unknown GAN loss"):
        GANLoss("wgan")


# ------------------------------------------------------------------------------------- feature matching
def test_feature_matching():
    torch.manual_seed(0)
    real = [[torch.randn(1, 4, 8, 8), torch.randn(1, 1, 6, 6)] for _ in range(2)]
    same = [[t.clone() for t in scale] for scale in real]
    assert feature_matching_loss(real, same) == 0
    real = [[t.requires_grad_() for t in scale] for scale in real]
    fake = [[torch.randn(1, 4, 8, 8, requires_grad=True), torch.randn(1, 1, 6, 6, requires_grad=True)]
            for _ in range(2)]
    loss = feature_matching_loss(real, fake)
    assert loss > 0
    loss.backward()
    assert fake[0][0].grad.abs().sum() > 0
    assert fake[0][1].grad is None  # logits are not matched
    assert real[0][0].grad is None  # real features are detached


def test_feature_matching_on_a_real_discriminator():
    from imtranslate.nets import build_net

    torch.manual_seed(0)
    d = build_net("multiscale", in_channels=3, ndf=4, n_layers=2, num_d=2)
    x = pictures(0)
    assert feature_matching_loss(d(x), d(x)) == 0
    assert feature_matching_loss(d(x), d(pictures(1))) > 0


# ------------------------------------------------------------------------------------- perceptual, style
def test_gram_matrix_by_hand():
    feat = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 2, 1, 2)  # channels [1, 2] and [3, 4]
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(feat), expected.view(1, 2, 2))


def test_vgg_loss_zero_positive_and_gradients(vgg):
    loss_fn = VGGLoss(vgg, perceptual_layers=("relu1_1", "relu2_1", "relu3_1"), perceptual_weights=(0.25, 0.5, 1.0),
                      style_layers=("relu1_1", "relu3_1"))
    target = pictures(0)
    same = loss_fn(target.clone(), target)
    assert same["perceptual"] == 0 and same["style"] == 0
    pred = pictures(1).requires_grad_()
    losses = loss_fn(pred, target)
    assert losses["perceptual"] > 0 and losses["style"] > 0
    (losses["perceptual"] + losses["style"]).backward()
    assert pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_vgg_loss_runs_the_extractor_once_per_image(vgg):
    calls = []
    handle = vgg.register_forward_hook(lambda m, inp, out: calls.append(torch.is_grad_enabled()))
    try:
        VGGLoss(vgg, perceptual_layers=("relu1_1",), perceptual_weights=(1.0,), style_layers=("relu1_1", "relu2_1"))(
            pictures(1).requires_grad_(), pictures(0))
    finally:
        handle.remove()
    assert calls == [True, False]  # the prediction with a graph, the target without


def test_perceptual_and_style_functions_match_the_module(vgg):
    pred, target = pictures(1), pictures(0)
    layers, weights = ("relu1_1", "relu2_1"), (0.5, 1.0)
    both = VGGLoss(vgg, perceptual_layers=layers, perceptual_weights=weights, style_layers=layers)(pred, target)
    assert torch.allclose(perceptual_loss(pred, target, vgg, layers=layers, weights=weights), both["perceptual"])
    assert torch.allclose(style_loss(pred, target, vgg, layers=layers), both["style"])
    assert style_loss(target, target.clone(), vgg, layers=layers) == 0


def test_vgg_loss_checks_layers(vgg):
    with pytest.raises(ValueError, match="relu5_1"):
        VGGLoss(vgg)  # default layers go deeper than this extractor
    with pytest.raises(ValueError, match="same length"):
        VGGLoss(vgg, perceptual_layers=("relu1_1",), perceptual_weights=(1.0, 2.0), style_layers=())


def test_relative_style_loss_is_scale_free():
    """The relative Gram error does not change when every feature is scaled (e.g. other VGG weights)."""
    import torch

    from imtranslate.losses.perceptual import _style

    torch.manual_seed(0)
    fp = {"a": torch.rand(2, 4, 8, 8)}
    ft = {"a": torch.rand(2, 4, 8, 8)}
    base = _style(fp, ft, ["a"], fp["a"], "relative")
    scaled = _style({"a": fp["a"] * 50}, {"a": ft["a"] * 50}, ["a"], fp["a"], "relative")
    assert base > 0 and torch.allclose(base, scaled, rtol=1e-4)
    assert _style(ft, ft, ["a"], fp["a"], "relative") == 0
