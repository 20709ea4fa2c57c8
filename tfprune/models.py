"""Reference models used by the seeds, the tests and the benchmarks: functional models of either Keras (Keras 3 by
default)."""
from tfprune._keras import keras, keras_module

_VGG_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def _scaled(channels, width_multiplier):
    return max(1, int(round(channels * width_multiplier)))


def mlp(input_shape=(784,), num_classes=10, hidden=(1000, 1000, 500, 200), seed=None, flavor="keras"):
    """The seeds' MNIST network: 784-1000-1000-500-200-10, ReLU, no biases, logits out.

    Args:
      input_shape: the input's shape without the batch; more than one dimension adds a Flatten.
      num_classes: the width of the ``logits`` layer.
      hidden: the widths of the ReLU layers ``dense_0``, ``dense_1``, ...
      seed: seed of layer i's Glorot initializer is ``seed + i``; None draws fresh weights.
      flavor: "keras" (Keras 3, the default) or "tf_keras" (Keras 2, which TFMOT wraps).

    Returns:
      an uncompiled functional model of `flavor` named ``mlp``.
    """
    keras = keras_module(flavor)

    def init(i):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)

    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", use_bias=False, kernel_initializer=init(i),
                               name=f"dense_{i}")(x)
    outputs = keras.layers.Dense(num_classes, use_bias=False, kernel_initializer=init(len(hidden)),
                                 name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")


def lenet5(input_shape=(28, 28, 1), num_classes=10, filters=(20, 50), hidden=500, flavor="keras"):
    """Caffe's LeNet-5 (conv 20-50, dense 500), the network SSL pruned from 20-50 to 5-19 filters.

    Args:
      input_shape: the image shape without the batch, channels last.
      num_classes: the width of the ``logits`` layer.
      filters: the two 5x5 convolutions' filter counts.
      hidden: the width of the ReLU dense layer.
      flavor: "keras" (Keras 3, the default) or "tf_keras" (Keras 2, which TFMOT wraps).

    Returns:
      an uncompiled functional model of `flavor` named ``lenet5``, logits out.
    """
    keras = keras_module(flavor)
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Conv2D(filters[0], 5, activation="relu", name="conv_0")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_0")(x)
    x = keras.layers.Conv2D(filters[1], 5, activation="relu", name="conv_1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden, activation="relu", name="dense_0")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5")


def vgg(depth=11, width_multiplier=1.0, num_classes=10, input_shape=(32, 32, 3), flavor="keras"):
    """CIFAR-style VGG with BatchNorm; a pooling step that would shrink the map below 1x1 is skipped.

    Args:
      depth: 11 or 16.
      width_multiplier: scales every convolution's filter count (rounded, at least 1).
      num_classes: the width of the ``logits`` layer.
      input_shape: the image shape without the batch, channels last.
      flavor: "keras" (Keras 3, the default) or "tf_keras" (Keras 2, which TFMOT wraps).

    Returns:
      an uncompiled functional model of `flavor` named ``vgg<depth>``, logits out.

    Raises:
      ValueError: an unknown `depth`, or `width_multiplier` <= 0.
    """
    keras = keras_module(flavor)
    if depth not in _VGG_CONFIGS:
        raise ValueError(f"vgg: `depth` must be one of {sorted(_VGG_CONFIGS)}, got {depth!r}.")
    if width_multiplier <= 0:
        raise ValueError(f"vgg: `width_multiplier` must be > 0, got {width_multiplier!r}.")
    inputs = keras.Input(shape=input_shape, name="input")
    x, size, conv_index = inputs, min(input_shape[:2]), 0
    for entry in _VGG_CONFIGS[depth]:
        if entry == "M":
            if size >= 2:
                x = keras.layers.MaxPooling2D(2, name=f"pool_{conv_index}")(x)
                size //= 2
            continue
        x = keras.layers.Conv2D(_scaled(entry, width_multiplier), 3, padding="same", use_bias=False,
                                name=f"conv_{conv_index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{conv_index}")(x)
        x = keras.layers.ReLU(name=f"relu_{conv_index}")(x)
        conv_index += 1
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"vgg{depth}")


