"""Latency measurement: result structure per backend, device and thread handling, interleaving.

No timing thresholds: a shared CI machine makes them flaky; only behaviour is asserted.
"""
import numpy as np
import pytest

from tfprune import bench, export
from tfprune._keras import keras, set_random_seed, tf
from tfprune.bench import DeviceUnavailableError, compare_latency, latency, predict, set_threads

L = keras.layers
KEYS = {"median_ms", "p10_ms", "p90_ms", "mean_ms", "repeats", "warmup", "batch_size", "backend", "device",
        "threads"}


def _model(width=8):
    inputs = keras.Input((6,), name="x")
    x = L.Dense(width, activation="relu")(inputs)
    return keras.Model(inputs, L.Dense(3)(x))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    set_random_seed(0)  # a module fixture is built before the tests' seeding: else its weights follow test order
    model = _model()
    sample = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    report = export.save(model, tmp_path_factory.mktemp("bench"),
                         formats=("keras", "saved_model", "tflite", "tflite_int8"), representative_data=sample)
    paths = {fmt: artifact["path"] for fmt, artifact in report["artifacts"].items()}
    return model, paths


def _check(result, backend, batch_size, repeats):
    assert set(result) == KEYS
    assert result["median_ms"] > 0
    assert result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert (result["backend"], result["batch_size"], result["repeats"], result["device"]) == (
        backend, batch_size, repeats, "cpu")
    assert isinstance(result["threads"], int)


def test_keras_backend(artifacts):
    model, _ = artifacts
    result = latency(model, batch_size=4, warmup=2, repeats=5)
    _check(result, "keras", 4, 5)
    assert result["threads"] == tf.config.threading.get_intra_op_parallelism_threads()


@pytest.mark.parametrize("fmt, backend", [("saved_model", "saved_model"), ("tflite", "litert"),
                                          ("tflite_int8", "litert"), ("keras", "keras")])
def test_path_backends_are_inferred(artifacts, fmt, backend):
    _, paths = artifacts
    _check(latency(paths[fmt], batch_size=3, warmup=1, repeats=4), backend, 3, 4)


def test_litert_records_threads_and_converts_keras_models(artifacts):
    model, _ = artifacts
    result = latency(model, backend="litert", threads=2, warmup=1, repeats=3)
    _check(result, "litert", 1, 3)
    assert result["threads"] == 2
    assert latency(model, backend="litert", warmup=0, repeats=1)["threads"] == 1


def test_input_data_is_used_and_checked(artifacts):
    model, _ = artifacts
    data = np.ones((5, 6), np.float32)
    _check(latency(model, batch_size=5, input_data=data, warmup=0, repeats=2), "keras", 5, 2)
    with pytest.raises(ValueError, match="batch_size=5"):
        latency(model, batch_size=2, input_data=data)


def test_bad_arguments_are_named(artifacts):
    model, paths = artifacts
    with pytest.raises(ValueError, match="`backend`"):
        latency(model, backend="onnx")
    with pytest.raises(ValueError, match="`device`"):
        latency(model, device="tpu")
    with pytest.raises(ValueError, match="`repeats`"):
        latency(model, repeats=0)
    with pytest.raises(ValueError, match="SavedModel directory"):
        latency(model, backend="saved_model")


def test_compare_latency_interleaves(artifacts, monkeypatch):
    model, _ = artifacts
    other = _model(width=16)
    order = []
    original = bench._KerasRunner.__call__

    def recording(self, tensors):
        order.append(self)
        return original(self, tensors)

    monkeypatch.setattr(bench._KerasRunner, "__call__", recording)
    results = compare_latency({"a": model, "b": other}, batch_size=2, warmup=1, repeats=4)
    assert set(results) == {"a", "b"}
    for result in results.values():
        _check(result, "keras", 2, 4)
    timed = order[2:]  # after one warm-up call each
    rounds = [timed[i:i + 2] for i in range(0, len(timed), 2)]
    assert all(len(set(map(id, pair))) == 2 for pair in rounds)
    assert rounds[0][0] is rounds[1][1]  # the starting model rotates


def test_predict_matches_keras_on_every_backend(artifacts):
    model, paths = artifacts
    x = np.random.default_rng(2).random((7, 6), dtype=np.float32)
    expected = model(x, training=False).numpy()
    for target in (paths["saved_model"], paths["tflite"]):
        np.testing.assert_allclose(predict(target, x, batch_size=3), expected, atol=1e-5)
    np.testing.assert_allclose(predict(paths["tflite_int8"], x, batch_size=3), expected, atol=0.1)


def test_set_threads_after_startup_explains_the_fix():
    tf.constant(1.0) + 1.0  # TensorFlow is running now
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(RuntimeError, match="start of the program"):
        set_threads(current + 1)
    with pytest.raises(ValueError, match="`n`"):
        set_threads(0)


def test_threads_for_tensorflow_backends_go_through_set_threads(artifacts):
    model, _ = artifacts
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(RuntimeError, match="set_threads"):
        latency(model, threads=current + 1)


def test_litert_on_gpu_is_refused(artifacts):
    _, paths = artifacts
    with pytest.raises(DeviceUnavailableError, match="litert"):
        latency(paths["tflite"], device="gpu")


def test_gpu_without_gpu_raises(artifacts):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceUnavailableError, match="no GPU"):
        latency(artifacts[0], device="gpu")


def test_gpu_latency(artifacts):
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("needs a GPU")
    result = latency(artifacts[0], device="gpu", batch_size=2, warmup=1, repeats=3)
    assert result["device"] == "gpu" and result["median_ms"] > 0
