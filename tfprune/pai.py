"""Pruning at initialization (PaI): score every prunable kernel before training, keep the best, train the rest.

Scorers (the set compared by Tanaka et al. 2020): ``random``, ``magnitude``, ``snip``, ``grasp``, ``grasp_abs``
and ``synflow``. Every score follows one convention: **higher means keep, the lowest are pruned**. For GraSP
that means the signed score θ⊙Hg is pruned from its most negative end, which is the GraSP paper's rule
(prune the largest −θ⊙Hg). Entries that are already masked score ``-inf`` and are never revived.

`prune_at_init` turns scores into fixed masks (`tfprune.with_masks`), in one shot or over several rounds, with
the sanity-check ablations of Frankle et al. 2020 (layerwise shuffle, reinitialisation, inversion).
Sweeps that train the pruned networks are `tfprune.study.Study` cells ``pai_<scorer>[_<ablation>]``, e.g. the
``pai-mnist`` preset.
"""
import numbers
import time
import warnings

import numpy as np

from tfprune._keras import check_model, flavor_of, is_model, keras, tf
from tfprune.graph import prunable_kernels
from tfprune.registry import resolve_weight
from tfprune.mask import inner_layer, iter_layers, masks, strip, with_masks
from tfprune.validation import check_finite
from tfprune.weight import smallest_to_mask

__all__ = ["METHODS", "ABLATIONS", "score", "prune_at_init"]

METHODS = ("random", "magnitude", "snip", "grasp", "grasp_abs", "synflow")
ABLATIONS = (None, "shuffle", "reinit", "invert")
_DATA_METHODS = ("snip", "grasp", "grasp_abs")
_SCHEDULES = ("exponential", "linear")
_SCOPES = ("global", "layer")


def score(model, method, data=None, loss=None, batches=1, temperature=200.0, train_mode=False, seed=0,
          exclude=(), batch_size=256):
    """Importance of every prunable kernel entry of `model`; the lowest scores are the ones to prune.

    Args:
      model: a built tf_keras model; MaskedLayer wrappers are honoured (masked entries score ``-inf``).
      method: one of `METHODS`.
        ``random``: i.i.d. N(0, 1) draws from `seed`. ``magnitude``: |θ|.
        ``snip``: |θ ⊙ ∂L/∂θ|, the gradient summed over `batches` batches before the absolute value.
        ``grasp``: θ ⊙ Hg with g = ∂L/∂θ held constant and Hg = ∂(g·∂L/∂θ)/∂θ, L computed on
        logits / `temperature`. Signed: the most negative scores are pruned first.
        ``grasp_abs``: |θ ⊙ Hg|.
        ``synflow``: data-free. On a float64 copy in which every parameter and buffer (biases and BatchNorm
        statistics included) is replaced by its absolute value, R = sum of the outputs for an all-ones input
        of batch 1 in inference mode; score |θ ⊙ ∂R/∂θ|. float64 keeps deep products from underflowing to
        tied zeros. The caller's weights are never written.
      data: (x, y) arrays (cut into batches of `batch_size`) or a batched tf.data.Dataset of (x, y); SNIP and
        GraSP read its first `batches` batches in order.
      loss: ``loss(y_true, logits)``; default cross-entropy from logits (sparse or one-hot labels).
      train_mode: run SNIP/GraSP forwards with ``training=True`` (BatchNorm on batch statistics). The default
        False scores the network as it would answer at initialization (moving statistics, no dropout).
      exclude: layer names left unscored (and unpruned); the output layer is scored unless listed here.
      batches: how many batches of `data` SNIP and GraSP read.
      temperature: GraSP's logit temperature.
      seed: the random scores' seed.
      batch_size: examples per batch when `data` is arrays.

    Returns:
      ``{layer_name: float64 array shaped like the kernel}``; a layer with several kernels (SeparableConv)
      maps to ``{attribute: array}``, the same layout `tfprune.with_masks` takes.

    Raises:
      ValueError: an unknown method, a data-driven method without `data` or with data that do not fit the
        model, an unknown name in `exclude`, or weights holding NaN or inf.
    """
    check_model(model)
    check_finite(model, "score")
    targets = _targets(model, exclude)
    scorer = _Scorer(model, method, targets, data=data, loss=loss, batches=batches, batch_size=batch_size,
                     temperature=temperature, train_mode=train_mode, seed=seed)
    return _by_layer(targets, scorer(scorer.start_masks))


