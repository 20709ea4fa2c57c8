"""The Keras boundary: the one place tfprune imports Keras, for both flavors it serves.

tfprune works on Keras 3 models (the `keras` TensorFlow 2.21 ships, TensorFlow backend) and on tf_keras models
(Keras 2, which TFMOT 0.8 needs) with one code path. The contract: every other module takes ``tf``, the two
Keras modules and TFMOT from here, and asks this module, for a given model or layer, the questions whose
answers differ by flavor:
  - which flavor it is (`flavor_of`) and whether it is a model, layer or variable of either (`is_model`, ...);
  - its functional graph as flavor-neutral `Node`s (`graph_nodes`): Keras 3 calls them operations, with
    `input_tensors` and `arguments`; tf_keras calls them layers, with `keras_inputs` and `call_args`;
  - where a layer keeps a weight it reads during `call` (`weight_slot`: Keras 3 reads `kernel` through a
    property over `_kernel`), and a layer's input/output shapes;
  - model cloning and inputs in the model's own flavor (`flavor_of(model).models.clone_model`).
A function that takes a model returns the flavor it was given.

`import tfprune` does not change what the user's `tf.keras` means: TFMOT's import sets TF_USE_LEGACY_KERAS=1,
so `tf.keras` is resolved (to Keras 3, unless the user set the variable) before TFMOT loads, and the variable
is put back as the user had it.
"""
import collections
import json
import os
import types
import zipfile

import tensorflow as tf

_USER_LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS")
tf.keras.__name__  # noqa: B018  (resolve tf.keras the way the user asked, before TFMOT sets the variable)

import keras as keras3  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
# TFMOT's pruning wrapper class is not in its public API; tfprune recognises it through this one name.
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude)

if _USER_LEGACY_KERAS is None:
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
else:
    os.environ["TF_USE_LEGACY_KERAS"] = _USER_LEGACY_KERAS

# Layer classes tf_keras does not export that the layer registry describes: the op layers tf_keras makes from
# `x + 3` or `tf.nn.relu6(x)`, and the custom layers inside keras.applications models.
from tf_keras.src.layers.core.tf_op_layer import TFOpLambda  # noqa: E402
from tf_keras.src.applications import convnext as _convnext2, inception_resnet_v2 as _irv2_2  # noqa: E402
from keras.src.applications import convnext as _convnext3, inception_resnet_v2 as _irv2_3  # noqa: E402
from keras.src.ops import nn as _ops_nn, numpy as _ops_numpy  # noqa: E402

#: Per flavor, the custom layers inside keras.applications models.
applications = {flavor: types.SimpleNamespace(LayerScale=convnext.LayerScale, StochasticDepth=convnext.StochasticDepth,
                                              CustomScaleLayer=irv2.CustomScaleLayer)
                for flavor, convnext, irv2 in ((keras, _convnext2, _irv2_2), (keras3, _convnext3, _irv2_3))}
#: Keras 3 operations that `x + 3`, `x * y` or `keras.ops.relu(x)` put in a functional graph, by kind.
KERAS3_UNARY_OPS = tuple(getattr(_ops_nn, name) for name in (
    "Relu", "Relu6", "Elu", "Selu", "Silu", "Gelu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSilu",
    "Softplus")) + tuple(getattr(_ops_numpy, name) for name in (
        "Negative", "Abs", "Absolute", "Square", "Sqrt", "Exp", "Tanh"))
