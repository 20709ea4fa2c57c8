"""Adaptive pruning: the amount to prune is read off the weights instead of being fixed in advance.

* `sap_round` / `sap`: Sparsity-informed Adaptive Pruning (Diao et al., ICLR 2023). A group of weights whose
  PQ Index is low (magnitudes alike, nothing obviously redundant) loses little; a group already dominated by a
  few large weights loses much. `sap` runs it in `lottery.iterative_pruning`, the loop `imp` runs in.
* `PQIndexMonitor`: the PQ Index of every layer at every epoch, in `history.history` and TensorBoard.
* `DynamicPruner`: prunes while training, per layer, choosing unit or weight pruning from the spread of the
  layer's column norms and waiting until the layer's weights have settled.

All of them work on tfprune's one mask model: rounds return `with_masks` models, the callback updates the fixed
masks of a `with_masks` model in place. Masks only ever shrink.
"""
import math

import numpy as np

from tfprune._keras import TRANSPOSED_CONVOLUTIONS, check_model, kernel_kind, keras
from tfprune.graph import output_width_layers, prunable_kernels
from tfprune.registry import resolve_weight
from tfprune.callbacks import ScalarLogger
from tfprune.lottery import iterative_pruning
from tfprune.mask import inner_layer, iter_layers, masked_layers, masks, with_masks
from tfprune.pqi import check_pq, layer_pq_indices, pq_index
from tfprune.validation import check_choice, check_exclude, check_finite, check_int, check_number
from tfprune.weight import smallest_to_mask

__all__ = ["retained_bound", "sap_round", "sap", "PQIndexMonitor", "DynamicPruner"]

_SCOPES = ("layer", "global", "neuron")


# -- SAP ------------------------------------------------------------------------------------------------------

def retained_bound(weights, p=0.5, q=1.0, eta_r=0.0, mask=None):
    """SAP's estimate r of how many of the d unmasked entries of `weights` carry the group's function.

    r = d · (1 + η_r)^{−q/(q−p)} · (1 − I_{p,q})^{pq/(q−p)}. For an equal-magnitude k-sparse vector (η_r = 0)
    r = k exactly, which is why SAP reads r as the size of the part worth keeping; η_r ≥ 0 shrinks r (prunes
    more).

    Args:
      weights: an array (the group's weights).
      p, q: the PQ Index exponents, 0 < p < q.
      eta_r: η_r ≥ 0.
      mask: optional 0/1 array of `weights`' shape; masked entries are left out.

    Returns:
      r, a float in [0, d].

    Raises:
      ValueError: bad exponents, a negative `eta_r`, or a mask of another shape.
    """
    check_pq(p, q)
    check_number(eta_r, "eta_r", "retained_bound", 0)
    return _bound(_count(weights, mask), pq_index(weights, p, q, mask), p, q, eta_r)


def _bound(d, index, p, q, eta_r):
    return d * (1.0 + eta_r) ** (-q / (q - p)) * (1.0 - index) ** (p * q / (q - p))


def _count(weights, mask):
    """Number of unmasked entries (d) of an array or list of arrays."""
    if isinstance(weights, (list, tuple)):
        masks_ = [None] * len(weights) if mask is None else mask
        return sum(_count(w, m) for w, m in zip(weights, masks_))
    return int(np.size(weights) if mask is None else np.count_nonzero(np.asarray(mask) > 0))


def _sap_count(values, p, q, eta_r, gamma, beta):
    """(c, details) for one group of surviving magnitudes: c = ⌊d · min(γ(1 − r/d), β)⌋."""
    d = values.size
    if d == 0:
        return 0, {"d": 0, "pqi": 0.0, "r": 0.0}
    index = pq_index(values, p, q)
    r = _bound(d, index, p, q, eta_r)
    fraction = min(gamma * max(0.0, 1.0 - r / d), beta)
    # The epsilon keeps an exact product such as 0.3 · 10 from flooring to 2 through rounding.
    return int(math.floor(d * fraction + 1e-9)), {"d": d, "pqi": index, "r": r}


