"""The one mask model: every pruning method ends in a binary mask per prunable weight.

`MaskedLayer` wraps any Keras layer and holds, per masked weight, an optional element-wise mask
(weight pruning, pruning at init, IMP) and optional per-axis keep vectors (unit/filter pruning).
The effective mask is their broadcast product. TFMOT's `PruneLowMagnitude` exposes its masks through
the same `masks(model)` view, so `strip`, `shrink`, reports and export never ask which method ran.

The forward pass reads `weight * mask` (gradients of masked entries are zero); channel keeps of Dense and
channels-last convolutions act on the layer's input and pre-activation output instead, the same result for
a fraction of the work. The callbacks also write the masked values into the variables whenever masks
change, so inspected weights show the zeros.

All state is trackable variables with string keys (so every checkpoint format carries it), and the pruning
step lives in the layer: each training call advances it in the graph, so a restored model resumes from its
own step whatever restored it.
"""
import functools
import inspect

import numpy as np

from tfprune import schedules
from tfprune._keras import PruneLowMagnitude
from tfprune._keras import (FIRST_REPLICA, check_model, flavor_of, is_model, is_variable, keras,
                            keras3, tf, tf_variable, weight_slot)
from tfprune.graph import kernel_attributes  # noqa: F401  (part of the mask API)
from tfprune.registry import resolve_weight, spec_for


