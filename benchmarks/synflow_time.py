"""Wall time of iterative SynFlow (scoring + pruning) on VGG-16 with CIFAR-shaped input, by phase.

Times `prune_at_init(vgg(16), "synflow", ...)` in one shot and over 100 rounds: building the float64 copy
(setup), the gradient passes (scoring), picking survivors (selection) and building the masked model
(masking). No data is read: SynFlow is data-free. Prints a table and writes JSON.
Usage: python benchmarks/synflow_time.py [--quick] [--compression 100] [--out DIR]
"""
import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune.models import vgg  # noqa: E402
from tfprune.pai import prune_at_init  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="VGG-16 at width 0.5 (a quarter of the weights)")
    parser.add_argument("--compression", type=float, default=100.0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    width = 0.5 if args.quick else 1.0
    model = vgg(16, width_multiplier=width, input_shape=(32, 32, 3))
    weights = sum(int(layer.kernel.shape.num_elements()) for layer in model.layers if hasattr(layer, "kernel"))

    rows = []
    for rounds in (1, 100):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # layer collapse is a column of the table
            started = time.perf_counter()
            _, info = prune_at_init(model, "synflow", 1 - 1 / args.compression, rounds=rounds, return_info=True)
            total = time.perf_counter() - started
        rows.append(dict(rounds=rounds, total_s=total, per_round_s=(info["seconds"]["scoring"]
                                                                    + info["seconds"]["selection"]) / rounds,
                         **{f"{phase}_s": value for phase, value in info["seconds"].items()},
                         achieved_sparsity=info["achieved_sparsity"], collapsed_layers=info["collapsed_layers"]))

    print(f"VGG-16 (width {width}, {weights:,} prunable weights, input 32x32x3), compression {args.compression:g}, "
          f"global scope, float64{' [quick]' if args.quick else ''}")
    print(f"{'rounds':>6} {'total s':>8} {'setup':>7} {'scoring':>8} {'select':>7} {'masking':>8} {'s/round':>8}  "
          f"sparsity  collapsed")
    for r in rows:
        print(f"{r['rounds']:>6} {r['total_s']:>8.2f} {r['setup_s']:>7.2f} {r['scoring_s']:>8.2f} "
              f"{r['selection_s']:>7.2f} {r['masking_s']:>8.2f} {r['per_round_s']:>8.3f}  "
              f"{r['achieved_sparsity']:.4f}    {','.join(r['collapsed_layers']) or '-'}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"synflow_time{'_quick' if args.quick else ''}.json")
    with open(path, "w") as handle:
        json.dump({"config": dict(model="vgg16", width_multiplier=width, input_shape=[32, 32, 3],
                                  prunable_weights=weights, compression=args.compression, quick=args.quick,
                                  cpu_count=os.cpu_count()), "rows": rows}, handle, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
