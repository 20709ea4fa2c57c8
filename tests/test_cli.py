"""The command line end to end (in process through main, as real subprocesses for speed and a quiet console),
its error exits, and the checksummed pretrained models it is usually pointed at.

The small CNN here has random weights: the commands are checked for what they do to files, not for accuracy.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import tfprune_cli
from tfprune import bench, export, models, pai, study
from tfprune._keras import keras
from tfprune.metrics import count_params
from tfprune.schedules import ConstantSparsity
from tfprune.weight import prune_weights
from tfprune_cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    path = tmp_path_factory.mktemp("cli") / "cnn.keras"
    model.save(path)
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _command(*argv, env=None):
    """`python -m tfprune_cli ARGV` from the repository root: (completed process, seconds)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tfprune_cli", *argv], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=env)
    return result, time.perf_counter() - started


def test_help_and_argument_errors_answer_before_tensorflow_loads(tmp_path):
    result, seconds = _command("--help")
    assert result.returncode == 0 and seconds < 3, seconds  # about 0.05 s; TensorFlow alone takes seconds
    for command in ("study", "report", "export", "bench", "prune", "demo"):
        assert command in result.stdout
    result, seconds = _command("bench", str(tmp_path))  # a folder that is not a SavedModel
    assert result.returncode == 2 and seconds < 3, seconds
    assert result.stderr.startswith("tfprune bench: error: MODEL") and len(result.stderr.splitlines()) == 1
    checked = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from tfprune_cli import main
        codes = [main(["prune", "m.keras", "--method", "unit", "--sparsity", "1.5"]),
                 main(["export", "missing.keras", "--formats", "onnx", "--out", "x"]), main(["report", "m.txt"])]
        assert codes == [2, 2, 2], codes
        assert "tensorflow" not in sys.modules and "tfprune" not in sys.modules
        """)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr


def test_the_parser_offers_the_library_choices():
    assert tfprune_cli.FORMATS == tuple(export.FORMATS) and tfprune_cli.BACKENDS == bench.BACKENDS
    assert tfprune_cli.PRESETS == tuple(sorted(study.PRESETS)) and tfprune_cli.DATASETS == study.DATASETS
    assert tfprune_cli.PAI_SCORERS == pai.METHODS and tfprune_cli.PAI_ABLATIONS == pai.ABLATIONS[1:]
    assert tfprune_cli.STUDY_METHODS == tuple(m for m in study.METHODS if not m.startswith("pai_"))


def test_a_command_prints_no_tensorflow_start_up_lines(cnn_file):
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    result, _ = _command("report", cnn_file, env=env)
    assert result.returncode == 0 and "TOTAL" in result.stdout
    # TensorFlow's C++ lines: 'I0000 00:00:... port.cc:153] oneDNN custom operations are on', 'E0000 ... failed
    # call to cuInit', and the 'All log messages before absl::InitializeLog()' banner.
    noise = [line for line in result.stderr.splitlines() if "absl::" in line or "cuInit" in line
             or line[:1] in "IWEF" and line[1:5].isdigit()]
    assert noise == [], result.stderr


def test_report_and_export(capsys, cnn_file, tmp_path):
    code, out, _ = run(capsys, "report", cnn_file)
    assert code == 0 and "TOTAL" in out and "conv" in out

    code, out, _ = run(capsys, "export", cnn_file, "--formats", "keras,tflite", "--out", str(tmp_path), "--name", "m")
    assert code == 0 and "zipped_bytes" in out
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "m.tflite"]

    code, out, _ = run(capsys, "export", cnn_file, "--formats", "tflite_int8", "--calibration", "digits",
                       "--out", str(tmp_path))
    assert code == 0 and os.path.isfile(tmp_path / "cnn_int8.tflite")


def test_report_reads_a_model_saved_with_pruning_wrappers(capsys, cnn_file, tmp_path):
    masked = prune_weights(keras.models.load_model(cnn_file), ConstantSparsity(0.5, begin_step=0), scope="global")
    masked.save(tmp_path / "masked.keras")
    code, out, err = run(capsys, "report", str(tmp_path / "masked.keras"))
    assert code == 0 and "hidden" in out, err


def test_bench_litert(capsys, cnn_file):
    code, out, _ = run(capsys, "bench", cnn_file, "--backend", "litert", "--threads", "1", "--warmup", "1",
                       "--repeats", "3")
    assert code == 0 and "median" in out and "backend litert, 1 thread(s)" in out and "3 timed runs" in out


def test_prune_weight_and_unit_with_shrink(capsys, cnn_file, tmp_path):
    out_path = str(tmp_path / "weight.h5")
    code, _, _ = run(capsys, "prune", cnn_file, "--method", "weight", "--sparsity", "0.75", "--out", out_path)
    assert code == 0
    pruned = keras.models.load_model(out_path, compile=False)
    hidden = pruned.get_layer("hidden").kernel.numpy()
    assert np.mean(hidden == 0) == pytest.approx(0.75, abs=1e-3)
    assert np.count_nonzero(pruned.get_layer("logits").kernel.numpy() == 0) == 0  # the output layer stays whole

    out_path = str(tmp_path / "small.keras")
    code, out, _ = run(capsys, "prune", cnn_file, "--method", "unit", "--sparsity", "0.5", "--shrink",
                       "--out", out_path)
    assert code == 0 and f"wrote {out_path}" in out
    small = keras.models.load_model(out_path, compile=False)
    assert small.get_layer("conv").filters == 4 and small.get_layer("hidden").units == 8
    assert small.get_layer("logits").units == 10
    original = keras.models.load_model(cnn_file, compile=False)
    assert count_params(small) < count_params(original)


def test_study_from_config_and_resume(capsys, tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": "mlp", "dataset": "digits", "methods": ["oneshot_weight", "oneshot_unit"],
                                  "sparsities": [0.5], "epochs": 1}))
    out_dir = str(tmp_path / "run")
    code, out, _ = run(capsys, "study", str(config), "--out", out_dir)
    assert code == 0 and "[2/2] oneshot_unit k=50%" in out and "k % | weight |   unit" in out
    assert os.path.isfile(os.path.join(out_dir, "results.jsonl"))
    assert os.path.isfile(os.path.join(out_dir, "plots", "accuracy.png"))
    code, out, _ = run(capsys, "study", str(config), "--out", out_dir)
    assert code == 0 and "2 of 2 cells finished earlier" in out


@pytest.mark.parametrize("argv, message", [
    (["report", "missing.keras"], "MODEL 'missing.keras' does not exist"),
    (["report", __file__], "is not a .keras or .h5 file"),
    (["export", "missing.keras", "--formats", "onnx", "--out", "x"], "--formats: unknown ['onnx']"),
    (["prune", "missing.keras", "--method", "weight", "--sparsity", "0.5", "--shrink"], "--shrink removes whole units"),
    (["bench", __file__], "cannot tell the backend"),
    (["bench", os.path.dirname(__file__)], "is a folder without saved_model.pb, so not a SavedModel"),
    (["study", "missing.json"], "CONFIG 'missing.json' does not exist"),
])
def test_errors_exit_2_with_one_line_on_stderr(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and err.startswith(f"tfprune {argv[0]}: error:") and "Traceback" not in err


def test_damaged_files_and_bad_arguments_exit_2(capsys, tmp_path, cnn_file):
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(b"not a zip archive")
    code, _, err = run(capsys, "report", str(damaged))
    assert code == 2 and "cannot load" in err and "as a Keras model" in err

    code, _, err = run(capsys, "export", cnn_file, "--formats", "tflite_int8", "--out", str(tmp_path))
    assert code == 2 and "--calibration" in err

    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"methods": ["nope"]}))
    code, _, err = run(capsys, "study", str(config))
    assert code == 2 and "unknown `methods` ['nope']" in err

    for argv in (["prune", cnn_file, "--method", "weight", "--sparsity", "1.5"], ["prune", cnn_file], [],
                 ["study", "a.json", "--preset", "seeds-mnist"], ["bench", cnn_file, "--batch-size", "0"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "usage: tfprune" in err, argv
    assert run(capsys, "prune", "--help")[0] == 0


def test_pretrained_models_are_checked_against_the_manifest(tmp_path, monkeypatch):
    with open(os.path.join(os.path.dirname(__file__), "..", "pretrained", "manifest.json")) as handle:
        manifest = json.load(handle)["models"]
    assert set(manifest) == {"mlp", "lenet5"}
    for entry in manifest.values():
        assert {"file", "model_sha256", "seed", "command", "epochs", "test_accuracy", "date", "versions"} <= set(entry)
    lenet = models.pretrained("lenet5")
    assert lenet.name == "lenet5" and lenet.input_shape == (None, 28, 28, 1)

    with pytest.raises(ValueError, match=r"unknown model 'resnet'; choose one of \['lenet5', 'mlp'\]"):
        models.pretrained("resnet")
    source = os.path.join(os.path.dirname(__file__), "..", "pretrained")
    shutil.copy(os.path.join(source, "manifest.json"), tmp_path / "manifest.json")
    monkeypatch.setenv("TFPRUNE_PRETRAINED_DIR", str(tmp_path))

    def rewrite(change):  # lenet5.keras again, with `change(member, bytes)` applied to every member
        with zipfile.ZipFile(os.path.join(source, "lenet5.keras")) as original, \
                zipfile.ZipFile(tmp_path / "lenet5.keras", "w") as copy:
            for member in original.namelist():
                copy.writestr(member, change(member, original.read(member)))

    # Saved again: another date in metadata.json, the same model.
    rewrite(lambda member, content: content.replace(b"2026", b"2030") if member == "metadata.json" else content)
    assert models.pretrained("lenet5").count_params() == lenet.count_params()
    rewrite(lambda member, content: content[:-1] + bytes([content[-1] ^ 1]) if member.endswith(".h5") else content)
    with pytest.raises(ValueError, match="has model digest .* but the manifest records"):
        models.pretrained("lenet5")
    (tmp_path / "lenet5.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a readable .keras archive"):
        models.pretrained("lenet5")
    with pytest.raises(FileNotFoundError, match="listed in the manifest but missing"):
        models.pretrained("mlp")
    monkeypatch.setenv("TFPRUNE_PRETRAINED_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        models.pretrained("mlp")
