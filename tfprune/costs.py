"""What a cut buys on the target runtime: cuts per channel group, their measured cost, and a lookup table that
predicts the cost of any widths.

Cuts are made per channel group of the channel graph (`tfprune.graph`), so coupled layers (residual adds,
concatenations) are cut together and reported as one group, named by its first producer. A cut is a set of
masks (`group_masks`), so "what was cut" is exactly what `tfprune.shrink` removes, and costs are measured on the
shrunk model: small layers are overhead-bound, so latency follows MACs poorly and is measured, not assumed.

The model of cost behind `CostTable`. For one model on one runtime it measures the whole model, the model
with each group alone narrowed to each candidate width, every group narrowed at once by each fraction, and a
few random widths of every group (without them the fit guessed joint cuts 5-11% low on VGG-11 and ResNet-20).
It then fits ``cost = fixed + sum over layers of c_l * MACs_l(widths) / MACs_l(whole)`` with non-negative
terms: a layer's MACs follow the widths of the groups its kernel reads and writes, so cutting two neighbouring
groups interacts as their product, and `fixed` stands for per-call overhead that no cut removes. Adding up
per-group savings measured alone (NetAdapt's lookup) was tried first and predicted negative latencies for
LeNet-5 with every group cut to a quarter: the savings of neighbours overlap. What the fit still assumes:
time per MAC is constant within a layer, so LiteRT's blocks of 8 channels (a width just above a multiple of 8
costs like the next multiple) and cache effects are averaged away. `predictor_error` measures how far off it
is on random widths; `tfprune.prune_to_budget` uses the table only to propose cuts, measures every proposal
(adding the measurement to the table, `CostTable.cost`) and, afresh, every model it keeps.
"""
import hashlib
import json
import os
import platform
import tempfile

import numpy as np

from tfprune import criteria
from tfprune._keras import check_model, tf
from tfprune._io import atomic_write_file
from tfprune.bench import latency
from tfprune.export import save
from tfprune.graph import KERNEL_WEIGHTS, build_channel_graph, combined_keeps
from tfprune.mask import inner_layer, iter_layers, masks, with_masks
from tfprune.metrics import count_macs, layer_table
from tfprune.registry import resolve_weight
from tfprune.shrink import shrink
from tfprune.unit import kept_count, rounded_up
from tfprune.validation import check_choice, check_int, check_number

__all__ = ["METRICS", "RUNTIMES", "Runtime", "group_name", "widths", "group_masks", "cut", "measure", "CostTable",
           "random_widths", "predictor_error"]

#: What a budget counts: milliseconds per call, bytes of the exported file, multiply-accumulates per example.
METRICS = ("latency_ms", "bytes", "macs")
#: Where latency is measured and which file the size is of: LiteRT (.tflite) or a Keras tf.function (.keras).
RUNTIMES = ("litert", "keras")
_FILE_FORMAT = {"litert": "tflite", "keras": "keras"}
_TABLE_FORMAT = 1
# Latency is the median of this many timings, one after another, each with its own interpreter (or tf.function):
# one timing of a sub-millisecond model is now and then 10-15% off the others (measured: 1 in 8 on a 2-core
# machine). Timing the interpreters round robin instead read 4% slow: they evict each other from the caches.
_TIMINGS = 5
_STALE = 0.15  # a cached whole-model cost this far from a fresh one is stale (single timings here vary ~10%)


