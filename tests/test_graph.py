"""The channel graph: group structure on the reference models, layouts, errors, and a functional check
that every path of a dropped channel is covered (perturbing it cannot change the output once its
consumer slices are zeroed)."""
import numpy as np
import pytest

import tfprune
from tfprune._keras import keras, tfmot
from tfprune.graph import ChannelSlice, UnsupportedLayerError, build_channel_graph, output_width_layers
from tfprune.models import lenet5, mlp, resnet20, vgg

L = keras.layers


def _keys(group):
    return {(s.layer, s.weight, s.axis, s.role) for s in group.slices}


def _group_of_producer(graph, name):
    (group,) = [g for g in graph.groups if name in g.producers]
    return group


def _layers_by_name(model):
    layers = {}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, L.Wrapper) else layer
        layers[inner.name] = inner
        if isinstance(inner, keras.Model):
            layers.update(_layers_by_name(inner))
    return layers


def _assert_slices_partition(model, graph):
    """Every position of every sliced weight axis belongs to exactly one group's slice."""
    layers = _layers_by_name(model)
    covered = {}
    for group in graph.groups:
        for piece in group.slices:
            length = getattr(layers[piece.layer], piece.weight).shape[piece.axis]
            counts = covered.setdefault((piece.layer, piece.weight, piece.axis), np.zeros(length, int))
            for channel in range(group.size):
                counts[piece.indices(channel)] += 1
    for key, counts in covered.items():
        assert np.all(counts == 1), f"{key}: positions covered {counts.tolist()}"
    expected_axes = {"kernel": (-2, -1), "pointwise_kernel": (-2, -1), "depthwise_kernel": (-2,)}
    for name, layer in layers.items():
        for weight, axes in expected_axes.items():
            if getattr(layer, "groups", 1) > 1:  # a grouped kernel's input axis is one block all groups share
                axes = axes[1:]
            if getattr(layer, weight, None) is not None:
                rank = len(getattr(layer, weight).shape)
                for axis in axes:
                    assert (name, weight, axis % rank) in covered, f"{name}.{weight} axis {axis} not sliced"


def _outputs(model, x):
    out = model(x, training=False)
    return np.concatenate([np.ravel(o) for o in (out if isinstance(out, list) else [out])])


def _edit(model, group, keep, roles, values):
    """Overwrite the dropped channels' positions of every slice with a role in `roles`."""
    layers = _layers_by_name(model)
    for piece in group.slices:
        if piece.role not in roles:
            continue
        variable = getattr(layers[piece.layer], piece.weight)
        array = np.moveaxis(variable.numpy(), piece.axis, 0)
        dropped = ~piece.expand(keep, array.shape[0])
        array[dropped] = values(piece.weight, array[dropped].shape)
        variable.assign(np.moveaxis(array, 0, piece.axis))


def _assert_dropped_channels_are_cut_off(model, x, seed=0):
    """Zero the consumers' rows of dropped channels: then randomising everything the group produces for
    them must leave the model output unchanged, while without the zeroing it must change it."""
    graph = build_channel_graph(model)
    assert graph.prunable_groups()
    rng = np.random.default_rng(seed)
    original = model.get_weights()

    def noise(weight, shape):
        return rng.uniform(0.5, 2.0, shape) if weight == "moving_variance" else rng.uniform(-2, 2, shape)

    for group in graph.prunable_groups():
        keep = rng.random(group.size) < 0.5
        keep[0], keep[-1] = True, False
        _edit(model, group, keep, {"in"}, lambda weight, shape: np.zeros(shape))
        cut = _outputs(model, x)
        _edit(model, group, keep, {"out"}, noise)
        np.testing.assert_allclose(_outputs(model, x), cut, rtol=1e-4, atol=1e-4,
                                   err_msg=f"group {group.id} {group.producers} leaks dropped channels")
        model.set_weights(original)
        reference = _outputs(model, x)
        _edit(model, group, keep, {"out"}, noise)
        assert not np.allclose(_outputs(model, x), reference, atol=1e-4), \
            f"perturbing group {group.id} {group.producers} had no effect"
        model.set_weights(original)


