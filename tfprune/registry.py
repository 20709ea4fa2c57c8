"""The one layer registry: everything tfprune knows about a layer type, as one `LayerSpec` per type.

The channel graph asks a layer's spec how it maps input channels to output channels; `shrink` asks which
config key to narrow and whether a zeroed channel stays zero through it; the counts ask its MAC formula;
weight pruning asks which kernels it masks. The built-in Keras layers are registered below through
`register_layer`, the same call a user makes for a custom layer, so adding a type means writing one spec.

Lookups match the exact class: a subclass may change `call`, so it is never assumed to behave like its base.
A layer with no spec raises `UnsupportedLayerError` naming the two ways out (``exclude=``, `register_layer`).

A custom per-channel-scale layer, for example, needs one line::

    @tfprune.register_layer(tfprune.registry.channel_wise(scales=["scale"], width_key="channels"))
    class ChannelScale(keras.layers.Layer):   # y = x * scale, scale of shape (channels,)
        ...

`map_channels` functions receive the graph builder (`tfprune.graph` documents its methods: `same`, `slice`,
`new_channels`, `couple`, `blocks`, `freeze`, `scaled`, `concatenated`, `flattened`, `call_arguments`).
"""
import dataclasses
import math
from typing import Callable, Optional

import numpy as np

from tfprune._keras import (FLAVORS, KERAS3_BINARY_OPS, KERAS3_GET_ITEM, KERAS3_UNARY_OPS, TFOpLambda,
                            applications,
                            flavor_of, is_symbolic, keras, keras3, tf)

__all__ = ["LayerSpec", "UnsupportedLayerError", "register_layer", "spec_for", "producer", "channel_wise",
           "merge", "passthrough", "registered_types", "resolve_weight"]


class UnsupportedLayerError(ValueError):
    """A layer whose effect on channels the graph cannot model; the message names it and the fix."""