class Runtime:
    """How a model's cost is measured: the metric, the runtime, and the settings a latency depends on.

    Args:
      metric: one of `METRICS`.
      runtime: ``"litert"`` (batch 1 by default, the exported ``.tflite``) or ``"keras"`` (a `tf.function`, batch
        32 by default, the ``.keras`` file).
      threads: LiteRT's threads (default 1); ignored by Keras, which records TensorFlow's pool size instead
        (fix it with `tfprune.bench.set_threads` at the start of the program).
      batch_size: examples per timed call (default: 1 for LiteRT, 32 for Keras).
      repeats: timed calls of each timing (a latency is the median of five timings).

    Raises:
      ValueError: a bad argument.
    """

    def __init__(self, metric="latency_ms", runtime="litert", threads=1, batch_size=None, repeats=100):
        self.metric = check_choice(metric, "metric", "Runtime", METRICS)
        self.runtime = check_choice(runtime, "runtime", "Runtime", RUNTIMES)
        self.threads = check_int(threads, "threads", "Runtime", 1)
        default_batch = 1 if runtime == "litert" else 32
        self.batch_size = check_int(default_batch if batch_size is None else batch_size, "batch_size", "Runtime", 1)
        self.repeats = check_int(repeats, "repeats", "Runtime", 1)
        self.file_format = _FILE_FORMAT[runtime]

    def key(self):
        """What a measurement depends on besides the model: metric, runtime, threads, batch, versions, machine.

        Returns:
          a JSON-serialisable dict; two measurements are comparable when their keys are equal.
        """
        key = {"metric": self.metric, "runtime": self.runtime, "file_format": self.file_format,
               "tensorflow": tf.__version__}
        if self.metric == "latency_ms":
            threads = self.threads if self.runtime == "litert" else \
                tf.config.threading.get_intra_op_parallelism_threads()
            key.update(threads=threads, batch_size=self.batch_size, machine=_machine())
        return key

    def __repr__(self):
        return f"Runtime({self.metric!r}, {self.runtime!r}, threads={self.threads}, batch_size={self.batch_size})"


def _machine():
    """The host and its processor: a latency measured on one machine says nothing about another."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.node()} {platform.machine()} {cpu} x{os.cpu_count()}"


def measure(model, runtime, path=None):
    """The cost of `model` on `runtime`: the median latency in ms, the exported file's bytes, or the MACs per
    example. Latency in LiteRT and bytes are measured on the exported file (written to a scratch folder unless
    `path` names it), so a prediction and the final report measure the same kind of file.

    Args:
      model: a plain model of either flavor (shrink a pruned one first: masked channels still cost).
      runtime: a `Runtime`.
      path: the model's exported file in `runtime`'s format, if it was already written.

    Returns:
      the cost, a float.
    """
    if runtime.metric == "macs":
        return float(count_macs(model))
    if path is None and _needs_file(runtime):
        with tempfile.TemporaryDirectory() as scratch:
            return measure(model, runtime, _export(model, runtime, scratch, "model"))
    if runtime.metric == "bytes":
        return float(os.path.getsize(path))
    timings = [latency(path if runtime.runtime == "litert" else model, batch_size=runtime.batch_size,
                       backend=runtime.runtime, threads=runtime.threads if runtime.runtime == "litert" else None,
                       warmup=20, repeats=runtime.repeats)["median_ms"] for _ in range(_TIMINGS)]
    return float(np.median(timings))


def _needs_file(runtime):
    return runtime.metric == "bytes" or (runtime.metric == "latency_ms" and runtime.runtime == "litert")


def _export(model, runtime, directory, name):
    """The path of `model` exported in `runtime`'s format into `directory`, or None where no file is measured."""
    if not _needs_file(runtime):
        return None
    return save(model, directory, formats=(runtime.file_format,), name=name)["artifacts"][runtime.file_format]["path"]


# -- cuts --------------------------------------------------------------------------------------------------
def group_name(group):
    """A group's name: its first producer (unique, since a layer's outputs belong to one group).

    Args:
      group: a `tfprune.graph.ChannelGroup`.

    Returns:
      the name, a string.
    """
    return group.producers[0] if group.producers else f"group_{group.id}"


def _alive(group, current):
    """Per channel of `group`, whether the masks `current` leave it anything (no masks: every channel)."""
    alive = np.ones(group.size, dtype=bool)
    for piece in group.slices:
        mask = current.get((piece.layer, piece.weight))
        if mask is not None:
            alive &= piece.channel_view(mask).any(axis=1)
    return alive


def widths(model, groups):
    """``{group name: live channels}`` of a model (masked or not) for its graph's `groups`.

    Args:
      model: the model the groups were built from, or a masked copy of it.
      groups: `ChannelGroup`s of its channel graph.

    Returns:
      a dict of ints.
    """
    current = masks(model)
    return {group_name(group): int(_alive(group, current).sum()) for group in groups}


