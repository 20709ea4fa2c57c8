"""The channel dependency graph: which weight slices must be pruned together.

Unit masking and `shrink` both read this graph, so what is masked during training is exactly what is
removed at export. A *group* is a set of channels that share one keep vector: a producer's output
channels plus every BatchNorm entry, depthwise filter, residual partner and consumer input they reach.

Every tensor of the Keras graph is described as a list of segments along its last axis, one per group
it carries (a Concatenate gives several), each with the map from channel to positions (see
`ChannelSlice`). How each layer maps channels is its spec in `tfprune.registry`; the builder's methods
under "what layer specs call" are the vocabulary specs use. Layers without a spec raise
`UnsupportedLayerError`: a layer wrongly assumed to be channel-preserving would silently corrupt both masks
and shrunk models.

Groups are found in two steps. Coupled tensors split into groups the same way join whole groups (union-find);
otherwise single channels are linked: a grouped convolution links each input block with its output block,
an element-wise merge of tensors split differently (NASNet) links position by position. At the end linked
channels form units, kept or removed as one, and a group of units is placed as blocks (a unit of n channels
is one channel with `block` times n) and sub-ranges (an offset) of the linked groups' slices. Links no slice
can describe leave those groups whole, with a reason.

All names in the graph are innermost layer names: a tfmot `PruneLowMagnitude` or a wrapper class with
``tfprune_transparent = True`` is seen through, and nested models are entered.

Layers called more than once (shared weights) do not raise: their calls are unioned and every group they
touch is marked not prunable, because the mask would have to agree across calls.

LayerNormalization is treated as channel-preserving (its gamma/beta join the group), but its mean and
variance run over the channels: a masked model sees the zeros of masked channels there, a shrunk one does
not, so the two differ slightly until fine-tuning. Softmax over channels marks its groups not prunable.
"""
import dataclasses
from typing import Optional

import numpy as np

from tfprune._keras import (check_model, flavor_of, graph_nodes, is_graph_model, is_layer, is_model, is_variable,
                            keras, keras3, tf, unwrap_layer)
from tfprune.registry import UnsupportedLayerError, resolve_weight, spec_for, unsupported as _unsupported

__all__ = ["ChannelSlice", "ChannelGroup", "ChannelGraph", "UnsupportedLayerError", "build_channel_graph",
           "output_width_layers", "prunable_kernels", "unwrap_layer"]


