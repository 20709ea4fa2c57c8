"""Group lasso (SSL, Wen et al. 2016): penalize whole filters, channels or units so they die together.

A dead group is structure `shrink` can remove, unlike scattered zeros. Three tools, softest to exact:

* `GroupLasso` / `apply_group_lasso`: a kernel regularizer. The optimizer follows its subgradient, so
  groups shrink towards zero but hover near it instead of landing on it.
* `ProximalGroupLasso`: a callback taking the proximal (block soft-threshold) step after every optimizer
  step, which sets whole groups exactly to zero. Use it *instead of* the regularizer, not with it.
* `threshold_groups`: zero the groups that ended near zero; `group_sparsity_report` counts them.

Groups, in Keras kernel layouts Conv ``(*spatial, in, out)`` and Dense ``(in, out)``:

* ``"filter"``: one group per output filter (reduce every axis but the last).
* ``"channel"``: one group per input channel (reduce every axis but the second to last).
* ``"shape"``: one group per ``(*spatial, in)`` position across all filters (reduce the last axis).
* ``"unit"``: Dense only, one group per output unit (reduce axis 0).
* ``"row"``: Dense only, one group per input feature (reduce axis 1).

Axes are negative, so Conv1D/2D/3D all work, and on a Dense kernel ``"filter"`` means ``"unit"`` while
``"channel"`` and ``"shape"`` mean ``"row"``: one call can then cover a convnet's Conv and Dense layers.
``"unit"``/``"row"`` on a Conv kernel are rejected because they would not name a channel of anything.

Weighting: each group's norm is multiplied by c_g. ``"sqrt"`` (default, Yuan & Lin 2006) uses
c_g = sqrt(|g|); random groups have norms ~ sqrt(|g|), so one strength then treats a 5x5x50 filter and a
short Dense row alike. ``None`` uses c_g = 1, SSL's unweighted sum, for strengths taken from that paper.
"""
import math

import numpy as np

from tfprune._keras import (FLAVORS, check_model, flavor_of, is_graph_model, is_variable, kernel_kind, keras, keras3,
                            learning_rate_schedule, tf)
from tfprune.graph import output_width_layers
from tfprune.mask import freeze, with_masks
from tfprune.validation import check_finite, check_number

__all__ = ["GroupLasso", "ProximalGroupLasso", "apply_group_lasso", "group_sparsity_report",
           "format_group_sparsity", "threshold_groups"]

GROUPS = ("filter", "channel", "shape", "unit", "row")
WEIGHTINGS = ("sqrt", None)
_DENSE_ONLY = ("unit", "row")
_WRAPPER_TYPES = tuple(flavor.layers.Wrapper for flavor in FLAVORS)


# -- arguments -----------------------------------------------------------------------------------------
def _check_groups(groups, owner):
    if groups not in GROUPS:
        raise ValueError(f"{owner}: `groups` must be one of {GROUPS}, got {groups!r}.")
    return groups


def _check_weighting(weighting, owner):
    if weighting not in WEIGHTINGS:
        raise ValueError(f"{owner}: `weighting` must be 'sqrt' (c_g = sqrt(group size)) or None (c_g = 1), "
                         f"got {weighting!r}.")
    return weighting


def _check_layers(layers, owner):
    if layers is None:
        return None
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"{owner}: `layers` must be None or a list of layer names, got {layers!r}; "
                        f"write layers=[{layers!r}] for a single layer.")
    return list(layers)


def _check_tolerance(tolerance, owner):
    """`tolerance` is a fraction of the layer's largest group norm."""
    return check_number(tolerance, "tolerance", owner, 0, 1, high_open=True)


# -- groups --------------------------------------------------------------------------------------------
def _group_axes(groups, shape):
    """The (negative) kernel axes one group spans; the remaining axes index the groups."""
    rank = len(shape)
    if rank < 2:
        raise ValueError(f"group lasso needs a Dense or Conv kernel (rank >= 2), got shape {tuple(shape)}.")
    if groups in _DENSE_ONLY and rank != 2:
        raise ValueError(f"groups={groups!r} is for 2-D Dense kernels (in, out), got shape {tuple(shape)}; "
                         f"use groups='filter', 'channel' or 'shape' for Conv kernels.")
    if groups in ("filter", "unit"):
        return tuple(range(-rank, -1))
    if groups == "channel":
        return tuple(axis for axis in range(-rank, 0) if axis != -2)
    return (-1,)  # "shape" and "row"


