"""Recurrent layers and GroupNormalization: an LSTM/GRU unit is one channel group (its columns in every gate block
of the kernel, recurrent kernel and bias, plus its recurrent row); unit pruning and shrink give a narrower model
with the masked model's outputs, and TFLite export unrolls the recurrence. GroupNormalization prunes channel by
channel when groups is 1 or the channel count, and keeps other groupings whole."""
import warnings

import numpy as np
import pytest

import tfprune
from tfprune import masks
from tfprune._keras import keras
from tfprune.bench import predict
from tfprune.export import format_report, save
from tfprune.graph import UnsupportedLayerError, build_channel_graph
from tfprune.layers_recurrent import recurrent
from tfprune.metrics import count_macs, count_params
from tfprune.registry import register_layer, resolve_weight
from tfprune.shrink import shrink

L = keras.layers
STEPS, VOCAB = 10, 40


def text_model(rnn=L.LSTM, **options):
    """Token ids -> Embedding(12) -> rnn(8) -> Dense(3) logits: the tiny text classifier."""
    inputs = keras.Input((STEPS,), dtype="int32")
    x = L.Embedding(VOCAB, 12, name="embedding")(inputs)
    x = rnn(8, name="rnn", **options)(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def stacked_model():
    inputs = keras.Input((STEPS,), dtype="int32")
    x = L.Embedding(VOCAB, 12, name="embedding")(inputs)
    x = L.LSTM(8, return_sequences=True, name="rnn1")(x)
    x = L.LSTM(6, name="rnn2")(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def group_norm_model(groups):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="conv1")(inputs)
    x = L.ReLU(name="relu")(L.GroupNormalization(groups=groups, name="norm")(x))
    x = L.GlobalAveragePooling2D(name="pool")(L.Conv2D(8, 1, name="conv2")(x))
    model = keras.Model(inputs, L.Dense(3, name="logits")(x))
    rng = np.random.default_rng(0)  # gamma and beta away from their init, so they matter
    model.get_layer("norm").set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(scale=0.3, size=8)])
    return model


MODELS = {
    "lstm": text_model,
    "gru": lambda: text_model(L.GRU),
    "gru_reset_before": lambda: text_model(L.GRU, reset_after=False),
    "simple_rnn": lambda: text_model(L.SimpleRNN),
    "lstm_without_bias": lambda: text_model(use_bias=False),
    "stacked_lstm": stacked_model,
    "instance_norm": lambda: group_norm_model(8),
    "group_norm_one_group": lambda: group_norm_model(1),
}


def tokens(count=6, seed=1):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(count, STEPS)).astype("int32")


def inputs_for(model):
    if model.inputs[0].dtype.is_integer:
        return tokens()
    return np.random.default_rng(1).normal(size=(6,) + tuple(model.input_shape[1:])).astype("float32")


def unit_pruned(model):
    """Masks written by one pruning step of the callback (half the channels of each group), without training."""
    result = tfprune.prune_units(model, tfprune.ConstantSparsity(0.5, 0, frequency=1))
    callback = tfprune.UpdatePruningStep()
    callback.set_model(result)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    return result


def zeroed(model, group, dead, roles=("in", "out")):
    """`model` with the slices of `group`'s `dead` channels zeroed in its weights (no wrappers)."""
    for piece in group.slices:
        if piece.role in roles:
            variable = resolve_weight(model.get_layer(piece.layer), piece.weight)
            keep = piece.expand(~dead, variable.shape[piece.axis])
            shape = [1] * len(variable.shape)
            shape[piece.axis] = -1
            variable.assign(variable.numpy() * keep.reshape(shape))
    return model


def group_of(graph, producer):
    group, = [group for group in graph.groups if group.producers == [producer]]
    return group


def assert_same_outputs(expected, actual):
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert np.max(np.abs(expected - actual)) <= 1e-4 * np.max(np.abs(expected))


@pytest.mark.parametrize("rnn, gates", [(L.LSTM, 4), (L.GRU, 3), (L.SimpleRNN, 1)])
def test_a_unit_owns_its_column_in_every_gate_block_and_its_recurrent_row(rnn, gates):
    graph = build_channel_graph(text_model(rnn))
    units = group_of(graph, "rnn")
    assert units.prunable and units.size == 8
    pieces = {(piece.layer, piece.weight, piece.role): piece for piece in units.slices}
    assert set(pieces) == {("rnn", "cell.kernel", "out"), ("rnn", "cell.recurrent_kernel", "out"),
                           ("rnn", "cell.bias", "out"), ("rnn", "cell.recurrent_kernel", "in"),
                           ("logits", "kernel", "in")}
    for weight in ("cell.kernel", "cell.recurrent_kernel", "cell.bias"):
        assert pieces["rnn", weight, "out"].indices(3) == [3 + 8 * gate for gate in range(gates)]
    assert pieces["rnn", "cell.recurrent_kernel", "in"].indices(3) == [3]
    embedding = group_of(graph, "embedding")
    assert ("rnn", "cell.kernel", "in") in {(p.layer, p.weight, p.role) for p in embedding.slices}


