"""CPU latency gained by shrinking filter-pruned CIFAR VGG-11 and ResNet-20, against the ideal MAC ratio.

Each model loses 25/50/75% of the filters of every prunable group (`prune_units` with ConstantSparsity and
one pruning step of the callback; no training, latency does not depend on the values), then `shrink` removes
them. Timed against the unpruned model in the same process, interleaved (`bench.compare_latency`): Keras
`tf.function` at batch 32 and LiteRT at batch 1, both on one thread. "% of ideal" is speedup / MAC ratio.
For reference, each level also times the same network built narrow from scratch (every width times the kept
fraction, rounded like the pruner rounds): what a network of that size reaches on this CPU at all.
Usage: python benchmarks/shrink_latency.py [--quick] [--round-to 8] [--out benchmarks/results]
"""
import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune import bench  # noqa: E402

bench.set_threads(1)  # TensorFlow fixes its thread pools at its first op

import tfprune  # noqa: E402
from tfprune._keras import keras, tf  # noqa: E402
from tfprune.metrics import count_macs, count_params, format_table  # noqa: E402
from tfprune.shrink import shrink  # noqa: E402
from tfprune.unit import kept_count  # noqa: E402

MODELS = {"vgg11": lambda: tfprune.models.vgg(11), "resnet20": lambda: tfprune.models.resnet20()}
# The same networks built narrow: (fraction of filters removed, round_to) -> model. VGG's width multiplier
# gives multiples of 8 and 16 at 25/50/75%, as the pruner's rounding does.
NARROW = {"vgg11": lambda removed, round_to: tfprune.models.vgg(11, width_multiplier=1.0 - removed),
          "resnet20": lambda removed, round_to: tfprune.models.resnet20(
              widths=tuple(kept_count(width, removed, round_to) for width in (16, 32, 64)))}
REMOVED = (0.25, 0.5, 0.75)


def shrunk(model, removed, round_to):
    pruned = tfprune.prune_units(model, tfprune.ConstantSparsity(removed, 0, frequency=1), round_to=round_to)
    callback = tfprune.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    return shrink(pruned, round_to=round_to)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (a smoke run, timings are rough)")
    parser.add_argument("--round-to", type=int, default=8, help="kept filters are multiples of this")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # one tf.function per timed model is intended, not retracing
    keras_runs, litert_runs = ((2, 5), (5, 20)) if args.quick else ((5, 30), (20, 200))
    rows = []
    for name, build in MODELS.items():
        keras.utils.set_random_seed(0)
        variants = {"dense": build()}
        for removed in REMOVED:
            variants[f"{removed:.0%}"] = shrunk(variants["dense"], removed, args.round_to)
            variants[f"{removed:.0%} narrow"] = NARROW[name](removed, args.round_to)
        keras_ms = bench.compare_latency(variants, batch_size=32, warmup=keras_runs[0], repeats=keras_runs[1])
        litert_ms = bench.compare_latency(variants, backend="litert", threads=1, warmup=litert_runs[0],
                                          repeats=litert_runs[1])
        dense_macs = count_macs(variants["dense"])
        for label, model in variants.items():
            if label == "dense":
                continue
            mac_ratio = dense_macs / count_macs(model)
            keras_speedup = keras_ms["dense"]["median_ms"] / keras_ms[label]["median_ms"]
            litert_speedup = litert_ms["dense"]["median_ms"] / litert_ms[label]["median_ms"]
            removed, _, narrow = label.partition(" ")
            rows.append({"model": name, "removed": removed, "built": "from scratch" if narrow else "shrink",
                         "params": count_params(model), "mac_ratio": mac_ratio,
                         "keras_ms": keras_ms[label]["median_ms"], "keras_speedup": keras_speedup,
                         "keras_%ideal": 100 * keras_speedup / mac_ratio,
                         "litert_ms": litert_ms[label]["median_ms"], "litert_speedup": litert_speedup,
                         "litert_%ideal": 100 * litert_speedup / mac_ratio,
                         "dense_keras_ms": keras_ms["dense"]["median_ms"],
                         "dense_litert_ms": litert_ms["dense"]["median_ms"]})
    print(f"Keras tf.function batch 32 and LiteRT batch 1, 1 thread, round_to={args.round_to}"
          f"{' (quick: rough timings)' if args.quick else ''}")
    print(format_table(rows, columns=["model", "removed", "built", "params", "mac_ratio", "keras_speedup",
                                      "keras_%ideal", "litert_speedup", "litert_%ideal", "keras_ms", "litert_ms"]))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"shrink_latency{'_quick' if args.quick else ''}.json")
    with open(path, "w") as handle:
        json.dump({"quick": args.quick, "round_to": args.round_to, "threads": 1, "keras_batch": 32,
                   "litert_batch": 1, "keras_runs": keras_runs, "litert_runs": litert_runs, "rows": rows},
                  handle, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
