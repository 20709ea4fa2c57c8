"""The iterative loop and IMP: rewind points, mask ranking, the four retraining modes, a custom pruning step,
resuming after a real SIGKILL, results."""
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune import lottery
from tfprune.mask import inner_layer, iter_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCHEDULE_BOUNDARIES, SCHEDULE_VALUES = [4, 8], [0.1, 0.01, 0.001]
EPOCHS, BATCH = 2, 50  # 300 examples: 6 steps per epoch, 12 in the dense run


@pytest.fixture
def digits(mnist_small):
    (x, y), (x_test, y_test) = mnist_small
    return (x[:300], y[:300]), (x_test[:200], y_test[:200])


def tiny_model():
    inputs = keras.Input((784,), name="input")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))


def schedule():
    return keras.optimizers.schedules.PiecewiseConstantDecay(SCHEDULE_BOUNDARIES, SCHEDULE_VALUES)


def compile_sgd(model):
    model.compile(keras.optimizers.SGD(schedule(), momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def layer_weights(model):
    return {inner_layer(layer).name: inner_layer(layer).get_weights() for layer in iter_layers(model)
            if inner_layer(layer).weights}


class RoundRecorder(keras.callbacks.Callback):
    """What each round's fit starts from: weights, optimizer state, step, and the LR of every batch."""

    def __init__(self):
        super().__init__()
        self.starts, self.learning_rates = [], []

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        self.starts.append({"weights": layer_weights(self.model), "step": int(optimizer.iterations.numpy()),
                            "optimizer": [v.numpy() for v in optimizer.variables]})
        self.learning_rates.append([])

    def on_train_batch_end(self, batch, logs=None):
        self.learning_rates[-1].append(float(self.model.optimizer.learning_rate.numpy()))


class CountRounds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begins = 0

    def on_train_begin(self, logs=None):
        self.begins += 1


def run_imp(digits, directory, callbacks=(), **kwargs):
    """`imp`'s rows; its model is checked in the weight-rewinding test."""
    train, test = digits
    settings = dict(rounds=2, rewind="weights", rewind_step=3, eval_data=test)
    settings.update(kwargs)
    return lottery.imp(tiny_model, train, compile_sgd,
                       {"epochs": EPOCHS, "batch_size": BATCH, "callbacks": list(callbacks)},
                       directory=str(directory), **settings)[1]


def drop_weakest_unit(model, round_index):
    """A custom pruning step: mask the live hidden unit whose kernel column has the smallest L2 norm. It returns
    one column only; the loop keeps the earlier rounds' zeros."""
    norms = np.linalg.norm(tfprune.strip(model).get_layer("hidden").kernel.numpy(), axis=0)
    mask = np.ones((784, 16), np.float32)
    mask[:, np.argmin(np.where(norms > 0, norms, np.inf))] = 0
    return {"hidden": {"kernel": mask}}


def run_custom(digits, directory, callbacks=(), rounds=3):
    train, test = digits
    return lottery.iterative_pruning(tiny_model, train, compile_sgd,
                                     {"epochs": EPOCHS, "batch_size": BATCH, "callbacks": list(callbacks)},
                                     directory=str(directory), prune_fn=drop_weakest_unit, rounds=rounds,
                                     rewind="weights", rewind_step=3, eval_data=test,
                                     prune_config={"drop_weakest_unit": 1})


def masks_of(rows):
    return [lottery.load_masks(row["checkpoint"]) for row in rows]


# -- RewindCheckpoint, restore ----------------------------------------------------------------------------
def test_rewind_checkpoint_saves_weights_optimizer_and_step(digits, tmp_path):
    (x, y), _ = digits
    seen = {}

    class AtStep3(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 3:
                seen["weights"] = layer_weights(self.model)
                seen["optimizer"] = [v.numpy() for v in self.model.optimizer.variables]

    model = tiny_model()
    compile_sgd(model)
    initial = layer_weights(model)
    callbacks = [lottery.RewindCheckpoint(tmp_path / "k3", step=3), lottery.RewindCheckpoint(tmp_path / "e1", epoch=1),
                 lottery.RewindCheckpoint(tmp_path / "init", epoch=0), AtStep3()]
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)

    point = lottery.load_rewind_point(tmp_path / "k3")
    assert point.step == 3
    for name, values in seen["weights"].items():
        for saved, expected in zip(point.weights[name], values):
            np.testing.assert_array_equal(saved, expected)
    assert len(point.optimizer) == 1 + 4  # iterations, then one momentum per trainable weight
    for saved, expected in zip(point.optimizer, seen["optimizer"]):
        np.testing.assert_array_equal(saved, expected)
    assert lottery.load_rewind_point(tmp_path / "e1").step == 6
    init = lottery.load_rewind_point(tmp_path / "init")
    assert init.step == 0 and all(not slot.any() for slot in init.optimizer)
    np.testing.assert_array_equal(init.weights["hidden"][0], initial["hidden"][0])

    fresh = tiny_model()
    compile_sgd(fresh)
    lottery.restore(fresh, point)
    assert int(fresh.optimizer.iterations.numpy()) == 3
    np.testing.assert_array_equal(fresh.get_layer("logits").get_weights()[0], seen["weights"]["logits"][0])
    for restored, expected in zip(fresh.optimizer.variables, seen["optimizer"]):
        np.testing.assert_array_equal(restored.numpy(), expected)


def test_rewind_checkpoint_refuses_to_skip_its_step(digits, tmp_path):
    (x, y), _ = digits
    model = tiny_model()
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=2)
    with pytest.raises(RuntimeError, match="jumped past 3"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[lottery.RewindCheckpoint(tmp_path, step=3)])
    assert not os.listdir(tmp_path)


def test_rewind_checkpoint_config_round_trips():
    callback = lottery.RewindCheckpoint("/tmp/point", step=7)
    restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(callback))
    assert isinstance(restored, lottery.RewindCheckpoint)
    assert restored.get_config() == {"directory": "/tmp/point", "step": 7, "epoch": None}


