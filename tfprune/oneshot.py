"""The seeds' one-shot k%-sweep: prune a trained model once, per layer, with no retraining.

`method="weight"` zeroes the k% smallest-magnitude kernel entries of each layer; `method="unit"` zeroes
the k% of units/filters whose kernel columns have the smallest L2 norms. The model's output layers are
left unpruned, as in the seeds (also behind a Softmax or other kernel-free layers). Coupled tensors (BatchNorm, next layer) are left as they are: this is the
seeds' exercise; `prune_units` + `shrink` is the structured method that handles coupling.
"""
import numpy as np

from tfprune._keras import check_model
from tfprune.graph import output_width_layers
from tfprune.mask import iter_layers, strip
from tfprune.validation import check_finite
from tfprune.weight import prunable_kernels, smallest_to_mask


def oneshot(model, method="weight", sparsity=0.5, exclude=()):
    """A new model with `sparsity` (0..1) of each hidden layer's weights or units zeroed."""
    check_model(model)
    if method not in ("weight", "unit"):
        raise ValueError(f"method must be 'weight' or 'unit', got {method!r}.")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (a fraction, e.g. 0.9 for k=90%; 1 would remove everything), "
                         f"got {sparsity!r}.")
    check_finite(model, "oneshot")
    pruned = strip(model)
    skip = output_width_layers(pruned) | set(exclude)
    for layer in iter_layers(pruned):
        if layer.name in skip:
            continue
        for name in prunable_kernels(layer):
            variable = getattr(layer, name)
            kernel = variable.numpy()
            if method == "weight":
                mask = smallest_to_mask(np.abs(kernel), int(round(sparsity * kernel.size)))
            else:
                norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
                keep = smallest_to_mask(norms, int(round(sparsity * norms.size)))
                mask = np.broadcast_to(keep, kernel.shape)
                if getattr(layer, "bias", None) is not None:
                    layer.bias.assign(layer.bias.numpy() * keep)
            variable.assign(kernel * mask)
    return pruned
