"""Parameter, non-zero and MAC counts of tf_keras models.

Counts look through wrappers to the layer that does the work, so a model wrapped for pruning, the same model
stripped, and its saved copy all report the same numbers. Non-zero counts use the *effective* weights
(weight times mask) because a wrapper may hold weights that its mask has not yet zeroed.
"""
import math
import warnings

import numpy as np

from tfprune._keras import PruneLowMagnitude, keras

__all__ = ["count_params", "count_nonzero", "count_macs", "layer_table", "format_table"]

_L = keras.layers
# Layers whose weights cost no multiply-accumulates (lookups, affine normalisation folded at inference).
_NO_MAC_LAYERS = (_L.Embedding, _L.BatchNormalization, _L.LayerNormalization)


def _leaves(model, prefix=""):
    """Yield (qualified name, outer layer, inner layer) once per distinct layer, recursing into sub-models."""
    seen = set()
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            yield from _leaves(layer, f"{prefix}{layer.name}/")
            continue
        inner = layer
        while isinstance(inner, _L.Wrapper) and _is_mask_wrapper(inner):
            inner = inner.layer
        yield prefix + inner.name, layer, inner  # the name `strip` gives back


def _is_mask_wrapper(layer):
    """Pruning wrappers are seen through; other wrappers (Bidirectional, TimeDistributed) are real layers."""
    return isinstance(layer, PruneLowMagnitude) or callable(getattr(layer, "masked_weights", None))


def _effective_weights(outer, inner):
    """The inner layer's weights as arrays, each multiplied by the mask of any wrapper around it."""
    overrides = {}
    wrapper = outer
    while wrapper is not inner:
        if callable(getattr(wrapper, "masked_weights", None)):
            for attr, value in wrapper.masked_weights().items():
                variable = getattr(wrapper.layer, attr, None)
                if variable is None:
                    variable = getattr(inner, attr)
                overrides.setdefault(id(variable), np.asarray(value))
        elif isinstance(wrapper, PruneLowMagnitude):
            for weight, mask, _ in wrapper.pruning_vars:
                overrides.setdefault(id(weight), weight.numpy() * mask.numpy())
        wrapper = wrapper.layer
    return {id(w): overrides.get(id(w), w.numpy()) for w in inner.weights}


def _kernels(inner, weights):
    """(output-channel axis, kernel array) of a Dense/Conv-family layer, or None for other layers."""
    if isinstance(inner, (_L.SeparableConv1D, _L.SeparableConv2D)):
        return -1, weights[id(inner.pointwise_kernel)]
    if isinstance(inner, (_L.DepthwiseConv1D, _L.DepthwiseConv2D)):
        kernel = weights[id(inner.depthwise_kernel)]
        # Output channel c*multiplier + m comes from kernel[..., c, m].
        return -1, kernel.reshape(kernel.shape[:-2] + (-1,))
    if isinstance(inner, (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)):
        return -2, weights[id(inner.kernel)]
    if isinstance(inner, (_L.Dense, _L.Conv1D, _L.Conv2D, _L.Conv3D)):
        return -1, weights[id(inner.kernel)]
    return None


def _shape(outer, which):
    """Input or output shape (first call) of a layer in a graph model; MACs need it."""
    try:
        shape = outer.get_input_shape_at(0) if which == "input" else outer.get_output_shape_at(0)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"count_macs: layer {outer.name!r} has no known {which} shape; pass a functional or Sequential "
            "model built with an input shape (e.g. `keras.Input(...)` or `model.build((None, ...))`)."
        ) from error
    if isinstance(shape, list):
        raise ValueError(f"count_macs: layer {outer.name!r} has several {which}s; only single-tensor layers "
                         "have a MAC formula here.")
    if any(d is None for d in shape[1:]):
        raise ValueError(f"count_macs: layer {outer.name!r} has an unknown {which} dimension {shape}; give the "
                         "model's Input a fixed shape (apart from the batch) to count MACs.")
    return shape


