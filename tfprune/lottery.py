"""Iterative pruning with rewinding: the one train → prune → rewind loop, and IMP (lottery tickets) on it.

`iterative_pruning` trains a dense model, then round after round prunes the trained network with a step
``prune_fn(model, round) -> masks`` and retrains the survivors from a rewind point: where retraining starts is
what the lottery-ticket papers compare (Frankle & Carbin 2019; Renda et al. 2020). Every round gets the same
budget and data, and a killed run resumes from its directory. Methods differ only in the step: `imp` prunes
by magnitude, `tfprune.adaptive.sap` by the PQ Index.
"""
import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass

import numpy as np

from tfprune._io import atomic_write_file
from tfprune.batch_norm import recalibrate_batch_norm, statistics_layers
from tfprune._keras import (check_model, clear_session, flavor_of, is_callback, is_optimizer, is_variable, keras,
                            learning_rate_schedule, set_random_seed, tf)
from tfprune.graph import kernel_attributes, prunable_kernels
from tfprune.registry import resolve_weight
from tfprune.mask import has_wrappers, inner_layer, iter_layers, masked_layers, masks, with_masks
from tfprune.pqi import layer_pq_indices
from tfprune.validation import check_choice, check_exclude, check_finite, check_int, check_number
from tfprune.weight import smallest_to_mask

__all__ = ["RewindCheckpoint", "RewindPoint", "save_rewind_point", "load_rewind_point",
           "restore", "magnitude_masks", "load_masks", "iterative_pruning", "imp", "REWIND_MODES"]

REWIND_MODES = ("weights", "lr", "none", "init")
SCOPES = ("global", "layer")
REWIND_FILE = "rewind_point.npz"
MASKS_FILE = "masks.npz"
STATE_FILE = "state.json"
RESULT_COLUMNS = ("round", "remaining", "accuracy", "loss", "pqi_global", "steps", "checkpoint")
_FIT_KEYS = ("epochs", "batch_size", "callbacks", "verbose")
_FORMAT = 1


# -- files ------------------------------------------------------------------------------------------------
def _save_arrays(path, meta, arrays):
    """One .npz of numbered arrays plus a JSON `meta` entry (names live in meta, not in zip member names)."""
    payload = {f"a{i}": np.asarray(array) for i, array in enumerate(arrays)}
    payload["meta"] = np.array(json.dumps(dict(meta, format=_FORMAT, count=len(arrays))))
    atomic_write_file(path, lambda file: np.savez(file, **payload))


def _load_arrays(path):
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        return meta, [stored[f"a{i}"] for i in range(meta["count"])]


def _write_json(path, value):
    atomic_write_file(path, lambda file: file.write(json.dumps(value, indent=1).encode()))


# -- rewind points ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RewindPoint:
    """A training state to return to.

    Attributes:
      weights: ``{layer_name: [array, ...]}`` per unwrapped layer, in the layer's weight order (BatchNorm
        statistics included), so a point saved from a dense model restores into its masked clone and back.
      optimizer: the values of ``optimizer.variables`` (iterations first, then slots such as momentum).
      step: the global step (``optimizer.iterations``) when it was saved.
    """
    weights: dict
    optimizer: list
    step: int


def _built_optimizer(model, why):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(f"Model '{model.name}' is not compiled, but {why}. Call model.compile(optimizer=..., "
                         "loss=...) first.")
    if not is_optimizer(optimizer):
        raise TypeError(f"Model '{model.name}' uses {type(optimizer).__name__}; rewind points need a current "
                        "Keras optimizer (keras.optimizers.SGD, Adam, ...), not tf_keras' keras.optimizers.legacy.")
    # Slots are created lazily on the first step; build them now so a step-0 point holds the full state.
    optimizer.build(model.trainable_variables)
    return optimizer


def _weighted_layers(model):
    """``{unwrapped layer name: layer}`` for layers with weights; names must be unique to key a rewind point."""
    layers = {}
    for layer in iter_layers(model):
        inner = inner_layer(layer)
        if not inner.weights:
            continue
        if inner.name in layers:
            raise ValueError(f"Model '{model.name}' has two layers named '{inner.name}' (in nested models); rewind "
                             "points key weights by layer name, so give the layers distinct names.")
        layers[inner.name] = inner
    return layers


