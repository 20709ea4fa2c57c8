"""Gradual magnitude weight pruning: TFMOT per layer, tfprune's own ranking across layers.

`scope="layer"` hands the model to TFMOT's `prune_low_magnitude` (one schedule per layer, so a sparsity
map becomes per-layer schedules). `scope="global"` ranks |w| over every prunable kernel at once, which
TFMOT cannot do; it uses tfprune's `MaskedLayer` and is driven by `tfprune.UpdatePruningStep`.
"""
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from tfprune import schedules
from tfprune._keras import check_model, keras, tf, tfmot
from tfprune.mask import MaskedLayer, current_step, has_wrappers, iter_layers, kernel_attributes, rewrap

#: Layer types whose kernels are pruned (TFMOT's registry minus recurrent and attention layers).
PRUNABLE_TYPES = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                  keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose, keras.layers.SeparableConv1D,
                  keras.layers.SeparableConv2D, keras.layers.Embedding)


def prunable_kernels(layer):
    """Kernel attributes weight pruning masks on `layer` (TFMOT's rule: pointwise only for separable)."""
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return ["pointwise_kernel"]
    if isinstance(layer, PRUNABLE_TYPES) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel_attributes(layer)
    return []


def _prunable_names(model, exclude):
    names = [layer.name for layer in (l.layer if isinstance(l, MaskedLayer) else l for l in iter_layers(model))
             if prunable_kernels(layer)]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ValueError(f"exclude: {unknown} are not prunable layers of '{model.name}'. Prunable: {names}.")
    return [name for name in names if name not in set(exclude)]


def erk_sparsities(model, sparsity, layers):
    """Per-layer sparsities of the Erdős–Rényi-kernel rule (Evci et al. 2020) with `sparsity` overall.

    Density of a layer ∝ sum(kernel shape) / prod(kernel shape); layers that would exceed density 1 are
    kept dense and the rest rescaled, so the total number of kept weights matches exactly.
    """
    shapes = {}
    for layer in iter_layers(model):
        inner = layer.layer if isinstance(layer, MaskedLayer) else layer
        if inner.name in layers:
            shapes[inner.name] = tuple(getattr(inner, prunable_kernels(inner)[0]).shape)
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
    """``{layer_name: final sparsity}`` from a sparsity map: None/'uniform', 'erk' or a dict by name."""
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


def prune_weights(model, schedule, scope="layer", sparsity_map=None, exclude=()):
    """A new model whose Dense/Conv kernels are pruned by magnitude while it trains.

    Args:
      model: a tf_keras Sequential or functional model (not changed).
      schedule: a TFMOT `PolynomialDecay` or `ConstantSparsity` (or any `PruningSchedule`).
      scope: "layer" (every layer reaches the schedule's sparsity; TFMOT does the work) or "global"
        (one magnitude threshold across all prunable kernels; layers end up unevenly sparse).
      sparsity_map: per-layer targets for scope="layer": None/"uniform", "erk", or {layer_name: sparsity}.
      exclude: names of layers left dense.

    Train with ``callbacks=[tfprune.UpdatePruningStep()]``; recompile after calling (the optimizer is not
    carried over, as in TFMOT). On a model already being pruned (e.g. after `prune_units`), the schedule's
    step 0 is the model's current step.
    """
    check_model(model)
    schedules.check_schedule(schedule)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}.")
    if scope == "global" and sparsity_map is not None:
        raise ValueError("sparsity_map sets per-layer targets, which global ranking replaces; use "
                         "scope='layer' with a sparsity_map, or scope='global' without one.")
    layers = _prunable_names(model, exclude)
    targets = layer_targets(model, schedule, sparsity_map, layers)
    schedules.warn_if_never_reaches_target(schedule)

    if scope == "layer" and not has_wrappers(model):
        return _prune_with_tfmot(model, schedule, targets)

    config = schedules.serialize(schedule)
    final = schedules.final_sparsity(schedule)
    start = current_step(model)

    def spec(layer):
        if layer.name not in targets:
            return None
        ratio = targets[layer.name] / final if final > 0 else 0.0
        return {"element_masked": prunable_kernels(layer),
                "plan": {"weight": {"schedule": config, "scope": scope, "ratio": ratio, "start": start}}}

    return rewrap(model, spec)


def _prune_with_tfmot(model, schedule, targets):
    prune = tfmot.sparsity.keras.prune_low_magnitude

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


_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: The fewest entries a thread of the per-step pass takes on.
_BLOCK = 1 << 18
_threads = None