def prune_at_init(model, method, sparsity, data=None, rounds=None, schedule="exponential", scope="global",
                  ablation=None, seed=0, exclude=(), return_info=False, verbose=1, **score_kwargs):
    """A new model whose scored kernels carry fixed masks leaving ``1 - sparsity`` of their entries.

    Exactly ``round(sparsity × total)`` entries are pruned, `total` counting the scored kernels of all layers
    (``scope="global"``) or of each layer on its own (``scope="layer"``). With ``rounds = n > 1`` round r keeps
    density d^(r/n) (``schedule="exponential"``) or 1 − (1 − d)·r/n (``"linear"``), d = 1 − sparsity, and
    re-scores the masked network each round; only survivors compete, so nothing pruned comes back.
    `rounds` defaults to 100 for SynFlow (Tanaka et al.'s setting: one shot can collapse whole layers) and 1
    otherwise. A model that already has masks starts from them. Ties at the threshold are broken arbitrarily
    but deterministically, so the count is always exact.

    Ablations (Frankle et al. 2020), for checking what a method's masks carry:
      ``"shuffle"``: each layer's final mask is randomly permuted within the layer (same count per layer; any
      position may be drawn, including ones a starting mask had pruned).
      ``"reinit"``: same masks, on an unwrapped copy of the architecture with weights freshly drawn from its
      initializers (seeded from `seed`).
      ``"invert"``: every round prunes the highest scores instead (the ranking is negated, GraSP included).

    A layer left with no weights at all (layer collapse) is named in a warning and in the info. With more than
    one round, ``verbose=1`` shows a progress bar over the rounds (time left included); 0 is silent.
    Example: ``tfprune.prune_at_init(tfprune.models.lenet5(), "synflow", sparsity=0.99)``.

    Args:
      model: a built, untrained tf_keras model (not changed).
      method: a scorer of `METHODS` (see `score`).
      sparsity: the fraction in [0, 1) of the scored entries to prune.
      data: the scorer's data (see `score`).
      rounds, schedule, scope, ablation: as above; `ablation` one of `ABLATIONS`.
      seed: seeds the scores, shuffles and fresh weights.
      exclude: layer names left unpruned.
      return_info: also return the info dict.
      verbose: 1 shows a progress bar over several rounds, 0 is silent.
      **score_kwargs: for the scorer: ``loss``, ``batches``, ``batch_size``, ``temperature``, ``train_mode``.

    Returns:
      the masked model, or ``(model, info)`` with ``return_info=True``; `info` holds the settings,
      ``achieved_sparsity``, ``layer_density``, ``collapsed_layers`` and ``seconds`` per phase.

    Raises:
      ValueError: a bad argument, or as `score`.

    Warns:
      UserWarning: a layer lost all its weights (layer collapse).
    """
    check_model(model)
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"prune_at_init: `sparsity` must be a fraction in [0, 1), got {sparsity!r}; "
                         f"for a compression ratio c pass sparsity = 1 - 1/c.")
    if rounds is None:
        rounds = 100 if method == "synflow" else 1
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"prune_at_init: `rounds` must be an integer >= 1, got {rounds!r}.")
    _check_choice("schedule", schedule, _SCHEDULES)
    _check_choice("scope", scope, _SCOPES)
    _check_choice("ablation", ablation, ABLATIONS)
    check_finite(model, "prune_at_init")
    targets = _targets(model, exclude)

    started = time.perf_counter()
    scorer = _Scorer(model, method, targets, data=data, seed=seed, **score_kwargs)
    seconds = {"setup": time.perf_counter() - started, "scoring": 0.0, "selection": 0.0}
    current = scorer.start_masks
    density = 1.0 - float(sparsity)
    progress = keras.utils.Progbar(rounds, unit_name="round") if verbose and rounds > 1 else None
    for r in range(1, rounds + 1):
        round_density = density ** (r / rounds) if schedule == "exponential" else 1.0 - (1.0 - density) * r / rounds
        started = time.perf_counter()
        scores = scorer(current)
        seconds["scoring"] += time.perf_counter() - started
        started = time.perf_counter()
        if ablation == "invert":
            scores = [-s for s in scores]
        current = _keep_highest(scores, current, round_density, scope)
        seconds["selection"] += time.perf_counter() - started
        if progress is not None:
            progress.add(1)

    started = time.perf_counter()
    if ablation == "shuffle":
        rng = np.random.default_rng(seed)
        current = [rng.permutation(m.ravel()).reshape(m.shape) for m in current]
    base = _reinitialized(model, seed) if ablation == "reinit" else model
    pruned = with_masks(base, _by_layer(targets, current), plan={"pai": {"method": method, "ablation": ablation}})
    seconds["masking"] = time.perf_counter() - started

    info = _info(targets, current, method=method, sparsity=float(sparsity), rounds=rounds, schedule=schedule,
                 scope=scope, ablation=ablation, seed=seed)
    info["seconds"] = seconds
    if info["collapsed_layers"]:
        warnings.warn(
            f"prune_at_init({method!r}, sparsity={sparsity}): layer collapse, no weights left in "
            f"{info['collapsed_layers']}, so no signal passes through them. Lower `sparsity`, use "
            f"scope='layer', or use synflow with more `rounds`.", UserWarning, stacklevel=2)
    return (pruned, info) if return_info else pruned


