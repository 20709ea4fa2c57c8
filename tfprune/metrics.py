"""Parameter, non-zero and MAC counts of Keras models (Keras 3 or tf_keras).

Counts look through wrappers to the layer that does the work, so a model wrapped for pruning, the same model
stripped, and its saved copy all report the same numbers. Non-zero counts use the *effective* weights
(weight times mask) because a wrapper may hold weights that its mask has not yet zeroed.
"""
import math
import warnings

import numpy as np

from tfprune._keras import PruneLowMagnitude, input_shape, is_model, output_shape
from tfprune.registry import resolve_weight, spec_for

__all__ = ["count_params", "count_nonzero", "count_macs", "layer_table", "format_table"]



def _leaves(model, prefix=""):
    """Yield (qualified name, outer layer, inner layer) once per distinct layer, recursing into sub-models."""
    seen = set()
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if is_model(layer):
            yield from _leaves(layer, f"{prefix}{layer.name}/")
            continue
        inner = layer
        while _is_mask_wrapper(inner):
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
    return {id(w): overrides.get(id(w), np.asarray(w)) for w in inner.weights}


def _kernels(inner, weights):
    """(entries, units) view of a layer's output kernel per its registry spec, or None."""
    spec = spec_for(inner)
    if spec is None or spec.output_units is None:
        return None
    return spec.output_units(inner, lambda attribute: weights[id(resolve_weight(inner, attribute))])


def _shape(outer, which):
    """Input or output shape (first call; the first tensor's when there are several) of a layer in a graph
    model; MACs need it."""
    try:
        shape = input_shape(outer) if which == "input" else output_shape(outer)
    except (IndexError, RuntimeError, ValueError) as error:
        raise ValueError(
            f"count_macs: layer {outer.name!r} has no known {which} shape; pass a functional or Sequential "
            "model built with an input shape (e.g. `keras.Input(...)` or `model.build((None, ...))`)."
        ) from error
    if any(d is None for d in shape[1:]):
        raise ValueError(f"count_macs: layer {outer.name!r} has an unknown {which} dimension {shape}; give the "
                         "model's Input a fixed shape (apart from the batch) to count MACs.")
    return shape


def _layer_macs(outer, inner):
    """Multiply-accumulates for one example, by the layer's registry spec; shared layers are counted once,
    element-wise ops and normalisations not at all."""
    spec = spec_for(inner)
    if spec is not None and spec.macs is not None:
        return spec.macs(inner, _shape(outer, "input"), _shape(outer, "output"))
    if spec is None and any("kernel" in w.name for w in inner.trainable_weights):
        warnings.warn(f"count_macs: no MAC formula for {type(inner).__name__} layer {outer.name!r}; it counts "
                      "as 0. Register one with tfprune.register_layer.", stacklevel=3)
    return 0


def layer_table(model):
    """One row per layer that holds weights: params, non-zeros, sparsity, MACs and live output channels.

    `units` is the number of output channels of a Dense/Conv-family kernel and `live_units` those whose kernel
    slice is not entirely zero: a channel that is dead there can be removed by a shrink. `macs` is None where
    a shape is not fixed (count_macs raises there instead).
    Example: ``print(format_table(layer_table(model)))``.

    Args:
      model: a model of either flavor, masked, wrapped, stripped or shrunk (nested models are entered).

    Returns:
      a list of dicts with keys ``name``, ``class``, ``params``, ``nonzero``, ``sparsity``, ``macs``,
      ``units`` and ``live_units``.

    Warns:
      UserWarning: a layer with a kernel but no MAC formula (it counts 0 MACs).
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
        per_unit = _kernels(inner, weights)
        if per_unit is not None:
            units, live = int(per_unit.shape[1]), int(np.count_nonzero(np.any(per_unit != 0, axis=0)))
        rows.append({
            "name": name, "class": type(inner).__name__, "params": params, "nonzero": nonzero,
            "sparsity": 1.0 - nonzero / params if params else 0.0, "macs": macs,
            "units": units, "live_units": live,
        })
    return rows


def count_params(model):
    """All weights of the working layers (wrapper masks, thresholds and steps are not parameters), so a
    masked model and its stripped copy count the same.

    Args:
      model: a model of either flavor (nested models are entered).

    Returns:
      the number of weight entries, an int; shared layers count once.
    """
    return sum(math.prod(w.shape) for _, _, inner in _leaves(model) for w in inner.weights)


def count_nonzero(model):
    """Non-zero entries of the effective (masked) weights, biases and normalisation statistics included, so a
    wrapper whose mask has not yet zeroed its weights still reports its real sparsity.

    Args:
      model: a model of either flavor (nested models are entered).

    Returns:
      the number of non-zero entries, an int.
    """
    return sum(sum(int(np.count_nonzero(w)) for w in _effective_weights(outer, inner).values())
               for _, outer, inner in _leaves(model))


def count_macs(model):
    """Multiply-accumulates for one example; zeros in kernels are counted (only a shrink removes MACs).

    Args:
      model: a functional or built Sequential model of either flavor whose input shape is fixed apart from
        the batch.

    Returns:
      the MACs per example, an int; element-wise ops and normalisations count 0.

    Raises:
      ValueError: a layer's input or output shape is unknown or not fixed.

    Warns:
      UserWarning: a layer with a kernel but no MAC formula (it counts 0; see `tfprune.register_layer`).
    """
    return sum(_layer_macs(outer, inner) for _, outer, inner in _leaves(model))


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_table(rows, columns=None):
    """Fixed-width text table of dict rows; numbers right-aligned, missing values shown as '-'.

    Args:
      rows: an iterable of dicts (e.g. `layer_table`'s).
      columns: the keys to show, in order; None shows every key, in order of first appearance.

    Returns:
      the table as one string: a header line, a rule, then one line per row.
    """
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
