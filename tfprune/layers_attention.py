"""MultiHeadAttention in the layer registry: whole heads are one channel group.

Head h owns position h on the heads axis of the query, key and value projections (kernels ``(width, heads,
dim)``, biases ``(heads, dim)``) and row h of the output projection (kernel ``(heads, dim, output)``). No other
head reads them, so masking all of them removes the head exactly: its value is zero, attention averages zeros,
and the output projection adds nothing for it. The query/key/value inputs are read through the projections'
first axis; the output projection makes the output channels, a new group (in an encoder block the residual
Add couples it to the stream). `shrink` sets `num_heads` to the heads kept and the stored input and output
widths to the channels kept.
"""
import collections.abc
import inspect
import math

from tfprune._keras import FLAVORS, input_shapes, tf
from tfprune.registry import LayerSpec, register_layer, unsupported

__all__ = ["attention_spec"]

#: (call argument, projection sublayer) of the three input projections.
_PROJECTIONS = (("query", "_query_dense"), ("key", "_key_dense"), ("value", "_value_dense"))


def _inputs_by_argument(graph, layer, inputs):
    """{argument name: channels} of the Keras tensors this call passed, matched through the call's arguments
    (the graph lists a node's tensors in the order Keras flattens ``(args, kwargs.values())``)."""
    args, kwargs = graph.call_arguments()
    flat = [t for t in tf.nest.flatten((args, kwargs.values())) if hasattr(t, "_keras_history")]
    if len(flat) != len(inputs):
        raise unsupported(layer, f"its call passes {len(flat)} Keras tensors, the graph saw {len(inputs)}")
    bound = inspect.signature(layer.call).bind(*args, **kwargs).arguments
    return {name: inputs[next(i for i, t in enumerate(flat) if t is tensor)]
            for name, tensor in bound.items() if any(t is tensor for t in flat)}


def _map_attention(graph, layer, inputs, output_shapes):
    given = _inputs_by_argument(graph, layer, inputs)
    if "query" not in given or "value" not in given:
        raise unsupported(layer, "its query or value is not a Keras tensor of the model")
    given.setdefault("key", given["value"])  # key=None attends over the value
    if "attention_mask" in given:  # its last axis counts positions, not channels
        graph.freeze([given["attention_mask"]], f"attention mask of '{layer.name}' (MultiHeadAttention)")
    heads = graph.new_channels((layer._num_heads,), layer)
    for argument, projection in _PROJECTIONS:
        x = given[argument]
        if x.width is None:
            raise unsupported(layer, f"its {argument} has an unknown number of channels")
        graph.slice(layer, f"{projection}.kernel", 0, "in", x)
        graph.slice(layer, f"{projection}.kernel", 1, "out", heads)
        if layer._use_bias:
            graph.slice(layer, f"{projection}.bias", 0, "out", heads)
    graph.slice(layer, "_output_dense.kernel", 0, "in", heads)
    output = graph.new_channels(output_shapes[0], layer)
    graph.slice(layer, "_output_dense.kernel", -1, "out", output)
    if layer._use_bias:
        graph.slice(layer, "_output_dense.bias", -1, "out", output)
    # return_attention_scores=True: the scores' last axis counts key positions.
    scores = [graph.new_channels(shape, layer, reason=f"attention scores of '{layer.name}' (MultiHeadAttention)")
              for shape in output_shapes[1:]]
    return [output] + scores


def _narrow_attention(layer, config, cuts):
    """Heads kept, and every stored width: the output width is set explicitly, since left at None it would
    follow a narrowed query."""
    heads = cuts.get("_value_dense.kernel", {}).get(1)
    if heads is not None:
        config["num_heads"] = int(heads.sum())
    for argument, projection in _PROJECTIONS:
        kept = cuts.get(f"{projection}.kernel", {}).get(0)
        if kept is not None:
            config[f"{argument}_shape"] = tf.TensorShape(config[f"{argument}_shape"]).as_list()[:-1] + [int(kept.sum())]
    width = (int(next(iter(cuts["output"].values())).sum()) if "output" in cuts
             else layer._output_dense.kernel.shape[-1])
    shape = config["output_shape"]
    config["output_shape"] = list(shape)[:-1] + [width] if isinstance(shape, collections.abc.Sized) else width
    return config


def _silent(layer, zero):
    """A head with a zero value projection outputs zeros (attention averages them); an output channel is zero
    when its output-projection column and bias are."""
    result = True
    for weight in ("_value_dense.kernel", "_value_dense.bias", "_output_dense.kernel", "_output_dense.bias"):
        result = result & zero.get(weight, True)
    return result


def _attention_macs(layer, input_shape, output_shape):
    """Projections, scores (query x key) and the weighted sum of values, from the shapes of the first call's
    inputs (query, value, key; the key defaults to the value) and the projections' kernels."""
    shapes = input_shapes(layer)
    query, value = shapes[0], shapes[1] if len(shapes) > 1 else shapes[0]
    key = shapes[2] if len(shapes) > 2 else value
    heads, key_dim, value_dim = layer._num_heads, layer._key_dim, layer._value_dim
    queries, keys, values = (math.prod(shape[1:-1]) for shape in (query, key, value))
    return (queries * query[-1] * heads * key_dim + keys * key[-1] * heads * key_dim
            + values * value[-1] * heads * value_dim + heads * queries * keys * (key_dim + value_dim)
            + queries * heads * value_dim * layer._output_dense.kernel.shape[-1])


def _output_units(layer, value):
    kernel = value("_output_dense.kernel")
    return kernel.reshape(-1, kernel.shape[-1])


def attention_spec():
    """The spec of `keras.layers.MultiHeadAttention`."""
    return LayerSpec(_map_attention, narrow=_narrow_attention, silent=_silent, macs=_attention_macs,
                     prunable_kernels=tuple(f"{p}.kernel" for p in ("_query_dense", "_key_dense", "_value_dense",
                                                                    "_output_dense")),
                     output_units=_output_units)


for _flavor in FLAVORS:
    register_layer(_flavor.layers.MultiHeadAttention, attention_spec())
