"""Group lasso: penalty and gradient vs numpy, the proximal step in closed form, selection, reports, files."""
import numpy as np

import tfprune
import pytest

from tfprune._keras import keras, tf, tfmot
from tfprune import models
from tfprune.regularizers import (GroupLasso, ProximalGroupLasso, apply_group_lasso, format_group_sparsity,
                                  group_sparsity_report, threshold_groups)

SHAPES = {"conv1d": (3, 4, 5), "conv2d": (3, 3, 4, 5), "conv3d": (2, 2, 2, 3, 4), "dense": (6, 7)}
CASES = [(kind, groups) for kind in SHAPES for groups in ("filter", "channel", "shape", "unit", "row")
         if kind == "dense" or groups not in ("unit", "row")]


# -- numpy reference: one index per group, written out per group type --------------------------------------
def reference_groups(shape, groups):
    if groups in ("filter", "unit"):
        return [(Ellipsis, j) for j in range(shape[-1])]
    if groups == "channel":
        return [(Ellipsis, i, slice(None)) for i in range(shape[-2])]
    return [index + (slice(None),) for index in np.ndindex(*shape[:-1])]  # shape, row


def reference_penalty(w, groups, strength, weighting):
    w = w.astype(np.float64)
    value, grad = 0.0, np.zeros_like(w)
    for index in reference_groups(w.shape, groups):
        c = np.sqrt(w[index].size) if weighting == "sqrt" else 1.0
        norm = np.linalg.norm(w[index])
        value += strength * c * norm
        if norm > 0:
            grad[index] += strength * c * w[index] / norm
    return value, grad


def reference_prox(w, groups, threshold_per_c, weighting):
    out = w.astype(np.float64).copy()
    for index in reference_groups(w.shape, groups):
        c = np.sqrt(w[index].size) if weighting == "sqrt" else 1.0
        norm = np.linalg.norm(out[index])
        out[index] *= max(0.0, 1 - threshold_per_c * c / norm) if norm > 0 else 0.0
    return out


def penalty_and_grad(regularizer, w):
    variable = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = regularizer(variable)
    return value.numpy(), tape.gradient(value, variable).numpy()


def conv_model(filters=4, name="small"):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(filters, 3, name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x), name=name)


def set_kernel(layer, kernel):
    layer.kernel.assign(kernel.astype(np.float32))


# -- the penalty --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighting", ["sqrt", None])
@pytest.mark.parametrize("kind,groups", CASES)
def test_penalty_and_gradient_match_numpy(kind, groups, weighting):
    w = np.random.default_rng(1).normal(size=SHAPES[kind]).astype(np.float32)
    value, grad = penalty_and_grad(GroupLasso(0.3, groups, weighting), w)
    expected_value, expected_grad = reference_penalty(w, groups, 0.3, weighting)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("groups", ["filter", "channel", "shape"])
def test_zero_group_has_zero_value_and_finite_gradient(groups):
    w = np.random.default_rng(2).normal(size=SHAPES["conv2d"]).astype(np.float32)
    dead = reference_groups(w.shape, groups)[1]
    w[dead] = 0.0
    regularizer = GroupLasso(0.5, groups)
    value, grad = penalty_and_grad(regularizer, w)
    expected_value, expected_grad = reference_penalty(w, groups, 0.5, "sqrt")
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[dead], 0.0)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)
    # Same inside a compiled function, and for an all-zero kernel.
    variable = tf.Variable(np.zeros_like(w))

    @tf.function
    def compiled():
        with tf.GradientTape() as tape:
            penalty = regularizer(variable)
        return penalty, tape.gradient(penalty, variable)
    penalty, zero_grad = compiled()
    assert penalty.numpy() == 0.0
    np.testing.assert_array_equal(zero_grad.numpy(), 0.0)


def test_regularizer_rejects_bad_arguments_and_kernels():
    for bad in (-1.0, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="strength"):
            GroupLasso(bad)
    with pytest.raises(ValueError, match="groups"):
        GroupLasso(0.1, groups="kernel")
    with pytest.raises(ValueError, match="weighting"):
        GroupLasso(0.1, weighting="l2")
    with pytest.raises(ValueError, match="groups='unit' is for 2-D Dense kernels.*'filter'"):
        GroupLasso(0.1, "unit")(tf.ones(SHAPES["conv2d"]))
    with pytest.raises(ValueError, match="rank >= 2"):
        GroupLasso(0.1)(tf.ones((4,)))


