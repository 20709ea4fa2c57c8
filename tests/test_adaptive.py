"""PQ Index, SAP rounds and driver, PQIndexMonitor, DynamicPruner."""
import glob
import math

import numpy as np
import pytest

from tfprune import adaptive, lottery, mask, models
from tfprune._keras import keras, tf
from tfprune.adaptive import DynamicPruner, PQIndexMonitor, retained_bound, sap_round
from tfprune.pqi import layer_pq_indices, pq_index


def _k_sparse(d=200, k=30, magnitude=2.5, seed=0):
    rng = np.random.default_rng(seed)
    w = np.zeros(d)
    w[rng.choice(d, k, replace=False)] = magnitude * rng.choice([-1.0, 1.0], k)
    return w


def _compile(model):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


# -- PQ Index ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p,q", [(0.5, 1.0), (1.0, 2.0), (0.3, 0.9)])
def test_equal_magnitude_k_sparse_vector(p, q):
    d, k = 200, 30
    w = _k_sparse(d, k)
    assert pq_index(w, p, q) == pytest.approx(1 - (k / d) ** (1 / p - 1 / q), rel=1e-12)
    assert retained_bound(w, p, q, eta_r=0.0) == pytest.approx(k, rel=1e-9)


def test_gaussian_reference_values():
    w = np.random.default_rng(0).standard_normal(1_000_000)
    assert pq_index(w, 0.5, 1.0) == pytest.approx(0.153, abs=0.01)
    assert retained_bound(w, 1.0, 2.0) / w.size == pytest.approx(2 / math.pi, abs=0.01)


def test_masked_entries_are_left_out_and_lists_concatenate():
    w = _k_sparse()
    alive = (w != 0).astype(np.float32)
    assert pq_index(w, mask=alive) == pytest.approx(0.0, abs=1e-12)  # survivors all equal: not sparse
    a, b = np.arange(1.0, 7.0).reshape(2, 3), np.array([0.5, -8.0])
    assert pq_index([a, b]) == pytest.approx(pq_index(np.concatenate([a.ravel(), b])))
    assert pq_index([a, b], mask=[None, np.array([1, 0])]) == pytest.approx(pq_index(np.append(a.ravel(), 0.5)))


