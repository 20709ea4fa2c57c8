"""Weight pruning: TFMOT per layer, global ranking, sparsity maps, strip, one-shot sweep."""
import warnings

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.mask import MaskedLayer, PruneLowMagnitude, iter_layers


def _compile(model, lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _small_mlp():
    return tfprune.models.mlp(hidden=(64, 48, 32), seed=1, flavor="tf_keras")


def _fit(model, data, epochs=1):
    (x, y), _ = data
    model.fit(x, y, batch_size=100, epochs=epochs, verbose=0, callbacks=[tfprune.UpdatePruningStep()])


def _kernel_sparsity(model):
    stripped = tfprune.strip(model)
    return {layer.name: float(np.mean(layer.kernel.numpy() == 0)) for layer in stripped.layers
            if hasattr(layer, "kernel")}


def test_layer_scope_uses_tfmot_and_reaches_exact_sparsity(mnist_small):
    schedule = tfprune.ConstantSparsity(0.7, begin_step=0, frequency=1)
    pruned = _compile(tfprune.prune_weights(_small_mlp(), schedule, scope="layer"))
    assert any(isinstance(layer, PruneLowMagnitude) for layer in pruned.layers)
    _fit(pruned, mnist_small)
    for name, sparsity in _kernel_sparsity(pruned).items():
        kernel = tfprune.strip(pruned).get_layer(name).kernel
        assert abs(sparsity - 0.7) <= 1.0 / kernel.shape.num_elements() + 1e-9, name


def test_global_scope_exact_overall_and_uneven(mnist_small):
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=15, frequency=5)
    model = _small_mlp()
    pruned = _compile(tfprune.prune_weights(model, schedule, scope="global"))
    assert all(isinstance(pruned.get_layer(f"masked_{n}"), MaskedLayer) for n in ("dense_0", "logits"))
    _fit(pruned, mnist_small)
    stripped = tfprune.strip(pruned)
    kernels = [layer.kernel.numpy() for layer in stripped.layers if hasattr(layer, "kernel")]
    zeros = sum(int((k == 0).sum()) for k in kernels)
    total = sum(k.size for k in kernels)
    assert abs(zeros - round(0.8 * total)) <= 1
    per_layer = _kernel_sparsity(pruned)
    assert max(per_layer.values()) - min(per_layer.values()) > 0.1, per_layer


def test_global_pruning_is_uneven_on_the_seeds_mlp():
    model = tfprune.models.mlp(seed=0, flavor="tf_keras")
    pruned = tfprune.prune_weights(model, tfprune.ConstantSparsity(0.9, 0, frequency=1), scope="global")
    callback = tfprune.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    sparsities = _kernel_sparsity(pruned)
    # Glorot init: wide layers have smaller weights, so global ranking prunes them harder.
    assert sparsities["dense_0"] > 0.9 > sparsities["logits"]


def test_sparsity_maps():
    model = _small_mlp()
    names = ["dense_0", "dense_1", "dense_2", "logits"]
    erk = tfprune.weight.erk_sparsities(model, 0.8, names)
    sizes = {n: model.get_layer(n).kernel.shape.num_elements() for n in names}
    kept = sum((1 - erk[n]) * sizes[n] for n in names)
    assert kept == pytest.approx(0.2 * sum(sizes.values()))
    assert erk["dense_0"] > erk["logits"]
    schedule = tfprune.ConstantSparsity(0.5, 0, frequency=1)
    pruned = tfprune.prune_weights(model, schedule, sparsity_map={"dense_0": 0.9})
    callback = tfprune.UpdatePruningStep()
    _compile(pruned)
    x = np.zeros((8, 784), np.float32)
    pruned.fit(x, np.zeros(8), epochs=1, verbose=0, callbacks=[callback])
    sparsity = _kernel_sparsity(pruned)
    assert sparsity["dense_0"] == pytest.approx(0.9, abs=1e-3)
    assert sparsity["dense_1"] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="not prunable layers"):
        tfprune.prune_weights(model, schedule, sparsity_map={"nope": 0.5})
    with pytest.raises(ValueError, match="sparsity_map"):
        tfprune.prune_weights(model, schedule, scope="global", sparsity_map="erk")


def test_schedule_that_never_fires_warns():
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=50)  # TFMOT default frequency=100
    with pytest.warns(UserWarning, match="never reaching final_sparsity"):
        tfprune.prune_weights(_small_mlp(), schedule)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tfprune.prune_weights(_small_mlp(), tfprune.PolynomialDecay(0.0, 0.8, 0, 50, frequency=10))


def test_bad_arguments_raise_before_anything():
    with pytest.raises(TypeError, match="PruningSchedule"):
        tfprune.prune_weights(_small_mlp(), 0.5)
    with pytest.raises(ValueError, match="scope"):
        tfprune.prune_weights(_small_mlp(), tfprune.ConstantSparsity(0.5, 0), scope="model")
    with pytest.raises(ValueError, match="exclude"):
        tfprune.prune_weights(_small_mlp(), tfprune.ConstantSparsity(0.5, 0), exclude=["missing"])