KERAS3_BINARY_OPS = tuple(getattr(_ops_numpy, name) for name in (
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum"))
#: The Keras 3 operation `x[...]` puts in a functional graph.
KERAS3_GET_ITEM = _ops_numpy.GetItem
FLAVORS = (keras, keras3)
#: The learning-rate schedule base classes of both flavors.
LEARNING_RATE_SCHEDULES = (keras.optimizers.schedules.LearningRateSchedule,
                           keras3.optimizers.schedules.LearningRateSchedule)
_DENSE = tuple(flavor.layers.Dense for flavor in FLAVORS)
_CONV = tuple(getattr(flavor.layers, f"Conv{rank}D") for flavor in FLAVORS for rank in (1, 2, 3))
#: Transposed convolutions of both flavors: their kernels hold output channels second to last.
TRANSPOSED_CONVOLUTIONS = tuple(getattr(flavor.layers, f"Conv{rank}DTranspose") for flavor in FLAVORS for rank in (1, 2, 3))
#: Per flavor, the variable aggregation under which only the first replica's updates count (the pruning step).
FIRST_REPLICA = {keras: tf.VariableAggregation.ONLY_FIRST_REPLICA, keras3: "only_first_replica"}

__all__ = ["tf", "keras", "keras3", "tfmot", "PruneLowMagnitude", "TFOpLambda", "applications", "FLAVORS",
           "FIRST_REPLICA", "LEARNING_RATE_SCHEDULES", "keras_module", "is_optimizer", "is_callback", "kernel_kind", "TRANSPOSED_CONVOLUTIONS",
           "learning_rate_schedule", "set_random_seed", "clear_session",
           "KERAS3_UNARY_OPS", "KERAS3_BINARY_OPS", "KERAS3_GET_ITEM", "Node", "flavor_of", "is_model", "is_layer", "is_variable", "is_symbolic", "tf_variable",
           "graph_nodes", "is_graph_model", "weight_slot", "saved_flavor", "load_model", "output_shape", "input_shape", "input_shapes", "check_model", "check_layer", "unwrap_layer"]


def flavor_of(obj):
    """The Keras module (`keras3` or tf_keras `keras`) that `obj` belongs to, so callers build clones and layers
    in the flavor they were given.

    Args:
      obj: a model, layer, operation, Keras tensor, variable, optimizer, schedule or callback, or one of their
        classes.

    Returns:
      `keras3` for Keras 3 objects; tf_keras `keras` for everything else.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    if issubclass(cls, (keras3.Operation, keras3.KerasTensor, keras3.Variable, keras3.optimizers.Optimizer,
                        keras3.optimizers.schedules.LearningRateSchedule, keras3.callbacks.Callback)):
        return keras3
    return keras


def keras_module(flavor):
    """The Keras module a flavor name means: "tf_keras" (Keras 2, what TFMOT wraps) or "keras" (Keras 3).

    Args:
      flavor: "tf_keras" or "keras".

    Returns:
      the module.

    Raises:
      ValueError: any other name.
    """
    modules = {"tf_keras": keras, "keras": keras3}
    if flavor not in modules:
        raise ValueError(f"flavor must be 'tf_keras' (Keras 2, which TFMOT needs) or 'keras' (Keras 3), got {flavor!r}.")
    return modules[flavor]


def is_model(obj):
    """Whether `obj` is a Model of either flavor, for code that must treat nested models as containers.

    Args:
      obj: any object.

    Returns:
      True for a tf_keras or Keras 3 `Model` instance.
    """
    return isinstance(obj, (keras.Model, keras3.Model))


def kernel_kind(layer):
    """"dense" or "conv" for a Dense or Conv1D/2D/3D layer of either flavor, whose kernel holds the output units on
    its last axis and the input channels on the one before; None for any other layer (transposed convolutions
    subclass Conv but swap those two axes).

    Args:
      layer: any layer.

    Returns:
      "dense", "conv" or None.
    """
    if isinstance(layer, _DENSE):
        return "dense"
    if isinstance(layer, _CONV) and not isinstance(layer, TRANSPOSED_CONVOLUTIONS):
        return "conv"
    return None


def is_optimizer(obj):
    """Whether `obj` is a current optimizer of either flavor (tf_keras' `keras.optimizers.legacy` ones are not:
    their state is laid out differently).

    Args:
      obj: any object.

    Returns:
      True for a tf_keras or Keras 3 `Optimizer` instance.
    """
    return isinstance(obj, (keras.optimizers.Optimizer, keras3.optimizers.Optimizer))


def is_callback(obj):
    """Whether `obj` is a Callback of either flavor; `fit` of either flavor calls both kinds alike.

    Args:
      obj: any object.

    Returns:
      True for a tf_keras or Keras 3 `Callback` instance.
    """
    return isinstance(obj, (keras.callbacks.Callback, keras3.callbacks.Callback))


def learning_rate_schedule(optimizer):
    """The schedule `optimizer` was built with, or None for a fixed rate. Both flavors' current optimizers keep
    it in `_learning_rate`; their public getter returns only the current value.

    Args:
      optimizer: an optimizer of either flavor.

    Returns:
      the `LearningRateSchedule`, or None.
    """
    schedule = getattr(optimizer, "_learning_rate", None)
    if not isinstance(schedule, LEARNING_RATE_SCHEDULES):
        schedule = getattr(optimizer, "learning_rate", None)  # tf_keras' legacy optimizers hand it back
    return schedule if isinstance(schedule, LEARNING_RATE_SCHEDULES) else None


def set_random_seed(seed):
    """Seed Python, NumPy, TensorFlow and both flavors' initializers, so a model of either flavor built next
    is reproducible.

    Args:
      seed: an integer.
    """
    keras.utils.set_random_seed(seed)
    keras3.utils.set_random_seed(seed)


def clear_session():
    """Reset both flavors' global state (automatic layer names restart), so a rebuilt model gets the same names."""
    keras.backend.clear_session()
    keras3.backend.clear_session()


def is_layer(obj):
    """Whether `obj` is a Layer of either flavor (models included, as Keras makes them layers).

    Args:
      obj: any object.

    Returns:
      True for a tf_keras or Keras 3 `Layer` instance.
    """
    return isinstance(obj, (keras.layers.Layer, keras3.layers.Layer))


def is_symbolic(value):
    """Whether a call argument is a graph tensor (either flavor's KerasTensor) rather than a constant.

    Args:
      value: one positional or keyword argument of a node's call.

    Returns:
      True for a TensorFlow tensor or a Keras 3 `KerasTensor`.
    """
    return tf.is_tensor(value) or isinstance(value, keras3.KerasTensor)


def tf_variable(variable):
    """The tf.Variable behind a variable of either flavor (Keras 3 wraps one: no `device`, `read_value` or
    `assign(..., read_value=False)` of its own), for in-graph updates where the variable lives.

    Args:
      variable: a `tf.Variable` or a Keras 3 `Variable`.

    Returns:
      the `tf.Variable` itself, or the one a Keras 3 variable wraps.
    """
    return variable.value if isinstance(variable, keras3.Variable) else variable


def is_variable(obj):
    """Whether `obj` is a variable of either flavor, since Keras 3 variables are not `tf.Variable`s.

    Args:
      obj: any object.

    Returns:
      True for a `tf.Variable` or a Keras 3 `Variable`.
    """
    return isinstance(obj, (tf.Variable, keras3.Variable))


#: One call in a functional graph, whichever flavor: the layer (or Keras 3 operation), whether it is the
#: model's input, its input and output Keras tensors, and the call's positional and keyword arguments.
Node = collections.namedtuple("Node", "layer is_input inputs outputs args kwargs")


def is_graph_model(model):
    """Whether `model` has a layer graph (functional, or a built Sequential) rather than a subclassed `call`;
    only graph models can be traced for channel dependencies.

    Args:
      model: a model of either flavor.

    Returns:
      True for a functional model or a built Sequential.
    """
    if flavor_of(model) is keras3:
        return isinstance(model, keras3.Sequential) and model._functional is not None or hasattr(
            model, "_nodes_by_depth")
    return getattr(model, "_is_graph_network", False)


def graph_nodes(model):
    """The nodes of a functional model or built Sequential, deepest first (inputs before their readers), in one
    shape for both flavors so the graph tracer needs no flavor checks.

    Args:
      model: a model for which `is_graph_model` is true.

    Returns:
      a list of `Node`s, input nodes included.
    """
    if isinstance(model, keras3.Sequential):
        model = model._functional  # Keras 3 keeps a built Sequential's graph in a Functional of its own
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if flavor_of(model) is keras3:
                arguments = node.arguments
                nodes.append(Node(node.operation, node.is_input, list(node.input_tensors), list(node.output_tensors),
                                  tuple(arguments.args) if arguments else (), dict(arguments.kwargs) if arguments else {}))
            else:
                outputs = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
                nodes.append(Node(node.layer, node.is_input, list(node.keras_inputs), list(outputs),
                                  tuple(node.call_args), dict(node.call_kwargs)))
    return nodes


def weight_slot(layer, name):
    """The attribute `call` reads weight `name` from: Keras 3 layers expose `kernel` as a property over
    `_kernel` (quantization and LoRA hooks), so a mask must replace `_kernel` for the duration of a call.

    Args:
      layer: a layer of either flavor.
      name: the weight's attribute name, e.g. ``"kernel"``.

    Returns:
      ``"_" + name`` when `name` is a property over that attribute, else `name`.
    """
    if isinstance(getattr(type(layer), name, None), property) and hasattr(layer, "_" + name):
        return "_" + name
    return name


def _first_call_shapes(layer, which):
    """Shapes of the inputs or outputs of a layer's first call in a graph (a shared layer has several)."""
    if flavor_of(layer) is keras3:
        node = layer._inbound_nodes[0]
        return [tuple(t.shape) for t in (node.input_tensors if which == "input" else node.output_tensors)]
    shape = layer.get_input_shape_at(0) if which == "input" else layer.get_output_shape_at(0)
    return [tuple(s) for s in shape] if isinstance(shape, list) else [tuple(shape)]


def saved_flavor(path):
    """The Keras that wrote a model file, read from the file itself: a `.keras` archive's metadata.json or an
    HDF5 file's `keras_version` attribute ("3.x" is Keras 3; "2.x" tf_keras); SavedModels are tf_keras's.

    Args:
      path: a `.keras` archive, an HDF5 file or a SavedModel folder (str or path-like).

    Returns:
      `keras3` or tf_keras `keras`; tf_keras when the file does not say (or `path` is a folder).

    Raises:
      OSError: `path` is a file that is neither a zip archive nor HDF5.
    """
    path = os.fspath(path)
    version = "2"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "metadata.json" in archive.namelist():
                version = json.loads(archive.read("metadata.json")).get("keras_version", "2")
    elif os.path.isfile(path):
        import h5py  # noqa: PLC0415  (both Keras flavors depend on it)
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version", "2")
            version = version.decode() if isinstance(version, bytes) else str(version)
    return keras3 if version.startswith("3") else keras


def load_model(path, compile=True):
    """A model file loaded by the Keras that wrote it (`saved_flavor`), since neither flavor reads the other's files.

    Args:
      path: a `.keras` archive, an HDF5 file or a SavedModel folder.
      compile: whether to restore the saved training configuration, as Keras' `load_model`.

    Returns:
      the model, in the flavor that saved it.

    Raises:
      OSError: `path` does not exist or is not a model file (from `saved_flavor` or Keras' `load_model`).
    """
    flavor = saved_flavor(path)
    return (flavor.saving if flavor is keras3 else flavor.models).load_model(os.fspath(path), compile=compile)


def output_shape(layer):
    """The shape of a layer's first output in its first call; a shared layer has one per call, and tfprune
    prunes by the first.

    Args:
      layer: a layer of either flavor that has been called in a model.

    Returns:
      the shape as a tuple, batch dimension (None) first.

    Raises:
      RuntimeError: a tf_keras layer that was never called (Keras 3: IndexError).
    """
    return _first_call_shapes(layer, "output")[0]


def input_shapes(layer):
    """The shapes of every tensor input of a layer's first call, in call order (attention: query, value, key).

    Args:
      layer: as for `output_shape`.

    Returns:
      a list of shape tuples.

    Raises:
      RuntimeError: as for `output_shape`.
    """
    return _first_call_shapes(layer, "input")


def input_shape(layer):
    """As `output_shape`, for the layer's first input (the query's, for attention).

    Args:
      layer: as for `output_shape`.

    Returns:
      the shape as a tuple.

    Raises:
      RuntimeError: as for `output_shape`.
    """
    return _first_call_shapes(layer, "input")[0]


# Files saved from models that TFMOT wraps name the wrapper 'PruneLowMagnitude'. Registering that name (all that
# `tfmot.sparsity.keras.prune_scope()` does) lets plain `keras.models.load_model` read them. The wrapper
# deserializes its own schedules; registering 'PolynomialDecay' globally would shadow the Keras learning-rate
# schedule of that name in .h5 files.
keras.utils.get_custom_objects().setdefault("PruneLowMagnitude", PruneLowMagnitude)

def unwrap_layer(layer):
    """The innermost layer behind transparent wrappers (tfmot's PruneLowMagnitude, tfprune_transparent ones),
    so a wrapped and a plain model name and describe their layers alike.

    Args:
      layer: a layer of either flavor.

    Returns:
      the wrapped layer, or `layer` itself when it is not such a wrapper.
    """
    while isinstance(layer, PruneLowMagnitude) or (
            isinstance(layer, (keras.layers.Wrapper, keras3.layers.Wrapper))
            and getattr(type(layer), "tfprune_transparent", False)):
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
            if is_model(inner):
                visit(inner)

    visit(model)
    return sorted(shared)


def check_model(model, argument="model"):
    """Raise a clear error unless ``model`` is a Model (tf_keras or Keras 3) whose layers have unique names;
    return it unchanged.

    Masks, strip, shrink and `exclude` find layers by name, so two layers sharing one (possible across nested
    models) would be silently merged. Example: ``model = tfprune.check_model(model)``.

    Args:
      model: the object to check.
      argument: the argument's name, for the message.

    Returns:
      `model`, unchanged.

    Raises:
      ValueError: two different layers share a name (nested models and pruning wrappers included).
      TypeError: `model` is not a Model.
    """
    if not is_model(model):
        raise TypeError(f"argument `{argument}` must be a Keras Model (Sequential or functional, Keras 3 or "
                        f"tf_keras), got {type(model).__name__}.")
    shared = _shared_layer_names(model)
    if shared:
        raise ValueError(
            f"argument `{argument}`: model '{model.name}' has different layers sharing the name(s) {shared} "
            "(nested models and pruning wrappers included). tfprune finds layers by name, so it cannot tell "
            "them apart. Give every layer a unique name, e.g. `keras.layers.Dense(8, name='branch_a_dense')`, "
            "and build the model again.")
    return model


def check_layer(layer, argument="layer"):
    """Raise a clear error unless ``layer`` is a Layer (tf_keras or Keras 3); return it unchanged.

    Args:
      layer: the object to check.
      argument: the argument's name, for the message.

    Returns:
      `layer`, unchanged.

    Raises:
      TypeError: `layer` is not a Layer.
    """
    if is_layer(layer):
        return layer
    raise TypeError(f"argument `{argument}` must be a Keras Layer (Keras 3 or tf_keras), got {type(layer).__name__}.")
