"""tfprune: pruning for tf_keras models that really shrinks them, and says honestly by how much.

The whole public API, bottom to top (each layer imports only from the ones above it in this list):
"""
from tfprune._keras import check_model
from tfprune import models, data, graph, criteria, metrics
from tfprune.schedules import ConstantSparsity, PolynomialDecay
from tfprune.mask import MaskedLayer, masks, strip, with_masks
from tfprune.weight import prune_weights
from tfprune.unit import prune_units
from tfprune.callbacks import PruningSummaries, UpdatePruningStep
from tfprune.oneshot import oneshot
from tfprune.report import report
from tfprune import export, bench

__all__ = [
    "check_model", "models", "data", "graph", "criteria", "metrics",
    "ConstantSparsity", "PolynomialDecay",
    "MaskedLayer", "masks", "strip", "with_masks",
    "prune_weights", "prune_units", "UpdatePruningStep", "PruningSummaries",
    "oneshot", "report", "export", "bench",
]