def test_strip_leaves_zeros_and_no_wrapper(mnist_small):
    for scope in ("layer", "global"):
        pruned = _compile(tfprune.prune_weights(_small_mlp(), tfprune.ConstantSparsity(0.5, 0, frequency=1),
                                                scope=scope))
        _fit(pruned, mnist_small)
        stripped = tfprune.strip(pruned)
        assert not any(isinstance(layer, (MaskedLayer, PruneLowMagnitude)) for layer in iter_layers(stripped))
        x = mnist_small[1][0][:50]
        np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
        assert np.mean(stripped.get_layer("dense_0").kernel.numpy() == 0) >= 0.49


def test_global_weight_pruning_survives_save_and_resume(tmp_path, mnist_small):
    (x, y), _ = mnist_small
    schedule = tfprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=30, frequency=2)
    pruned = _compile(tfprune.prune_weights(_small_mlp(), schedule, scope="global"))
    pruned.fit(x[:1000], y[:1000], batch_size=100, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    path = str(tmp_path / "mid.keras")
    pruned.save(path)
    restored = keras.models.load_model(path)
    assert int(restored.get_layer("masked_dense_0").pruning_step.numpy()) == 10
    np.testing.assert_array_equal(restored.get_layer("masked_dense_0").masks["kernel"].numpy(),
                                  pruned.get_layer("masked_dense_0").masks["kernel"].numpy())
    for model in (pruned, restored):
        keras.utils.set_random_seed(3)
        model.fit(x[:2000], y[:2000], batch_size=100, epochs=1, verbose=0, shuffle=False,
                  callbacks=[tfprune.UpdatePruningStep()])
    np.testing.assert_allclose(restored.predict(x[:20], verbose=0), pruned.predict(x[:20], verbose=0), atol=1e-5)


def test_oneshot_k0_keeps_accuracy_and_unit_zeroes_columns(mnist_small):
    (x, y), (xt, yt) = mnist_small
    model = _compile(_small_mlp())
    model.fit(x, y, batch_size=100, epochs=1, verbose=0)
    same = tfprune.oneshot(model, "weight", 0.0)
    np.testing.assert_array_equal(same.predict(xt, verbose=0), model.predict(xt, verbose=0))
    unit = tfprune.strip(tfprune.oneshot(model, "unit", 0.5))  # the channel graph masks the next layer's rows too
    for name, previous in (("dense_0", None), ("dense_1", "dense_0"), ("dense_2", "dense_1")):
        kernel = unit.get_layer(name).kernel.numpy()
        dead = np.all(kernel == 0, axis=0)
        assert dead.sum() == round(0.5 * kernel.shape[1])
        if previous:
            assert np.array_equal(np.all(kernel == 0, axis=1), np.all(unit.get_layer(previous).kernel.numpy() == 0, 0))
    assert np.all(np.any(unit.get_layer("logits").kernel.numpy() != 0, axis=0))  # every class is kept
    weight = tfprune.strip(tfprune.oneshot(model, "weight", 0.9))
    kernel = weight.get_layer("dense_1").kernel.numpy()
    assert np.sum(kernel == 0) == round(0.9 * kernel.size)
    assert np.all(model.get_layer("dense_1").kernel.numpy() != 0)  # caller's model untouched
    with pytest.raises(ValueError, match="sparsity"):
        tfprune.oneshot(model, "weight", 90)


def test_report_lists_layers(capsys):
    pruned = tfprune.oneshot(_small_mlp(), "unit", 0.5)
    rows = tfprune.report(pruned)
    out = capsys.readouterr().out
    assert "dense_0" in out and "TOTAL" in out
    row = next(r for r in rows if r["name"] == "dense_0")
    assert row["live_units"] == 32 and row["units"] == 64


@pytest.mark.parametrize("count", [0, 1, 7, 500, 19999, 20000])
def test_in_graph_selection_matches_the_host_rule(count):
    """The radix select cuts exactly the entries `smallest_to_mask` cuts: negatives first, blocks of equal
    scores (zeros of pruned weights, ties at the cut-off) decided by position across the pieces."""
    from tfprune._keras import tf
    from tfprune.weight import masks_without_smallest, smallest_to_mask, sort_keys
    rng = np.random.default_rng(count)
    scores = np.abs(rng.normal(size=20000)).astype(np.float32)
    scores[rng.random(20000) < 0.3] = 0.0
    scores[rng.random(20000) < 0.05] = -1.0
    scores[rng.choice(20000, 40)] = scores[123]  # a block of ties
    pieces = [tf.constant(piece) for piece in np.split(scores, [7000, 7001])]
    masks, non_finite = masks_without_smallest(*sort_keys(pieces), tf.constant(count))
    np.testing.assert_array_equal(np.concatenate([mask.numpy() for mask in masks]), smallest_to_mask(scores, count))
    assert int(non_finite) == 0


@pytest.mark.parametrize("variant", ["plain", "after units"])
def test_per_step_global_pruning_matches_a_full_ranking(variant):
    """Update after update (weights moving in between, ties at the cut-off once), the compiled update cuts
    exactly the smallest |w ⊙ m|, the same entries a full host ranking cuts; on a model whose units were
    pruned first, their entries rank lowest and do not count."""
    from tfprune.weight import WeightPruner, smallest_to_mask
    model = tfprune.models.mlp(hidden=(63, 31), seed=0, flavor="tf_keras")
    if variant == "after units":  # every third unit removed
        model = tfprune.prune_units(model, tfprune.ConstantSparsity(0.3, 0))
        for keep in [keep for layer in iter_layers(model) if isinstance(layer, MaskedLayer)
                     for keep in layer.keeps.values()]:
            keep.assign((np.arange(keep.shape[0]) % 3 > 0).astype(np.float32))
    model = tfprune.prune_weights(model, tfprune.PolynomialDecay(0.0, 0.9, 0, 20, frequency=1), scope="global")
    layers = [layer for layer in iter_layers(model) if isinstance(layer, MaskedLayer)]
    pruner = WeightPruner.from_model(layers)[0]
    rng = np.random.default_rng(0)

    def kernels_and_scores():
        kernels = [layer.layer.kernel.numpy() for layer in layers]
        return kernels, np.concatenate([np.where(l.channel_mask_tensor("kernel").numpy() > 0,
                                                 np.abs(k * l.masks["kernel"].numpy()), -1.0).ravel()
                                        for k, l in zip(kernels, layers)])

    for step, sparsity in enumerate(np.linspace(0.02, 0.9, 25)):
        for layer in layers:  # training moves the weights between updates
            layer.layer.kernel.assign(layer.layer.kernel + rng.normal(scale=1e-3, size=layer.layer.kernel.shape))
        _, scores = kernels_and_scores()
        alive = np.count_nonzero(scores >= 0)
        count = scores.size - alive + int(round(sparsity * alive))
        if step == 10:  # the cut-off value and the next six scores become equal: ties decided by position
            kernels, scores = kernels_and_scores()
            order = np.flatnonzero(scores > 0)[np.argsort(scores[scores > 0], kind="stable")]
            tied = order[count - np.count_nonzero(scores <= 0) - 1:][:7]
            flat = np.concatenate([k.ravel() for k in kernels])
            flat[tied] = np.sign(flat[tied]) * scores[tied[0]]
            for layer, part in zip(layers, np.split(flat, np.cumsum([k.size for k in kernels])[:-1])):
                layer.layer.kernel.assign(part.reshape(layer.layer.kernel.shape))
        _, scores = kernels_and_scores()
        expected = smallest_to_mask(scores, count)
        pruner.update(sparsity, step)
        np.testing.assert_array_equal(np.concatenate([l.masks["kernel"].numpy().ravel() for l in layers]), expected)
        assert all(int(layer.mask_step.numpy()) == step for layer in layers)


def test_non_finite_weights_stop_the_update_and_name_the_layer():
    """An inf in a kernel would turn into NaN under the mask; the update refuses, naming the weight, and
    leaves every mask as it was."""
    from tfprune.weight import WeightPruner
    model = tfprune.prune_weights(tfprune.models.mlp(hidden=(16, 8), seed=0, flavor="tf_keras"), tfprune.ConstantSparsity(0.5, 0),
                                  scope="global")
    layers = [layer for layer in iter_layers(model) if isinstance(layer, MaskedLayer)]
    layers[1].layer.kernel[0, 0].assign(np.inf)
    with pytest.raises(ValueError, match="dense_1.kernel.*inf or NaN"):
        WeightPruner.from_model(layers)[0].update(0.5, 0)
    assert all(np.all(layer.masks["kernel"].numpy() == 1) for layer in layers)



def test_oneshot_leaves_the_classifier_behind_a_softmax_whole():
    L = keras.layers
    model = keras.Sequential([keras.Input((20,)), L.Dense(16, activation="relu", name="hidden"),
                              L.Dense(10, name="classifier"), L.Softmax()])
    for method in ("unit", "weight"):
        pruned = tfprune.strip(tfprune.oneshot(model, method, 0.5))
        assert np.all(np.any(pruned.get_layer("classifier").kernel.numpy() != 0, axis=0))  # all 10 classes
        assert np.count_nonzero(pruned.get_layer("hidden").kernel.numpy()) == 160
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        tfprune.oneshot(model, "unit", 1.0)