def test_degenerate_inputs_and_argument_errors():
    assert pq_index(np.zeros(10)) == 0.0
    assert pq_index(np.ones(4), mask=np.zeros(4)) == 0.0
    assert retained_bound(np.zeros(10)) == pytest.approx(10.0)  # index 0: nothing marked redundant
    for p, q in [(1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (-1.0, 1.0)]:
        with pytest.raises(ValueError, match="0 < p < q"):
            pq_index(np.ones(3), p, q)
    with pytest.raises(ValueError, match="mask"):
        pq_index(np.ones(3), mask=np.ones(4))
    with pytest.raises(ValueError, match="inf or NaN"):
        pq_index(np.array([1.0, np.nan]))


def test_layer_pq_indices_excludes_masked_entries():
    model = models.mlp(hidden=(16, 8), seed=1, flavor="tf_keras")
    kernel = model.get_layer("dense_0").kernel.numpy()
    m = (np.random.default_rng(0).random(kernel.shape) > 0.5).astype(np.float32)
    masked = mask.with_masks(model, {"dense_0": m})
    values = layer_pq_indices(masked)
    assert set(values) == {"dense_0", "dense_1", "logits", "global"}
    assert values["dense_0"] == pytest.approx(pq_index(kernel, mask=m), rel=1e-6)
    assert values["dense_1"] == pytest.approx(pq_index(model.get_layer("dense_1").kernel.numpy()), rel=1e-6)
    kernels = [model.get_layer(n).kernel.numpy() for n in ("dense_0", "dense_1", "logits")]
    assert values["global"] == pytest.approx(pq_index(kernels, mask=[m, None, None]), rel=1e-6)


# -- SAP rounds ----------------------------------------------------------------------------------------------

def _pruned(model, **kwargs):
    return sap_round(model, **kwargs)[1]["pruned"]


def test_sap_count_follows_the_formula_per_layer():
    model = models.mlp(hidden=(32, 16), seed=2, flavor="tf_keras")
    _, info = sap_round(model, scope="layer")
    for group in info["groups"]:
        kernel = model.get_layer(group["group"]).kernel.numpy()
        r = retained_bound(kernel)
        assert group["pruned"] == math.floor(kernel.size * min(1 - r / kernel.size, 0.9) + 1e-9)


def test_larger_gamma_and_eta_prune_more_until_beta_caps():
    model = models.mlp(hidden=(32, 16), seed=2, flavor="tf_keras")
    by_gamma = [_pruned(model, gamma=g, scope="global") for g in (0.5, 1.0, 2.0, 4.0, 50.0, 100.0)]
    assert all(a < b for a, b in zip(by_gamma[:4], by_gamma[1:5]))
    d = sum(l.kernel.shape.num_elements() for l in model.layers if hasattr(l, "kernel"))
    assert by_gamma[-2] == by_gamma[-1] == math.floor(0.9 * d)
    by_eta = [_pruned(model, eta_r=e, scope="layer") for e in (0.0, 0.1, 0.5, 1.0)]
    assert all(a < b for a, b in zip(by_eta, by_eta[1:]))


def test_masks_only_shrink_across_rounds_in_every_scope():
    for scope in ("layer", "global", "neuron"):
        model = models.mlp(hidden=(24, 12), seed=3, flavor="tf_keras")
        previous = None
        for _ in range(3):
            model, info = sap_round(model, gamma=2.0, scope=scope)
            current = mask.masks(model)
            assert info["pruned"] > 0
            if previous is not None:
                for key, m in current.items():
                    assert np.all(m <= previous[key]), (scope, key)
            previous = current


def test_neuron_scope_prunes_within_each_column():
    model = models.mlp(hidden=(8,), seed=4, flavor="tf_keras")
    kernel = model.get_layer("dense_0").kernel.numpy()
    kernel[:, 0] = 0.0
    kernel[:3, 0] = 1.0  # a 3-sparse column: SAP keeps exactly those 3
    model.get_layer("dense_0").kernel.assign(kernel)
    pruned, info = sap_round(model, scope="neuron", beta=0.999)
    column = mask.masks(pruned)[("dense_0", "kernel")][:, 0]
    assert column[:3].tolist() == [1, 1, 1] and column.sum() == 3
    assert len(info["groups"]) == 8 + 10


def test_sap_round_argument_errors():
    model = models.mlp(hidden=(8,), seed=0, flavor="tf_keras")
    with pytest.raises(ValueError, match="scope"):
        sap_round(model, scope="filter")
    with pytest.raises(ValueError, match="beta"):
        sap_round(model, beta=1.0)
    with pytest.raises(ValueError, match="exclude"):
        sap_round(model, exclude=("nope",))


def test_sap_runs_sap_rounds_in_the_iterative_loop(mnist_small, tmp_path):
    (x, y), test = mnist_small
    model, rows = adaptive.sap(lambda: models.mlp(hidden=(32,), seed=0, flavor="tf_keras"), ((x[:1000], y[:1000]), test), rounds=2,
                               fit_kwargs={"epochs": 2, "batch_size": 50}, directory=tmp_path, rewind="weights",
                               rewind_step=20)
    assert [r["round"] for r in rows] == [0, 1, 2] and [r["steps"] for r in rows] == [40, 20, 20]
    assert rows[0]["remaining"] == 1.0 > rows[1]["remaining"] > rows[2]["remaining"]
    assert all(0 <= r["pqi_global"] < 1 and 0.5 < r["accuracy"] <= 1 for r in rows)
    first, second = (lottery.load_masks(row["checkpoint"]) for row in rows[1:])
    assert all(np.all(second[key] <= first[key]) for key in first)
    assert all(np.array_equal(mask.masks(model)[key], second[key]) for key in second)
    # Round 1's masks are sap_round's on the trained dense model of round 0.
    dense = models.mlp(hidden=(32,), seed=0, flavor="tf_keras")
    lottery.restore(dense, lottery.load_rewind_point(rows[0]["checkpoint"]), optimizer=False)
    expected = mask.masks(sap_round(dense)[0])
    assert expected.keys() == first.keys() and all(np.array_equal(expected[key], first[key]) for key in first)


# -- PQIndexMonitor ------------------------------------------------------------------------------------------

def test_pq_index_monitor_fills_history_and_tensorboard(mnist_small, tmp_path):
    (x, y), _ = mnist_small
    model = _compile(models.mlp(hidden=(16,), seed=0, flavor="tf_keras"))
    monitor = PQIndexMonitor(log_dir=str(tmp_path))
    history = model.fit(x[:400], y[:400], epochs=2, batch_size=100, verbose=0, callbacks=[monitor])
    assert len(history.history["pqi_global"]) == 2
    assert len(history.history["pqi/dense_0"]) == 2 and len(history.history["pqi/logits"]) == 2
    assert history.history["pqi_global"][-1] == pytest.approx(layer_pq_indices(model)["global"])
    events = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    logged = {}
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            logged.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    assert logged["pqi/global"] == pytest.approx(history.history["pqi_global"])
    assert logged["pqi/dense_0"] == pytest.approx(history.history["pqi/dense_0"])
    assert PQIndexMonitor.from_config(monitor.get_config()).get_config() == monitor.get_config()


# -- DynamicPruner -------------------------------------------------------------------------------------------

def _handcrafted():
    """Three parallel 8x6 Dense layers: spread column norms, equal column norms, and one that will keep moving."""
    inputs = keras.Input((8,))
    branches = [keras.layers.Dense(6, use_bias=False, name=name)(inputs) for name in ("spread", "even", "moving")]
    x = keras.layers.Concatenate(name="concat")(branches)
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="out")(x))
    rng = np.random.default_rng(0)
    spread = np.ones((8, 6), np.float32) * np.array([1.0, 1.0, 1.0, 1.0, 0.05, 0.1], np.float32)
    even = (rng.choice([-1.0, 1.0], (8, 6)) * rng.uniform(0.5, 1.5, (8, 6))).astype(np.float32)
    even /= np.linalg.norm(even, axis=0)  # every column norm 1: cv = 0
    for name, kernel in (("spread", spread), ("even", even), ("moving", even)):
        model.get_layer(name).kernel.assign(kernel)
    return DynamicPruner.prepare(model), even


