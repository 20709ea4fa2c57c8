"""What a cut buys on the target runtime: cuts per channel group, their measured cost, and a lookup table that
predicts the cost of any widths.

Cuts are made per channel group of the channel graph (`tfprune.graph`), so coupled layers (residual adds,
concatenations) are cut together and reported as one group, named by its first producer. A cut is a set of
masks (`group_masks`), so "what was cut" is exactly what `tfprune.shrink` removes, and costs are measured on the
shrunk model: small layers are overhead-bound, so latency follows MACs poorly and is measured, not assumed.

The model of cost behind `CostTable`. For one model on one runtime it measures the model with each group
alone narrowed to each candidate width, every group narrowed at once by each fraction, and a few random widths
of every group (without them the fit guessed joint cuts 5-11% low on VGG-11 and ResNet-20), each as a fraction
of the whole model timed in turn with it. It then fits ``fraction = fixed + sum over layers of c_l *
MACs_l(widths) / MACs_l(whole)`` with non-negative terms, and a cost is that fraction times the whole model's
latest timing. A layer's MACs follow the widths of the groups its kernel reads and writes, so cutting two
neighbouring groups interacts as their product, and `fixed` stands for per-call overhead that no cut removes. Adding up
per-group savings measured alone (NetAdapt's lookup) was tried first and predicted negative latencies for
LeNet-5 with every group cut to a quarter: the savings of neighbours overlap. LiteRT computes channels in
blocks (`Runtime.channel_block`, 8 by default): two 3x3 convolutions on 28x28x16 ran 1.5x as long with 9
channels between them as with 8, and within 10% as long with 17 as with 24 (x86 AVX2), so a width counts as
its blocks (on ResNet-20 at random widths this took the fit from 25% to 6.5% mean error, blocks on the
channels a layer writes alone to 13%). On AVX-512 the same pair steps at 16->17 and climbs within the block;
there too 8 fitted three models better than 1 or 16 (16 prices 8 channels like 16, which ran 1.35x as
long; 4 did a little better on two of them). What the fit still assumes: time per MAC is otherwise constant
within a layer, and cache effects are averaged away. `predictor_error` measures how far off it is on random widths;
`tfprune.prune_to_budget` uses the table only to propose cuts, measures every proposal (adding the measurement
to the table, `CostTable.cost`) and, afresh, every model it keeps.
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

__all__ = ["METRICS", "RUNTIMES", "Runtime", "group_name", "widths", "group_masks", "cut", "measure",
           "measure_in_turn", "CostTable", "random_widths", "predictor_error"]

#: What a budget counts: milliseconds per call, bytes of the exported file, multiply-accumulates per example.
METRICS = ("latency_ms", "bytes", "macs")
#: Where latency is measured and which file the size is of: LiteRT (.tflite) or a Keras tf.function (.keras).
RUNTIMES = ("litert", "keras")
_FILE_FORMAT = {"litert": "tflite", "keras": "keras"}
_TABLE_FORMAT = 2  # points are fractions of the whole model (format 1: absolute costs)
# Latency is the median of this many timings, one after another, each with its own interpreter (or tf.function):
# one timing of a sub-millisecond model is now and then 10-15% off the others (measured: 1 in 8 on a 2-core
# machine). Timing the interpreters round robin instead read 4% slow: they evict each other from the caches.
_TIMINGS = 5


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
      channel_block: the cost table counts widths in blocks of this many channels (default: 8 for LiteRT
        latency, whose x86 kernels compute channels 8 or 16 at a time; 1 otherwise). It shapes the fit, not
        the measurements.

    Raises:
      ValueError: a bad argument.
    """

    def __init__(self, metric="latency_ms", runtime="litert", threads=1, batch_size=None, repeats=100,
                 channel_block=None):
        self.metric = check_choice(metric, "metric", "Runtime", METRICS)
        self.runtime = check_choice(runtime, "runtime", "Runtime", RUNTIMES)
        self.threads = check_int(threads, "threads", "Runtime", 1)
        default_batch = 1 if runtime == "litert" else 32
        self.batch_size = check_int(default_batch if batch_size is None else batch_size, "batch_size", "Runtime", 1)
        self.repeats = check_int(repeats, "repeats", "Runtime", 1)
        blocked = metric == "latency_ms" and runtime == "litert"
        self.channel_block = check_int((8 if blocked else 1) if channel_block is None else channel_block,
                                       "channel_block", "Runtime", 1)
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
    return measure_in_turn([model], runtime, [path])[0]


