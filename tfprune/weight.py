"""Gradual magnitude weight pruning: TFMOT per layer, tfprune's own ranking across layers.

`scope="layer"` hands a tf_keras model to TFMOT's `prune_low_magnitude` (one schedule per layer, so a sparsity
map becomes per-layer schedules); a Keras 3 model, which TFMOT cannot wrap, gets tfprune's own per-layer pruner
counting steps as TFMOT does. `scope="global"` ranks |w| over every prunable kernel at once, which TFMOT cannot
do. tfprune's pruners work on `MaskedLayer`s and are driven by `tfprune.UpdatePruningStep`.

Two patterns follow TFMOT's: `block_size=(4, 1)` ranks blocks of 4 consecutive inputs of one output unit by
their mean |w| (LiteRT's sparse fully-connected kernel runs that layout fast); `sparsity_m_by_n=(2, 4)` zeros
the 2 smallest of every 4 consecutive weights along the input-channel axis once, at the first training step,
on the weights the model was given (the schedule is not used, as in TFMOT). LiteRT has no M:N kernel, so M:N
masks save no CPU time there.

A mask update is one compiled TensorFlow function on the device that holds the variables: it scores,
finds the exact cut-off with a two-pass radix select on the scores' bits (no sort) and assigns the masks.
"""
import numpy as np

from tfprune import schedules
from tfprune._keras import check_model, flavor_of, keras, tf, tf_variable, tfmot
from tfprune.graph import prunable_kernels
from tfprune.registry import resolve_weight
from tfprune.mask import MaskedLayer, current_step, has_wrappers, iter_layers, rewrap, shared_plan, with_masks
from tfprune.validation import check_finite

def _prunable_names(model, exclude):
    names = [layer.name for layer in (l.layer if isinstance(l, MaskedLayer) else l for l in iter_layers(model))
             if prunable_kernels(layer)]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ValueError(f"exclude: {unknown} are not prunable layers of '{model.name}'. Prunable: {names}.")
    chosen = [name for name in names if name not in set(exclude)]
    if not chosen:
        where = f"left after exclude={list(exclude)!r}" if names else "(no Dense, Conv or Embedding layer)"
        raise ValueError(f"prune_weights: model '{model.name}' has no prunable kernel {where}; there is nothing "
                         f"to prune.")
    return chosen