def _kernel_mask(model, name):
    return mask.masks(model)[(name, "kernel")]


def test_dynamic_pruner_follows_its_rule():
    model, even = _handcrafted()
    assert [l.layer.name for l in mask.masked_layers(model)] == ["spread", "even", "moving", "out"]
    pruner = DynamicPruner(weight_step=0.25, stable_tolerance=0.05)
    pruner.set_model(model)
    pruner.on_train_begin()
    model.get_layer("masked_moving").layer.kernel.assign(even * 1.5)  # mean column norm +50 %
    pruner.on_epoch_end(0, {"val_accuracy": 0.9})
    decisions = {h["layer"]: h for h in pruner.history}
    assert set(decisions) == {"spread", "even", "moving"}  # the output layer is excluded by default
    assert decisions["spread"]["decision"] == "unit" and decisions["spread"]["cv"] > 0.5
    assert _kernel_mask(model, "spread").sum(axis=0).tolist() == [8, 8, 8, 8, 0, 0]
    assert decisions["even"]["decision"] == "weight" and decisions["even"]["cv"] == pytest.approx(0, abs=1e-6)
    kept = _kernel_mask(model, "even")
    assert kept.sum() == 48 - 12
    assert np.abs(even[kept == 0]).max() <= np.abs(even[kept == 1]).min()
    assert decisions["moving"]["decision"] == "wait" and decisions["moving"]["trend"] == pytest.approx(0.5)
    assert _kernel_mask(model, "moving").all()
    assert np.all(model.get_layer("masked_even").layer.kernel.numpy()[kept == 0] == 0)

    pruner.on_epoch_end(1, {"val_accuracy": 0.9})  # nothing moved since: "moving" is stable now
    second = {h["layer"]: h["decision"] for h in pruner.history[3:]}
    assert second["moving"] == "weight" and second["even"] == "weight"
    assert second["spread"] == "weight"  # the 4 equal survivors are no longer spread


