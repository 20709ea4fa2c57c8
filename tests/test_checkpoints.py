"""Checkpoints of models being pruned: every format round-trips mid-pruning and resumes like the original;
BackupAndRestore survives a real SIGKILL in either callback order; MultiWorkerMirroredStrategy workers agree.

Each case covers the three pruning kinds: `prune_units`, `prune_weights(scope="global")` (tfprune's
MaskedLayer) and `prune_weights(scope="layer")` (TFMOT's PruneLowMagnitude, which `import tfprune` registers).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras, tf
from tfprune.mask import iter_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("units", "global", "layer")
FORMATS = ("keras", "h5", "checkpoint", "save_weights_tf", "savedmodel")
BATCH = 50


def build(kind, final_sparsity=0.6, end_step=10, optimizer=None):
    """A tiny MLP pruned by `kind` (masks change every 2 steps until `end_step`), compiled with `optimizer`
    (Adam 1e-2 by default). The scripts the subprocesses run import it too."""
    keras.utils.set_random_seed(0)
    schedule = tfprune.PolynomialDecay(0.0, final_sparsity, begin_step=0, end_step=end_step, frequency=2)
    base = tfprune.models.mlp(hidden=(32, 16), seed=0, flavor="tf_keras")
    model = (tfprune.prune_units(base, schedule) if kind == "units"
             else tfprune.prune_weights(base, schedule, scope=kind))
    model.compile(optimizer or keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _fit(model, x, y):
    keras.utils.set_random_seed(1)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])


def _state(model):
    """Masks, steps and weights of `model` as numpy, keyed by layer name (stable across every format)."""
    steps = {}
    weights = {}
    for layer in iter_layers(model):
        for attribute in ("pruning_step", "mask_step"):
            if hasattr(layer, attribute):
                steps[f"{layer.name}.{attribute}"] = int(getattr(layer, attribute).numpy())
        weights[layer.name] = layer.get_weights()
    return {"masks": tfprune.masks(model), "steps": steps, "weights": weights}


def _assert_same_state(actual, expected, atol=0.0):
    assert set(actual["masks"]) == set(expected["masks"]) and expected["masks"]
    for key, mask in expected["masks"].items():
        np.testing.assert_array_equal(actual["masks"][key], mask, err_msg=str(key))
    assert actual["steps"] == expected["steps"]
    assert set(actual["weights"]) == set(expected["weights"])
    for name, values in expected["weights"].items():
        assert len(actual["weights"][name]) == len(values), name
        for ours, theirs in zip(actual["weights"][name], values):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol, err_msg=name)


def _save(model, fmt, directory):
    """Write `model` in `fmt` under `directory`; return what `_restore` needs."""
    path = os.path.join(directory, fmt)
    if fmt == "keras":
        model.save(path + ".keras")
        return path + ".keras"
    if fmt == "h5":
        model.save(path + ".h5")
        return path + ".h5"
    if fmt == "checkpoint":
        return tf.train.Checkpoint(model=model).write(path + "/ckpt")
    if fmt == "save_weights_tf":
        model.save_weights(path + "/weights", save_format="tf")
        return path + "/weights"
    model.save(path, save_format="tf")
    return path


def _restore(kind, fmt, path):
    """The model read back from `path`, compiled as the original was; with its optimizer state once `_resumable`
    has run."""
    if fmt in ("keras", "h5", "savedmodel"):
        return keras.models.load_model(path)  # no custom_objects, no prune_scope: `import tfprune` suffices
    twin = build(kind)  # a freshly built twin, then the checkpoint read into it
    if fmt == "checkpoint":
        tf.train.Checkpoint(model=twin).read(path).assert_existing_objects_matched()
    else:
        twin.load_weights(path).assert_existing_objects_matched()
    return twin


def _resumable(restored, fmt, path):
    """Keras's `load_model` of a SavedModel leaves the optimizer fresh (iterations 0, no Adam moments: the
    tf_keras limitation of tensorflow/tensorflow#44670, with or without tfprune); its maintainers' recipe is
    `load_weights` of the same directory, which restores the optimizer's variables too."""
    if fmt == "savedmodel":
        restored.load_weights(path).expect_partial()  # the checkpoint's metric totals are not restored
    return restored