def _groups_by_name(model, exclude, owner):
    groups = {group_name(group): group for group in build_channel_graph(model, exclude=exclude).prunable_groups()}
    if not groups:
        raise ValueError(f"{owner}: model '{model.name}' has no prunable channel group (every group reaches the "
                         "output or is excluded).")
    return groups


def group_masks(model, counts, criterion="l2", data=None, exclude=()):
    """Masks that keep, in each named group, that many channels: those `criterion` scores highest among the ones
    `model`'s own masks left (a removed channel never returns), on every slice of the group.

    Args:
      model: a model of either flavor, masked or not.
      counts: ``{group name: channels to keep}`` (names from `group_name`; groups left out stay as they are).
      criterion: a name in `tfprune.criteria.CRITERIA` or a registered criterion.
      data: ``(x, y)`` calibration data, for criteria that read gradients or activations.
      exclude: layer names whose groups stay whole, as in `tfprune.prune_units`.

    Returns:
      ``{layer name: {weight: 0/1 array}}``, the form `tfprune.with_masks` takes, with `model`'s current masks
      folded in.

    Raises:
      ValueError: an unknown group name, a count below 1 or above the channels left, or a criterion that needs
        data without `data`.
    """
    groups = _groups_by_name(model, exclude, "group_masks")
    unknown = sorted(set(counts) - set(groups))
    if unknown:
        raise ValueError(f"group_masks: no prunable group named {unknown}; groups: {sorted(groups)}.")
    chosen = criteria.get_criterion(criterion)
    if chosen.needs and data is None:
        raise ValueError(f"group_masks: criterion {criterion!r} reads {sorted(chosen.needs)}; pass data=(x, y).")
    tensors = criteria.ModelTensors(model, *(data if chosen.needs else ()))
    current = masks(model)
    pairs = []
    for name, count in counts.items():
        alive = _alive(groups[name], current)
        if not 1 <= count <= alive.sum():
            raise ValueError(f"group_masks: group '{name}' has {int(alive.sum())} channels left; cannot keep "
                             f"{count!r}.")
        scores = np.where(alive, criteria.score_group(chosen, groups[name], tensors).numpy(), -np.inf)
        keep = np.zeros(groups[name].size, dtype=bool)
        keep[np.argsort(-scores, kind="stable")[:count]] = True
        pairs += [(piece, keep) for piece in groups[name].slices]
    layers = {inner_layer(layer).name: inner_layer(layer) for layer in iter_layers(model)}

    def shape(layer, weight):
        return tuple(resolve_weight(layers[layer], weight).shape)

    by_weight = dict(current)
    for (layer, weight, axis), vector in combined_keeps(pairs, lambda p: shape(p.layer, p.weight)[p.axis]).items():
        full = shape(layer, weight)
        along = vector.astype(np.float32).reshape([-1 if i == axis else 1 for i in range(len(full))])
        by_weight[(layer, weight)] = by_weight.get((layer, weight), np.ones(full, np.float32)) * along
    result = {}
    for (layer, weight), mask in by_weight.items():
        result.setdefault(layer, {})[weight] = mask
    return result


def cut(model, counts, criterion="l2", data=None, exclude=()):
    """`model` with each named group narrowed to its count: `group_masks`, then `tfprune.shrink`.

    Args:
      model, counts, criterion, data, exclude: as in `group_masks`.

    Returns:
      a new, narrower plain model of `model`'s flavor, uncompiled.

    Raises:
      as `group_masks`.
    """
    return shrink(with_masks(model, group_masks(model, counts, criterion, data, exclude)))


# -- the lookup table --------------------------------------------------------------------------------------
def _architecture_digest(model):
    """sha256 of the model's config: latency, size and MACs depend on the architecture, not on the weights."""
    return hashlib.sha256(model.to_json().encode()).hexdigest()


def _table_key(model, runtime, exclude):
    """What a table's measurements depend on: the architecture, the groups left whole and the runtime."""
    return {"model": _architecture_digest(model), "exclude": sorted(exclude), **runtime.key()}


def _candidate_counts(size, fractions, round_to):
    """The widths a pruner may give a group of `size`: each fraction kept, rounded up to `round_to`."""
    return sorted({int(kept_count(size, 1.0 - fraction, round_to)) for fraction in fractions} | {size})