def measure_in_turn(models, runtime, paths=None, timings=_TIMINGS):
    """The costs of several models, as `measure`; latencies are timed in turn, one timing of each model per pass,
    `timings` passes, and each model's median is returned.

    Why in turn: a machine's speed drifts (this project's 2-core VM ran one file 1.5-2x slower within an hour),
    and models timed in turn drift together, so the ratio of their latencies holds where timings made minutes
    apart do not (VGG-11 and its half-width cut, timed in turn 12 times: each varied 7-9%, their ratio 4.9%).

    Args:
      models: plain models of either flavor.
      runtime: a `Runtime`.
      paths: each model's exported file in `runtime`'s format, or None where it is to be written.
      timings: passes over the models (latency only).

    Returns:
      a list of floats, one per model.

    Raises:
      ValueError: `timings` is not a positive integer, or `paths` does not give one path (or None) per model.
    """
    check_int(timings, "timings", "measure_in_turn", 1)
    paths = list(paths or [None] * len(models))
    if len(paths) != len(models):
        raise ValueError(f"measure_in_turn: {len(models)} models but {len(paths)} paths; give one path (or None) "
                         "per model.")
    if runtime.metric == "macs":
        return [float(count_macs(model)) for model in models]
    with tempfile.TemporaryDirectory() as scratch:
        paths = [path or _export(model, runtime, scratch, f"model_{index}")
                 for index, (model, path) in enumerate(zip(models, paths))]
        if runtime.metric == "bytes":
            return [float(os.path.getsize(path)) for path in paths]
        passes = [[latency(path if runtime.runtime == "litert" else model, batch_size=runtime.batch_size,
                           backend=runtime.runtime, threads=runtime.threads if runtime.runtime == "litert" else None,
                           warmup=20, repeats=runtime.repeats)["median_ms"] for model, path in zip(models, paths)]
                  for _ in range(timings)]
    return [float(value) for value in np.median(passes, axis=0)]


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

    Measured: each group alone at each candidate width (the others whole); every group at once at each
    fraction; and every group at a random width, a few times. Each point is stored as a fraction of the whole
    model's cost, the two timed in turn (`measure_in_turn`), and a cost is that fraction times `whole`, the
    whole model's latest measurement (made by `build` and again beside every later point). Why fractions: the
    machine's speed drifts between points, and a table of absolute timings mixed speeds (this project's VM
    drifted 16-85% within one benchmark); timed in turn, a cut and the whole model drift together. The fit (the
    module docstring says what it assumes): ``fraction = fixed + sum over layers of c_l * MACs_l(widths) /
    MACs_l``, with non-negative terms; a layer's MACs follow the widths of the groups its kernel reads and
    writes (counted in blocks of ``channel_block`` channels), so two neighbouring cuts interact as they do in
    the MACs. The file is named by a digest of `key` (the architecture, the exclusions and `Runtime.key`:
    metric, runtime, threads, batch, TensorFlow version and machine), so a change to any of them measures
    afresh; widths asked for later are measured and added to the same file.

    Made by `build`; ``measured`` counts the points this object measured (the rest came from the cache).

    Args:
      key: what the measurements depend on (a dict).
      sizes: ``{group name: channels}`` of the whole model.
      scaling: ``(layer MACs, {layer: {group: exponent}})``, how each layer's MACs follow the widths.
      points: ``{widths as JSON: cost as a fraction of the whole model's}``.
      path: the cache file, or None.
      channel_block: widths count in blocks of this many channels (`Runtime.channel_block`).
    """

    def __init__(self, key, sizes, scaling, points, path=None, channel_block=1):
        self.key, self.sizes, self.points, self.path, self.measured = key, sizes, points, path, 0
        self.points.setdefault(_point(self.full({})), 1.0)
        self.whole = None  # the whole model's cost, measured by `build`
        self.channel_block = channel_block
        self._macs, self._exponents = scaling
        self._coefficients = None
        self._scratch = self._whole_path = None  # the whole model's exported file, kept while the table lives

    @classmethod
    def build(cls, model, runtime, fractions=(0.75, 0.5, 0.25, 0.1), round_to=1, counts=None, exclude=(),
              cache_dir=None, random_settings=8, verbose=0):
        """Measure (or read from the cache) the costs the table needs, and the whole model now.

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
        table = cls(key, sizes, _scaling(model, groups), cls._load(path, key), path, runtime.channel_block)
        table.whole = measure(model, runtime, table._whole_file(model, runtime))
        wanted = []
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
        """The cost at `widths`: its fraction measured before (by this table or into its cache file), else `model`
        cut to them and the whole model are measured now, in turn, and the fraction is added, so a pruner's own
        measurements refine the fit where it prunes. Either way it is that fraction times `whole`.

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
            narrow, self.whole = measure_in_turn([cut(model, widths, exclude=exclude), model], runtime,
                                                 [None, self._whole_file(model, runtime)])
            self.points[point] = narrow / self.whole
            self.measured += 1
            self._save()  # after each measurement, so a killed build keeps what it measured
        return self.points[point] * self.whole

    def _whole_file(self, model, runtime):
        """The whole model exported once for the table's measurements (None where no file is measured)."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory()  # removed with the table
            self._whole_path = _export(model, runtime, self._scratch.name, "whole")
        return self._whole_path

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
        """The measured cost at `widths` (its fraction times `whole`), or None if it was not measured.

        Args:
          widths: ``{group name: channels}``; groups left out are whole.

        Returns:
          a float or None.
        """
        fraction = self.points.get(_point(self.full(widths)))
        return None if fraction is None else fraction * self.whole

    def _features(self, widths):
        """1 (the fixed cost), then each layer's MACs at `widths` as a fraction of its whole MACs, widths counted
        in blocks of `channel_block` channels."""
        def blocks(channels):
            return -(-channels // self.channel_block)
        ratios = {name: blocks(widths[name]) / blocks(size) for name, size in self.sizes.items()}
        return [1.0] + [float(np.prod([ratios[group] ** power
                                        for group, power in self._exponents.get(layer, {}).items()]))
                        for layer in self._macs]

    def predict(self, widths, whole=None):
        """The predicted cost at `widths`: the fitted fraction of the whole model's cost, times `whole`.

        Args:
          widths: ``{group name: channels}``; groups left out are whole.
          whole: the whole model's cost to scale by, e.g. timed just now; default the table's latest measurement.

        Returns:
          the cost, a float.

        Raises:
          KeyError: an unknown group.
        """
        if self._coefficients is None:
            measured = [(json.loads(point), fraction) for point, fraction in self.points.items()]
            features = np.array([self._features(widths) for widths, _ in measured])
            self._coefficients = _nonnegative_least_squares(features, np.array([value for _, value in measured]))
        fraction = float(np.dot(self._features(self.full(widths)), self._coefficients))
        return fraction * (self.whole if whole is None else whole)


def _point(widths):
    return json.dumps(widths, sort_keys=True)


def predictor_error(model, table, runtime, samples=5, seed=1, exclude=(), round_to=1, timings=15):
    """How far `table`'s predictions are from measurements: random widths (each group's width drawn among the
    multiples of `round_to` between a tenth of its channels and all of them, the widths a pruner with that
    `round_to` may choose), each model shrunk and timed in turn with the whole model, and the prediction scaled
    by that timing of the whole model, as a pruner scales it by its latest one.

    Args:
      model: the model the table was built for.
      table: its `CostTable`.
      runtime: the `Runtime` the table was measured on.
      samples: how many random width settings.
      seed: the random widths' seed (`CostTable.build` draws its own with seed 0: use another one).
      exclude: as given to `CostTable.build`.
      round_to: widths are multiples of this where possible (1: any width).
      timings: passes of `measure_in_turn` over each sample and the whole model.

    Returns:
      one dict per sample: ``widths``, ``predicted``, ``measured``, ``error`` (predicted / measured - 1),
      ``reference`` (the whole model timed beside it) and ``drift`` (reference / the table's `whole` when called
      - 1: how far the machine's speed moved, which the fractions divide out).

    Raises:
      ValueError: `samples`, `round_to` or `timings` is not a positive integer, or the model, runtime or
        exclude are not the table's.
    """
    check_int(round_to, "round_to", "predictor_error", 1)
    check_int(timings, "timings", "predictor_error", 1)
    rng = np.random.default_rng(seed)
    whole = table.cost(model, runtime, {}, exclude)
    rows = []
    for _ in range(check_int(samples, "samples", "predictor_error", 1)):
        chosen = random_widths(table.sizes, rng, round_to)
        measured, reference = measure_in_turn([cut(model, chosen, exclude=exclude), model], runtime,
                                              [None, table._whole_file(model, runtime)], timings)
        predicted = table.predict(chosen, whole=reference)
        rows.append({"widths": chosen, "predicted": predicted, "measured": measured,
                     "error": predicted / measured - 1.0, "reference": reference, "drift": reference / whole - 1.0})
    return rows
