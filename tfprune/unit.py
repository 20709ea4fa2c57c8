"""Gradual unit (Dense neuron) and filter (conv output channel) pruning inside `model.fit`.

Every coupled tensor of a channel group (producer kernel and bias, BatchNorm entries, consumer input
rows, residual and concatenated branches) gets a keep vector on its MaskedLayer; the channel graph
says which, so the masks here are exactly what `shrink` later removes. Criteria are pluggable callables
from `tfprune.criteria`; schedules are TFMOT's.
"""
import numpy as np

from tfprune import criteria as criteria_module
from tfprune import schedules
from tfprune._keras import check_model, keras, tf
from tfprune.graph import build_channel_graph
from tfprune.mask import MaskedLayer, iter_layers, rewrap


def _criterion_name(criterion):
    if isinstance(criterion, str):
        criteria_module.get_criterion(criterion)
        return criterion
    name = getattr(criterion, "tfprune_name", None)
    if name is None or criteria_module.get_criterion(name) is not criterion:
        raise ValueError("criterion: pass a name from tfprune.criteria.CRITERIA or a callable registered with "
                         "@tfprune.criteria.register_criterion('name'), so the pruned model can be saved.")
    return name


def prune_units(model, schedule, criterion="l2", scope="layer", round_to=1, exclude=(), seed=0):
    """A new model whose units/filters are masked, group by group, while it trains.

    Args:
      model: tf_keras Sequential or functional model (not changed).
      schedule: TFMOT `PolynomialDecay`/`ConstantSparsity`; its sparsity is the fraction of units removed.
      criterion: name in `tfprune.criteria.CRITERIA` ("l2", "l1", "bn_gamma", "taylor", "apoz",
        "mean_column_norm", "random") or a registered criterion callable.
      scope: "layer" (every group loses the same fraction) or "global" (normalised scores ranked across
        groups; a group never loses its last unit).
      round_to: kept channel counts are multiples of this (LiteRT/XNNPACK compute channels in blocks).
      exclude: layer names whose channel groups are left whole (the output layer always is).
      seed: seed for the "random" criterion.

    Train with ``callbacks=[tfprune.UpdatePruningStep(data=...)]`` (data only for taylor/apoz).
    """
    check_model(model)
    schedules.check_schedule(schedule)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}.")
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}.")
    name = _criterion_name(criterion)
    schedules.warn_if_never_reaches_target(schedule)
    graph = build_channel_graph(model, exclude=exclude)
    groups = graph.prunable_groups()
    if not groups:
        raise ValueError(f"prune_units: model '{model.name}' has no prunable channel group "
                         f"(every group reaches the output or is excluded).")
    axes = {}
    for group in groups:
        for piece in group.slices:
            axes.setdefault(piece.layer, {}).setdefault(piece.weight, set()).add(piece.axis)
    plan = {"unit": {"schedule": schedules.serialize(schedule), "criterion": name, "scope": scope,
                     "round_to": round_to, "exclude": list(exclude), "seed": seed}}
    return rewrap(model, lambda layer: {"channel_masked": {w: sorted(a) for w, a in axes[layer.name].items()},
                                        "plan": plan} if layer.name in axes else None)


class GroupTensors:
    """What criteria read: masked weights, and on demand gradients and activations on calibration data."""

    def __init__(self, model, wrappers, data=None):
        self.model = model
        self.wrappers = wrappers
        self.data = data
        self._gradients = None
        self._activations = {}

    def weight(self, piece):
        wrapper = self.wrappers[piece.layer]
        return wrapper.masked_weights()[piece.weight] if piece.weight in wrapper.masked_attributes() \
            else getattr(wrapper.layer, piece.weight).numpy()

    def _require_data(self, what):
        if self.data is None:
            raise ValueError(f"This criterion needs {what}: pass calibration data as "
                             f"tfprune.UpdatePruningStep(data=(x, y)).")

    def gradient(self, piece):
        self._require_data("gradients")
        if self._gradients is None:
            x, y = self.data
            variables = {(name, w): getattr(wrapper.layer, w) for name, wrapper in self.wrappers.items()
                         for w in wrapper.masked_attributes()}
            with tf.GradientTape() as tape:
                logits = self.model(x, training=False)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            grads = tape.gradient(loss, list(variables.values()))
            self._gradients = {key: (np.zeros(v.shape, np.float32) if g is None else g.numpy())
                               for (key, v), g in zip(variables.items(), grads)}
        return self._gradients[(piece.layer, piece.weight)]

    def activations(self, layer_name):
        self._require_data("activations")
        if layer_name not in self._activations:
            layer = self.wrappers.get(layer_name) or _find_layer(self.model, layer_name)
            probe = keras.Model(self.model.inputs, layer.output)
            self._activations[layer_name] = probe(self.data[0], training=False).numpy()
        return self._activations[layer_name]


