"""UpdatePruningStep: the step lives in the model, and training without the callback never silently ends dense."""
import numpy as np
import pytest

import tfprune
from tfprune._keras import keras, tf


def _compiled(model):
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _pruned(kind):
    model = tfprune.models.mlp(hidden=(16, 8), seed=0)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, 0, 4, frequency=2)
    if kind == "units":
        return _compiled(tfprune.prune_units(model, schedule))
    return _compiled(tfprune.prune_weights(model, schedule, scope=kind))


@pytest.mark.parametrize("kind", ["units", "global", "layer"])
def test_training_without_the_callback_raises_naming_it(kind, mnist_small):
    """tfprune's wrappers and TFMOT's ("layer") both stop at the first step where the schedule fires."""
    (x, y), _ = mnist_small
    model = _pruned(kind)
    with pytest.raises(tf.errors.InvalidArgumentError, match="UpdatePruningStep"):
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)


def test_a_later_fit_without_the_callback_raises_too(mnist_small):
    """The check is in the graph, so a fit that reuses the traced train step is caught as well."""
    (x, y), _ = mnist_small
    model = _pruned("global")
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    with pytest.raises(tf.errors.InvalidArgumentError, match="UpdatePruningStep"):
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)


def test_steps_advance_in_the_model_and_fixed_masks_need_no_callback(mnist_small):
    (x, y), _ = mnist_small
    model = _pruned("units")
    model.fit(x[:96], y[:96], batch_size=32, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert {int(layer.pruning_step.numpy()) for layer in tfprune.mask.masked_layers(model)} == {6}
    fixed = _compiled(tfprune.with_masks(tfprune.models.mlp(hidden=(16, 8), seed=0),
                                         {"dense_0": np.ones((784, 16), np.float32)}))
    fixed.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # fixed masks: no schedule, no callback


def test_wrong_calibration_data_fails_before_anything_changes(mnist_small):
    (x, y), _ = mnist_small
    model = _compiled(tfprune.prune_units(tfprune.models.mlp(hidden=(16, 8), seed=0),
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
