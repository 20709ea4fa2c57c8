"""Prune to a budget measured on the target runtime: where the model can lose channels (`sensitivity`), and
NetAdapt's rounds (Yang et al., ECCV 2018) in tfprune's one iterative loop (`prune_to_budget`).

Users deploy to a budget ("under 2 ms on the phone's CPU", "under 1 MB"), not to a sparsity, and MACs mislead
on small, overhead-bound layers. `prune_to_budget` therefore measures: a `tfprune.CostTable` of the model on
the target runtime proposes, for every channel group, the width that saves one step of the budget, and one
common fraction of every group that saves as much; each proposal is measured (the table learns the
measurement), those that save about the step are masked, briefly fine-tuned and evaluated, and the most
accurate one is kept; the round's model is then fine-tuned, shrunk and measured, and rounds repeat until the
measurement meets the budget (a latency must meet it in two timings: with one, the loop stopped on a low draw).
A last, longer fine-tune runs on the shrunk model, which is exported and measured once more as a file: the
report states that measurement, never the prediction.

The rounds are rounds of `tfprune.iterative_pruning` (``rewind="none"``): the proposals are its pruning step,
the measurement its `measure` hook and the budget its `stop` rule, so a killed run resumes from its directory
like IMP. Round 0 fine-tunes the given model as every later round does, so the rounds compare like with like.
"""
import dataclasses
import json
import os
import tempfile
import warnings

import numpy as np

from tfprune._io import atomic_write_file
from tfprune._keras import check_model, load_model, set_random_seed
from tfprune.batch_norm import recalibrate_batch_norm, statistics_layers
from tfprune.costs import (METRICS, CostTable, Runtime, _export, _groups_by_name, cut, group_masks, measure,
                           measure_in_turn, widths)
from tfprune.export import _accuracy, save
from tfprune.lottery import iterative_pruning
from tfprune.mask import strip, with_masks
from tfprune.metrics import count_macs, count_params, format_table
from tfprune.shrink import shrink
from tfprune.unit import kept_count
from tfprune.validation import check_examples, check_int, check_number

__all__ = ["sensitivity", "BudgetResult", "prune_to_budget", "format_budget_report"]

_OWNER = "prune_to_budget"
REPORT_FILE = "report.json"