# -- scoring ------------------------------------------------------------------------------------------------

class _Scorer:
    """Scores one model again and again under shrinking masks, on a private copy of the network.

    The copy (wrappers stripped; float64 with absolute values for SynFlow) is built once, so 100 SynFlow rounds
    cost 100 gradient passes rather than 100 clones, and the caller's variables are never written.
    """

    def __init__(self, model, method, targets, data=None, loss=None, batches=1, batch_size=256,
                 temperature=200.0, train_mode=False, seed=0):
        _check_choice("method", method, METHODS)
        self.method, self.seed, self.train_mode = method, seed, bool(train_mode)
        existing = masks(model)
        network = strip(model)
        if method == "synflow":
            network = _synflow_network(network)
            self._inputs = _all_ones_inputs(network)
            self._synflow_step = tf.function(self._synflow_gradients)  # traced once: ~1/3 faster per round
        elif method in _DATA_METHODS:
            if not temperature > 0:
                raise ValueError(f"score: `temperature` must be > 0, got {temperature!r}.")
            self.temperature = float(temperature) if method != "snip" else 1.0
            self.batches = _batches(data, batches, batch_size, method)
            self.loss = _loss_fn(loss, network, method)
        layers = {inner_layer(layer).name: layer for layer in iter_layers(network)}
        self.network = network
        self.variables = [resolve_weight(layers[name], attribute) for name, attribute in targets]
        self.weights = [variable.numpy() for variable in self.variables]
        self.names = [name for name, _ in targets]
        self.start_masks = [np.asarray(existing.get(target, np.ones(w.shape)), dtype=np.float32)
                            for target, w in zip(targets, self.weights)]

    def __call__(self, current):
        """Scores (float64, ``-inf`` where `current` masks) for the network masked by `current`."""
        thetas = [w * m for w, m in zip(self.weights, current)]
        if self.method == "random":
            rng = np.random.default_rng(self.seed)
            raw = [rng.standard_normal(w.shape) for w in self.weights]
        elif self.method == "magnitude":
            raw = [np.abs(t) for t in thetas]
        else:
            for variable, theta in zip(self.variables, thetas):
                variable.assign(theta)  # the copy computes with the surviving weights only
            if self.method == "synflow":
                raw = [np.abs(t * g.numpy()) for t, g in zip(thetas, self._synflow_step())]
            elif self.method == "snip":
                raw = [np.abs(t * g) for t, g in zip(thetas, self._loss_gradients())]
            else:
                products = [t * hg for t, hg in zip(thetas, self._hessian_gradient(current))]
                raw = products if self.method == "grasp" else [np.abs(p) for p in products]
        scores = []
        for name, values, mask in zip(self.names, raw, current):
            values = np.asarray(values, dtype=np.float64)
            if np.isnan(values).any():
                raise FloatingPointError(
                    f"score: method {self.method!r} gave NaN scores for layer '{name}'. Check `data` for NaNs; "
                    f"for GraSP try a larger `temperature`.")
            scores.append(np.where(mask > 0, values, -np.inf))
        return scores

    def _batch_loss(self, x, y):
        logits = self.network(x, training=self.train_mode)
        return self.loss(y, logits / tf.cast(self.temperature, logits.dtype))

    def _loss_gradients(self):
        """∂L/∂θ summed over the scoring batches."""
        total = [np.zeros(w.shape, np.float64) for w in self.weights]
        for x, y in self.batches:
            with tf.GradientTape() as tape:
                loss = self._batch_loss(x, y)
            grads = tape.gradient(loss, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            total = [t + tf.convert_to_tensor(g).numpy() for t, g in zip(total, grads)]
        return total

    def _hessian_gradient(self, current):
        """Hg with g = ∂L/∂θ held constant (restricted to survivors, as in the masked network)."""
        g = [tf.constant(grad * mask, dtype=variable.dtype)
             for grad, mask, variable in zip(self._loss_gradients(), current, self.variables)]
        total = [np.zeros(w.shape, np.float64) for w in self.weights]
        for x, y in self.batches:
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = self._batch_loss(x, y)
                grads = inner.gradient(loss, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                z = tf.add_n([tf.reduce_sum(gi * tf.convert_to_tensor(gr)) for gi, gr in zip(g, grads)])
            hg = outer.gradient(z, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            total = [t + tf.convert_to_tensor(h).numpy() for t, h in zip(total, hg)]
        return total

    def _synflow_gradients(self):
        """∂R/∂θ, R = sum of the outputs for the all-ones input."""
        with tf.GradientTape() as tape:
            outputs = self.network(self._inputs, training=False)
            r = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64)) for o in tf.nest.flatten(outputs)])
        grads = tape.gradient(r, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [tf.convert_to_tensor(g) for g in grads]


def _check_choice(argument, value, choices):
    if value not in choices:
        raise ValueError(f"`{argument}` must be one of {list(choices)}, got {value!r}.")


def _targets(model, exclude):
    """``(layer_name, attribute)`` of every scored kernel, in model order."""
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    layers = [inner_layer(layer) for layer in iter_layers(model)]
    names = [layer.name for layer in layers]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ValueError(f"`exclude` names layers that '{model.name}' does not have: {unknown}. Layers: {names}.")
    targets = [(layer.name, attribute) for layer in layers if layer.name not in exclude
               for attribute in prunable_kernels(layer)]
    if not targets:
        raise ValueError(f"Model '{model.name}' has no kernel left to score (is it built? are all its layers in "
                         f"`exclude`?). Build it with keras.Input(...) or call it once first.")
    return targets


def _by_layer(targets, arrays):
    """Per-target arrays in the layout `with_masks` takes: one array per layer, a dict for multi-kernel ones."""
    grouped = {}
    for (name, attribute), array in zip(targets, arrays):
        grouped.setdefault(name, {})[attribute] = array
    return {name: next(iter(d.values())) if len(d) == 1 else d for name, d in grouped.items()}


def _batches(data, batches, batch_size, method):
    """The first `batches` (x, y) batches of `data`."""
    if isinstance(batches, bool) or not isinstance(batches, numbers.Integral) or batches < 1:
        raise ValueError(f"score: `batches` must be an integer >= 1, got {batches!r}.")
    if data is None:
        raise ValueError(f"score: method {method!r} needs `data`: (x, y) arrays or a batched tf.data.Dataset "
                         f"yielding (x, y).")
    if isinstance(data, tf.data.Dataset):
        items = [(element[0], element[1]) for element in data.take(batches)]
        size = "its batches"
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"score: `batch_size` must be an integer >= 1, got {batch_size!r}.")
        items = [(tf.nest.map_structure(lambda a: a[i:i + batch_size], x), y[i:i + batch_size])
                 for i in range(0, len(y), batch_size)][:batches]
        size = f"batch_size={batch_size}"
    else:
        raise TypeError(f"score: `data` must be (x, y) arrays or a tf.data.Dataset of (x, y), got "
                        f"{type(data).__name__}.")
    if len(items) < batches:
        raise ValueError(f"score: `batches`={batches} but `data` holds only {len(items)} batch(es) of {size}; "
                         f"pass more data or a smaller `batches`.")
    return items


