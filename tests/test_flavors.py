"""Keras 3 and tf_keras through one code path: the same tests for both flavors, and a function returns the flavor
it was given."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tfprune
from tfprune._keras import flavor_of, keras, keras3

FLAVORS = {"tf_keras": keras, "keras3": keras3}


@pytest.fixture(params=sorted(FLAVORS))
def flavor(request):
    return FLAVORS[request.param]


def _conv_model(flavor):
    """Residual Add, BatchNorm, depthwise conv and a hard swish written with Python operators (op layers in
    tf_keras, operations in Keras 3)."""
    L = flavor.layers
    inputs = flavor.Input((8, 8, 3))
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="conv")(inputs)))
    y = L.Conv2D(8, 1, name="project")(L.DepthwiseConv2D(3, padding="same", name="depthwise")(x))
    x = L.Add(name="residual")([x, y])
    x = L.Multiply(name="swish")([x, L.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)])
    x = L.Dense(16, activation="relu", name="hidden")(L.GlobalAveragePooling2D(name="pool")(x))
    return flavor.Model(inputs, L.Dense(3, name="logits")(x))


def _mlp(flavor):
    L = flavor.layers
    inputs = flavor.Input((784,))
    x = L.Dense(32, activation="relu", name="dense_a")(L.Dense(64, activation="relu", name="dense_b")(inputs))
    return flavor.Model(inputs, L.Dense(10, name="logits")(x))


def _images(count=4):
    return np.random.default_rng(0).uniform(size=(count, 8, 8, 3)).astype("float32")


def test_unit_pruning_shrinks_and_exports_in_the_flavor_given(flavor, tmp_path):
    model = _conv_model(flavor)
    graph = tfprune.graph.build_channel_graph(model)
    (group,) = [g for g in graph.prunable_groups() if "conv" in g.producers]
    assert set(group.producers) == {"conv", "project"}  # coupled through the residual Add
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    assert flavor_of(pruned) is flavor_of(shrunk) is flavor
    assert shrunk.get_layer("conv").filters == 4
    x = _images()
    expected = np.asarray(shrunk(x))
    np.testing.assert_allclose(np.asarray(pruned(x)), expected, atol=1e-5)
    report = tfprune.export.save(shrunk, tmp_path, formats=("keras", "tflite"))
    litert = tfprune.bench.predict(report["artifacts"]["tflite"]["path"], x, backend="litert")
    np.testing.assert_allclose(litert, expected, atol=1e-4)
    loaded = tfprune.bench.predict(report["artifacts"]["keras"]["path"], x, backend="keras")  # read by its Keras
    np.testing.assert_allclose(loaded, expected, atol=1e-6)
    assert tfprune.metrics.count_macs(shrunk) < tfprune.metrics.count_macs(model)


def _compiled(model, flavor, learning_rate=1e-3):
    optimizer = flavor.optimizers.SGD(learning_rate) if learning_rate == 0.0 else flavor.optimizers.Adam(learning_rate)
    model.compile(optimizer, flavor.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("method", ["units", "global", "layer"])
def test_pruning_inside_fit(flavor, method):
    (x, y), _ = tfprune.data.mnist_5k()
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=20, frequency=5)
    model = _mlp(flavor)
    pruned = (tfprune.prune_units(model, schedule) if method == "units"
              else tfprune.prune_weights(model, schedule, scope=method))
    _compiled(pruned, flavor).fit(x[:768], y[:768], batch_size=32, epochs=1, verbose=0,
                                  callbacks=[tfprune.UpdatePruningStep()])
    kernels = {name: mask for (layer, name), mask in tfprune.masks(pruned).items()
               if layer == "dense_b" and name == "kernel"}
    assert abs(1 - kernels["kernel"].mean() - 0.5) < 0.05 or method == "global"
    stripped = tfprune.strip(pruned)
    assert flavor_of(stripped) is flavor and tfprune.metrics.count_nonzero(stripped) < model.count_params()


@pytest.mark.parametrize("pattern", [{}, {"block_size": (4, 1)}, {"sparsity_m_by_n": (2, 4)}],
                         ids=["weights", "blocks_4x1", "2_of_4"])
def test_keras3_layer_scope_matches_tfmot_on_the_tf_keras_twin(pattern):
    """Keras 3 layers get tfprune's own per-layer pruner; on the same weights and schedule it makes TFMOT's
    masks at every update (learning rate 0 keeps the weights, so only the schedule moves), single weights,
    (4, 1) blocks or 2:4 alike. Kept counts that land on .5 can round either way: TFMOT's float32 graph
    arithmetic is not reproduced bit for bit, so the schedule here keeps clear of them."""
    (x, y), _ = tfprune.data.mnist_5k()
    schedule = tfprune.PolynomialDecay(0.1, 0.75, begin_step=2, end_step=10, frequency=2)
    twins = {flavor: _mlp(flavor) for flavor in (keras, keras3)}
    twins[keras].set_weights(twins[keras3].get_weights())
    history = {}
    for flavor, model in twins.items():
        pruned = _compiled(tfprune.prune_weights(model, schedule, scope="layer", **pattern), flavor,
                           learning_rate=0.0)
        steps = []

        class Record(flavor.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                steps.append(tfprune.masks(pruned))

        pruned.fit(x[:384], y[:384], batch_size=32, epochs=1, shuffle=False, verbose=0,
                   callbacks=[tfprune.UpdatePruningStep(), Record()])
        history[flavor] = steps
    assert len(history[keras]) == len(history[keras3]) == 12
    for step, (tfmot_masks, own_masks) in enumerate(zip(history[keras], history[keras3])):
        for key in ("dense_b", "dense_a", "logits"):
            np.testing.assert_array_equal(own_masks[(key, "kernel")], tfmot_masks[(key, "kernel")],
                                          err_msg=f"step {step}, layer {key}")


def test_keras3_file_saved_mid_pruning_resumes_to_the_same_masks(tmp_path):
    (x, y), _ = tfprune.data.mnist_5k()
    schedule = tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=40, frequency=4)

    def pruned_model():
        keras3.utils.set_random_seed(1)
        return _compiled(tfprune.prune_units(_mlp(keras3), schedule), keras3)

    def fit(model, epochs):
        model.fit(x[:512], y[:512], batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[tfprune.UpdatePruningStep()])

    straight = pruned_model()
    fit(straight, 2)
    interrupted = pruned_model()
    fit(interrupted, 1)
    interrupted.save(tmp_path / "mid.keras")
    resumed = keras3.saving.load_model(tmp_path / "mid.keras")  # no custom_objects
    assert tfprune.mask.current_step(resumed) == 16
    for key, mask in tfprune.masks(interrupted).items():
        np.testing.assert_array_equal(tfprune.masks(resumed)[key], mask)
    fit(resumed, 1)
    for key, mask in tfprune.masks(straight).items():
        np.testing.assert_array_equal(tfprune.masks(resumed)[key], mask, err_msg=str(key))


def test_import_leaves_tf_keras_as_the_user_has_it():
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    script = ("import os, tfprune, tensorflow as tf; assert 'TF_USE_LEGACY_KERAS' not in os.environ; "
              "print(tf.keras.__version__)")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("3."), result.stdout


def _small_conv(flavor):
    L = flavor.layers
    inputs = flavor.Input((8, 8, 1))
    x = L.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = L.GlobalAveragePooling2D(name="pool")(L.Conv2D(8, 3, activation="relu", name="conv_b")(x))
    return flavor.Model(inputs, L.Dense(3, name="logits")(L.Dense(16, activation="relu", name="hidden")(x)))


def _digits():
    (x, y), _ = tfprune.data.digits(flatten=False)
    return x[:256].astype("float32"), (y[:256] % 3).astype("int64")


def _accuracy_compiled(model, learning_rate=0.05):
    flavor = flavor_of(model)
    model.compile(flavor.optimizers.SGD(learning_rate), flavor.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_group_lasso_in_the_flavor_given(flavor, tmp_path):
    x, y = _digits()
    regularized = tfprune.apply_group_lasso(_small_conv(flavor), 0.01)
    assert flavor_of(regularized) is flavor
    _accuracy_compiled(regularized).fit(x, y, epochs=1, verbose=0)
    regularized.save(tmp_path / "lasso.keras")  # the regularizer serializes in either Keras
    assert type(tfprune._keras.load_model(tmp_path / "lasso.keras").get_layer("conv_a").kernel_regularizer
                ).__name__ == "GroupLasso"
    model = _accuracy_compiled(_small_conv(flavor), learning_rate=0.5)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[tfprune.ProximalGroupLasso(0.3)])
    rows = tfprune.group_sparsity_report(model, tolerance=0.0)
    assert sum(row["zero"] for row in rows) > 0  # exact zeros from the proximal step
    small = tfprune.shrink(tfprune.threshold_groups(model, tolerance=1e-6))
    assert flavor_of(small) is flavor and small.count_params() < model.count_params()


def test_iterative_loop_and_rewinding_in_the_flavor_given(flavor, tmp_path):
    x, y = _digits()
    model, rows = tfprune.imp(lambda: _small_conv(flavor), (x, y), _accuracy_compiled, {"epochs": 1, "batch_size": 32},
                              directory=tmp_path / "imp", rounds=2, prune_fraction=0.5, rewind="weights",
                              rewind_step=2, verbose=0)
    assert flavor_of(model) is flavor and abs(rows[-1]["remaining"] - 0.25) < 0.01
    again, _ = tfprune.imp(lambda: _small_conv(flavor), (x, y), _accuracy_compiled, {"epochs": 1, "batch_size": 32},
                           directory=tmp_path / "imp", rounds=2, prune_fraction=0.5, rewind="weights", rewind_step=2,
                           verbose=0)  # resumes: nothing left to train
    for key, mask in tfprune.masks(model).items():
        np.testing.assert_array_equal(tfprune.masks(again)[key], mask)
    _, sap_rows = tfprune.sap(lambda: _small_conv(flavor), ((x, y), (x, y)), _accuracy_compiled,
                              {"epochs": 1, "batch_size": 32}, directory=tmp_path / "sap", rounds=1, verbose=0)
    assert sap_rows[-1]["remaining"] < 1.0


def test_dynamic_pruner_in_the_flavor_given(flavor):
    x, y = _digits()
    pruner = tfprune.DynamicPruner(every_steps=2, monitor="accuracy", stable_tolerance=10.0)
    model = _accuracy_compiled(tfprune.DynamicPruner.prepare(_small_conv(flavor)))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[pruner])
    assert flavor_of(model) is flavor and any(row.get("removed") for row in pruner.history)


def test_study_in_the_flavor_given(flavor, tmp_path):
    name = "keras" if flavor is keras3 else "tf_keras"
    study = tfprune.study.Study(model="mlp", flavor=name, dataset="digits", methods=("oneshot_unit", "gradual_weight"),
                                sparsities=(0.5,), epochs=1, finetune_epochs=1, output=str(tmp_path))
    rows = study.run(print_fn=lambda *args: None)
    assert len(rows) == 2 and all(row["accuracy"] > 0.3 for row in rows)


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_pruning_at_initialization(flavor, method):
    (x, y), _ = tfprune.data.mnist_5k()
    model, info = tfprune.prune_at_init(_mlp(flavor), method, 0.9, data=(x[:128], y[:128]), rounds=2,
                                        return_info=True, verbose=0)
    assert flavor_of(model) is flavor and abs(info["achieved_sparsity"] - 0.9) < 1e-3


@pytest.mark.parametrize("kind", ["attention", "lstm"])
def test_sequence_layers_prune_and_shrink(flavor, kind):
    """MultiHeadAttention heads (Keras 3 builds the wrapped layer from the query's shape) and LSTM units."""
    L = flavor.layers
    if kind == "attention":
        inputs = flavor.Input((6, 16))
        x = L.LayerNormalization(name="norm")(L.Add(name="residual")([inputs, L.MultiHeadAttention(4, 8, name="mha")(
            inputs, inputs)]))
        x = L.Dense(3, name="logits")(L.GlobalAveragePooling1D(name="pool")(L.Dense(32, activation="relu")(x)))
        data = np.random.default_rng(0).normal(size=(2, 6, 16)).astype("float32")
    else:
        inputs = flavor.Input((7,), dtype="int32")
        x = L.LSTM(6, name="rnn")(L.LSTM(12, return_sequences=True, name="rnn_seq")(L.Embedding(30, 8)(inputs)))
        x = L.Dense(3, name="logits")(x)
        data = np.random.default_rng(0).integers(0, 30, size=(2, 7))
    model = flavor.Model(inputs, x)
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    assert flavor_of(shrunk) is flavor and shrunk.count_params() < model.count_params()
    np.testing.assert_allclose(np.asarray(pruned(data)), np.asarray(shrunk(data)), atol=1e-5)
    if kind == "attention":
        assert shrunk.get_layer("mha").get_config()["num_heads"] == 2


def test_compare_measures_keras3_models_and_files(tmp_path):
    model = tfprune.models.mlp(hidden=(32,), flavor="keras")
    model.save(tmp_path / "dense.keras")
    (x, y), _ = tfprune.data.mnist_5k()
    rows, _ = tfprune.export.compare({"model": model, "file": str(tmp_path / "dense.keras")}, (x[:64], y[:64]),
                                     warmup=1, repeats=2)
    assert [row["params"] for row in rows] == [model.count_params()] * 2
