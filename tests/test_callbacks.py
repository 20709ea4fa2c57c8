"""UpdatePruningStep: the step lives in the model, and training without the callback never silently ends dense."""
import numpy as np
import pytest

import tfprune
from tfprune._keras import keras, tf


def _compiled(model):
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _pruned(kind):
    model = tfprune.models.mlp(hidden=(16, 8), seed=0, flavor="tf_keras")
    schedule = tfprune.PolynomialDecay(0.0, 0.5, 0, 4, frequency=2)
    if kind == "units":
        return _compiled(tfprune.prune_units(model, schedule))
    return _compiled(tfprune.prune_weights(model, schedule, scope=kind))


@pytest.mark.parametrize("kind, fits_before", [("units", 0), ("global", 0), ("layer", 0), ("global", 1)])
def test_training_without_the_callback_raises_naming_it(kind, fits_before, mnist_small):
    """tfprune's wrappers and TFMOT's ("layer") both stop at the first step where the schedule fires. The check
    is in the graph, so a later fit that reuses the traced train step is caught as well."""
    (x, y), _ = mnist_small
    model = _pruned(kind)
    for _ in range(fits_before):
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    with pytest.raises(tf.errors.InvalidArgumentError, match="UpdatePruningStep"):
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)


def test_steps_advance_in_the_model_and_fixed_masks_need_no_callback(mnist_small):
    (x, y), _ = mnist_small
    model = _pruned("units")
    model.fit(x[:96], y[:96], batch_size=32, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert {int(layer.pruning_step.numpy()) for layer in tfprune.mask.masked_layers(model)} == {6}
    fixed = _compiled(tfprune.with_masks(tfprune.models.mlp(hidden=(16, 8), seed=0, flavor="tf_keras"),
                                         {"dense_0": np.ones((784, 16), np.float32)}))
    fixed.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # fixed masks: no schedule, no callback


def test_wrong_calibration_data_fails_before_anything_changes(mnist_small):
    (x, y), _ = mnist_small
    model = _compiled(tfprune.prune_units(tfprune.models.mlp(hidden=(16, 8), seed=0, flavor="tf_keras"),
                                          tfprune.ConstantSparsity(0.5, 0), criterion="taylor"))
    callback = tfprune.UpdatePruningStep(data=(x[:8].reshape(8, 28, 28), y[:8]))
    with pytest.raises(ValueError, match="calibration data for criterion 'taylor' does not fit"):
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert all(int(layer.pruning_step.numpy()) == -1 for layer in tfprune.mask.masked_layers(model))


@pytest.mark.parametrize("model", [keras.Sequential([keras.layers.Input((4,)), keras.layers.ReLU()]),
                                   keras.Sequential()])
def test_nothing_prunable_raises_for_weights_and_units(model):
    with pytest.raises(ValueError, match="nothing to prune|no prunable"):
        tfprune.prune_weights(model, tfprune.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError):
        tfprune.prune_units(model, tfprune.ConstantSparsity(0.5, 0))


_PLACEMENT_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tfprune
kind = sys.argv[1]
with tf.device("/CPU:1"):
    model = tfprune.models.mlp(hidden=(32, 16), seed=0, flavor="tf_keras")
    schedule = tfprune.ConstantSparsity(0.5, 0)
    model = tfprune.prune_units(model, schedule) if kind == "units" else tfprune.prune_weights(model, schedule,
                                                                                             scope="global")
callback = tfprune.UpdatePruningStep()
callback.set_model(model)
callback.on_train_begin()
pruner, = callback.pruners
pruner.update(0.5, 0)
graph = pruner._compiled.get_concrete_function(tf.constant(0.5, tf.float64), tf.constant(0, tf.int64)).graph
# Variable reads always run where the variable lives; Identity/NoOp only hand back the result.
devices = {op.device for op in graph.get_operations()
           if op.type not in ("Placeholder", "ReadVariableOp", "Identity", "NoOp")}
host_calls = [op.type for op in graph.get_operations() if "PyFunc" in op.type or "Numpy" in op.type]
variables = {v.device for layer in callback.layers for v in layer.weights}
assert all(device.endswith("CPU:1") for device in variables), variables
assert devices and all(device.endswith("CPU:1") for device in devices), devices
assert not host_calls, host_calls
kernels = [mask for (_, weight), mask in tfprune.masks(model).items() if weight == "kernel"]
assert 0.3 < sum(m.sum() for m in kernels) / sum(m.size for m in kernels) < 0.7  # the update masked about half
"""


@pytest.mark.parametrize("kind", ["global", "units"])
def test_mask_updates_run_on_the_device_of_the_variables(kind, tmp_path):
    """With the model on a second device, every op of a pruner's traced update is placed there and none calls
    back into Python: the update never copies weights or masks to the host."""
    import os
    import subprocess
    import sys
    script = tmp_path / "placement.py"
    script.write_text(_PLACEMENT_SCRIPT)
    result = subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]


def test_wrappers_disagreeing_on_a_plan_are_refused():
    """Every wrapper carries the same plan; copies that differ would make the result depend on layer order."""
    model = _pruned("units")
    layer = tfprune.mask.masked_layers(model)[1]
    layer.plan = {**layer.plan, "unit": {**layer.plan["unit"], "round_to": 8}}
    callback = tfprune.UpdatePruningStep()
    callback.set_model(model)
    with pytest.raises(ValueError, match="carry a different 'unit' pruning plan"):
        callback.on_train_begin()