@pytest.mark.parametrize("kwargs", [{}, {"step": 3, "epoch": 1}, {"step": -1}, {"epoch": 1.5}, {"step": True}])
def test_rewind_checkpoint_rejects_bad_arguments(kwargs, tmp_path):
    with pytest.raises(ValueError, match="RewindCheckpoint: "):
        lottery.RewindCheckpoint(tmp_path, **kwargs)


@pytest.mark.parametrize("failing", ["savez", "replace"])
def test_checkpoint_write_is_atomic(failing, tmp_path, monkeypatch):
    model = tiny_model()
    compile_sgd(model)
    lottery.save_rewind_point(model, tmp_path)
    before = lottery.load_rewind_point(tmp_path)
    model.optimizer.iterations.assign(5)
    model.get_layer("hidden").kernel.assign_add(np.ones((784, 16), np.float32))

    def torn_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    def failing_replace(source, target):
        raise OSError("power cut")

    if failing == "savez":
        monkeypatch.setattr(np, "savez", torn_savez)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        lottery.save_rewind_point(model, tmp_path)
    monkeypatch.undo()
    after = lottery.load_rewind_point(tmp_path)
    assert after.step == before.step == 0
    np.testing.assert_array_equal(after.weights["hidden"][0], before.weights["hidden"][0])
    assert sorted(os.listdir(tmp_path)) == [lottery.REWIND_FILE]


def test_restore_checks_everything_before_assigning(tmp_path):
    model = tiny_model()
    compile_sgd(model)
    lottery.save_rewind_point(model, tmp_path)
    point = lottery.load_rewind_point(tmp_path)

    wider = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, name="hidden"),
                              keras.layers.Dense(10, name="logits")])
    wider.compile("sgd", "mse")
    kernel = wider.get_layer("logits").kernel.numpy()
    with pytest.raises(ValueError, match="layer 'hidden' has weight shapes"):
        lottery.restore(wider, point)
    np.testing.assert_array_equal(wider.get_layer("logits").kernel.numpy(), kernel)

    adam = tiny_model()
    adam.compile(keras.optimizers.Adam(), "mse")
    kernel = adam.get_layer("hidden").kernel.numpy()
    with pytest.raises(ValueError, match="optimizer variables"):
        lottery.restore(adam, point)
    np.testing.assert_array_equal(adam.get_layer("hidden").kernel.numpy(), kernel)
    with pytest.raises(FileNotFoundError, match="RewindCheckpoint"):
        lottery.load_rewind_point(tmp_path / "missing")