def unsupported(layer, why):
    return UnsupportedLayerError(
        f"Layer '{layer.name}' ({type(layer).__name__}) is not supported by the channel graph: {why}. "
        f"Pass exclude=['{layer.name}'] to leave the channels around it unpruned, or describe the layer to "
        f"tfprune with tfprune.register_layer({type(layer).__name__}, spec) (see tfprune.registry).")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What tfprune knows about one layer type; its fields (all but `map_channels` optional) are also its
    attributes. Build one with `producer`, `channel_wise`, `passthrough` or `merge` where they fit.

    Args:
      map_channels: ``(graph, layer, inputs, output_shapes) -> outputs``: the channel structure of each output
        given each input's (the graph handler). Slices registered here are what masking and `shrink` cut.
      width_key: config key that sets the output width (``"units"``, ``"filters"``), set by `shrink` to the
        number of channels kept.
      narrow: ``(layer, config, cuts) -> config`` for layers where more than one key changes; `cuts` maps
        ``weight -> {axis: keep vector}`` (``"output"`` for the layer's output channels).
      silent: ``(layer, zero) -> bool or per-channel bool array``: whether a channel stays exactly zero
        through this layer given ``zero[weight]``, the channels whose entries of that (output-side) weight are
        all zero. `shrink` removes a channel only when every layer on its path says so (or no one reads it).
      macs: ``(layer, input_shape, output_shape) -> int``: multiply-accumulates for one example.
      prunable_kernels: weight attributes that weight pruning, PaI and IMP mask (TFMOT's rule).
      masks_activations: channel keeps of ``kernel`` may act on the input and pre-activation output instead of
        the kernel (true for Dense and channels-last convolutions: the same result for less work).
      output_units: ``(layer, value) -> (entries, units)`` array whose all-zero columns are dead output units,
        for per-layer tables; ``value(attribute)`` is that weight's (masked) array.
      shrink_warning: why removing channels here changes outputs even when they are zero (said by `shrink`
        unless tfprune's mask computed the layer over the kept channels, see `masked_call`).
      masked_call: ``(layer, inputs, keep) -> outputs``: the layer's call with its channels masked by `keep`,
        for layers whose result depends on how many channels there are (statistics over channels), so a
        masked model computes what the shrunk one will.
    """
    map_channels: Callable
    width_key: Optional[str] = None
    narrow: Optional[Callable] = None
    silent: Optional[Callable] = None
    macs: Optional[Callable] = None
    prunable_kernels: tuple = ()
    masks_activations: bool = False
    output_units: Optional[Callable] = None
    shrink_warning: str = ""
    masked_call: Optional[Callable] = None

    def narrowed_config(self, layer, cuts):
        """The config of `layer` narrowed to the channels `cuts` keeps, from which `shrink` rebuilds the layer.

        Args:
          layer: a layer of this spec's type.
          cuts: ``{weight: {axis: keep vector}}``, ``"output"`` for the layer's output channels.

        Returns:
          a new config dict.
        """
        config = layer.get_config()
        if self.width_key is not None and "output" in cuts:
            config[self.width_key] = int(next(iter(cuts["output"].values())).sum())
        return self.narrow(layer, config, cuts) if self.narrow is not None else config

    def is_silent(self, layer, zero):
        """Whether zeroed channels stay zero through `layer`, so `shrink` may remove them without changing
        outputs; without a `silent` function, whether the layer's activation maps 0 to 0.

        Args:
          layer: a layer of this spec's type.
          zero: ``{weight: per-channel bool}``, the channels whose entries of that weight are all zero.

        Returns:
          a bool, or a per-channel bool array.
        """
        if self.silent is not None:
            return self.silent(layer, zero)
        return maps_zero_to_zero(layer)


_REGISTRY = {}


def register_layer(layer_class, spec=None):
    """Describe `layer_class` to tfprune (graph, shrink, counts, weight pruning); returns the class.

    Also a decorator: ``@register_layer(spec)`` above the class. Registering a class again replaces its spec.

    Args:
      layer_class: a tf_keras Layer or Keras 3 Operation class (or, used as a decorator, the `LayerSpec`).
      spec: the `LayerSpec` for it.

    Returns:
      `layer_class`; used as ``@register_layer(spec)``, a decorator that registers and returns the class.

    Raises:
      TypeError: `layer_class` is not a Keras layer class, or `spec` is not a `LayerSpec`.
    """
    if spec is None and isinstance(layer_class, LayerSpec):
        return lambda cls: register_layer(cls, layer_class)
    if not (isinstance(layer_class, type) and issubclass(layer_class, (keras.layers.Layer, keras3.Operation))):
        raise TypeError(f"register_layer: `layer_class` must be a Keras layer class (tf_keras or Keras 3), got "
                        f"{layer_class!r}.")
    if not isinstance(spec, LayerSpec):
        raise TypeError(f"register_layer({layer_class.__name__}, spec): `spec` must be a tfprune.registry.LayerSpec "
                        f"(e.g. channel_wise(...), producer(...)), got {type(spec).__name__}.")
    _REGISTRY[layer_class] = spec
    return layer_class


def resolve_weight(layer, path):
    """The weight at attribute `path` of `layer`; dotted paths reach sublayers (``"_query_dense.kernel"``), so
    specs can name weights of layers built from others (attention).

    Args:
      layer: an innermost layer.
      path: an attribute name, or dotted names.

    Returns:
      the attribute's value (a variable, for a weight path), or None where an attribute on the path is missing.
    """
    owner = layer
    for name in path.split("."):
        owner = getattr(owner, name, None)
    return owner


def spec_for(layer):
    """The spec registered for `layer`'s exact class, or None; subclasses are not matched, as they may change
    `call`.

    Args:
      layer: a layer (or Keras 3 operation) instance.

    Returns:
      its `LayerSpec`, or None.
    """
    if type(layer) not in _REGISTRY and type(layer).__module__.startswith("keras_hub."):
        from tfprune import layers_keras_hub  # noqa: F401  (registers keras_hub's layers; imported on first use)
    return _REGISTRY.get(type(layer))


def registered_types():
    """The layer classes that have a spec, e.g. to list what the channel graph supports.

    Returns:
      a tuple of classes, in registration order.
    """
    return tuple(_REGISTRY)


# --- shared facts ---------------------------------------------------------------------------------

_ZERO = np.zeros((1, 1), dtype=np.float32)

_ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "sigmoid", "hard_sigmoid", "tanh", "softplus", "softsign",
    "swish", "silu", "gelu", "mish", "exponential", "leaky_relu", "hard_swish", "hard_silu"})
_CHANNEL_NORMALIZING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


def maps_zero_to_zero(layer):
    """Whether the layer's channel-wise activation keeps a zero channel at zero (checked numerically)."""
    activation = getattr(layer, "activation", None)
    if callable(activation):
        return not np.any(np.asarray(activation(_ZERO)))
    return True


def single_input(layer, inputs):
    if len(inputs) != 1:
        raise unsupported(layer, f"it takes {len(inputs)} tensor inputs; the graph handles one")
    return inputs[0]


def check_channels_last(layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise unsupported(layer, f"data_format='{layer.data_format}'; the channel graph needs channels_last")


def check_activation(graph, layer, result):
    """Channel-wise activations pass; softmax over channels freezes the group; anything else raises."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return
    name = flavor_of(layer).activations.serialize(activation)
    if not isinstance(name, str):
        raise unsupported(layer, f"its activation {getattr(activation, '__name__', activation)!r} is not a "
                                 f"built-in Keras activation, so it may mix channels")
    if name in _CHANNEL_NORMALIZING_ACTIVATIONS:
        graph.freeze([result], f"normalized across channels by '{layer.name}' ({type(layer).__name__})")
    elif name not in _ELEMENTWISE_ACTIVATIONS:
        raise unsupported(layer, f"activation '{name}' is not known to act on each channel separately")


def _all_zero(*weights):
    """A `silent` rule: the channel is zero when these weights are zero for it (and the activation keeps 0)."""
    def silent(layer, zero):
        result = maps_zero_to_zero(layer)
        for weight in weights:
            result = result & zero.get(weight, True)
        return result
    return silent


def normalized_axes(axes, rank):
    axes = [axes] if isinstance(axes, int) else list(axes)
    return sorted(axis % rank for axis in axes)


# --- spec factories -------------------------------------------------------------------------------

def producer(out_weights, in_weights, width_key, macs=None, prunable_kernels=("kernel",),
             masks_activations=False, output_units=None):
    """A layer that reads its input's channels through `in_weights` and starts new ones (Dense, Conv).

    `out_weights`/`in_weights` are ``(attribute, axis)`` pairs (``(attribute, axis, multiplier)`` when each
    input channel owns `multiplier` consecutive positions); negative axes count from the weight's last axis.
    Example: ``producer([("kernel", -1), ("bias", 0)], [("kernel", -2)], "filters", macs=...)`` for a Conv.

    Args:
      out_weights: where the new channels lie in the layer's weights.
      in_weights: where the input's channels lie in the layer's weights.
      width_key: the config key that sets the output width (``"units"``, ``"filters"``).
      macs: as in `LayerSpec`.
      prunable_kernels: as in `LayerSpec`.
      masks_activations: as in `LayerSpec`.
      output_units: as in `LayerSpec`.

    Returns:
      a `LayerSpec`; a zeroed channel counts as silent when its `out_weights` entries are zero and the
      activation keeps 0.

    Raises:
      (when a model's channel graph is built) UnsupportedLayerError: the layer has several tensor inputs,
        channels_first data, an input of unknown width, or an activation that may mix channels.
    """
    def map_channels(graph, layer, inputs, output_shapes):
        x = single_input(layer, inputs)
        check_channels_last(layer)
        if x.width is None:
            raise unsupported(layer, "its input has an unknown number of channels")
        for weight, axis, *multiplier in in_weights:
            graph.slice(layer, weight, axis, "in", x, *multiplier)
        result = graph.new_channels(output_shapes[0], layer)
        for weight, axis in out_weights:
            graph.slice(layer, weight, axis, "out", result)
        check_activation(graph, layer, result)
        return [result]

    return LayerSpec(map_channels, width_key=width_key, silent=_all_zero(*(w for w, _ in out_weights)),
                     macs=macs, prunable_kernels=tuple(prunable_kernels), masks_activations=masks_activations,
                     output_units=output_units)


def channel_wise(scales=(), shifts=(), width_key=None, keeps_zero=None, narrow=None, check=None):
    """A layer whose output channel c depends only on input channel c: its per-channel weights (their last
    axis) follow the channel.

    Args:
      scales: weights that multiply a channel (a zero channel stays zero whatever they hold).
      shifts: weights that can make a zero channel non-zero (it stays zero only where they are zero).
      width_key: config key holding the channel count, if any.
      keeps_zero: ``layer -> bool`` for zero-keeping that the weights do not show (default: its activation).
      narrow: as in `LayerSpec`.
      check: ``(graph, layer, x)`` extra validation before mapping (raise `unsupported` or call `graph.freeze`).

    Returns:
      a `LayerSpec`.

    Raises:
      (when a model's channel graph is built) UnsupportedLayerError: the layer has several tensor inputs,
        channels_first data or an activation that may mix channels; and whatever `check` raises.
    """
    def map_channels(graph, layer, inputs, output_shapes):
        x = single_input(layer, inputs)
        check_channels_last(layer)
        if check is not None:
            check(graph, layer, x)
        for weight in tuple(scales) + tuple(shifts):
            graph.slice(layer, weight, -1, "out", x)
        result = graph.same(x, output_shapes[0], layer)
        check_activation(graph, layer, result)
        return [result]

    def silent(layer, zero):
        result = maps_zero_to_zero(layer) if keeps_zero is None else keeps_zero(layer)
        for weight in shifts:
            result = result & zero.get(weight, True)
        return result

    return LayerSpec(map_channels, width_key=width_key, narrow=narrow, silent=silent)


def passthrough(keeps_zero=None):
    """A layer without weights that maps channel c to channel c (pooling, dropout, padding, ...).

    Args:
      keeps_zero: ``layer -> bool``, whether a zero channel stays zero (default: the layer's activation, if
        any, maps 0 to 0).

    Returns:
      a `LayerSpec`.

    Raises:
      (when a model's channel graph is built) UnsupportedLayerError: as `channel_wise`.
    """
    return channel_wise(keeps_zero=keeps_zero)


def merge(keeps_zero=None):
    """An element-wise combination of its inputs: channel c of every input meets channel c of the others, so
    all inputs share one mask (Add, Multiply, ...).

    Args:
      keeps_zero: ``layer -> bool``, whether channels that are zero in the inputs stay zero (default: the
        layer's activation, if any, maps 0 to 0).

    Returns:
      a `LayerSpec`.

    Raises:
      (when a model's channel graph is built) UnsupportedLayerError: inputs of different (or unknown) widths
        whose channels are split into groups differently.
    """
    def map_channels(graph, layer, inputs, output_shapes):
        graph.couple(layer, inputs, "merges inputs with different channel structures")
        return [graph.same(inputs[0], output_shapes[0], layer)]

    return LayerSpec(map_channels, silent=None if keeps_zero is None else lambda layer, zero: keeps_zero(layer))


# --- MAC formulas and unit views ------------------------------------------------------------------

def _dot_macs(kernel="kernel"):
    """Every output value is one dot product over the kernel's input extent."""
    return lambda layer, input_shape, output_shape: (
        math.prod(output_shape[1:]) * math.prod(getattr(layer, kernel).shape[:-1]))


def _transposed_macs(layer, input_shape, output_shape):
    """Every input value is scattered through the whole (spatial x filters) kernel."""
    return math.prod(input_shape[1:]) * math.prod(layer.kernel.shape[:-1])


def _depthwise_macs(layer, input_shape, output_shape):
    """Each output value sums one spatial window of one input channel."""
    return math.prod(output_shape[1:]) * math.prod(resolve_weight(layer, _depthwise_kernel(layer)).shape[:-2])


def _separable_macs(layer, input_shape, output_shape):
    positions = math.prod(output_shape[1:]) // layer.filters
    return positions * (math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape))


def _units_on(attribute, axis=-1):
    def view(layer, value):
        array = value(attribute)
        return np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
    return view


def _depthwise_units(layer, value):
    """Output channel c*multiplier + m comes from kernel[..., c, m]."""
    kernel = value(_depthwise_kernel(layer))
    return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])


# --- built-in layers ------------------------------------------------------------------------------

def _depthwise_kernel(layer):
    """tf_keras names a DepthwiseConv's kernel `depthwise_kernel`, Keras 3 `kernel`."""
    return "depthwise_kernel" if resolve_weight(layer, "depthwise_kernel") is not None else "kernel"



def _dense_spec():
    return producer([("kernel", -1), ("bias", 0)], [("kernel", 0)], "units", macs=_dot_macs(),
                    masks_activations=True, output_units=_units_on("kernel"))


def _conv(graph, layer, inputs, output_shapes):
    """Plain and grouped convolutions. Conv group i reads only input block i and makes only output block i, so a
    grouped convolution prunes whole conv groups: each input block with its output block (with groups == input
    channels, single input channels, as a depthwise convolution)."""
    if getattr(layer, "groups", 1) == 1:
        return _CONV_SPEC.map_channels(graph, layer, inputs, output_shapes)
    [result] = _GROUPED_OUTPUTS.map_channels(graph, layer, inputs, output_shapes)
    graph.blocks(layer, [inputs[0], result], layer.groups)
    return [result]


def _narrow_grouped(layer, config, cuts):
    """Whole conv groups go, so the filters per group stay and `groups` counts the groups kept."""
    if config.get("groups", 1) > 1 and "output" in cuts:
        config["groups"] = config["filters"] // (layer.filters // layer.groups)
    return config


_CONV_SPEC = producer([("kernel", -1), ("bias", 0)], [("kernel", -2)], "filters", macs=_dot_macs(),
                      masks_activations=True, output_units=_units_on("kernel"))
# A grouped kernel's input axis holds one block, shared by all groups: the blocks link the input instead.
_GROUPED_OUTPUTS = producer([("kernel", -1), ("bias", 0)], [], "filters")


def _transposed_spec():
    """Keras stores transposed kernels as (..., out, in): the output axis comes first."""
    return producer([("kernel", -2), ("bias", 0)], [("kernel", -1)], "filters", macs=_transposed_macs,
                    output_units=_units_on("kernel", -2))


def _separable(graph, layer, inputs, output_shapes):
    """The depthwise step repeats each input channel depth_multiplier times before the pointwise kernel."""
    spec = producer([("pointwise_kernel", -1), ("bias", 0)],
                    [("depthwise_kernel", -2), ("pointwise_kernel", -2, layer.depth_multiplier)], "filters")
    return spec.map_channels(graph, layer, inputs, output_shapes)


def _embedding(graph, layer, inputs, output_shapes):
    """Token ids are not channels: whatever feeds them stays whole."""
    x = single_input(layer, inputs)
    graph.freeze([x], f"carries token ids into '{layer.name}' (Embedding)")
    result = graph.new_channels(output_shapes[0], layer)
    graph.slice(layer, "embeddings", 1, "out", result)
    return [result]


def _reversible_embedding(graph, layer, inputs, output_shapes):
    """An Embedding; called with ``reverse=True`` it is a Dense onto the vocabulary instead."""
    args, kwargs = graph.call_arguments()
    if kwargs.get("reverse") or len(args) > 1 and args[1]:
        raise unsupported(layer, "called with reverse=True it projects onto the vocabulary")
    return _embedding(graph, layer, inputs, output_shapes)


def _get_item(graph, op, inputs, output_shapes):
    """``x[:, 0, :]`` and the like: indexing that leaves the channel axis whole keeps the channels."""
    x = single_input(op, inputs)
    key = graph.call_arguments()[0][1]
    key = key if isinstance(key, tuple) else (key,)
    if len(key) != len(x.shape) or key[-1] != slice(None) or any(k is None or k is Ellipsis for k in key):
        raise unsupported(op, f"its index {key!r} does not leave every axis in place with the channel axis whole")
    return [graph.same(x, output_shapes[0], op)]


def _depthwise(graph, layer, inputs, output_shapes):
    """Channel c's filters become outputs c*m .. c*m+m-1, so positions downstream scale by m."""
    x = single_input(layer, inputs)
    check_channels_last(layer)
    multiplier = layer.depth_multiplier
    graph.slice(layer, _depthwise_kernel(layer), -2, "out", x)
    graph.slice(layer, "bias", 0, "out", x, multiplier)
    result = graph.scaled(x, multiplier, output_shapes[0], layer)
    check_activation(graph, layer, result)
    return [result]


def _check_last_axis(graph, layer, x):
    if normalized_axes(layer.axis, x.rank) != [x.rank - 1]:
        raise unsupported(layer, f"it normalizes axis {list(layer.axis) if not isinstance(layer.axis, int) else layer.axis}; "
                                 f"the channel graph needs the last axis (channels_last, axis=-1)")


def _batch_normalization(graph, layer, inputs, output_shapes):
    renorm = ("moving_stddev", "renorm_mean", "renorm_stddev") if getattr(layer, "renorm", False) else ()
    spec = channel_wise(scales=("gamma", "beta", "moving_mean", "moving_variance") + renorm,
                        check=_check_last_axis)
    return spec.map_channels(graph, layer, inputs, output_shapes)


def _bn_silent(layer, zero):
    """Beta = 0 and (gamma = 0 or moving mean = 0): zero in inference and in training."""
    return zero.get("beta", True) & (zero.get("gamma", False) | zero.get("moving_mean", False))


def _layer_norm_over_kept(layer, inputs, keep):
    """LayerNormalization over the last axis, with mean and variance taken over the kept channels only."""
    keep = tf.cast(keep, inputs.dtype)
    count = tf.reduce_sum(keep)
    mean = tf.reduce_sum(inputs * keep, axis=-1, keepdims=True) / count
    variance = tf.reduce_sum(keep * tf.square(inputs - mean), axis=-1, keepdims=True) / count
    outputs = (inputs - mean) * tf.math.rsqrt(variance + layer.epsilon)
    if layer.gamma is not None:
        outputs = outputs * tf.cast(layer.gamma, inputs.dtype)
    if layer.beta is not None:
        outputs = outputs + tf.cast(layer.beta, inputs.dtype)
    return outputs * keep


def _prelu(graph, layer, inputs, output_shapes):
    """PReLU's slopes follow the channel unless they are shared over the channel axis."""
    x = single_input(layer, inputs)
    if layer.alpha.shape[-1] == x.width:
        graph.slice(layer, "alpha", -1, "out", x)
    return [graph.same(x, output_shapes[0], layer)]


def _softmax(graph, layer, inputs, output_shapes):
    """Over the channel axis a mask cannot match removal (the sum changes), so the groups stay whole."""
    x = single_input(layer, inputs)
    result = graph.same(x, output_shapes[0], layer)
    if x.rank - 1 in normalized_axes(layer.axis, x.rank):
        graph.freeze([result], f"normalized across channels by '{layer.name}' (Softmax)")
    return [result]


def _flatten(graph, layer, inputs, output_shapes):
    x = single_input(layer, inputs)
    check_channels_last(layer)
    return [graph.flattened(x, output_shapes[0], layer)]


def _reshape(graph, layer, inputs, output_shapes):
    x = single_input(layer, inputs)
    if x.width is None or output_shapes[0][-1] != x.width:
        raise unsupported(layer, f"it changes the last (channel) axis: {x.shape} -> {output_shapes[0]}")
    return [graph.same(x, output_shapes[0], layer)]


def _narrow_reshape(layer, config, cuts):
    if "output" in cuts and config["target_shape"][-1] != -1:
        width = int(next(iter(cuts["output"].values())).sum())
        config["target_shape"] = tuple(config["target_shape"][:-1]) + (width,)
    return config


def _permute(graph, layer, inputs, output_shapes):
    x = single_input(layer, inputs)
    if layer.dims[-1] != x.rank - 1:
        raise unsupported(layer, f"dims={tuple(layer.dims)} moves the last (channel) axis")
    return [graph.same(x, output_shapes[0], layer)]


def _concatenate(graph, layer, inputs, output_shapes):
    """Along the channel axis the inputs' channels line up, shifted; along any other axis it is a merge."""
    rank = inputs[0].rank
    if layer.axis % rank != rank - 1:
        return merge().map_channels(graph, layer, inputs, output_shapes)
    return [graph.concatenated(inputs, output_shapes[0], layer)]


def _relu_keeps_zero(layer):
    return not np.any(np.asarray(layer(_ZERO)))


def _frozen_if_per_channel(*config_keys):
    """A check: per-channel constants held in the config would have to be narrowed too; keep those channels."""
    def check(graph, layer, x):
        config = layer.get_config()
        if any(np.size(config.get(key)) > 1 for key in config_keys if config.get(key) is not None):
            graph.freeze([x], f"per-channel constants in the config of '{layer.name}' ({type(layer).__name__})")
    return check


def _rescaling_keeps_zero(layer):
    return not np.any(np.asarray(layer.offset))


_SPATIAL = (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "Identity")


# TFOpLambda layers that tf_keras makes from Python operators and tf.* calls on Keras tensors.
_TF_ELEMENTWISE_UNARY = frozenset({
    "nn.relu", "nn.relu6", "nn.elu", "nn.selu", "nn.silu", "nn.swish", "nn.gelu", "nn.leaky_relu",
    "math.sigmoid", "nn.sigmoid", "math.tanh", "nn.tanh", "math.negative", "math.abs", "math.square",
    "math.sqrt", "math.exp", "math.softplus", "identity", "cast"})
_TF_ELEMENTWISE_BINARY = frozenset({
    "__operators__.add", "__operators__.radd", "math.add", "__operators__.sub", "math.subtract",
    "math.multiply", "__operators__.mul", "math.truediv", "math.divide", "math.maximum", "math.minimum"})


def _constants(graph):
    """The call's non-tensor arguments that take part in the computation (names and dtypes excluded)."""
    args, kwargs = graph.call_arguments()
    values = list(args) + [value for key, value in kwargs.items() if key not in ("name", "dtype")]
    return [value for value in tf.nest.flatten(values) if not is_symbolic(value)]


def _tf_op(graph, layer, inputs, output_shapes):
    """TensorFlow ops tf_keras wraps in TFOpLambda: element-wise ones only; anything else raises."""
    if layer.symbol not in _TF_ELEMENTWISE_UNARY | _TF_ELEMENTWISE_BINARY:
        raise unsupported(layer, f"tf.{layer.symbol} is not an element-wise op the channel graph knows")
    return _elementwise_op(graph, layer, f"tf.{layer.symbol}", inputs, output_shapes)


def _elementwise_op(graph, layer, symbol, inputs, output_shapes):
    """With one tensor and constants an element-wise op keeps channels (a constant that varies along the
    channels freezes them); between tensors it couples them like Add."""
    if len(inputs) > 1:
        return merge().map_channels(graph, layer, inputs, output_shapes)
    x = inputs[0]
    result = graph.same(x, output_shapes[0], layer)
    if output_shapes[0][-1] != x.width:
        raise unsupported(layer, f"{symbol} broadcasts the channel axis: {x.shape} -> {output_shapes[0]}")
    if any(np.ndim(value) and np.shape(value)[-1] != 1 for value in _constants(graph)):
        graph.freeze([result], f"'{layer.name}' ({symbol}) applies a constant that varies along the channels")
    return [result]


def _tf_op_keeps_zero(layer, zero):
    """Evaluate the op with zeros in place of its tensors: 0 + 3 is not 0, 0 * 3 is."""
    node = layer.inbound_nodes[0]
    args, kwargs = tf.nest.map_structure(
        lambda value: tf.zeros([1]) if is_symbolic(value) else value,
        (node.call_args, node.call_kwargs))
    return not np.any(np.asarray(layer.function(*args, **kwargs)))


def _keras3_op(graph, op, inputs, output_shapes):
    """Keras 3 element-wise operations (`x + 3`, `x * y`, `keras.ops.relu(x)`): as `_tf_op`."""
    return _elementwise_op(graph, op, type(op).__name__, inputs, output_shapes)


def _keras3_op_keeps_zero(op, zero):
    arguments = op._inbound_nodes[0].arguments
    args, kwargs = tf.nest.map_structure(lambda value: tf.zeros([1]) if is_symbolic(value) else value,
                                         (arguments.args, arguments.kwargs))
    return not np.any(np.asarray(op.call(*args, **kwargs)))


def _classes(flavor, *names):
    """The classes of `flavor.layers` with these names (a few exist in one flavor only)."""
    return [getattr(flavor.layers, name) for name in names if hasattr(flavor.layers, name)]


def _register_builtins(flavor):
    _L = flavor.layers
    for cls in (_L.Conv1D, _L.Conv2D, _L.Conv3D):
        register_layer(cls, dataclasses.replace(_CONV_SPEC, map_channels=_conv, narrow=_narrow_grouped))
    register_layer(_L.Dense, _dense_spec())
    for cls in (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose):
        register_layer(cls, _transposed_spec())
    for cls in (_L.SeparableConv1D, _L.SeparableConv2D):
        register_layer(cls, LayerSpec(_separable, width_key="filters", silent=_all_zero("pointwise_kernel", "bias"),
                                      macs=_separable_macs, prunable_kernels=("pointwise_kernel",),
                                      output_units=_units_on("pointwise_kernel")))
    for cls in (_L.DepthwiseConv1D, _L.DepthwiseConv2D):
        # The depthwise kernel only scales a channel's own (zero) input, so only the bias can make it non-zero.
        register_layer(cls, LayerSpec(_depthwise, silent=_all_zero("bias"), macs=_depthwise_macs,
                                      output_units=_depthwise_units))
    register_layer(_L.Embedding, LayerSpec(_embedding, width_key="output_dim", prunable_kernels=("embeddings",),
                                           silent=_all_zero("embeddings")))
    for cls in _classes(flavor, "ReversibleEmbedding"):
        register_layer(cls, LayerSpec(_reversible_embedding, width_key="output_dim", prunable_kernels=("embeddings",),
                                      silent=_all_zero("embeddings")))
    register_layer(_L.BatchNormalization, LayerSpec(_batch_normalization, silent=_bn_silent))
    # (x - mean) / std of a zero channel is not zero: only gamma = beta = 0 silences it.
    register_layer(_L.LayerNormalization, dataclasses.replace(
        channel_wise(shifts=("gamma", "beta"), check=_check_last_axis), masked_call=_layer_norm_over_kept,
        shrink_warning="changes the mean and variance LayerNormalization computes over the channels"))
    register_layer(_L.PReLU, LayerSpec(_prelu))
    for cls in _classes(flavor, "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU"):
        register_layer(cls, passthrough(keeps_zero=_relu_keeps_zero))
    for cls in _classes(flavor, *_SPATIAL):
        register_layer(cls, passthrough())
    register_layer(_L.Activation, channel_wise())
    register_layer(_L.Rescaling, channel_wise(keeps_zero=_rescaling_keeps_zero,
                                              check=_frozen_if_per_channel("scale", "offset")))
    register_layer(_L.Normalization, channel_wise(keeps_zero=lambda layer: False,
                                                  check=_frozen_if_per_channel_stats))
    register_layer(_L.Softmax, LayerSpec(_softmax, silent=lambda layer, zero: False))  # softmax(0) = 1/n
    register_layer(_L.Flatten, LayerSpec(_flatten))
    register_layer(_L.Reshape, LayerSpec(_reshape, narrow=_narrow_reshape))
    register_layer(_L.Permute, LayerSpec(_permute))
    for cls in (_L.Add, _L.Subtract, _L.Average, _L.Maximum, _L.Minimum):
        register_layer(cls, merge())
    register_layer(_L.Multiply, merge(keeps_zero=lambda layer: True))
    register_layer(_L.Concatenate, LayerSpec(_concatenate))
    # Custom layers of keras.applications: ConvNeXt's per-channel scale and stochastic depth, and
    # InceptionResNetV2's a + b * scale.
    register_layer(applications[flavor].LayerScale, channel_wise(scales=("gamma",), width_key="projection_dim"))
    register_layer(applications[flavor].StochasticDepth, passthrough())
    register_layer(applications[flavor].CustomScaleLayer, merge())


def _register_op_layers():
    register_layer(TFOpLambda, LayerSpec(_tf_op, silent=_tf_op_keeps_zero))
    for op in KERAS3_UNARY_OPS + KERAS3_BINARY_OPS:
        register_layer(op, LayerSpec(_keras3_op, silent=_keras3_op_keeps_zero))
    register_layer(KERAS3_GET_ITEM, LayerSpec(_get_item))


def _frozen_if_per_channel_stats(graph, layer, x):
    """Normalization holds per-channel statistics that tf_keras derives from its weights at build time;
    narrowing them is not worth the risk for a layer that sits at the model input, so its channels stay."""
    if x.width is not None and x.width > 1:
        graph.freeze([x], f"per-channel statistics of '{layer.name}' (Normalization)")


for _flavor in FLAVORS:
    _register_builtins(_flavor)
_register_op_layers()
from tfprune import layers_attention  # noqa: E402,F401  (registers its specs)
from tfprune import layers_recurrent  # noqa: E402,F401  (registers its specs)
from tfprune import layers_normalization  # noqa: E402,F401  (registers its specs)
# tfprune.layers_keras_hub registers keras_hub's layers when `spec_for` first meets one (keras_hub loads slowly).
