"""Group lasso + proximal step on LeNet-5 (mnist_5k): filters removed, accuracy, params, MACs, CPU latency.

Pipeline (Wen et al. 2016, SSL): train dense → retrain with a filter-wise group-lasso penalty and the
proximal step (groups become exactly zero) → threshold → `shrink` → fine-tune the narrower model.
All figures come from this one run. Usage: python benchmarks/group_lasso_lenet.py [--quick] [--strength S]
"""
import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras  # noqa: E402


def compiled(model, lr):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), axis=1) == y))


def filters(model):
    return {layer.name: int(layer.filters) for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, for a smoke run")
    parser.add_argument("--strength", type=float, default=0.3)
    parser.add_argument("--penalty", choices=("prox", "both"), default="prox",
                        help="proximal step only (default) or also the group-lasso loss term")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    epochs = (1, 1, 1) if args.quick else (10, 15, 5)
    tfprune.bench.set_threads(1)  # before any op runs: latency is compared at one thread
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = tfprune.data.mnist_5k(flatten=False)

    dense = compiled(tfprune.models.lenet5(), 1e-3)
    dense.fit(x_train, y_train, batch_size=64, epochs=epochs[0], verbose=0)
    dense_accuracy = accuracy(dense, x_test, y_test)

    # With Adam, a loss penalty moves every weight at about the learning rate whatever its size, so it kills
    # small layers first; the proximal step alone shrinks each group by lr * strength * sqrt(|g|) per step,
    # the same fraction of Adam's largest per-step growth in every layer. "--penalty both" adds the loss term.
    base = tfprune.apply_group_lasso(dense, args.strength, groups="filter") if args.penalty == "both" \
        else tfprune.strip(dense)
    sparse = compiled(base, 1e-3)
    sparse.fit(x_train, y_train, batch_size=64, epochs=epochs[1], verbose=0,
               callbacks=[tfprune.ProximalGroupLasso(args.strength, groups="filter")])
    report = tfprune.group_sparsity_report(sparse, groups="filter")
    print(tfprune.regularizers.format_group_sparsity(report))
    sparse_accuracy = accuracy(sparse, x_test, y_test)

    small = compiled(tfprune.shrink(tfprune.threshold_groups(sparse, groups="filter", tolerance=1e-3)), 3e-4)
    shrunk_accuracy = accuracy(small, x_test, y_test)
    small.fit(x_train, y_train, batch_size=64, epochs=epochs[2], verbose=0)
    tuned_accuracy = accuracy(small, x_test, y_test)

    latency = tfprune.bench.compare_latency({"dense": dense, "shrunk": small}, batch_size=32, backend="keras")
    before, after = filters(dense), filters(small)
    removed = 1 - sum(after.values()) / sum(before.values())
    result = {
        "strength": args.strength, "penalty": args.penalty, "filters_before": before, "filters_after": after,
        "filters_removed_fraction": removed,
        "params": [tfprune.metrics.count_params(dense), tfprune.metrics.count_params(small)],
        "macs": [tfprune.metrics.count_macs(dense), tfprune.metrics.count_macs(small)],
        "accuracy": {"dense": dense_accuracy, "group_lasso": sparse_accuracy, "shrunk": shrunk_accuracy,
                     "shrunk_finetuned": tuned_accuracy},
        "keras_batch32_ms": {name: row["median_ms"] for name, row in latency.items()},
    }
    print(f"\nfilters per conv layer: {before} -> {after}  ({removed:.0%} removed)")
    print(f"params {result['params'][0]:,} -> {result['params'][1]:,}; MACs {result['macs'][0]:,} -> "
          f"{result['macs'][1]:,} ({result['macs'][0] / result['macs'][1]:.2f}x fewer)")
    print("accuracy: dense {dense:.4f} | group lasso {group_lasso:.4f} | shrunk {shrunk:.4f} | "
          "shrunk + fine-tune {shrunk_finetuned:.4f}".format(**result["accuracy"]))
    ms = result["keras_batch32_ms"]
    print(f"Keras tf.function batch 32, 1 thread: dense {ms['dense']:.2f} ms, shrunk {ms['shrunk']:.2f} ms "
          f"({ms['dense'] / ms['shrunk']:.2f}x)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "group_lasso_lenet.json"), "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