def _targets(model, exclude):
    """Entries to prune: one dict per (layer, prunable kernel) with |w|, the alive mask and the output axis."""
    check_model(model)
    check_finite(model, "sap_round")
    exclude = check_exclude(exclude, [inner_layer(layer).name for layer in iter_layers(model)
                                      if prunable_kernels(inner_layer(layer))], "sap_round")
    current = masks(model)
    entries = []
    for layer in iter_layers(model):
        inner = inner_layer(layer)
        for attribute in prunable_kernels(inner):
            if inner.name in exclude:
                continue
            weight = resolve_weight(inner, attribute).numpy()
            mask = current.get((inner.name, attribute))
            alive = np.ones(weight.shape, bool) if mask is None else np.asarray(mask) > 0
            axis = -2 if isinstance(inner, TRANSPOSED_CONVOLUTIONS) else -1
            entries.append({"layer": inner.name, "attribute": attribute, "shape": weight.shape, "axis": axis,
                            "magnitude": _columns(np.abs(weight), axis), "alive": _columns(alive, axis)})
    return entries


def _columns(array, axis):
    """`array` as (inputs, output units): one column per unit/filter."""
    moved = np.moveaxis(array, axis, -1)
    return moved.reshape(-1, moved.shape[-1]).copy()


def _uncolumns(columns, shape, axis):
    moved_shape = tuple(np.moveaxis(np.empty(shape, bool), axis, -1).shape)
    return np.moveaxis(columns.reshape(moved_shape), -1, axis)


def _groups(entries, scope):
    """(group name, [(entry, column index or None)]) for the scope's pruning groups."""
    if scope == "global":
        return [("global", [(e, None) for e in entries])]
    if scope == "layer":
        by_layer = {}
        for e in entries:
            by_layer.setdefault(e["layer"], []).append((e, None))
        return list(by_layer.items())
    return [(f"{e['layer']}/{e['attribute']}[{j}]", [(e, j)]) for e in entries
            for j in range(e["alive"].shape[1])]


def sap_round(model, p=0.5, q=1.0, eta_r=0.0, gamma=1.0, beta=0.9, scope="layer", exclude=()):
    """One SAP pruning step: a new `with_masks` model and an info dict; `model` is not changed.

    In every group (``scope="layer"``: each layer's prunable kernels; ``"global"``: all of them;
    ``"neuron"``: each output unit/filter column of each kernel) of d surviving weights, SAP computes
    I = I_{p,q}, r = `retained_bound` and prunes c = ⌊d · min(γ(1 − r/d), β)⌋ of the smallest-magnitude
    survivors. γ scales how much of the estimated redundancy goes per round; β caps the fraction so no group is
    emptied in one round. Pruned weights never come back; layers in `exclude` are left as they are.

    Args:
      model: a trained tf_keras model, masked or not (not changed).
      p, q, eta_r: as in `retained_bound`.
      gamma: γ > 0.
      beta: β in (0, 1).
      scope: ``"layer"``, ``"global"`` or ``"neuron"``.
      exclude: names of layers left as they are.

    Returns:
      ``(model, info)``; info holds ``scope``, ``pruned`` (total c), ``remaining`` (fraction of the targeted
      kernels still alive) and ``groups``: one dict per group with ``d``, ``pqi``, ``r`` and ``pruned``.

    Raises:
      ValueError: a bad argument, an unknown name in `exclude`, or weights holding NaN or inf.
    """
    new_masks, info = _sap_masks(model, p, q, eta_r, gamma, beta, scope, exclude)
    plan = {"sap": {"p": p, "q": q, "eta_r": eta_r, "gamma": gamma, "beta": beta, "scope": scope}}
    return with_masks(model, new_masks, plan=plan), info


