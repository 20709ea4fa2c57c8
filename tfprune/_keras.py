"""The one place tfprune imports Keras.

TFMOT 0.8 only understands Keras 2 objects, so tfprune pins itself to ``tf_keras``.
Every other module takes ``keras``, ``tf`` and ``tfmot`` from here.
"""
import os

# Must be set before TensorFlow or TFMOT first import Keras; TFMOT sets it too.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
# TFMOT's pruning wrapper class is not in its public API; tfprune recognises it through this one name.
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude)

__all__ = ["tf", "keras", "tfmot", "PruneLowMagnitude", "check_model", "check_layer"]

_KERAS3_HELP = (
    "tfprune (like TFMOT 0.8) works with Keras 2 models from the `tf_keras` package, but {what} is a "
    "Keras 3 object ({cls}). Build the model with `import tf_keras as keras` (or set "
    "TF_USE_LEGACY_KERAS=1 before importing TensorFlow and use `tf.keras`), then pass it again."
)


def _is_keras3(obj):
    return type(obj).__module__.split(".")[0] == "keras"


def check_model(model, argument="model"):
    """Raise a clear error unless ``model`` is a tf_keras Model; return it unchanged."""
    if isinstance(model, keras.Model):
        return model
    if _is_keras3(model):
        raise TypeError(_KERAS3_HELP.format(what=f"argument `{argument}`", cls=type(model).__name__))
    raise TypeError(
        f"argument `{argument}` must be a tf_keras Model (Sequential or functional), got "
        f"{type(model).__name__}."
    )


def check_layer(layer, argument="layer"):
    """Raise a clear error unless ``layer`` is a tf_keras Layer; return it unchanged."""
    if isinstance(layer, keras.layers.Layer):
        return layer
    if _is_keras3(layer):
        raise TypeError(_KERAS3_HELP.format(what=f"argument `{argument}`", cls=type(layer).__name__))
    raise TypeError(f"argument `{argument}` must be a tf_keras Layer, got {type(layer).__name__}.")