# -- where to prune -------------------------------------------------------------------------------------------
def sensitivity(model, data, ratios=(0.25, 0.5, 0.75), criterion="l2", metric="latency_ms", runtime="litert",
                threads=1, batch_size=None, exclude=(), round_to=1, cache_dir=None, calibration=None, verbose=1):
    """Prune one channel group at a time to each ratio, without retraining, and evaluate: which groups the model
    can lose channels from, and what each cut saves on `runtime`.

    Coupled layers are one group (named by its first producer; ``layers`` lists them all). The saving comes from
    the group's `CostTable` entry: the whole model measured with that group alone narrowed.
    Example: ``rows = tfprune.sensitivity(model, (x_val, y_val), metric="latency_ms", runtime="litert")``.

    Args:
      model: a trained model of either flavor with logits or probabilities out (not changed).
      data: ``(x, y)`` evaluation data; labels as integers or one-hot.
      ratios: fractions of each group's channels to remove, each in (0, 1).
      criterion: which channels go, a name in `tfprune.criteria.CRITERIA` (criteria that read gradients or
        activations score on `data`).
      metric: what the saving is counted in, one of `tfprune.costs.METRICS`, or None for accuracy only.
      runtime, threads, batch_size: where and how it is measured, as in `tfprune.Runtime`.
      exclude: layer names whose groups stay whole.
      round_to: kept channel counts are multiples of this where possible.
      cache_dir: as in `CostTable.build`.
      calibration: input examples (e.g. 512 training images) on which each cut's batch-normalization
        statistics are recomputed before it is evaluated (`tfprune.recalibrate_batch_norm`): a cut leaves the
        layers after it with statistics of the channels that fed them, which rank cuts by their stale
        statistics rather than by the channels lost. None evaluates each cut with the model's statistics.
      verbose: 1 prints a line per group.

    Returns:
      one dict per group and ratio: ``group``, ``layers``, ``channels``, ``ratio``, ``kept``, ``accuracy``,
      ``accuracy_drop`` (from the unpruned model's) and, with a `metric`, ``saved_<metric>`` and ``saved_fraction``.

    Raises:
      ValueError: a bad argument, or a model without prunable groups.
      TypeError: `model` is not a Keras model, or `calibration` is not an array of examples.

    Warns:
      UserWarning: `calibration` is given but the model has no trainable batch normalization to recompute.
    """
    check_model(model)
    for ratio in ratios:
        check_number(ratio, "ratios", "sensitivity", 0, 1, low_open=True, high_open=True)
    check_int(round_to, "round_to", "sensitivity", 1)
    groups = _groups_by_name(model, exclude, "sensitivity")
    if calibration is not None:
        check_examples(calibration, "calibration", "sensitivity")
        if not statistics_layers(model):
            warnings.warn(f"sensitivity: model '{model.name}' has no trainable batch normalization; `calibration` "
                          "changes nothing (leave it out).", UserWarning, stacklevel=2)
            calibration = None
    kept = {name: {ratio: int(kept_count(group.size, ratio, round_to)) for ratio in ratios}
            for name, group in groups.items()}
    settings = None if metric is None else Runtime(metric, runtime, threads, batch_size)
    table = None if metric is None else CostTable.build(
        model, settings, fractions=(), counts={name: list(by_ratio.values()) for name, by_ratio in kept.items()},
        exclude=exclude, cache_dir=cache_dir, random_settings=0)  # sensitivity reads measured points only
    dense = _accuracy(model, None, data)
    rows = []
    for name, group in groups.items():
        for ratio, count in kept[name].items():
            pruned = with_masks(model, group_masks(model, {name: count}, criterion, data, exclude))
            if calibration is not None:
                recalibrate_batch_norm(pruned, calibration)
            accuracy = _accuracy(pruned, None, data)
            row = {"group": name, "layers": ", ".join(group.producers), "channels": group.size, "ratio": ratio,
                   "kept": count, "accuracy": accuracy, "accuracy_drop": dense - accuracy}
            if table is not None:
                whole = table.measured_cost({})
                saved = whole - table.measured_cost({name: count})
                row.update({f"saved_{metric}": saved, "saved_fraction": saved / whole})
            rows.append(row)
        if verbose:
            print(f"sensitivity: {name} ({group.size} channels): accuracy "
                  + ", ".join(f"{row['accuracy']:.3f}" for row in rows[-len(ratios):])
                  + f" at ratios {', '.join(f'{r:g}' for r in ratios)}")
    return rows


# -- how much to prune ------------------------------------------------------------------------------------
@dataclasses.dataclass
class BudgetResult:
    """What `prune_to_budget` returns.

    Args:
      model: the shrunk, fine-tuned model (or the given model, untouched, when it already met the budget).
      path: the exported file the report measured (None when the model already met the budget).
      rows: one dict per round: the loop's columns (``round``, ``accuracy``, ...) plus the measured cost under
        the metric's name, ``predicted_<metric>`` from the cost table, and ``widths``.
      report: the final measurements (see `prune_to_budget`).
    """
    model: object
    path: object
    rows: list
    report: dict


def _check_budget(budget):
    if not isinstance(budget, dict) or len(budget) != 1 or next(iter(budget)) not in METRICS:
        raise ValueError(f"{_OWNER}: `budget` must be a dict with one of {list(METRICS)}, e.g. {{'latency_ms': 2.0}}, "
                         f"{{'bytes': 1_000_000}} or {{'macs': 5e6}}; got {budget!r}.")
    (metric, value), = budget.items()
    return metric, check_number(value, f"budget['{metric}']", _OWNER, 0, low_open=True)


