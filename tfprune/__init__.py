"""tfprune: pruning for Keras models (Keras 3 and tf_keras) that really shrinks them, and says honestly by how much.

The public API on one screen. Modules, bottom to top (imports only point down):
  _keras (the one Keras import, both flavors) · registry (layers_* and layers_keras_hub: layer specs), graph,
  metrics, pqi, validation (model analysis) · criteria, pai scorers · mask, schedules, weight, unit, callbacks,
  regularizers (masking) · oneshot, lottery, adaptive, pai, batch_norm (procedures) · shrink, export, bench
  (deployment) · costs, budget (pruning to a measured budget) · report, study, cli, data, models (faces).
"""
from tfprune._keras import check_model
from tfprune import models, data, registry, graph, criteria, metrics
from tfprune.registry import LayerSpec, register_layer
from tfprune.schedules import ConstantSparsity, PolynomialDecay
from tfprune.mask import MaskedLayer, masks, strip, with_masks
from tfprune.weight import prune_weights
from tfprune.unit import prune_units
from tfprune.callbacks import PruningSummaries, UpdatePruningStep
from tfprune.regularizers import (GroupLasso, ProximalGroupLasso, apply_group_lasso, group_sparsity_report,
                                  threshold_groups)
from tfprune.oneshot import oneshot
from tfprune.lottery import RewindCheckpoint, imp, iterative_pruning, load_rewind_point, restore
from tfprune.adaptive import DynamicPruner, PQIndexMonitor, sap, sap_round
from tfprune import pai
from tfprune.pai import prune_at_init
from tfprune.batch_norm import recalibrate_batch_norm
from tfprune.shrink import shrink
from tfprune import export, bench
from tfprune import costs
from tfprune.costs import CostTable, Runtime
from tfprune.budget import BudgetResult, prune_to_budget, sensitivity
from tfprune.report import report
from tfprune import plots, study

__all__ = [
    "check_model", "models", "data", "registry", "LayerSpec", "register_layer", "graph", "criteria", "metrics",
    "ConstantSparsity", "PolynomialDecay",
    "MaskedLayer", "masks", "strip", "with_masks",
    "prune_weights", "prune_units", "UpdatePruningStep", "PruningSummaries",
    "GroupLasso", "ProximalGroupLasso", "apply_group_lasso", "group_sparsity_report", "threshold_groups",
    "oneshot", "iterative_pruning", "RewindCheckpoint", "imp", "load_rewind_point", "restore",
    "DynamicPruner", "PQIndexMonitor", "sap", "sap_round", "pai", "prune_at_init", "recalibrate_batch_norm",
    "shrink", "export", "bench", "costs", "CostTable", "Runtime", "sensitivity", "prune_to_budget", "BudgetResult",
    "report", "plots", "study",
]
