"""keras_hub's transformer layers in the layer registry: their feed-forward units are one channel group each.

A `TransformerEncoder`/`TransformerDecoder` is one layer holding attention, two LayerNorms and a feed-forward
block ``Dense(intermediate_dim, activation) → Dense(hidden_dim)``. Unit j of the feed-forward block owns column
j (and bias j) of the intermediate Dense and row j of the output Dense, nothing else reads it, and the
activations keras_hub uses map 0 to 0, so masking them removes the unit exactly; `shrink` sets
`intermediate_dim` to the units kept. The hidden channels run through residual Adds and LayerNorms inside the
layer and stay whole. `PositionEmbedding` makes the hidden channels from positions, not from its input's
channels. Imported by `tfprune.registry.spec_for` the first time it meets a keras_hub layer.
"""
import keras_hub

from tfprune.registry import LayerSpec, maps_zero_to_zero, register_layer

__all__ = ["transformer_spec"]

_INTERMEDIATE, _OUTPUT = "_feedforward_intermediate_dense", "_feedforward_output_dense"


def _map_transformer(graph, layer, inputs, output_shapes):
    reason = f"residual stream inside '{layer.name}' ({type(layer).__name__})"
    graph.freeze(inputs, reason)
    units = graph.new_channels((layer.intermediate_dim,), layer)
    graph.slice(layer, f"{_INTERMEDIATE}.kernel", 1, "out", units)
    graph.slice(layer, f"{_INTERMEDIATE}.bias", 0, "out", units)
    graph.slice(layer, f"{_OUTPUT}.kernel", 0, "in", units)
    return [graph.new_channels(shape, layer, reason=reason) for shape in output_shapes]


def _narrow_transformer(layer, config, cuts):
    kept = cuts.get(f"{_INTERMEDIATE}.kernel", {}).get(1)
    if kept is not None:
        config["intermediate_dim"] = int(kept.sum())
    return config


def _silent(layer, zero):
    """A unit is zero when its intermediate column and bias are and the activation keeps 0 at 0."""
    return (maps_zero_to_zero(layer) & zero.get(f"{_INTERMEDIATE}.kernel", True)
            & zero.get(f"{_INTERMEDIATE}.bias", True))


def transformer_spec():
    """The spec of keras_hub's `TransformerEncoder` and `TransformerDecoder` (feed-forward units)."""
    return LayerSpec(_map_transformer, narrow=_narrow_transformer, silent=_silent,
                     prunable_kernels=(f"{_INTERMEDIATE}.kernel", f"{_OUTPUT}.kernel"))


def _map_positions(graph, layer, inputs, output_shapes):
    return [graph.new_channels(output_shapes[0], layer, reason=f"position embeddings of '{layer.name}'")]


for _cls in (keras_hub.layers.TransformerEncoder, keras_hub.layers.TransformerDecoder):
    register_layer(_cls, transformer_spec())
register_layer(keras_hub.layers.PositionEmbedding, LayerSpec(_map_positions))