def _concat_depthwise_model():
    inputs = keras.Input((8, 8, 3), name="input")
    a = L.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    b = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv_b")(inputs)
    b = L.BatchNormalization(name="bn_b")(b)
    c = L.Concatenate(name="concat")([a, b])
    d = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(c)
    d = L.ReLU(name="relu")(d)
    s = L.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", activation="relu", name="sep")(d)
    s = L.MaxPooling2D(2, name="pool")(s)
    logits = L.Dense(3, name="logits")(L.Flatten(name="flatten")(s))
    side = L.Flatten(name="side_flatten")(L.MaxPooling2D(2, name="side_pool")(c))
    side = L.Dense(2, name="side_logits")(side)
    return keras.Model(inputs, [logits, side])


def _nested_model():
    block = keras.Sequential([keras.Input((6,)), L.Dense(5, name="inner_a"), L.ReLU(name="inner_relu"),
                              L.Dense(4, name="inner_b")], name="block")
    inputs = keras.Input((7,), name="input")
    x = L.Dense(6, activation="relu", name="outer_in")(inputs)
    x = block(x)
    x = L.BatchNormalization(name="outer_bn")(x)
    return keras.Model(inputs, L.Dense(2, name="outer_out")(x)), block


def _images(shape, n=2):
    return np.random.default_rng(1).normal(size=(n,) + shape).astype("float32")


def test_mlp_groups():
    graph = build_channel_graph(mlp())
    assert [g.producers for g in graph.prunable_groups()] == [["dense_0"], ["dense_1"], ["dense_2"], ["dense_3"]]
    assert [g.size for g in graph.prunable_groups()] == [1000, 1000, 500, 200]
    assert _keys(_group_of_producer(graph, "dense_1")) == {("dense_1", "kernel", 1, "out"),
                                                           ("dense_2", "kernel", 0, "in")}
    logits = _group_of_producer(graph, "logits")
    assert not logits.prunable and logits.reason == "reaches model output via layer 'logits'"
    (source,) = [g for g in graph.groups if not g.producers]
    assert not source.prunable and "feeds from model input 'input'" in source.reason
    assert [g.id for g in graph.groups] == list(range(len(graph.groups)))


def test_lenet5_flatten_layout_and_cutoff():
    model = lenet5(filters=(4, 6), hidden=12)
    graph = build_channel_graph(model)
    _assert_slices_partition(model, graph)
    (dense_in,) = [s for s in _group_of_producer(graph, "conv_1").slices if s.layer == "dense_0"]
    assert (dense_in.axis, dense_in.role, dense_in.stride, dense_in.fan_out) == (0, "in", 6, 16)
    full = build_channel_graph(lenet5())
    (dense_in,) = [s for s in _group_of_producer(full, "conv_1").slices if s.layer == "dense_0"]
    assert (dense_in.stride, dense_in.fan_out, dense_in.size) == (50, 16, 50)
    assert dense_in.indices(3) == [3 + 50 * k for k in range(16)]
    _assert_dropped_channels_are_cut_off(model, _images((28, 28, 1)))


def test_vgg_groups_couple_conv_bn_and_next_conv():
    model = vgg(11, 0.125)
    graph = build_channel_graph(model)
    _assert_slices_partition(model, graph)
    assert len(graph.prunable_groups()) == 8
    for i in range(7):
        group = _group_of_producer(graph, f"conv_{i}")
        assert group.prunable
        assert _keys(group) == {(f"conv_{i}", "kernel", 3, "out"), (f"bn_{i}", "gamma", 0, "out"),
                                (f"bn_{i}", "beta", 0, "out"), (f"bn_{i}", "moving_mean", 0, "out"),
                                (f"bn_{i}", "moving_variance", 0, "out"), (f"conv_{i + 1}", "kernel", 2, "in")}
        assert f"relu_{i}" in group.carriers and group.relu_carriers == [f"relu_{i}"]
    assert graph.slices_of_layer("bn_2")[0][0] is _group_of_producer(graph, "conv_2")
    assert graph.groups_of_layer("relu_2") == [_group_of_producer(graph, "conv_2")]
    _assert_dropped_channels_are_cut_off(model, _images((32, 32, 3)))