def _group_weight(weighting, shape, axes):
    """c_g: sqrt(|g|) for 'sqrt', 1 for None (every group of a kernel has the same size)."""
    return math.sqrt(math.prod(shape[axis] for axis in axes)) if weighting == "sqrt" else 1.0


def _group_norms(kernel, axes):
    """‖w_g‖₂ per group (kept dims), with gradient w/‖w_g‖ and 0 at a zero group instead of NaN."""
    @tf.custom_gradient
    def norms(w):
        value = tf.sqrt(tf.reduce_sum(tf.square(w), axis=axes, keepdims=True))

        def grad(upstream):
            return w * tf.math.divide_no_nan(upstream, value)
        return value, grad
    return norms(kernel)


# -- the regularizer -----------------------------------------------------------------------------------
@keras.utils.register_keras_serializable(package="tfprune")
class GroupLasso(keras.regularizers.Regularizer):
    """``strength * Σ_g c_g ‖w_g‖₂`` as a `kernel_regularizer` for Dense and Conv1D/2D/3D kernels.

    Exact at zero: a group that is exactly zero adds 0 and gets gradient 0 (the smallest subgradient).

    Args:
      strength: the penalty's weight, >= 0.
      groups: ``"filter"``, ``"channel"``, ``"shape"``, ``"unit"`` or ``"row"`` (see the module docstring).
      weighting: ``"sqrt"`` (c_g = sqrt(|g|)) or None (c_g = 1).

    Raises:
      ValueError: an argument outside those values.
    """

    def __init__(self, strength, groups="filter", weighting="sqrt"):
        self.strength = check_number(strength, "strength", "GroupLasso", 0)
        self.groups = _check_groups(groups, "GroupLasso")
        self.weighting = _check_weighting(weighting, "GroupLasso")

    def __call__(self, kernel):
        axes = _group_axes(self.groups, kernel.shape)
        scale = self.strength * _group_weight(self.weighting, kernel.shape, axes)
        return tf.cast(scale, kernel.dtype) * tf.reduce_sum(_group_norms(kernel, axes))

    def get_config(self):
        return {"strength": self.strength, "groups": self.groups, "weighting": self.weighting}


# tf_keras writes a layer's regularizer into .h5 files under its bare class name but loads .h5 files by looking
# that bare name up, not "tfprune>GroupLasso"; the alias lets .h5 models load without `custom_objects`.
keras.utils.get_custom_objects().setdefault("GroupLasso", GroupLasso)
# Keras 3 layers take any callable regularizer; registering the class lets their .keras files name it.
keras3.saving.register_keras_serializable(package="tfprune")(GroupLasso)


# -- choosing layers -----------------------------------------------------------------------------------
def _kernel_layer(layer):
    """The layer owning the kernel: `layer`, or the innermost layer of a chain of Keras wrappers."""
    while isinstance(layer, _WRAPPER_TYPES):
        layer = layer.layer
    return layer