class MaskedLayer:
    """Wraps `layer` and applies binary masks to its weights on every call.

    ``MaskedLayer(layer, ...)`` makes the wrapper of `layer`'s flavor: a Keras 3 or a tf_keras Wrapper
    class, both named MaskedLayer, registered as ``tfprune>MaskedLayer`` and sharing this class's code;
    ``isinstance(x, MaskedLayer)`` holds for both.

    Args:
      layer: the Keras layer to wrap.
      element_masked: weight attribute names (e.g. ``("kernel",)``) that get an element-wise mask; dotted
        paths reach weights of sublayers (``"_query_dense.kernel"`` of a MultiHeadAttention).
      channel_masked: ``{attribute: [axis, ...]}`` weights that get a keep vector per axis.
      plan: JSON-serialisable settings of the pruning methods driving this layer (read by callbacks).
        Every wrapper a method drives holds the same copy: Keras saves, loads and clones layers, not
        model-level settings, so the plan travels with the layers through every format; `shared_plan` reads it
        and checks the copies agree.
      **kwargs: Keras layer arguments (``name`` defaults to ``"masked_" + layer.name``).

    Raises:
      (when built) ValueError: a masked attribute names no weight of the layer.
      (when built) TypeError: a Keras 3 layer whose `build` takes several input shapes.

    Variables: ``masks[attribute]``, ``keeps[keep_name(attribute, axis)]``, ``pruning_step`` (training calls
    made, -1 before any) and ``mask_step`` (the step of the last scheduled mask update, -1 before any).
    """

    # The channel graph sees through this wrapper to the inner layer.
    tfprune_transparent = True

    def __new__(cls, *args, **kwargs):
        if cls is MaskedLayer:
            layer = args[0] if args else kwargs["layer"]
            cls = _WRAPPER_CLASSES[flavor_of(layer)]
        return super(MaskedLayer, cls).__new__(cls, *args, **kwargs)

    def __init__(self, layer, element_masked=(), channel_masked=None, plan=None, **kwargs):
        kwargs.setdefault("name", f"masked_{layer.name}")
        super().__init__(layer, **kwargs)
        self.element_masked = tuple(element_masked)
        self.channel_masked = {name: sorted(int(a) for a in axes) for name, axes in (channel_masked or {}).items()}
        self.plan = dict(plan or {})
        # Methods with a schedule need UpdatePruningStep; their schedules are evaluated in the graph to check it.
        self._schedules = [schedules.deserialize(self.plan[kind]["schedule"]) for kind in ("weight", "unit")
                           if kind in self.plan]
        self._starts = [self.plan[kind].get("start", 0) for kind in ("weight", "unit") if kind in self.plan]
        parameters = inspect.signature(layer.call).parameters
        self._supports_training = "training" in parameters
        self._supports_mask = "mask" in parameters
        self.masks = None  # made with the rest of the mask state once the masked weights exist

    def build(self, input_shape):
        if not self.layer.built:
            # Keras 3 builds some layers (MultiHeadAttention) from every input's shape, and a wrapper is given the
            # first's only: it stands for all (self-attention, or inputs of one width); other widths fail loudly in
            # the first call, where the inner layer's kernels meet them.
            self.layer.build(*_shapes_for(self.layer.build, input_shape))
        if all(is_variable(self._weight(name)) for name in self.masked_attributes()):
            self._build_state()
        super().build(input_shape)

    def _build_state(self):
        for name in self.masked_attributes():
            if not is_variable(self._weight(name)):
                raise ValueError(
                    f"MaskedLayer '{self.name}': layer '{self.layer.name}' ({type(self.layer).__name__}) has "
                    f"no weight '{name}'. Mask only weights the layer owns.")
        self.masks = {}
        self.keeps = {}
        for name in self.element_masked:
            shape = self._weight(name).shape
            self.masks[name] = self.add_weight(name=f"{_variable_name(name)}_mask", shape=shape, initializer="ones",
                                               trainable=False, dtype="float32")
        for name, axes in self.channel_masked.items():
            shape = self._weight(name).shape
            for axis in axes:
                self.keeps[keep_name(name, axis)] = self.add_weight(
                    name=keep_name(name, axis), shape=(shape[axis],), initializer="ones", trainable=False,
                    dtype="float32")
        # Every replica advances its copy by one per step; the first replica's value is the step.
        flavor = flavor_of(self)
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), trainable=False, dtype="int64",
                                            initializer=flavor.initializers.Constant(-1),
                                            aggregation=FIRST_REPLICA[flavor])
        self.mask_step = self.add_weight(name="mask_step", shape=(), trainable=False, dtype="int64",
                                         initializer=flavor.initializers.Constant(-1),
                                         aggregation=FIRST_REPLICA[flavor])

    def _weight(self, name):
        """The inner layer's weight at attribute path `name` (None if it has none)."""
        return resolve_weight(self.layer, name)

    def keep(self, name, axis):
        """The keep vector of weight `name` along `axis` (1 keeps a channel, 0 removes it).

        Args:
          name: a weight attribute in `channel_masked`.
          axis: one of its masked axes.

        Returns:
          the float32 keep variable.

        Raises:
          KeyError: the weight has no keep vector on that axis.
        """
        return self.keeps[keep_name(name, axis)]

    def masked_attributes(self):
        """The weights this wrapper masks, element-masked first, each once.

        Returns:
          a list of attribute paths.
        """
        return list(dict.fromkeys(list(self.element_masked) + list(self.channel_masked)))

    def _mask_factor(self, name, element=True, channel=True):
        """Product of weight `name`'s keep vectors (with `channel`, each shaped to broadcast along its axis) and
        (with `element`) its element mask: what the weight is multiplied by, without a full-size ones tensor.
        None when nothing applies."""
        rank = len(self._weight(name).shape)
        factor = self.masks[name] if element and name in self.masks else None
        for axis in self.channel_masked.get(name, ()) if channel else ():
            shape = [1] * rank
            shape[axis] = -1
            keep = tf.reshape(self.keep(name, axis), shape)
            factor = keep if factor is None else factor * keep
        return factor

    def channel_mask_tensor(self, name):
        """The product of weight `name`'s per-axis keep vectors (ones when it has none).

        Args:
          name: a masked weight's attribute path.

        Returns:
          a float tensor of the weight's shape.
        """
        return self._broadcast(name, self._mask_factor(name, element=False))

    def mask_tensor(self, name):
        """The effective mask of weight `name`: element mask times channel keeps.

        Args:
          name: a masked weight's attribute path.

        Returns:
          a float 0/1 tensor of the weight's shape.
        """
        return self._broadcast(name, self._mask_factor(name))

    def _broadcast(self, name, factor):
        shape = self._weight(name).shape
        return tf.ones(shape) if factor is None else tf.broadcast_to(factor, shape)

    def _activation_keeps(self):
        """(input keep, output keep) of the kernel's channel axes when they can act on the layer's input and
        pre-activation output instead of on the kernel, else (None, None).

        For Dense and channels-last convolutions, ``x @ (W * k_in k_out^T) == ((x * k_in) @ W) * k_out``
        (bias and activation follow), with the same gradients; a batch of activations is far smaller than
        the kernel, so masking it costs a fraction of masking the weight on every training step.
        """
        inner = self.layer
        spec = spec_for(inner)
        plain = (spec is not None and spec.masks_activations and getattr(inner, "groups", 1) == 1
                 and getattr(inner, "data_format", "channels_last") == "channels_last")
        # An activity regularizer must see the activated output, which this path computes outside the layer.
        if "kernel" not in self.channel_masked or not plain or inner.activity_regularizer is not None:
            return None, None
        rank = len(inner.kernel.shape)
        axes = self.channel_masked["kernel"]
        return (self.keep("kernel", rank - 2) if rank - 2 in axes else None,
                self.keep("kernel", rank - 1) if rank - 1 in axes else None)

    def _count_step(self):
        """Advance the step; first fail if a schedule fires now and no mask update was made for this step,
        which means nothing drives the schedules (training without UpdatePruningStep would end dense).

        The check is an assertion in the graph. XLA drops assertions, so under ``jit_compile=True`` it does not
        run (TFMOT's own check has the same gap); a trace-time check instead would fire on every save, which
        traces training calls too.
        """
        step = tf_variable(self.pruning_step).read_value()
        checks = []
        for schedule, start in zip(self._schedules, self._starts):
            updated = tf.equal(tf_variable(self.mask_step), step)
            checks.append(tf.debugging.Assert(
                tf.logical_or(tf.logical_not(schedules.fires(schedule, step - start)), updated),
                [f"Layer '{self.layer.name}' is being pruned on a schedule, but nothing updated its masks at "
                 f"the training step where the schedule fires. Train it with the pruning callback: "
                 f"model.fit(..., callbacks=[tfprune.UpdatePruningStep()]) (in a custom loop, call the "
                 f"callback's hooks as tfprune.callbacks documents).", step]))
        with tf.control_dependencies(checks):
            return tf_variable(self.pruning_step).assign_add(1, read_value=False)

    def _counted_step(self):
        with tf.control_dependencies([self._count_step()]):
            return tf.constant(True)

    def call(self, inputs, *args, training=None, **kwargs):
        """The inner layer's call with masked weights; further arguments (MultiHeadAttention's value, key,
        attention_mask) pass through unchanged.

        Args:
          inputs: the inner layer's first input.
          *args: its further positional arguments.
          training: the training flag; a training call advances ``pruning_step`` when a schedule drives the
            layer.
          **kwargs: its further keyword arguments.

        Returns:
          the inner layer's outputs.

        Raises:
          tf.errors.InvalidArgumentError: a training call at a step where a schedule fires but nothing updated
            the masks (no `tfprune.UpdatePruningStep`).
        """
        if not self._supports_mask:
            kwargs.pop("mask", None)  # Keras passes the inputs' masks to a wrapper that takes **kwargs
        if self._supports_training:
            kwargs["training"] = training
        if self.masks is None:
            # The layer makes its weights on its first call (MultiHeadAttention's sublayers), so build could
            # not see them: make them now, then the mask state, outside any graph being traced.
            self.layer(inputs, *args, **kwargs)
            with tf.init_scope():
                self._build_state()
        if self._schedules and training is not None and training is not False:
            if training is True:
                self._count_step()
            else:  # a symbolic learning phase
                tf.cond(tf.cast(training, tf.bool), self._counted_step, lambda: tf.constant(False))
        keep_in, keep_out = self._activation_keeps()
        originals = []
        for name in self.masked_attributes():
            variable = self._weight(name)
            if not variable.trainable:
                continue  # moving statistics are updated by the layer itself; apply_masks zeroes them
            on_weight = self._mask_factor(name, channel=keep_in is None and keep_out is None or name != "kernel")
            if on_weight is None:
                continue
            parent, _, attribute = name.rpartition(".")
            owner = resolve_weight(self.layer, parent) if parent else self.layer
            slot = weight_slot(owner, attribute)
            originals.append((owner, slot, getattr(owner, slot)))
            # object.__setattr__ avoids Keras attribute tracking: the variable stays the tracked weight.
            object.__setattr__(owner, slot, variable * on_weight)
        activation = self.layer.activation if keep_out is not None else None
        if activation is not None:
            object.__setattr__(self.layer, "activation", flavor_of(self).activations.linear)
        try:
            if keep_in is not None:
                inputs = inputs * tf.cast(keep_in, inputs.dtype)
            outputs = self._inner_call(inputs, args, kwargs)
            return outputs if keep_out is None else activation(outputs * tf.cast(keep_out, outputs.dtype))
        finally:
            for owner, attribute, variable in originals:
                object.__setattr__(owner, attribute, variable)
            if activation is not None:
                object.__setattr__(self.layer, "activation", activation)

    def _inner_call(self, inputs, args, kwargs):
        """The wrapped layer's call; layers whose spec has a `masked_call` (statistics over the channels) compute
        it over the kept channels only, so the masked model equals the shrunk one."""
        spec = spec_for(self.layer)
        if spec is not None and spec.masked_call is not None and self.channel_masked:
            keep = self._mask_factor(next(iter(self.channel_masked)), element=False)
            return spec.masked_call(self.layer, inputs, tf.reshape(keep, [-1]))
        return self.layer(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(*_shapes_for(self.layer.compute_output_shape, input_shape))

    def compute_output_spec(self, *args, **kwargs):
        """Keras 3 asks this of symbolic calls: the wrapped layer answers, tracing its own `call` when it has no
        `compute_output_shape` (custom layers often have none)."""
        return self.layer.compute_output_spec(*args, **kwargs)

    # -- mask state as numpy, for callbacks, reports and export --------------------------------------
    def mask_values(self):
        """``{attribute: effective 0/1 mask as np.ndarray}`` for every masked weight, for reports and export.

        Returns:
          a dict of float32 arrays shaped like the weights.
        """
        return {name: self.mask_tensor(name).numpy() for name in self.masked_attributes()}

    def masked_weights(self):
        """``{attribute: weight * mask}``: what the layer computes with.

        Returns:
          a dict of numpy arrays shaped like the weights.
        """
        return {name: self._weight(name).numpy() * mask for name, mask in self.mask_values().items()}

    def apply_masks(self):
        """Write masked values into the variables, so the zeros are visible in the weights too (eagerly, or
        inside a `tf.function` such as `mask_writer`'s)."""
        for name in self.masked_attributes():
            weight = self._weight(name)
            factor = self._mask_factor(name)
            if factor is not None:
                weight.assign(weight * factor)

    def get_config(self):
        config = super().get_config()
        config.update(element_masked=list(self.element_masked),
                      channel_masked={k: list(v) for k, v in self.channel_masked.items()},
                      plan=self.plan)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = flavor_of(cls).layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


def _shapes_for(method, input_shape):
    """`input_shape` once per shape `method` (a build or compute_output_shape) requires (see MaskedLayer.build)."""
    required = [p for p in inspect.signature(method).parameters.values()
                if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    return [input_shape] * max(len(required), 1)


def _wrapper_class(flavor, register):
    """The MaskedLayer class of one Keras flavor: the shared code on that flavor's Wrapper."""
    cls = type("MaskedLayer", (MaskedLayer, flavor.layers.Wrapper), {"__module__": __name__,
                                                                    "__doc__": MaskedLayer.__doc__})
    return register(package="tfprune", name="MaskedLayer")(cls)


_WRAPPER_CLASSES = {keras: _wrapper_class(keras, keras.utils.register_keras_serializable),
                    keras3: _wrapper_class(keras3, keras3.saving.register_keras_serializable)}


def shared_plan(layers, kind):
    """The `kind` plan ("weight" or "unit") the `layers` share; raises if their copies differ (layers of two
    models spliced together, or a plan edited by hand), which would make the result depend on layer order.

    Args:
      layers: `MaskedLayer` wrappers whose plans all hold `kind`.
      kind: ``"weight"`` or ``"unit"``.

    Returns:
      the plan, a dict.

    Raises:
      ValueError: the layers' copies differ.
      KeyError: a layer has no `kind` plan.
    """
    plans = [layer.plan[kind] for layer in layers]
    if any(plan != plans[0] for plan in plans[1:]):
        names = [layer.layer.name for layer, plan in zip(layers, plans) if plan != plans[0]]
        raise ValueError(f"Layers {names} carry a different '{kind}' pruning plan from '{layers[0].layer.name}'; "
                         f"one model holds one plan per method. Prune the whole model with one call.")
    return plans[0]


def keep_name(name, axis):
    """The key (and variable name) of weight `name`'s keep vector along `axis`, one name segment so every
    checkpoint format can carry it.

    Args:
      name: a weight attribute path.
      axis: the masked axis.

    Returns:
      a string such as ``"kernel_keep3"``.
    """
    return f"{_variable_name(name)}_keep{axis}"


def _variable_name(name):
    """A weight path as one name segment: sublayer paths' '.' becomes '__' (old names stay as they were)."""
    return name.replace(".", "__")


def inner_layer(layer):
    """The layer a pruning wrapper holds, or the layer itself, so wrapped and stripped models match by name.

    Args:
      layer: any layer.

    Returns:
      the inner layer of a `MaskedLayer` or TFMOT `PruneLowMagnitude`, else `layer`.
    """
    if isinstance(layer, (MaskedLayer, PruneLowMagnitude)):
        return layer.layer
    return layer


def iter_layers(model):
    """All layers of `model`, recursing into nested models, wrappers included (not their inner layers).

    Args:
      model: a model of either flavor.

    Yields:
      each non-model layer, depth first in ``model.layers`` order.
    """
    for layer in model.layers:
        if is_model(layer):
            yield from iter_layers(layer)
        else:
            yield layer


def masked_layers(model):
    """tfprune's MaskedLayer wrappers in `model` (nested models included), what the callbacks drive.

    Args:
      model: a model of either flavor.

    Returns:
      a list of `MaskedLayer`s, in `iter_layers` order.
    """
    return [layer for layer in iter_layers(model) if isinstance(layer, MaskedLayer)]


def mask_writer(layers):
    """One compiled function writing the masked values of every layer in `layers` into its variables.

    Per-step pruning calls this each step: one graph call costs a fraction of an eager assign per weight.

    Args:
      layers: `MaskedLayer` wrappers (e.g. `masked_layers(model)`).

    Returns:
      a `tf.function` taking no arguments.
    """
    # A function object of this writer's own, as bench's runner does: TensorFlow counts traces per Python
    # function (a nested def's code is shared by every writer), so one trace per model, with several models set
    # up in one process (a study), would read as retracing.
    return tf.function(functools.partial(_write_masks, list(layers)), autograph=False)


def _write_masks(layers):
    for layer in layers:
        layer.apply_masks()



def current_step(model):
    """The training step `model`'s pruning has reached (0 before any): the largest of its wrappers' steps.

    A pruning method added to a model already being pruned counts its schedule from this step.

    Args:
      model: a model of either flavor.

    Returns:
      the step, an int.
    """
    return max([int(layer.pruning_step.numpy()) for layer in masked_layers(model)] + [0])


def masks(model):
    """``{(layer_name, attribute): 0/1 np.ndarray}`` for every masked weight, whatever produced it.

    Layer names are the inner (unwrapped) layer names, the names `strip` gives back.
    Example: ``{key: 1 - m.mean() for key, m in tfprune.masks(model).items()}`` (sparsity per weight).

    Args:
      model: a model of either flavor with tfprune's or TFMOT's wrappers (unbuilt wrappers are skipped).

    Returns:
      a dict of float arrays shaped like the weights (copies: changing them changes nothing).

    Raises:
      ValueError: two layers of `model` share a name.
      TypeError: `model` is not a Keras model.
    """
    check_model(model)
    result = {}
    for layer in iter_layers(model):
        if isinstance(layer, MaskedLayer) and layer.built:
            for name, mask in layer.mask_values().items():
                result[(layer.layer.name, name)] = mask
        elif isinstance(layer, PruneLowMagnitude) and layer.built:
            for weight, mask, _ in layer.pruning_vars:
                attribute = next(n for n in kernel_attributes(layer.layer) + ["bias"]
                                 if getattr(layer.layer, n, None) is weight)
                result[(layer.layer.name, attribute)] = mask.numpy().copy()
    return result


def _unwrapped_weights(layer):
    """The inner layer's weights with masks applied, in the inner layer's weight order."""
    inner = layer.layer
    if isinstance(layer, MaskedLayer):
        masked = layer.masked_weights()
        by_id = {id(resolve_weight(inner, name)): value for name, value in masked.items()}
    else:
        by_id = {id(weight): weight.numpy() * mask.numpy() for weight, mask, _ in layer.pruning_vars}
    return [by_id.get(id(weight), weight.numpy()) for weight in inner.weights]


def strip(model):
    """A new model (of the flavor given) without pruning wrappers (tfprune's and TFMOT's); pruned weights are
    zeros. Strip before saving a model for deployment: the wrappers' masks and steps are training state.

    Args:
      model: a Sequential or functional model of either flavor (nested models are stripped too).

    Returns:
      the stripped model, uncompiled, with the inner layers' names; `model` is not changed.

    Raises:
      ValueError: two layers of `model` share a name.
      TypeError: `model` is not a Keras model.
    """
    check_model(model)

    def clone(layer):
        if is_model(layer):
            return strip(layer)
        source = inner_layer(layer)
        return source.__class__.from_config(source.get_config())

    stripped = flavor_of(model).models.clone_model(model, clone_function=clone)
    _copy_weights(model, stripped)
    return stripped


def _pairs(source_model, target_model):
    """(source layer, its counterpart in a clone) for every layer holding weights, matched by inner name; layers
    without weights are skipped (input layers among them, which Keras 3 renames when it clones)."""
    targets = {inner_layer(layer).name: layer for layer in target_model.layers}
    return [(source, targets[inner_layer(source).name]) for source in source_model.layers if source.weights]


def _copy_weights(source_model, target_model):
    for source, target in _pairs(source_model, target_model):
        if is_model(source):
            _copy_weights(source, target)
        elif isinstance(source, (MaskedLayer, PruneLowMagnitude)):
            target.set_weights(_unwrapped_weights(source))
        else:
            target.set_weights(source.get_weights())


def has_wrappers(model):
    """Whether any layer of `model` (nested models included) is wrapped for pruning, by tfprune or TFMOT.

    Args:
      model: a model of either flavor.

    Returns:
      a bool.
    """
    return any(isinstance(layer, (MaskedLayer, PruneLowMagnitude)) for layer in iter_layers(model))


def rewrap(model, spec_for, keep_plans=True):
    """A clone of `model` in which layers get (or extend) a MaskedLayer, with all state copied.

    `spec_for(inner_layer)` returns ``None`` or a dict with any of ``element_masked``,
    ``channel_masked`` and ``plan``; it is merged into an existing wrapper's settings, so unit masks and
    weight masks can live on one layer. Without `keep_plans` the wrappers' schedules are dropped (their masks
    stay). The caller's model is not changed.

    Args:
      model: a Sequential or functional model of either flavor.
      spec_for: ``inner_layer -> None or dict`` as above.
      keep_plans: keep the existing wrappers' plans (schedules).

    Returns:
      the clone, uncompiled.

    Raises:
      ValueError: a layer is wrapped by TFMOT's prune_low_magnitude, or two layers share a name.
      TypeError: `model` is not a Keras model.
    """
    check_model(model)

    def clone(layer):
        if is_model(layer):
            return rewrap(layer, spec_for, keep_plans)
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(
                f"Layer '{layer.name}' is wrapped by TFMOT's prune_low_magnitude; tfprune cannot add its own "
                f"masks on top. Call tfprune.strip(model) first, or use tfprune.prune_weights for both.")
        inner = inner_layer(layer)
        spec = spec_for(inner)
        fresh = inner.__class__.from_config(inner.get_config())
        if spec is None and not isinstance(layer, MaskedLayer):
            return fresh
        settings = {"element_masked": [], "channel_masked": {}, "plan": {}}
        if isinstance(layer, MaskedLayer):
            settings = {"element_masked": list(layer.element_masked),
                        "channel_masked": {k: list(v) for k, v in layer.channel_masked.items()},
                        "plan": dict(layer.plan) if keep_plans else {}}
        spec = spec or {}
        settings["element_masked"] = list(dict.fromkeys(settings["element_masked"] + list(spec.get("element_masked", ()))))
        for name, axes in spec.get("channel_masked", {}).items():
            settings["channel_masked"][name] = sorted(set(settings["channel_masked"].get(name, [])) | set(axes))
        settings["plan"].update(spec.get("plan", {}))
        return MaskedLayer(fresh, **settings)

    clone_model = flavor_of(model).models.clone_model(model, clone_function=clone)
    _copy_state(model, clone_model)
    return clone_model


def freeze(model):
    """A clone of `model` whose masks stay fixed: every wrapper keeps its masks and drops its schedules, so
    training it needs no callback (one-shot results, rounds of iterative pruning).

    Args:
      model: a Sequential or functional model of either flavor.

    Returns:
      the clone, uncompiled.

    Raises:
      ValueError: as `rewrap`.
      TypeError: as `rewrap`.
    """
    return rewrap(model, lambda layer: None, keep_plans=False)


def _copy_state(source_model, target_model):
    """Copy weights, masks and steps from `source_model` into its rewrapped clone, matching inner names."""
    for source, target in _pairs(source_model, target_model):
        if is_model(source):
            _copy_state(source, target)
            continue
        inner_layer(target).set_weights(inner_layer(source).get_weights())
        if isinstance(source, MaskedLayer) and isinstance(target, MaskedLayer):
            for name, variable in source.masks.items():
                target.masks[name].assign(variable)
            for key, variable in source.keeps.items():
                target.keeps[key].assign(variable)
            target.pruning_step.assign(source.pruning_step)
            target.mask_step.assign(source.mask_step)


def with_masks(model, layer_masks, plan=None):
    """A new model whose listed weights carry fixed element-wise masks (pruning at init, IMP rounds).

    `layer_masks` maps ``layer_name -> {attribute: 0/1 array}`` (or ``layer_name -> array`` for the
    kernel). Masked entries are zeroed in the weights too. Unknown names or shapes raise before anything
    is built. Example: ``tfprune.with_masks(model, {"dense_0": keep})`` with `keep` a 0/1 array of the
    kernel's shape.

    Args:
      model: a Sequential or functional model of either flavor.
      layer_masks: the masks, keyed by inner layer name as above.
      plan: the pruning plan the new wrappers carry (see `MaskedLayer`); none by default.

    Returns:
      the masked clone, uncompiled; `model` is not changed.

    Raises:
      ValueError: an unknown layer name, a weight the layer lacks or a mask of another shape, a layer wrapped
        by TFMOT, or two layers sharing a name.
      TypeError: `model` is not a Keras model.
    """
    check_model(model)
    by_layer = {inner_layer(layer).name: inner_layer(layer) for layer in iter_layers(model)}
    normalised = {}
    for name, value in layer_masks.items():
        if name not in by_layer:
            raise ValueError(f"with_masks: no layer named '{name}' in model '{model.name}'. "
                             f"Layers: {sorted(by_layer)}.")
        layer = by_layer[name]
        value = value if isinstance(value, dict) else {kernel_attributes(layer)[0]: value}
        for attribute, mask in value.items():
            weight = resolve_weight(layer, attribute)
            if not is_variable(weight) or tuple(weight.shape) != np.shape(mask):
                raise ValueError(f"with_masks: layer '{name}' weight '{attribute}' has shape "
                                 f"{None if weight is None else tuple(weight.shape)}, mask has {np.shape(mask)}.")
        normalised[name] = {attribute: np.asarray(mask, dtype=np.float32) for attribute, mask in value.items()}

    masked = rewrap(model, lambda layer: {"element_masked": list(normalised[layer.name]), "plan": dict(plan or {})}
                    if layer.name in normalised else None)
    for layer in masked_layers(masked):
        for attribute, mask in normalised.get(layer.layer.name, {}).items():
            layer.masks[attribute].assign(mask)
        layer.apply_masks()
    return masked