def test_resnet20_residual_stream_is_one_group_per_stage():
    model = resnet20(widths=(4, 8, 16))
    graph = build_channel_graph(model)
    _assert_slices_partition(model, graph)
    first_producer = {0: "stem_conv", 1: "s1b0_proj_conv", 2: "s2b0_proj_conv"}
    for stage, first in first_producer.items():
        group = _group_of_producer(graph, first)
        assert group.prunable
        assert set(group.producers) == {first} | {f"s{stage}b{b}_b_conv" for b in range(3)}
        keys = _keys(group)
        for block in range(3):
            assert (f"s{stage}b{block}_b_bn", "gamma", 0, "out") in keys
            assert (f"s{stage}b{block}_a_conv", "kernel", 2, "in") in keys or block == 0 and stage > 0
        assert {f"s{stage}b{b}_add" for b in range(3)} <= set(group.carriers)
    assert ("s1b0_proj_conv", "kernel", 2, "in") in _keys(_group_of_producer(graph, "stem_conv"))
    assert ("logits", "kernel", 0, "in") in _keys(_group_of_producer(graph, "s2b0_proj_conv"))
    assert len(graph.prunable_groups()) == 3 + 9  # residual streams + inner block groups
    _assert_dropped_channels_are_cut_off(model, _images((32, 32, 3)))


def test_concat_depthwise_separable_flatten_layouts():
    model = _concat_depthwise_model()
    graph = build_channel_graph(model)
    _assert_slices_partition(model, graph)

    def layout(group, layer, weight):
        (piece,) = [s for s in group.slices if (s.layer, s.weight) == (layer, weight)]
        return piece.axis, piece.role, piece.offset, piece.block, piece.stride, piece.fan_out

    a, b = _group_of_producer(graph, "conv_a"), _group_of_producer(graph, "conv_b")
    assert layout(a, "dw", "depthwise_kernel") == (2, "out", 0, 1, 0, 1)
    assert layout(b, "dw", "depthwise_kernel") == (2, "out", 4, 1, 0, 1)
    assert layout(a, "dw", "bias") == (0, "out", 0, 2, 0, 1)
    assert layout(b, "dw", "bias") == (0, "out", 8, 2, 0, 1)
    assert layout(b, "sep", "depthwise_kernel") == (2, "in", 8, 2, 0, 1)
    assert layout(a, "sep", "pointwise_kernel") == (2, "in", 0, 4, 0, 1)
    assert layout(b, "sep", "pointwise_kernel") == (2, "in", 16, 4, 0, 1)
    assert layout(b, "side_logits", "kernel") == (0, "in", 4, 1, 10, 16)
    assert layout(_group_of_producer(graph, "sep"), "logits", "kernel") == (0, "in", 0, 1, 5, 16)
    assert b.carrier_slices[[s.layer for s in b.carrier_slices].index("dw")].offset == 8
    assert "relu" in a.relu_carriers and "sep" in _group_of_producer(graph, "sep").relu_carriers
    _assert_dropped_channels_are_cut_off(model, _images((8, 8, 3)))


def test_nested_model_is_entered():
    model, block = _nested_model()
    graph = build_channel_graph(model)
    _assert_slices_partition(model, graph)
    assert ("inner_a", "kernel", 0, "in") in _keys(_group_of_producer(graph, "outer_in"))
    assert _keys(_group_of_producer(graph, "inner_b")) == {
        ("inner_b", "kernel", 1, "out"), ("inner_b", "bias", 0, "out"), ("outer_bn", "gamma", 0, "out"),
        ("outer_bn", "beta", 0, "out"), ("outer_bn", "moving_mean", 0, "out"),
        ("outer_bn", "moving_variance", 0, "out"), ("outer_out", "kernel", 0, "in")}
    assert graph.groups_of_layer("block") == []  # the nested model owns nothing itself
    _assert_dropped_channels_are_cut_off(model, _images((7,), n=4))


def test_shared_layers_make_their_groups_unprunable():
    shared = L.Dense(4, name="shared")
    inputs = keras.Input((5,), name="input")
    a = L.Dense(5, name="a")(inputs)
    b = L.Dense(5, name="b")(inputs)
    merged = L.Add(name="add")([shared(a), shared(b)])
    model = keras.Model(inputs, L.Dense(2, name="out")(L.ReLU(name="relu")(merged)))
    graph = build_channel_graph(model)
    a_group, shared_group = _group_of_producer(graph, "a"), _group_of_producer(graph, "shared")
    assert a_group is _group_of_producer(graph, "b")  # both feed the same kernel rows
    for group in (a_group, shared_group):
        assert not group.prunable and "layer 'shared' (Dense) is shared (called 2 times)" in group.reason


