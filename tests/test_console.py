"""A quiet console: tfprune's own code triggers no TensorFlow warnings (retracing, slow callbacks, metrics of
uncompiled models) and writes one SavedModel per export, and importing the library leaves logging alone."""
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np

import tfprune
from tfprune import bench, export
from tfprune._keras import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(units=4):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(units, activation="relu", name="hidden"),
                             keras.layers.Dense(3, name="logits")])


def _tensorflow_messages(caplog):
    return [record.getMessage() for record in caplog.records if record.name == "tensorflow"]


def test_importing_the_library_leaves_logging_settings_alone():
    code = textwrap.dedent("""
        import logging, os
        import tfprune
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
        assert logging.getLogger().handlers == [] and logging.getLogger("tensorflow").level == logging.NOTSET
        """)
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_timing_many_models_does_not_read_as_retracing(caplog):
    models = {f"m{i}": _tiny(units=4 + i) for i in range(7)}
    bench.compare_latency(models, warmup=1, repeats=2)
    for model in models.values():
        bench.predict(model, np.zeros((300, 6), np.float32), batch_size=128)
    assert not [m for m in _tensorflow_messages(caplog) if "retracing" in m]


def test_setting_up_pruning_on_many_models_does_not_read_as_retracing(caplog):
    """A study sets up pruning on one model per cell; each gets its own mask writer and compiled updates."""
    caplog.set_level(logging.WARNING, logger="tensorflow")
    for units in range(2, 10):
        pruned = tfprune.prune_weights(_tiny(units), tfprune.ConstantSparsity(0.5, 0, frequency=1), scope="global")
        callback = tfprune.UpdatePruningStep()
        callback.set_model(pruned)
        callback.on_train_begin()
        callback.on_train_batch_begin(0)
        callback.on_epoch_end(0)  # runs the mask writer
    assert not [m for m in _tensorflow_messages(caplog) if "retracing" in m]


def test_recalibrating_many_models_does_not_read_as_retracing(caplog):
    """A sensitivity analysis or budget run recomputes batch-norm statistics on one new model per cut."""
    caplog.set_level(logging.WARNING, logger="tensorflow")
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    for units in range(2, 10):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(units), keras.layers.BatchNormalization()])
        tfprune.recalibrate_batch_norm(model, x, batch_size=4)
    assert not [m for m in _tensorflow_messages(caplog) if "retracing" in m]


def test_the_first_pruning_step_runs_when_the_epoch_begins():
    """Keras warns when a batch hook outlasts the batch; the first mask update (the compiled update's first
    run) happens in the untimed on_epoch_begin, and the batch hook of the same step does not repeat it."""
    model = tfprune.prune_units(_tiny(units=8), tfprune.ConstantSparsity(0.5, begin_step=0), criterion="l2")
    callback = tfprune.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    updates = []
    pruner = callback.pruners[0]
    update = pruner.update
    pruner.update = lambda sparsity, step: updates.append(step) or update(sparsity, step)
    callback.on_epoch_begin(0)
    assert updates == [0] and int(np.sum(tfprune.masks(model)[("hidden", "kernel")][0] == 0)) == 4
    callback.on_train_batch_begin(0)
    assert updates == [0]


def test_export_writes_one_saved_model_and_no_metrics_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tensorflow")
    report = export.save(_tiny(), tmp_path, formats=("h5", "saved_model", "tflite", "tflite_sparse"))
    assert set(report["artifacts"]) == {"h5", "saved_model", "tflite", "tflite_sparse"}
    messages = _tensorflow_messages(caplog)
    assert len([m for m in messages if m.startswith("Assets written to")]) == 1, messages
    assert not [m for m in messages if "compiled metrics" in m]