def test_dynamic_pruner_caps_sparsity():
    model, _ = _handcrafted()
    pruner = DynamicPruner(weight_step=0.5, max_sparsity=0.6, exclude=["spread", "moving"])
    pruner.set_model(model)
    pruner.on_train_begin()
    for epoch in range(4):
        pruner.on_epoch_end(epoch, {"val_accuracy": 0.9})
    assert [h["decision"] for h in pruner.history if h["layer"] == "even"] == ["weight", "weight", "capped", "capped"]
    assert {h["layer"] for h in pruner.history} == {"even", "out"}  # an explicit exclude replaces the default
    assert _kernel_mask(model, "even").sum() == math.ceil(48 * 0.4)


def test_dynamic_pruner_stops_and_restores_on_accuracy_drop():
    model, _ = _handcrafted()
    layer = model.get_layer("masked_even")
    pruner = DynamicPruner(weight_step=0.25, tolerance=0.05, stable_tolerance=1.0)
    pruner.set_model(model)
    pruner.on_train_begin()
    pruner.on_epoch_end(0, {"val_accuracy": 0.90})  # passes; prunes A -> B
    good_mask, good_kernel = _kernel_mask(model, "even"), layer.layer.kernel.numpy()
    pruner.on_epoch_end(1, {"val_accuracy": 0.88})  # within tolerance: B is validated, then B -> C
    survivors = _kernel_mask(model, "even") > 0
    assert survivors.sum() < good_mask.sum()
    layer.layer.kernel.assign(layer.layer.kernel.numpy() + 0.1 * survivors)  # "training" moves survivors only
    pruner.on_epoch_end(2, {"val_accuracy": 0.80})  # 0.10 below the best: stop, back to B
    assert pruner.stopped and pruner.history[-1]["decision"] == "stop"
    revived = (good_mask > 0) & ~survivors
    assert pruner.history[-1]["restored"] >= int(revived.sum()) > 0
    np.testing.assert_array_equal(_kernel_mask(model, "even"), good_mask)
    kernel = layer.layer.kernel.numpy()
    np.testing.assert_allclose(kernel[revived], good_kernel[revived])  # revived with their validated values
    np.testing.assert_allclose(kernel[survivors], good_kernel[survivors] + 0.1, rtol=1e-6)  # training kept
    count = len(pruner.history)
    pruner.on_epoch_end(3, {"val_accuracy": 0.5})
    assert len(pruner.history) == count  # stopped for good


def test_dynamic_pruner_needs_masks_and_monitor(mnist_small):
    (x, y), (xt, yt) = mnist_small
    plain = _compile(models.mlp(hidden=(16,), seed=0, flavor="tf_keras"))
    with pytest.raises(ValueError, match="prepare"):
        plain.fit(x[:200], y[:200], epochs=1, verbose=0, callbacks=[DynamicPruner()])
    prepared = _compile(DynamicPruner.prepare(models.mlp(hidden=(16,), seed=0, flavor="tf_keras")))
    with pytest.raises(ValueError, match="monitor"):
        prepared.fit(x[:200], y[:200], epochs=1, verbose=0, callbacks=[DynamicPruner()])
    pruner = DynamicPruner(stable_tolerance=10.0, weight_step=0.2)
    prepared.fit(x[:400], y[:400], epochs=2, batch_size=100, verbose=0, validation_data=(xt, yt),
                 callbacks=[pruner])
    assert [h["decision"] for h in pruner.history] == ["weight", "weight"]
    assert _kernel_mask(prepared, "dense_0").mean() == pytest.approx(0.8 * 0.8, abs=1e-3)
    assert DynamicPruner.from_config(pruner.get_config()).get_config() == pruner.get_config()
