"""Gradual unit (Dense neuron) and filter (conv output channel) pruning inside `model.fit`.

Every coupled tensor of a channel group (producer kernel and bias, BatchNorm entries, consumer input
rows, residual and concatenated branches) gets a keep vector on its MaskedLayer; the channel graph
says which, so the masks here are exactly what `shrink` later removes. Criteria are pluggable callables
from `tfprune.criteria`, fed by `criteria.ModelTensors` (which reads the variables, so each update first
writes the masked zeros into them); schedules are TFMOT's. An update is one compiled TensorFlow function on
the device that holds the variables: it scores, ranks and writes every keep vector.
"""
import warnings

import numpy as np

from tfprune import criteria as criteria_module
from tfprune import schedules
from tfprune._keras import check_model, flavor_of, tf, tf_variable
from tfprune.graph import build_channel_graph, combined_keeps
from tfprune.mask import current_step, rewrap, shared_plan
from tfprune.validation import check_finite


def _criterion_name(criterion):
    if isinstance(criterion, str):
        criteria_module.get_criterion(criterion)
        return criterion
    name = getattr(criterion, "tfprune_name", None)
    if name is None or criteria_module.CRITERIA.get(name) is not criterion:
        raise ValueError("criterion: pass a name from tfprune.criteria.CRITERIA or a callable registered with "
                         "@tfprune.criteria.register_criterion('name'), so the pruned model can be saved.")
    return name


def _criterion(name, seed):
    return criteria_module.random_criterion(seed) if name == "random" else criteria_module.get_criterion(name)


def prune_units(model, schedule, criterion="l2", scope="layer", round_to=1, exclude=(), seed=0):
    """A new model whose units/filters are masked, group by group, while it trains; `shrink` then removes
    them, so the model gets smaller and faster, not just sparse.
    Example: ``tfprune.prune_units(model, tfprune.PolynomialDecay(0.0, 0.5, 0, 1000), criterion="l1")``.

    Args:
      model: Sequential or functional model, Keras 3 or tf_keras (not changed).
      schedule: TFMOT `PolynomialDecay`/`ConstantSparsity`; its sparsity is the fraction of units removed.
        Its steps count from this call: on a model already being pruned, step 0 is the model's current step.
      criterion: name in `tfprune.criteria.CRITERIA` ("l2", "l1", "bn_gamma", "taylor", "apoz",
        "mean_column_norm", "random") or a registered criterion callable.
      scope: "layer" (every group loses the same fraction) or "global" (scores normalised by each group's
        mean, ranked across groups; a group never loses its last unit).
      round_to: kept channel counts are multiples of this (LiteRT/XNNPACK compute channels in blocks).
      exclude: layer names whose channel groups are left whole (the output layer always is).
      seed: seed for the "random" criterion.

    Returns:
      the masked clone (uncompiled), its channel-masked layers wrapped in `MaskedLayer`s carrying the plan.

    Raises:
      ValueError: (all before anything is built) unknown criterion, scope or round_to; a criterion callable
        that is not registered; weights holding NaN or inf; no prunable channel group; a weight-only criterion
        that cannot score this model (e.g. "bn_gamma" without BatchNormalization); unknown `exclude` names.
      UnsupportedLayerError: a layer the channel graph cannot model (e.g. Lambda; the message names the layer
        and suggests `exclude`).
      TypeError: `model` is not a Keras model, or `schedule` is not a TFMOT schedule.

    Warns:
      UserWarning: a schedule that never reaches its final sparsity, or whose sparsity falls.

    Train with ``callbacks=[tfprune.UpdatePruningStep()]``; criteria that read gradients or activations
    ("taylor", "apoz") need calibration data: ``UpdatePruningStep(data=(x, y))``.
    """
    check_model(model)
    schedules.check_schedule(schedule)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}.")
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}.")
    name = _criterion_name(criterion)
    check_finite(model, "prune_units")
    schedules.warn_if_never_reaches_target(schedule)
    groups = build_channel_graph(model, exclude=exclude).prunable_groups()
    if not groups:
        raise ValueError(f"prune_units: model '{model.name}' has no prunable channel group "
                         f"(every group reaches the output or is excluded).")
    chosen = _criterion(name, seed)
    if not chosen.needs:  # a weight-only criterion that cannot score this model fails now, not mid-fit
        tensors = criteria_module.ModelTensors(model)
        for group in groups:
            criteria_module.score_group(chosen, group, tensors)
    axes = {}
    for group in groups:
        for piece in group.slices:
            axes.setdefault(piece.layer, {}).setdefault(piece.weight, set()).add(piece.axis)
    plan = {"unit": {"schedule": schedules.serialize(schedule), "criterion": name, "scope": scope,
                     "round_to": round_to, "exclude": list(exclude), "seed": seed, "start": current_step(model)}}
    return rewrap(model, lambda layer: {"channel_masked": {w: sorted(a) for w, a in axes[layer.name].items()},
                                        "plan": plan} if layer.name in axes else None)