def _layer_macs(outer, inner):
    """Multiply-accumulates for one example; shared layers are counted once, elementwise ops not at all."""
    if isinstance(inner, (_L.SeparableConv1D, _L.SeparableConv2D)):
        out = _shape(outer, "output")
        positions = math.prod(out[1:]) // inner.filters
        depthwise, pointwise = inner.depthwise_kernel.shape, inner.pointwise_kernel.shape
        return positions * (math.prod(depthwise) + math.prod(pointwise))
    if isinstance(inner, (_L.DepthwiseConv1D, _L.DepthwiseConv2D)):
        # Each output value sums one spatial window of one input channel.
        return math.prod(_shape(outer, "output")[1:]) * math.prod(inner.depthwise_kernel.shape[:-2])
    if isinstance(inner, (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)):
        # Every input value is scattered through the whole (spatial x filters) kernel.
        return math.prod(_shape(outer, "input")[1:]) * math.prod(inner.kernel.shape[:-1])
    if isinstance(inner, (_L.Dense, _L.Conv1D, _L.Conv2D, _L.Conv3D)):
        # Every output value is one dot product over the kernel's input extent (data-format independent).
        return math.prod(_shape(outer, "output")[1:]) * math.prod(inner.kernel.shape[:-1])
    if not isinstance(inner, _NO_MAC_LAYERS) and any("kernel" in w.name for w in inner.trainable_weights):
        warnings.warn(f"count_macs: no MAC formula for {type(inner).__name__} layer {outer.name!r}; it counts "
                      "as 0.", stacklevel=3)
    return 0


def layer_table(model):
    """One row per layer that holds weights: params, non-zeros, sparsity, MACs and live output channels.

    `units` is the number of output channels of a Dense/Conv-family kernel and `live_units` those whose kernel
    slice is not entirely zero: a channel that is dead there can be removed by a shrink. `macs` is None where
    a shape is not fixed (count_macs raises there instead).
    """
    rows = []
    for name, outer, inner in _leaves(model):
        weights = _effective_weights(outer, inner)
        try:
            macs = _layer_macs(outer, inner)
        except ValueError:
            macs = None
        if not weights and not macs:
            continue
        params = sum(int(w.size) for w in weights.values())
        nonzero = sum(int(np.count_nonzero(w)) for w in weights.values())
        units = live = None
        kernel = _kernels(inner, weights)
        if kernel is not None:
            axis, array = kernel
            per_unit = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
            units, live = int(per_unit.shape[1]), int(np.count_nonzero(np.any(per_unit != 0, axis=0)))
        rows.append({
            "name": name, "class": type(inner).__name__, "params": params, "nonzero": nonzero,
            "sparsity": 1.0 - nonzero / params if params else 0.0, "macs": macs,
            "units": units, "live_units": live,
        })
    return rows


def count_params(model):
    """All weights of the working layers (wrapper masks, thresholds and steps are not parameters)."""
    return sum(w.shape.num_elements() for _, _, inner in _leaves(model) for w in inner.weights)


def count_nonzero(model):
    """Non-zero entries of the effective (masked) weights, biases and normalisation statistics included."""
    return sum(sum(int(np.count_nonzero(w)) for w in _effective_weights(outer, inner).values())
               for _, outer, inner in _leaves(model))


def count_macs(model):
    """Multiply-accumulates for one example; zeros in kernels are counted (only a shrink removes MACs)."""
    return sum(_layer_macs(outer, inner) for _, outer, inner in _leaves(model))


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_table(rows, columns=None):
    """Fixed-width text table of dict rows; numbers right-aligned, missing values shown as '-'."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    numeric = [all(isinstance(row.get(column), (int, float)) or row.get(column) is None for row in rows)
               for column in columns]
    widths = [max([len(str(column))] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line([str(c) for c in columns]), line(["-" * w for w in widths])]
                     + [line(values) for values in cells])


# The PQ Index is a model-analysis measure too; it lives in pqi.py and is offered here with the counts.
from tfprune.pqi import layer_pq_indices, pq_index  # noqa: E402,F401
