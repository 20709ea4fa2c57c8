"""Physically remove dead units and filters: a narrower plain tf_keras model that computes the same outputs.

Everything `shrink` removes comes from the channel graph (`tfprune.graph`), the same one unit masking reads,
so what was masked during training is exactly what disappears here; no layer-specific surgery exists
outside the graph's slices.

The rule. Masks are first stripped into the weights (`tfprune.strip`). A channel of a prunable group is
removed when nothing downstream can see it, which holds in either of two cases:

1. Its value is exactly zero for every input: every layer on its path says so through its registry spec's
   `silent` rule (`tfprune.registry`): a producer's kernel column and bias are zero, a BatchNormalization has
   beta = 0 and gamma = 0 or moving mean = 0, a LayerNormalization gamma = beta = 0, an activation maps 0 to
   0 (ReLU, tanh; not sigmoid or softplus); depthwise kernels and PReLU slopes only scale the zero.
2. No consumer reads it: every consumer row (Dense/Conv input rows, separable depthwise and pointwise rows)
   is zero, whatever its value.

`tfprune.prune_units` zeroes both sides, group lasso (`threshold_groups`) the producer side. A group always
keeps at least one channel, and a multiple of `round_to` where it can (the extra channels are the dead ones
with the largest L2 norm; keeping a dead channel is exact too). Layers whose spec carries a `shrink_warning`
(LayerNormalization: its statistics run over the channels) make shrink warn that outputs change; fine-tune
briefly after shrinking. Narrowed layers take their new config from their spec (`width_key`, `narrow`).
"""
import warnings

import numpy as np

from tfprune import criteria
from tfprune._keras import check_model, flavor_of, graph_nodes, is_model, output_shape
from tfprune.graph import build_channel_graph, combined_keeps
from tfprune.mask import has_wrappers, masked_layers, strip
from tfprune.metrics import format_table, layer_table
from tfprune.registry import spec_for, resolve_weight
from tfprune.unit import kept_count
from tfprune.validation import check_finite

__all__ = ["shrink", "shrink_report"]

def _dead_channels(group, tensors, tolerance):
    """Boolean (group.size,): the channels of `group` nothing downstream can see (module rule; |w| <= tolerance is 0).

    `tensors` is a `tfprune.criteria.ModelTensors` of the stripped model.
    """
    zero = {}  # (layer, weight, role) -> channels whose entries are all zero, over every slice of that weight
    for piece in group.slices:
        entries = piece.channel_view(tensors.weight(piece))
        key = (piece.layer, piece.weight, piece.role)
        zero[key] = zero.get(key, True) & np.all(np.abs(entries) <= tolerance, axis=1)
    consumers = [channels for (_, _, role), channels in zero.items() if role == "in"]
    unread = np.logical_and.reduce(consumers) if consumers else np.zeros(group.size, dtype=bool)
    by_layer = {}
    for (name, weight, role), channels in zero.items():
        if role == "out":
            by_layer.setdefault(name, {})[weight] = channels
    silent = np.ones(group.size, dtype=bool)
    for name in dict.fromkeys([piece.layer for piece in group.slices] + list(group.carriers)):
        layer = tensors.layers[name]
        silent &= spec_for(layer).is_silent(layer, by_layer.get(name, {}))
    return silent | unread


def _group_keep(group, tensors, tolerance, round_to):
    """Live channels, plus the strongest dead ones needed for at least one channel and a multiple of round_to."""
    keep = ~_dead_channels(group, tensors, tolerance)
    wanted = int(kept_count(group.size, 1.0 - keep.sum() / group.size, round_to))
    if wanted > keep.sum():
        scores = np.where(keep, np.inf, criteria.l2(group, tensors))
        keep[np.argsort(-scores, kind="stable")[:wanted]] = True
    return keep


def _axis_keeps(groups, keeps, tensors):
    """{layer: {weight: {axis: bool vector}}}: a position survives when no group on that axis drops it."""
    def axis_length(piece):
        layer = tensors.layers[piece.layer]
        return output_shape(layer)[-1] if piece.weight == "output" else resolve_weight(layer, piece.weight).shape[piece.axis]

    pairs = [(piece, keep) for group, keep in zip(groups, keeps) for piece in group.slices + group.carrier_slices]
    result = {}
    for (layer, weight, axis), vector in combined_keeps(pairs, axis_length).items():
        result.setdefault(layer, {}).setdefault(weight, {})[axis] = vector
    return result


def _kept_width(tensor, cuts):
    """Channels of a Keras tensor that survive the cuts (a nested model's output: its inner output's)."""
    layer, _, index = tensor._keras_history
    if is_model(layer):
        return _kept_width(layer.outputs[index], cuts)
    axes = cuts.get(layer.name, {}).get("output")
    return int(next(iter(axes.values())).sum()) if axes else tensor.shape[-1]


def _nested_input_shapes(model, cuts):
    """{nested model name: its narrowed input shapes}: a nested model is rebuilt on narrower inputs."""
    shapes = {}
    for node in graph_nodes(model):
        if is_model(node.layer):
            shapes[node.layer.name] = [tuple(t.shape[:-1]) + (_kept_width(t, cuts),) for t in node.inputs]
            shapes.update(_nested_input_shapes(node.layer, cuts))
    return shapes


