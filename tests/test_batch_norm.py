"""Batch-normalization statistics recomputed on data: exact averages, nothing else touched, both flavors."""
import numpy as np
import pytest

import tfprune
from tfprune._keras import keras, keras3


def _conv_bn(flavor):
    inputs = flavor.Input((8, 8, 3))
    hidden = flavor.layers.Conv2D(4, 3, name="conv")(inputs)
    hidden = flavor.layers.BatchNormalization(name="bn")(hidden)
    return flavor.Model(inputs, flavor.layers.Dense(2)(flavor.layers.Flatten()(hidden)))


@pytest.mark.parametrize("flavor", [keras, keras3], ids=["tf_keras", "keras3"])
def test_statistics_become_the_average_over_the_batches(flavor):
    model = _conv_bn(flavor)
    x = np.random.default_rng(0).normal(2.0, 3.0, (64, 8, 8, 3)).astype("float32")
    bn = model.get_layer("bn")
    weights = [w.copy() for w in model.get_layer("conv").get_weights()] + [bn.gamma.numpy().copy()]
    assert tfprune.recalibrate_batch_norm(model, x, batch_size=16) == 1
    features = flavor.Model(model.inputs, model.get_layer("conv").output).predict(x, verbose=0)
    batches = features.reshape(4, -1, 4)  # 4 batches of 16 examples
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=1).mean(axis=0), rtol=1e-4, atol=1e-4)
    # tf_keras keeps the unbiased batch variance (n / (n - 1) = 576 / 575 here), Keras 3 the biased one
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=3e-3)
    assert bn.momentum == 0.99
    for before, after in zip(weights, model.get_layer("conv").get_weights() + [bn.gamma.numpy()]):
        np.testing.assert_array_equal(before, after)


def test_masked_models_frozen_layers_and_bad_input():
    model = _conv_bn(keras3)
    masked = tfprune.oneshot(model, "unit", 0.5)
    x = np.ones((8, 8, 8, 3), "float32")
    assert tfprune.recalibrate_batch_norm(masked, x) == 1
    model.get_layer("bn").trainable = False  # frozen statistics stay as they are
    with pytest.warns(UserWarning, match="no trainable batch normalization"):
        assert tfprune.recalibrate_batch_norm(model, x) == 0
    with pytest.raises(ValueError, match="no examples"):
        tfprune.recalibrate_batch_norm(model, x[:0])
    with pytest.raises(TypeError, match="array of input examples"):
        tfprune.recalibrate_batch_norm(model, iter(x))
