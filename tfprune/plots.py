"""Every figure tfprune draws: a study's rows (accuracy, per-layer sparsity, size and latency against
sparsity), `imp`'s rounds, `export.compare`'s variants and a `tfprune.sensitivity` table.

Drawn on Agg canvases (no display, no global pyplot state, so the caller's matplotlib backend is left alone)
and written atomically, so a figure on disk is always complete. Points are means over seeds; the bars around
them span the seeds' minimum and maximum. Sparsity axes show the fraction left on a log scale, sparser to the
right, so 90%, 99% and 99.9% (pruning at initialization) are as far apart as 0% and 90%.
"""
import os

import numpy as np

from tfprune._io import atomic_write

__all__ = ["accuracy_vs_sparsity", "layer_sparsity", "size_latency", "study_plots", "imp", "compare", "sensitivity"]


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    path = os.fspath(path)
    image_format = os.path.splitext(path)[1][1:] or "png"
    atomic_write(path, lambda temp: figure.savefig(temp, format=image_format, dpi=120))
    return path


def _methods(rows):
    return list(dict.fromkeys(row["method"] for row in rows))


def _series(rows, method, key, scale=1.0):
    """% left (100 - k) and the mean, min and max of `key` over seeds, for one method; None values skipped."""
    by_left = {}
    for row in rows:
        if row["method"] == method and row.get(key) is not None:
            by_left.setdefault(100 * (1 - row["sparsity"]), []).append(row[key] / scale)
    left = sorted(by_left)
    values = [np.asarray(by_left[k]) for k in left]
    return (np.array(left), np.array([v.mean() for v in values]), np.array([v.min() for v in values]),
            np.array([v.max() for v in values]))


def _plot_lines(axes, rows, key, scale=1.0):
    ticks = set()
    for method in _methods(rows):
        left, mean, low, high = _series(rows, method, key, scale)
        if len(left):
            axes.errorbar(left, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=method)
            ticks.update(left)
    axes.set_xscale("log")
    labelled = []  # ticks at least a factor 1.5 apart, so their labels never overlap on the log axis
    for tick in sorted(ticks, reverse=True):
        if not labelled or labelled[-1] / tick >= 1.5:
            labelled.append(tick)
    axes.set_xticks(labelled, [f"{tick:g}" for tick in labelled])
    axes.minorticks_off()
    axes.invert_xaxis()
    axes.set_xlabel("% of the weights (or units) left, 100 - k")
    axes.grid(alpha=0.3)


def _check(rows, caller):
    if not rows:
        raise ValueError(f"{caller}: `rows` is empty; plot the rows of a finished run (Study.run, export.compare).")


def accuracy_vs_sparsity(rows, path, title="Test accuracy against sparsity"):
    """One line per method; the dense models' mean accuracy, where rows hold one, is the dashed line.

    Args:
      rows: dicts with ``method``, ``sparsity``, ``seed`` and ``accuracy`` (optionally ``dense_accuracy``), as a
        study's rows have.
      path: the image file to write; its suffix picks the format (default png).
      title: the figure's title.

    Returns:
      `path`.

    Raises:
      ValueError: `rows` is empty.
    """
    _check(rows, "accuracy_vs_sparsity")
    figure = _figure(7, 4.5)
    axes = figure.add_subplot()
    _plot_lines(axes, rows, "accuracy")
    dense = {row["seed"]: row["dense_accuracy"] for row in rows if row.get("dense_accuracy") is not None}
    if dense:
        axes.axhline(np.mean(list(dense.values())), linestyle="--", color="grey", label="dense")
    axes.set_ylabel("test accuracy")
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(figure, path)