# -- magnitude_masks --------------------------------------------------------------------------------------
def test_magnitude_masks_rank_survivors_globally_or_per_layer():
    a = np.array([[0.1, 5.0], [0.3, 0.4]], np.float32)
    b = np.array([1.0, 2.0, 3.0, 0.2, 0.25, 0.05], np.float32)
    weights = {("a", "kernel"): a, ("b", "kernel"): b}
    current = {("a", "kernel"): np.array([[1, 0], [1, 1]], np.float32)}  # the large 5.0 is already pruned

    masks = lottery.magnitude_masks(weights, 0.45, "global", current_masks=current)  # keep 4 of 9 survivors
    np.testing.assert_array_equal(masks[("a", "kernel")], [[0, 0], [0, 1]])  # 5.0 does not come back
    np.testing.assert_array_equal(masks[("b", "kernel")], [1, 1, 1, 0, 0, 0])
    assert all(((new > 0) <= (current.get(key, 1) > 0)).all() for key, new in masks.items())

    per_layer = lottery.magnitude_masks(weights, 0.5, "layer", current_masks=current)
    assert per_layer[("a", "kernel")].sum() == 2 and per_layer[("b", "kernel")].sum() == 3
    np.testing.assert_array_equal(per_layer[("a", "kernel")], [[0, 0], [1, 1]])

    model = tiny_model()
    from_model = lottery.magnitude_masks(model, 0.8)
    assert set(from_model) == {("hidden", "kernel"), ("logits", "kernel")}
    assert sum(mask.sum() for mask in from_model.values()) == round(0.8 * (784 * 16 + 16 * 10))

    for bad in ({"fraction_of_survivors": 0}, {"fraction_of_survivors": 1.5}, {"scope": "model"},
                {"current_masks": {("c", "kernel"): np.ones(2)}}):
        with pytest.raises(ValueError, match="magnitude_masks: "):
            lottery.magnitude_masks(weights, **dict({"fraction_of_survivors": 0.5}, **bad))


# -- imp ----------------------------------------------------------------------------------------------------
def test_weight_rewinding_restores_checkpoint_on_survivors_and_masks_only_shrink(digits, tmp_path):
    recorder = RoundRecorder()
    train, test = digits
    model, rows = lottery.imp(tiny_model, train, compile_sgd, {"epochs": EPOCHS, "batch_size": BATCH,
                                                                "callbacks": [recorder]},
                              directory=tmp_path, rounds=3, rewind="weights", rewind_step=3, eval_data=test)

    assert [row["round"] for row in rows] == [0, 1, 2, 3]
    assert [row["steps"] for row in rows] == [12, 9, 9, 9]
    remaining = [row["remaining"] for row in rows]
    np.testing.assert_allclose(remaining, [1.0, 0.8, 0.64, 0.512], atol=1e-3)
    masks = masks_of(rows)
    for older, newer in zip(masks, masks[1:]):
        for key in older:
            assert ((newer[key] > 0) <= (older[key] > 0)).all()
            assert newer[key].sum() < older[key].sum() or older[key].sum() == 0

    point = lottery.load_rewind_point(tmp_path / "rewind")
    assert point.step == 3
    for round_index in (1, 2, 3):
        start = recorder.starts[round_index]
        assert start["step"] == 3
        for name in ("hidden", "logits"):
            mask = masks[round_index][(name, "kernel")]
            kernel, bias = start["weights"][name]
            np.testing.assert_array_equal(kernel[mask > 0], point.weights[name][0][mask > 0])
            assert not kernel[mask == 0].any()
            np.testing.assert_array_equal(bias, point.weights[name][1])
        for restored, saved in zip(start["optimizer"], point.optimizer):
            np.testing.assert_array_equal(restored, saved)

    with open(tmp_path / "results.json") as file:
        assert json.load(file) == rows
    with open(tmp_path / "results.csv") as file:
        table = list(csv.DictReader(file))
    assert [float(line["accuracy"]) for line in table] == [row["accuracy"] for row in rows]
    assert all(0 < row["pqi_global"] < 1 for row in rows)

    # The returned model is the last round's: its masks and (masked) weights.
    final = lottery.load_rewind_point(rows[-1]["checkpoint"])
    assert tfprune.masks(model).keys() == masks[-1].keys()
    for (name, attribute), mask in masks[-1].items():
        np.testing.assert_array_equal(tfprune.masks(model)[(name, attribute)], mask)
        np.testing.assert_array_equal(tfprune.strip(model).get_layer(name).get_weights()[0], final.weights[name][0])

    # A finished run answers from its files: a smaller `rounds` returns the first rows, other settings raise.
    counter = CountRounds()
    assert run_imp(digits, tmp_path, [counter], rounds=1) == rows[:2] and counter.begins == 0
    with pytest.raises(ValueError, match=r"different settings \(prune: .*'prune_fraction': 0.2.* -> .*0.3"):
        run_imp(digits, tmp_path, rounds=3, prune_fraction=0.3)