@pytest.fixture(scope="module")
def mid_pruning(tmp_path_factory, mnist_small):
    """Per kind: the model saved in every format after 6 steps (2 mask updates done, 3 to come), its state
    then, and its state after 6 more steps on the same data order."""
    (x, y), _ = mnist_small
    cache = {}

    def get(kind):
        if kind not in cache:
            model = build(kind)
            _fit(model, x[:300], y[:300])
            state = _state(model)
            densities = [float(m.mean()) for m in state["masks"].values()]
            assert min(densities) < 1.0, "pruning has not started: the round trips would prove nothing"
            directory = str(tmp_path_factory.mktemp(f"mid_{kind}"))
            paths = {fmt: _save(model, fmt, directory) for fmt in FORMATS}
            _fit(model, x[300:600], y[300:600])
            final = _state(model)
            assert any(not np.array_equal(final["masks"][k], m) for k, m in state["masks"].items()), \
                "masks did not change after the checkpoint: resuming would prove nothing"
            cache[kind] = paths, state, final
        return cache[kind]

    return get


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_mid_pruning_then_resume_matches_the_original(kind, fmt, mid_pruning, mnist_small):
    """Read back mid-pruning: masks, steps and weights as saved; 6 more steps (3 mask updates) as the original's."""
    (x, y), _ = mnist_small
    paths, saved, final = mid_pruning(kind)
    restored = _restore(kind, fmt, paths[fmt])
    _assert_same_state(_state(restored), saved)  # as loaded: masks, steps and weights
    restored = _resumable(restored, fmt, paths[fmt])  # compiled as saved (no recompile), Adam state included
    assert int(restored.optimizer.iterations.numpy()) == 6
    _fit(restored, x[300:600], y[300:600])
    _assert_same_state(_state(restored), final, atol=1e-6)


# -- BackupAndRestore with a real SIGKILL ------------------------------------------------------------------------

BACKUP_CONFIGS = [(kind, order) for kind in KINDS for order in ("update_first", "backup_first")]

# Trains each "kind:order" job of argv[4] for 6 epochs with BackupAndRestore, skipping jobs already done. With
# argv[3] == "kill", a job's first attempt SIGKILLs the process at the end of epoch 3, so every invocation
# resumes one job from its backup and then starts (and is killed in) the next one.
BACKUP_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from tfprune._keras import keras, tf
    import tfprune
    from test_checkpoints import build

    data, out, mode, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    tf.config.experimental.enable_op_determinism()
    with np.load(data) as rows:  # 200 MNIST rows: 4 steps an epoch, 24 in all; masks change every 2 until step 20
        x, y = rows["x"], rows["y"]

    for job in jobs:
        kind, order = job.split(":")
        result = os.path.join(out, f"{mode}_{kind}_{order}.npz")
        if os.path.exists(result):
            continue
        marker = os.path.join(out, f"killed_{kind}_{order}")
        model = build(kind, final_sparsity=0.75, end_step=20)
        epochs = []

        class KillAfterEpoch3(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                epochs.append(epoch)

            def on_epoch_end(self, epoch, logs=None):
                if epoch == 2 and mode == "kill" and not os.path.exists(marker):
                    open(marker, "w").close()
                    os.kill(os.getpid(), signal.SIGKILL)

        pruning = tfprune.UpdatePruningStep()
        backup = keras.callbacks.BackupAndRestore(os.path.join(out, f"backup_{mode}_{kind}_{order}"))
        callbacks = [pruning, backup] if order == "update_first" else [backup, pruning]
        model.fit(x, y, batch_size=50, epochs=6, shuffle=False, verbose=0, callbacks=callbacks + [KillAfterEpoch3()])
        results = {"epochs": np.array(epochs)}
        results.update({f"mask:{layer}.{attribute}": m for (layer, attribute), m in tfprune.masks(model).items()})
        for layer in model.layers:
            results.update({f"weight:{layer.name}.{i}": w for i, w in enumerate(layer.get_weights())})
        np.savez(result, **results)
""")


def _env(**extra):
    """The subprocesses' environment: tfprune from this checkout, `build` from this file."""
    paths = [ROOT, os.path.join(ROOT, "tests")] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(paths),
                **extra)


def _write_rows(directory, data, count):
    """The first `count` rows of `data` in an .npz for subprocesses (loading MNIST again costs each 1.5 s)."""
    (x, y), _ = data
    path = os.path.join(directory, "rows.npz")
    np.savez(path, x=x[:count], y=y[:count])
    return path


@pytest.fixture(scope="module")
def backup_runs(tmp_path_factory, mnist_small):
    """Runs every job of BACKUP_CONFIGS killed once and resumed, and (at the same time, in one more process)
    uninterrupted; returns ``(return codes of the killed chain, out dir)``."""
    out = str(tmp_path_factory.mktemp("backup"))
    script = os.path.join(out, "train.py")
    with open(script, "w") as handle:
        handle.write(BACKUP_SCRIPT)
    jobs = ",".join(f"{kind}:{order}" for kind, order in BACKUP_CONFIGS)
    command = [sys.executable, script, _write_rows(out, mnist_small, 200), out]
    whole = subprocess.Popen(command + ["whole", jobs], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT, env=_env())
    codes = []
    try:
        for _ in range(len(BACKUP_CONFIGS) + 1):  # each invocation finishes one job and is killed in the next
            done = subprocess.run(command + ["kill", jobs], capture_output=True, text=True, cwd=ROOT, env=_env(),
                                  timeout=240)
            codes.append(done.returncode)
            assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
            if done.returncode == 0:
                break
        _, stderr = whole.communicate(timeout=240)
        assert whole.returncode == 0, stderr[-3000:]
    finally:
        if whole.poll() is None:
            whole.kill()
            whole.communicate()
    return codes, out