def _find_layer(model, name):
    for layer in iter_layers(model):
        if layer.name == name:
            return layer
    raise ValueError(f"No layer named '{name}' in model '{model.name}'.")


def kept_count(size, sparsity, round_to):
    """Channels kept when `sparsity` of `size` are removed: at least one, a multiple of round_to if possible."""
    kept = max(1, size - int(round(sparsity * size)))
    if round_to > 1:
        kept = min(size, max(round_to, int(np.ceil(kept / round_to)) * round_to))
    return kept


class UnitPruner:
    """Re-scores every prunable channel group and rewrites the keep vectors of all coupled weights."""

    def __init__(self, model, wrappers, plan, data=None):
        self.model = model
        self.wrappers = wrappers
        self.schedule = schedules.deserialize(plan["schedule"])
        self.criterion = criteria_module.get_criterion(plan["criterion"])
        if plan["criterion"] == "random":
            self.criterion = criteria_module.random(plan["seed"])
        self.scope = plan["scope"]
        self.round_to = plan["round_to"]
        self.groups = build_channel_graph(model, exclude=plan["exclude"]).prunable_groups()
        self.data = data

    @classmethod
    def from_model(cls, model, layers, data=None):
        planned = [layer for layer in layers if "unit" in layer.plan]
        if not planned:
            return []
        wrappers = {layer.layer.name: layer for layer in layers}
        return [cls(model, wrappers, planned[0].plan["unit"], data)]

    def current_keep(self, group):
        piece = next(p for p in group.slices if p.role == "out")
        keep_vector = self.wrappers[piece.layer].keeps[(piece.weight, piece.axis)].numpy()
        return np.array([keep_vector[piece.indices(c)[0]] > 0 for c in range(group.size)])

    def update(self, sparsity):
        tensors = GroupTensors(self.model, self.wrappers, self.data)
        scores = []
        for group in self.groups:
            score = np.asarray(self.criterion(group, tensors), dtype=np.float64)
            score[~self.current_keep(group)] = -np.inf  # pruned channels are never revived
            scores.append(score)
        keeps = self._layer_keeps(scores, sparsity) if self.scope == "layer" else self._global_keeps(scores, sparsity)
        self._write(keeps)

    def _layer_keeps(self, scores, sparsity):
        keeps = []
        for group, score in zip(self.groups, scores):
            keep = np.zeros(group.size, dtype=bool)
            keep[np.argsort(-score, kind="stable")[:kept_count(group.size, sparsity, self.round_to)]] = True
            keeps.append(keep)
        return keeps

    def _global_keeps(self, scores, sparsity):
        normalised = [np.where(np.isfinite(s), criteria_module.normalize_scores(np.where(np.isfinite(s), s, 0)), s)
                      for s in scores]
        flat = np.concatenate(normalised)
        owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(scores)])
        remaining = np.array([len(s) for s in scores])
        to_remove = int(round(sparsity * flat.size))
        keeps = [np.ones(len(s), dtype=bool) for s in scores]
        starts = np.concatenate([[0], np.cumsum(remaining)[:-1]])
        for index in np.argsort(flat, kind="stable"):
            if to_remove == 0:
                break
            group = owner[index]
            if remaining[group] > 1:
                keeps[group][index - starts[group]] = False
                remaining[group] -= 1
                to_remove -= 1
        if self.round_to > 1:
            keeps = [self._rounded(keep, score) for keep, score in zip(keeps, normalised)]
        return keeps

    def _rounded(self, keep, score):
        kept = kept_count(len(keep), 1.0 - keep.sum() / len(keep), self.round_to)
        rounded = np.zeros(len(keep), dtype=bool)
        rounded[np.argsort(-score, kind="stable")[:kept]] = True
        return rounded

    def _write(self, keeps):
        vectors = {}
        for group, keep in zip(self.groups, keeps):
            for piece in group.slices:
                key = (piece.layer, piece.weight, piece.axis)
                variable = self.wrappers[piece.layer].keeps[(piece.weight, piece.axis)]
                current = vectors.get(key, np.ones(variable.shape[0], dtype=bool))
                vectors[key] = current & piece.expand(keep, variable.shape[0])
        for (layer, weight, axis), vector in vectors.items():
            self.wrappers[layer].keeps[(weight, axis)].assign(vector.astype(np.float32))
        for wrapper in {id(w): w for w in self.wrappers.values()}.values():
            if isinstance(wrapper, MaskedLayer) and wrapper.channel_masked:
                wrapper.apply_masks()
