"""Gradual unit (Dense neuron) and filter (conv output channel) pruning inside `model.fit`.

Every coupled tensor of a channel group (producer kernel and bias, BatchNorm entries, consumer input
rows, residual and concatenated branches) gets a keep vector on its MaskedLayer; the channel graph
says which, so the masks here are exactly what `shrink` later removes. Criteria are pluggable callables
from `tfprune.criteria`, fed by `criteria.ModelTensors` (which reads the variables, so each update first
writes the masked zeros into them); schedules are TFMOT's.
"""
import numpy as np

from tfprune import criteria as criteria_module
from tfprune import schedules
from tfprune._keras import check_model, keras, tf
from tfprune.graph import build_channel_graph, combined_keeps
from tfprune.mask import current_step, mask_writer, rewrap
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
    return criteria_module.random(seed) if name == "random" else criteria_module.get_criterion(name)


def prune_units(model, schedule, criterion="l2", scope="layer", round_to=1, exclude=(), seed=0):
    """A new model whose units/filters are masked, group by group, while it trains.

    Args:
      model: tf_keras Sequential or functional model (not changed).
      schedule: TFMOT `PolynomialDecay`/`ConstantSparsity`; its sparsity is the fraction of units removed.
        Its steps count from this call: on a model already being pruned, step 0 is the model's current step.
      criterion: name in `tfprune.criteria.CRITERIA` ("l2", "l1", "bn_gamma", "taylor", "apoz",
        "mean_column_norm", "random") or a registered criterion callable.
      scope: "layer" (every group loses the same fraction) or "global" (scores normalised by each group's
        mean, ranked across groups; a group never loses its last unit).
      round_to: kept channel counts are multiples of this (LiteRT/XNNPACK compute channels in blocks).
      exclude: layer names whose channel groups are left whole (the output layer always is).
      seed: seed for the "random" criterion.

    Raises before anything is built: unknown criterion, scope or round_to; a weight-only criterion that
    cannot score this model (e.g. "bn_gamma" without BatchNormalization); layers the channel graph cannot
    model (e.g. Lambda; the message names the layer and suggests `exclude`).

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
            keras.losses.get(model.loss)(np.asarray(y)[:1], outputs)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(f"UpdatePruningStep(data=...): the calibration data for criterion '{criterion}' does not "
                         f"fit model '{model.name}' (inputs {model.input_shape}): {str(error).splitlines()[0]} "
                         f"Pass data=(x, y) shaped like the training data.") from None


def kept_count(size, sparsity, round_to):
    """Channels kept when `sparsity` of `size` are removed: at least one, a multiple of round_to if possible."""
    return _rounded_up(max(1, size - int(round(sparsity * size))), size, round_to)


def _rounded_up(kept, size, round_to):
    return min(size, max(round_to, int(np.ceil(kept / round_to)) * round_to)) if round_to > 1 else kept


def _top(score, kept):
    """Keep the `kept` best channels, never one already pruned (score -inf), so pruning never revives."""
    keep = np.zeros(score.size, dtype=bool)
    keep[np.argsort(-score, kind="stable")[:min(kept, int(np.isfinite(score).sum()))]] = True
    return keep


def _channel_keep(piece, vector):
    """Per-channel keep of `piece`'s group read back from the keep vector of its axis (first position)."""
    return piece.channel_view(vector.reshape([1] * piece.axis + [-1]))[:, 0] > 0


class UnitPruner:
    """Re-scores every prunable channel group and rewrites the keep vectors of all coupled weights.

    Args:
      model: the model holding the MaskedLayers (read by the criterion).
      wrappers: ``{inner layer name: MaskedLayer}`` of the model.
      plan: the ``"unit"`` plan that `prune_units` stored on the wrappers.
      data: calibration ``(x, y)`` for criteria that need gradients or activations.
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
        self._apply_masks = mask_writer(wrappers.values())
        self.data = data
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

    @classmethod
    def from_model(cls, model, layers, data=None):
        planned = [layer for layer in layers if "unit" in layer.plan]
        if not planned:
            return []
        wrappers = {layer.layer.name: layer for layer in layers}
        return [cls(model, wrappers, planned[0].plan["unit"], data)]

    def _variable(self, key):
        layer, weight, axis = key
        return self.wrappers[layer].keep(weight, axis)

    def update(self, sparsity, step):
        """Score every group on the current (masked) model and shrink the keep vectors to `sparsity`; record
        `step` as the layers' mask step."""
        for wrapper in self._planned:
            wrapper.mask_step.assign(step, read_value=False)
        vectors = {key: self._variable(key).numpy() for key in self._writers}
        current = [_channel_keep(group.slices[0], vectors[(group.slices[0].layer, group.slices[0].weight,
                                                             group.slices[0].axis)]) for group in self.groups]
        # Keep vectors only shrink, so a group already at (or below) its target cannot change: skip scoring it.
        if self.scope == "layer":
            targets = [kept_count(group.size, sparsity, self.round_to) for group in self.groups]
            todo = [i for i, (keep, target) in enumerate(zip(current, targets)) if keep.sum() > target]
        else:
            removed = sum(keep.size - keep.sum() for keep in current)
            todo = list(range(len(self.groups))) if round(sparsity * sum(k.size for k in current)) > removed else []
        if not todo:
            return
        self._apply_masks()  # momentum moves masked entries off zero; criteria must read the zeros
        tensors = criteria_module.ModelTensors(self.model, *(self.data or ()))
        scores = {}
        for i in todo:
            score = criteria_module.score_group(self.criterion, self.groups[i], tensors)
            score[~current[i]] = -np.inf
            scores[i] = score
        if self.scope == "layer":
            keeps = [_top(scores[i], targets[i]) if i in scores else current[i] for i in range(len(current))]
        else:
            keeps = self._global_keeps([scores[i] for i in range(len(current))], sparsity)
        self._write(keeps, vectors)

    def _global_keeps(self, scores, sparsity):
        """Drop the globally lowest normalised scores; each group's best channel is never a candidate."""
        normalised = []
        for score in scores:
            alive = np.isfinite(score)
            scaled = np.full(score.size, -np.inf)
            scaled[alive] = criteria_module.normalize_scores(score[alive])
            normalised.append(scaled)
        flat = np.concatenate(normalised)
        owner = np.repeat(np.arange(len(scores)), [score.size for score in scores])
        order = np.argsort(flat, kind="stable")
        _, last = np.unique(owner[order][::-1], return_index=True)
        best = order[order.size - 1 - last]
        candidates = order[~np.isin(order, best)]
        keep = np.isfinite(flat)
        keep[candidates[:int(round(sparsity * flat.size))]] = False
        keeps = np.split(keep, np.cumsum([score.size for score in scores])[:-1])
        return [_top(score, _rounded_up(int(k.sum()), k.size, self.round_to)) if self.round_to > 1 else k
                for k, score in zip(keeps, normalised)]

    def _write(self, keeps, vectors):
        """Assign the keep vectors that changed (the forward pass applies them; zeros reach the variables at the
        next update and at epoch end): per step, a few small eager assigns cost less than one graph call."""
        pairs = [(piece, keeps[index]) for writers in self._writers.values() for index, piece in writers]
        combined = combined_keeps(pairs, lambda piece: vectors[(piece.layer, piece.weight, piece.axis)].shape[0])
        for key in self._writers:
            if not np.array_equal(combined[key], vectors[key] > 0):
                self._variable(key).assign(combined[key].astype(np.float32), read_value=False)