# -- serialization ------------------------------------------------------------------------------------------
def test_regularizer_config_round_trips_through_layer_config():
    regularizer = GroupLasso(0.25, "channel", None)
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(regularizer))
    assert isinstance(restored, GroupLasso) and restored.get_config() == regularizer.get_config()
    layer = keras.layers.Conv2D(3, 3, kernel_regularizer=regularizer)
    clone = keras.layers.Conv2D.from_config(layer.get_config())
    assert isinstance(clone.kernel_regularizer, GroupLasso)
    assert clone.kernel_regularizer.get_config() == {"strength": 0.25, "groups": "channel", "weighting": None}


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_regularized_model_survives_save_and_load_without_custom_objects(tmp_path, suffix):
    model = apply_group_lasso(conv_model(), 0.1, "filter", layers=["conv", "hidden"], weighting=None)
    path = str(tmp_path / f"model{suffix}")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    for name in ("conv", "hidden"):
        regularizer = loaded.get_layer(name).kernel_regularizer
        assert isinstance(regularizer, GroupLasso)
        assert regularizer.get_config() == {"strength": 0.1, "groups": "filter", "weighting": None}
    assert loaded.get_layer("out").kernel_regularizer is None
    np.testing.assert_allclose(float(tf.add_n(loaded.losses)), float(tf.add_n(model.losses)), rtol=1e-6)


def test_callback_config_round_trips():
    callback = ProximalGroupLasso(0.02, "row", layers=["hidden"], weighting=None)
    restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(callback))
    assert isinstance(restored, ProximalGroupLasso)
    assert restored.get_config() == {"strength": 0.02, "groups": "row", "layers": ["hidden"], "weighting": None}
    assert ProximalGroupLasso.from_config(callback.get_config()).get_config() == callback.get_config()


# -- apply_group_lasso --------------------------------------------------------------------------------------
def test_apply_group_lasso_keeps_weights_and_leaves_the_input_alone():
    model = conv_model()
    before = [w.copy() for w in model.get_weights()]
    regularized = apply_group_lasso(model, 0.2, "filter")
    assert regularized is not model
    assert isinstance(regularized.get_layer("conv").kernel_regularizer, GroupLasso)
    assert regularized.get_layer("hidden").kernel_regularizer is None  # default: Conv layers only
    for a, b, c in zip(before, model.get_weights(), regularized.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert model.get_layer("conv").kernel_regularizer is None and not model.losses
    expected, _ = reference_penalty(before[0], "filter", 0.2, "sqrt")
    np.testing.assert_allclose(float(tf.add_n(regularized.losses)), expected, rtol=1e-5)


def test_default_dense_selection_skips_output_layers():
    model = models.mlp(input_shape=(8,), hidden=(6, 5), seed=0, flavor="tf_keras")
    regularized = apply_group_lasso(model, 0.1, "unit")
    assert [layer.name for layer in regularized.layers if getattr(layer, "kernel_regularizer", None)] == [
        "dense_0", "dense_1"]
    # A weight-free layer after the classifier does not hide it.
    inputs = keras.Input((8,))
    x = keras.layers.Dense(6, name="hidden")(inputs)
    x = keras.layers.Dense(3, name="classifier")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    with_softmax = keras.Model(inputs, keras.layers.Softmax(name="probs")(x))
    regularized = apply_group_lasso(with_softmax, 0.1, "row")
    assert regularized.get_layer("classifier").kernel_regularizer is None
    assert regularized.get_layer("hidden").kernel_regularizer.get_config()["groups"] == "row"


def test_callback_works_on_a_sequential_model_built_during_fit():
    model = keras.Sequential([keras.layers.Dense(4, name="hidden"), keras.layers.Dense(2, name="out"),
                              keras.layers.Softmax(name="probs")])
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0, callbacks=[ProximalGroupLasso(100.0, "unit")])
    np.testing.assert_array_equal(model.get_layer("hidden").kernel.numpy(), 0.0)  # huge strength: all die
    assert np.all(model.get_layer("out").kernel.numpy() != 0)  # the output layer is left alone


def test_apply_group_lasso_replaces_group_lasso_but_not_other_regularizers():
    model = apply_group_lasso(conv_model(), 0.1)
    again = apply_group_lasso(model, 0.5, "shape")
    assert again.get_layer("conv").kernel_regularizer.get_config()["strength"] == 0.5
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, kernel_regularizer="l2", name="conv")(inputs)
    with pytest.raises(ValueError, match=r"conv \(L2\).*remove it first"):
        apply_group_lasso(keras.Model(inputs, x), 0.1, layers=["conv"])


