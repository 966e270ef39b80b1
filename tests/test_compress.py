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