def _loss_fn(loss, network, method):
    """Mean loss on logits: the user's, or cross-entropy (sparse or one-hot labels)."""
    if loss is not None:
        if not callable(loss):
            raise TypeError(f"score: `loss` must be a callable loss(y_true, logits), got {type(loss).__name__}.")
        return lambda y, logits: tf.reduce_mean(loss(y, logits))
    output = inner_layer(network.layers[-1])
    flavor = flavor_of(output)
    if getattr(output, "activation", None) is flavor.activations.softmax or isinstance(output, flavor.layers.Softmax):
        raise ValueError(f"score: method {method!r} needs logits, but output layer '{output.name}' applies softmax. "
                         f"Build the model without the final softmax (train with from_logits=True), or pass `loss`.")

    def cross_entropy(y, logits):
        if len(np.shape(y)) == len(logits.shape):
            return tf.reduce_mean(keras.losses.categorical_crossentropy(y, logits, from_logits=True))
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    return cross_entropy


def _clone_layers(model, config_fn):
    """A structural copy of an unwrapped `model` (nested models included) whose layer configs pass `config_fn`."""
    def clone(layer):
        if is_model(layer):
            return _clone_layers(layer, config_fn)
        return layer.__class__.from_config(config_fn(layer.get_config()))
    return flavor_of(model).models.clone_model(model, clone_function=clone)


