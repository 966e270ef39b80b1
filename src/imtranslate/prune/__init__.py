"""Making a trained net smaller in place: structural channel pruning (:mod:`.channels`), pruning in
quality-gated rounds (:mod:`.rounds`, SPEC S5) and depthwise-separable conversion
(:mod:`.separable`, SPEC S4).

This package sits below :mod:`imtranslate.train` so that a task can prune between its own training
rounds (``model.prune_rounds``); the ``imtranslate compress`` driver (:mod:`imtranslate.compress`)
builds on it.
"""
from .channels import count_macs, count_params, latency_ms, mark_compressed, prunable_layers, prune_channels
from .rounds import Quality, RoundsResult, measure_quality, parse_quality, prune_in_rounds
from .separable import make_separable

__all__ = ["count_macs", "count_params", "latency_ms", "mark_compressed", "prunable_layers", "prune_channels",
           "Quality", "RoundsResult", "measure_quality", "parse_quality", "prune_in_rounds", "make_separable"]
