"""Structured-pruning coverage: every keras.applications model and hand-built sequence/normalization models.

For each model (weights=None, the smallest input it accepts, logits): build the channel graph, mask 30% of the
channels of every prunable group (`oneshot(method="unit")`), `shrink`, export the shrunk model to TFLite, and
compare: shrunk vs masked Keras outputs (relative max diff, goal <= 1e-4) and TFLite vs shrunk Keras (goal
<= 1e-3). A model passes when both hold and parameters dropped. Writes a table and JSON to --out.
`--flavor keras` runs Keras 3's applications and the same hand-built models built with Keras 3.
Each model is measured in a process of its own, and the JSON is written after each one, so a rerun resumes.
Usage: python benchmarks/coverage.py [--flavor tf_keras|keras] [--models NAME ...] [--quick] [--out benchmarks/results]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from tfprune._keras import keras_module, tf  # noqa: E402
from tfprune.bench import predict  # noqa: E402
from tfprune.metrics import format_table  # noqa: E402

INPUT_SIZES = (32, 75, 96, 224, 331)  # the first one the constructor accepts
# One per family, for --quick.
QUICK = ("ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "InceptionResNetV2", "InceptionV3",
         "MobileNet", "MobileNetV2", "MobileNetV3Small", "NASNetMobile", "RegNetX002", "RegNetY002", "ResNet50",
         "ResNet50V2", "ResNetRS50", "VGG16", "Xception")


def application(keras, name):
    build = getattr(keras.applications, name)
    for size in INPUT_SIZES:
        try:
            return build(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)
        except ValueError:
            continue
    raise ValueError(f"{name}: no input size in {INPUT_SIZES} accepted")


def transformer_encoder(keras, seq=8, width=32, heads=4, ffn=64, classes=5):
    L = keras.layers
    inputs = keras.Input((seq, width))
    attended = L.MultiHeadAttention(heads, width // heads, name="attention")(inputs, inputs)
    x = L.LayerNormalization(name="norm1")(L.Add(name="residual1")([inputs, attended]))
    hidden = L.Dense(ffn, activation="relu", name="ffn1")(x)
    x = L.LayerNormalization(name="norm2")(L.Add(name="residual2")([x, L.Dense(width, name="ffn2")(hidden)]))
    return keras.Model(inputs, L.Dense(classes, name="logits")(L.GlobalAveragePooling1D(name="pool")(x)))


def text_rnn(keras, cell, seq=12, vocab=50, classes=4):
    L = keras.layers
    cell = getattr(L, cell)
    inputs = keras.Input((seq,), dtype="int32")
    x = L.Embedding(vocab, 16, name="embedding")(inputs)
    x = cell(24, return_sequences=True, name="rnn1")(x)
    x = cell(16, name="rnn2")(x)
    return keras.Model(inputs, L.Dense(classes, name="logits")(L.Dense(32, activation="relu", name="hidden")(x)))


def group_norm_cnn(keras):
    L = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    x = L.ReLU(name="relu1")(L.GroupNormalization(16, name="instance_norm")(x))
    x = L.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = L.ReLU(name="relu2")(L.GroupNormalization(4, name="group_norm")(x))
    return keras.Model(inputs, L.Dense(10, name="logits")(L.GlobalAveragePooling2D(name="pool")(x)))


def unet(keras, size=32):
    L = keras.layers
    inputs = keras.Input((size, size, 3))
    down1 = L.Conv2D(16, 3, padding="same", activation="relu", name="down1")(inputs)
    down2 = L.Conv2D(32, 3, padding="same", activation="relu", name="down2")(L.MaxPooling2D(name="pool1")(down1))
    up = L.Conv2DTranspose(16, 2, strides=2, name="up")(down2)
    x = L.Concatenate(name="skip")([up, down1])
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="fuse")(x)
    return keras.Model(inputs, L.Conv2D(2, 1, name="logits")(x))


HAND_BUILT = {"transformer_encoder": transformer_encoder, "lstm_text": lambda keras: text_rnn(keras, "LSTM"),
              "gru_text": lambda keras: text_rnn(keras, "GRU"), "group_norm_cnn": group_norm_cnn, "unet": unet}


def inputs_for(model, count=2):
    rng = np.random.default_rng(0)
    spec = model.inputs[0]
    if tf.as_dtype(spec.dtype).is_integer:
        return rng.integers(0, 50, size=(count,) + tuple(spec.shape[1:])).astype("int32")
    return rng.uniform(0, 1, size=(count,) + tuple(spec.shape[1:])).astype("float32")


def relative_diff(reference, other):
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    return float(np.abs(reference - other).max() / max(np.abs(reference).max(), 1e-12))


def check(name, build, directory):
    """One row of the table; any exception becomes the row's status."""
    started = time.perf_counter()
    row = {"model": name}
    try:
        model = build()
        graph = tfprune.graph.build_channel_graph(model)
        row["groups"] = f"{len(graph.prunable_groups())}/{len(graph.groups)}"
        row["params_before"] = model.count_params()
        masked = tfprune.oneshot(model, method="unit", sparsity=0.3)
        shrunk = tfprune.shrink(masked)
        row["params_after"] = shrunk.count_params()
        x = inputs_for(model)
        expected = np.asarray(shrunk(x))
        row["max_diff"] = relative_diff(masked(x), expected)
        report = tfprune.export.save(shrunk, directory, formats=("tflite",), name=name)
        litert = predict(report["artifacts"]["tflite"]["path"], x, backend="litert")
        row["tflite_diff"] = relative_diff(expected, litert)
        passed = row["max_diff"] <= 1e-4 and row["tflite_diff"] <= 1e-3 and row["params_after"] < row["params_before"]
        row["status"] = "pass" if passed else "FAIL: outputs differ or nothing removed"
    except Exception as error:  # a row per model, whatever stops it
        row["status"] = f"FAIL: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        traceback.print_exc()
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def run_in_subprocess(name, flavor):
    """One model's row, measured in a fresh process: the largest models' graphs and traced functions leave
    memory a long single process would accumulate, and a crash costs one row, not the table."""
    command = [sys.executable, os.path.abspath(__file__), "--flavor", flavor, "--one", name]
    result = subprocess.run(command, capture_output=True, text=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
    if not rows:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "status": f"FAIL: process exited {result.returncode}: {tail[:160]}"}
    return json.loads(rows[-1][4:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="application class names or hand-built model names")
    parser.add_argument("--quick", action="store_true", help="one application per family plus the hand-built models")
    parser.add_argument("--flavor", choices=("tf_keras", "keras"), default="tf_keras",
                        help="the Keras the models are built with (keras: Keras 3)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # measure one model in this process, print its row
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")
    keras = keras_module(args.flavor)
    builders = {name: (lambda name=name: application(keras, name))
                for name in sorted(n for n in dir(keras.applications) if n[0].isupper())}
    builders.update({name: (lambda build=build: build(keras)) for name, build in HAND_BUILT.items()})
    if args.one:
        with tempfile.TemporaryDirectory() as directory:
            print("ROW " + json.dumps(check(args.one, builders[args.one], directory)), flush=True)
        return
    # Keras 3's applications have no RegNet or ResNetRS: --quick takes the families this flavor has.
    quick = [name for name in QUICK if name in builders] + list(HAND_BUILT)
    names = args.models or (quick if args.quick else list(builders))
    unknown = [name for name in names if name not in builders]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(builders)}")
    suffix = ("_keras3" if args.flavor == "keras" else "") + ("_quick" if args.quick and not args.models else "")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"coverage{suffix}.json")
    done = {}
    if os.path.exists(path):  # a rerun measures only the models the file does not hold yet
        with open(path) as handle:
            done = {row["model"]: row for row in json.load(handle)["rows"]}
    for name in names:
        if name not in done:
            done[name] = run_in_subprocess(name, args.flavor)
            print(format_table([done[name]]), flush=True)
            with open(path, "w") as handle:
                json.dump({"rows": list(done.values())}, handle, indent=1)
    rows = [done[name] for name in names]
    columns = ["model", "groups", "params_before", "params_after", "max_diff", "tflite_diff", "status", "seconds"]
    table = format_table(rows, columns)
    passed = sum(row["status"] == "pass" for row in rows)
    print(f"\n{table}\n\n{passed}/{len(rows)} pass")
    with open(path, "w") as handle:
        json.dump({"rows": rows, "passed": passed, "total": len(rows)}, handle, indent=1)
    with open(os.path.join(args.out, f"coverage{suffix}.txt"), "w") as handle:
        handle.write(table + f"\n\n{passed}/{len(rows)} pass\n")


if __name__ == "__main__":
    main()
