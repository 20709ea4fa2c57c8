"""The layer registry: a user describes a custom layer once and graph, masking, shrink and counts follow; built-in
specs cover Keras' op layers, grouped convolutions, preprocessing layers and keras.applications' own layers."""
import numpy as np
import pytest

import tfprune
from tfprune._keras import keras, tf
from tfprune.graph import UnsupportedLayerError, build_channel_graph
from tfprune.registry import channel_wise, register_layer

L = keras.layers


class ChannelScale(L.Layer):
    """y = x * scale, one learned scale per channel (the README's worked example)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(self.channels,), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


class Unregistered(ChannelScale):
    pass


def _assert_equal_outputs(reference, shrunk, atol=1e-5):
    x = np.random.default_rng(0).normal(size=(3,) + reference.input_shape[1:]).astype("float32")
    a, b = np.asarray(reference(x)), np.asarray(shrunk(x))
    np.testing.assert_allclose(a, b, atol=atol * max(1.0, np.abs(a).max()))


def _scale_model(layer_class):
    inputs = keras.Input((6,))
    x = L.Dense(8, activation="relu", name="dense")(inputs)
    x = layer_class(8, name="scale")(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def test_custom_layer_registered_once_prunes_and_shrinks():
    register_layer(channel_wise(scales=["scale"], width_key="channels"))(ChannelScale)  # the decorator form
    model = _scale_model(ChannelScale)
    model.get_layer("scale").scale.assign(np.linspace(0.5, 2.0, 8))
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    assert shrunk.get_layer("scale").get_config()["channels"] == 4
    assert shrunk.get_layer("scale").scale.shape == (4,)
    _assert_equal_outputs(pruned, shrunk)


def test_unregistered_layer_names_both_ways_out():
    with pytest.raises(UnsupportedLayerError, match=r"'scale' \(Unregistered\).*exclude=\['scale'\].*register_layer"):
        build_channel_graph(_scale_model(Unregistered))


class PairScale(ChannelScale):
    """Two scales per channel, averaged: the channel axis of `scale` is its first, not its last."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(self.channels, 2), initializer="ones")

    def call(self, inputs):
        return inputs * tf.reduce_mean(self.scale, axis=-1)


class MissingWeight(ChannelScale):
    pass


def test_spec_that_contradicts_the_layer_raises_naming_it():
    register_layer(PairScale, channel_wise(scales=["scale"]))  # claims the channels sit on the last axis
    with pytest.raises(UnsupportedLayerError, match=r"'scale' \(PairScale\).*axis 1 of weight 'scale', which has "
                                                    r"length 2"):
        build_channel_graph(_scale_model(PairScale))
    register_layer(MissingWeight, channel_wise(scales=["gain"]))
    with pytest.raises(UnsupportedLayerError, match=r"'scale' \(MissingWeight\).*weight 'gain'"):
        build_channel_graph(_scale_model(MissingWeight))
    with pytest.raises(TypeError, match="LayerSpec"):
        register_layer(ChannelScale, {"scales": ["scale"]})
    with pytest.raises(TypeError, match="Keras layer class"):
        register_layer(int, channel_wise())


def _hard_swish_model(constant=1.0 / 6.0):
    """MobileNetV3's hard swish as tf_keras builds it from Python operators (TFOpLambda layers)."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
    gate = L.ReLU(6.0, name="relu6")(x + 3.0) * constant
    x = L.Multiply(name="swish")([x, gate])
    y = L.Conv2D(8, 1, name="branch")(x)
    x = L.GlobalAveragePooling2D(name="pool")(tf.nn.relu(x + y))
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def test_op_layers_keep_or_couple_channels():
    model = _hard_swish_model()
    graph = build_channel_graph(model)
    (group,) = [g for g in graph.prunable_groups() if "conv" in g.producers]
    assert set(group.producers) == {"conv", "branch"}  # x + y couples the two tensors like Add
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    assert shrunk.get_layer("conv").filters == 4
    _assert_equal_outputs(pruned, shrunk)


def test_op_layers_that_vary_along_channels_freeze_or_raise():
    graph = build_channel_graph(_hard_swish_model(constant=np.linspace(0.1, 0.8, 8).astype("float32")))
    (group,) = [g for g in graph.groups if "conv" in g.producers]
    assert not group.prunable and "constant that varies along the channels" in group.reason
    inputs = keras.Input((6,))
    x = L.Dense(8, name="hidden")(inputs)
    summed = tf.reduce_sum(x, axis=-1, keepdims=True)
    with pytest.raises(UnsupportedLayerError, match=r"reduce_sum.*not an element-wise op"):
        build_channel_graph(keras.Model(inputs, L.Dense(2)(x * summed)))


def test_grouped_convolutions():
    """Depthwise-as-groups prunes single channels; RegNet's group width (4 here) prunes whole conv groups, through
    a residual Add."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="expand")(inputs)
    x = L.Conv2D(16, 3, groups=8, padding="same", name="depthwise_as_groups")(x)  # multiplier 2
    x = L.Conv2D(16, 1, name="project", activation="relu")(x)
    y = L.Conv2D(8, 3, groups=4, padding="same", name="grouped")(x)  # 4 input channels -> 2 filters per group
    y = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(y))
    x = L.Add(name="residual")([x, L.Conv2D(16, 1, name="back")(y)])
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(x)))
    graph = build_channel_graph(model)
    (expand,) = [g for g in graph.groups if "expand" in g.producers]
    assert expand.prunable and {s.layer for s in expand.slices} >= {"expand", "depthwise_as_groups", "project"}
    (stream,) = [g for g in graph.groups if "project" in g.producers]
    assert stream.prunable and stream.size == 4 and set(stream.producers) == {"project", "grouped", "back"}
    blocks = {(s.layer, s.weight, s.role): s.block for s in stream.slices}
    assert (blocks[("project", "kernel", "out")], blocks[("grouped", "kernel", "out")],
            blocks[("back", "kernel", "in")], blocks[("logits", "kernel", "in")]) == (4, 2, 2, 4)
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    layer = shrunk.get_layer("depthwise_as_groups")
    assert (layer.groups, layer.filters) == (4, 8)
    layer = shrunk.get_layer("grouped")
    assert (layer.groups, layer.filters, tuple(layer.kernel.shape)) == (2, 4, (3, 3, 4, 4))
    assert shrunk.get_layer("project").filters == shrunk.get_layer("back").filters == 8
    _assert_equal_outputs(pruned, shrunk)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["EfficientNetB0", "MobileNetV3Small", "ConvNeXtTiny"])
def test_applications_prune_and_shrink(name):
    """Rescaling/Normalization (EfficientNet), op layers (MobileNetV3), LayerScale and nested blocks (ConvNeXt)."""
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.3)
    shrunk = tfprune.shrink(pruned)
    assert shrunk.count_params() < 0.8 * model.count_params()
    _assert_equal_outputs(pruned, shrunk, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RegNetX002", "NASNetMobile"])
def test_grouped_and_split_applications_prune_every_inner_group(name):
    """RegNet's grouped convolutions and NASNet's merges of differently split tensors: only the channels of the
    input and the classifier stay whole, and shrink removes whole conv groups and sub-ranges exactly."""
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    frozen = [group.reason for group in build_channel_graph(model).groups if not group.prunable]
    assert len(frozen) == 2 and all("model input" in reason or "model output" in reason for reason in frozen), frozen
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    assert shrunk.count_params() < 0.5 * model.count_params()
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    a, b = np.asarray(pruned(x)), np.asarray(shrunk(x))
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