def _select(model, groups, layers, owner):
    """``[(layer, kernel layer)]`` the groups apply to; every check runs before anything is changed.

    ``layers=None`` picks every Conv layer for filter/channel/shape groups and every Dense layer for
    unit/row groups, leaving out layers that produce the model's outputs. Named layers are all used.
    """
    check_model(model)
    by_name = {layer.name: layer for layer in model.layers}
    kinds = {name: kernel_kind(_kernel_layer(layer)) for name, layer in by_name.items()}
    usable = [name for name, kind in kinds.items() if kind]
    if layers is None:
        wanted = "dense" if groups in _DENSE_ONLY else "conv"
        outputs = output_width_layers(model)
        chosen = [name for name in usable if kinds[name] == wanted and name not in outputs]
        if not chosen:
            raise ValueError(
                f"{owner}: model '{model.name}' has no {'Dense' if wanted == 'dense' else 'Conv'} layer (apart "
                f"from output layers) for groups={groups!r}; name the layers with `layers=[...]` (choose from "
                f"{usable}) or pick groups={'filter' if wanted == 'dense' else 'unit'!r}.")
    else:
        unknown = [name for name in layers if name not in by_name]
        if unknown:
            raise ValueError(f"{owner}: `layers` names {unknown}, which model '{model.name}' does not have; "
                             f"layers with a Dense or Conv kernel: {usable}.")
        unusable = [f"{name} ({type(_kernel_layer(by_name[name])).__name__})" for name in layers if not kinds[name]]
        if unusable:
            raise ValueError(f"{owner}: `layers` includes {unusable}, which have no Dense or Conv1D/2D/3D kernel; "
                             f"choose from {usable}.")
        conv = [name for name in layers if kinds[name] == "conv"]
        if groups in _DENSE_ONLY and conv:
            raise ValueError(f"{owner}: groups={groups!r} is for Dense kernels, but `layers` includes Conv layers "
                             f"{conv}; use groups='filter', 'channel' or 'shape' (they also work on Dense).")
        chosen = list(dict.fromkeys(layers))
    return [(by_name[name], _kernel_layer(by_name[name])) for name in chosen]


def _kernel(layer, owner):
    kernel = getattr(layer, "kernel", None)
    if not is_variable(kernel):
        raise ValueError(f"{owner}: layer '{layer.name}' is not built yet; call the model on data first.")
    return kernel


def _clone(model, clone_function=None, owner="clone"):
    """A new model with the same architecture and weights; the compile state is not copied."""
    if not is_graph_model(model):
        raise ValueError(f"{owner}: model '{model.name}' is a subclassed Model, which Keras cannot clone; "
                         f"build it with the functional API or Sequential.")
    clone = flavor_of(model).models.clone_model(model, clone_function=clone_function)
    clone.set_weights(model.get_weights())
    return clone


def _with_kernel_regularizer(layer, config, regularizer):
    """`config` of `layer` with the regularizer set on the kernel owner, inside any wrappers."""
    if isinstance(layer, _WRAPPER_TYPES):
        inner = dict(config["layer"])
        inner["config"] = _with_kernel_regularizer(layer.layer, dict(inner["config"]), regularizer)
        return {**config, "layer": inner}
    return {**config, "kernel_regularizer": flavor_of(layer).regularizers.serialize(regularizer)}


# -- applying the regularizer --------------------------------------------------------------------------
def apply_group_lasso(model, strength, groups="filter", layers=None, weighting="sqrt"):
    """A new model whose chosen Dense/Conv kernels carry `GroupLasso`; `model` itself is untouched.

    A `GroupLasso` already there is replaced; wrapped layers get the regularizer on the inner layer.

    Args:
      model: a built model (Sequential or functional, Keras 3 or tf_keras).
      strength: the penalty's weight, >= 0.
      groups: ``"filter"``, ``"channel"``, ``"shape"``, ``"unit"`` or ``"row"`` (see the module docstring).
      layers: names of the layers to regularize; None takes every Conv layer (filter/channel/shape groups) or
        every Dense layer (unit/row), except the layers producing the model's outputs, whose units are the
        outputs.
      weighting: ``"sqrt"`` or None (see `GroupLasso`).

    Returns:
      a new model; not compiled, so call `compile` on it before training.

    Raises:
      ValueError: a bad argument, a name in `layers` the model lacks or whose kernel cannot be grouped, a chosen
        layer with another kernel regularizer (it would be dropped silently), or a subclassed model.
      TypeError: `layers` is not a list of names, or `model` is not a Keras model.
    """
    owner = "apply_group_lasso"
    regularizer = GroupLasso(strength, groups, weighting)
    targets = _select(model, groups, _check_layers(layers, owner), owner)
    clashing = [f"{layer.name} ({type(inner.kernel_regularizer).__name__})" for layer, inner in targets
                if inner.kernel_regularizer is not None and not isinstance(inner.kernel_regularizer, GroupLasso)]
    if clashing:
        raise ValueError(f"{owner}: layers {clashing} already have a kernel_regularizer that group lasso would "
                         f"replace; remove it first or leave those layers out of `layers`.")
    names = {layer.name for layer, _ in targets}

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in names:
            config = _with_kernel_regularizer(layer, config, regularizer)
        return layer.__class__.from_config(config)

    return _clone(model, clone_layer, owner)