def test_wrappers_are_seen_through():
    model = tfmot.sparsity.keras.prune_low_magnitude(mlp(hidden=(8, 6), flavor="tf_keras"))
    graph = build_channel_graph(model)
    assert [g.producers for g in graph.prunable_groups()] == [["dense_0"], ["dense_1"]]
    assert ("dense_1", "kernel", 0, "in") in _keys(graph.prunable_groups()[0])
    excluded = build_channel_graph(model, exclude=["prune_low_magnitude_dense_1"])
    assert [g.producers for g in excluded.prunable_groups()] == []

    class Transparent(L.Wrapper):
        tfprune_transparent = True

        def call(self, inputs):
            return self.layer(inputs)

    inputs = keras.Input((4,))
    hidden = Transparent(L.Dense(3, name="inner"), name="wrapped")(inputs)
    graph = build_channel_graph(keras.Model(inputs, L.Dense(2, name="out")(hidden)))
    assert _group_of_producer(graph, "inner").prunable and graph.slices_of_layer("wrapped")


def test_transposed_conv_embedding_prelu_layernorm_reshape():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="up")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Reshape((144, 5), name="reshape")(x)
    x = L.Permute((1, 2), name="permute")(x)
    outputs = L.Dense(2, name="out")(L.GlobalAveragePooling1D(name="gap")(x))
    graph = build_channel_graph(keras.Model(inputs, outputs))
    assert ("up", "kernel", 3, "in") in _keys(_group_of_producer(graph, "conv"))
    assert _keys(_group_of_producer(graph, "up")) == {
        ("up", "kernel", 2, "out"), ("up", "bias", 0, "out"), ("prelu", "alpha", 2, "out"),
        ("ln", "gamma", 0, "out"), ("ln", "beta", 0, "out"), ("out", "kernel", 0, "in")}

    tokens = keras.Input((7,), dtype="int32", name="tokens")
    x = L.Embedding(20, 6, name="embed")(tokens)
    x = L.Dense(3, activation="softmax", name="attention_like")(x)
    outputs = L.Dense(2, name="out")(L.GlobalAveragePooling1D(name="gap")(x))
    graph = build_channel_graph(keras.Model(tokens, outputs))
    embed = _group_of_producer(graph, "embed")
    assert embed.prunable and _keys(embed) == {("embed", "embeddings", 1, "out"),
                                                ("attention_like", "kernel", 0, "in")}
    assert "carries token ids into 'embed'" in graph.groups[0].reason
    assert "normalized across channels" in _group_of_producer(graph, "attention_like").reason


def test_channel_slice_arithmetic():
    piece = ChannelSlice("dense", "kernel", 0, "in", offset=2, block=2, stride=10, fan_out=3, size=3)
    assert piece.indices(1) == [4, 5, 14, 15, 24, 25]
    keep = piece.expand([True, False, True], 30)
    assert np.flatnonzero(~keep).tolist() == [4, 5, 14, 15, 24, 25]
    assert piece.expand(np.ones(3, bool), 30).all()
    array = np.arange(30 * 2).reshape(30, 2)
    assert piece.channel_view(array).shape == (3, 12)
    assert piece.channel_view(array)[1].tolist() == array[[4, 5, 14, 15, 24, 25]].ravel().tolist()
    with pytest.raises(ValueError, match="expand"):
        piece.expand([True, False], 30)
    with pytest.raises(ValueError, match="length 20"):
        piece.channel_view(np.zeros((20, 2)))


