"""Counts on tiny models, checked against hand-computed values."""
import numpy as np
import pytest

from tfprune._keras import keras, tfmot
from tfprune.metrics import count_macs, count_nonzero, count_params, format_table, layer_table

L = keras.layers


def _single(layer, input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


def test_dense_counts_and_live_units():
    inputs = keras.Input((6,))
    hidden = L.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, L.Dense(3, use_bias=False, name="out")(hidden))
    kernel = np.ones((6, 4), np.float32)
    kernel[:, 1] = 0.0  # output unit 1 is dead
    kernel[0, 0] = 0.0
    model.get_layer("hidden").set_weights([kernel, np.zeros(4, np.float32)])

    assert count_params(model) == 6 * 4 + 4 + 4 * 3
    assert count_macs(model) == 6 * 4 + 4 * 3
    assert count_nonzero(model) == (24 - 7) + np.count_nonzero(model.get_layer("out").kernel.numpy())
    hidden_row = layer_table(model)[0]
    assert hidden_row == {"name": "hidden", "class": "Dense", "params": 28, "nonzero": 17,
                          "sparsity": pytest.approx(1 - 17 / 28), "macs": 24, "units": 4, "live_units": 3}


def test_dense_on_sequences_counts_every_position():
    assert count_macs(_single(L.Dense(3), (5, 4))) == 5 * 4 * 3


@pytest.mark.parametrize("padding, strides, side", [("valid", 1, 7), ("same", 1, 9), ("valid", 2, 4),
                                                    ("same", 2, 5)])
def test_conv2d_macs(padding, strides, side):
    model = _single(L.Conv2D(5, 3, strides=strides, padding=padding), (9, 9, 2))
    assert count_macs(model) == side * side * 5 * (3 * 3 * 2)


def test_conv1d_conv3d_and_grouped_conv_macs():
    assert count_macs(_single(L.Conv1D(4, 3), (10, 2))) == 8 * 4 * 3 * 2
    assert count_macs(_single(L.Conv3D(2, 2), (3, 3, 3, 1))) == 8 * 2 * 8
    assert count_macs(_single(L.Conv2D(4, 1, groups=2), (2, 2, 4))) == 4 * 4 * 2


def test_depthwise_macs_and_units():
    model = _single(L.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 3))
    row = layer_table(model)[0]
    assert row["macs"] == 6 * 6 * 6 * 9
    assert (row["units"], row["live_units"]) == (6, 6)


def test_separable_macs():
    model = _single(L.SeparableConv2D(4, 3, padding="same"), (6, 6, 3))
    assert count_macs(model) == 36 * (9 * 3) + 36 * (3 * 4)
    assert layer_table(model)[0]["units"] == 4


def test_transpose_macs_and_units():
    model = _single(L.Conv2DTranspose(5, 2, strides=2), (3, 3, 4))
    # Every input value meets the whole 2x2x5 kernel.
    assert count_macs(model) == 3 * 3 * 4 * (2 * 2 * 5)
    assert layer_table(model)[0]["units"] == 5


def test_embedding_costs_no_macs():
    model = _single(L.Embedding(10, 4), (3,))
    assert (count_params(model), count_macs(model)) == (40, 0)


def test_nested_model_is_recursed():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="a"), L.Dense(2, name="b")], name="block")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(1, name="head")(inner(inputs)))
    assert count_macs(model) == 12 + 6 + 2
    assert count_params(model) == 15 + 8 + 3
    assert [row["name"] for row in layer_table(model)] == ["block/a", "block/b", "head"]


def test_tfmot_wrapper_counts_effective_weights():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, L.Dense(4, name="d")(L.Dense(6, name="c")(inputs)))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    layer = pruned.get_layer("prune_low_magnitude_c")
    _, mask, _ = layer.pruning_vars[0]
    values = np.ones((8, 6), np.float32)
    values[:, :2] = 0.0  # masks two output units entirely, without touching the weights
    mask.assign(values)

    assert count_params(pruned) == count_params(model) == 8 * 6 + 6 + 6 * 4 + 4
    assert count_macs(pruned) == count_macs(model)
    biases = np.count_nonzero(layer.layer.bias.numpy())
    row = [r for r in layer_table(pruned) if r["class"] == "Dense"][0]
    assert row["nonzero"] == np.count_nonzero(layer.layer.kernel.numpy() * values) + biases
    assert (row["units"], row["live_units"]) == (6, 4)
    assert count_nonzero(pruned) < count_nonzero(model)


class _HalfMask(L.Wrapper):
    """A stand-in for tfprune's wrappers: exposes `masked_weights()` and zeroes the kernel's first row."""

    def call(self, inputs):
        return self.layer(inputs)

    def masked_weights(self):
        kernel = self.layer.kernel.numpy().copy()
        kernel[0] = 0.0
        return {"kernel": kernel}


def test_masked_weights_protocol_is_used():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, _HalfMask(L.Dense(2, kernel_initializer="ones"))(inputs))
    assert count_nonzero(model) == 4  # kernel 3x2 minus its first row; bias zeros
    assert layer_table(model)[0]["class"] == "Dense"


def test_unknown_shape_raises_for_macs_but_table_survives():
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, L.Conv1D(2, 3)(inputs))
    with pytest.raises(ValueError, match="fixed shape"):
        count_macs(model)
    assert layer_table(model)[0]["macs"] is None


def test_layer_without_formula_warns():
    model = _single(L.ConvLSTM1D(3, 2), (5, 4, 2))
    with pytest.warns(UserWarning, match="no MAC formula for ConvLSTM1D"):
        assert count_macs(model) == 0


def test_format_table_aligns_and_marks_missing():
    text = format_table([{"name": "a", "n": 1, "x": 0.5}, {"name": "long_name", "n": 1234, "x": None}])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "n", "x"]
    assert lines[2] == "a             1  0.500"
    assert lines[3] == "long_name  1234      -"
    assert format_table([{"a": 1, "b": 2}], columns=["b"]).splitlines()[0] == "b"


def test_counts_ignore_batch_norm_macs():
    model = _single(L.BatchNormalization(), (4,))
    assert (count_params(model), count_macs(model)) == (16, 0)