def _forget_threads():
    """A forked child has none of the parent's threads: it starts its own pool when it needs one."""
    global _threads
    _threads = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def _in_parallel(work, size):
    """[work(low, high) for contiguous ranges covering range(size)], one range per core.

    Per-step global pruning passes over every weight between two training steps; its compiled loops release
    the GIL, so threads split the pass across the cores that sit idle then.
    """
    global _threads
    parts = max(1, min(_CORES, size // _BLOCK))
    edges = [size * part // parts for part in range(parts + 1)]
    if parts == 1:
        return [work(0, size)]
    if _threads is None:
        _threads = ThreadPoolExecutor(_CORES, thread_name_prefix="tfprune")
    others = [_threads.submit(work, low, high) for low, high in zip(edges[1:-1], edges[2:])]
    return [work(edges[0], edges[1])] + [future.result() for future in others]


def smallest_to_mask(scores, count):
    """0/1 mask of `scores`' shape with exactly `count` of the smallest entries set to 0 (ties by position)."""
    return _keep_largest(scores.reshape(-1), count)[0].astype(np.float32).reshape(scores.shape)


def _keep_largest(flat, count, spare=0):
    """(keep, bound): `flat` (1-D) without its `count` smallest entries as a bool vector (ties by position, the
    later kept), and, with `spare`, a score with `spare` more positives under it than under the cut-off.

    O(n): the count-th smallest value comes from `np.partition` of the negative or the positive scores
    alone, because partition slows down up to ~30x on big blocks of ties such as the zeros of pruned weights.
    """
    if count <= 0:
        return np.ones(flat.size, dtype=bool), None
    negative, positive = flat < 0, flat > 0
    below_zero = np.count_nonzero(negative)
    up_to_zero = flat.size - np.count_nonzero(positive)
    bound = None
    if count <= below_zero:
        threshold = np.partition(np.compress(negative, flat), count - 1)[count - 1]
    elif count <= up_to_zero:
        threshold = 0.0
    else:
        threshold, bound = _cut_off(np.compress(positive, flat), count - up_to_zero - 1, spare)
    keep = flat > threshold
    extra = flat.size - np.count_nonzero(keep) - count  # ties at the threshold beyond `count`
    if extra:
        ties = np.flatnonzero(flat == threshold)
        keep[ties[ties.size - extra:]] = True
    return keep, bound


def _cut_off(candidates, rank, spare=0, bound=None):
    """(threshold, next_bound): the `rank`-th smallest of `candidates`, and a value with `spare` more of them
    under it (None when unknown or without `spare`).

    `bound` is the value the candidates were taken under, if any; when fewer than `spare` of them lie above
    the threshold, the next bound widens it in proportion to what it held.
    """
    ranks = [rank] + ([rank + spare] if spare and rank + spare < candidates.size else [])
    partitioned = np.partition(candidates, ranks)
    threshold = partitioned[rank]
    if len(ranks) > 1:
        return threshold, partitioned[ranks[-1]]
    if spare and bound is not None:
        return threshold, threshold + (bound - threshold) * spare / max(candidates.size - rank - 1, 1)
    return threshold, None


class WeightPruner:
    """Updates element masks of one pool of MaskedLayers (all global layers, or one layer at a time).

    Scores are |w ⊙ m|, so pruned weights (score 0) stay pruned as sparsity grows; entries removed by
    unit pruning on the same layer score -1 (masked first) and are not counted, so the target applies to
    the surviving weights. `start` is the model step at which the plan was added (its schedule's step 0).
    """

    def __init__(self, layers, schedule, ratio=1.0, start=0):
        self.layers = layers
        self.schedule = schedule
        self.ratio = ratio
        self.start = start
        self._masks = None
        self._bound = None
        self._room = 0
        self._cut = 0

    @classmethod
    def from_model(cls, layers):
        """Pools from the layers' plans: one for every global-scope layer, one per layer-scope layer."""
        pools, global_layers = [], []
        for layer in layers:
            plan = layer.plan.get("weight")
            if plan is None:
                continue
            if plan["scope"] == "global":
                global_layers.append(layer)
            else:
                pools.append(cls([layer], schedules.deserialize(plan["schedule"]), plan["ratio"],
                                 plan.get("start", 0)))
        if global_layers:
            plan = global_layers[0].plan["weight"]
            pools.append(cls(global_layers, schedules.deserialize(plan["schedule"]), start=plan.get("start", 0)))
        return pools

    def update(self, sparsity):
        """Mask the smallest |w ⊙ m| so that `sparsity` of the pool's surviving weights are zero."""
        pieces, alive = self._read()
        masks = self._masks.writable()
        count = masks.size - alive + int(round(sparsity * self.ratio * alive))
        spare = max(count - self._cut, 0) * 3 // 2 + 1024  # a few updates' worth of new prunes
        if not self._prune_near_cut_off(pieces, count, spare, masks):
            masks.fill(-1.0)  # the padding between weights ranks with what unit pruning removed
            _in_parallel(lambda low, high: _scores_into(pieces, low, high, masks[low:high]), masks.size)
            keep, self._bound = _keep_largest(masks, count, spare)
            np.copyto(masks, keep)
        self._masks.hand_over(masks)
        self._cut = count
        self._room = 2 * spare + 4096  # what the next update may find under the bound, with a margin
        # No apply_masks here: the forward pass already computes with w ⊙ m, scores read w ⊙ m, and
        # UpdatePruningStep writes the zeros into the weights at each epoch end.

    def _prune_near_cut_off(self, pieces, count, spare, masks):
        """The per-step fast path: fills `masks` (flat float32) and returns True, or False when a full search
        must run instead.

        Between updates the cut-off only moves up a little, so the new prunes are among the positive scores
        under last update's bound: one compiled pass finds the positives (the new masks, written as it goes)
        and gathers that band, and only the band is partitioned. The result is the full search's whenever
        the bound holds enough.
        """
        if self._bound is None:
            return False
        bound, room = np.float32(self._bound), self._room

        def scan(low, high):
            positives, positions, values = 0, [], []
            for weight, mask, keep, start, stop in _segments(pieces, low, high):
                positions.append(np.empty(room, np.int64))
                values.append(np.empty(room, np.float32))
                counted, marked = _mask_and_gather(weight, mask, keep, bound, masks[start:stop], start,
                                                   positions[-1], values[-1])
                if marked > room:
                    return None
                positives += counted
                positions[-1], values[-1] = positions[-1][:marked], values[-1][:marked]
            return positives, positions, values

        parts = _in_parallel(scan, masks.size)
        if None in parts:  # more under the bound than expected: rare, and the full search is exact
            return False
        rank = count - (masks.size - sum(part[0] for part in parts)) - 1
        if rank < -1:  # fewer cuts than entries at or below zero: the full search picks which zeros to keep
            return False
        if rank >= 0:
            band = np.concatenate([found for part in parts for found in part[1]])
            if band.size <= rank:
                return False
            values = np.concatenate([value for part in parts for value in part[2]])
            threshold, self._bound = _cut_off(values, rank, spare, bound)
            masks[band[values < threshold]] = 0.0
            masks[band[values == threshold][:rank + 1 - np.count_nonzero(values < threshold)]] = 0.0  # ties
        return True

    def _read(self):
        """(pieces, alive): per masked weight, (flat offset, weight, mask, channel keep or None) as flat arrays
        read without a copy, at its offset in the hand-over arrays; how many entries unit pruning keeps (the
        hand-over's padding counts as entries it removed)."""
        entries = [(layer, getattr(layer.layer, name), name) for layer in self.layers for name in layer.element_masked]
        if self._masks is None:
            self._masks = _HandOver([layer.masks[name] for layer, _, name in entries])
        pieces, alive = [], 0
        for (layer, weight, name), offset in zip(entries, self._masks.starts):
            channels = None
            if name in layer.channel_masked:
                channels = np.asarray(layer.channel_mask_tensor(name)).reshape(-1) > 0
                alive += int(np.count_nonzero(channels))
            else:
                alive += weight.shape.num_elements()
            pieces.append((offset, np.asarray(weight.value()).reshape(-1),
                           np.asarray(layer.masks[name].value()).reshape(-1), channels))
        return pieces, alive


class _HandOver:
    """Flat float32 arrays that new mask values are written into and handed to the mask variables without a
    copy: a per-step write of every mask costs one eager assign per variable, not a conversion.

    TensorFlow keeps each handed-over view as the variable's storage, so every variable's part starts on a
    64-byte boundary (its kernels require that; the pruner ranks the gaps with entries unit pruning removed),
    and an array is written again only after TensorFlow has let go of it: each handover exports fresh views,
    whose weak references die when TensorFlow releases the memory.
    """

    def __init__(self, variables):
        self._variables = list(variables)
        self.starts, end = [], 0
        for variable in self._variables:
            self.starts.append(-(-end // 16) * 16)  # 16 float32 = 64 bytes
            end = self.starts[-1] + variable.shape.num_elements()
        self.size = end
        self._arrays = []  # [array, weak references to the views of it TensorFlow may hold]

    def writable(self):
        """An array of `size` entries that no tensor refers to (a new one if every array is held); other free
        arrays are dropped, so memory follows what tensors still hold."""
        held, free = [], []
        for entry in self._arrays:
            (held if any(view() is not None for view in entry[1]) else free).append(entry)
        free = free[:1] or [[_aligned(self.size, np.float32), []]]
        self._arrays = held + free
        return free[0][0]

    def hand_over(self, array):
        """Set the mask variables from `array` (one of `writable`'s), which must not be written until released."""
        views = [array[start:start + variable.shape.num_elements()].reshape(variable.shape)
                 for variable, start in zip(self._variables, self.starts)]
        next(entry for entry in self._arrays if entry[0] is array)[1] = [weakref.ref(view) for view in views]
        for variable, view in zip(self._variables, views):
            variable.assign(tf.experimental.dlpack.from_dlpack(view.__dlpack__()), read_value=False)


def _aligned(size, dtype):
    """An uninitialised array whose data starts on a 64-byte boundary: a tensor taken over through DLPack
    keeps the array's address, and TensorFlow's kernels expect their inputs aligned like its own buffers."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(size * itemsize + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size * itemsize].view(dtype)


def _segments(pieces, start, stop):
    """(weight, mask, keep or None, low, high) for each piece's part inside flat positions [start, stop): the
    piece's arrays cut to [low, high)."""
    for offset, weight, mask, keep in pieces:
        low, high = max(start, offset), min(stop, offset + weight.size)
        if low < high:
            inside = slice(low - offset, high - offset)
            yield weight[inside], mask[inside], None if keep is None else keep[inside], low, high


def _scores_into(pieces, start, stop, out):
    """`out` filled with the scores of flat positions [start, stop) of `pieces`."""
    for weight, mask, keep, low, high in _segments(pieces, start, stop):
        _fill_scores(weight, mask, keep, out[low - start:high - start])
    return out


# Per-step global pruning passes over every weight between two training steps; one compiled loop does
# what takes numpy eight passes (about 3x faster measured in fit), and releases the GIL for the threads.
@numba.njit
def _score(weight, mask, keep, i):
    """|w ⊙ m| of entry i, or -1 where unit pruning removed it (masked before any weight's zero)."""
    if keep is not None and not keep[i]:
        return np.float32(-1.0)
    return abs(weight[i]) * mask[i]


@numba.njit(nogil=True, cache=True)
def _fill_scores(weight, mask, keep, out):
    for i in range(out.size):
        out[i] = _score(weight, mask, keep, i)


#: Entries per chunk of the per-step pass: its band marks and its weights stay in L1 while they are gathered.
_CHUNK = 1024


@numba.njit(nogil=True, cache=True)
def _mark_chunk(weight, mask, keep, bound, masks, marks):
    """`masks` set to 1 where the score is positive, 0 elsewhere, and `marks` where it is also under `bound`;
    returns (#positive, #marked). A loop of its own, so that it compiles to vector instructions."""
    positives = marked = 0
    for i in range(masks.size):
        score = _score(weight, mask, keep, i)
        positive = score > 0
        mark = positive & (score < bound)
        masks[i] = positive
        marks[i] = mark
        positives += positive
        marked += mark
    return positives, marked


@numba.njit(nogil=True, cache=True)
def _mask_and_gather(weight, mask, keep, bound, masks, offset, positions, values):
    """One pass writing the new `masks` (1 where the score is positive) and gathering the positive scores
    under `bound` with their flat positions (`offset` added) into `positions`/`values` while there is room.

    Returns (#positive, #under bound); more under the bound than `positions` holds means the gather is partial.
    Marks are sparse: they are read eight at a time, and each set one is found from its lowest bit.
    """
    positives = found = 0
    marks = np.zeros(_CHUNK, np.bool_)
    words = marks.view(np.uint64)
    for low in range(0, masks.size, _CHUNK):
        size = min(_CHUNK, masks.size - low)
        marks[size - size % 8:] = False  # the last word may hold marks from the chunk before
        chunk_keep = None if keep is None else keep[low:low + size]
        counted, marked = _mark_chunk(weight[low:low + size], mask[low:low + size], chunk_keep, bound,
                                      masks[low:low + size], marks[:size])
        positives += counted
        if not marked:
            continue
        for word in range((size + 7) // 8):
            bits = words[word]
            while bits:
                lowest = bits & (~bits + np.uint64(1))  # a mark is one byte 0/1: its bit is 8 * (byte index)
                i = low + word * 8 + np.int64((lowest * np.uint64(0x0001020304050607)) >> np.uint64(56))
                if found < positions.size:
                    positions[found] = offset + i
                    values[found] = _score(weight, mask, keep, i)
                found += 1
                bits ^= lowest
    return positives, found
