"""Pruning at initialization: each scorer against an independent computation, SynFlow's invariants, masks
that never revive, the Frankle et al. ablations and layer collapse. Sweeps that train are Study cells
(tests/test_study.py).

Inputs here are random numbers for checking arithmetic, not a dataset.
"""
import numpy as np
import pytest

from tfprune._keras import keras, tf
from tfprune.mask import MaskedLayer, masks, with_masks
from tfprune import models
from tfprune.pai import _keep_highest, prune_at_init, score


def tiny(bias=True, seed=0):
    """Dense 4-3-2 with ReLU; the output layer has logits."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", use_bias=bias, name="hidden",
                           kernel_initializer=keras.initializers.GlorotUniform(seed),
                           bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=seed + 1))(inputs)
    out = keras.layers.Dense(2, use_bias=bias, name="out",
                             kernel_initializer=keras.initializers.GlorotUniform(seed + 2))(h)
    return keras.Model(inputs, out)


def toy_data(n=8, seed=0, features=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), rng.integers(0, 2, n)


def kernel_masks(model):
    return {name: mask for (name, attribute), mask in masks(model).items()}


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_gradients(model, x, y):
    """∂(mean cross-entropy)/∂kernels of `tiny` by hand-written backpropagation."""
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    a = x @ w1 + b1
    h = np.maximum(a, 0)
    d = (softmax(h @ w2 + b2) - np.eye(2)[y]) / len(y)
    return {"hidden": x.T @ ((d @ w2.T) * (a > 0)), "out": h.T @ d}


def test_magnitude_and_random_scores():
    model = tiny()
    w1, _, w2, _ = model.get_weights()
    scores = score(model, "magnitude")
    np.testing.assert_array_equal(scores["hidden"], np.abs(w1))
    np.testing.assert_array_equal(scores["out"], np.abs(w2))
    first, again, other = score(model, "random", seed=3), score(model, "random", seed=3), score(model, "random", seed=4)
    np.testing.assert_array_equal(first["hidden"], again["hidden"])
    assert not np.array_equal(first["hidden"], other["hidden"])
    assert first["hidden"].shape == (4, 3) and first["out"].shape == (3, 2)


def test_snip_matches_numpy_backprop_summed_over_batches():
    model = tiny()
    x, y = toy_data()
    scores = score(model, "snip", data=(x, y), batches=2, batch_size=4)
    halves = [numpy_gradients(model, x[i:i + 4].astype(np.float64), y[i:i + 4]) for i in (0, 4)]
    for name, kernel in zip(["hidden", "out"], model.get_weights()[::2]):
        expected = np.abs(kernel * (halves[0][name] + halves[1][name]))
        np.testing.assert_allclose(scores[name], expected, rtol=1e-4, atol=1e-9)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    from_dataset = score(model, "snip", data=dataset, batches=2)
    np.testing.assert_allclose(from_dataset["out"], scores["out"], rtol=1e-6)


def test_grasp_matches_explicit_hessian_times_gradient():
    model = tiny()
    x, y = toy_data()
    temperature = 2.0
    kernels = [model.get_layer("hidden").kernel, model.get_layer("out").kernel]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x) / temperature,
                                                                              from_logits=True))
        g = tf.concat([tf.reshape(t, [-1]) for t in inner.gradient(loss, kernels)], 0)
    hessian = np.concatenate([outer.jacobian(g, k).numpy().reshape(g.shape[0], -1) for k in kernels], axis=1)
    hg = hessian @ g.numpy()
    theta = np.concatenate([k.numpy().ravel() for k in kernels])
    scores = score(model, "grasp", data=(x, y), temperature=temperature)
    flat = np.concatenate([scores["hidden"].ravel(), scores["out"].ravel()])
    np.testing.assert_allclose(flat, theta * hg, rtol=1e-4, atol=1e-10)
    absolute = score(model, "grasp_abs", data=(x, y), temperature=temperature)
    np.testing.assert_allclose(absolute["out"], np.abs(scores["out"]), rtol=1e-12)


def test_grasp_sign_on_two_weight_toy():
    """logits = (w1, w2)·x with x = 1, label 0, L = -log softmax(z / T)_0. With p = softmax(w / T):
    g = (-p1, p1) / T and H = p0·p1 / T² · [[1, -1], [-1, 1]], so Hg = c·(-1, 1), c = 2·p0·p1² / T³,
    and θ⊙Hg = c·(-w1, w2). For w = (2, 0.5) GraSP prunes w1 first, the *larger* weight of the true class
    (removing it raises the loss and the gradient norm), where magnitude and grasp_abs prune w2."""
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="out")(inputs))
    w1, w2, temperature = 2.0, 0.5, 2.0
    model.get_layer("out").set_weights([np.array([[w1, w2]], "float32")])
    data = (np.ones((1, 1), "float32"), np.array([0]))
    p0, p1 = softmax(np.array([[w1, w2]]) / temperature)[0]
    c = 2 * p0 * p1 ** 2 / temperature ** 3
    np.testing.assert_allclose(score(model, "grasp", data=data, temperature=temperature)["out"],
                               [[-c * w1, c * w2]], rtol=1e-4)
    for method, kept in [("grasp", [[0, 1]]), ("grasp_abs", [[1, 0]]), ("magnitude", [[1, 0]])]:
        pruned = prune_at_init(model, method, 0.5, data=data, temperature=temperature)
        np.testing.assert_array_equal(kernel_masks(pruned)["out"], kept, err_msg=method)
    inverted = prune_at_init(model, "grasp", 0.5, data=data, temperature=temperature, ablation="invert")
    np.testing.assert_array_equal(kernel_masks(inverted)["out"], [[1, 0]])


def bn_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="d2")(x))
    rng = np.random.default_rng(0)
    model.get_layer("d1").set_weights([rng.normal(size=(3, 4)), -rng.uniform(0.1, 1, 4)])
    model.get_layer("bn").set_weights([-rng.uniform(0.5, 2, 4), -rng.uniform(0, 1, 4),
                                       -rng.uniform(0, 1, 4), rng.uniform(0.5, 2, 4)])
    model.get_layer("d2").set_weights([rng.normal(size=(4, 2))])
    return model


def test_synflow_matches_numpy_with_abs_biases_and_batchnorm_buffers_in_float64():
    model = bn_model()
    w1, b1, gamma, beta, mean, var, w2 = [np.abs(w.astype(np.float64)) for w in model.get_weights()]
    scale = gamma / np.sqrt(var + model.get_layer("bn").epsilon)
    h = np.ones((1, 3)) @ w1 + b1
    n = (h - mean) * scale + beta
    a = np.maximum(n, 0)
    grad_w2 = a.T @ np.ones((1, 2))
    grad_w1 = np.ones((3, 1)) @ ((np.ones((1, 2)) @ w2.T) * (n > 0) * scale)
    scores = score(model, "synflow")
    assert scores["d1"].dtype == np.float64
    np.testing.assert_allclose(scores["d1"], w1 * grad_w1, rtol=1e-10)
    np.testing.assert_allclose(scores["d2"], w2 * grad_w2, rtol=1e-10)


def test_synflow_layer_sums_are_conserved_and_equal_r():
    model = models.mlp(input_shape=(6,), hidden=(5, 4, 3), num_classes=2, seed=0, flavor="tf_keras")
    product = np.ones((1, 6))
    for kernel in model.get_weights():
        product = product @ np.abs(kernel.astype(np.float64))
    sums = [s.sum() for s in score(model, "synflow").values()]
    np.testing.assert_allclose(sums, product.sum(), rtol=1e-6)


def test_synflow_float64_keeps_a_deep_narrow_net_from_underflowing():
    inputs = keras.Input((4,))
    x = inputs
    for i in range(20):
        x = keras.layers.Dense(4, use_bias=False, name=f"d{i}",
                               kernel_initializer=keras.initializers.RandomUniform(-1e-3, 1e-3, seed=i))(x)
    model = keras.Model(inputs, x)
    # float32 reference: R ~ (4 · 5e-4)^20 ~ 1e-54 is below float32's smallest subnormal, so all scores tie at 0.
    absolute = keras.models.clone_model(model)
    absolute.set_weights([np.abs(w) for w in model.get_weights()])
    with tf.GradientTape() as tape:
        r = tf.reduce_sum(absolute(tf.ones((1, 4))))
    assert r.numpy() == 0 and all(not g.numpy().any() for g in tape.gradient(r, absolute.trainable_variables))
    scores = score(model, "synflow")
    flat = np.concatenate([s.ravel() for s in scores.values()])
    assert np.all(np.isfinite(flat)) and np.all(flat > 0)
    assert np.unique(flat).size == flat.size
    sums = [s.sum() for s in scores.values()]
    np.testing.assert_allclose(sums, sums[0], rtol=1e-6)


def test_synflow_leaves_caller_weights_bit_exact():
    model = bn_model()
    masked = with_masks(model, {"d1": (np.arange(12).reshape(3, 4) % 2).astype("float32")})
    for m in (model, masked):
        before = [w.copy() for w in m.get_weights()]
        score(m, "synflow")
        prune_at_init(m, "synflow", 0.5, rounds=3)
        after = m.get_weights()
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow"])
def test_masked_entries_score_minus_inf(method):
    mask = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 1, 1]], "float32")
    masked = with_masks(tiny(), {"hidden": mask})
    scores = score(masked, method, data=toy_data())
    assert np.all(np.isneginf(scores["hidden"][mask == 0]))
    assert np.all(np.isfinite(scores["hidden"][mask == 1])) and np.all(np.isfinite(scores["out"]))


def test_keep_highest_never_revives_even_top_scored_pruned_entries():
    current = [np.array([[0, 1, 1, 1]], "float32"), np.array([[1, 0]], "float32")]
    scores = [np.array([[np.inf, 1.0, 3.0, 2.0]]), np.array([[0.5, np.inf]])]
    new = _keep_highest(scores, current, density=0.5, scope="global")
    np.testing.assert_array_equal(new[0], [[0, 1, 1, 1]])  # 3 of 6 pruned: the two old ones and the 0.5
    np.testing.assert_array_equal(new[1], [[0, 0]])


@pytest.mark.parametrize("method, extra", [("magnitude", {"ablation": "invert"}), ("random", {"rounds": 4}),
                                           ("snip", {"rounds": 3}), ("synflow", {"rounds": 5})])
def test_pruning_a_masked_model_again_never_revives(method, extra):
    first = prune_at_init(models.mlp(input_shape=(6,), hidden=(8,), num_classes=4, seed=0, flavor="tf_keras"), "magnitude", 0.5)
    second, info = prune_at_init(first, method, 0.75, data=toy_data(features=6), return_info=True, **extra)
    old, new = kernel_masks(first), kernel_masks(second)
    assert all(np.all(new[name] <= old[name]) for name in old)
    total = sum(m.size for m in new.values())
    assert sum(m.sum() for m in new.values()) == total - round(0.75 * total)
    assert info["achieved_sparsity"] == pytest.approx(round(0.75 * total) / total)


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_iterative_rounds_reach_the_exact_count(schedule):
    model = models.mlp(input_shape=(10,), hidden=(20, 20), num_classes=3, seed=0, flavor="tf_keras")
    pruned, info = prune_at_init(model, "synflow", 0.95, rounds=7, schedule=schedule, return_info=True)
    total = 10 * 20 + 20 * 20 + 20 * 3
    assert sum(m.sum() for m in kernel_masks(pruned).values()) == total - round(0.95 * total)
    assert info["rounds"] == 7 and info["collapsed_layers"] == []


def test_layer_scope_prunes_each_layer_to_the_sparsity():
    pruned = prune_at_init(models.mlp(input_shape=(10,), hidden=(20,), num_classes=4, seed=0, flavor="tf_keras"), "magnitude", 0.75,
                           scope="layer")
    found = kernel_masks(pruned)
    assert found["dense_0"].sum() == 50 and found["logits"].sum() == 20


def test_shuffle_keeps_layer_counts_and_moves_positions():
    model, data = models.mlp(input_shape=(10,), hidden=(20,), num_classes=4, seed=0, flavor="tf_keras"), toy_data(16, features=10)
    plain = kernel_masks(prune_at_init(model, "snip", 0.8, data=data))
    shuffled = kernel_masks(prune_at_init(model, "snip", 0.8, data=data, ablation="shuffle", seed=1))
    again = kernel_masks(prune_at_init(model, "snip", 0.8, data=data, ablation="shuffle", seed=1))
    for name in plain:
        assert shuffled[name].sum() == plain[name].sum()
        assert not np.array_equal(shuffled[name], plain[name])
        np.testing.assert_array_equal(shuffled[name], again[name])


def test_invert_keeps_exactly_the_complement():
    model = tiny()
    plain = kernel_masks(prune_at_init(model, "magnitude", 0.5))
    inverted = kernel_masks(prune_at_init(model, "magnitude", 0.5, ablation="invert"))
    for name in plain:
        np.testing.assert_array_equal(inverted[name], 1 - plain[name])


def test_reinit_keeps_masks_and_draws_new_weights():
    model = tiny()
    original = [w.copy() for w in model.get_weights()]
    plain = prune_at_init(model, "magnitude", 0.5)
    fresh = prune_at_init(model, "magnitude", 0.5, ablation="reinit")
    for name, mask in kernel_masks(plain).items():
        np.testing.assert_array_equal(kernel_masks(fresh)[name], mask)
    inner = {layer.layer.name: layer.layer for layer in fresh.layers if isinstance(layer, MaskedLayer)}
    kept = kernel_masks(plain)["hidden"] == 1
    new_kernel = inner["hidden"].kernel.numpy()
    assert not np.allclose(new_kernel[kept], original[0][kept])
    assert np.all(new_kernel[~kept] == 0)
    assert all(np.array_equal(a, b) for a, b in zip(original, model.get_weights()))


def test_layer_collapse_is_warned_and_reported():
    model = tiny()
    out = model.get_layer("out")
    out.set_weights([out.get_weights()[0] * 1e-6, out.get_weights()[1]])
    with pytest.warns(UserWarning, match="layer collapse"):
        _, info = prune_at_init(model, "magnitude", 6 / 18, return_info=True)
    assert info["collapsed_layers"] == ["out"]
    assert info["layer_density"]["out"] == 0.0


def test_exclude_leaves_the_output_layer_dense():
    pruned, info = prune_at_init(tiny(), "magnitude", 0.5, exclude=("out",), return_info=True)
    assert set(kernel_masks(pruned)) == {"hidden"} and set(info["layer_density"]) == {"hidden"}


def test_masked_weights_stay_zero_after_fit():
    x, y = toy_data(64)
    pruned = prune_at_init(tiny(), "snip", 0.6, data=(x, y))
    before = kernel_masks(pruned)
    pruned.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = {layer.layer.name: layer.layer.kernel.numpy().copy() for layer in pruned.layers
             if isinstance(layer, MaskedLayer)}
    pruned.fit(x, y, epochs=3, batch_size=16, verbose=0)
    for layer in pruned.layers:
        if isinstance(layer, MaskedLayer):
            kernel, mask = layer.layer.kernel.numpy(), before[layer.layer.name]
            assert np.all(kernel[mask == 0] == 0)
            assert not np.allclose(kernel[mask == 1], start[layer.layer.name][mask == 1])
            np.testing.assert_array_equal(kernel_masks(pruned)[layer.layer.name], mask)


@pytest.mark.parametrize("call, match", [
    (lambda m: score(m, "snap"), "`method` must be one of"),
    (lambda m: score(m, "snip"), "needs `data`"),
    (lambda m: score(m, "snip", data=toy_data(), batches=3, batch_size=4), "holds only 2 batch"),
    (lambda m: score(m, "magnitude", exclude=("nope",)), "does not have"),
    (lambda m: prune_at_init(m, "magnitude", 1.0), "sparsity = 1 - 1/c"),
    (lambda m: prune_at_init(m, "magnitude", 0.5, scope="model"), "`scope` must be one of"),
    (lambda m: prune_at_init(m, "magnitude", 0.5, ablation="flip"), "`ablation` must be one of"),
    (lambda m: prune_at_init(m, "magnitude", 0.5, rounds=0), "`rounds` must be"),
])
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny())


def test_softmax_output_is_refused_for_loss_based_methods():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(ValueError, match="needs logits"):
        score(model, "snip", data=toy_data())


def test_rounds_show_progress_unless_verbose_0(capsys):
    prune_at_init(tiny(), "synflow", 0.5, rounds=3)
    assert "3/3" in capsys.readouterr().out
    prune_at_init(tiny(), "synflow", 0.5, rounds=3, verbose=0)
    assert capsys.readouterr().out == ""