# -- the proximal callback -----------------------------------------------------------------------------
@keras.utils.register_keras_serializable(package="tfprune")
class ProximalGroupLasso(keras.callbacks.Callback):
    """After every optimizer step: w_g ← max(0, 1 − η·strength·c_g/‖w_g‖)·w_g on each chosen kernel.

    This is the proximal operator of ``η·GroupLasso``, so with SGD, training is proximal gradient descent
    on loss + group lasso, and groups whose norm falls below η·strength·c_g become exactly zero. With
    adaptive optimizers (Adam) η is their base learning rate: the usual heuristic, not an exact proximal
    step. η is the rate of the step just taken (a schedule is evaluated at ``iterations − 1``). Layers are
    chosen as in `apply_group_lasso`; wrapped layers are thresholded on the inner kernel. With
    ``steps_per_execution=k`` Keras calls the callback, hence thresholds, once per k steps.

    Args:
      strength: the group-lasso strength, >= 0.
      groups: ``"filter"``, ``"channel"``, ``"shape"``, ``"unit"`` or ``"row"`` (see the module docstring).
      layers: names of the layers to threshold (None: as in `apply_group_lasso`).
      weighting: ``"sqrt"`` or None (see `GroupLasso`).

    Raises:
      ValueError: a bad argument; at the start of training, a name in `layers` the model lacks.
      TypeError: `layers` is not a list of names.
    """

    def __init__(self, strength, groups="filter", layers=None, weighting="sqrt"):
        super().__init__()
        owner = "ProximalGroupLasso"
        self.strength = check_number(strength, "strength", owner, 0)
        self.groups = _check_groups(groups, owner)
        self.layers = _check_layers(layers, owner)
        self.weighting = _check_weighting(weighting, owner)
        self._targets = None
        self._step = None
        # Keras converts batch logs to numpy (a device sync per step) unless every callback accepts tensors.
        self._supports_tf_logs = True

    def on_train_begin(self, logs=None):
        # Choose layers now, so a bad name fails before any training.
        self._targets = [inner for _, inner in _select(self.model, self.groups, self.layers, "ProximalGroupLasso")]
        self._step = None
        if all(isinstance(getattr(layer, "kernel", None), tf.Variable) for layer in self._targets):
            # Trace before the first batch, or Keras warns that this callback is slow. Unbuilt (Sequential
            # without an input shape) models are traced after their first step instead.
            self._step = self._compile_step()
            self._step.get_concrete_function()

    def on_train_batch_end(self, batch, logs=None):
        if self._step is None:
            self._step = self._compile_step()
        self._step()

    def _compile_step(self):
        """One tf.function thresholding every chosen kernel, reading η on device at each call."""
        optimizer = self.model.optimizer
        schedule = learning_rate_schedule(optimizer)
        plan = []
        for layer in self._targets:
            kernel = _kernel(layer, "ProximalGroupLasso")
            axes = _group_axes(self.groups, kernel.shape)
            plan.append((kernel, axes, self.strength * _group_weight(self.weighting, kernel.shape, axes)))

        @tf.function
        def step():
            # The step just taken used the pre-increment count.
            rate = optimizer.learning_rate if schedule is None else schedule(optimizer.iterations - 1)
            for kernel, axes, scale in plan:
                norms = tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=axes, keepdims=True))
                threshold = tf.cast(rate, kernel.dtype) * scale
                kernel.assign(kernel * tf.math.divide_no_nan(tf.nn.relu(norms - threshold), norms))
        return step

    def get_config(self):
        return {"strength": self.strength, "groups": self.groups, "layers": self.layers,
                "weighting": self.weighting}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# -- reports and thresholding --------------------------------------------------------------------------
def _numpy_norms(layer, groups, owner):
    """A layer's kernel and its group norms (kept dims, so they broadcast against the kernel)."""
    kernel = _kernel(layer, owner).numpy()
    return kernel, np.sqrt(np.square(kernel).sum(axis=_group_axes(groups, kernel.shape), keepdims=True))