@pytest.mark.parametrize("make_layer, name, cls", [
    (lambda: L.Lambda(lambda t: t * 2, name="double"), "double", "Lambda"),
    (lambda: L.Bidirectional(L.LSTM(3), name="bilstm"), "bilstm", "Bidirectional"),
    (lambda: _Custom(name="custom"), "custom", "_Custom"),
    (lambda: L.Reshape((4, 8), name="squash"), "squash", "Reshape"),
    (lambda: L.Permute((2, 1), name="swap"), "swap", "Permute"),
])
def test_unsupported_layers_raise_with_their_name(make_layer, name, cls):
    inputs = keras.Input((8, 4))
    x = L.Dense(4, name="before")(inputs)
    x = make_layer()(x)
    model = keras.Model(inputs, L.Dense(2, name="after")(L.Flatten()(x) if len(x.shape) > 2 else x))
    with pytest.raises(UnsupportedLayerError, match=rf"'{name}' \({cls}\).*exclude=\['{name}'\]"):
        build_channel_graph(model)
    graph = build_channel_graph(model, exclude=[name])  # excluded, it becomes a wall
    before = _group_of_producer(graph, "before")
    assert not before.prunable and before.reason == f"excluded: {name}"


def _unregistered(tensor):
    return tensor


class _Custom(L.Layer):
    def call(self, inputs):
        return inputs[..., ::-1]


def _assert_shrinks_exactly(model, x):
    """Unit pruning at 50% and `shrink`: the narrower model computes what the masked one does."""
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    expected = _outputs(pruned, x)
    np.testing.assert_allclose(_outputs(shrunk, x), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    return shrunk


def _layout(group, layer, weight="kernel"):
    (piece,) = [s for s in group.slices if (s.layer, s.weight) == (layer, weight)]
    return piece.offset, piece.block, piece.size


def test_merges_of_differently_split_tensors_split_groups_into_sub_ranges():
    """NASNet adds one tensor to two concatenated ones of half its width: c's channels 0-1 meet a's, 2-3 b's."""
    inputs = keras.Input((4, 4, 3), name="input")
    a = L.Conv2D(2, 1, name="a")(inputs)
    b = L.Conv2D(2, 1, name="b")(inputs)
    c = L.Conv2D(4, 1, name="c")(inputs)
    added = L.Add(name="mixed_add")([L.Concatenate(name="cat")([a, b]), c])
    x = L.Conv2D(3, 1, activation="relu", name="after")(L.ReLU(name="relu")(added))
    model = keras.Model(inputs, L.Dense(2, name="logits")(L.GlobalAveragePooling2D(name="pool")(x)))
    graph = build_channel_graph(model)
    _assert_slices_partition(model, graph)
    first, second = _group_of_producer(graph, "a"), _group_of_producer(graph, "b")
    assert first.producers == ["a", "c"] and second.producers == ["b", "c"]
    assert first.prunable and second.prunable
    assert (_layout(first, "c"), _layout(second, "c")) == ((0, 1, 2), (2, 1, 2))
    assert (_layout(first, "after"), _layout(second, "after")) == ((0, 1, 2), (2, 1, 2))
    _assert_dropped_channels_are_cut_off(model, _images((4, 4, 3)))
    shrunk = _assert_shrinks_exactly(model, _images((4, 4, 3)))
    assert [shrunk.get_layer(name).filters for name in "abc"] == [1, 1, 2]


def test_grouped_convolution_prunes_whole_conv_groups():
    """Groups of 2 input channels straddle the concatenation (a2 and b0 share one); each group's 2 filters go
    with its inputs."""
    inputs = keras.Input((4, 4, 3), name="input")
    x = L.Concatenate(name="cat")([L.Conv2D(3, 1, name="a")(inputs), L.Conv2D(5, 1, name="b")(inputs)])
    x = L.Conv2D(8, 3, groups=4, padding="same", name="grouped")(x)
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(x))
    model = keras.Model(inputs, L.Dense(2, name="logits")(L.GlobalAveragePooling2D(name="pool")(x)))
    graph = build_channel_graph(model)
    _assert_slices_partition(model, graph)
    groups = [g for g in graph.groups if "grouped" in g.producers]
    assert [(g.producers, g.size, g.prunable) for g in groups] == [
        (["a", "grouped"], 1, True), (["a", "b", "grouped"], 1, True), (["b", "grouped"], 2, True)]
    assert (_layout(groups[0], "a"), _layout(groups[0], "grouped")) == ((0, 2, 1), (0, 2, 1))
    assert (_layout(groups[1], "a"), _layout(groups[1], "b")) == ((2, 1, 1), (0, 1, 1))
    assert (_layout(groups[2], "b"), _layout(groups[2], "grouped"), _layout(groups[2], "bn", "gamma")) == \
        ((1, 2, 2), (4, 2, 2), (4, 2, 2))
    _assert_dropped_channels_are_cut_off(model, _images((4, 4, 3)))
    shrunk = _assert_shrinks_exactly(model, _images((4, 4, 3)))
    layer = shrunk.get_layer("grouped")
    assert (layer.groups, layer.filters, shrunk.get_layer("b").filters) == (3, 6, 3)


