"""Export formats, sizes, atomic writes and the variant comparison, on tiny models."""
import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfprune import _io, export
from tfprune._keras import keras, tf, tfmot
from tfprune.metrics import count_nonzero

L = keras.layers


def _mlp(hidden=16):
    inputs = keras.Input((12,), name="features")
    x = L.Dense(hidden, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, L.Dense(4, name="logits")(x))


def _cnn():
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def _leftovers(directory):
    return [name for name in os.listdir(directory) if name.startswith(".")]


@pytest.mark.parametrize("build", [_mlp, _cnn])
def test_save_writes_every_format(tmp_path, build):
    model = build()
    sample = np.random.default_rng(0).random((16,) + tuple(model.input_shape[1:]), dtype=np.float32)
    report = export.save(model, tmp_path, formats=list(export.FORMATS), representative_data=sample, name="net")
    assert set(report["artifacts"]) == set(export.FORMATS)
    for fmt, artifact in report["artifacts"].items():
        assert os.path.basename(artifact["path"]) == "net" + export.FORMATS[fmt]
        assert os.path.exists(artifact["path"])
        assert artifact["bytes"] > 0
        assert 0 < artifact["zipped_bytes"] <= artifact["bytes"] + 1024
    assert os.path.isdir(report["artifacts"]["saved_model"]["path"])
    assert report["params"] == model.count_params()
    assert report["macs"] > 0
    assert _leftovers(tmp_path) == []
    text = export.format_report(report)
    assert "net:" in text and "tflite_int8" in text


def test_tflite_float_matches_keras(tmp_path):
    model = _cnn()
    path = export.save(model, tmp_path, formats=("tflite",))["artifacts"]["tflite"]["path"]
    x = np.random.default_rng(1).random((1, 8, 8, 1), dtype=np.float32)
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(x, training=False).numpy(), atol=1e-5)


def test_sparse_tflite_of_a_mostly_zero_model_is_much_smaller(tmp_path):
    model = _mlp(hidden=256)
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("hidden"), model.get_layer("logits")):
        kernel = layer.kernel.numpy()
        kernel[rng.random(kernel.shape) < 0.9] = 0.0
        layer.kernel.assign(kernel)
    artifacts = export.save(model, tmp_path, formats=("tflite", "tflite_sparse"))["artifacts"]
    assert artifacts["tflite_sparse"]["bytes"] < 0.4 * artifacts["tflite"]["bytes"]


def test_int8_needs_representative_data(tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export.save(_mlp(), tmp_path, formats=("tflite_int8",))
    assert os.listdir(tmp_path) == []


def test_int8_accepts_a_generator_callable(tmp_path):
    def examples():
        for _ in range(8):
            yield [np.random.default_rng(0).random((1, 12), dtype=np.float32)]

    report = export.save(_mlp(), tmp_path, formats="tflite_int8", representative_data=examples)
    interpreter = Interpreter(model_path=report["artifacts"]["tflite_int8"]["path"])
    assert any(d["dtype"] == np.int8 for d in interpreter.get_tensor_details())


def test_int8_checks_representative_arrays_against_the_inputs(tmp_path):
    flat = np.zeros((10, 64), np.float32)
    with pytest.raises(ValueError, match=r"examples of shape \(64,\) but input 'image' takes \(8, 8, 1\).*"
                                         r"x.reshape\(\(-1,\) \+ \(8, 8, 1\)\)"):
        export.save(_cnn(), tmp_path, formats=("keras", "tflite_int8"), representative_data=flat)
    with pytest.raises(ValueError, match="holds 2 arrays but the model takes 1 inputs"):
        export.save(_cnn(), tmp_path, formats="tflite_int8", representative_data=[flat, flat])
    assert os.listdir(tmp_path) == []


def test_unknown_format_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="tflite_sparse"):
        export.save(_mlp(), tmp_path, formats=("onnx",))


class _FailingConverter:
    def convert(self):
        raise RuntimeError("converter broke")


def test_failed_conversion_leaves_previous_file_intact(tmp_path, monkeypatch):
    model = _mlp()
    path = export.save(model, tmp_path, formats=("tflite",))["artifacts"]["tflite"]["path"]
    before = open(path, "rb").read()
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", lambda path: _FailingConverter())
    with pytest.raises(RuntimeError, match="converter broke"):
        export.save(model, tmp_path, formats=("tflite", "tflite_sparse"))
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]


