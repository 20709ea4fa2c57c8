"""tfprune must stay on tf_keras (TFMOT 0.8 rejects Keras 3 objects): the boundary checks and the import rule."""
import pathlib
import re

import numpy as np
import pytest

from tfprune._keras import check_layer, check_model, keras

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfprune"


@pytest.fixture(scope="module")
def keras3():
    """The separately installed Keras 3 package, which users easily import by mistake."""
    import keras as keras3_module

    assert keras3_module.__version__.startswith("3."), "this test needs Keras 3 installed as `keras`"
    return keras3_module


def test_check_model_accepts_tf_keras_models():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert check_model(model) is model
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert check_model(functional) is functional


def test_check_model_rejects_keras3_model(keras3):
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match="tf_keras") as caught:
        check_model(model, argument="base")
    assert "`base`" in str(caught.value) and "Keras 3" in str(caught.value)


@pytest.mark.parametrize("not_a_model", [None, np.zeros(3), "model.h5"])
def test_check_model_rejects_non_models(not_a_model):
    with pytest.raises(TypeError, match="`model` must be a tf_keras Model"):
        check_model(not_a_model)


def test_check_model_rejects_a_bare_layer():
    with pytest.raises(TypeError, match="tf_keras Model.*got Dense"):
        check_model(keras.layers.Dense(2))


def test_check_layer_accepts_tf_keras_layers():
    layer = keras.layers.Dense(2)
    assert check_layer(layer) is layer


def test_check_layer_rejects_keras3_layer(keras3):
    with pytest.raises(TypeError, match="tf_keras") as caught:
        check_layer(keras3.layers.Dense(2), argument="to_prune")
    assert "`to_prune`" in str(caught.value) and "Dense" in str(caught.value)


def test_check_layer_rejects_non_layers():
    with pytest.raises(TypeError, match="`layer` must be a tf_keras Layer, got int"):
        check_layer(3)


_KERAS_IMPORT = re.compile(r"\s*(import\s+(keras|tf_keras)\b|from\s+(keras|tf_keras)\b)")


def test_only_the_boundary_module_imports_keras():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "_keras.py" in sources
    offenders = []
    for path in sources:
        if path == PACKAGE / "_keras.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if _KERAS_IMPORT.match(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "import Keras only via `from tfprune._keras import keras`:\n" + "\n".join(offenders)


def test_import_rule_catches_each_form():
    for line in ["import keras", "import tf_keras as keras", "from keras import layers",
                 "    from tf_keras.layers import Dense"]:
        assert _KERAS_IMPORT.match(line), line
    for line in ["from tfprune._keras import keras", "import keras_tuner", "# import keras later"]:
        assert not _KERAS_IMPORT.match(line), line