def save_rewind_point(model, directory):
    """Atomically write `model`'s weights, optimizer variables and global step to ``directory/rewind_point.npz``.

    Args:
      model: a compiled Keras model.
      directory: an existing folder.

    Returns:
      the file's path.

    Raises:
      ValueError: the model is not compiled, or two of its layers share a name.
      TypeError: a legacy optimizer (``keras.optimizers.legacy``).
    """
    check_model(model)
    optimizer = _built_optimizer(model, "a rewind point holds its optimizer state")
    layers = _weighted_layers(model)
    weights = {name: layer.get_weights() for name, layer in layers.items()}
    state = [variable.numpy() for variable in optimizer.variables]
    path = os.path.join(os.fspath(directory), REWIND_FILE)
    meta = {"step": int(optimizer.iterations.numpy()), "layers": [[name, len(v)] for name, v in weights.items()],
            "optimizer": len(state)}
    _save_arrays(path, meta, [array for values in weights.values() for array in values] + state)
    return path


def load_rewind_point(directory):
    """The rewind point that `RewindCheckpoint` (or `save_rewind_point`) stored.

    Args:
      directory: the folder holding ``rewind_point.npz``.

    Returns:
      a `RewindPoint`.

    Raises:
      FileNotFoundError: there is no rewind point in `directory`.
    """
    path = os.path.join(os.fspath(directory), REWIND_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_rewind_point: no {REWIND_FILE} in '{directory}'. Train with "
                                f"RewindCheckpoint('{directory}', step=...) in the callbacks first.")
    meta, arrays = _load_arrays(path)
    weights, start = {}, 0
    for name, count in meta["layers"]:
        weights[name] = arrays[start:start + count]
        start += count
    return RewindPoint(weights=weights, optimizer=arrays[start:start + meta["optimizer"]], step=meta["step"])


def restore(model, rewind_point, optimizer=True):
    """Load `rewind_point` into `model` in place; with ``optimizer=True`` also its optimizer state and step.

    Layers are matched by unwrapped name, so a dense point restores into a masked model; MaskedLayers then
    re-apply their masks, so pruned weights read zero. Everything is checked before anything is assigned.

    Args:
      model: the model to restore into (the architecture that saved the point).
      rewind_point: from `load_rewind_point`.
      optimizer: also restore the optimizer's variables and step (the model must be compiled).

    Returns:
      `model`.

    Raises:
      ValueError: the point's layers or weight shapes do not fit the model, or its optimizer variables do not
        fit the model's optimizer.
      TypeError: `rewind_point` is not a `RewindPoint`.
    """
    check_model(model)
    if not isinstance(rewind_point, RewindPoint):
        raise TypeError(f"restore: `rewind_point` must be a RewindPoint (from load_rewind_point(directory)), got "
                        f"{type(rewind_point).__name__}.")
    layers = _weighted_layers(model)
    missing, unknown = sorted(set(layers) - set(rewind_point.weights)), sorted(set(rewind_point.weights) - set(layers))
    if missing or unknown:
        raise ValueError(f"restore: the rewind point does not fit model '{model.name}': layers missing from the "
                         f"point {missing}, layers not in the model {unknown}. Restore into the architecture "
                         "that saved it.")
    for name, layer in layers.items():
        have, saved = [tuple(w.shape) for w in layer.weights], [v.shape for v in rewind_point.weights[name]]
        if have != saved:
            raise ValueError(f"restore: layer '{name}' has weight shapes {have}, the rewind point has {saved}.")
    if optimizer:
        target = _built_optimizer(model, "restore(..., optimizer=True) loads optimizer state (pass optimizer=False "
                                       "for weights only)")
        have, saved = [tuple(v.shape) for v in target.variables], [v.shape for v in rewind_point.optimizer]
        if have != saved:
            raise ValueError(f"restore: model '{model.name}' has {len(have)} optimizer variables {have}, the rewind "
                             f"point has {len(saved)} {saved}. Compile with the optimizer class that saved it, or "
                             "pass optimizer=False.")
    for name, layer in layers.items():
        layer.set_weights(rewind_point.weights[name])
    for layer in masked_layers(model):
        layer.apply_masks()
    if optimizer:
        target.set_weights(rewind_point.optimizer)
    return model


