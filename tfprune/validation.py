"""Argument and weight checks shared by the entry points, so every one rejects bad input with the same words.

Each check names the caller (`owner`), the argument and what would be accepted, and returns the clean value.
A NaN or inf weight compares false with everything, so a ranking that meets one keeps or drops it arbitrarily
and passes it on (a masked NaN stays NaN); `check_finite` refuses such weights instead.
"""
import math
import numbers

from tfprune._keras import is_model, tf

__all__ = ["check_finite", "check_int", "check_number", "check_choice", "check_exclude"]


def check_int(value, name, owner, least=0):
    """`value` as an int >= `least`. Booleans are refused: True is an int to Python but never a count to a user."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{owner}: `{name}` must be an integer >= {least}, got {value!r}.")
    return int(value)


def check_number(value, name, owner, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """`value` as a float in the interval from `low` to `high` (finite, not a bool).

    A fraction argument (``high=1``) given as a percentage gets the hint ``k=50% is 0.5``.
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not (ok and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)):
        left, right = "(" if low_open or low == -math.inf else "[", ")" if high_open or high == math.inf else "]"
        interval = f"{left}{low}, {high}{right}"
        hint = f" (k={value}% is {value / 100:g})" if ok and high == 1 and 1 < value <= 100 else ""
        raise ValueError(f"{owner}: `{name}` must be a number in {interval}, got {value!r}{hint}.")
    return float(value)


def check_examples(x, name, owner):
    """`x` as a non-empty array of input examples; a `tf.data.Dataset` gets the hint of how to take some."""
    if not hasattr(x, "__len__") or not hasattr(x, "__getitem__"):
        raise TypeError(f"{owner}: `{name}` must be an array of input examples, got {type(x).__name__}; for a "
                        "dataset pass e.g. next(iter(dataset.unbatch().batch(512)))[0].numpy().")
    if not len(x):
        raise ValueError(f"{owner}: `{name}` holds no examples; pass a few hundred training inputs.")
    return x


def check_choice(value, name, owner, choices):
    """`value` if it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{owner}: `{name}` must be one of {list(choices)}, got {value!r}.")
    return value


def check_exclude(exclude, prunable, owner):
    """`exclude` (layer names, or one name) as a set of names from `prunable`, leaving at least one to prune."""
    exclude = {exclude} if isinstance(exclude, str) else set(exclude)
    unknown = sorted(exclude - set(prunable))
    if unknown:
        raise ValueError(f"{owner}: `exclude` names {unknown}, which are not prunable layers of the model. "
                         f"Prunable: {sorted(set(prunable))}.")
    if not set(prunable) - exclude:
        raise ValueError(f"{owner}: `exclude`={sorted(exclude)} leaves no prunable layer; exclude fewer layers.")
    return exclude


def _layers(model_or_layer):
    if is_model(model_or_layer):
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
            if tf.as_dtype(weight.dtype).is_floating and not bool(tf.reduce_all(tf.math.is_finite(weight))):
                raise ValueError(
                    f"{what}: layer '{layer.name}' weight '{weight.name}' holds NaN or inf; tfprune cannot rank "
                    "such weights by magnitude. The training that produced them diverged: check the data, the "
                    "loss and the learning rate (try a lower one), then train again.")
