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
# Layer classes tf_keras does not export that the layer registry describes: the op layers tf_keras makes from
# `x + 3` or `tf.nn.relu6(x)`, and the custom layers inside keras.applications models.
from tf_keras.src.layers.core.tf_op_layer import TFOpLambda  # noqa: E402
from tf_keras.src.applications.convnext import LayerScale, StochasticDepth  # noqa: E402
from tf_keras.src.applications.inception_resnet_v2 import CustomScaleLayer  # noqa: E402
import types  # noqa: E402
applications = types.SimpleNamespace(LayerScale=LayerScale, StochasticDepth=StochasticDepth,
                                     CustomScaleLayer=CustomScaleLayer)

__all__ = ["tf", "keras", "tfmot", "PruneLowMagnitude", "TFOpLambda", "applications", "check_model", "check_layer",
           "unwrap_layer"]

# Files saved from models that TFMOT wraps name the wrapper 'PruneLowMagnitude'. Registering that name (all that
# `tfmot.sparsity.keras.prune_scope()` does) lets plain `keras.models.load_model` read them. The wrapper
# deserializes its own schedules; registering 'PolynomialDecay' globally would shadow the Keras learning-rate
# schedule of that name in .h5 files.
keras.utils.get_custom_objects().setdefault("PruneLowMagnitude", PruneLowMagnitude)

_KERAS3_HELP = (
    "tfprune (like TFMOT 0.8) works with Keras 2 models from the `tf_keras` package, but {what} is a "
    "Keras 3 object ({cls}). Build the model with `import tf_keras as keras` (or set "
    "TF_USE_LEGACY_KERAS=1 before importing TensorFlow and use `tf.keras`), then pass it again."
)


def _is_keras3(obj):
    return type(obj).__module__.split(".")[0] == "keras"


def unwrap_layer(layer):
    """The innermost layer behind transparent wrappers (tfmot's PruneLowMagnitude, tfprune_transparent ones)."""
    while isinstance(layer, PruneLowMagnitude) or (
            isinstance(layer, keras.layers.Wrapper) and getattr(type(layer), "tfprune_transparent", False)):
        layer = layer.layer
    return layer


def _shared_layer_names(model):
    """Names that two different layers hold anywhere in `model`, nested models and pruning wrappers included."""
    seen, shared = {}, set()

    def visit(parent):
        for layer in parent.layers:
            inner = unwrap_layer(layer)
            if seen.setdefault(inner.name, inner) is not inner:
                shared.add(inner.name)
            if isinstance(inner, keras.Model):
                visit(inner)

    visit(model)
    return sorted(shared)


def check_model(model, argument="model"):
    """Raise a clear error unless ``model`` is a tf_keras Model whose layers have unique names; return it unchanged.

    Masks, strip, shrink and `exclude` find layers by name, so two layers sharing one (possible across nested
    models) would be silently merged.
    """
    if isinstance(model, keras.Model):
        shared = _shared_layer_names(model)
        if shared:
            raise ValueError(
                f"argument `{argument}`: model '{model.name}' has different layers sharing the name(s) {shared} "
                "(nested models and pruning wrappers included). tfprune finds layers by name, so it cannot tell "
                "them apart. Give every layer a unique name, e.g. `keras.layers.Dense(8, name='branch_a_dense')`, "
                "and build the model again.")
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