def test_links_no_group_can_follow_freeze_and_bad_layouts_raise():
    inputs = keras.Input((4, 4, 3))
    small = L.Conv2D(2, 1, name="small")(L.MaxPooling2D(2, name="pool")(inputs))  # 2x2 positions of 2 channels
    dense = L.Dense(8, name="dense")(L.Flatten(name="flat_in")(inputs))
    added = L.Add(name="interleaved")([L.Flatten(name="flatten")(small), dense])  # dense p meets small p % 2
    graph = build_channel_graph(keras.Model(inputs, L.Dense(2, name="logits")(added)))
    for name in ("small", "dense"):
        group = _group_of_producer(graph, name)
        assert not group.prunable
        assert "channels linked by 'interleaved' in a pattern no channel group can follow" in group.reason
    a = L.Conv2D(2, 1, name="a")(inputs)
    gate = L.Conv2D(1, 1, name="gate")(inputs)
    with pytest.raises(UnsupportedLayerError, match=r"'broadcast' \(Multiply\).*different channel structures"):
        build_channel_graph(keras.Model(inputs, L.Multiply(name="broadcast")([a, gate])))
    with pytest.raises(UnsupportedLayerError, match=r"'cf' \(Conv2D\).*channels_first"):
        build_channel_graph(keras.Model(inputs, L.Conv2D(2, 1, data_format="channels_first", name="cf")(inputs)))
    with pytest.raises(UnsupportedLayerError, match=r"'bn1' \(BatchNormalization\).*axis"):
        build_channel_graph(keras.Model(inputs, L.BatchNormalization(axis=1, name="bn1")(inputs)))
    with pytest.raises(UnsupportedLayerError, match=r"'act' \(Dense\).*activation"):
        build_channel_graph(keras.Model(inputs, L.Dense(2, activation=_unregistered, name="act")(inputs)))


def test_exclude_and_model_checks():
    graph = build_channel_graph(vgg(11, 0.125), exclude=["conv_3"])
    assert not _group_of_producer(graph, "conv_3").prunable
    assert _group_of_producer(graph, "conv_2").reason == "excluded: conv_3"  # conv_3 consumes it
    assert _group_of_producer(graph, "conv_4").prunable
    with pytest.raises(ValueError, match=r"\['conv_99'\].*Valid names: .*'conv_0'"):
        build_channel_graph(vgg(11, 0.125), exclude=["conv_99"])
    with pytest.raises(ValueError, match="not built"):
        build_channel_graph(keras.Sequential([L.Dense(3)]))
    with pytest.raises(ValueError, match="No layer named 'nope'"):
        graph.groups_of_layer("nope")


def test_group_ids_are_deterministic():
    def summary():
        graph = build_channel_graph(resnet20(widths=(4, 8, 16)))
        return [(g.id, g.size, tuple(g.producers), tuple(g.slices)) for g in graph.groups]
    first = summary()
    keras.backend.clear_session()
    assert summary() == first


def test_output_width_layers_look_through_kernel_free_layers():
    """The classifier behind Softmax, Dropout, BatchNormalization or Reshape still sets the output width;
    on every branch of a multi-output model."""
    L = keras.layers
    sequential = keras.Sequential([L.Dense(8, name="hidden"), L.Dense(4, name="classifier"),
                                   L.BatchNormalization(name="bn"), L.Dropout(0.1), L.Softmax(name="probs")])
    assert output_width_layers(sequential) == {"classifier"}  # unbuilt: the layer order is the graph
    inputs = keras.Input((6,))
    trunk = L.Dense(8, name="trunk")(inputs)
    head_a = L.Activation("softmax")(L.Dense(3, name="head_a")(trunk))
    head_b = L.Reshape((2, 1))(L.Dense(2, name="head_b")(trunk))
    assert output_width_layers(keras.Model(inputs, [head_a, head_b])) == {"head_a", "head_b"}
