"""Checks on weight values, run once at the entry points that rank weights.

A NaN or inf compares false with everything, so a ranking that meets one keeps or drops it arbitrarily and
passes it on (a masked NaN stays NaN); tfprune refuses such weights instead.
"""
from tfprune._keras import keras, tf

__all__ = ["check_finite"]


def _layers(model_or_layer):
    if isinstance(model_or_layer, keras.Model):
        for layer in model_or_layer.layers:
            yield from _layers(layer)
    else:
        yield model_or_layer


def check_finite(model_or_layer, what):
    """Raise ValueError naming the first layer and weight of `model_or_layer` that holds NaN or inf.

    `what` names the caller in the message (e.g. ``"oneshot"``). Each weight is tested on its own device: only
    one boolean per weight reaches the host.
    """
    for layer in _layers(model_or_layer):
        for weight in layer.weights:
            if weight.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(weight))):
                raise ValueError(
                    f"{what}: layer '{layer.name}' weight '{weight.name}' holds NaN or inf; tfprune cannot rank "
                    "such weights by magnitude. The training that produced them diverged: check the data, the "
                    "loss and the learning rate (try a lower one), then train again.")