def erk_sparsities(model, sparsity, layers):
    """Per-layer sparsities of the Erdős–Rényi-kernel rule (Evci et al. 2020) with `sparsity` overall.

    Density of a layer ∝ sum(kernel shape) / prod(kernel shape); layers that would exceed density 1 are
    kept dense and the rest rescaled, so the total number of kept weights matches exactly.

    Args:
      model: the model holding the layers (wrapped or not).
      sparsity: the overall fraction of the layers' kernel weights to remove.
      layers: names of the prunable layers to share it.

    Returns:
      ``{layer_name: sparsity}``, 0.0 for layers kept dense.
    """
    shapes = {}
    for layer in iter_layers(model):
        inner = layer.layer if isinstance(layer, MaskedLayer) else layer
        if inner.name in layers:
            shapes[inner.name] = tuple(resolve_weight(inner, prunable_kernels(inner)[0]).shape)
    sizes = {name: float(np.prod(shape)) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    dense = set()
    while True:
        budget = (1 - sparsity) * sum(sizes.values()) - sum(sizes[n] for n in dense)
        scale = budget / sum(raw[n] * sizes[n] for n in raw if n not in dense)
        over = {n for n in raw if n not in dense and raw[n] * scale > 1}
        if not over:
            break
        dense |= over
    return {name: 0.0 if name in dense else 1.0 - raw[name] * scale for name in raw}


def layer_targets(model, schedule, sparsity_map, layers):
    """``{layer_name: final sparsity}`` from a sparsity map: None/'uniform', 'erk' or a dict by name.

    Args:
      model: the model holding the layers.
      schedule: the pruning schedule; its final sparsity is the uniform target (and ERK's overall one).
      sparsity_map: None, ``"uniform"``, ``"erk"`` or ``{layer_name: sparsity}`` (unlisted layers get the
        schedule's).
      layers: names of the prunable layers.

    Returns:
      ``{layer_name: sparsity}`` for every name in `layers`.

    Raises:
      ValueError: a dict naming other layers or holding values outside [0, 1), or a map of another kind.
    """
    final = schedules.final_sparsity(schedule)
    if sparsity_map in (None, "uniform"):
        return {name: final for name in layers}
    if sparsity_map == "erk":
        return erk_sparsities(model, final, layers)
    if isinstance(sparsity_map, dict):
        unknown = sorted(set(sparsity_map) - set(layers))
        if unknown:
            raise ValueError(f"sparsity_map names {unknown}, which are not prunable layers. Prunable: {layers}.")
        bad = {k: v for k, v in sparsity_map.items() if not 0.0 <= v < 1.0}
        if bad:
            raise ValueError(f"sparsity_map values must be in [0, 1): {bad}.")
        return {name: float(sparsity_map.get(name, final)) for name in layers}
    raise ValueError(f"sparsity_map must be None, 'uniform', 'erk' or a dict {{layer_name: sparsity}}, "
                     f"got {sparsity_map!r}.")


def _check_patterns(model, layers, scope, sparsity_map, block_size, sparsity_m_by_n):
    """`block_size` and `sparsity_m_by_n` as tuples, checked against the scope and every chosen kernel."""
    def pair(value, name, example):
        if (not isinstance(value, (tuple, list)) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
            raise ValueError(f"prune_weights: `{name}` must be two positive integers, e.g. {example}, got {value!r}.")
        return tuple(value)

    block = pair(block_size, "block_size", "(4, 1)")
    m_by_n = None if sparsity_m_by_n is None else pair(sparsity_m_by_n, "sparsity_m_by_n", "(2, 4)")
    if m_by_n is not None and m_by_n[0] >= m_by_n[1]:
        raise ValueError(f"prune_weights: sparsity_m_by_n=(m, n) zeros m of every n weights, so m < n; got {m_by_n}.")
    pattern = "block_size" if block != (1, 1) else "sparsity_m_by_n" if m_by_n else None
    if pattern is None:
        return block, m_by_n
    if block != (1, 1) and m_by_n:
        raise ValueError("prune_weights: pass `block_size` or `sparsity_m_by_n`, not both.")
    if scope != "layer":
        raise ValueError(f"prune_weights: `{pattern}` is a per-layer pattern; use scope='layer'.")
    if m_by_n and sparsity_map is not None:
        raise ValueError("prune_weights: `sparsity_m_by_n` fixes every layer's sparsity at m/n; drop `sparsity_map`.")
    if has_wrappers(model):
        raise ValueError(f"prune_weights: `{pattern}` needs a model without pruning wrappers (masks from "
                         "prune_units or another pruning would break the pattern); pass the plain model.")
    ranks = (2,) if block != (1, 1) else (2, 4)
    for layer in iter_layers(model):
        if layer.name in layers:
            for attribute in prunable_kernels(layer):
                shape = tuple(resolve_weight(layer, attribute).shape)
                if len(shape) not in ranks:
                    raise ValueError(
                        f"prune_weights: `{pattern}` works on kernels of rank {' or '.join(map(str, ranks))} (as "
                        f"TFMOT's), but layer '{layer.name}' has {attribute} of shape {shape}; leave it out with "
                        f"exclude=[{layer.name!r}].")
    return block, m_by_n


def m_by_n_mask(weight, m, n):
    """0/1 mask zeroing the `m` smallest |w| of every `n` consecutive entries along the input-channel axis
    (second to last), the layout TFLite reads; a last, partial group counts as padded with zeros.

    Args:
      weight: a Dense kernel (in, out) or a Conv2D kernel (h, w, in, out), as an array.
      m, n: m zeros in every n.

    Returns:
      a float32 0/1 array of `weight`'s shape.
    """
    moved = np.moveaxis(np.abs(np.asarray(weight, np.float32)), -2, -1)  # (..., out, in): groups on the last axis
    inputs = moved.shape[-1]
    padded = np.concatenate([moved, np.zeros(moved.shape[:-1] + (-inputs % n,), np.float32)], axis=-1)
    groups = padded.reshape(-1, n)
    # Keep the n - m largest of each group; a stable sort keeps the earlier of equal entries, as top_k does.
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, np.float32)
    np.put_along_axis(keep, order[:, :n - m], 1.0, axis=-1)
    keep = keep.reshape(padded.shape)[..., :inputs]
    return np.ascontiguousarray(np.moveaxis(keep, -1, -2))


def prune_weights(model, schedule, scope="layer", sparsity_map=None, exclude=(), block_size=(1, 1),
                  sparsity_m_by_n=None):
    """A new model whose Dense/Conv kernels are pruned by magnitude while it trains.
    Example: ``tfprune.prune_weights(model, tfprune.PolynomialDecay(0.0, 0.8, 0, 1000), scope="global")``.

    Args:
      model: a Sequential or functional model, Keras 3 or tf_keras (not changed).
      schedule: a TFMOT `PolynomialDecay` or `ConstantSparsity` (or any `PruningSchedule`).
      scope: "layer" (every layer reaches the schedule's sparsity; TFMOT does the work) or "global"
        (one magnitude threshold across all prunable kernels; layers end up unevenly sparse).
      sparsity_map: per-layer targets for scope="layer": None/"uniform", "erk", or {layer_name: sparsity}.
      exclude: names of layers left dense.
      block_size: (rows, columns) of the blocks ranked by their mean |w| on 2-D kernels, scope="layer" only;
        (4, 1) is the block LiteRT runs fast. (1, 1) prunes single weights.
      sparsity_m_by_n: (m, n) zeros m of every n consecutive weights along the input-channel axis of rank-2
        and rank-4 kernels, once at the first training step (the schedule is not used), as TFMOT does.

    Train with ``callbacks=[tfprune.UpdatePruningStep()]``; recompile after calling (the optimizer is not
    carried over, as in TFMOT). On a model already being pruned (e.g. after `prune_units`), the schedule's
    step 0 is the model's current step.

    Returns:
      the new model, uncompiled: with TFMOT's `prune_low_magnitude` wrappers for scope="layer" on a plain
      tf_keras model, else with tfprune's `MaskedLayer`s.

    Raises:
      ValueError: an unknown scope; a sparsity_map with scope="global", naming unknown layers, holding values
        outside [0, 1) or of another kind; `exclude` names that are not prunable layers; nothing left to
        prune; weights holding NaN or inf; a nested model with scope="layer" (TFMOT); a TFMOT-wrapped model;
        a block or M:N pattern with scope="global", on an already wrapped model, or on a kernel of another rank.
      TypeError: `model` is not a Keras model, or `schedule` is not a TFMOT schedule.

    Warns:
      UserWarning: a schedule that never reaches its final sparsity, or whose sparsity falls.
    """
    check_model(model)
    schedules.check_schedule(schedule)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}.")
    if scope == "global" and sparsity_map is not None:
        raise ValueError("sparsity_map sets per-layer targets, which global ranking replaces; use "
                         "scope='layer' with a sparsity_map, or scope='global' without one.")
    layers = _prunable_names(model, exclude)
    block, m_by_n = _check_patterns(model, layers, scope, sparsity_map, block_size, sparsity_m_by_n)
    targets = layer_targets(model, schedule, sparsity_map, layers)
    check_finite(model, "prune_weights")
    if m_by_n is None:
        schedules.warn_if_never_reaches_target(schedule)

    if scope == "layer" and not has_wrappers(model) and flavor_of(model) is keras:
        # Keras 3 layers get tfprune's own per-layer pruner below.
        return _prune_with_tfmot(model, schedule, targets, block_size=block, sparsity_m_by_n=m_by_n)
    if m_by_n is not None:
        # Fixed at the first step on the weights as given (training has not moved them yet), as TFMOT does.
        return with_masks(model, {name: {attribute: m_by_n_mask(resolve_weight(layer, attribute).numpy(), *m_by_n)
                                         for attribute in prunable_kernels(layer)}
                                  for name, layer in _layers_by_name(model, layers).items()})

    config = schedules.serialize(schedule)
    final = schedules.final_sparsity(schedule)
    # TFMOT evaluates a schedule at the number of training calls made, the current one included: one ahead of
    # tfprune's step. Per-layer pruning counts as TFMOT does, so a Keras 3 model (tfprune's pruner) and its
    # tf_keras twin (TFMOT's wrapper) get the same masks at every update.
    start = current_step(model) - (1 if scope == "layer" else 0)

    def spec(layer):
        if layer.name not in targets:
            return None
        ratio = targets[layer.name] / final if final > 0 else 0.0
        plan = {"schedule": config, "scope": scope, "ratio": ratio, "start": start}
        if block != (1, 1):
            plan["block"] = list(block)
        return {"element_masked": prunable_kernels(layer), "plan": {"weight": plan}}

    return rewrap(model, spec)