@pytest.mark.parametrize("name", list(MODELS))
def test_shrink_of_unit_pruned_model_has_the_masked_outputs(name):
    model = MODELS[name]()
    masked = unit_pruned(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shrunk = shrink(masked)
    assert not [w for w in caught if "shrink:" in str(w.message)]  # exact: GroupNorm masks over the kept channels
    x = inputs_for(model)
    assert_same_outputs(masked(x, training=False), shrunk(x, training=False))
    assert count_params(shrunk) < count_params(model)
    if "norm" in name:
        assert shrunk.get_layer("conv1").filters == 4
        assert shrunk.get_layer("norm").groups == (4 if name == "instance_norm" else 1)
    else:
        assert shrunk.get_layer("rnn1" if name == "stacked_lstm" else "rnn").units == 4


@pytest.mark.parametrize("rnn", [L.LSTM, L.GRU])
def test_units_zeroed_in_the_weights_are_removed_exactly(rnn):
    """Without wrappers: a unit whose gate columns are zero stays zero; one whose readers (recurrent row and the
    next layer's rows) are zero is read by nothing. A unit whose bias alone is non-zero stays."""
    model = text_model(rnn)
    units = group_of(build_channel_graph(model), "rnn")
    silent = np.zeros(8, bool)
    silent[[0, 5]] = True
    unread = np.zeros(8, bool)
    unread[[2, 6]] = True
    zeroed(model, units, silent, roles=("out",))
    zeroed(model, units, unread, roles=("in",))
    x = tokens()
    shrunk = shrink(model)
    assert shrunk.get_layer("rnn").units == 4
    assert_same_outputs(model(x), shrunk(x))
    bias = model.get_layer("rnn").cell.bias
    bias.assign(bias.numpy() + 0.5)  # units 0 and 5 now emit a constant that the logits read
    assert shrink(model).get_layer("rnn").units == 6


def test_masked_recurrent_model_trains_and_shrinks():
    masked = unit_pruned(text_model())
    masked.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = tokens(16)
    masked.fit(x, np.arange(16) % 3, epochs=2, batch_size=8, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    kernel = masked.get_layer("masked_rnn").layer.cell.kernel.numpy()
    assert not kernel[masks(masked)[("rnn", "cell.kernel")] == 0].any()  # pruned units stay zero
    assert_same_outputs(masked(x, training=False), shrink(masked)(x))


def test_return_state_keeps_units_whole():
    inputs = keras.Input((STEPS, 4))
    sequence, state, cell = L.LSTM(8, return_state=True, name="rnn")(inputs)
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.Concatenate()([state, cell])))
    units = group_of(build_channel_graph(model), "rnn")
    assert not units.prunable and "returns its states" in units.reason


def test_group_normalization_with_blocks_of_channels_prunes_whole_blocks():
    """groups=4 over 8 channels: blocks of two go or stay together, so the blocks left keep their statistics and
    the shrunk model computes what the masked one does."""
    model = group_norm_model(4)
    conv1 = group_of(build_channel_graph(model), "conv1")
    assert conv1.prunable and conv1.size == 4  # one unit per block
    pruned = unit_pruned(model)
    keep = masks(pruned)[("conv1", "kernel")].reshape(-1, 8).any(axis=0)
    assert keep.reshape(4, 2).all(axis=1).sum() == 2 and (keep.reshape(4, 2).all(axis=1) == keep.reshape(4, 2).any(axis=1)).all()
    shrunk = shrink(pruned)
    assert shrunk.get_layer("norm").groups == 2 and shrunk.get_layer("conv1").filters == 4
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    assert_same_outputs(pruned(x), shrunk(x))


def test_group_normalization_over_all_channels_warns_for_zeros_written_without_masks():
    model = group_norm_model(1)
    conv1 = group_of(build_channel_graph(model), "conv1")
    zeroed(model, conv1, np.arange(8) < 3)
    with pytest.warns(UserWarning, match="'norm' \\(GroupNormalization\\) changes the mean and variance"):
        assert shrink(model).get_layer("conv1").filters == 5