@dataclasses.dataclass(frozen=True)
class ChannelSlice:
    """Where a group's channels sit along one axis of one weight.

    Channel c owns positions ``offset + c*block + j + k*stride`` for j < block, k < fan_out: `block` > 1
    after a depthwise multiplier (input channel c becomes outputs c*m .. c*m+m-1), `stride`/`fan_out` after
    Flatten (channels-last order repeats each channel once per spatial position, `stride` apart).
    `size` is the group's channel count. Slices with ``weight='output'`` (in `ChannelGroup.carrier_slices`)
    locate the channels on the last axis of a layer's output instead of a weight.

    Args:
      layer: the innermost layer's name.
      weight: the weight's attribute name (``"kernel"``, ``"gamma"``, ``"_query_dense.kernel"``, ...), or
        ``"output"``.
      axis: the weight's axis the channels lie on.
      role: ``"out"`` where the layer produces (or carries through) the channels, ``"in"`` where it reads
        them.
      offset: the first position of channel 0.
      block: consecutive positions per channel.
      stride: the distance between a channel's repeats (after Flatten).
      fan_out: how many times each channel repeats.
      size: the group's channel count; slices made by `build_channel_graph` have it.
    """
    layer: str
    weight: str
    axis: int
    role: str
    offset: int = 0
    block: int = 1
    stride: int = 0
    fan_out: int = 1
    size: Optional[int] = None

    def _positions(self, channels):
        channels = np.asarray(channels, dtype=np.int64)[:, None, None]
        spatial = np.arange(self.fan_out)[None, :, None] * self.stride
        within = np.arange(self.block)[None, None, :]
        return (self.offset + channels * self.block + spatial + within).reshape(len(channels),
                                                                               self.fan_out * self.block)

    def _checked_positions(self, channels, axis_length):
        positions = self._positions(channels)
        if positions.size and positions.max() >= axis_length:
            raise ValueError(f"{self}: positions reach {positions.max()}, but axis {self.axis} of "
                             f"'{self.layer}.{self.weight}' has length {axis_length}; the slice belongs to "
                             f"another model.")
        return positions

    def _require_size(self):
        if self.size is None:
            raise ValueError(f"{self} has no `size`; use slices from build_channel_graph.")
        return self.size

    def indices(self, channel):
        """Positions along `axis` owned by `channel`, e.g. to read or zero one channel of a weight.

        Args:
          channel: the channel's index in the group.

        Returns:
          a list of ints (``block * fan_out`` of them).
        """
        return self._positions([channel])[0].tolist()

    def expand(self, keep, axis_length):
        """Per-channel keep (bool, group size) -> keep vector for the whole axis; other groups' positions stay True.

        Args:
          keep: one bool per channel of the group (array, list or tensor).
          axis_length: the length of the weight's axis.

        Returns:
          a bool vector of `axis_length`: a numpy array when `keep` was one (or a list), else a tensor.

        Raises:
          ValueError: `keep` is not a vector of the group's size, or the slice reaches past `axis_length`.
        """
        tensor = tf.convert_to_tensor(keep, tf.bool)
        if tensor.shape.rank != 1 or (self.size is not None and tensor.shape[0] != self.size):
            raise ValueError(f"expand: keep must have shape ({self.size},) for {self}, got {tuple(tensor.shape)}.")
        positions = self._checked_positions(np.arange(tensor.shape[0]), axis_length)
        # Tile, not tf.repeat (8 ms each to trace; the unit pruner's traced update expands thousands of slices,
        # NASNetMobile 4,273), and no scatter when the group covers the whole axis in order.
        repeated = tf.reshape(tf.tile(tensor[:, None], [1, positions.shape[1]]), [-1])
        if np.array_equal(positions.reshape(-1), np.arange(axis_length)):
            return _like(keep, repeated)
        full = tf.tensor_scatter_nd_update(tf.ones([axis_length], tf.bool), positions.reshape(-1, 1), repeated)
        return _like(keep, full)

    def channel_view(self, array):
        """(size, entries per channel): every entry of `array` that belongs to each channel, for criteria.

        Args:
          array: the whole weight (array or tensor).

        Returns:
          a 2-D array or tensor (as `array`), one row per channel.

        Raises:
          ValueError: the slice has no `size`, or reaches past the weight's axis (a slice of another model).
        """
        size = self._require_size()
        tensor = tf.convert_to_tensor(array)
        positions = self._checked_positions(np.arange(size), tensor.shape[self.axis])
        gathered = tf.gather(tensor, positions.reshape(-1), axis=self.axis)
        order = [self.axis] + [axis for axis in range(tensor.shape.rank) if axis != self.axis]
        return _like(array, tf.reshape(tf.transpose(gathered, order), [size, -1]))

    def channel_sums(self, array, squared=False):
        """(sums, entries): per channel, the float64 sum of `array`'s entries it owns (of their squares with
        `squared`), and how many there are.

        Reduces the other axes first, in the array's own dtype (a float64 cast of the whole weight would double
        the time of per-step criteria), then sums each channel's positions in float64.

        Args:
          array: the whole weight (array or tensor).
          squared: sum squares instead of values.

        Returns:
          ``(sums, entries)``: float64 sums of shape ``(size,)`` (numpy when `array` was numpy), and an int.

        Raises:
          ValueError: the slice has no `size`, or reaches past the weight's axis (a slice of another model).
        """
        size = self._require_size()
        tensor = tf.convert_to_tensor(array)
        others = [axis for axis in range(tensor.shape.rank) if axis != self.axis]
        per_position = tf.reduce_sum(tf.square(tensor) if squared else tensor, axis=others)
        positions = self._checked_positions(np.arange(size), per_position.shape[0])
        sums = tf.reduce_sum(tf.gather(tf.cast(per_position, tf.float64), positions), axis=1)
        return _like(array, sums), positions.shape[1] * (tensor.shape.num_elements() // per_position.shape[0])


def _like(given, result):
    """`result` (a tensor) as a numpy array when `given` was one: slice operations run as TensorFlow ops where
    the data lives, and hand numpy callers (shrink, reports) numpy back."""
    return result.numpy() if isinstance(given, (np.ndarray, list)) else result


@dataclasses.dataclass
class ChannelGroup:
    """Channels that must be kept or removed together, and every slice they own.

    `carriers` are the layers whose output tensor carries these channels (for activation criteria);
    `carrier_slices` locate them on each carrier output's last axis (same order, ``weight='output'``);
    `relu_carriers` are the carriers whose output comes straight out of a ReLU (for APoZ).

    Args:
      id: the group's number in its graph.
      size: its channel count.
      slices: the `ChannelSlice`s of weights it owns.
      producers: names of the layers that create its channels.
      carriers: names of the layers whose output carries them.
      prunable: whether its channels may be removed.
      reason: why not, when not prunable ("" otherwise).
      carrier_slices: where the channels sit on each carrier's output.
      relu_carriers: the carriers whose output is a ReLU's.
    """
    id: int
    size: int
    slices: list
    producers: list
    carriers: list
    prunable: bool
    reason: str
    carrier_slices: list = dataclasses.field(default_factory=list)
    relu_carriers: list = dataclasses.field(default_factory=list)


class ChannelGraph:
    """All channel groups of a model, in topological order of their first producer; made by
    `build_channel_graph`, read by unit masking, `shrink` and reports.

    Args:
      groups: the `ChannelGroup`s.
      layer_names: ``{accepted name: innermost layer name}``, wrapper names included.

    Raises:
      (from the methods) ValueError: a layer name the graph does not know.
    """

    def __init__(self, groups, layer_names):
        self.groups = groups
        self._layer_names = layer_names  # every accepted name -> innermost layer name

    def _inner_name(self, name):
        if name not in self._layer_names:
            raise ValueError(f"No layer named '{name}' in this channel graph. Layers: "
                             f"{sorted(set(self._layer_names.values()))}.")
        return self._layer_names[name]

    def prunable_groups(self):
        """The groups whose channels may be removed, in graph order.

        Returns:
          a list of `ChannelGroup`s.
        """
        return [group for group in self.groups if group.prunable]

    def groups_of_layer(self, name):
        """Groups that own a slice of layer `name` or flow through its output (wrapper names accepted).

        Args:
          name: a layer's name.

        Returns:
          a list of `ChannelGroup`s, in graph order.

        Raises:
          ValueError: no layer of that name in the graph.
        """
        inner = self._inner_name(name)
        return [group for group in self.groups
                if inner in group.carriers or any(piece.layer == inner for piece in group.slices)]

    def slices_of_layer(self, name):
        """(group, slice) for every weight slice of layer `name`, in group order.

        Args:
          name: a layer's name (wrapper names accepted).

        Returns:
          a list of ``(ChannelGroup, ChannelSlice)`` pairs.

        Raises:
          ValueError: no layer of that name in the graph.
        """
        inner = self._inner_name(name)
        return [(group, piece) for group in self.groups for piece in group.slices if piece.layer == inner]


#: Weights that carry a layer's input->output mapping: what weight pruning, PaI and weight-norm criteria read.
KERNEL_WEIGHTS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def kernel_attributes(layer):
    """Names of the kernel-like weights a layer owns (biases and BatchNorm entries excluded).

    Args:
      layer: an innermost layer.

    Returns:
      a list of names from `KERNEL_WEIGHTS`, in that order.
    """
    return [name for name in KERNEL_WEIGHTS if is_variable(getattr(layer, name, None))]


def prunable_kernels(layer):
    """Kernel attributes that weight pruning, PaI and IMP mask on `layer` (its registry spec says which), so
    every method masks the same weights.

    Args:
      layer: an innermost layer (see `unwrap_layer`).

    Returns:
      a list of weight paths the layer has (``"kernel"``, ``"_query_dense.kernel"``, ...); empty for a layer
      without a spec.
    """
    spec = spec_for(layer)
    return [name for name in spec.prunable_kernels if resolve_weight(layer, name) is not None] if spec else []


#: Config keys of layers that set their output width.
_WIDTH_CONFIG_KEYS = {"units", "filters", "output_dim"}


def output_width_layers(model):
    """Names of the layers that set the width of `model`'s outputs: each output's layer or, through layers
    that keep the width (Softmax, Activation, Dropout, Reshape, BatchNormalization, DepthwiseConv, ...), the
    last layer whose config sets a width (`units`, `filters`, `output_dim`).

    Removing their units would change what the model outputs (its classes), so every method leaves them whole.
    Works on an unbuilt Sequential too (its layer order is its graph).

    Args:
      model: a Sequential (built or not) or functional model of either flavor.

    Returns:
      a set of innermost layer names (nested models' included).
    """
    found = set()

    def reach(layer, parents):
        """Add the width owner at or before `layer`; True when one was found."""
        inner = unwrap_layer(layer)
        if is_model(inner) and output_width_layers(inner):
            found.update(output_width_layers(inner))
            return True
        if not is_model(inner) and _WIDTH_CONFIG_KEYS & set(inner.get_config()):
            found.add(inner.name)
            return True
        return any([reach(parent, parents) for parent in parents(layer)])

    if not is_graph_model(model):  # an unbuilt Sequential
        order = list(model.layers)
        if order:
            reach(order[-1], lambda layer: order[max(order.index(layer) - 1, 0):order.index(layer)])
    else:
        parents = {}
        for node in graph_nodes(model):
            parents.setdefault(id(node.layer), []).extend(tensor._keras_history[0] for tensor in node.inputs)
        for tensor in model.outputs:
            reach(tensor._keras_history[0], lambda layer: parents.get(id(layer), []))
    return found


def combined_keeps(assignments, axis_length):
    """``{(layer, weight, axis): bool vector}`` from ``(slice, group keep)`` pairs.

    A position survives when no group slicing that axis drops it. Unit masking and `shrink` both go through
    this one rule, so what was masked is exactly what is removed. `axis_length(slice)` gives the axis size.

    Args:
      assignments: ``(ChannelSlice, keep)`` pairs, `keep` one bool per channel of the slice's group.
      axis_length: ``slice -> int``.

    Returns:
      the dict above; vectors are numpy arrays or tensors as the keeps were.

    Raises:
      ValueError: as `ChannelSlice.expand` (a keep of the wrong size, a slice past its axis).
    """
    result = {}
    for piece, keep in assignments:
        key = (piece.layer, piece.weight, piece.axis)
        expanded = piece.expand(keep, axis_length(piece))
        result[key] = expanded if key not in result else result[key] & expanded
    return result


# --- tensor channel structure -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Segment:
    """One group's channels inside a tensor's last axis (same position map as ChannelSlice)."""
    group: int
    size: int
    offset: int = 0
    block: int = 1
    stride: int = 0
    fan_out: int = 1

    def placement(self):
        return {"offset": self.offset, "block": self.block, "stride": self.stride, "fan_out": self.fan_out}

    def scaled(self, multiplier):
        """Positions after each channel is repeated `multiplier` times in place (depthwise multiplier)."""
        return dataclasses.replace(self, offset=self.offset * multiplier, block=self.block * multiplier,
                                   stride=self.stride * multiplier)

    def same_layout(self, other):
        return (self.size, self.offset, self.block, self.stride, self.fan_out) == \
            (other.size, other.offset, other.block, other.stride, other.fan_out)


@dataclasses.dataclass(frozen=True)
class _Channels:
    """The channel structure of one Keras tensor."""
    segments: tuple
    shape: tuple
    source: str  # innermost layer that produced the tensor

    @property
    def rank(self):
        return len(self.shape)

    @property
    def width(self):
        return self.shape[-1]


_MISSING = object()


def _is_relu_output(layer):
    if type(layer) is flavor_of(layer).layers.ReLU:
        return float(layer.negative_slope) == 0.0
    activation = getattr(layer, "activation", None)
    return activation is not None and flavor_of(layer).activations.serialize(activation) == "relu"


# --- the builder ----------------------------------------------------------------------------------

class _Builder:
    """Walks the Keras graph once, collecting facts per group; union-find merges coupled groups."""

    def __init__(self, model, exclude):
        self.model = model
        self.names = {}         # accepted name -> innermost layer name
        self.layers = {}        # innermost name -> layer object
        self._collect_names(model)
        unknown = [name for name in exclude if name not in self.names]
        if unknown:
            raise ValueError(f"exclude: {unknown} are not layers of model '{model.name}'. "
                             f"Valid names: {sorted(self.names)}.")
        self.exclude = set(exclude)
        self.parent = []         # union-find over provisional groups
        self.sizes = []
        self.facts = []          # (provisional group, kind, value) in walk order
        self.links = []          # (layer name, groups, channels, groups, channels): channels kept or removed together
        self.calls = {}          # weighted innermost layer name -> (inputs, outputs) of its first call
        self.call_counts = {}
        self._call = ((), {})

    def _collect_names(self, model):
        """Innermost and wrapper names; `check_model` has already rejected names two layers share."""
        for layer in model.layers:
            inner = unwrap_layer(layer)
            self.layers[inner.name] = inner
            self.names[inner.name] = inner.name
            self.names[layer.name] = inner.name
            if is_model(inner):
                self._collect_names(inner)
        if is_graph_model(model):  # Keras 3 operations (x + 3) are graph nodes but not layers
            for node in graph_nodes(model):
                if not is_layer(node.layer):
                    self.layers[node.layer.name] = node.layer
                    self.names[node.layer.name] = node.layer.name

    # union-find and facts
    def new_group(self, size):
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        return len(self.parent) - 1

    def find(self, group):
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def note(self, group, kind, value):
        self.facts.append((group, kind, value))

    def _add_slice(self, layer, weight, axis, role, segment, multiplier=1):
        placed = segment.scaled(multiplier)
        self.note(segment.group, "slice", ChannelSlice(layer.name, weight, axis, role, size=segment.size,
                                                       **placed.placement()))

    def _fresh_channels(self, shape, source, producer=None, reason=None):
        """A tensor carrying one new group (producer output, model input, output of an excluded layer)."""
        if shape[-1] is None:  # unknown width: nothing to prune or couple
            return _Channels((), tuple(shape), source)
        group = self.new_group(shape[-1])
        if producer is not None:
            self.note(group, "producer", producer)
        if reason is not None:
            self.note(group, "reason", reason)
        return _Channels((_Segment(group, shape[-1]),), tuple(shape), source)

    # --- what layer specs call (tfprune.registry) ---
    def slice(self, layer, weight, axis, role, x, multiplier=1):
        """Weight `weight` of `layer` holds x's channels along `axis` (``role`` 'out': it makes or scales
        them, 'in': it reads them), each channel owning `multiplier` consecutive positions. A weight set to
        None (``use_bias=False``) is skipped; a missing one or a length that does not match raises."""
        if getattr(layer, weight.split(".")[0], _MISSING) is None:
            return
        variable = resolve_weight(layer, weight)
        if not is_variable(variable):
            raise _unsupported(layer, f"its spec names weight '{weight}', which the layer does not have")
        rank = len(variable.shape)
        if not -rank <= axis < rank:
            raise _unsupported(layer, f"its spec slices axis {axis} of weight '{weight}' of shape "
                                      f"{tuple(variable.shape)}")
        axis %= rank
        if x.width is not None and variable.shape[axis] != x.width * multiplier:
            raise _unsupported(layer, f"its spec puts {x.width} channels (x{multiplier}) on axis {axis} of weight "
                                      f"'{weight}', which has length {variable.shape[axis]}")
        for segment in x.segments:
            self._add_slice(layer, weight, axis, role, segment, multiplier)

    def new_channels(self, shape, layer, reason=None):
        """Output channels `layer` makes (a new group); with `reason` they stay whole."""
        return self._fresh_channels(shape, layer.name, producer=layer.name, reason=reason)

    def same(self, x, shape, layer):
        """`layer`'s output carries x's channels at the same positions."""
        return _Channels(x.segments, tuple(shape), layer.name)

    def scaled(self, x, multiplier, shape, layer):
        """Output channels c*m .. c*m+m-1 come from input channel c (depthwise multiplier)."""
        return _Channels(tuple(s.scaled(multiplier) for s in x.segments), tuple(shape), layer.name)

    def concatenated(self, inputs, shape, layer):
        """The inputs' channels side by side along the last axis."""
        segments, shift = [], 0
        for tensor in inputs:
            if tensor.width is None:
                raise _unsupported(layer, "an input has an unknown number of channels")
            segments.extend(dataclasses.replace(s, offset=s.offset + shift) for s in tensor.segments)
            shift += tensor.width
        return _Channels(tuple(segments), tuple(shape), layer.name)

    def flattened(self, x, shape, layer):
        """Channels-last flatten repeats every channel position once per spatial position, width apart."""
        spatial = x.shape[1:-1]
        if not spatial or all(size == 1 for size in spatial):
            return self.same(x, shape, layer)
        if any(size is None for size in x.shape[1:]):
            raise _unsupported(layer, f"its input shape {x.shape} is not fully known")
        if any(segment.stride for segment in x.segments):
            raise _unsupported(layer, "its input was already flattened and reshaped")
        fan_out = int(np.prod(spatial))
        segments = tuple(dataclasses.replace(s, stride=x.width, fan_out=fan_out) for s in x.segments)
        return _Channels(segments, tuple(shape), layer.name)

    def couple(self, layer, tensors, problem="merges inputs with different channel structures"):
        """Tensors that must share one mask, position by position (element-wise merges).

        Equal widths split into groups differently (NASNet adds one 44-channel tensor to two concatenated
        22-channel ones) are linked channel by channel; `finish` then splits the groups into sub-ranges.
        """
        first = tensors[0]
        for other in tensors[1:]:
            if len(other.segments) == len(first.segments) and all(
                    a.same_layout(b) for a, b in zip(first.segments, other.segments)):
                for a, b in zip(first.segments, other.segments):
                    self.union(a.group, b.group)
            elif first.width is not None and other.width == first.width:
                self._link(layer, _owners(first), _owners(other))
            else:
                raise _unsupported(layer, f"it {problem}: {_describe(first)} vs {_describe(other)}")

    def blocks(self, layer, tensors, count):
        """Each tensor's channels in `count` equal consecutive blocks: block i of every tensor is kept or removed
        whole, together (a grouped convolution's group i reads input block i and makes output block i)."""
        lead_groups, lead_channels = _owners(tensors[0])
        leaders = np.arange(count) * (tensors[0].width // count)
        for tensor in tensors:
            lead = leaders[np.arange(tensor.width) // (tensor.width // count)]
            self._link(layer, _owners(tensor), (lead_groups[lead], lead_channels[lead]))

    def _link(self, layer, a, b):
        """Channel a[1][i] of group a[0][i] and channel b[1][i] of group b[0][i] are kept or removed together."""
        self.links.append((layer.name, *a, *b))

    def freeze(self, tensors, reason):
        """The channels of `tensors` stay whole, for `reason`."""
        for tensor in tensors:
            for segment in tensor.segments:
                self.note(segment.group, "reason", reason)

    def call_arguments(self):
        """(args, kwargs) of the call being visited (constants of TFOpLambda layers)."""
        return self._call

    # the walk
    def walk(self, model, bound_inputs=None):
        """Channel structure of `model`'s outputs; `bound_inputs` binds a nested model's inputs to outer tensors."""
        if not is_graph_model(model):
            if isinstance(model, (keras.Sequential, keras3.Sequential)):
                raise ValueError(f"Sequential model '{model.name}' is not built; start it with keras.Input(...) "
                                 f"or call model.build(input_shape) before building its channel graph.")
            raise ValueError(f"Model '{model.name}' ({type(model).__name__}) is subclassed and has no layer "
                             f"graph to analyse; rebuild it as a Sequential or functional model.")
        known = {}
        if bound_inputs is not None:
            if len(bound_inputs) != len(model.inputs):
                raise ValueError(f"Nested model '{model.name}' expects {len(model.inputs)} inputs, "
                                 f"got {len(bound_inputs)}.")
            known.update({id(tensor): channels for tensor, channels in zip(model.inputs, bound_inputs)})
        for node in graph_nodes(model):
            if node.is_input:
                if bound_inputs is None:
                    name = node.layer.name
                    channels = self._fresh_channels(node.outputs[0].shape, name,
                                                    reason=f"feeds from model input '{name}'")
                    self.note_carriers(node.layer, [channels])
                    known[id(node.outputs[0])] = channels
                continue
            inputs = [known[id(tensor)] for tensor in node.inputs]
            self._call = (node.args, node.kwargs)
            results = self.visit(node.layer, inputs, [tuple(t.shape) for t in node.outputs])
            known.update({id(tensor): channels for tensor, channels in zip(node.outputs, results)})
        return [known[id(tensor)] for tensor in model.outputs]

    def visit(self, layer, inputs, output_shapes):
        inner = unwrap_layer(layer)
        excluded = layer.name in self.exclude or inner.name in self.exclude
        if is_model(inner) and not excluded:
            results = self.walk(inner, inputs)
            if len(results) != len(output_shapes):
                raise _unsupported(inner, "its outputs do not match its call in the outer model")
            return results
        try:
            results = self.visit_known(inner, inputs, output_shapes)
        except UnsupportedLayerError:
            if not excluded:
                raise
            return self.opaque(inner, inputs, output_shapes)
        if excluded:
            self.freeze(inputs + results, f"excluded: {inner.name}")
        self.note_carriers(inner, results)
        return results

    def opaque(self, layer, inputs, output_shapes):
        """An excluded layer the graph cannot model: a wall, with fixed channels on both sides."""
        reason = f"excluded: {layer.name}"
        self.freeze(inputs, reason)
        return [self._fresh_channels(shape, layer.name, reason=reason) for shape in output_shapes]

    def note_carriers(self, layer, results):
        relu = _is_relu_output(layer)
        for tensor in results:
            for segment in tensor.segments:
                self.note(segment.group, "carrier", layer.name)
                self.note(segment.group, "carrier_slice",
                          ChannelSlice(layer.name, "output", tensor.rank - 1, "out", size=segment.size,
                                       **segment.placement()))
                if relu:
                    self.note(segment.group, "relu_carrier", layer.name)

    def visit_known(self, layer, inputs, output_shapes):
        spec = spec_for(layer)
        if spec is None:
            raise _unsupported(layer, "tfprune does not know how it maps input channels to output channels")
        handler = spec.map_channels
        if not getattr(layer, "weights", ()):  # Keras 3 operations hold none
            return handler(self, layer, inputs, output_shapes)
        first = self.calls.get(layer.name)
        self.call_counts[layer.name] = self.call_counts.get(layer.name, 0) + 1
        if first is None:
            results = handler(self, layer, inputs, output_shapes)
            self.calls[layer.name] = (inputs, results)
            return results
        first_inputs, first_results = first
        for now, then in zip(inputs, first_inputs):
            self.couple(layer, [now, then], "is called on inputs with different channel structures")
        return [_Channels(then.segments, tuple(shape), layer.name)
                for shape, then in zip(output_shapes, first_results)]

    def finish(self, outputs):
        for tensor in outputs:
            self.freeze([tensor], f"reaches model output via layer '{tensor.source}'")
        for name, count in self.call_counts.items():
            if count > 1:
                inputs, results = self.calls[name]
                layer = self.layers[name]
                self.freeze(inputs + results, f"layer '{name}' ({type(layer).__name__}) is shared "
                                            f"(called {count} times)")
        roots = sorted({self.find(group) for group in range(len(self.parent))})
        placements, sizes, reasons = self._parts(roots)
        groups = {key: ChannelGroup(id=index, size=sizes[key], slices=[], producers=[], carriers=[], prunable=True,
                                    reason="", carrier_slices=[], relu_carriers=[])
                  for index, key in enumerate(sorted(sizes))}
        lists = {"slice": "slices", "producer": "producers", "carrier": "carriers",
                 "carrier_slice": "carrier_slices", "relu_carrier": "relu_carriers"}
        for provisional, kind, value in self.facts:
            for key, start, per_channel in placements[self.find(provisional)]:
                if isinstance(value, ChannelSlice):  # the class's channels start + c*n .. as channel c of the group
                    placed = dataclasses.replace(value, offset=value.offset + start * value.block,
                                                 block=value.block * per_channel, size=sizes[key])
                else:
                    placed = value
                target = reasons[key] if kind == "reason" else getattr(groups[key], lists[kind])
                if placed not in target:
                    target.append(placed)
        for key, group in groups.items():
            group.reason = "; ".join(reasons[key])
            group.prunable = not reasons[key]
        return ChannelGraph(list(groups.values()), dict(self.names))

    def _parts(self, roots):
        """How the union classes become channel groups: ``{root: [(group key, start, n)]}`` (channel c of the
        group is the class's channels start + c*n .. start + c*n + n-1), ``{group key: size}`` and
        ``{group key: reasons}``; keys sort in group order.

        A class no link touches is one group. Links split the classes they touch into units (channels linked
        together, kept or removed as one); the units that meet the same classes, each in as many channels, form
        one group. A ChannelSlice can place it where every class's channels run consecutively through its
        units (a grouped convolution's blocks, NASNet's sub-ranges); where one cannot, the linked classes stay
        whole and unprunable, as one keep vector per class could not follow the links exactly.
        """
        placements = {root: [((root, 0), 0, 1)] for root in roots}
        sizes = {(root, 0): self.sizes[root] for root in roots}
        reasons = {key: [] for key in sizes}
        if not self.links:
            return placements, sizes, reasons
        root_of = np.array([self.find(group) for group in range(len(self.parent))])
        a_group, a_channel, b_group, b_channel = (np.concatenate(column) for column in list(zip(*self.links))[1:])
        half = len(a_group)
        touched, classes = np.unique(root_of[np.concatenate([a_group, b_group])], return_inverse=True)
        widths = np.array([self.sizes[root] for root in touched])
        base = np.cumsum(widths) - widths
        ends = base[classes] + np.concatenate([a_channel, b_channel])
        units = _components(widths.sum(), ends[:half], ends[half:])  # label: the unit's first channel
        owner = np.repeat(np.arange(len(touched)), widths)
        local = np.arange(widths.sum()) - base[owner]
        pairs, counts = np.unique(units * len(touched) + owner, return_counts=True)
        meets = {}  # unit -> [(class, channels)], units in order of their first channel
        for unit, cls, count in zip((pairs // len(touched)).tolist(), (pairs % len(touched)).tolist(),
                                    counts.tolist()):
            meets.setdefault(unit, []).append((cls, count))
        numbers, members = {}, []  # signature -> part number; units per part
        part_of, rank_of = np.zeros_like(units), np.zeros_like(units)
        for unit, signature in meets.items():
            number = numbers.setdefault(tuple(signature), len(numbers))
            if number == len(members):
                members.append(0)
            part_of[unit], rank_of[unit] = number, members[number]
            members[number] += 1
        order = np.lexsort((local, rank_of[units], part_of[units], owner))
        owner, part, local = owner[order], part_of[units][order], local[order]
        same = (owner[1:] == owner[:-1]) & (part[1:] == part[:-1])
        broken = np.unique(part[1:][same & (np.diff(local) != 1)])
        components = _components(len(touched), classes[:half], classes[half:])
        signatures = list(numbers)
        bad = np.isin(components, [components[cls] for number in broken for cls, _ in signatures[number]])
        runs = np.flatnonzero(np.concatenate([[True], ~same]))
        starts = {(cls, number): start for cls, number, start in zip(owner[runs].tolist(), part[runs].tolist(),
                                                                      local[runs].tolist())}
        for cls in np.flatnonzero(~bad).tolist():
            del sizes[(int(touched[cls]), 0)], reasons[(int(touched[cls]), 0)]
            placements[int(touched[cls])] = []
        for (cls, number), start in starts.items():
            if bad[cls]:
                continue
            first = signatures[number][0][0]
            key = (int(touched[first]), starts[(first, number)])
            placements[int(touched[cls])].append((key, start, dict(signatures[number])[cls]))
            sizes[key], reasons[key] = members[number], []
        entry = np.repeat(np.arange(len(self.links)), [len(link[1]) for link in self.links])
        for cls in np.flatnonzero(bad).tolist():
            layers = sorted({self.links[i][0] for i in entry[components[classes[:half]] == components[cls]]})
            reasons[(int(touched[cls]), 0)].append(
                f"channels linked by {', '.join(repr(name) for name in layers)} in a pattern no channel group can "
                f"follow")
        return placements, sizes, reasons


def _describe(tensor):
    return "[" + ", ".join(f"{s.size} channels at offset {s.offset}" for s in tensor.segments) + "]"


def _owners(tensor):
    """(groups, channels): the provisional group and channel at each position of the tensor's last axis."""
    groups, channels = np.empty(tensor.width, np.int64), np.empty(tensor.width, np.int64)
    for segment in tensor.segments:
        positions = ChannelSlice("", "output", 0, "", **segment.placement())._positions(np.arange(segment.size))
        groups[positions] = segment.group
        channels[positions] = np.arange(segment.size)[:, None]
    return groups, channels


def _components(count, a, b):
    """For each of `count` nodes, the smallest node joined to it by the edges (a[i], b[i])."""
    labels = np.arange(count)
    while True:
        joined = labels.copy()
        low = np.minimum(labels[a], labels[b])
        np.minimum.at(joined, a, low)
        np.minimum.at(joined, b, low)
        joined = joined[joined]
        if np.array_equal(joined, labels):
            return labels
        labels = joined


def build_channel_graph(model, exclude=()):
    """The channel groups of a Sequential or functional model (Keras 3 or tf_keras).

    Args:
      model: built Sequential or functional model, channels_last.
      exclude: layer names (wrapper or inner names) whose groups stay whole; an unsupported layer that is
        excluded becomes a wall with unprunable channels on both sides instead of an error.

    Returns:
      a `ChannelGraph`. Example: ``[g.size for g in build_channel_graph(model).prunable_groups()]``.

    Raises:
      UnsupportedLayerError: a layer whose channel mapping is unknown (it names the layer and the fix).
      ValueError: unknown `exclude` names, unbuilt or subclassed models, ambiguous layer names.
      TypeError: `model` is not a Keras model.
    """
    check_model(model)
    if isinstance(exclude, str):
        exclude = [exclude]
    builder = _Builder(model, exclude)
    outputs = builder.walk(model)
    return builder.finish(outputs)
