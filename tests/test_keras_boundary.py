"""The Keras boundary: its checks accept models and layers of both flavors, and only it imports Keras."""
import pathlib
import re

import numpy as np
import pytest

from tfprune._keras import check_layer, check_model, keras, keras3

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfprune"


@pytest.mark.parametrize("flavor", [keras, keras3], ids=["tf_keras", "keras3"])
def test_check_model_accepts_models_of_both_flavors(flavor):
    model = flavor.Sequential([flavor.Input((4,)), flavor.layers.Dense(2)])
    assert check_model(model) is model
    inputs = flavor.Input((4,))
    functional = flavor.Model(inputs, flavor.layers.Dense(2)(inputs))
    assert check_model(functional) is functional


@pytest.mark.parametrize("not_a_model", [None, np.zeros(3), "model.h5"])
def test_check_model_rejects_non_models(not_a_model):
    with pytest.raises(TypeError, match="`model` must be a Keras Model"):
        check_model(not_a_model)


def test_check_model_rejects_a_bare_layer():
    with pytest.raises(TypeError, match="Keras Model.*got Dense"):
        check_model(keras3.layers.Dense(2))


@pytest.mark.parametrize("flavor", [keras, keras3], ids=["tf_keras", "keras3"])
def test_check_layer_accepts_layers_of_both_flavors(flavor):
    layer = flavor.layers.Dense(2)
    assert check_layer(layer) is layer


def test_check_layer_rejects_non_layers():
    with pytest.raises(TypeError, match="`layer` must be a Keras Layer.*got int"):
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