def test_failure_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def half_save(self, filepath, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        export.save(_mlp(), tmp_path, formats=("keras",))
    assert os.listdir(tmp_path) == []


def test_a_later_save_removes_what_a_killed_one_left(tmp_path, monkeypatch):
    def half_save(self, filepath, **kwargs):
        open(filepath, "wb").close()
        raise OSError("killed")

    def half_export(self, filepath):
        os.makedirs(os.path.join(filepath, "variables"))
        raise OSError("killed")

    with monkeypatch.context() as patch:  # as when killed: the writes stop and atomic_write cleans nothing
        patch.setattr(_io, "_remove", lambda path: None)
        patch.setattr(keras.Model, "save", half_save)
        patch.setattr(keras.Model, "export", half_export)
        for fmt in ("keras", "saved_model"):
            with pytest.raises(OSError, match="killed"):
                export.save(_mlp(), tmp_path, formats=(fmt,))
    assert len(_leftovers(tmp_path)) == 2
    (tmp_path / ".tmp-0123abcd-other.keras").touch()  # another name's: not this save's to remove
    export.save(_mlp(), tmp_path, formats=("keras", "saved_model"))
    assert sorted(os.listdir(tmp_path)) == [".tmp-0123abcd-other.keras", "model.keras", "model_saved_model"]


def test_saved_model_directory_is_replaced_whole(tmp_path, monkeypatch):
    first = export.save(_mlp(), tmp_path, formats=("saved_model",))["artifacts"]["saved_model"]["path"]
    export.save(_mlp(hidden=32), tmp_path, formats=("saved_model",))
    loaded = tf.saved_model.load(first)
    assert loaded.signatures["serving_default"](features=tf.zeros((2, 12)))["output_0"].shape == (2, 4)
    assert _leftovers(tmp_path) == []

    def half_export(self, filepath):
        os.makedirs(os.path.join(filepath, "variables"))
        raise OSError("interrupted")

    monkeypatch.setattr(keras.Model, "export", half_export)
    with pytest.raises(OSError, match="interrupted"):
        export.save(_mlp(), tmp_path, formats=("saved_model",))
    assert os.path.exists(os.path.join(first, "saved_model.pb"))
    assert _leftovers(tmp_path) == []


def test_tfmot_model_is_stripped_with_masks_applied(tmp_path):
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        _mlp(), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    _, mask, _ = pruned.get_layer("prune_low_magnitude_hidden").pruning_vars[0]
    values = np.ones(mask.shape, np.float32)
    values[:6] = 0.0
    mask.assign(values)  # the weights themselves are still dense
    report = export.save(pruned, tmp_path, formats=("keras",))
    assert report["nonzero"] == count_nonzero(pruned)
    loaded = keras.models.load_model(report["artifacts"]["keras"]["path"])
    assert [type(layer).__name__ for layer in loaded.layers] == ["InputLayer", "Dense", "Dense"]
    assert not np.any(loaded.get_layer("hidden").kernel.numpy()[:6])
    assert np.all(pruned.get_layer("prune_low_magnitude_hidden").layer.kernel.numpy()[:6] != 0)


def test_compare_table(tmp_path):
    dense = _mlp()
    x = np.random.default_rng(0).random((20, 12), dtype=np.float32)
    y = dense(x).numpy().argmax(-1)
    tflite_path = export.save(dense, tmp_path / "files", formats=("tflite_sparse",))["artifacts"]
    rows, text = export.compare({"dense": dense, "sparse_tflite": tflite_path["tflite_sparse"]["path"]},
                                data=(x, y), directory=tmp_path / "variants", warmup=1, repeats=3)
    by_name = {row["variant"]: row for row in rows}
    assert by_name["dense"]["accuracy"] == 1.0
    assert by_name["sparse_tflite"]["accuracy"] == 1.0
    assert by_name["dense"]["tf_ms"] > 0 and by_name["dense"]["litert_ms"] > 0
    assert by_name["sparse_tflite"]["tf_ms"] is None and by_name["sparse_tflite"]["params"] is None
    assert by_name["dense"]["macs"] == 12 * 16 + 16 * 4
    assert os.path.exists(tmp_path / "variants" / "dense.tflite")
    assert "sparse_tflite" in text and "litert_ms" in text