def test_lr_rewinding_replays_the_schedule_from_the_rewind_step(digits, tmp_path):
    recorder = RoundRecorder()
    rows = run_imp(digits, tmp_path, [recorder], rounds=2, rewind="lr", rewind_step=5, scope="layer",
                   exclude=["logits"])
    expected = float(schedule()(5))
    assert expected == pytest.approx(SCHEDULE_VALUES[1])
    assert recorder.learning_rates[0][0] == pytest.approx(SCHEDULE_VALUES[0])
    for round_index in (1, 2):
        start = recorder.starts[round_index]
        assert start["step"] == 5
        assert recorder.learning_rates[round_index][0] == pytest.approx(expected)
        assert recorder.learning_rates[round_index][-1] == pytest.approx(SCHEDULE_VALUES[2])
        # LR rewinding keeps the trained weights: the previous round's final weights, newly masked.
        previous = lottery.load_rewind_point(rows[round_index - 1]["checkpoint"])
        mask = lottery.load_masks(rows[round_index]["checkpoint"])[("hidden", "kernel")]
        np.testing.assert_array_equal(start["weights"]["hidden"][0], previous.weights["hidden"][0] * mask)
        survivors = 784 * 16
        for _ in range(round_index):
            survivors = round(0.8 * survivors)
        assert mask.sum() == survivors  # scope="layer": exactly 20% of this layer's survivors per round
        assert set(lottery.load_masks(rows[round_index]["checkpoint"])) == {("hidden", "kernel")}


def test_fine_tuning_uses_the_final_learning_rate_throughout(digits, tmp_path):
    recorder = RoundRecorder()
    rows = run_imp(digits, tmp_path, [recorder], rounds=1, rewind="none", rewind_step=None)
    assert rows[1]["steps"] == 12
    assert recorder.learning_rates[1] == [pytest.approx(SCHEDULE_VALUES[2])] * 12


def test_rounds_are_scored_and_saved_with_recomputed_batch_norm_statistics(digits, tmp_path):
    """The moving averages lag a round's training; a round's accuracy and checkpoint use statistics recomputed
    on the first 512 training examples, so recomputing them again changes nothing."""
    def model_fn():
        inputs = keras.Input((784,), name="input")
        hidden = keras.layers.Dense(16, name="hidden")(inputs)
        hidden = keras.layers.BatchNormalization(name="norm")(hidden)
        return keras.Model(inputs, keras.layers.Dense(10, name="logits")(keras.layers.ReLU(name="relu")(hidden)))

    train, test = digits
    model, rows = lottery.iterative_pruning(model_fn, train, compile_sgd, {"epochs": EPOCHS, "batch_size": BATCH},
                                            directory=str(tmp_path), prune_fn=drop_weakest_unit, rounds=1,
                                            rewind="none", eval_data=test)
    norm = next(inner_layer(layer) for layer in iter_layers(model) if inner_layer(layer).name == "norm")
    saved = [variable.numpy() for variable in (norm.moving_mean, norm.moving_variance)]
    tfprune.recalibrate_batch_norm(model, train[0][:512], BATCH)
    for variable, value in zip((norm.moving_mean, norm.moving_variance), saved):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5, atol=1e-6)
    assert not np.allclose(saved[0], 0)  # not the initial statistics
    labels = np.asarray(model(test[0], training=False)).argmax(-1)
    assert rows[-1]["accuracy"] == pytest.approx(np.mean(labels == test[1]))


def test_rewinding_to_init_restores_step_zero(digits, tmp_path):
    recorder = RoundRecorder()
    run_imp(digits, tmp_path, [recorder], rounds=1, rewind="init", rewind_step=None)
    assert recorder.starts[1]["step"] == 0
    mask = lottery.load_masks(tmp_path / "round_1")[("hidden", "kernel")]
    initial = recorder.starts[0]["weights"]["hidden"][0]
    np.testing.assert_array_equal(recorder.starts[1]["weights"]["hidden"][0], initial * mask)