def _copy_cut_weights(source_model, target_model, cuts):
    """Copy every weight, keeping only the surviving positions on each axis the graph slices."""
    targets = {layer.name: layer for layer in target_model.layers}
    for source in source_model.layers:
        target = targets[source.name]
        if is_model(source):
            _copy_cut_weights(source, target, cuts)
            continue
        by_variable = {id(resolve_weight(source, weight)): axes for weight, axes in cuts.get(source.name, {}).items()
                       if weight != "output"}
        values = []
        for variable, expected in zip(source.weights, target.weights):
            value = variable.numpy()
            for axis, keep in by_variable.get(id(variable), {}).items():
                value = np.compress(keep, value, axis=axis)
            if value.shape != tuple(expected.shape):
                raise ValueError(f"shrink: weight '{variable.name}' of layer '{source.name}' "
                                 f"({type(source).__name__}) would have shape {value.shape}, but the narrowed "
                                 f"layer needs {tuple(expected.shape)}: the channel graph has no slice for it. "
                                 f"Pass exclude=['{source.name}'] to keep its channels.")
            values.append(value)
        target.set_weights(values)


def shrink(model, exclude=(), round_to=1, tolerance=0.0):
    """A new, narrower plain model (of `model`'s flavor) without the dead units/filters of `model` (see the
    module rule): unit pruning only saves memory and time once the channels are gone.
    Example: ``tfprune.shrink(tfprune.prune_units(model, schedule), round_to=8)`` after fine-tuning.

    Args:
      model: Sequential or functional model (Keras 3 or tf_keras), with or without pruning wrappers (tfprune's
        or TFMOT's); it is not changed.
      exclude: layer names whose channel groups are left whole (as in `prune_units`).
      round_to: each group keeps a multiple of this many channels where it can (LiteRT/XNNPACK compute
        channels in blocks of 8), adding back its strongest dead channels.
      tolerance: weights with |w| <= tolerance count as zero; above 0 the outputs may differ slightly.

    The result holds only built-in Keras layers (it loads without `custom_objects`) and is not compiled.
    Nested models are rebuilt on their narrowed inputs, with their own layers narrowed.

    Returns:
      the shrunk model, uncompiled, with the same layer names (the inner ones, for wrapped layers).

    Raises:
      UnsupportedLayerError: a layer the channel graph cannot model (the message names it and the fix).
      ValueError: bad arguments (`round_to`, `tolerance`, unknown `exclude` names), weights holding NaN or
        inf, or a weight the channel graph has no slice for.
      TypeError: `model` is not a Keras model.

    Warns:
      UserWarning: removing channels of a layer whose outputs then change (a spec's `shrink_warning`, e.g.
        LayerNormalization not masked by tfprune).
    """
    check_model(model)
    if not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1:
        raise ValueError(f"shrink: `round_to` must be a positive integer, got {round_to!r}.")
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ValueError(f"shrink: `tolerance` must be a number >= 0, got {tolerance!r}.")
    check_finite(model, "shrink")
    graph = build_channel_graph(model, exclude=exclude)
    stripped = strip(model)
    tensors = criteria.ModelTensors(stripped)
    groups, keeps = [], []
    for group in graph.prunable_groups():
        keep = _group_keep(group, tensors, tolerance, round_to)
        if not keep.all():
            groups.append(group)
            keeps.append(keep)
    masked_channels = {layer.layer.name for layer in masked_layers(model) if layer.channel_masked}
    for group in groups:
        for name in dict.fromkeys(piece.layer for piece in group.slices):
            note = spec_for(tensors.layers[name]).shrink_warning
            if note and (name not in masked_channels or spec_for(tensors.layers[name]).masked_call is None):
                warnings.warn(f"shrink: removing channels of '{name}' ({type(tensors.layers[name]).__name__}) "
                              f"{note}, so outputs differ from the masked model; fine-tune briefly after "
                              f"shrinking.", stacklevel=2)
    cuts = _axis_keeps(groups, keeps, tensors)
    nested_inputs = _nested_input_shapes(stripped, cuts)

    flavor = flavor_of(model)

    def clone(layer):
        if is_model(layer):
            inputs = [flavor.Input(batch_shape=shape) for shape in nested_inputs[layer.name]]
            return flavor.models.clone_model(layer, input_tensors=inputs, clone_function=clone)
        if layer.name in cuts:
            return type(layer).from_config(spec_for(layer).narrowed_config(layer, cuts[layer.name]))
        return type(layer).from_config(layer.get_config())

    shrunk = flavor.models.clone_model(stripped, clone_function=clone)
    _copy_cut_weights(stripped, shrunk, cuts)
    return shrunk


def shrink_report(before, after):
    """Per-layer output channels, params and MACs of a model and its shrunk copy; returns (rows, text).

    Layers are matched by their inner names (wrappers of `before` are stripped first); the last row totals
    params and MACs (MACs None when a shape is not fixed).

    Args:
      before: the model `shrink` was given (tf_keras).
      after: its shrunk copy (tf_keras).

    Returns:
      ``(rows, text)``: a list of dicts (``layer``, ``class``, ``units_before``/``_after``,
      ``params_before``/``_after``, ``macs_before``/``_after``) and the `format_table` text of them.

    Raises:
      TypeError: either model is not a tf_keras model.
      ValueError: two layers of a model share a name.
    """
    check_model(before, "before")
    check_model(after, "after")
    tables = [{row["name"]: row for row in layer_table(strip(m) if has_wrappers(m) else m)} for m in (before, after)]
    rows = []
    for name, old in tables[0].items():
        new = tables[1].get(name, {})
        rows.append({"layer": name, "class": old["class"], "units_before": old["units"],
                     "units_after": new.get("units"), "params_before": old["params"],
                     "params_after": new.get("params"), "macs_before": old["macs"], "macs_after": new.get("macs")})
    total = {"layer": "total", "class": ""}
    for key in ("params_before", "params_after", "macs_before", "macs_after"):
        values = [row[key] for row in rows]
        total[key] = None if any(v is None for v in values) else sum(values)
    rows.append(total)
    return rows, format_table(rows)
