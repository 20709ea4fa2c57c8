"""MultiHeadAttention: whole heads are one channel group; a tiny transformer encoder block prunes heads, FFN units
and (behind a projection) the residual stream, and shrinks to a narrower block with the masked block's outputs."""
import numpy as np
import pytest

import tfprune
from tfprune import masks
from tfprune._keras import keras
from tfprune.graph import UnsupportedLayerError, build_channel_graph
from tfprune.layers_attention import attention_spec
from tfprune.metrics import count_params
from tfprune.registry import LayerSpec, register_layer
from tfprune.shrink import shrink

L = keras.layers
PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense")


def encoder(embed=False):
    """Input (seq 6, width 16, or 10 projected to 16) -> MHA(4 heads) + residual + LayerNorm -> FFN 32 -> 16 +
    residual + LayerNorm -> pooling -> 3 logits."""
    inputs = keras.Input((6, 10 if embed else 16))
    x = L.Dense(16, name="embed")(inputs) if embed else inputs
    attended = L.MultiHeadAttention(num_heads=4, key_dim=8, name="mha")(x, x)
    x = L.LayerNormalization(name="ln1")(L.Add(name="add1")([x, attended]))
    hidden = L.Dense(32, activation="relu", name="ffn1")(x)
    x = L.LayerNormalization(name="ln2")(L.Add(name="add2")([x, L.Dense(16, name="ffn2")(hidden)]))
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.GlobalAveragePooling1D(name="pool")(x)))
    rng = np.random.default_rng(0)
    for layer in ("ln1", "ln2"):  # LayerNorm away from its init, so its channels matter
        model.get_layer(layer).set_weights([rng.uniform(0.5, 1.5, 16), rng.normal(scale=0.1, size=16)])
    return model


def pruned(model, criterion="random", data=None):
    """Masks written by one pruning step of the callback (half the channels of each group), without training;
    `data` (x, y) for criteria that read gradients."""
    result = tfprune.prune_units(model, tfprune.ConstantSparsity(0.5, 0, frequency=1), criterion=criterion)
    if data is not None:
        result.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tfprune.UpdatePruningStep(data=data)
    callback.set_model(result)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    return result


def inputs(model):
    return np.random.default_rng(1).normal(size=(4,) + tuple(model.input_shape[1:])).astype("float32")


def assert_same_outputs(expected, actual):
    assert np.max(np.abs(expected - actual)) <= 1e-4 * np.max(np.abs(expected))


def test_heads_are_one_group_and_the_input_stream_stays_whole():
    graph = build_channel_graph(encoder())
    heads = graph.groups_of_layer("mha")
    by_size = {group.size: group for group in heads}
    assert sorted(by_size) == [4, 16]
    group = by_size[4]
    assert group.prunable and group.producers == ["mha"]
    assert {(piece.weight, piece.axis, piece.role) for piece in group.slices} == (
        {(f"{p}.kernel", 1, "out") for p in PROJECTIONS} | {(f"{p}.bias", 0, "out") for p in PROJECTIONS}
        | {("_output_dense.kernel", 0, "in")})
    stream = by_size[16]  # the model input, coupled through both residual Adds and LayerNorms
    assert not stream.prunable and "feeds from model input" in stream.reason
    assert {"ln1", "ln2", "ffn2"} <= {piece.layer for piece in stream.slices}
    assert [g.size for g in graph.prunable_groups()] == [4, 32]


@pytest.mark.parametrize("criterion", ["random", "taylor", "l1", "l2"])
def test_prune_units_masks_whole_heads(criterion):
    model = encoder()
    result = pruned(model, criterion, data=(inputs(model), np.arange(4) % 3) if criterion == "taylor" else None)
    found = {attribute: mask for (layer, attribute), mask in masks(result).items() if layer == "mha"}
    kept = found["_output_dense.kernel"].reshape(4, -1).all(axis=1)
    assert kept.sum() == 2 and not found["_output_dense.kernel"].reshape(4, -1)[~kept].any()
    for projection in PROJECTIONS:
        np.testing.assert_array_equal(found[f"{projection}.kernel"].all(axis=(0, 2)), kept)
        assert not found[f"{projection}.kernel"][:, ~kept].any()
        np.testing.assert_array_equal(found[f"{projection}.bias"].all(axis=1), kept)
        assert not found[f"{projection}.bias"][~kept].any()
    assert masks(result)[("ffn1", "kernel")].all(axis=0).sum() == 16


def test_shrink_removes_heads_and_units_with_the_same_outputs():
    model = encoder()
    masked = pruned(model)
    shrunk = shrink(masked)
    config = shrunk.get_layer("mha").get_config()
    assert (config["num_heads"], config["key_dim"], shrunk.get_layer("ffn1").units) == (2, 8, 16)
    assert shrunk.get_layer("mha")._output_dense.kernel.shape == (2, 8, 16)
    assert count_params(shrunk) < count_params(model)
    x = inputs(model)
    expected = masked(x, training=False).numpy()
    np.testing.assert_array_equal(shrunk(x).numpy(), expected)  # heads and units come out exactly