def _check_data(data, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2 or len(data[0]) != len(data[1]) or not len(data[0]):
        raise ValueError(f"{_OWNER}: `{name}` must be a pair (x, y) of numpy arrays with as many labels as "
                         "examples.")
    return np.asarray(data[0]), np.asarray(data[1])


def _compile_like(model):
    """A compile_fn giving each model a fresh optimizer of `model`'s class and settings, and its loss."""
    optimizer, loss = getattr(model, "optimizer", None), getattr(model, "loss", None)
    if optimizer is None or loss is None:
        raise ValueError(f"{_OWNER}: model '{model.name}' is not compiled and no `compile_fn` was given; the "
                         "fine-tunes need an optimizer and a loss. Compile the model first, or pass "
                         "compile_fn=lambda m: m.compile(optimizer, loss).")

    def compile_fn(network):
        network.compile(optimizer=type(optimizer).from_config(optimizer.get_config()), loss=loss)
    return compile_fn


def _widths_text(current):
    return " ".join(f"{name}:{width}" for name, width in current.items())


def prune_to_budget(model, train_data, eval_data, budget, runtime="litert", *, directory, compile_fn=None,
                    epochs=1, final_epochs=2, batch_size=32, step=None, max_rounds=10, max_pruning_ratio=0.9,
                    round_to=1, criterion="l2", proposal_steps=10, fractions=(0.75, 0.5, 0.25, 0.1), threads=1,
                    latency_batch_size=None, channel_block=None, exclude=(), cache_dir=None, seed=0, verbose=1):
    """Shrink `model` until its cost on `runtime` meets `budget`, round by round (NetAdapt), fine-tune, export and
    measure the file. Resumes from `directory`.

    Each round: the cost table predicts, for every channel group, the widest width that saves ``step``, and the
    smallest common fraction of all groups that saves as much (when no single group's cut saves the step, that
    common fraction is the round's one proposal). Each proposal is measured and the measurement added to the
    table; those measured to save between half and three times the step (if none does, the table proposes again
    from its corrected fit) keep their groups' best channels by `criterion`, are fine-tuned `proposal_steps`
    batches, have their batch-normalization statistics recomputed on up to 512 training examples and are
    evaluated on `eval_data`. The most accurate proposal's masks become the round's, and the loop fine-tunes the model
    `epochs` epochs, shrinks it and measures it afresh (the loop also runs one proposal step on the given model
    before any training, so a step that cannot run fails early). Rounds stop when that measurement meets the
    budget (a latency is timed twice, both within it), or after `max_rounds`. Then the shrunk model is fine-tuned
    `final_epochs` epochs and written to ``directory/model.tflite`` (LiteRT) or ``model.keras`` (Keras), and that
    file is measured. Example:
    ``prune_to_budget(model, (x, y), (x_val, y_val), {"latency_ms": 0.5}, directory="run")``.

    Args:
      model: a trained model of either flavor (not changed).
      train_data: ``(x, y)`` numpy arrays for the fine-tunes.
      eval_data: ``(x, y)`` held-out examples (a validation split, not the test set): they choose among the
        proposals and give the accuracies reported.
      budget: one of ``{"latency_ms": ms}`` (median per call on `runtime`), ``{"bytes": n}`` (the exported file)
        or ``{"macs": n}`` (per example).
      runtime: ``"litert"`` (latency at batch 1, a ``.tflite`` file) or ``"keras"`` (a `tf.function`, batch 32, a
        ``.keras`` file).
      directory: holds the rounds, the exported files and ``report.json``; calling again with the same
        arguments resumes (a larger `max_rounds` continues a run that stopped short of the budget).
      compile_fn: ``compile_fn(model)`` compiles each model fine-tuned; default: a fresh optimizer of the
        class and settings `model` was compiled with, and its loss.
      epochs: fine-tune epochs of each round (round 0 fine-tunes the given model alike).
      final_epochs: fine-tune epochs of the shrunk model at the end.
      batch_size: the fine-tunes' batch size.
      step: the cost each round aims to save, in the budget's unit; default a quarter of the way from the
        model's cost to the budget.
      max_rounds: at most this many pruning rounds.
      max_pruning_ratio: no group loses more than this fraction of its channels; the smallest allowed model
        (every group at that limit) must meet the budget.
      round_to: widths are multiples of this where possible (LiteRT computes channels in blocks of 8).
      criterion: which channels go, a name in `tfprune.criteria.CRITERIA` (data-reading criteria score on up
        to 512 training examples).
      proposal_steps: fine-tune batches of each proposal before it is evaluated (0: evaluate as cut).
      fractions: the widths the cost table measures, as fractions of each group's channels.
      threads: LiteRT threads for latency.
      latency_batch_size: the timed batch (default 1 for LiteRT, 32 for Keras).
      channel_block: the cost table counts widths in blocks of this many channels (`tfprune.Runtime`; default
        8 for LiteRT latency, 1 otherwise).
      exclude: layer names whose groups stay whole.
      cache_dir: where the cost table is cached (see `tfprune.CostTable.build`), with every proposal measured
        (as fractions of the whole model, which each run times afresh).
      seed: seeds the loop's rounds and the proposals' fine-tune batches.
      verbose: 1 shows the loop's progress bar and prints the rounds and the report; 0 is silent (the message
        of a budget already met is a warning either way).

    Returns:
      a `BudgetResult`. Its report holds ``metric``, ``budget``, ``runtime``, ``measured`` (of the exported
      file), ``predicted`` (the table's figure for the final widths), ``dense`` (the given model's cost at the
      start), ``dense_now`` (the given model timed in turn with the file), ``distance`` (measured - budget) and
      ``distance_fraction``, ``met``, ``accuracy_before`` (the given model on `eval_data`), ``accuracy_after``
      (the exported file on `eval_data`), ``rounds``, ``widths``, ``file``, ``params``, ``macs`` and
      ``message``.

    Raises:
      ValueError: a bad argument, an uncompiled model without `compile_fn`, a model without prunable groups, a
        budget that even the smallest allowed model cannot meet (before any training), or `directory` holding
        a run with other settings.
      TypeError: `model` is not a Keras model.
      RuntimeError: no group can be cut further although the budget is not met (measurement noise near the
        smallest allowed model).

    Warns:
      UserWarning: the model already meets the budget (it is returned untouched), or `max_rounds` ended the
        rounds before the budget was met (the report says by how much).
    """
    check_model(model)
    metric, target = _check_budget(budget)
    settings = Runtime(metric, runtime, threads, latency_batch_size, channel_block=channel_block)
    x, y = _check_data(train_data, "train_data")
    eval_data = _check_data(eval_data, "eval_data")
    check_number(max_pruning_ratio, "max_pruning_ratio", _OWNER, 0, 1, low_open=True, high_open=True)
    for number, name in ((epochs, "epochs"), (final_epochs, "final_epochs"), (max_rounds, "max_rounds"),
                         (batch_size, "batch_size"), (round_to, "round_to")):
        check_int(number, name, _OWNER, 1)
    check_int(proposal_steps, "proposal_steps", _OWNER, 0)
    step = None if step is None else check_number(step, "step", _OWNER, 0, low_open=True)
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{_OWNER}: `directory` must be a path, got {type(directory).__name__}.")
    directory = os.fspath(directory)
    compile_fn = compile_fn or _compile_like(model)
    exclude = sorted([exclude] if isinstance(exclude, str) else exclude)
    source = strip(model)  # plain layers: what is measured, and what the loop clones in each round's session
    groups = _groups_by_name(source, exclude, _OWNER)

    floor = {name: int(kept_count(group.size, max_pruning_ratio, round_to)) for name, group in groups.items()}
    # in turn: the refusal below then compares the two at one machine speed, and says what fraction it is
    dense, smallest = measure_in_turn([source, cut(source, floor, exclude=exclude)], settings)
    if dense <= target:
        message = (f"{_OWNER}: model '{model.name}' already meets the budget ({metric} {dense:.4g} <= {target:.4g} "
                   f"on {runtime}); it is returned untouched.")
        warnings.warn(message, UserWarning, stacklevel=2)
        report = {"metric": metric, "budget": target, "runtime": runtime, "measured": dense, "dense": dense,
                  "distance": dense - target, "distance_fraction": dense / target - 1, "met": True,
                  "rounds": 0, "message": message}
        return BudgetResult(model, None, [], report)
    if smallest > target:
        raise ValueError(f"{_OWNER}: the budget {metric} <= {target:.4g} on {runtime} cannot be met: the smallest "
                         f"allowed model (each group keeps {1 - max_pruning_ratio:.0%} of its channels: "
                         f"{_widths_text(floor)}) measures {smallest:.4g}, {smallest / dense:.0%} of the model "
                         f"measured in turn with it ({dense:.4g}), and the budget is {target / dense:.0%} of it. "
                         "Raise the budget or `max_pruning_ratio`, or exclude fewer layers.")
    table = CostTable.build(source, settings, fractions, round_to, {name: [width] for name, width in floor.items()},
                            exclude, cache_dir, verbose=verbose)
    given_step = step  # the run's setting; a default step follows the (noisy) measurement of each call
    step = (dense - target) / 4 if step is None else step

    def cost(current):
        return table.cost(source, settings, current, exclude)

    def measure_round(network):
        """A fresh measurement, not the table's: the table holds the timing that let the round's proposal pass,
        a draw selected for being low. A latency within the budget is timed once more and the row keeps the
        slower of the two: the loop stops on the first row within the budget, so a single timing stops it on a
        low draw, and the exported file then missed a budget its last round had met (ResNet-20: the round
        0.217 ms, the file 0.253 ms, against 0.225)."""
        current = widths(network, groups.values())
        small = cut(source, current, exclude=exclude)
        with tempfile.TemporaryDirectory() as scratch:
            path = _export(small, settings, scratch, "round")
            value = measure(small, settings, path)
            if metric == "latency_ms" and value <= target:
                value = max(value, measure(small, settings, path))
        return {metric: value, f"predicted_{metric}": table.predict(current), "widths": _widths_text(current)}

    calibration = (x[:512], y[:512])

    def propose(network, round_index):
        """NetAdapt's step, with every proposal measured: those measured to save between half and three times the
        wanted step (timing noise) are fine-tuned briefly and the most accurate one wins. The table learns each
        measurement, so when none does it proposes again from the corrected fit (twice at most), and then the
        proposal whose saving is nearest the step (as a ratio) is taken (`_near_step`). Proposals trusted from
        the table alone were ResNet-20's undoing: widths off multiples of 8 predicted to save a step saved a
        third of it on LiteRT."""
        current = widths(network, groups.values())
        # afresh, not the table's figure: that is the timing that let these widths pass as a proposal, a draw
        # selected for being low; in a ResNet-20 run it lay under the budget and the aim went negative
        now = measure(cut(source, current, exclude=exclude), settings)
        for attempt in range(3):
            proposals, wanted = _proposals(table, current, floor, round_to, _aim(now, target, step))
            if not proposals and now <= target:  # the round's measurement was over, this one is not: noise
                warnings.warn(f"{_OWNER}: round {round_index}: every group is at its smallest allowed width and "
                              f"the model measured {now:.4g} <= {target:.4g} now (over it after the last round: "
                              "timing noise); this round cuts nothing, fine-tunes and measures again.",
                              UserWarning, stacklevel=2)
                return {}
            if not proposals:
                raise RuntimeError(f"{_OWNER}: every group is at its smallest allowed width ({_widths_text(floor)}) "
                                   f"but the model measures {now:.4g} > {target:.4g}; the smallest model measured "
                                   f"{smallest:.4g} before, so this is measurement noise: raise the budget a "
                                   "little.")
            savings = [now - cost({**current, **proposal}) for proposal in proposals]
            near_step = _near_step(proposals, savings, wanted, last_try=attempt == 2)
            if near_step:
                break
        rng = np.random.default_rng([seed, round_index])
        best = None
        for proposal in near_step:
            layer_masks = group_masks(network, proposal, criterion, calibration, exclude)
            candidate = with_masks(network, layer_masks)
            if proposal_steps:
                compile_fn(candidate)
                chosen = rng.choice(len(x), min(len(x), proposal_steps * batch_size), replace=False)
                candidate.fit(x[chosen], y[chosen], batch_size=batch_size, epochs=1, verbose=0)
            if statistics_layers(candidate):
                recalibrate_batch_norm(candidate, calibration[0], batch_size)
            accuracy = _accuracy(candidate, None, eval_data)
            if best is None or accuracy > best[0]:
                best = (accuracy, layer_masks)
        return best[1]

    config = {"budget": {metric: target}, "runtime": settings.key(), "step": given_step,
              "max_pruning_ratio": max_pruning_ratio, "round_to": round_to, "criterion": criterion,
              "proposal_steps": proposal_steps, "fractions": list(fractions), "exclude": exclude,
              "channel_block": settings.channel_block}
    trained, rows = iterative_pruning(
        lambda: strip(source), (x, y), compile_fn, {"epochs": epochs, "batch_size": batch_size},
        directory=os.path.join(directory, "rounds"), prune_fn=propose, rounds=max_rounds, rewind="none", seed=seed,
        eval_data=eval_data, prune_config=config, measure=measure_round, stop=lambda row: row[metric] <= target,
        verbose=verbose)
    final = {"rounds": len(rows) - 1, "final_epochs": final_epochs, "loop": config}
    report = _finish(trained, rows, final, compile_fn, (x, y), eval_data, settings, table, target, dense,
                     batch_size, seed, directory, source, verbose)
    if not report["met"]:
        warnings.warn(report["message"], UserWarning, stacklevel=2)
    small = load_model(os.path.join(directory, "model.keras"), compile=False)
    return BudgetResult(small, report["file"], rows, report)


def _aim(now, target, step):
    """What a round aims to save: a step, or the distance left to the budget if that is less. A model measured
    within the budget now (the round measured it over: noise at the budget) aims at a tenth of the step, never at
    a negative saving, which no proposal can be near (`_near_step`)."""
    return min(step, now - target) if now > target else step / 10


def _proposals(table, current, floor, round_to, wanted):
    """The cuts the table predicts to save `wanted` from `current` widths, and the saving they aim at: per group,
    its widest such width, and every group cut by one common fraction (`uniform_cut`). When no single group can
    save `wanted`, the common fraction is the one proposal: halving the aim instead (to what one group can save)
    shrank it round after round on ResNet-20 (0.10 ms, then 0.03, 0.02, ... 0.005), and 12 rounds missed a budget
    10 full steps meet; proposing each group at its narrowest let the proposal saving least win on accuracy.
    Only when the table predicts even the narrowest model short of `wanted` do they aim at half of what the
    best group saves; when it predicts no saving at all, every group's narrowest width is proposed."""
    predicted = table.predict(current)
    allowed = {name: [w for w in range(floor[name], width) if w % round_to == 0 or w == floor[name]]
               for name, width in current.items() if width > floor[name]}
    most = max([predicted - table.predict({**current, name: min(widths)}) for name, widths in allowed.items()],
               default=0.0)
    if most <= 0:
        return [{name: min(widths)} for name, widths in allowed.items()], wanted

    def saves(aim):
        return lambda cut_widths: table.predict(cut_widths) <= predicted - aim

    if most < wanted:
        uniform = uniform_cut(current, floor, round_to, saves(wanted))
        if uniform:
            return [uniform], wanted
        wanted = most / 2
    proposals = [{name: max(saving)} for name, widths in allowed.items()
                 if (saving := [w for w in widths if saves(wanted)({**current, name: w})])]
    uniform = uniform_cut(current, floor, round_to, saves(wanted))
    return proposals + ([uniform] if len(uniform) > 1 else []), wanted  # one group: already proposed alone


def _near_step(proposals, savings, wanted, last_try):
    """The proposals measured to save between half and three times `wanted` (timing noise either way); on the
    last try, if none does, the one whose saving is nearest `wanted` as a ratio. Why an upper bound: ResNet-20's
    uniform proposal predicted to save 0.09 ms saved 0.36 ms (LiteRT's cost falls in cliffs), and the run
    landed at half its budget, less accurate."""
    near = [proposal for proposal, saving in zip(proposals, savings) if wanted / 2 <= saving <= 3 * wanted]
    if near or not last_try:
        return near
    off_step = [abs(np.log(max(saving, 1e-12) / wanted)) for saving in savings]
    return [proposals[int(np.argmin(off_step))]]


def uniform_cut(current, floor, round_to, saves):
    """The smallest common fraction of every group's channels whose cut `saves` (a predicate on the widths), as
    ``{group: width}`` of the groups it narrows ({} if even the floors do not save).

    Why: NetAdapt's one-group proposals drift to uneven widths (ResNet-20's residual streams at 4 channels, its
    inner convolutions whole), which the cost table predicts far too cheap and which measured slower and less
    accurate than uniform pruning; with this proposal competing, a round can always take the uniform step.

    Args:
      current: ``{group: width}`` now.
      floor: ``{group: smallest allowed width}``.
      round_to: widths are multiples of this where possible.
      saves: ``saves(widths)`` is true when the full widths save enough.
    """
    for percent in range(1, 100):
        narrowed = {name: max(floor[name], int(kept_count(width, percent / 100, round_to)))
                    for name, width in current.items()}
        narrowed = {name: width for name, width in narrowed.items() if width < current[name]}
        if narrowed and saves({**current, **narrowed}):
            return narrowed
    return {}


def _finish(trained, rows, final, compile_fn, train_data, eval_data, settings, table, target, dense, batch_size,
            seed, directory, source, verbose):
    """The last fine-tune on the shrunk model, the export and the measured report; skipped when ``report.json``
    already records this run's ending (a resumed run). The file is timed in turn with the given model
    (`source`, stripped), so a file that misses a latency budget says how far the machine's speed moved since
    the start; a VM's drift (16-85% within an hour here) can put a file its last round measured within the
    budget over it minutes later."""
    path = os.path.join(directory, REPORT_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        if stored["final"] == final:
            return stored["report"]
    metric = settings.metric
    small = shrink(trained)
    set_random_seed(seed)
    compile_fn(small)
    small.fit(*train_data, batch_size=batch_size, epochs=final["final_epochs"], verbose=0, shuffle=True)
    if statistics_layers(small):
        recalibrate_batch_norm(small, train_data[0][:512], batch_size)
    formats = tuple(dict.fromkeys((settings.file_format, "keras")))
    exported = save(small, directory, formats=formats, name="model")
    file = exported["artifacts"][settings.file_format]["path"]
    # the given model's file is the one the table exported for its own timings of it
    measured, dense_now = measure_in_turn([small, source], settings, [file, table._whole_file(source, settings)])
    current = widths(trained, _groups_by_name(trained, final["loop"]["exclude"], _OWNER).values())
    met = measured <= target
    if met:
        outcome = "met"
    elif rows[-1][metric] <= target:
        outcome = (f"not met, although the last round's model measured {rows[-1][metric]:.4g} (timing noise, or "
                   "the exported file runs differently from the round's conversion)")
    else:
        outcome = f"not met after {final['rounds']} rounds; call again with a larger max_rounds to continue"
    message = f"{metric} {measured:.4g} measured on the exported file, budget {target:.4g}: {outcome}"
    if not met and metric == "latency_ms":
        message += (f"; the given model, timed in turn with the file, measured {dense_now:.4g} against {dense:.4g} "
                    f"at the start ({dense_now / dense - 1:+.0%}: the machine's speed); the file runs at "
                    f"{measured / dense_now:.0%} of it, the budget was {target / dense:.0%} of it at the start")
    report = {"metric": metric, "budget": target, "runtime": settings.runtime, "measured": measured,
              "predicted": table.predict(current, whole=dense_now), "dense": dense, "dense_now": dense_now,
              "distance": measured - target, "distance_fraction": measured / target - 1, "met": met,
              "accuracy_before": _accuracy(source, None, eval_data),
              "accuracy_after": _accuracy(file, "litert" if settings.runtime == "litert" else None, eval_data),
              "rounds": final["rounds"], "widths": _widths_text(current), "file": file,
              "params": count_params(small), "macs": count_macs(small), "message": message}
    atomic_write_file(path, lambda handle: handle.write(json.dumps({"final": final, "report": report},
                                                                   indent=1).encode()))
    if verbose:
        print(format_table(rows, columns=["round", "accuracy", metric, f"predicted_{metric}", "widths"]))
        print(format_budget_report(report))
    return report


def format_budget_report(report):
    """`prune_to_budget`'s report as a few lines of text.

    Args:
      report: ``BudgetResult.report``.

    Returns:
      the text.
    """
    lines = [report["message"]]
    if "accuracy_after" in report:
        lines.append(f"accuracy {report['accuracy_before']:.4f} -> {report['accuracy_after']:.4f}; {report['metric']} "
                     f"{report['dense']:.4g} -> {report['measured']:.4g} measured ({report['predicted']:.4g} "
                     f"predicted), {report['distance_fraction']:+.1%} from the budget, {report['rounds']} rounds")
        lines.append(f"widths {report['widths']}; {report['params']} params, {report['macs']} MACs; file "
                     f"{report['file']}")
    return "\n".join(lines)