def _layers_by_name(model, names):
    return {layer.name: layer for layer in iter_layers(model) if layer.name in names}


def _prune_with_tfmot(model, schedule, targets, **patterns):
    def prune(layer, pruning_schedule):
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=pruning_schedule, **patterns)

    def clone(layer):
        if isinstance(layer, keras.Model):
            raise ValueError(f"scope='layer' with a nested model ('{layer.name}') is not supported by TFMOT; "
                             f"use scope='global' or flatten the model.")
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name in targets:
            return prune(fresh, pruning_schedule=schedules.with_target(schedule, targets[layer.name])
                         if targets[layer.name] != schedules.final_sparsity(schedule) else schedule)
        return fresh

    pruned = keras.models.clone_model(model, clone_function=clone)
    by_name = {(l.layer.name if hasattr(l, "pruning_vars") else l.name): l for l in pruned.layers}
    for layer in model.layers:
        target = by_name[layer.name]
        (target.layer if hasattr(target, "pruning_vars") else target).set_weights(layer.get_weights())
    return pruned


def smallest_to_mask(scores, count):
    """0/1 mask of `scores`' shape with exactly `count` of the smallest entries set to 0 (ties by position, the
    later kept): the host-side rule one-shot methods use, and the reference the in-graph update matches.

    Args:
      scores: an array of scores.
      count: how many entries to mask.

    Returns:
      a float32 0/1 array of `scores`' shape.
    """
    flat = np.asarray(scores).reshape(-1)
    keep = np.ones(flat.size, dtype=bool)
    if count > 0:
        # O(n) partition, not a sort: one-shot methods rank millions of weights, some of them 100 times.
        threshold = np.partition(flat, count - 1)[count - 1]
        below = flat < threshold
        keep[below] = False
        keep[np.flatnonzero(flat == threshold)[:count - np.count_nonzero(below)]] = False
    return keep.astype(np.float32).reshape(np.shape(scores))