def test_apply_group_lasso_reaches_inside_wrappers():
    inputs = keras.Input((6, 6, 2))
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(keras.layers.Conv2D(4, 3, name="conv"))
    x = keras.layers.Flatten()(wrapped(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    regularized = apply_group_lasso(model, 0.1)
    inner = regularized.get_layer(wrapped.name).layer
    assert isinstance(inner.kernel_regularizer, GroupLasso)
    expected, _ = reference_penalty(inner.kernel.numpy(), "filter", 0.1, "sqrt")
    np.testing.assert_allclose(float(tf.add_n(regularized.losses)), expected, rtol=1e-5)


def test_layer_selection_errors_name_the_problem_and_the_choices():
    model = conv_model()
    with pytest.raises(ValueError, match=r"\['nope'\].*\['conv', 'hidden', 'out'\]"):
        apply_group_lasso(model, 0.1, layers=["conv", "nope"])
    with pytest.raises(ValueError, match=r"pool \(MaxPooling2D\).*choose from \['conv', 'hidden', 'out'\]"):
        apply_group_lasso(model, 0.1, layers=["pool"])
    with pytest.raises(ValueError, match=r"groups='unit' is for Dense.*\['conv'\]"):
        apply_group_lasso(model, 0.1, "unit", layers=["conv", "hidden"])
    with pytest.raises(TypeError, match=r"layers=\['conv'\]"):
        apply_group_lasso(model, 0.1, layers="conv")
    with pytest.raises(ValueError, match="no Conv layer.*groups='unit'"):
        apply_group_lasso(models.mlp(input_shape=(8,), hidden=(4,), flavor="tf_keras"), 0.1, "filter")
    with pytest.raises(ValueError, match="strength"):
        apply_group_lasso(model, -0.1)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)
            self.out = keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.dense(x))
    subclassed = Subclassed()
    subclassed(tf.ones((1, 4)))
    with pytest.raises(ValueError, match="subclassed"):
        apply_group_lasso(subclassed, 0.1, "unit", layers=[subclassed.dense.name])


# -- the proximal callback ----------------------------------------------------------------------------------
def _piecewise():
    return keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.01])  # step 0: 0.1, later 0.01


@pytest.mark.parametrize("make_optimizer", [
    lambda: keras.optimizers.SGD(0.1),
    lambda: keras.optimizers.SGD(_piecewise()),
    lambda: keras.optimizers.legacy.SGD(0.1),
    lambda: keras.optimizers.legacy.SGD(_piecewise()),
], ids=["constant", "schedule", "legacy", "legacy-schedule"])
def test_proximal_step_matches_closed_form_after_one_sgd_step(make_optimizer):
    model = conv_model()
    rng = np.random.default_rng(3)
    kernel = rng.normal(scale=0.3, size=(3, 3, 2, 4))
    kernel[..., :2] *= 1e-3  # two filters small enough to die in one step
    set_kernel(model.get_layer("conv"), kernel)
    x = rng.normal(size=(8, 6, 6, 2)).astype(np.float32)
    y = rng.normal(size=(8, 2)).astype(np.float32)
    variable = model.get_layer("conv").kernel
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x))
    after_sgd = variable.numpy() - 0.1 * tape.gradient(loss, variable).numpy()
    expected = reference_prox(after_sgd, "filter", 0.1 * 1.0, "sqrt")  # η = 0.1 (the rate at step 0)

    model.compile(make_optimizer(), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[ProximalGroupLasso(1.0, "filter")])
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-4, atol=1e-6)
    norms = np.linalg.norm(variable.numpy().reshape(-1, 4), axis=0)
    assert np.all(norms[:2] == 0) and np.all(norms[2:] > 0)


@pytest.mark.parametrize("groups,weighting", [("filter", "sqrt"), ("channel", None), ("shape", "sqrt")])
def test_small_groups_become_exactly_zero(groups, weighting):
    model = conv_model()
    model.compile(keras.optimizers.SGD(0.5), loss="mse")
    kernel = np.random.default_rng(4).normal(size=(3, 3, 2, 4))
    indices = reference_groups(kernel.shape, groups)
    kernel[indices[0]] = 0.0  # already dead: must stay exactly 0, not NaN
    kernel[indices[1]] *= 1e-2
    set_kernel(model.get_layer("conv"), kernel)
    callback = ProximalGroupLasso(0.2, groups, weighting=weighting)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_batch_end(0)
    result = model.get_layer("conv").kernel.numpy()
    np.testing.assert_array_equal(result[indices[0]], 0.0)
    np.testing.assert_array_equal(result[indices[1]], 0.0)
    np.testing.assert_allclose(result, reference_prox(kernel.astype(np.float32), groups, 0.5 * 0.2, weighting),
                               rtol=1e-5, atol=1e-7)