def _sap_masks(model, p, q, eta_r, gamma, beta, scope, exclude):
    """`sap_round`'s step: ``({layer: {attribute: mask}}, info)``, the form `iterative_pruning` takes."""
    check_pq(p, q)
    check_number(eta_r, "eta_r", "sap_round", 0)
    check_number(gamma, "gamma", "sap_round", 0, low_open=True)
    check_number(beta, "beta", "sap_round", 0, 1, high_open=True)
    check_choice(scope, "scope", "sap_round", _SCOPES)
    entries = _targets(model, exclude)
    groups_info = []
    for group, slots in _groups(entries, scope):
        views = [(e["alive"], e["magnitude"]) if j is None else (e["alive"][:, j], e["magnitude"][:, j])
                 for e, j in slots]
        values = np.concatenate([magnitude[alive] for alive, magnitude in views])
        count, details = _sap_count(values, p, q, eta_r, gamma, beta)
        keep = smallest_to_mask(values, count) > 0
        start = 0
        for alive, _ in views:
            survivors = alive.copy()
            end = start + int(survivors.sum())
            alive[survivors] = keep[start:end]  # `alive` is a view: this writes the entry's new mask
            start = end
        groups_info.append({"group": group, **details, "pruned": count})
    new_masks = {}
    for e in entries:
        new_masks.setdefault(e["layer"], {})[e["attribute"]] = _uncolumns(e["alive"], e["shape"], e["axis"])
    remaining = sum(int(e["alive"].sum()) for e in entries) / sum(e["alive"].size for e in entries)
    info = {"scope": scope, "pruned": sum(g["pruned"] for g in groups_info), "remaining": remaining,
            "groups": groups_info}
    return new_masks, info


# -- SAP in the iterative loop ------------------------------------------------------------------------------

