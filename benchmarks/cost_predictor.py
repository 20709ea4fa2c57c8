"""How well a `tfprune.CostTable` predicts the LiteRT latency of pruned models it never measured.

For VGG-11 and ResNet-20 (28x28x1 inputs) and MobileNetV2 (alpha 0.35, 96x96x3; weights=None): build the cost
table (LiteRT batch 1, one thread, cached on disk like any table: its points are fractions of the whole model),
then draw random widths, shrink, measure, and compare with the prediction. Two draws per model: widths that are
multiples of `--round-to` (what `prune_to_budget` chooses with that setting) and any widths. Each sample is
timed in turn with the dense model (15 passes, medians) and the prediction is the table's fraction times that
timing of the dense model; the dense model's drift from the table's timing of it is reported beside. Weights
do not change latency, so the models are untrained. Writes a table and JSON (with every sample) to --out.
Usage: python benchmarks/cost_predictor.py [--models vgg11,resnet20,mobilenetv2] [--samples 8] [--round-to 8]
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune import costs  # noqa: E402
from tfprune._keras import keras_module  # noqa: E402
from tfprune.metrics import format_table  # noqa: E402

MODELS = {"vgg11": lambda: tfprune.models.vgg(11, input_shape=(28, 28, 1)),
          "resnet20": lambda: tfprune.models.resnet20(input_shape=(28, 28, 1)),
          "mobilenetv2": lambda: keras_module("keras").applications.MobileNetV2(
              alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None)}
RUNTIME = costs.Runtime("latency_ms", "litert", threads=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--samples", type=int, default=8, help="random width settings per draw")
    parser.add_argument("--round-to", type=int, default=8, help="the table's and the first draw's round_to")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows, details = [], {}
    for name in args.models.split(","):
        model = MODELS[name]()
        started = time.perf_counter()
        table = costs.CostTable.build(model, RUNTIME, round_to=args.round_to)
        built = time.perf_counter() - started
        details[name] = {"table": table.path, "points": len(table.points), "build_seconds": built, "draws": {}}
        for round_to in (args.round_to, 1):
            samples = costs.predictor_error(model, table, RUNTIME, samples=args.samples, seed=1, round_to=round_to)
            rows.append({"model": name, "groups": len(table.sizes), "points": len(table.points),
                         "widths": f"multiples of {round_to}" if round_to > 1 else "any",
                         "dense_ms": table.whole, **error_summary(samples)})
            details[name]["draws"][str(round_to)] = samples
            write(args, rows, details)


def error_summary(samples):
    """Mean and largest |error|, the bias, and the largest drift of the dense model timed beside the samples."""
    errors = np.array([sample["error"] for sample in samples])
    return {"mean_abs_error": float(np.mean(np.abs(errors))), "max_abs_error": float(np.max(np.abs(errors))),
            "bias": float(np.mean(errors)), "max_abs_drift": float(np.max(np.abs([s["drift"] for s in samples])))}


def write(args, rows, details):
    print("LiteRT batch 1, one thread: cost-table predictions vs measured latency of the shrunk models")
    print(format_table(rows, columns=["model", "groups", "points", "widths", "dense_ms", "mean_abs_error",
                                      "max_abs_error", "bias", "max_abs_drift"]))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cost_predictor.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"settings": vars(args), "rows": rows, "details": details}, handle, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