def test_callback_thresholds_the_kernel_inside_a_wrapper():
    inputs = keras.Input((6, 6, 2))
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(keras.layers.Conv2D(4, 3, name="conv"))
    x = keras.layers.Flatten()(wrapped(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    kernel = np.random.default_rng(5).normal(size=(3, 3, 2, 4))
    kernel[..., 0] *= 1e-3
    set_kernel(wrapped.layer, kernel)
    callback = ProximalGroupLasso(0.1, layers=[wrapped.name])
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_batch_end(0)
    np.testing.assert_allclose(wrapped.layer.kernel.numpy(), reference_prox(
        kernel.astype(np.float32), "filter", 0.01, "sqrt"), rtol=1e-5, atol=1e-7)
    assert np.all(wrapped.layer.kernel.numpy()[..., 0] == 0)


def test_callback_rejects_bad_layers_before_training_changes_anything():
    model = conv_model()
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    before = model.get_weights()
    with pytest.raises(ValueError, match="ProximalGroupLasso.*'nope'"):
        model.fit(np.ones((4, 6, 6, 2)), np.ones((4, 2)), verbose=0,
                  callbacks=[ProximalGroupLasso(0.1, layers=["nope"])])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weighting"):
        ProximalGroupLasso(0.1, weighting="linear")


# -- reports and thresholding -------------------------------------------------------------------------------
def _model_with_dead_filters():
    model = conv_model(filters=5)
    kernel = np.random.default_rng(6).normal(size=(3, 3, 2, 5))
    kernel[..., 0] = 0.0
    kernel[..., 1] *= 1e-5  # near zero relative to the largest filter
    set_kernel(model.get_layer("conv"), kernel)
    return model


def test_report_counts_zero_and_near_zero_groups():
    rows = group_sparsity_report(_model_with_dead_filters(), "filter", tolerance=1e-3)
    assert rows == [{"layer": "conv", "groups": 5, "zero": 1, "near_zero": 2, "fraction": 0.4}]
    table = format_group_sparsity(rows)
    assert table.splitlines()[1].split() == ["conv", "5", "1", "2", "40.0%"]
    assert table.splitlines()[-1].split()[0] == "total"
    with pytest.raises(ValueError, match="tolerance"):
        group_sparsity_report(_model_with_dead_filters(), tolerance=2.0)


def test_threshold_groups_zeroes_near_zero_groups_in_a_new_model():
    model = _model_with_dead_filters()
    original = model.get_layer("conv").kernel.numpy().copy()
    thresholded = tfprune.strip(threshold_groups(model, "filter", tolerance=1e-3))
    kernel = thresholded.get_layer("conv").kernel.numpy()
    np.testing.assert_array_equal(kernel[..., :2], 0.0)
    np.testing.assert_array_equal(kernel[..., 2:], original[..., 2:])
    np.testing.assert_array_equal(model.get_layer("conv").kernel.numpy(), original)
    assert group_sparsity_report(thresholded)[0]["zero"] == 2


# -- a short real training run ------------------------------------------------------------------------------
@pytest.mark.slow
def test_proximal_training_kills_lenet_filters(mnist_small):
    (x, y), _ = mnist_small
    model = models.lenet5(filters=(8, 16), hidden=32, flavor="tf_keras")
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x.reshape(-1, 28, 28, 1), y, batch_size=32, epochs=2, verbose=0,
                        callbacks=[ProximalGroupLasso(0.01, "filter")])
    rows = group_sparsity_report(model, "filter", tolerance=0.0)
    assert [row["layer"] for row in rows] == ["conv_0", "conv_1"]
    assert all(0 < row["zero"] < row["groups"] for row in rows)  # some filters die, each layer lives on
    assert history.history["accuracy"][-1] > 0.6


def test_threshold_groups_zeroes_dead_filters_bias_so_shrink_removes_them():
    model = tfprune.models.lenet5(filters=(6, 8), hidden=16, flavor="tf_keras")
    conv = model.get_layer("conv_0")
    kernel = conv.kernel.numpy()
    kernel[..., :3] *= 1e-6  # three filters the penalty has nearly killed
    conv.kernel.assign(kernel)
    conv.bias.assign(np.full(6, 0.5, np.float32))
    cleaned = tfprune.strip(tfprune.threshold_groups(model, groups="filter", tolerance=1e-3))
    np.testing.assert_array_equal(cleaned.get_layer("conv_0").bias.numpy(), [0, 0, 0, 0.5, 0.5, 0.5])
    small = tfprune.shrink(cleaned)
    assert small.get_layer("conv_0").filters == 3
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)  # random inputs, output comparison only
    np.testing.assert_allclose(small(x), cleaned(x), atol=1e-5)