def random_widths(sizes, rng, round_to=1):
    """Random widths, each group's drawn among the multiples of `round_to` from a tenth of its channels to all of
    them (the widths a pruner with that `round_to` may choose).

    Args:
      sizes: ``{group name: channels}``.
      rng: a `numpy.random.Generator`.
      round_to: widths are multiples of this where possible (1: any width).

    Returns:
      ``{group name: width}``.
    """
    chosen = {}
    for name, size in sizes.items():
        allowed = np.unique(np.asarray(rounded_up(np.arange(max(1, size // 10), size + 1), size, round_to)))
        chosen[name] = int(rng.choice(allowed))
    return chosen


def _default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfprune", "costs")


def _scaling(model, groups):
    """``(layer MACs, {layer: {group: exponent}})``: a layer's MACs scale with (width / channels) ** exponent of
    each group its kernel reads (input side) or writes (output side); a convolution reading and writing one
    coupled group scales with its square."""
    macs = {row["name"].rsplit("/", 1)[-1]: row["macs"] for row in layer_table(model) if row["macs"]}
    exponents = {}
    for name, group in groups.items():
        roles = {}
        for piece in group.slices:
            if piece.weight.rsplit(".", 1)[-1] in KERNEL_WEIGHTS and piece.layer in macs:
                roles.setdefault(piece.layer, set()).add(piece.role)
        for layer, sides in roles.items():
            exponents.setdefault(layer, {})[name] = len(sides)
    return macs, exponents


def _nonnegative_least_squares(features, costs):
    """Coefficients >= 0 fitting ``features @ c ~ costs``: least squares, dropping negative terms until none is."""
    active = np.ones(features.shape[1], dtype=bool)
    coefficients = np.zeros(features.shape[1])
    while active.any():
        solution = np.linalg.lstsq(features[:, active], costs, rcond=None)[0]
        if (solution >= 0).all():
            coefficients[active] = solution
            break
        active[np.flatnonzero(active)[np.argmin(solution)]] = False
    return coefficients


class CostTable:
    """Measured costs of a model with its groups narrowed, cached on disk, and the cost model fitted to them.

    Measured: the whole model; each group alone at each candidate width (the others whole); every group at once
    at each fraction; and every group at a random width, a few times. The fit (the module docstring says what
    it assumes): ``cost = fixed + sum over layers of cost_l * MACs_l(widths) / MACs_l``, with non-negative terms;
    a layer's MACs follow the widths of the groups its kernel reads and writes, so two neighbouring cuts interact
    as they do in the MACs. The file is named by a digest of `key` (the architecture, the exclusions and
    `Runtime.key`: metric, runtime, threads, batch, TensorFlow version and machine), so a change to any of them
    measures afresh; widths asked for later are measured and added to the same file.

    Made by `build`; ``measured`` counts the costs this object measured (the rest came from the cache).

    Args:
      key: what the measurements depend on (a dict).
      sizes: ``{group name: channels}`` of the whole model.
      scaling: ``(layer MACs, {layer: {group: exponent}})``, how each layer's MACs follow the widths.
      points: ``{widths as JSON: measured cost}``.
      path: the cache file, or None.
    """

    def __init__(self, key, sizes, scaling, points, path=None):
        self.key, self.sizes, self.points, self.path, self.measured = key, sizes, points, path, 0
        self._macs, self._exponents = scaling
        self._coefficients = None

    @classmethod
    def build(cls, model, runtime, fractions=(0.75, 0.5, 0.25, 0.1), round_to=1, counts=None, exclude=(),
              cache_dir=None, random_settings=8, reference=None, verbose=0):
        """Measure (or read from the cache) the costs the table needs.

        Args:
          model: a plain model of either flavor.
          runtime: a `Runtime`.
          fractions: the fractions of each group's channels to keep, rounded up to `round_to`.
          round_to: widths are multiples of this where possible (see `tfprune.shrink`).
          counts: ``{group name: [widths]}`` measured as well, each group alone (e.g. a sensitivity's).
          exclude: layer names whose groups stay whole.
          cache_dir: where tables are kept (default ``$XDG_CACHE_HOME/tfprune/costs`` or ``~/.cache/...``);
            False keeps nothing on disk.
          random_settings: how many random widths (`random_widths`, seed 0) to measure as well: every group cut
            at once by different amounts, which the points above alone leave to guesswork.
          reference: the whole model's cost measured just now, if the caller has it: a cached table whose figure
            for the whole model is more than 15% from it was measured while the machine ran at another speed
            (a VM's did by 23% within hours), so it is measured afresh.
          verbose: 1 prints a line per cost measured (a table of a large model takes minutes).

        Returns:
          a `CostTable`.

        Raises:
          ValueError: a bad argument, or a model without prunable groups.
          TypeError: `model` is not a Keras model or `runtime` not a `Runtime`.
        """
        check_model(model)
        if not isinstance(runtime, Runtime):
            raise TypeError(f"CostTable.build: `runtime` must be a tfprune.Runtime, got {type(runtime).__name__}.")
        for fraction in fractions:
            check_number(fraction, "fractions", "CostTable.build", 0, 1, low_open=True)
        check_int(round_to, "round_to", "CostTable.build", 1)
        check_int(random_settings, "random_settings", "CostTable.build", 0)
        exclude = sorted([exclude] if isinstance(exclude, str) else exclude)
        groups = _groups_by_name(model, exclude, "CostTable.build")
        sizes = {name: group.size for name, group in groups.items()}
        key = _table_key(model, runtime, exclude)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = None if cache_dir is False else os.path.join(cache_dir or _default_cache_dir(), f"{digest}.json")
        table = cls(key, sizes, _scaling(model, groups), cls._load(path, key), path)
        cached = table.measured_cost({})
        if reference is not None and cached is not None and abs(cached / reference - 1) > _STALE:
            if verbose:
                print(f"cost table: the cached whole-model cost {cached:.4g} is {cached / reference - 1:+.0%} from "
                      f"the one just measured ({reference:.4g}); measuring the table afresh", flush=True)
            table.points = {}
        wanted = [{}]
        for name, size in sizes.items():
            wanted += [{name: width} for width in _candidate_counts(size, fractions, round_to)
                       + sorted((counts or {}).get(name, ())) if width != size]
        wanted += [{name: int(kept_count(size, 1.0 - fraction, round_to)) for name, size in sizes.items()}
                   for fraction in fractions]
        rng = np.random.default_rng(0)
        wanted += [random_widths(sizes, rng, round_to) for _ in range(random_settings)]
        missing = {_point(table.full(cuts)): cuts for cuts in wanted}
        missing = [cuts for point, cuts in missing.items() if point not in table.points]
        for cuts in missing:
            value = table.cost(model, runtime, cuts, exclude)
            if verbose:
                print(f"cost table: {table.measured} of {len(missing)} costs measured on {runtime}: {value:.4g}",
                      flush=True)
        return table

    def cost(self, model, runtime, widths, exclude=()):
        """The cost at `widths`: the one measured before (by this table or into its cache file), else `model` cut
        to them is measured now and added, so a pruner's own measurements refine the fit where it prunes.

        Args:
          model: the plain model the table was built for.
          runtime: its `Runtime`.
          widths: ``{group name: channels}``; groups left out are whole.
          exclude: as given to `build`.

        Returns:
          the cost, a float.

        Raises:
          ValueError: `model`, `runtime` or `exclude` is not the table's.
          KeyError: an unknown group.
        """
        if _table_key(model, runtime, exclude) != self.key:
            raise ValueError("CostTable.cost: the model, runtime or exclude differ from those the table was built "
                             "for; build a table for them with CostTable.build.")
        point = _point(self.full(widths))
        if point not in self.points:
            self.points[point] = measure(cut(model, widths, exclude=exclude), runtime)
            self.measured += 1
            self._save()  # after each measurement, so a killed build keeps what it measured
        return self.points[point]

    @staticmethod
    def _load(path, key):
        if path is None or not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        if stored.get("format") != _TABLE_FORMAT or stored.get("key") != key:
            return {}  # another table under a colliding name, or an older format: measure afresh
        return stored["points"]

    def _save(self):
        self._coefficients = None
        if self.path is not None:
            content = {"format": _TABLE_FORMAT, "key": self.key, "points": self.points}
            atomic_write_file(self.path, lambda file: file.write(json.dumps(content, indent=1).encode()))

    def full(self, widths):
        """`widths` with the groups left out at their whole width.

        Args:
          widths: ``{group name: channels}``.

        Returns:
          a dict over every group.

        Raises:
          KeyError: an unknown group.
        """
        unknown = sorted(set(widths) - set(self.sizes))
        if unknown:
            raise KeyError(f"CostTable: no group named {unknown}; groups: {sorted(self.sizes)}.")
        return {name: int(widths.get(name, size)) for name, size in self.sizes.items()}

    def measured_cost(self, widths):
        """The measured cost at `widths`, or None if it was not measured.

        Args:
          widths: ``{group name: channels}``; groups left out are whole.

        Returns:
          a float or None.
        """
        return self.points.get(_point(self.full(widths)))

    def _features(self, widths):
        ratios = {name: widths[name] / size for name, size in self.sizes.items()}
        return [1.0] + [float(np.prod([ratios[group] ** power
                                        for group, power in self._exponents.get(layer, {}).items()]))
                        for layer in self._macs]

    def predict(self, widths):
        """The predicted cost at `widths` from the fitted cost model.

        Args:
          widths: ``{group name: channels}``; groups left out are whole.

        Returns:
          the cost, a float.

        Raises:
          KeyError: an unknown group.
        """
        if self._coefficients is None:
            measured = [(json.loads(point), cost) for point, cost in self.points.items()]
            features = np.array([self._features(widths) for widths, _ in measured])
            self._coefficients = _nonnegative_least_squares(features, np.array([cost for _, cost in measured]))
        return float(np.dot(self._features(self.full(widths)), self._coefficients))


def _point(widths):
    return json.dumps(widths, sort_keys=True)


def predictor_error(model, table, runtime, samples=5, seed=1, exclude=(), round_to=1, passes=3):
    """How far `table`'s predictions are from measurements: random widths (each group's width drawn among the
    multiples of `round_to` between a tenth of its channels and all of them, the widths a pruner with that
    `round_to` may choose), each model shrunk and measured, and the whole model measured beside it.

    Why the whole model beside it: a machine's timings drift (this project's 2-core VM ran the same file 1.5-2x
    slower within an hour), so a prediction made from the table's timings is off by the drift as well as by the
    fit. Timing the shrunk and the whole model in turn, `passes` times, separates the two: ``drift`` is the
    machine's, ``relative_error`` the fit's (the predicted fraction of the whole against the measured one).

    Args:
      model: the model the table was built for.
      table: its `CostTable`.
      runtime: the `Runtime` the table was measured on.
      samples: how many random width settings.
      seed: the random widths' seed (`CostTable.build` draws its own with seed 0: use another one).
      exclude: as given to `CostTable.build`.
      round_to: widths are multiples of this where possible (1: any width).
      passes: timings of each, in turn (medians are reported).

    Returns:
      one dict per sample: ``widths``, ``predicted``, ``measured``, ``error`` (predicted / measured - 1),
      ``reference`` (the whole model timed beside it), ``drift`` (reference / the table's figure for the whole
      model - 1) and ``relative_error`` ((predicted / table's whole) / (measured / reference) - 1).

    Raises:
      ValueError: `samples`, `round_to` or `passes` is not a positive integer.
    """
    check_int(round_to, "round_to", "predictor_error", 1)
    check_int(passes, "passes", "predictor_error", 1)
    rng = np.random.default_rng(seed)
    whole = table.cost(model, runtime, {}, exclude)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        whole_file = _export(model, runtime, scratch, "whole")
        for index in range(check_int(samples, "samples", "predictor_error", 1)):
            chosen = random_widths(table.sizes, rng, round_to)
            small = cut(model, chosen, exclude=exclude)
            small_file = _export(small, runtime, scratch, f"sample_{index}")
            timings = [(measure(small, runtime, small_file), measure(model, runtime, whole_file))
                       for _ in range(passes)]
            measured, reference = (float(value) for value in np.median(timings, axis=0))
            predicted = table.predict(chosen)
            rows.append({"widths": chosen, "predicted": predicted, "measured": measured,
                         "error": predicted / measured - 1.0, "reference": reference, "drift": reference / whole - 1.0,
                         "relative_error": (predicted / whole) / (measured / reference) - 1.0})
    return rows