def test_embedding_dim_is_pruned_through_the_residual_stream():
    """Behind a projection the stream is one prunable group: projection, attention input and output, both Adds,
    both LayerNorms, the FFN's input and output, the classifier's input."""
    model = encoder(embed=True)
    stream = next(group for group in build_channel_graph(model).groups if "embed" in group.producers)
    assert stream.prunable and {"mha", "ln1", "ln2", "ffn1", "ffn2", "logits"} <= {p.layer for p in stream.slices}
    masked = pruned(model)
    shrunk = shrink(masked)
    config = shrunk.get_layer("mha").get_config()
    assert shrunk.get_layer("embed").units == 8 and config["query_shape"][-1] == 8 and config["output_shape"] == 8
    assert shrunk.get_layer("ln2").gamma.shape == (8,)
    x = inputs(model)
    assert_same_outputs(masked(x, training=False).numpy(), shrunk(x).numpy())


def test_cross_attention_reads_each_argument_through_its_projection():
    """Query and value from different tensors (value by keyword, key defaulting to it), an attention mask input."""
    query, value, attention_mask = keras.Input((6, 12)), keras.Input((5, 10)), keras.Input((6, 5))
    attended = L.MultiHeadAttention(4, 8, value_dim=6, name="mha")(
        L.Dense(16, name="to_query")(query), value=L.Dense(20, name="to_value")(value), attention_mask=attention_mask)
    model = keras.Model([query, value, attention_mask], L.Dense(3, name="logits")(L.Flatten()(attended)))
    graph = build_channel_graph(model)
    reads = {(p.weight, group.producers[0]) for group in graph.prunable_groups() for p in group.slices
             if p.role == "in"}
    assert {("_query_dense.kernel", "to_query"), ("_key_dense.kernel", "to_value"),
            ("_value_dense.kernel", "to_value")} <= reads
    assert any("attention mask of 'mha'" in group.reason for group in graph.groups)
    masked = pruned(model)
    shrunk = shrink(masked)
    config = shrunk.get_layer("mha").get_config()
    assert (config["num_heads"], config["query_shape"][-1], config["value_shape"][-1], config["key_shape"][-1],
            config["output_shape"]) == (2, 8, 10, 10, 8)
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(2, 6, 12)), rng.normal(size=(2, 5, 10)), rng.random((2, 6, 5)) > 0.3]
    x = [array.astype("float32") for array in x]
    assert_same_outputs(masked(x, training=False).numpy(), shrunk(x).numpy())


def test_masked_block_trains_and_round_trips_a_keras_file(tmp_path):
    masked = pruned(encoder())
    masked.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = inputs(masked)
    masked.fit(x, np.arange(4) % 3, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    kernel = masked.get_layer("masked_mha").layer._value_dense.kernel.numpy()
    assert not kernel[masks(masked)[("mha", "_value_dense.kernel")] == 0].any()  # pruned heads stay zero
    masked.save(tmp_path / "block.keras")
    loaded = keras.models.load_model(tmp_path / "block.keras")
    for key, mask in masks(masked).items():
        np.testing.assert_array_equal(masks(loaded)[key], mask)
    np.testing.assert_array_equal(loaded(x).numpy(), masked(x).numpy())


def test_spec_that_contradicts_the_weights_names_the_layer():
    class Attention(L.MultiHeadAttention):
        pass

    def heads_on_the_input_axis(graph, layer, inputs, output_shapes):
        graph.slice(layer, "_query_dense.kernel", 0, "out", graph.new_channels((layer._num_heads,), layer))
        return [graph.new_channels(output_shapes[0], layer)]

    register_layer(Attention, LayerSpec(heads_on_the_input_axis))
    x = keras.Input((6, 16))
    model = keras.Model(x, Attention(num_heads=4, key_dim=8, name="odd_attention")(x, x))
    with pytest.raises(UnsupportedLayerError, match=r"'odd_attention'.*axis 0 of weight '_query_dense.kernel'"):
        build_channel_graph(model)


def test_mac_formula_counts_projections_and_attention():
    layer = encoder().get_layer("mha")
    projections = 3 * 6 * 16 * 4 * 8 + 6 * 4 * 8 * 16
    attention = 4 * 6 * 6 * (8 + 8)
    assert attention_spec().macs(layer, (None, 6, 16), (None, 6, 16)) == projections + attention


def test_weight_pruning_and_counts_reach_attention_kernels():
    """TFMOT prunes MultiHeadAttention kernels element-wise; so does global weight pruning here, and the counts
    see the attention layer."""
    model = encoder()
    assert tfprune.metrics.count_macs(model) > 0
    weighted = tfprune.prune_weights(model, tfprune.ConstantSparsity(0.5, 0, frequency=1), scope="global")
    callback = tfprune.UpdatePruningStep()
    callback.set_model(weighted)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    attention = {name: mask for (layer, name), mask in masks(weighted).items() if layer == "mha"}
    assert set(attention) == {f"{p}.kernel" for p in PROJECTIONS} | {"_output_dense.kernel"}
    assert 0.3 < 1 - np.mean(np.concatenate([m.ravel() for m in attention.values()])) < 0.7
