"""The seeds' one-shot k%-sweep: prune a trained model once, with no retraining.

`method="weight"` masks the k% smallest-magnitude kernel entries of each layer; `method="unit"` masks the k%
of each channel group's channels with the smallest L2 norm, through the channel graph, so coupled layers
(BatchNorm, residual partners, the next layer's inputs) are masked together and `shrink` can remove them.
Layers that set the model's output width stay whole, as in the seeds. Both end in the one mask model.
"""
import numpy as np

from tfprune._keras import check_model
from tfprune.graph import output_width_layers
from tfprune.registry import resolve_weight
from tfprune.mask import freeze, inner_layer, iter_layers, masked_layers, strip, with_masks
from tfprune.schedules import ConstantSparsity
from tfprune.unit import UnitPruner, prune_units
from tfprune.validation import check_exclude, check_finite
from tfprune.weight import prunable_kernels, smallest_to_mask


def oneshot(model, method="weight", sparsity=0.5, exclude=()):
    """A new model with `sparsity` of each hidden layer's weights or units masked, in one step.

    The masks are fixed: fine-tune the result with a plain `fit`, `strip` it for plain weights with zeros, or
    `shrink` it (unit method). Example: ``tfprune.shrink(tfprune.oneshot(model, "unit", 0.5))``.

    Args:
      model: a trained tf_keras model (not changed).
      method: ``"weight"`` (smallest-magnitude kernel entries of each layer) or ``"unit"`` (weakest channels by
        L2 norm, with every coupled tensor).
      sparsity: the fraction in [0, 1) of each hidden layer's weights or units to mask.
      exclude: names of layers to leave whole (the layers producing the outputs always are).

    Returns:
      a new, uncompiled model of masked layers (`tfprune.MaskedLayer`).

    Raises:
      ValueError: an unknown `method`, `sparsity` outside [0, 1), an unknown name in `exclude`, or weights holding
        NaN or inf.
      TypeError: `model` is not a tf_keras model.
    """
    check_model(model)
    if method not in ("weight", "unit"):
        raise ValueError(f"method must be 'weight' or 'unit', got {method!r}.")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (a fraction, e.g. 0.9 for k=90%; 1 would remove everything), "
                         f"got {sparsity!r}.")
    check_finite(model, "oneshot")
    if method == "unit":
        pruned = prune_units(model, ConstantSparsity(sparsity, 0), criterion="l2", exclude=exclude)
        pruner, = UnitPruner.from_model(pruned, masked_layers(pruned))
        pruner.update(sparsity, 0)
        return freeze(pruned)
    prunable = [inner_layer(layer).name for layer in iter_layers(model) if prunable_kernels(inner_layer(layer))]
    skip = output_width_layers(model) | check_exclude(exclude, prunable, "oneshot")
    layer_masks = {}
    for layer in iter_layers(strip(model)):  # the weights as the model computes with them
        kernels = {name: resolve_weight(layer, name).numpy() for name in prunable_kernels(layer)}
        if kernels and layer.name not in skip:
            layer_masks[layer.name] = {name: smallest_to_mask(np.abs(kernel), int(round(sparsity * kernel.size)))
                                       for name, kernel in kernels.items()}
    return freeze(with_masks(model, layer_masks))
