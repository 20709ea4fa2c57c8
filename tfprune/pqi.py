"""PQ Index (Diao et al., ICLR 2023): how sparse a set of weights already is, as one number in [0, 1).

I_{p,q}(w) = 1 − d^{1/q − 1/p} · ‖w‖_p / ‖w‖_q over the d unmasked entries, with 0 < p < q and
‖w‖_p = (Σ|w|^p)^{1/p}. By Hölder's inequality 0 ≤ I ≤ 1 − d^{1/q − 1/p}: 0 when every magnitude is equal,
larger as the mass gathers on fewer entries. Masked entries are left out (not counted as zeros), so the index
describes the weights a pruned network still computes with.

This module sits with the counts in the model-analysis layer: it reads pruning wrappers by their public
methods and imports nothing of tfprune's above the Keras boundary.
"""
import numbers

import numpy as np

from tfprune._keras import keras
from tfprune.graph import KERNEL_WEIGHTS, kernel_attributes

__all__ = ["pq_index", "layer_pq_indices", "check_pq"]


def check_pq(p, q):
    """Raise unless 0 < p < q (finite numbers); the index is only a sparsity measure in that range."""
    for name, value in (("p", p), ("q", q)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise ValueError(f"pq_index: `{name}` must be a finite number, got {value!r}.")
    if not 0 < p < q:
        raise ValueError(f"pq_index: needs 0 < p < q, got p={p!r}, q={q!r}; the paper's default is p=0.5, q=1.")


def _surviving_magnitudes(weights, mask):
    """|w| of the unmasked entries, flattened (and concatenated for lists), as float64."""
    if isinstance(weights, (list, tuple)):
        masks = [None] * len(weights) if mask is None else mask
        if not isinstance(masks, (list, tuple)) or len(masks) != len(weights):
            raise ValueError("pq_index: for a list of weight arrays, `mask` must be None or a list of the same "
                             "length (None entries meaning unmasked).")
        parts = [_surviving_magnitudes(w, m) for w, m in zip(weights, masks)]
        return np.concatenate(parts) if parts else np.zeros(0)
    values = np.abs(np.asarray(weights, dtype=np.float64))
    if mask is None:
        return values.reshape(-1)
    mask = np.asarray(mask)
    if mask.shape != values.shape:
        raise ValueError(f"pq_index: `mask` has shape {mask.shape} but the weights have {values.shape}.")
    return values[mask > 0]


def pq_index(weights, p=0.5, q=1.0, mask=None):
    """The PQ Index I_{p,q} of `weights` (one array, or a list treated as one concatenated vector).

    Args:
      weights: an array, or a list of arrays for a global index over several layers.
      p, q: norm exponents with 0 < p < q.
      mask: 0/1 array shaped like `weights` (a list of them, None entries allowed, for a list); entries with
        mask 0 are left out and do not count in d.

    Returns:
      a float in [0, 1). With no unmasked entries, or only zeros among them, there are no magnitudes to compare
      and the index is defined as 0 ("not sparse"), so SAP's retained bound is d and nothing is pruned there.
    """
    check_pq(p, q)
    values = _surviving_magnitudes(weights, mask)
    if not np.all(np.isfinite(values)):
        raise ValueError("pq_index: the weights contain inf or NaN; the index needs finite weights.")
    largest = values.max(initial=0.0)
    if largest == 0:
        return 0.0
    # Both norms scale alike, so divide by the largest magnitude first and work in logs: no overflow for any d.
    scaled = values / largest
    log_ratio = ((1.0 / q - 1.0 / p) * np.log(values.size)
                 + np.log(np.sum(scaled ** p)) / p - np.log(np.sum(scaled ** q)) / q)
    return float(max(0.0, 1.0 - np.exp(log_ratio)))  # max: rounding may give −1e-16 for equal magnitudes


def _wrapper_masks(layer):
    """(inner layer, {attribute: mask}) seen through tfprune's MaskedLayer or TFMOT's wrapper."""
    found = {}
    while isinstance(layer, keras.layers.Wrapper):
        if callable(getattr(layer, "mask_values", None)):
            found.update({k: v for k, v in layer.mask_values().items() if k not in found})
        elif hasattr(layer, "pruning_vars"):
            for weight, mask, _ in layer.pruning_vars:
                name = next((n for n in KERNEL_WEIGHTS if getattr(layer.layer, n, None) is weight), None)
                if name is not None and name not in found:
                    found[name] = mask.numpy()
        else:
            break
        layer = layer.layer
    return layer, found


def _layer_kernels(model):
    """Yield (layer name, [kernel arrays], [masks or None]) for every layer with kernel-like weights."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layer_kernels(layer)
            continue
        inner, found = _wrapper_masks(layer)
        names = kernel_attributes(inner)
        if names:
            yield inner.name, [getattr(inner, n).numpy() for n in names], [found.get(n) for n in names]


def layer_pq_indices(model, p=0.5, q=1.0):
    """``{layer_name: I_{p,q}}`` over each layer's kernels, plus ``"global"`` over all of them at once.

    Masked entries (tfprune masks, TFMOT masks) are left out; biases and normalisation weights are not kernels
    and never count. A layer with several kernels (SeparableConv) gets one index over all of them.
    """
    check_pq(p, q)
    result, all_weights, all_masks = {}, [], []
    for name, weights, masks in _layer_kernels(model):
        result[name] = pq_index(weights, p, q, masks)
        all_weights += weights
        all_masks += masks
    result["global"] = pq_index(all_weights, p, q, all_masks)
    return result