def test_mac_formula_counts_every_gate_per_step():
    assert count_macs(text_model()) == STEPS * 4 * 8 * (12 + 8) + 8 * 3  # the LSTM, then the logits


def test_spec_that_contradicts_the_weights_names_the_layer():
    class Recurrent(L.LSTM):
        pass

    register_layer(Recurrent, recurrent(gates=3))  # an LSTM cell has four gate blocks
    inputs = keras.Input((STEPS, 4))
    model = keras.Model(inputs, L.Dense(2)(Recurrent(8, name="odd_rnn")(inputs)))
    with pytest.raises(UnsupportedLayerError, match=r"'odd_rnn'.*weight 'cell.kernel', which has length 32"):
        build_channel_graph(model)


def test_initial_state_input_raises_naming_the_layer():
    inputs, state = keras.Input((STEPS, 4)), keras.Input((8,))
    output = L.SimpleRNN(8, name="seeded")(inputs, initial_state=state)
    with pytest.raises(UnsupportedLayerError, match="'seeded' \\(SimpleRNN\\).*2 tensor inputs"):
        build_channel_graph(keras.Model([inputs, state], output))


def test_weight_pruning_masks_cell_kernels():
    """TFMOT prunes RNN kernels element-wise; so does global weight pruning here, kernel and recurrent kernel."""
    weighted = tfprune.prune_weights(text_model(), tfprune.ConstantSparsity(0.5, 0, frequency=1), scope="global")
    callback = tfprune.UpdatePruningStep()
    callback.set_model(weighted)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    every = masks(weighted)
    cell = {name: mask for (layer, name), mask in every.items() if layer == "rnn"}
    assert set(cell) == {"cell.kernel", "cell.recurrent_kernel"}
    assert all(0 < np.mean(mask) < 1 for mask in cell.values())  # ranked with the other layers' kernels
    assert np.mean(np.concatenate([mask.ravel() for mask in every.values()])) == pytest.approx(0.5, abs=0.01)


@pytest.mark.filterwarnings("ignore:count_macs. no MAC formula for Bidirectional")
@pytest.mark.parametrize("make", [text_model, lambda: text_model(L.GRU), stacked_model,
                                  lambda: text_model(lambda units, name: L.Bidirectional(L.LSTM(units), name=name))],
                         ids=["lstm", "gru", "stacked_lstm", "bidirectional"])
def test_tflite_export_unrolls_recurrent_layers(tmp_path, make):
    model = make()
    report = save(model, tmp_path, formats=("keras", "tflite"))
    assert report["notes"] and "'rnn" in report["notes"][0] and "unrolled" in format_report(report)
    x = tokens(16)
    litert = predict(report["artifacts"]["tflite"]["path"], x, backend="litert", batch_size=16)
    assert np.max(np.abs(litert - model(x).numpy())) <= 1e-5
    loaded = keras.models.load_model(report["artifacts"]["keras"]["path"])
    assert not any(getattr(layer, "unroll", False) for layer in loaded.layers)  # only the TFLite copy unrolls


@pytest.mark.parametrize("groups", [8, 4, 1])
def test_tflite_export_of_group_normalization(tmp_path, groups):
    """tf_keras weights GroupNormalization's moments by a mask of ones, whose broadcasts fail in LiteRT: the
    TFLite copy takes plain moments, with the same outputs."""
    shrunk = shrink(unit_pruned(group_norm_model(groups)))
    report = save(shrunk, tmp_path, formats=("tflite",))
    assert "GroupNormalization 'norm'" in report["notes"][0]
    x = inputs_for(shrunk)
    litert = predict(report["artifacts"]["tflite"]["path"], x, backend="litert")
    assert np.max(np.abs(litert - shrunk(x).numpy())) <= 1e-5


def test_tflite_export_of_a_shrunk_model(tmp_path):
    shrunk = shrink(unit_pruned(stacked_model()))
    report = save(shrunk, tmp_path, formats=("tflite",))
    x = tokens(8)
    litert = predict(report["artifacts"]["tflite"]["path"], x, backend="litert")
    assert np.max(np.abs(litert - shrunk(x).numpy())) <= 1e-5


def test_tflite_export_needs_a_fixed_sequence_length(tmp_path):
    inputs = keras.Input((None,), dtype="int32")
    model = keras.Model(inputs, L.LSTM(4, name="rnn")(L.Embedding(VOCAB, 6)(inputs)))
    with pytest.raises(ValueError, match="'rnn' has no fixed number of time steps.*keras.Input"):
        save(model, tmp_path, formats=("tflite",))
    assert save(model, tmp_path, formats=("keras",))["notes"] == []