@keras.utils.register_keras_serializable(package="tfprune")
class RewindCheckpoint(keras.callbacks.Callback):
    """Saves a rewind point (weights, optimizer variables, global step) when training reaches it.

    Rewinding to iteration k needs the whole state of k, not only its weights: Renda et al. restore momentum
    and the step too, so the LR schedule and the optimizer continue exactly as they did.

    Args:
      directory: where ``rewind_point.npz`` goes (written to a temporary file, then renamed).
      step: save when the global step (``model.optimizer.iterations``, batches trained across fit calls)
        equals `step`; 0 saves at ``on_train_begin`` if no batch was trained yet.
      epoch: save at the end of epoch `epoch`, counted from 1 as Keras prints it; 0 means before the first
        batch (initialization). Pass exactly one of `step` and `epoch`.

    Raises:
      ValueError: neither or both of `step` and `epoch`, or a negative one.
      TypeError: `directory` is not a path.
      RuntimeError: during training, the step jumped past `step` (``steps_per_execution`` > 1).
    """

    def __init__(self, directory, step=None, epoch=None):
        super().__init__()
        if (step is None) == (epoch is None):
            raise ValueError("RewindCheckpoint: pass exactly one of `step` (global training step, e.g. step=500) "
                             f"or `epoch` (end of that epoch; 0 = initialization); got step={step!r}, "
                             f"epoch={epoch!r}.")
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"RewindCheckpoint: `directory` must be a path, got {type(directory).__name__}.")
        self.directory = os.fspath(directory)
        self.step = None if step is None else check_int(step, "step", "RewindCheckpoint")
        self.epoch = None if epoch is None else check_int(epoch, "epoch", "RewindCheckpoint")
        self._pending = False

    def _iterations(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        begin = self._iterations()
        if begin == self.step or (self.epoch == 0 and begin == 0):
            save_rewind_point(self.model, self.directory)
        # Reading the step costs a device-to-host copy, so batches only look while the step is still ahead.
        self._pending = self.step is not None and begin < self.step

    def on_train_batch_end(self, batch, logs=None):
        if not self._pending:
            return
        step = self._iterations()
        if step > self.step:
            raise RuntimeError(f"RewindCheckpoint: the global step jumped past {self.step} (now {step}), so the "
                               "rewind point was never saved. Compile with steps_per_execution=1.")
        if step == self.step:
            save_rewind_point(self.model, self.directory)
            self._pending = False

    def on_epoch_end(self, epoch, logs=None):
        if self.epoch is not None and self.epoch == epoch + 1:
            save_rewind_point(self.model, self.directory)

    def get_config(self):
        return {"directory": self.directory, "step": self.step, "epoch": self.epoch}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _learning_rate_at(optimizer, step):
    """The learning rate the optimizer uses at `step`."""
    schedule = learning_rate_schedule(optimizer)
    return float(schedule(step)) if schedule is not None else float(optimizer.learning_rate.numpy())


def _set_constant_learning_rate(optimizer, value):
    """Fix the learning rate at `value`; an optimizer built with a schedule takes only another schedule, so
    it gets a one-piece constant one of its own flavor."""
    if learning_rate_schedule(optimizer) is not None:
        constant = flavor_of(optimizer).optimizers.schedules.PiecewiseConstantDecay([0], [value, value])
        optimizer.learning_rate = constant
    else:
        optimizer.learning_rate = value


# -- masks ------------------------------------------------------------------------------------------------
def magnitude_masks(model_or_weights, fraction_of_survivors, scope="global", current_masks=None, exclude=()):
    """Masks keeping the largest-|w| `fraction_of_survivors` of the weights each current mask keeps.

    Only surviving entries are ranked, so pruned weights never return and every new mask lies inside the
    current one; ``round(fraction * survivors)`` entries are kept, counted over all tensors together
    (``scope="global"``, as IMP does) or per tensor (``scope="layer"``). A global ranking may empty a layer.

    Args:
      model_or_weights: a model (its prunable kernels, with the model's own masks as the current
        masks) or ``{(layer_name, attribute): array}``.
      fraction_of_survivors: in (0, 1]; 0.8 prunes 20% of what survives.
      scope: ``"global"`` or ``"layer"``.
      current_masks: ``{(layer_name, attribute): 0/1 array}``; a key left out means nothing pruned yet.
      exclude: names of layers left out of the ranking and of the result.

    Returns:
      ``{(layer_name, attribute): float32 0/1 array}`` for every ranked weight.

    Raises:
      ValueError: a bad argument, a mask that names no weight or has another shape, or weights holding NaN or
        inf.
    """
    owner = "magnitude_masks"
    if isinstance(model_or_weights, dict):
        weights = {key: np.asarray(value) for key, value in model_or_weights.items()}
    else:
        model = check_model(model_or_weights, "model_or_weights")
        check_finite(model, owner)
        weights = {(inner_layer(layer).name, name): resolve_weight(inner_layer(layer), name).numpy()
                   for layer in iter_layers(model) for name in prunable_kernels(inner_layer(layer))}
        if current_masks is None:
            current_masks = {key: value for key, value in masks(model).items() if key in weights}
    check_number(fraction_of_survivors, "fraction_of_survivors", owner, 0, 1, low_open=True)
    check_choice(scope, "scope", owner, SCOPES)
    excluded = check_exclude(exclude, {layer for layer, _ in weights}, owner)
    current_masks = current_masks or {}
    unknown = sorted(set(current_masks) - set(weights), key=str)
    if unknown:
        raise ValueError(f"magnitude_masks: `current_masks` has keys {unknown} that name no ranked weight; "
                         f"weights: {sorted(weights, key=str)}.")
    weights = {key: weight for key, weight in weights.items() if key[0] not in excluded}
    alive = {}
    for key, weight in weights.items():
        mask = np.asarray(current_masks.get(key, np.ones(weight.shape)))
        if mask.shape != weight.shape:
            raise ValueError(f"magnitude_masks: mask {key} has shape {mask.shape}, its weight {weight.shape}.")
        alive[key] = mask > 0
    keys = sorted(weights, key=str)
    pools = [keys] if scope == "global" else [[key] for key in keys]
    result = {}
    for pool in pools:
        scores = np.concatenate([np.abs(weights[key])[alive[key]].ravel() for key in pool])
        keep = int(round(fraction_of_survivors * scores.size))
        survivors = smallest_to_mask(scores, scores.size - keep)
        start = 0
        for key in pool:
            mask = np.zeros(weights[key].shape, dtype=np.float32)
            count = int(alive[key].sum())
            mask[alive[key]] = survivors[start:start + count]
            start += count
            result[key] = mask
    return result


def _save_masks(directory, layer_masks):
    keys = sorted(layer_masks, key=str)
    _save_arrays(os.path.join(directory, MASKS_FILE), {"keys": [list(key) for key in keys]},
                 [layer_masks[key] for key in keys])


def load_masks(checkpoint):
    """The masks of a round of `iterative_pruning`, `imp` or `sap`.

    Args:
      checkpoint: the round's ``checkpoint`` folder (a column of the rows).

    Returns:
      ``{(layer_name, attribute): 0/1 mask}``.

    Raises:
      FileNotFoundError: the folder holds no masks.
    """
    path = os.path.join(os.fspath(checkpoint), MASKS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_masks: no {MASKS_FILE} in '{checkpoint}'; pass a round's `checkpoint` "
                                "folder (a row of iterative_pruning's, imp's or sap's results).")
    meta, arrays = _load_arrays(path)
    return {tuple(key): array for key, array in zip(meta["keys"], arrays)}


# -- the loop ---------------------------------------------------------------------------------------------
_LOOP = "iterative_pruning"


def _check_xy(data, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{_LOOP}: `{name}` must be a pair (x, y) of numpy arrays, got {type(data).__name__}.")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"{_LOOP}: `{name}` needs as many labels as examples (at least one); got {len(x)} "
                         f"examples and {len(y)} labels.")
    return x, y


def _check_fit_kwargs(fit_kwargs, examples):
    if not isinstance(fit_kwargs, dict):
        raise TypeError(f"{_LOOP}: `fit_kwargs` must be a dict such as {{'epochs': 10, 'batch_size': 64}}, got "
                        f"{type(fit_kwargs).__name__}.")
    unknown = sorted(set(fit_kwargs) - set(_FIT_KEYS))
    if unknown:
        raise ValueError(f"{_LOOP}: `fit_kwargs` keys {unknown} are not supported; the loop feeds the data itself "
                         f"in a fixed order so every round can replay it from the rewind step. Use {list(_FIT_KEYS)}.")
    if "epochs" not in fit_kwargs:
        raise ValueError(f"{_LOOP}: `fit_kwargs` needs 'epochs', the length of the dense training run.")
    epochs = check_int(fit_kwargs["epochs"], "fit_kwargs['epochs']", _LOOP, 1)
    batch_size = check_int(fit_kwargs.get("batch_size", 32), "fit_kwargs['batch_size']", _LOOP, 1)
    if batch_size > examples:
        raise ValueError(f"{_LOOP}: need fit_kwargs['batch_size'] <= {examples} (the number of training examples), "
                         f"got {batch_size}.")
    callbacks = list(fit_kwargs.get("callbacks") or ())
    if not all(is_callback(callback) for callback in callbacks):
        raise TypeError(f"{_LOOP}: fit_kwargs['callbacks'] must hold Keras callbacks.")
    return epochs, batch_size, callbacks, fit_kwargs.get("verbose", 0)


def _check_rewind_step(rewind, rewind_step, total_steps):
    if rewind == "init":
        if rewind_step not in (None, 0):
            raise ValueError(f"{_LOOP}: rewind='init' rewinds to step 0; leave `rewind_step` None, got "
                             f"{rewind_step!r}.")
        return 0
    if rewind_step is None:
        if rewind == "none":
            return 0
        raise ValueError(f"{_LOOP}: rewind={rewind!r} needs `rewind_step`, the global step to rewind to (e.g. the "
                         f"end of the first epoch), in [0, {total_steps}).")
    step = check_int(rewind_step, "rewind_step", _LOOP)
    if step >= total_steps:
        raise ValueError(f"{_LOOP}: `rewind_step` must be below the dense run's {total_steps} steps (epochs x "
                         f"examples // batch_size), got {step}.")
    return step


def _fresh_model(model_fn, seed):
    """model_fn() in a cleared session, so layer names and initial weights repeat in every round and on resume."""
    clear_session()
    set_random_seed(seed)
    model = check_model(model_fn(), "model_fn()")
    if has_wrappers(model):
        raise ValueError(f"{_LOOP}: `model_fn` must build an unpruned model; the loop adds the masks itself.")
    return model


def _by_layer(keyed):
    """``{(layer, attribute): mask}`` in the form `with_masks` takes: ``{layer: {attribute: mask}}``."""
    by_layer = {}
    for (layer, attribute), mask in keyed.items():
        by_layer.setdefault(layer, {})[attribute] = mask
    return by_layer


def _prune(model, prune_fn, round_index):
    """The next round's masks: `prune_fn`'s inside `model`'s own, so a pruned weight stays pruned."""
    new = prune_fn(model, round_index)
    if not isinstance(new, dict) or not all(isinstance(value, dict) for value in new.values()):
        raise TypeError(f"{_LOOP}: `prune_fn(model, round)` must return masks as {{layer_name: {{attribute: 0/1 "
                        f"array}}}} (what tfprune.with_masks takes), got {type(new).__name__}.")
    layers = {inner_layer(layer).name: inner_layer(layer) for layer in iter_layers(model)}
    merged = masks(model)
    for name, by_attribute in new.items():
        for attribute, mask in by_attribute.items():
            mask = (np.asarray(mask) > 0).astype(np.float32)
            weight = resolve_weight(layers.get(name), attribute)
            if not is_variable(weight) or tuple(weight.shape) != mask.shape:
                have = "does not have" if weight is None else f"has as {tuple(weight.shape)}"
                raise ValueError(f"{_LOOP}: prune_fn returned a mask of shape {mask.shape} for layer '{name}' weight "
                                 f"'{attribute}', which the model {have}.")
            merged[(name, attribute)] = mask * merged.get((name, attribute), 1)
    return merged


def _trained_model(model_fn, seed, checkpoint):
    """The model a round ended with, rebuilt from its checkpoint folder: masks first, then the weights."""
    model = with_masks(_fresh_model(model_fn, seed), _by_layer(load_masks(checkpoint)))
    return restore(model, load_rewind_point(checkpoint), optimizer=False)


def _step_batches(examples, batch_size, epochs, seed):
    """Example indices of every step of the dense run, one row per step; each epoch is a seeded permutation.

    Every round replays rows[k:], so retraining sees what the dense run saw after the rewind step. Each
    epoch drops its last ``examples % batch_size`` examples (different ones each epoch) to keep steps equal.
    """
    per_epoch = examples // batch_size
    order = [np.random.default_rng([seed, epoch]).permutation(examples)[:per_epoch * batch_size]
             for epoch in range(epochs)]
    return np.concatenate(order).reshape(-1, batch_size)


def _dataset(x, y, batches):
    x, y = tf.constant(x), tf.constant(y)
    return tf.data.Dataset.from_tensor_slices(batches).map(lambda index: (tf.gather(x, index), tf.gather(y, index)))


def _evaluate(model, x, y, batch_size):
    """(loss, accuracy) from eager calls: evaluate() and predict() would trace two functions for every round."""
    outputs = tf.concat([model(x[i:i + batch_size], training=False) for i in range(0, len(x), batch_size)], 0)
    labels = y.argmax(axis=-1) if y.ndim > 1 else y
    return float(model.compute_loss(x, tf.constant(y), outputs)), float(np.mean(outputs.numpy().argmax(-1) == labels))


def _digest(*arrays):
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _write_results(directory, config, final_lr, rows):
    """Results for readers (JSON, CSV), then state.json: the commit point a resumed run starts from."""
    full = [dict(row, checkpoint=os.path.join(directory, row["checkpoint"])) for row in rows]
    _write_json(os.path.join(directory, "results.json"), full)
    text = io.StringIO()
    columns = list(RESULT_COLUMNS) + [key for key in full[0] if key not in RESULT_COLUMNS] if full else RESULT_COLUMNS
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(full)
    atomic_write_file(os.path.join(directory, "results.csv"), lambda file: file.write(text.getvalue().encode()))
    _write_json(os.path.join(directory, STATE_FILE), {"config": config, "final_lr": final_lr, "rows": rows})


def _read_state(directory, config):
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        return None, []
    with open(path) as file:
        state = json.load(file)
    changed = [f"{key}: {state['config'].get(key)!r} -> {config.get(key)!r}"
               for key in sorted(set(config) | set(state["config"])) if config.get(key) != state["config"].get(key)]
    if changed:
        raise ValueError(f"{_LOOP}: '{directory}' holds a run with different settings ({'; '.join(changed)}); "
                         "resuming would mix two experiments. Pass the same arguments, or a new `directory`.")
    return state["final_lr"], state["rows"]


def iterative_pruning(model_fn, data, compile_fn, fit_kwargs, *, directory, prune_fn, rounds=5, rewind="weights",
                      rewind_step=None, seed=0, eval_data=None, prune_config=None, measure=None, stop=None, verbose=1):
    """Train a dense model, then `rounds` times: prune with `prune_fn`, rewind, retrain. Resumes from `directory`.

    Round 0 trains the dense model for ``fit_kwargs['epochs']`` epochs (T steps) and, for the rewinding
    modes, saves the rewind point at `rewind_step` k. Each later round r rebuilds round r-1's trained model
    from its files, masks it with ``prune_fn(model, r)`` and trains T - k steps on the dense run's batches from
    step k on, starting from:

    * ``"weights"``: weights and optimizer state (momentum, step) of step k, so the schedule continues from k
      as well (momentum at pruned entries only moves weights the masks hide; they are zeroed again after
      training);
    * ``"lr"``: the trained weights with a fresh optimizer whose step is set to k, so its schedule replays
      from k (with Adam, fresh moments at a late step make the first updates small: prefer SGD);
    * ``"none"``: the trained weights, a fresh optimizer at the dense run's final learning rate, constant;
      `rewind_step` only sets the budget, T - k (default k = 0);
    * ``"init"``: weights and optimizer state of step 0, T steps (the original lottery ticket).

    Args:
      model_fn: builds the uncompiled, unpruned model (Keras 3 or tf_keras); layers need the same names on every
        call (the loop clears the Keras session before each call, so automatic names repeat).
      data: ``(x_train, y_train)`` numpy arrays; labels as integers or one-hot.
      compile_fn: ``compile_fn(model)`` compiles with the optimizer, its learning-rate schedule and the loss.
      fit_kwargs: ``epochs`` (required), ``batch_size`` (32), ``callbacks``, ``verbose`` (0). Each round is
        one ``fit`` call of one Keras epoch holding its steps.
      directory: holds the state; calling again with the same arguments resumes after the last finished
        round (a larger `rounds` continues the run; other changed settings raise).
      prune_fn: the pruning step, ``prune_fn(model, round) -> {layer_name: {attribute: 0/1 array}}`` (the
        form `tfprune.with_masks` takes). `model` is the previous round's trained model, its masks in
        `tfprune.masks(model)`; the loop keeps the new masks inside them (pruned weights never return), and
        weights left out keep theirs. It is called once on the untrained model first, so that a step that
        cannot run fails before any training.
      rounds: pruning rounds after the dense round 0.
      seed: round r runs under ``keras.utils.set_random_seed(seed + r)``; the batch order depends on seed only.
      eval_data: ``(x_test, y_test)`` for each round's accuracy and loss; None evaluates on `data`. Before
        they are computed (and the round saved), trainable batch normalizations get statistics recomputed on
        the first 512 examples of `data` (`tfprune.recalibrate_batch_norm`); training does not read them.
      prune_config: JSON settings of `prune_fn`, stored with the run, so resuming with other ones raises.
      measure: ``measure(model) -> dict`` of further JSON columns for each round's row, from its trained model
        (e.g. the latency of its shrunk copy); stored with the row, so a resumed run does not measure again.
      stop: ``stop(row) -> bool``, asked after each round (and, on resuming, of the last one): True ends the run
        there, and `rounds` is a maximum (the budget rounds of `tfprune.prune_to_budget`).
      verbose: 1 shows a progress bar over the rounds (accuracy, weights remaining, time left) and says when a
        run resumes; 0 is silent. Keras' own epoch lines follow ``fit_kwargs["verbose"]``, each round's
        preceded by its label.

    Returns:
      ``(model, rows)``: the last round's trained model (masked, uncompiled; the same whether or not the
      run was resumed) and one row per round: ``round``, ``remaining`` (fraction of all kernel weights
      unmasked), ``accuracy``, ``loss``, ``pqi_global`` (PQ Index I_{0.5,1} of all surviving kernel weights, see
      `tfprune.pqi`), ``steps`` (trained that round) and ``checkpoint`` (folder with the round's final
      ``rewind_point.npz`` and ``masks.npz``; see `load_rewind_point`, `load_masks`). The rows are also
      written to ``results.json`` and ``results.csv`` in `directory`.

    Raises:
      ValueError: a bad argument, `directory` holding a run with other settings, or a `prune_fn` result that
        names no weight of the model or has another shape.
      TypeError: a callable argument that is not callable, or a `directory` that is not a path.
    """
    if not all(callable(function) for function in (model_fn, compile_fn, prune_fn)):
        raise TypeError(f"{_LOOP}: `model_fn`, `compile_fn` and `prune_fn` must be callables: model_fn() -> model, "
                        "compile_fn(model), prune_fn(model, round) -> masks.")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{_LOOP}: `directory` must be a path for the resumable state, got "
                        f"{type(directory).__name__}.")
    directory = os.fspath(directory)
    x, y = _check_xy(data, "data")
    eval_x, eval_y = (x, y) if eval_data is None else _check_xy(eval_data, "eval_data")
    epochs, batch_size, callbacks, fit_verbose = _check_fit_kwargs(fit_kwargs, len(x))
    check_choice(rewind, "rewind", _LOOP, REWIND_MODES)
    rounds, seed = check_int(rounds, "rounds", _LOOP), check_int(seed, "seed", _LOOP)
    batches = _step_batches(len(x), batch_size, epochs, seed)
    total_steps = len(batches)
    step = _check_rewind_step(rewind, rewind_step, total_steps)

    probe = _fresh_model(model_fn, seed)
    _prune(probe, prune_fn, 1)
    kernels = {(inner_layer(layer).name, name): tuple(resolve_weight(inner_layer(layer), name).shape)
               for layer in iter_layers(probe) for name in kernel_attributes(inner_layer(layer))}
    config = json.loads(json.dumps({
        "rewind": rewind, "rewind_step": step, "seed": seed, "epochs": epochs, "batch_size": batch_size,
        "total_steps": total_steps, "data": _digest(x, y), "eval_data": _digest(eval_x, eval_y),
        "kernels": {f"{layer}/{name}": list(shape) for (layer, name), shape in sorted(kernels.items())},
        "prune": prune_config}))
    final_lr, rows = _read_state(directory, config)
    kernel_count = sum(int(np.prod(shape)) for shape in kernels.values())
    rewind_dir = os.path.join(directory, "rewind")

    stopped = stop is not None and rows and stop(rows[-1])
    todo = range(len(rows), len(rows) if stopped else rounds + 1)
    if verbose and rows and len(todo):
        print(f"{_LOOP}: resuming from round {len(rows)} of {rounds} in {directory}")
    progress = (keras.utils.Progbar(len(todo), unit_name="round", stateful_metrics=["accuracy", "remaining"])
                if verbose and len(todo) else None)
    for round_index in todo:
        if fit_verbose:  # a label for Keras' epoch lines
            print(f"round {round_index} of {rounds}")
        if round_index == 0:
            network, round_masks = _fresh_model(model_fn, seed), {}
        else:
            trained = _trained_model(model_fn, seed + round_index, os.path.join(directory, rows[-1]["checkpoint"]))
            round_masks = _prune(trained, prune_fn, round_index)
            network = with_masks(trained, _by_layer(round_masks))
        compile_fn(network)
        optimizer = _built_optimizer(network, "compile_fn(model) must compile it")
        own_callbacks = []
        if round_index == 0 and rewind in ("weights", "init"):
            own_callbacks.append(RewindCheckpoint(rewind_dir, step=step))
        elif round_index > 0 and rewind in ("weights", "init"):
            restore(network, load_rewind_point(rewind_dir))
        elif round_index > 0 and rewind == "lr":
            optimizer.iterations.assign(step)
        elif round_index > 0:
            _set_constant_learning_rate(optimizer, final_lr)
        start = 0 if round_index == 0 else step
        network.fit(_dataset(x, y, batches[start:]), epochs=1, shuffle=False, verbose=fit_verbose,
                    callbacks=callbacks + own_callbacks)
        for layer in masked_layers(network):
            layer.apply_masks()
        if round_index == 0:
            final_lr = _learning_rate_at(optimizer, total_steps - 1)
        if statistics_layers(network):  # the moving averages lag a round's training (see tfprune.batch_norm)
            recalibrate_batch_norm(network, x[:512], batch_size)
        loss, accuracy = _evaluate(network, eval_x, eval_y, batch_size)
        checkpoint = f"round_{round_index}"
        save_rewind_point(network, os.path.join(directory, checkpoint))
        _save_masks(os.path.join(directory, checkpoint), round_masks)
        pruned = sum(int(mask.size - mask.sum()) for key, mask in round_masks.items() if key in kernels)
        rows.append({"round": round_index, "remaining": (kernel_count - pruned) / kernel_count,
                     "accuracy": accuracy, "loss": loss, "pqi_global": layer_pq_indices(network)["global"],
                     "steps": total_steps - start, "checkpoint": checkpoint})
        if measure is not None:
            rows[-1].update(measure(network))
        _write_results(directory, config, final_lr, rows)
        if progress is not None:
            progress.add(1, [("accuracy", accuracy), ("remaining", rows[-1]["remaining"])])
        if stop is not None and stop(rows[-1]):
            break
    rows = [dict(row, checkpoint=os.path.join(directory, row["checkpoint"])) for row in rows[:rounds + 1]]
    return _trained_model(model_fn, seed + rows[-1]["round"], rows[-1]["checkpoint"]), rows