def layer_sparsity(rows, path, sparsity=None):
    """Grouped bars: each layer's fraction of zero weights per method, at one sparsity (first seed).

    Args:
      rows: study rows (with their ``layers``).
      path: the image file to write.
      sparsity: the sparsity to show; None takes the largest one every method ran at (or the largest overall
        if they share none).

    Returns:
      `path`.

    Raises:
      ValueError: `rows` is empty or has no row at `sparsity`.
    """
    _check(rows, "layer_sparsity")
    methods = _methods(rows)
    if sparsity is None:
        shared = set.intersection(*({row["sparsity"] for row in rows if row["method"] == m} for m in methods))
        sparsity = max(shared or {row["sparsity"] for row in rows})
    first_seed = min(row["seed"] for row in rows)
    chosen = {row["method"]: row for row in rows
              if row["seed"] == first_seed and abs(row["sparsity"] - sparsity) < 1e-9}
    if not chosen:
        raise ValueError(f"layer_sparsity: no row at sparsity {sparsity!r}; the rows have "
                         f"{sorted({row['sparsity'] for row in rows})}.")
    layers = list(dict.fromkeys(name for row in chosen.values() for name in row["layers"]))
    figure = _figure(max(6, 1.2 * len(layers)), 4)
    axes = figure.add_subplot()
    x = np.arange(len(layers))
    width = 0.8 / len(chosen)
    for i, (method, row) in enumerate(chosen.items()):
        values = [row["layers"].get(name, {}).get("sparsity", np.nan) for name in layers]
        axes.bar(x + (i - (len(chosen) - 1) / 2) * width, values, width, label=method)
    axes.set_xticks(x, layers, rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("fraction of weights that are zero")
    axes.set_title(f"Per-layer sparsity at k={100 * sparsity:g}% (seed {first_seed})")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(figure, path)


def size_latency(rows, path):
    """Zipped file size against sparsity and, where the rows hold latencies, latency against sparsity.

    Args:
      rows: study rows.
      path: the image file to write.

    Returns:
      `path`.

    Raises:
      ValueError: `rows` is empty.
    """
    _check(rows, "size_latency")
    timed = [row for row in rows if row.get("latency_ms") is not None]
    figure = _figure(12 if timed else 6.5, 4)
    axes = figure.add_subplot(1, 2 if timed else 1, 1)
    _plot_lines(axes, rows, "zipped_bytes", 1024.0)
    axes.set_ylabel(f"zip-deflated {rows[0]['size_format']} file (KiB)")
    axes.set_title("Compressed size")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if timed:
        axes = figure.add_subplot(1, 2, 2)
        _plot_lines(axes, timed, "latency_ms")
        axes.set_ylabel("median latency (ms)")
        axes.set_title("Latency (zeros alone do not make a dense kernel faster)")
    return _save(figure, path)


def study_plots(rows, directory):
    """A study's three figures as PNGs.

    Args:
      rows: study rows.
      directory: the folder for accuracy.png, layers.png and size_latency.png (created if missing).

    Returns:
      ``{"accuracy" | "layers" | "size_latency": path}``.

    Raises:
      ValueError: `rows` is empty.
    """
    os.makedirs(directory, exist_ok=True)
    return {"accuracy": accuracy_vs_sparsity(rows, os.path.join(directory, "accuracy.png")),
            "layers": layer_sparsity(rows, os.path.join(directory, "layers.png")),
            "size_latency": size_latency(rows, os.path.join(directory, "size_latency.png"))}


def imp(results_by_mode, path, title="Iterative magnitude pruning"):
    """Accuracy against the kernel weights left, one line per run of `tfprune.imp`.

    Args:
      results_by_mode: ``{label: rows}``, the rows `imp` returned.
      path: the image file to write.
      title: the figure's title.

    Returns:
      `path`.

    Raises:
      ValueError: empty results, or rows without ``remaining`` and ``accuracy``.
    """
    if not isinstance(results_by_mode, dict) or not results_by_mode:
        raise ValueError("plots.imp: `results_by_mode` must be a non-empty dict {label: imp() rows}.")
    for label, rows in results_by_mode.items():
        if not rows or not all(isinstance(row, dict) and {"remaining", "accuracy"} <= set(row) for row in rows):
            raise ValueError(f"plots.imp: results for {label!r} must be imp() rows with 'remaining' and 'accuracy'.")
    return accuracy_vs_sparsity([{"method": label, "sparsity": 1 - row["remaining"], "seed": 0,
                                  "accuracy": row["accuracy"]} for label, rows in results_by_mode.items()
                                 for row in rows], path, title)


def compare(rows, path):
    """Bar charts of zipped size, MACs, latency and accuracy per variant.

    Args:
      rows: the rows `tfprune.export.compare` returned.
      path: the image file to write.

    Returns:
      `path`.

    Raises:
      ValueError: `rows` is empty.
    """
    _check(rows, "compare")
    names = [row["variant"] for row in rows]
    x = np.arange(len(names))

    def values(key, scale=1.0):
        return np.array([np.nan if row.get(key) is None else row[key] / scale for row in rows], dtype=float)

    figure = _figure(12, 3.2)
    # Latency is on a log axis: TF at batch N and LiteRT at batch 1 differ by orders of magnitude.
    panels = [("zipped size (KiB)", False, [("zipped_bytes", 1024.0, None)]),
              ("MACs per example (M)", False, [("macs", 1e6, None)]),
              ("latency, median (ms)", True, [("tf_ms", 1.0, "TF batch"), ("litert_ms", 1.0, "LiteRT batch 1")]),
              ("accuracy", False, [("accuracy", 1.0, None)])]
    for index, (title, log, series) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        width = 0.8 / len(series)
        for k, (key, scale, label) in enumerate(series):
            axes.bar(x + (k - (len(series) - 1) / 2) * width, values(key, scale), width, label=label)
        axes.set_title(title)
        axes.set_xticks(x, names, rotation=30, ha="right")
        if log:
            axes.set_yscale("log")
            axes.legend(fontsize="small")
    return _save(figure, path)


def sensitivity(rows, path):
    """Accuracy against the fraction of channels removed, one line per channel group, and beside it what each cut
    saves (when the rows have a saving): where a model can lose channels cheaply.

    Args:
      rows: the rows `tfprune.sensitivity` returned.
      path: the image file to write.

    Returns:
      `path`.

    Raises:
      ValueError: `rows` is empty.
    """
    _check(rows, "sensitivity")
    saved = next((key for key in rows[0] if key.startswith("saved_") and key != "saved_fraction"), None)
    figure = _figure(10 if saved else 5, 3.5)
    panels = [("accuracy", "accuracy without retraining")] + ([("saved_fraction", f"{saved[6:]} saved (fraction)")]
                                                              if saved else [])
    for index, (key, title) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for group in dict.fromkeys(row["group"] for row in rows):
            mine = [row for row in rows if row["group"] == group]
            axes.plot([row["ratio"] for row in mine], [row[key] for row in mine], marker="o", label=group)
        axes.set_xlabel("fraction of the group's channels removed")
        axes.set_title(title)
    axes.legend(fontsize="small")
    return _save(figure, path)