def _checked(model, groups, tolerance, layers, owner):
    """The arguments of the group reports checked: ``(tolerance, [(layer, inner layer)])``."""
    _check_groups(groups, owner)
    tolerance = _check_tolerance(tolerance, owner)
    chosen = _select(model, groups, _check_layers(layers, owner), owner)
    check_finite(model, owner)
    return tolerance, chosen


def group_sparsity_report(model, groups="filter", tolerance=1e-3, layers=None):
    """How many groups of each chosen layer are zero or nearly so.

    Args:
      model: a model of either flavor.
      groups: ``"filter"``, ``"channel"``, ``"shape"``, ``"unit"`` or ``"row"`` (see the module docstring).
      tolerance: a group is near zero when ‖w_g‖ ≤ tolerance · (largest ‖w_g‖ in its layer); relative, so one
        value fits layers of any scale. In [0, 1).
      layers: names of the layers to count (None: as in `apply_group_lasso`).

    Returns:
      one row per layer: ``layer``, ``groups`` (count), ``zero`` (exactly zero), ``near_zero`` (exact zeros
      included) and ``fraction`` (near_zero / groups).

    Raises:
      ValueError: a bad argument, a name in `layers` the model lacks, or weights holding NaN or inf.
      TypeError: `layers` is not a list of names.
    """
    owner = "group_sparsity_report"
    tolerance, chosen = _checked(model, groups, tolerance, layers, owner)
    rows = []
    for layer, inner in chosen:
        norms = _numpy_norms(inner, groups, owner)[1].ravel()
        near = int(np.count_nonzero(norms <= tolerance * norms.max()))
        rows.append({"layer": layer.name, "groups": int(norms.size), "zero": int(np.count_nonzero(norms == 0)),
                     "near_zero": near, "fraction": near / norms.size})
    return rows


def format_group_sparsity(rows):
    """`group_sparsity_report` rows as a text table with a total line.

    Args:
      rows: the rows `group_sparsity_report` returned.

    Returns:
      the table, a string.
    """
    total = {"layer": "total", "groups": sum(r["groups"] for r in rows), "zero": sum(r["zero"] for r in rows),
             "near_zero": sum(r["near_zero"] for r in rows)}
    total["fraction"] = total["near_zero"] / total["groups"] if total["groups"] else 0.0
    width = max(len(r["layer"]) for r in rows + [total])
    lines = [f"{'layer':<{width}}  {'groups':>7}  {'zero':>7}  {'near zero':>9}  {'fraction':>8}"]
    lines += [f"{r['layer']:<{width}}  {r['groups']:>7}  {r['zero']:>7}  {r['near_zero']:>9}  {r['fraction']:>8.1%}"
              for r in rows + [total]]
    return "\n".join(lines)


def threshold_groups(model, groups="filter", tolerance=1e-3, layers=None):
    """A new model whose near-zero groups are masked: fixed masks, so the zeros stay through fine-tuning, and
    `shrink` removes them.

    Regularized training leaves dead groups small but not zero. For output groups ('filter', 'unit') the dead
    outputs' bias entries are masked too: otherwise a dead filter still emits its bias as a constant, which
    `shrink` rightly refuses to drop.

    Args:
      model: a trained model of either flavor (not changed).
      groups: ``"filter"``, ``"channel"``, ``"shape"``, ``"unit"`` or ``"row"`` (see the module docstring).
      tolerance: near zero as in `group_sparsity_report`.
      layers: names of the layers to threshold (None: as in `apply_group_lasso`).

    Returns:
      a new, uncompiled model of masked layers.

    Raises:
      ValueError: a bad argument, a name in `layers` the model lacks, or weights holding NaN or inf.
      TypeError: `layers` is not a list of names.
    """
    owner = "threshold_groups"
    tolerance, chosen = _checked(model, groups, tolerance, layers, owner)
    layer_masks = {}
    for layer, inner in chosen:
        kernel, norms = _numpy_norms(inner, groups, owner)
        alive = norms > tolerance * norms.max()
        layer_masks[inner.name] = {"kernel": np.broadcast_to(alive, kernel.shape)}
        if groups in ("filter", "unit") and getattr(inner, "bias", None) is not None:
            layer_masks[inner.name]["bias"] = alive.reshape(-1)
    return freeze(with_masks(model, layer_masks))