@pytest.mark.slow
@pytest.mark.parametrize("order", ["update_first", "backup_first"])
@pytest.mark.parametrize("kind", KINDS)
def test_backup_and_restore_after_sigkill_matches_the_uninterrupted_run(kind, order, backup_runs):
    """Killed after epoch 3 of 6 and rerun, in either callback order: the masks and weights of a run never killed
    (the pruning step comes from the restored model, not from when the callback started)."""
    codes, out = backup_runs
    assert codes == [-signal.SIGKILL] * len(BACKUP_CONFIGS) + [0]  # each job killed exactly once, then done
    assert os.path.exists(os.path.join(out, f"killed_{kind}_{order}"))
    resumed = np.load(os.path.join(out, f"kill_{kind}_{order}.npz"))
    whole = np.load(os.path.join(out, f"whole_{kind}_{order}.npz"))
    assert resumed["epochs"].tolist() == [3, 4, 5]  # it resumed from the backup of epoch 3, not from scratch
    assert whole["epochs"].tolist() == list(range(6))
    assert set(resumed.files) == set(whole.files)
    masks = [k for k in whole.files if k.startswith("mask:")]
    assert masks and all(float(whole[k].mean()) < 1.0 for k in masks)
    for key in masks:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)
    for key in (k for k in whole.files if k.startswith("weight:")):
        np.testing.assert_allclose(resumed[key], whole[key], rtol=0, atol=1e-6, err_msg=key)


# -- MultiWorkerMirroredStrategy -------------------------------------------------------------------------------

WORKER_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from tfprune._keras import keras, tf
    import tfprune
    from test_checkpoints import build

    data, out = sys.argv[1], sys.argv[2]
    tf.config.experimental.enable_op_determinism()
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if "TF_CONFIG" in os.environ
                else tf.distribute.get_strategy())
    with np.load(data) as rows:  # 512 MNIST rows: 8 steps of a global batch of 64
        x, y = rows["x"], rows["y"]
    results = {"replicas": np.array(strategy.num_replicas_in_sync)}
    for kind in ("global", "units"):
        with strategy.scope():
            # Plain SGD (no moments): the workers' only difference from one device is the all-reduce's order of
            # summing the gradients (weights within ~3e-8), not enough to move any mask.
            model = build(kind, end_step=6, optimizer=keras.optimizers.SGD(0.1))
        model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
        results.update({f"{kind}:mask:{l}.{a}": m for (l, a), m in tfprune.masks(model).items()})
        for layer in tfprune.mask.masked_layers(model):
            results[f"{kind}:step:{layer.name}"] = np.array(int(layer.pruning_step.numpy()))
            results.update({f"{kind}:weight:{layer.name}.{i}": w for i, w in enumerate(layer.get_weights())})
    np.savez(out, **results)
""")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def _run_workers(script, rows, directory, timeout=240):
    """Two MultiWorkerMirroredStrategy workers on 127.0.0.1 and (meanwhile) one single-device run of the same
    script, each within `timeout` seconds; both workers are killed if anything fails."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    outs = [os.path.join(directory, f"{name}.npz") for name in ("worker0", "worker1", "single")]
    deadline = time.monotonic() + timeout
    processes = []
    try:
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            processes.append(subprocess.Popen(
                [sys.executable, script, rows, outs[index]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, cwd=ROOT, env=_env(TF_CONFIG=json.dumps(config))))
        single = subprocess.run([sys.executable, script, rows, outs[2]], capture_output=True, text=True, cwd=ROOT,
                                env=_env(), timeout=timeout)
        assert single.returncode == 0, single.stderr[-3000:]
        for index, process in enumerate(processes):
            _, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert process.returncode == 0, f"worker {index}: {stderr[-3000:]}"
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return [np.load(out) for out in outs]


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_masks_agree_and_equal_a_single_device(tmp_path, mnist_small):
    """Two workers (one CPU replica each, gradients all-reduced over gRPC) train 8 steps of a global batch of 64
    with per-step-scheduled global weight pruning and unit pruning: same masks on both, same as one device."""
    script = str(tmp_path / "worker.py")
    with open(script, "w") as handle:
        handle.write(WORKER_SCRIPT)
    first, second, single = _run_workers(script, _write_rows(str(tmp_path), mnist_small, 512), str(tmp_path))
    assert int(first["replicas"]) == int(second["replicas"]) == 2 and int(single["replicas"]) == 1
    assert set(first.files) == set(second.files) == set(single.files)
    masks = [k for k in single.files if ":mask:" in k]
    assert {k.split(":")[0] for k in masks} == {"global", "units"}
    assert all(float(single[k].mean()) < 1.0 for k in masks)  # every layer is being pruned
    for key in masks:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        np.testing.assert_array_equal(first[key], single[key], err_msg=key)
    for key in (k for k in single.files if ":step:" in k):
        assert int(first[key]) == int(second[key]) == int(single[key]) == 8, key
    for key in (k for k in single.files if ":weight:" in k):
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        np.testing.assert_allclose(first[key], single[key], rtol=0, atol=1e-6, err_msg=key)