def _synflow_network(plain):
    """A float64 copy of `plain` with every weight (parameters and buffers) replaced by its absolute value."""
    network = _clone_layers(plain, lambda config: {**config, "dtype": "float64"})
    network.set_weights([np.abs(w).astype(np.float64) if np.issubdtype(w.dtype, np.floating) else w
                         for w in plain.get_weights()])
    return network


def _all_ones_inputs(network):
    ones = []
    for tensor in network.inputs:
        shape = tuple(tensor.shape[1:])
        if None in shape:
            raise ValueError(f"score: synflow feeds an all-ones input, but input '{tensor.name}' has shape {shape}. "
                             f"Build the model with a fixed input shape, e.g. keras.Input(shape=(28, 28, 1)).")
        ones.append(tf.ones((1,) + shape, dtype=tensor.dtype))
    return ones if len(ones) > 1 else ones[0]


# -- masks --------------------------------------------------------------------------------------------------

def _keep_highest(scores, current, density, scope):
    """New masks keeping the highest-scored survivors so that `density` of the entries remain.

    Only current survivors compete, so a pruned weight never comes back, whatever its score.
    """
    groups = [range(len(scores))] if scope == "global" else [[i] for i in range(len(scores))]
    new = [m.copy() for m in current]
    for group in groups:
        flat_scores = np.concatenate([scores[i].ravel() for i in group])
        flat_mask = np.concatenate([current[i].ravel() for i in group])
        alive = np.flatnonzero(flat_mask > 0)
        prune = int(round((1.0 - density) * flat_scores.size)) - (flat_scores.size - alive.size)
        if prune <= 0:
            continue
        flat_mask[alive] = smallest_to_mask(flat_scores[alive], prune)
        offset = 0
        for i in group:
            new[i] = flat_mask[offset:offset + new[i].size].reshape(new[i].shape)
            offset += new[i].size
    return new


def _reinitialized(model, seed):
    """An unwrapped copy of `model` with weights freshly drawn from each layer's initializers (seeded anew)."""
    rng = np.random.default_rng(seed)
    initializers = flavor_of(model).initializers

    def reseed(config):
        config = dict(config)
        for key, value in config.items():
            if key.endswith("_initializer") and value is not None:
                initializer = initializers.get(value)
                settings = initializer.get_config()
                if "seed" in settings:
                    settings["seed"] = int(rng.integers(2 ** 31 - 1))
                config[key] = initializer.__class__.from_config(settings)
        return config

    return _clone_layers(strip(model), reseed)


def _info(targets, current, **settings):
    kept, sizes = {}, {}
    for (name, _), mask in zip(targets, current):
        kept[name] = kept.get(name, 0) + int(mask.sum())
        sizes[name] = sizes.get(name, 0) + mask.size
    collapsed = list(dict.fromkeys(name for (name, _), mask in zip(targets, current) if not mask.any()))
    return dict(settings, achieved_sparsity=1.0 - sum(kept.values()) / sum(sizes.values()),
                layer_density={name: kept[name] / sizes[name] for name in kept}, collapsed_layers=collapsed)