def imp(model_fn, data, compile_fn, fit_kwargs, *, directory, rounds=5, prune_fraction=0.2, rewind="weights",
        rewind_step=None, scope="global", exclude=(), seed=0, eval_data=None, verbose=1):
    """Iterative magnitude pruning: `iterative_pruning` whose step prunes `prune_fraction` of the surviving
    kernel weights by |w⊙m| (`magnitude_masks`).

    Ranked across layers with ``scope="global"`` (IMP's rule) or per layer with ``"layer"``; the output layer
    is pruned too unless listed in `exclude`. After `rounds` rounds about (1 - prune_fraction)**rounds of the
    kernels are left.

    Args:
      model_fn, data, compile_fn, fit_kwargs, directory, rounds, rewind, rewind_step, seed, eval_data, verbose:
        as in `iterative_pruning`.
      prune_fraction: the fraction of surviving kernel weights each round removes, in (0, 1).
      scope: ``"global"`` or ``"layer"``.
      exclude: names of layers never pruned.

    Returns:
      ``(model, rows)``, as `iterative_pruning`.

    Raises:
      as `iterative_pruning`, and ValueError for a bad `prune_fraction`, `scope` or `exclude`.
    """
    fraction = check_number(prune_fraction, "prune_fraction", "imp", 0, 1, low_open=True, high_open=True)
    exclude = sorted([exclude] if isinstance(exclude, str) else exclude)

    def prune(model, round_index):
        return _by_layer(magnitude_masks(model, 1 - fraction, scope, exclude=exclude))

    return iterative_pruning(model_fn, data, compile_fn, fit_kwargs, directory=directory, prune_fn=prune,
                             rounds=rounds, rewind=rewind, rewind_step=rewind_step, seed=seed, eval_data=eval_data,
                             prune_config={"imp": {"prune_fraction": fraction, "scope": scope, "exclude": exclude}},
                             verbose=verbose)