def _default_compile(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def sap(model_fn, data, compile_fn=None, fit_kwargs=None, *, directory, rounds=5, rewind="init", rewind_step=None,
        seed=0, p=0.5, q=1.0, eta_r=0.0, gamma=1.0, beta=0.9, scope="layer", exclude=(), verbose=1):
    """SAP's rounds: `lottery.iterative_pruning` with `sap_round`'s step (`p`, `q`, `eta_r`, `gamma`, `beta`,
    `scope`, `exclude`), the loop `imp` runs in, so the two compare on equal terms.

    Args:
      data: ``((x_train, y_train), (x_test, y_test))`` as `tfprune.data` returns it; accuracy and loss are
        measured on the test split.
      compile_fn: default Adam(1e-3) and sparse cross-entropy from logits.
      fit_kwargs: default ``{"epochs": 1, "batch_size": 128}``.
      rewind: default ``"init"``, the paper's rewinding to initialization.
      p, q, eta_r, gamma, beta, scope, exclude: `sap_round`'s.
      model_fn, directory, rounds, rewind_step, seed, verbose: as in `iterative_pruning`.

    Returns:
      ``(model, rows)``, as `iterative_pruning`; the files are its files.

    Raises:
      as `iterative_pruning` and `sap_round`.
    """
    try:
        train, test = data
    except (TypeError, ValueError):
        raise ValueError("sap: `data` must be ((x_train, y_train), (x_test, y_test)), e.g. tfprune.data.mnist_5k()."
                         ) from None
    step = {"p": p, "q": q, "eta_r": eta_r, "gamma": gamma, "beta": beta, "scope": scope,
            "exclude": sorted([exclude] if isinstance(exclude, str) else exclude)}
    return iterative_pruning(model_fn, train, compile_fn or _default_compile,
                             {"epochs": 1, "batch_size": 128, **(fit_kwargs or {})}, directory=directory,
                             prune_fn=lambda model, round_index: _sap_masks(model, **step)[0], rounds=rounds,
                             rewind=rewind, rewind_step=rewind_step, seed=seed, eval_data=test,
                             prune_config={"sap": step}, verbose=verbose)


# -- callbacks ------------------------------------------------------------------------------------------------

@keras.utils.register_keras_serializable(package="tfprune")
class PQIndexMonitor(ScalarLogger):
    """Adds the PQ Index of every layer's kernels (masked entries excluded) to the epoch logs.

    Keys ``pqi_global`` and ``pqi/<layer>`` land in `history.history`; with `log_dir` the same values are written
    to TensorBoard as ``pqi/global`` and ``pqi/<layer>``. A rising index shows training concentrating the
    weights, i.e. what SAP would prune more of. Put it before callbacks that read the logs (e.g. CSVLogger).

    Args:
      p, q: the PQ Index exponents, 0 < p < q.
      log_dir: a TensorBoard folder, or None for the logs only.

    Raises:
      ValueError: bad exponents.
    """

    def __init__(self, p=0.5, q=1.0, log_dir=None):
        super().__init__(log_dir)
        check_pq(p, q)
        self.p, self.q = p, q

    def on_epoch_end(self, epoch, logs=None):
        values = layer_pq_indices(self.model, self.p, self.q)
        if logs is not None:
            logs["pqi_global"] = values["global"]
            logs.update({f"pqi/{name}": value for name, value in values.items() if name != "global"})
        self.write_scalars(epoch, {f"pqi/{name}": value for name, value in values.items()})

    def get_config(self):
        return {"p": self.p, "q": self.q, "log_dir": self.log_dir}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _managed(layer):
    """Dense/Conv MaskedLayers with an element mask on `kernel` (output units on the last axis)."""
    inner = layer.layer
    return "kernel" in layer.element_masked and kernel_kind(inner) is not None


@keras.utils.register_keras_serializable(package="tfprune")
class DynamicPruner(keras.callbacks.Callback):
    """Prunes each Dense/Conv layer while training, by a rule read off its column norms.

    Use on a model whose kernels carry fixed masks: ``model = DynamicPruner.prepare(model)`` (then compile).
    Column j of a kernel is everything feeding output unit/filter j; its norm n_j = ‖(W ⊙ M)[:, j]‖₂.

    The rule. At train begin every managed layer's mean column norm m is recorded. At every check (each epoch
    end, or every `every_steps` training steps) each layer, in order:
      1. computes, over its alive units (columns with an unmasked entry), n_j, m = mean(n_j),
         cv = std(n_j) / m and trend = |m − m_prev| / m_prev, m_prev being the value recorded at the previous
         check after its pruning (so a pruning step itself is not mistaken for training drift);
      2. "capped": does nothing if one more masked entry would take its kernel sparsity past `max_sparsity`;
      3. "wait": does nothing if trend > `stable_tolerance` (its weights are still moving);
      4. "unit": if cv > `unit_cv_threshold` (a few columns dominate) and some alive unit has
         n_j < `unit_fraction_of_mean` · m, masks those whole columns, weakest first;
      5. "weight": otherwise masks ⌊`weight_step` · alive entries⌋ of the smallest |w| among survivors.
    Steps 4 and 5 stop short of `max_sparsity` and always keep one unit. m is then recomputed as m_prev.

    The guard. At every epoch end, before that epoch's check, ``logs[monitor]`` is compared with the best value
    seen: if it is more than `tolerance` (absolute) below, pruning stops for good and every managed layer gets
    back the masks it had at the last epoch end that passed the guard; revived weights get the values they had
    then. Biases are never masked.

    Args:
      every_steps: None to check at epoch ends, or a step interval.
      unit_cv_threshold, unit_fraction_of_mean, weight_step, stable_tolerance, max_sparsity: the rule's
        settings, as above.
      tolerance, monitor: the guard's settings, as above.
      exclude: layer names never pruned; None means the model's output layers (pruning output units deletes
        classes). Pass ``()`` to prune every managed layer.

    Raises:
      ValueError: a setting outside its range; at train begin, a model without masked Dense/Conv kernels (use
        `prepare`) or an unknown name in `exclude`.

    ``pruner.history`` lists one dict per layer per check (``check``, ``epoch``, ``step``, ``layer``,
    ``decision``, ``mean_norm``, ``trend``, ``cv``, ``removed``, ``sparsity``) and one ``"stop"`` dict when the
    guard fires (``monitor``, ``best``, ``restored``); ``pruner.stopped`` tells whether it fired.
    """

    def __init__(self, every_steps=None, unit_cv_threshold=0.5, unit_fraction_of_mean=0.5, weight_step=0.1,
                 stable_tolerance=0.05, tolerance=0.02, monitor="val_accuracy", max_sparsity=0.9, exclude=None):
        super().__init__()
        name = "DynamicPruner"
        if every_steps is not None:
            check_int(every_steps, "every_steps", name, 1)
        check_number(unit_cv_threshold, "unit_cv_threshold", name, 0)
        check_number(unit_fraction_of_mean, "unit_fraction_of_mean", name, 0, 1)
        check_number(weight_step, "weight_step", name, 0, 1, low_open=True, high_open=True)
        check_number(stable_tolerance, "stable_tolerance", name, 0)
        check_number(tolerance, "tolerance", name, 0)
        check_number(max_sparsity, "max_sparsity", name, 0, 1, high_open=True)
        self.every_steps, self.monitor = every_steps, monitor
        self.exclude = None if exclude is None else [exclude] if isinstance(exclude, str) else list(exclude)
        self.unit_cv_threshold, self.unit_fraction_of_mean = unit_cv_threshold, unit_fraction_of_mean
        self.weight_step, self.stable_tolerance = weight_step, stable_tolerance
        self.tolerance, self.max_sparsity = tolerance, max_sparsity
        self.history, self.stopped = [], False

    @staticmethod
    def prepare(model):
        """A copy of `model` whose Dense/Conv kernels carry all-ones fixed masks, ready for this callback.

        Args:
          model: a model of either flavor (not changed).

        Returns:
          the masked copy, uncompiled.
        """
        check_model(model)
        ones = {}
        for layer in iter_layers(model):
            inner = inner_layer(layer)
            if kernel_kind(inner) is not None:
                ones[inner.name] = {"kernel": np.ones(inner.kernel.shape, np.float32)}
        return with_masks(model, ones)

    # -- keras hooks -------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        layers = [layer for layer in masked_layers(self.model) if _managed(layer)]
        if not layers:
            raise ValueError("DynamicPruner: the model has no Dense/Conv kernels with fixed masks. Pass "
                             "`DynamicPruner.prepare(model)` (and compile it) instead of the plain model.")
        if self.exclude is None:
            exclude = output_width_layers(self.model)
        else:
            exclude = set(self.exclude)
            unknown = sorted(exclude - {layer.layer.name for layer in layers})
            if unknown:
                raise ValueError(f"DynamicPruner: `exclude` names {unknown}, which are not masked Dense/Conv "
                                 f"layers of the model. Masked: {[layer.layer.name for layer in layers]}.")
        self._layers = [layer for layer in layers if layer.layer.name not in exclude]
        self._previous = {layer.layer.name: self._column_stats(layer)[1] for layer in self._layers}
        self._best, self._checks, self._step, self._epoch = -math.inf, 0, 0, 0
        self._good = self._state()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_steps is not None and self._step % self.every_steps == 0:
            self.check()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch
        if self.stopped:
            return
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"DynamicPruner: `monitor`={self.monitor!r} is not in the epoch logs "
                             f"{sorted(logs or {})}; pass validation_data to fit or choose an existing key.")
        if value < self._best - self.tolerance:
            self._stop(float(value))
            return
        self._best = max(self._best, float(value))
        self._good = self._state()
        if self.every_steps is None:
            self.check()

    # -- the rule ----------------------------------------------------------------------------------------
    def check(self):
        """Run one check of the rule on every managed layer (the hooks call this; usable in custom loops)."""
        if self.stopped:
            return
        self._checks += 1
        for layer in self._layers:
            self.history.append(self._check_layer(layer))

    @staticmethod
    def _column_stats(layer):
        """(alive mask as columns, mean norm, column norms of alive units, alive unit flags)."""
        mask = layer.mask_tensor("kernel").numpy()
        kernel = layer.layer.kernel.numpy() * mask
        columns, alive = _columns(kernel, -1), _columns(mask > 0, -1)
        norms = np.sqrt(np.sum(columns ** 2, axis=0))
        units = alive.any(axis=0)
        mean = float(norms[units].mean()) if units.any() else 0.0
        return alive, mean, norms, units

    def _check_layer(self, layer):
        name = layer.layer.name
        alive, mean, norms, units = self._column_stats(layer)
        previous = self._previous[name]
        trend = abs(mean - previous) / previous if previous > 0 else (0.0 if mean == 0 else math.inf)
        cv = float(norms[units].std() / mean) if mean > 0 else 0.0
        # Entries that may still go before the kernel's sparsity would pass max_sparsity.
        budget = int(alive.sum()) - int(math.ceil(alive.size * (1.0 - self.max_sparsity) - 1e-9))
        removed = 0
        if budget <= 0:
            decision = "capped"
        elif trend > self.stable_tolerance:
            decision = "wait"
        else:
            weak = np.flatnonzero(units & (norms < self.unit_fraction_of_mean * mean))
            if cv > self.unit_cv_threshold and weak.size:
                decision = "unit"
                for j in weak[np.argsort(norms[weak])][:int(units.sum()) - 1]:
                    if alive[:, j].sum() > budget - removed:
                        break
                    removed += int(alive[:, j].sum())
                    alive[:, j] = False
            else:
                decision = "weight"
                survivors = _columns(np.abs(layer.layer.kernel.numpy()), -1)[alive]
                count = min(int(math.floor(self.weight_step * survivors.size + 1e-9)), budget)
                keep = smallest_to_mask(survivors, count) > 0
                alive[alive] = keep
                removed = count
            if removed:
                element = layer.masks["kernel"].numpy()
                layer.masks["kernel"].assign(element * _uncolumns(alive, element.shape, -1))
                layer.apply_masks()
        self._previous[name] = self._column_stats(layer)[1]
        return {"check": self._checks, "epoch": self._epoch, "step": self._step, "layer": name,
                "decision": decision, "mean_norm": mean, "trend": trend, "cv": cv, "removed": removed,
                "sparsity": 1.0 - float(np.mean(layer.mask_tensor("kernel").numpy() > 0))}

    # -- the guard ---------------------------------------------------------------------------------------
    def _state(self):
        return {layer.layer.name: (layer.masks["kernel"].numpy(), layer.layer.kernel.numpy())
                for layer in self._layers}

    def _stop(self, value):
        restored = 0
        for layer in self._layers:
            mask, kernel = self._good[layer.layer.name]
            revived = (mask > 0) & (layer.masks["kernel"].numpy() == 0)
            restored += int(revived.sum())
            layer.layer.kernel.assign(np.where(revived, kernel, layer.layer.kernel.numpy()))
            layer.masks["kernel"].assign(mask)
            layer.apply_masks()
        self.stopped = True
        self.history.append({"check": self._checks, "epoch": self._epoch, "step": self._step, "layer": None,
                             "decision": "stop", "monitor": value, "best": self._best, "restored": restored})

    def get_config(self):
        return {"every_steps": self.every_steps, "unit_cv_threshold": self.unit_cv_threshold,
                "unit_fraction_of_mean": self.unit_fraction_of_mean, "weight_step": self.weight_step,
                "stable_tolerance": self.stable_tolerance, "tolerance": self.tolerance, "monitor": self.monitor,
                "max_sparsity": self.max_sparsity, "exclude": self.exclude}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
