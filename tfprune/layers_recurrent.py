"""Recurrent layers (LSTM, GRU, SimpleRNN) in the layer registry: unit pruning cuts whole units.

A unit is one entry of the hidden state. Its gates are columns of the cell's kernel, recurrent kernel and bias:
Keras lays the gates out in blocks (LSTM i, f, c, o; GRU z, r, h), so unit c owns position ``g*units + c`` of
every block g, and all of them go together. Its state also feeds back into every gate through row c of the
recurrent kernel, so that row belongs to the same group (an 'in' slice: a unit whose outgoing rows downstream
and whose recurrent row are zero is read by nothing). The input's channels are read by the kernel's rows.

A unit whose kernel, recurrent kernel and bias columns are all zero stays exactly zero: every gate sees 0, the
candidate ``activation(0)`` is 0 for tanh, so the cell state and output stay at their zero start.

A layer that returns its states (``return_state=True``) keeps its units whole (`shrink` narrows layers with one
output); one fed an initial state (a second input), or whose gate activation is not element-wise, raises.

`recurrent(gates)` is public so that a custom recurrent layer with the same weight layout (a subclass of LSTM,
say) can be registered: ``tfprune.register_layer(MyLSTM, tfprune.layers_recurrent.recurrent(gates=4))``.
"""
import dataclasses
import math

import numpy as np

from tfprune._keras import FLAVORS, flavor_of
from tfprune.registry import (_ELEMENTWISE_ACTIVATIONS, LayerSpec, check_activation, maps_zero_to_zero,
                              register_layer, single_input, unsupported)

__all__ = ["recurrent"]

_GATE_WEIGHTS = ("cell.kernel", "cell.recurrent_kernel", "cell.bias")


def _gate_blocks(graph, layer, units, gates):
    """The units as laid out on the gate axis: unit c at ``g*units + c``, the order a channels-last Flatten
    gives a (gates, units) tensor."""
    stacked = dataclasses.replace(units, shape=(None, gates, units.width))
    return graph.flattened(stacked, (None, gates * units.width), layer)


def _check_gate_activation(layer):
    activation = getattr(layer, "recurrent_activation", None)
    if activation is None:
        return
    name = flavor_of(layer).activations.serialize(activation)
    if not isinstance(name, str) or name not in _ELEMENTWISE_ACTIVATIONS:
        raise unsupported(layer, f"its recurrent_activation {name!r} is not known to act on each unit separately")


def recurrent(gates):
    """The spec of a recurrent layer whose cell holds ``kernel`` (inputs, gates*units), ``recurrent_kernel``
    (units, gates*units) and an optional ``bias`` (..., gates*units), and whose config key ``units`` sets the
    width of its outputs (the sequence or last output, and any returned states)."""
    def map_channels(graph, layer, inputs, output_shapes):
        x = single_input(layer, inputs)
        if x.width is None:
            raise unsupported(layer, "its input has an unknown number of features")
        _check_gate_activation(layer)
        graph.slice(layer, "cell.kernel", 0, "in", x)
        units = graph.new_channels(output_shapes[0], layer)
        blocks = _gate_blocks(graph, layer, units, gates)
        for weight in _GATE_WEIGHTS if layer.cell.use_bias else _GATE_WEIGHTS[:2]:
            graph.slice(layer, weight, -1, "out", blocks)
        graph.slice(layer, "cell.recurrent_kernel", 0, "in", units)
        check_activation(graph, layer, units)
        if layer.return_state:
            # `shrink` reads one output shape per layer; the states are further outputs of the same units.
            graph.freeze([units], f"'{layer.name}' ({type(layer).__name__}) returns its states as extra outputs")
        return [units] + [graph.same(units, shape, layer) for shape in output_shapes[1:]]

    def silent(layer, zero):
        result = maps_zero_to_zero(layer)
        for weight in _GATE_WEIGHTS:
            result = result & zero.get(weight, True)
        return result

    def macs(layer, input_shape, output_shape):
        """Per time step, every gate of every unit is a dot product over the input and the previous state."""
        features = input_shape[-1]
        return math.prod(input_shape[1:-1]) * gates * layer.units * (features + layer.units)

    def output_units(layer, value):
        columns = [value(weight).reshape(-1, layer.units) for weight in _GATE_WEIGHTS[:2]]
        return np.concatenate(columns)

    return LayerSpec(map_channels, width_key="units", silent=silent, macs=macs,
                     prunable_kernels=_GATE_WEIGHTS[:2], output_units=output_units)


for _flavor in FLAVORS:
    register_layer(_flavor.layers.LSTM, recurrent(gates=4))
    register_layer(_flavor.layers.GRU, recurrent(gates=3))
    register_layer(_flavor.layers.SimpleRNN, recurrent(gates=1))