# Runs `run_custom` on the digits in argv[1] into argv[2], SIGKILLing itself after the third batch of round 2:
# rounds 0 and 1 are committed, round 2 is half trained.
KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from tfprune._keras import keras
    from test_lottery import run_custom

    class KillInRound2(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.round = getattr(self, "round", -1) + 1

        def on_train_batch_end(self, batch, logs=None):
            if self.round == 2 and batch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    with np.load(sys.argv[1]) as arrays:
        digits = (arrays["x"], arrays["y"]), (arrays["x_test"], arrays["y_test"])
    run_custom(digits, sys.argv[2], [KillInRound2()])
""")


@pytest.mark.slow
def test_custom_step_killed_mid_round_resumes_to_the_uninterrupted_result(digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    np.savez(tmp_path / "digits.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    killed = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "digits.npz"), str(tmp_path / "b")],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        model, uninterrupted = run_custom(digits, tmp_path / "a")  # meanwhile, the run never killed
        _, stderr = killed.communicate(timeout=240)
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.communicate()
    assert killed.returncode == -signal.SIGKILL, stderr[-3000:]
    with open(tmp_path / "b" / lottery.STATE_FILE) as file:
        assert [row["round"] for row in json.load(file)["rows"]] == [0, 1]

    counter = CountRounds()
    resumed_model, resumed = run_custom(digits, tmp_path / "b", [counter])
    assert counter.begins == 2  # only rounds 2 and 3 were trained again

    def without_paths(rows):
        return [{key: value for key, value in row.items() if key != "checkpoint"} for row in rows]

    assert without_paths(resumed) == without_paths(uninterrupted)
    for first, second in zip(uninterrupted, resumed):
        masks, again = lottery.load_masks(first["checkpoint"]), lottery.load_masks(second["checkpoint"])
        assert masks.keys() == again.keys()
        for key in masks:
            np.testing.assert_array_equal(masks[key], again[key])
    for final in (model, resumed_model):  # three rounds, three dead hidden units: each step's zeros were kept
        hidden = tfprune.masks(final)[("hidden", "kernel")]
        assert (hidden.sum(axis=0) == 0).sum() == 3 and set(np.unique(hidden)) == {0, 1}
    for name in ("hidden", "logits"):
        np.testing.assert_array_equal(tfprune.strip(resumed_model).get_layer(name).kernel.numpy(),
                                      tfprune.strip(model).get_layer(name).kernel.numpy())


@pytest.mark.parametrize("prune_fn, error", [
    (lambda model, round_index: [np.ones((784, 16))], r"must return masks as \{layer_name"),
    (lambda model, round_index: {"output": {"kernel": np.ones((16, 10))}}, "'output' weight 'kernel', which the "
                                                                            "model does not have"),
    (lambda model, round_index: {"logits": {"kernel": np.ones((10, 16))}}, r"\(10, 16\) .* has as \(16, 10\)"),
])
def test_a_bad_pruning_step_fails_before_training(digits, tmp_path, prune_fn, error):
    with pytest.raises((TypeError, ValueError), match=error):
        lottery.iterative_pruning(tiny_model, digits[0], compile_sgd, {"epochs": EPOCHS, "batch_size": BATCH},
                                  directory=tmp_path / "run", prune_fn=prune_fn, rewind="init")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kwargs, error", [
    ({"rewind": "late"}, "`rewind` must be one of"),
    ({"rewind": "weights", "rewind_step": None}, "needs `rewind_step`"),
    ({"rewind": "weights", "rewind_step": 12}, "must be below the dense run's 12 steps"),
    ({"rewind": "init", "rewind_step": 3}, "rewinds to step 0"),
    ({"prune_fraction": 1.0}, r"`prune_fraction` must be a number in \(0, 1\)"),
    ({"scope": "net"}, "`scope` must be one of"),
    ({"exclude": ["output"]}, "`exclude` names \\['output'\\]"),
    ({"exclude": ["hidden", "logits"]}, "leaves no prunable layer"),
    ({"rounds": -1}, "`rounds` must be an integer >= 0"),
    ({"fit": {"epochs": 2, "shuffle": True}}, "keys \\['shuffle'\\] are not supported"),
    ({"fit": {"batch_size": 50}}, "needs 'epochs'"),
    ({"fit": {"epochs": 1, "batch_size": 1000}}, "batch_size'\\] <= 300"),
    ({"eval_data": (np.zeros((3, 784)), np.zeros(2))}, "`eval_data` needs as many labels"),
])
def test_imp_rejects_bad_arguments_before_writing(digits, tmp_path, kwargs, error):
    train, test = digits
    fit = kwargs.pop("fit", {"epochs": EPOCHS, "batch_size": BATCH})
    settings = dict({"rewind": "weights", "rewind_step": 3, "eval_data": test}, **kwargs)
    with pytest.raises(ValueError, match=error):
        lottery.imp(tiny_model, train, compile_sgd, fit, directory=str(tmp_path / "run"), **settings)
    assert not (tmp_path / "run").exists()


def test_progress_over_rounds_says_when_it_resumes_and_is_silenced_by_verbose_0(digits, tmp_path, capsys):
    run_imp(digits, tmp_path, rounds=1)
    first = capsys.readouterr().out
    assert "2/2" in first and "round" in first and "accuracy" in first and "resuming" not in first
    run_imp(digits, tmp_path, rounds=2)  # one more round: resumes after the stored ones
    assert "resuming from round 2 of 2" in capsys.readouterr().out
    run_imp(digits, tmp_path / "quiet", rounds=1, verbose=0)
    assert capsys.readouterr().out == ""
