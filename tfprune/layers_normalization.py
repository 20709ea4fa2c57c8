"""GroupNormalization in the layer registry.

GroupNormalization splits the channels into `groups` consecutive blocks and normalizes each block with its own
mean and variance; gamma and beta follow the channel. Removing channels must keep every block the same size:

- ``groups == channels`` (instance normalization): each channel is its own block, so removing one changes no
  other channel's statistics; `shrink` sets ``groups`` to the channels kept. A zero channel normalizes to 0,
  so it stays zero where beta is 0.
- ``groups == 1``: one block over all channels, like LayerNormalization: a zero channel stays zero only where
  gamma and beta are 0, and the statistics change when channels go. tfprune's masks compute them over the kept
  channels (`masked_call`), so the masked model is what `shrink` makes; zeros written by other means make
  `shrink` warn.

- any other `groups`: whole blocks are kept or removed together (`graph.blocks`), so the blocks left keep
  their statistics exactly; `shrink` sets ``groups`` to the blocks kept. A zeroed block normalizes to 0.
"""
from tfprune._keras import FLAVORS, tf
from tfprune.registry import LayerSpec, channel_wise, normalized_axes, register_layer, single_input, unsupported

__all__ = []


def _channels(layer):
    """The number of channels the layer normalizes (it is built with them)."""
    return layer.input_spec.axes[layer.axis]


def _group_normalization(graph, layer, inputs, output_shapes):
    x = single_input(layer, inputs)
    if normalized_axes(layer.axis, x.rank) != [x.rank - 1]:
        raise unsupported(layer, f"it normalizes axis {layer.axis}; the channel graph needs the last axis "
                                 f"(channels_last, axis=-1)")
    if layer.groups not in (1, x.width):
        graph.blocks(layer, [x], layer.groups)
    spec = channel_wise(scales=("gamma",), shifts=("beta",))
    return spec.map_channels(graph, layer, inputs, output_shapes)


def _silent(layer, zero):
    """Beta = 0, and gamma = 0 when all channels share one group (a zeroed whole group normalizes to 0; units
    are whole groups when there are several); without gamma (scale=False) the normalized value passes unscaled."""
    shifted = zero.get("beta", True)
    if layer.groups > 1:
        return shifted
    return shifted & zero.get("gamma", False)


def _narrow(layer, config, cuts):
    """Whole groups go, so each group keeps its size and `groups` counts the groups kept."""
    if layer.groups > 1 and "output" in cuts:
        config["groups"] = int(next(iter(cuts["output"].values())).sum()) // (_channels(layer) // layer.groups)
    return config


def _over_kept(layer, inputs, keep):
    """GroupNormalization with each group's mean and variance taken over its kept channels only."""
    keep = tf.cast(keep, inputs.dtype)
    groups, channels = layer.groups, _channels(layer)
    shape = tf.concat([tf.shape(inputs)[:-1], [groups, channels // groups]], axis=0)
    grouped, weights = tf.reshape(inputs, shape), tf.reshape(keep, [groups, channels // groups])
    axes = list(range(1, inputs.shape.rank - 1)) + [inputs.shape.rank]  # positions and channels of a group
    count = tf.reduce_sum(weights * tf.ones_like(grouped), axis=axes, keepdims=True)
    mean = tf.math.divide_no_nan(tf.reduce_sum(weights * grouped, axis=axes, keepdims=True), count)
    variance = tf.math.divide_no_nan(tf.reduce_sum(weights * tf.square(grouped - mean), axis=axes,
                                                   keepdims=True), count)
    outputs = tf.reshape((grouped - mean) * tf.math.rsqrt(variance + layer.epsilon), tf.shape(inputs))
    if layer.gamma is not None:
        outputs = outputs * tf.cast(layer.gamma, inputs.dtype)
    if layer.beta is not None:
        outputs = outputs + tf.cast(layer.beta, inputs.dtype)
    return outputs * keep


for _flavor in FLAVORS:
    register_layer(_flavor.layers.GroupNormalization, LayerSpec(
        _group_normalization, narrow=_narrow, silent=_silent, masked_call=_over_kept,
        shrink_warning="changes the mean and variance GroupNormalization computes over all channels if groups=1 "
                       "(with one group per channel nothing changes)"))