def _check_calibration_data(model, data, criterion, with_loss):
    """Run the model (and its loss) on one calibration example, so data of the wrong shape fails now, naming
    the data, and not inside `fit` after pruning started."""
    x, y = data
    try:
        first = tf.nest.map_structure(lambda array: np.asarray(array)[:1], x)
        outputs = model(first, training=False)
        if with_loss:
            flavor_of(model).losses.get(model.loss)(np.asarray(y)[:1], outputs)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(f"UpdatePruningStep(data=...): the calibration data for criterion '{criterion}' does not "
                         f"fit model '{model.name}' (inputs {model.input_shape}): {str(error).splitlines()[0]} "
                         f"Pass data=(x, y) shaped like the training data.") from None


def kept_count(size, sparsity, round_to):
    """Channels kept when `sparsity` of `size` are removed: at least one, a multiple of round_to if possible
    (an int32 tensor; float64 with rounding half to even, like Python's round).

    Args:
      size: the group's channel count.
      sparsity: the fraction to remove (float or scalar tensor).
      round_to: the block size the kept count is rounded up to (never above `size`).

    Returns:
      a scalar int32 tensor.
    """
    removed = tf.cast(tf.round(tf.cast(sparsity, tf.float64) * size), tf.int32)
    return rounded_up(tf.maximum(1, size - removed), size, round_to)


