"""Unit/filter pruning: coupled masks on reference models, scopes, criteria, saving, loops, strategies."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfprune
from tfprune import criteria
from tfprune._keras import keras, tf
from tfprune.graph import UnsupportedLayerError, build_channel_graph

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _compile(model, lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), LOSS)
    return model


def _concat_depthwise(input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape, name="input")
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    b = L.ReLU(name="relu_b")(L.BatchNormalization(name="bn_b")(L.Conv2D(8, 3, padding="same", name="conv_b")(inputs)))
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(L.Concatenate(name="concat")([a, b]))
    x = L.ReLU(name="relu_dw")(L.BatchNormalization(name="bn_dw")(x))
    x = L.Conv2D(16, 1, activation="relu", name="pw")(x)
    outputs = L.Dense(10, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, outputs, name="concat_depthwise")


def _random_images(shape, n, seed=0):
    """Random images and labels: these checks are about masks, not accuracy."""
    rng = np.random.default_rng(seed)
    return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 10, n)


def _mnist(flatten, n=256):
    (x, y), _ = tfprune.data.mnist_5k(flatten=flatten)
    return x[:n], y[:n]


def _fire_once(model, data=None):
    """One pruning update at step 0 (no training), through the public callback."""
    callback = tfprune.UpdatePruningStep(data=data)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    return callback


def _weight(model, piece):
    return getattr(model.get_layer(piece.layer), piece.weight).numpy()


def _dead_channels(model, group):
    """Channels whose producer kernel entries are all zero."""
    piece = next(p for p in group.slices if p.role == "out" and p.weight in criteria.KERNEL_WEIGHTS)
    return np.all(piece.channel_view(_weight(model, piece)) == 0, axis=1)


def _kept_by_group(pruned):
    """Per prunable group (graph order), which channels survive in the stripped model."""
    stripped = tfprune.strip(pruned)
    return [~_dead_channels(stripped, group) for group in build_channel_graph(stripped).prunable_groups()]


def _top(scores, kept):
    keep = np.zeros(scores.size, dtype=bool)
    keep[np.argsort(-scores, kind="stable")[:kept]] = True
    return keep


@pytest.mark.slow
@pytest.mark.parametrize("build, data", [
    (lambda: tfprune.models.mlp(hidden=(64, 32), seed=0, flavor="tf_keras"), "mnist_flat"),
    (lambda: tfprune.models.lenet5(filters=(8, 16), hidden=32, flavor="tf_keras"), "mnist_images"),
    (lambda: tfprune.models.vgg(11, 0.125, flavor="tf_keras"), "random"),
    (lambda: tfprune.models.resnet20(widths=(8, 16, 32), flavor="tf_keras"), "random"),
    (_concat_depthwise, "random"),
], ids=["mlp", "lenet5", "vgg11", "resnet20", "concat_depthwise"])
def test_every_coupled_slice_is_zero_at_the_same_channels(build, data):
    model = build()
    if data == "random":
        x, y = _random_images(tuple(model.input_shape[1:]), 64)
    else:
        x, y = _mnist(flatten=data == "mnist_flat", n=64)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=2, frequency=1)
    pruned = _compile(tfprune.prune_units(model, schedule))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])

    stripped = tfprune.strip(pruned)
    groups = build_channel_graph(stripped).prunable_groups()
    assert groups
    for group in groups:
        dead = _dead_channels(stripped, group)
        assert dead.sum() == round(0.5 * group.size), (group.producers, dead.sum(), group.size)
        for piece in group.slices:
            view = piece.channel_view(_weight(stripped, piece))
            assert np.all(view[dead] == 0), piece
            if piece.weight in criteria.KERNEL_WEIGHTS:
                assert np.all(np.any(view[~dead] != 0, axis=1)), piece  # live channels are untouched
    np.testing.assert_allclose(stripped.predict(x[:8], verbose=0), pruned.predict(x[:8], verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_global_scope_ranks_normalised_scores_and_keeps_a_unit_per_group():
    def pruned_kept(model, sparsity, round_to=1):
        schedule = tfprune.ConstantSparsity(sparsity, begin_step=0, frequency=100)
        pruned = tfprune.prune_units(model, schedule, scope="global", round_to=round_to)
        _fire_once(pruned)
        return _kept_by_group(pruned)

    model = tfprune.models.mlp(hidden=(48, 16, 40), seed=3, flavor="tf_keras")
    groups = build_channel_graph(model).prunable_groups()
    scores = [np.asarray(criteria.normalize_scores(criteria.l2(group, criteria.ModelTensors(model))))
              for group in groups]
    flat = np.concatenate(scores)
    removed = set(np.argsort(flat, kind="stable")[:round(0.6 * flat.size)].tolist())
    starts = np.cumsum([0] + [s.size for s in scores])
    expected = [np.array([i + start not in removed for i in range(s.size)]) for s, start in zip(scores, starts)]
    kept = pruned_kept(model, 0.6)
    for want, got in zip(expected, kept):
        np.testing.assert_array_equal(got, want)
    assert sum((~k).sum() for k in kept) == round(0.6 * flat.size)
    assert len({round(k.mean(), 2) for k in kept}) > 1  # layers end up unevenly pruned

    # Scaling one layer's kernel changes raw norms but not normalised ranks: the same units go.
    model.get_layer("dense_0").kernel.assign(model.get_layer("dense_0").kernel * 100.0)
    for before, after in zip(kept, pruned_kept(model, 0.6)):
        np.testing.assert_array_equal(before, after)

    # Never the last unit: at 99% every group keeps exactly its best-scoring unit.
    for score, keep in zip(scores, pruned_kept(model, 0.99)):
        assert keep.sum() == 1 and keep[np.argmax(score)]

    rounded = pruned_kept(model, 0.6, round_to=8)
    assert all(k.sum() % 8 == 0 and k.sum() > 0 for k in rounded)
    assert all(r.sum() >= k.sum() for r, k in zip(rounded, kept))


def test_layer_scope_round_to_keeps_multiples():
    model = tfprune.models.mlp(hidden=(40, 24), seed=0, flavor="tf_keras")
    pruned = tfprune.prune_units(model, tfprune.ConstantSparsity(0.7, 0, frequency=100), round_to=8)
    _fire_once(pruned)
    assert [int(k.sum()) for k in _kept_by_group(pruned)] == [16, 8]  # 12 -> 16, 7 -> 8


def _expected_keeps(model, criterion, tensors, sparsity=0.5):
    return [_top(np.asarray(criterion(group, tensors)), group.size - round(sparsity * group.size))
            for group in build_channel_graph(model).prunable_groups()]


@pytest.mark.parametrize("name", ["l2", "l1", "mean_column_norm", "random", "taylor", "apoz", "custom"])
def test_each_criterion_keeps_its_best_channels(name):
    x, y = _mnist(flatten=True)
    model = _compile(tfprune.models.mlp(hidden=(32, 16), seed=0, flavor="tf_keras"))
    if name == "custom":
        @criteria.register_criterion("test_unit_high_index")
        def criterion(group, tensors):
            """Prefers the highest channel indices."""
            return np.arange(group.size, dtype=float)
    else:
        criterion = criteria.random_criterion(5) if name == "random" else criteria.CRITERIA.get(name)
    try:
        expected = _expected_keeps(model, criterion, criteria.ModelTensors(model, x, y))
        pruned = _compile(tfprune.prune_units(model, tfprune.ConstantSparsity(0.5, 0, frequency=100),
                                              criterion=criterion if name == "custom" else name, seed=5))
        _fire_once(pruned, data=(x, y) if criterion.needs else None)
        for want, got in zip(expected, _kept_by_group(pruned)):
            np.testing.assert_array_equal(got, want)
    finally:
        criteria.CRITERIA.pop("test_unit_high_index", None)


def test_criteria_read_masked_weights_not_optimizer_drift():
    """A criterion written with numpy runs eagerly (with a warning) and, like the compiled ones, reads the
    masked zeros, not what momentum moved them to."""
    seen = {}

    @criteria.register_criterion("test_unit_spy")
    def spy(group, tensors):
        """l2 in numpy, remembering the consumer kernel it was shown."""
        seen.update({piece.layer: np.asarray(tensors.weight(piece)) for piece in group.slices if piece.role == "in"})
        return np.asarray(criteria.l2(group, tensors))

    try:
        schedule = tfprune.PolynomialDecay(0.25, 0.5, begin_step=0, end_step=1, power=1, frequency=1)
        pruned = tfprune.prune_units(tfprune.models.mlp(hidden=(16, 8), seed=0, flavor="tf_keras"), schedule, criterion="test_unit_spy")
        with pytest.warns(UserWarning, match="'test_unit_spy' is not written with TensorFlow ops"):
            callback = _fire_once(pruned)
        kernel = pruned.get_layer("masked_dense_1").layer.kernel
        removed = pruned.get_layer("masked_dense_0").keep("kernel", 1).numpy() == 0
        kernel.assign(kernel + 1.0)  # what momentum does to masked entries between updates
        callback.on_train_batch_end(0)
        callback.on_train_batch_begin(1)
    finally:
        criteria.CRITERIA.pop("test_unit_spy", None)
    outputs = pruned.get_layer("masked_dense_1").keep("kernel", 1).numpy() > 0
    assert removed.sum() == 4 and outputs.sum() == 4  # 25% removed at step 0, 50% at step 1
    assert np.all(seen["dense_1"][removed] == 0) and np.all(seen["dense_1"][~removed][:, outputs] != 0)


@pytest.mark.parametrize("name", ["taylor", "apoz"])
def test_data_criteria_prune_during_fit(name):
    x, y = _mnist(flatten=True, n=400)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=2, frequency=1)
    pruned = _compile(tfprune.prune_units(tfprune.models.mlp(hidden=(32, 16), seed=0, flavor="tf_keras"), schedule, criterion=name))
    callback = tfprune.UpdatePruningStep(data=(x[:128], y[:128]))
    pruned.fit(x, y, batch_size=100, epochs=1, verbose=0, callbacks=[callback])
    assert [int((~k).sum()) for k in _kept_by_group(pruned)] == [16, 8]


def test_bn_gamma_on_vgg_keeps_largest_scales():
    model = tfprune.models.vgg(11, 0.125, flavor="tf_keras")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.gamma.assign(rng.normal(size=layer.gamma.shape))
    groups = build_channel_graph(model).prunable_groups()
    gammas = [np.abs(model.get_layer(next(p.layer for p in g.slices if p.weight == "gamma")).gamma.numpy())
              for g in groups]
    pruned = _compile(tfprune.prune_units(model, tfprune.ConstantSparsity(0.5, 0, frequency=100), criterion="bn_gamma"))
    x, y = _random_images((32, 32, 3), 32)
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    for gamma, keep in zip(gammas, _kept_by_group(pruned)):  # scored at step 0, before training
        np.testing.assert_array_equal(keep, _top(gamma, gamma.size // 2))


def test_errors_are_raised_early_and_name_the_fix():
    model = tfprune.models.mlp(hidden=(8, 4), seed=0, flavor="tf_keras")
    schedule = tfprune.ConstantSparsity(0.5, 0, frequency=100)
    with pytest.raises(ValueError, match="Unknown criterion 'l3'"):
        tfprune.prune_units(model, schedule, criterion="l3")
    with pytest.raises(ValueError, match="register_criterion"):
        tfprune.prune_units(model, schedule, criterion=lambda group, tensors: np.ones(group.size))
    with pytest.raises(ValueError, match="has no BatchNormalization"):
        tfprune.prune_units(model, schedule, criterion="bn_gamma")
    with pytest.raises(ValueError, match="scope"):
        tfprune.prune_units(model, schedule, scope="model")
    with pytest.raises(ValueError, match="round_to"):
        tfprune.prune_units(model, schedule, round_to=0)
    inputs = keras.Input((8,))
    hidden = L.Lambda(lambda t: t * 2, name="double")(L.Dense(8, name="hidden")(inputs))
    with pytest.raises(UnsupportedLayerError, match=r"'double' \(Lambda\).*exclude=\['double'\]"):
        tfprune.prune_units(keras.Model(inputs, L.Dense(2, name="out")(hidden)), schedule)

    x, y = _mnist(flatten=True, n=100)
    needs_data = _compile(tfprune.prune_units(model, schedule, criterion="taylor"))
    with pytest.raises(ValueError, match=r"'taylor' needs gradients.*UpdatePruningStep\(data=\(x, y\)\)"):
        needs_data.fit(x, y, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    with pytest.raises(ValueError, match="compile the model with a loss"):
        _fire_once(tfprune.prune_units(model, schedule, criterion="taylor"), data=(x, y))
    with pytest.raises(ValueError, match=r"calibration pair \(x, y\)"):
        tfprune.UpdatePruningStep(data=x)
    assert not tfprune.mask.has_wrappers(model)  # the caller's model is never changed


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_save_load_and_resume_match_the_uninterrupted_run(tmp_path):
    x, y = _mnist(flatten=True, n=1200)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10, frequency=2)

    def fit(model, rows):
        keras.utils.set_random_seed(1)
        model.fit(x[rows], y[rows], batch_size=100, epochs=1, shuffle=False, verbose=0,
                  callbacks=[tfprune.UpdatePruningStep()])

    model = _compile(tfprune.prune_units(tfprune.models.mlp(hidden=(64, 32), seed=0, flavor="tf_keras"), schedule))
    fit(model, slice(0, 600))  # 6 steps: pruning is half-way
    restored = []
    for suffix in (".keras", ".h5"):
        path = str(tmp_path / f"mid{suffix}")
        model.save(path)
        restored.append(keras.models.load_model(path))  # no custom_objects
    reference = tfprune.masks(model)
    assert 0 < min(float(m.mean()) for m in reference.values()) < 1
    for loaded in restored:
        assert all(int(layer.pruning_step.numpy()) == 6 for layer in tfprune.mask.masked_layers(loaded))
        for key, value in tfprune.masks(loaded).items():
            np.testing.assert_array_equal(value, reference[key])
    for each in [model] + restored:
        fit(each, slice(600, 1200))
    for loaded in restored:
        for ours, theirs in zip(model.get_weights(), loaded.get_weights()):
            np.testing.assert_array_equal(theirs, ours)
    assert [int((~k).sum()) for k in _kept_by_group(model)] == [32, 16]


def test_custom_training_loop_recipe_matches_fit():
    x, y = _mnist(flatten=True, n=600)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=8, frequency=2)

    def build():
        keras.utils.set_random_seed(0)
        return _compile(tfprune.prune_units(tfprune.models.mlp(hidden=(64, 32), seed=0, flavor="tf_keras"), schedule))

    fitted = build()
    fitted.fit(x, y, batch_size=100, epochs=2, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])

    model = build()
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = LOSS(labels, model(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    callback = tfprune.UpdatePruningStep()  # the recipe of tfprune.callbacks' docstring
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(2):
        for batch in range(6):
            callback.on_train_batch_begin(batch)
            train_step(x[batch * 100:(batch + 1) * 100], y[batch * 100:(batch + 1) * 100])
            callback.on_train_batch_end(batch)
        callback.on_epoch_end(epoch)
    expected = tfprune.masks(fitted)
    for key, value in tfprune.masks(model).items():
        np.testing.assert_array_equal(value, expected[key])
    for ours, theirs in zip(model.get_weights(), fitted.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_weight_pruning_on_a_unit_pruned_model(scope):
    x, y = _mnist(flatten=True, n=800)
    units = _compile(tfprune.prune_units(tfprune.models.mlp(hidden=(64, 32), seed=0, flavor="tf_keras"),
                                         tfprune.ConstantSparsity(0.5, 0, frequency=100)))
    units.fit(x[:400], y[:400], batch_size=100, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    unit_masks = tfprune.masks(units)
    # Steps count from the current step (4): end_step=2 means two more steps, not "already over".
    schedule = tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=2, frequency=2)
    both = _compile(tfprune.prune_weights(units, schedule, scope=scope))
    both.fit(x[400:], y[400:], batch_size=100, verbose=0, callbacks=[tfprune.UpdatePruningStep()])

    stripped = tfprune.strip(both)
    zeros = alive = 0
    for (layer, attribute), mask in tfprune.masks(both).items():
        survivors = unit_masks[(layer, attribute)] > 0
        kernel = getattr(stripped.get_layer(layer), attribute).numpy()
        assert np.all(mask[~survivors] == 0) and np.all(kernel[~survivors] == 0), layer  # units stay removed
        layer_zeros, layer_alive = int((mask[survivors] == 0).sum()), int(survivors.sum())
        if scope == "layer":
            assert layer_zeros == round(0.6 * layer_alive), layer
        zeros, alive = zeros + layer_zeros, alive + layer_alive
    assert zeros == round(0.6 * alive)


@pytest.mark.slow
def test_mirrored_strategy_gives_the_single_device_masks(tmp_path):
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from tfprune._keras import keras, tf
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
        import tfprune

        (x, y), _ = tfprune.data.mnist_5k()

        def masks(strategy):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=2)
                model = tfprune.prune_units(tfprune.models.mlp(hidden=(64, 32), seed=0, flavor="tf_keras"), schedule)
                model.compile(keras.optimizers.Adam(1e-3),
                              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.fit(x[:512], y[:512], batch_size=64, epochs=1, shuffle=False, verbose=0,
                      callbacks=[tfprune.UpdatePruningStep()])
            return {f"{layer}.{attribute}": m for (layer, attribute), m in tfprune.masks(model).items()}

        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        results = {"replicas": np.array(mirrored.num_replicas_in_sync)}
        with mirrored.scope():  # per-step global weight pruning writes its masks to every replica
            schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=7, frequency=1)
            model = tfprune.prune_weights(tfprune.models.mlp(hidden=(64, 32), seed=0, flavor="tf_keras"), schedule, scope="global")
            model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
        layers = [layer for layer in model.layers if hasattr(layer, "masks")]
        kept = sum(float(np.sum(layer.masks["kernel"].numpy())) for layer in layers)
        results["global_sparsity"] = np.array(1 - kept / sum(layer.masks["kernel"].shape.num_elements()
                                                             for layer in layers))
        results["global_replicas_agree"] = np.array(all(
            np.array_equal(*[replica.numpy() for replica in layer.masks["kernel"].values]) for layer in layers))
        results["replica_steps"] = np.array([int(replica.numpy()) for layer in layers
                                             for replica in layer.pruning_step.values])
        results.update({"mirrored:" + k: v for k, v in masks(mirrored).items()})
        results.update({"single:" + k: v for k, v in masks(tf.distribute.get_strategy()).items()})
        np.savez(sys.argv[1], **results)
    """)
    path = str(tmp_path / "masks.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(path)
    assert int(result["replicas"]) == 2
    assert float(result["global_sparsity"]) == pytest.approx(0.8, abs=1e-4) and bool(result["global_replicas_agree"])
    assert result["replica_steps"].tolist() == [8] * 6  # 512 / 64 steps, on both replicas of all 3 layers
    single = {k.split(":", 1)[1]: result[k] for k in result.files if k.startswith("single:")}
    assert single and {k.split(":", 1)[1] for k in result.files if k.startswith("mirrored:")} == set(single)
    for key, mask in single.items():
        np.testing.assert_array_equal(result["mirrored:" + key], mask)
    assert single["dense_0.kernel"].mean() == 0.5


def test_pruning_summaries_log_unit_sparsity(tmp_path):
    x, y = _mnist(flatten=True, n=200)
    pruned = _compile(tfprune.prune_units(tfprune.models.mlp(hidden=(16, 8), seed=0, flavor="tf_keras"),
                                          tfprune.ConstantSparsity(0.5, 0, frequency=100)))
    pruned.fit(x, y, batch_size=100, epochs=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), tfprune.PruningSummaries(str(tmp_path))])
    values = {}
    for path in tmp_path.glob("*tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    for step in (0, 1):
        assert values[("unit_sparsity/dense_0/kernel_axis1", step)] == 0.5
        assert values[("unit_sparsity/dense_1/kernel_axis0", step)] == 0.5
        assert values[("unit_sparsity/dense_1/kernel_axis1", step)] == 0.5
        assert values[("sparsity/dense_1/kernel", step)] == pytest.approx(0.75)