def resnet20(num_classes=10, input_shape=(32, 32, 3), widths=(16, 32, 64), blocks_per_stage=3, flavor="keras"):
    """CIFAR ResNet-20 (He et al. 2016) with 1x1-conv projection shortcuts where the shape changes; its
    residual adds make it the reference for coupled channel groups.

    Args:
      num_classes: the width of the ``logits`` layer.
      input_shape: the image shape without the batch, channels last.
      widths: the filter count of each stage (stages after the first halve the map).
      blocks_per_stage: residual blocks per stage (3 gives 20 layers).
      flavor: "keras" (Keras 3, the default) or "tf_keras" (Keras 2, which TFMOT wraps).

    Returns:
      an uncompiled functional model of `flavor` named ``resnet20``, logits out.
    """
    keras = keras_module(flavor)

    def conv_bn(x, filters, strides, name, relu=True, kernel=3):
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input(shape=input_shape, name="input")
    x = conv_bn(inputs, widths[0], 1, "stem")
    for stage, filters in enumerate(widths):
        for block in range(blocks_per_stage):
            name = f"s{stage}b{block}"
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = conv_bn(x, filters, strides, f"{name}_proj", relu=False, kernel=1)
            y = conv_bn(x, filters, strides, f"{name}_a")
            y = conv_bn(y, filters, 1, f"{name}_b", relu=False)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet20")


def model_digest(path):
    """sha256 of a `.keras` archive's ``config.json`` and ``model.weights.h5``: what defines the model.

    The archive's ``metadata.json`` records the save date, so the file's own checksum changes on every save;
    this digest does not, and a retraining that reproduces the weights bit for bit reproduces it.

    Args:
      path: a `.keras` archive.

    Returns:
      the hex digest, a string.

    Raises:
      ValueError: `path` is not a zip archive, or lacks one of the two members.
      FileNotFoundError: `path` does not exist.
    """
    import hashlib
    import zipfile

    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as archive:
            for member in ("config.json", "model.weights.h5"):
                digest.update(archive.read(member))
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path!r} is not a readable .keras archive ({error}).") from error
    return digest.hexdigest()


def pretrained(name, flavor="keras"):
    """A reference model trained by ``pretrained/train.py``, loaded by name after its digest is checked.

    The files live in the repository's ``pretrained/`` folder (next to the package), or in
    ``$TFPRUNE_PRETRAINED_DIR``; ``manifest.json`` there lists each model's file, `model_digest`, seed,
    command, epochs and test accuracy. A digest mismatch raises instead of loading a model that is not the one
    recorded. Example: ``tfprune.models.pretrained("lenet5")``.

    Args:
      name: a model name listed in ``manifest.json``, also the name of its builder in this module.
      flavor: "keras" (Keras 3) or "tf_keras". The files were written by tf_keras; a Keras 3 model is the same
        builder's model in Keras 3 holding the file's weights (the layers and weight order are the same).

    Returns:
      the model, uncompiled.

    Raises:
      FileNotFoundError: no ``manifest.json`` in the folder, or the model's file is missing.
      ValueError: an unknown `name`, or a file that is not a readable `.keras` archive or does not match its
        recorded digest.
    """
    import json
    import os

    keras_module(flavor)  # a bad name raises before any file is read
    directory = os.environ.get("TFPRUNE_PRETRAINED_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
    manifest_path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(
            f"pretrained: no manifest.json in {directory!r}. Use a checkout of the tfprune repository (the files are "
            "not in the pip package), run `python pretrained/train.py` there, or set TFPRUNE_PRETRAINED_DIR to a "
            "folder holding manifest.json and the model files.")
    with open(manifest_path, encoding="utf-8") as handle:
        entries = json.load(handle)["models"]
    if name not in entries:
        raise ValueError(f"pretrained: unknown model {name!r}; choose one of {sorted(entries)}.")
    entry = entries[name]
    path = os.path.join(directory, entry["file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained: {path!r} is listed in the manifest but missing; restore it "
                                f"(git checkout pretrained/) or run `{entry['command']}`.")
    restore = f"Restore it (git checkout pretrained/) or retrain with `{entry['command']}`, which rewrites both."
    try:
        digest = model_digest(path)
    except ValueError as error:
        raise ValueError(f"pretrained: {error} {restore}") from error
    if digest != entry["model_sha256"]:
        raise ValueError(f"pretrained: {path!r} has model digest {digest}, but the manifest records "
                         f"{entry['model_sha256']}; the model was changed or damaged. {restore}")
    saved = keras.models.load_model(path, compile=False)
    if keras_module(flavor) is keras:
        return saved
    twin = globals()[name](input_shape=saved.input_shape[1:], num_classes=saved.output_shape[-1], flavor=flavor)
    twin.set_weights(saved.get_weights())
    return twin