#: Radix select works on 16-bit halves of int32 keys that order like the float scores.
_HALF = 1 << 16
#: Keys at or above this one are scores of inf or NaN (their float bits' exponent is all ones).
_NON_FINITE_KEY = 0x7F800000


def sort_keys(pieces):
    """(keys, highs) for a list of float32 score tensors: flat int32 keys ordered like the scores (IEEE bits,
    with the magnitude bits of negatives flipped), and their high 16 bits as bins in [0, 2^16).

    Element-wise only: callers compile it with XLA together with the scores, one pass over memory.

    Args:
      pieces: float32 score tensors of any shapes.

    Returns:
      ``(keys, highs)``: two lists of flat int32 tensors, one of each per piece.
    """
    keys = []
    for piece in pieces:
        bits = tf.bitcast(tf.reshape(piece, [-1]), tf.int32)
        keys.append(tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, 0x7FFFFFFF), bits))
    return keys, [tf.bitwise.right_shift(key, 16) + _HALF // 2 for key in keys]


def _above(keys, threshold):
    return [tf.cast(key > threshold, tf.float32) for key in keys]


_above_compiled = tf.function(_above, jit_compile=True, autograph=False)


def masks_without_smallest(keys, highs, count):
    """(masks, non-finite): per key vector of `sort_keys`, a flat float32 0/1 mask with exactly the `count`
    smallest scores over all of them at 0 (ties by position in piece order, the later kept, like
    `smallest_to_mask`), and how many scores are inf or NaN.

    TensorFlow ops only, so it runs where the scores are. The cut-off comes from a histogram of the keys'
    high bits and one of the low bits of the keys in the cut-off's bin: a fraction of the cost of a sort.

    Args:
      keys: the keys of `sort_keys`.
      highs: their high bits, from `sort_keys`.
      count: how many scores to mask, a scalar int32 tensor.

    Returns:
      ``(masks, non_finite)``: a list of flat float32 masks, one per key vector, and a scalar int32 tensor.
    """
    def histogram(values):
        # The bin count is fixed; tf.math.bincount would first scan every value for the largest one.
        return tf.raw_ops.DenseBincount(input=values, size=_HALF, weights=tf.zeros([0], tf.int32))

    high_counts = tf.add_n([histogram(high) for high in highs])
    non_finite = tf.reduce_sum(high_counts[(_NON_FINITE_KEY >> 16) + _HALF // 2:])
    rank = tf.maximum(count, 1)  # the cut-off is the rank-th smallest key (1-based)
    cumulative = tf.cumsum(high_counts)
    high_bin = tf.searchsorted(cumulative, tf.reshape(rank, [1]))[0]
    before = tf.where(high_bin > 0, tf.gather(cumulative, tf.maximum(high_bin - 1, 0)), 0)
    low_bits = tf.concat([tf.boolean_mask(tf.bitwise.bitwise_and(key, _HALF - 1), tf.equal(high, high_bin))
                          for key, high in zip(keys, highs)], axis=0)
    low_cumulative = before + tf.cumsum(histogram(low_bits))
    low_bin = tf.searchsorted(low_cumulative, tf.reshape(rank, [1]))[0]
    below = tf.where(low_bin > 0, tf.gather(low_cumulative, tf.maximum(low_bin - 1, 0)), before)
    ties = tf.gather(low_cumulative, low_bin) - below  # keys equal to the cut-off
    cut = rank - below  # how many of them are pruned: the first ones by position
    threshold = tf.bitwise.bitwise_or(tf.bitwise.left_shift(high_bin - _HALF // 2, 16), low_bin)
    threshold = tf.where(count > 0, threshold, tf.int32.min)  # nothing to prune: every key is above

    def prune_first_ties():
        masks, seen = [], tf.constant(0, tf.int32)
        for key in keys:
            positions = tf.where(tf.equal(key, threshold))
            found = tf.shape(positions, out_type=tf.int32)[0]
            pruned = tf.clip_by_value(cut - seen, 0, found)  # this piece's share of the first `cut` ties
            masks.append(tf.tensor_scatter_nd_update(tf.cast(key > threshold, tf.float32), positions[pruned:],
                                                     tf.ones([found - pruned], tf.float32)))
            seen += found
        return masks

    masks = tf.cond(tf.logical_and(count > 0, cut < ties), prune_first_ties,
                    lambda: _above_compiled(keys, threshold))
    return masks, non_finite


class WeightPruner:
    """Updates element masks of one pool of MaskedLayers (all global layers, or one layer at a time).

    Scores are |w ⊙ m|, so pruned weights (score 0) stay pruned as sparsity grows; entries removed by
    unit pruning on the same layer score -1 (masked first) and are not counted, so the target applies to
    the surviving weights. `start` is the model step at which the plan was added (its schedule's step 0).
    A `per_layer` pool (scope="layer") counts its kept weights with TFMOT's arithmetic.

    Args:
      layers: the pool's `MaskedLayer`s, each with element-masked weights.
      schedule: the `PruningSchedule` driving them.
      ratio: the pool's target as a fraction of the schedule's sparsity (per-layer sparsity maps).
      start: the model step that is the schedule's step 0.
      per_layer: count kept weights as TFMOT does for one layer.
      block: (rows, columns) of the blocks of 2-D kernels ranked by mean |w ⊙ m| (None: single weights).
    """

    def __init__(self, layers, schedule, ratio=1.0, start=0, per_layer=False, block=None):
        self.layers = layers
        self.per_layer = per_layer
        self.schedule = schedule
        self.ratio = ratio
        self.start = start
        self.block = None if block is None or tuple(block) == (1, 1) else tuple(block)
        self._entries = [(layer, name) for layer in layers for name in layer.element_masked]
        # Per entry, how many real weights each block averages (edge blocks are partial).
        self._block_sizes = [self._pool(tf.ones(layer.masks[name].shape), tf.reduce_sum)
                             for layer, name in self._entries] if self.block else None
        # The update runs where the masks live (under a distribution strategy: where their primary copy is).
        self._device = tf_variable(self._entries[0][0].masks[self._entries[0][1]]).device
        self._size = (sum(int(tf.size(sizes)) for sizes in self._block_sizes) if self.block else
                      sum(layer.masks[name].shape.num_elements() for layer, name in self._entries))
        # Scores and their sort keys in one XLA-fused pass over the weights and masks.
        self._keys = tf.function(lambda: sort_keys(self._scores()), jit_compile=True, autograph=False)
        self._compiled = tf.function(self._update_masks, autograph=False)
        # Traced while the model is set up, not in the first training step.
        self._compiled.get_concrete_function(tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.int64))

    @classmethod
    def from_model(cls, layers):
        """Pools from the layers' plans: one for every global-scope layer, one per layer-scope layer.

        Args:
          layers: `MaskedLayer`s; those without a weight plan are left out.

        Returns:
          a list of `WeightPruner`s (empty when no layer carries a weight plan).

        Raises:
          ValueError: the global-scope layers' plans differ.
        """
        pools, global_layers = [], []
        for layer in layers:
            plan = layer.plan.get("weight")
            if plan is None:
                continue
            if plan["scope"] == "global":
                global_layers.append(layer)
            else:
                pools.append(cls([layer], schedules.deserialize(plan["schedule"]), plan["ratio"],
                                 plan.get("start", 0), per_layer=True, block=plan.get("block")))
        if global_layers:
            plan = shared_plan(global_layers, "weight")
            pools.append(cls(global_layers, schedules.deserialize(plan["schedule"]), start=plan.get("start", 0)))
        return pools

    def update(self, sparsity, step):
        """Mask the smallest |w ⊙ m| so that `sparsity` of the pool's surviving weights are zero; record `step`
        as the layers' mask step. Raises, naming the layers, when a weight is inf or NaN.

        Args:
          sparsity: the schedule's sparsity at `step` (before the pool's `ratio`).
          step: the training step.

        Raises:
          ValueError: a masked weight holds inf or NaN (the masks are unchanged).
        """
        non_finite = self._compiled(tf.constant(sparsity, tf.float64), tf.constant(step, tf.int64))
        if int(non_finite):
            bad = [f"{layer.layer.name}.{name}" for layer, name in self._entries
                   if not np.all(np.isfinite(resolve_weight(layer.layer, name).numpy()))]
            raise ValueError(f"Weight pruning cannot rank {', '.join(bad)}: they hold inf or NaN values, which "
                             f"training produced (lower the learning rate or check the loss). Masks are unchanged.")
        # No apply_masks here: the forward pass already computes with w ⊙ m, scores read w ⊙ m, and
        # UpdatePruningStep writes the zeros into the weights at each epoch end.

    def _scores(self):
        """|w ⊙ m| per masked weight; -1 where unit pruning removed an entry (ranked first, not counted)."""
        scores = []
        for layer, name in self._entries:
            score = tf.abs(resolve_weight(layer.layer, name) * layer.masks[name])
            if name in layer.channel_masked:
                score = tf.where(layer.channel_mask_tensor(name) > 0, score, -1.0)
            scores.append(score)
        if self.block:
            return [self._pool(score, tf.reduce_sum) / sizes for score, sizes in zip(scores, self._block_sizes)]
        return scores

    def _pool(self, weight, reduce):
        """`reduce` over each block of a 2-D `weight`, zero-padded at the far edges to whole blocks."""
        (rows, columns), (height, width) = self.block, weight.shape
        padded = tf.pad(weight, [[0, -height % rows], [0, -width % columns]])
        blocks = tf.reshape(padded, [-1, rows, padded.shape[1] // columns, columns])
        return reduce(blocks, axis=[1, 3])

    def _unpooled(self, mask, shape):
        """A block mask spread back over the weights of a 2-D `shape`."""
        rows, columns = self.block
        spread = tf.repeat(tf.repeat(mask, rows, axis=0), columns, axis=1)
        return spread[:shape[0], :shape[1]]

    def _update_masks(self, sparsity, step):
        with tf.device(self._device):
            # Blocks are ranked on plain models (prune_weights refuses wrapped ones), so every block is alive.
            alive = (tf.constant(self._size, tf.int64) if self.block else
                     tf.add_n([self._alive(layer, name) for layer, name in self._entries]))
            if self.per_layer:  # TFMOT's arithmetic (float32, kept count rounded), so its wrapper's masks match
                kept_alive = tf.cast(tf.round(tf.cast(alive, tf.float32) * (1.0 - tf.cast(sparsity * self.ratio,
                                                                                        tf.float32))), tf.int64)
            else:  # float64 like the host's arithmetic; tf.round rounds half to even like Python's round.
                kept_alive = alive - tf.cast(tf.round(sparsity * self.ratio * tf.cast(alive, tf.float64)), tf.int64)
            count = tf.cast(self._size - kept_alive, tf.int32)
            masks, non_finite = masks_without_smallest(*self._keys(), count)

            def assign_masks():
                for index, ((layer, name), mask) in enumerate(zip(self._entries, masks)):
                    shape = layer.masks[name].shape
                    if self.block:
                        mask = self._unpooled(tf.reshape(mask, self._block_sizes[index].shape), shape)
                    tf_variable(layer.masks[name]).assign(tf.reshape(mask, shape), read_value=False)
                    tf_variable(layer.mask_step).assign(step, read_value=False)
                return non_finite

            return tf.cond(non_finite > 0, lambda: non_finite, assign_masks)

    @staticmethod
    def _alive(layer, name):
        """Entries of weight `name` that its channel keeps leave in place: the product of the kept counts."""
        shape = resolve_weight(layer.layer, name).shape
        count = tf.constant(1, tf.int64)
        for axis, size in enumerate(shape):
            if axis in layer.channel_masked.get(name, ()):
                count *= tf.cast(tf.reduce_sum(layer.keep(name, axis)), tf.int64)
            else:
                count *= size
        return count