def rounded_up(kept, size, round_to):
    """`kept` channels rounded up to a multiple of `round_to`, at least `round_to` and at most `size`."""
    if round_to == 1:
        return kept
    return tf.minimum(size, tf.maximum(round_to, (kept + round_to - 1) // round_to * round_to))


def _top(score, kept):
    """Keep the `kept` best channels (ties: the lower index), never one already pruned (score -inf), so
    pruning never revives."""
    alive = tf.reduce_sum(tf.cast(score > -np.inf, tf.int32))
    best = tf.math.top_k(score, tf.minimum(kept, alive)).indices
    return tf.scatter_nd(best[:, None], tf.ones_like(best, tf.bool), [score.shape[0]])


def _channel_keep(piece, vector):
    """Per-channel keep of `piece`'s group read back from the keep vector of its axis (first position)."""
    return piece.channel_view(tf.reshape(vector, [1] * piece.axis + [-1]))[:, 0] > 0


def _traced(update):
    """`update(sparsity, step)` compiled and traced now, while the model is set up, not in the first training
    step; None when it cannot be traced because a criterion computes with numpy."""
    compiled = tf.function(update, autograph=False)
    try:
        compiled.get_concrete_function(tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.int64))
    except (NotImplementedError, TypeError):  # numpy on a symbolic tensor
        return None
    return compiled


class UnitPruner:
    """Re-scores every prunable channel group and rewrites the keep vectors of all coupled weights.

    Args:
      model: the model holding the MaskedLayers (read by the criterion).
      wrappers: ``{inner layer name: MaskedLayer}`` of the model.
      plan: the ``"unit"`` plan that `prune_units` stored on the wrappers.
      data: calibration ``(x, y)`` for criteria that need gradients or activations.

    Raises:
      ValueError: the criterion needs data and none (or no labels, or no compiled loss, for gradients) was
        given, or the data do not fit the model; and as `build_channel_graph`.

    Warns:
      UserWarning: the criterion is not written with TensorFlow ops, so updates run eagerly.
    """

    def __init__(self, model, wrappers, plan, data=None):
        name = plan["criterion"]
        self.criterion = _criterion(name, plan["seed"])
        needs = sorted(self.criterion.needs)
        if needs and data is None:
            raise ValueError(f"Unit criterion '{name}' needs {' and '.join(needs)} of calibration data: train "
                             f"with tfprune.UpdatePruningStep(data=(x, y)).")
        if "gradients" in needs and (data[1] is None or getattr(model, "loss", None) is None):
            raise ValueError(f"Unit criterion '{name}' needs gradients: give labels, "
                             f"UpdatePruningStep(data=(x, y)), and compile the model with a loss.")
        if needs:
            _check_calibration_data(model, data, name, "gradients" in needs)
        self.model = model
        self.wrappers = wrappers
        self._planned = [layer for layer in wrappers.values() if "unit" in layer.plan]
        # Tensors made once: the compiled update reads them without embedding the data in its graph.
        self.data = None if data is None else tuple(
            None if part is None else tf.nest.map_structure(tf.convert_to_tensor, part) for part in data)
        self.schedule = schedules.deserialize(plan["schedule"])
        self.start = plan.get("start", 0)
        self.scope = plan["scope"]
        self.round_to = plan["round_to"]
        self.groups = build_channel_graph(model, exclude=plan["exclude"]).prunable_groups()
        # Every keep vector and the (group index, slice) pairs that write into it.
        self._writers = {}
        for index, group in enumerate(self.groups):
            for piece in group.slices:
                self._writers.setdefault((piece.layer, piece.weight, piece.axis), []).append((index, piece))
        self._device = tf_variable(self._variable(next(iter(self._writers)))).device
        self._compiled = _traced(self._update_keeps)
        if self._compiled is None:
            warnings.warn(f"Unit criterion '{self.criterion.tfprune_name}' is not written with TensorFlow ops; it "
                          f"runs eagerly, reading the weights on the host.", UserWarning, stacklevel=4)

    @classmethod
    def from_model(cls, model, layers, data=None):
        """The pruner for the unit plan `layers` carry, as the callback builds it at the start of training.

        Args:
          model: the model holding `layers`.
          layers: its `MaskedLayer`s.
          data: calibration ``(x, y)``, as `UnitPruner`.

        Returns:
          a list of one `UnitPruner`, or an empty list when no layer carries a unit plan.

        Raises:
          ValueError: the layers' unit plans differ; and as `UnitPruner`.
        """
        planned = [layer for layer in layers if "unit" in layer.plan]
        if not planned:
            return []
        wrappers = {layer.layer.name: layer for layer in layers}
        return [cls(model, wrappers, shared_plan(planned, "unit"), data)]

    def _variable(self, key):
        layer, weight, axis = key
        return self.wrappers[layer].keep(weight, axis)

    def update(self, sparsity, step):
        """Score every group on the current (masked) model and shrink the keep vectors to `sparsity`; record
        `step` as the layers' mask step.

        Args:
          sparsity: the schedule's sparsity at `step`, the fraction of each group (or of all, globally) removed.
          step: the training step.

        Raises:
          tf.errors.InvalidArgumentError: the criterion returned non-finite scores (inside the compiled update;
            ValueError when it runs eagerly).
        """
        (self._compiled or self._update_keeps)(tf.constant(sparsity, tf.float64), tf.constant(step, tf.int64))

    def _update_keeps(self, sparsity, step):
        with tf.device(self._device):
            for wrapper in self.wrappers.values():
                wrapper.apply_masks()  # momentum moves masked entries off zero; criteria must read the zeros
            tensors = criteria_module.ModelTensors(self.model, *(self.data or ()))
            scores = []
            for group in self.groups:
                piece = group.slices[0]
                current = _channel_keep(piece, self._variable((piece.layer, piece.weight, piece.axis)))
                score = criteria_module.score_group(self.criterion, group, tensors)
                scores.append(tf.where(current, score, tf.constant(-np.inf, tf.float64)))
            if self.scope == "layer":
                keeps = [_top(score, kept_count(group.size, sparsity, self.round_to))
                         for score, group in zip(scores, self.groups)]
            else:
                keeps = self._global_keeps(scores, sparsity)
            pairs = [(piece, keeps[index]) for writers in self._writers.values() for index, piece in writers]
            combined = combined_keeps(pairs, lambda piece: self._variable((piece.layer, piece.weight,
                                                                           piece.axis)).shape[0])
            for key, vector in combined.items():
                tf_variable(self._variable(key)).assign(tf.cast(vector, tf.float32), read_value=False)
            for wrapper in self._planned:
                tf_variable(wrapper.mask_step).assign(step, read_value=False)

    def _global_keeps(self, scores, sparsity):
        """Drop the globally lowest normalised scores; each group's best channel is never a candidate."""
        normalised = []
        for score in scores:
            alive = tf.math.is_finite(score)
            scaled = criteria_module.normalize_scores(tf.boolean_mask(score, alive))
            normalised.append(tf.tensor_scatter_nd_update(tf.fill(tf.shape(score), tf.constant(-np.inf, tf.float64)),
                                                          tf.where(alive), scaled))
        sizes = [group.size for group in self.groups]
        flat = tf.concat(normalised, axis=0)
        # Each group's best channel: its highest score, the later one among equals (as a stable ascending
        # sort orders them).
        best = [int(start) + size - 1 - tf.argmax(tf.reverse(score, [0]), output_type=tf.int32)
                for start, size, score in zip(np.cumsum([0] + sizes[:-1]), sizes, normalised)]
        order = tf.argsort(flat, stable=True)
        is_best = tf.scatter_nd(tf.stack(best)[:, None], tf.ones([len(best)], tf.bool), [sum(sizes)])
        candidates = tf.boolean_mask(order, tf.logical_not(tf.gather(is_best, order)))
        dropped = candidates[:tf.cast(tf.round(sparsity * sum(sizes)), tf.int32)]
        keep = tf.tensor_scatter_nd_update(tf.math.is_finite(flat), dropped[:, None],
                                           tf.zeros_like(dropped, tf.bool))
        keeps = tf.split(keep, sizes)
        if self.round_to == 1:
            return keeps
        return [_top(score, rounded_up(tf.reduce_sum(tf.cast(k, tf.int32)), k.shape[0], self.round_to))
                for k, score in zip(keeps, normalised)]
