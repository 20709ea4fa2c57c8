"""Guards at tfprune's edges: a base install imports, ambiguous names and non-finite weights are refused up
front, and TFMOT-wrapped files load with plain `load_model` and in the CLI."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfprune
from tfprune import pai
from tfprune._keras import keras
from tfprune.lottery import magnitude_masks

L = keras.layers
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, *args):
    """Run `code` in a fresh interpreter at the repository root; its stdout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _mlp():
    return keras.Sequential([keras.Input((8,)), L.Dense(6, activation="relu", name="hidden"), L.Dense(3, name="out")])


def test_bench_imports_without_litert_and_names_the_extra_when_used():
    out = _python("""
        import sys
        sys.modules["ai_edge_litert"] = None  # as on a base install: importing it fails
        import tfprune
        from tfprune._keras import keras
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        print("keras backend:", tfprune.bench.latency(model, backend="keras", warmup=1, repeats=1)["backend"])
        try:
            tfprune.bench.latency(model, backend="litert")
        except ImportError as error:
            print(error)
        """)
    assert "keras backend: keras" in out
    assert "pip install tfprune[demo]" in out and "pip install ai-edge-litert" in out


def _branches_sharing_a_name():
    """Two Sequential branches, each with its own layer named 'dense'."""
    inputs = keras.Input((4,))
    branches = [keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense")], name=f"branch_{i}") for i in "ab"]
    joined = L.Concatenate(name="join")([branch(inputs) for branch in branches])
    return keras.Model(inputs, L.Dense(2, name="head")(joined))


@pytest.mark.parametrize("entry_point", [
    tfprune.masks,
    lambda model: tfprune.prune_weights(model, tfprune.ConstantSparsity(0.5, 0), scope="global"),
    lambda model: tfprune.prune_units(model, tfprune.ConstantSparsity(0.5, 0)),
    lambda model: tfprune.oneshot(model, "weight", 0.5),
    tfprune.shrink,
    lambda model: tfprune.report(model, print_fn=None),
], ids=["masks", "prune_weights_global", "prune_units", "oneshot", "shrink", "report"])
def test_nested_layers_sharing_a_name_are_rejected(entry_point):
    with pytest.raises(ValueError, match=r"sharing the name\(s\) \['dense'\].*unique name"):
        entry_point(_branches_sharing_a_name())


def test_one_nested_model_called_twice_is_accepted():
    branch = keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense")], name="branch")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Add(name="sum")([branch(inputs), branch(inputs)]))
    assert tfprune.check_model(model) is model


def test_tfmot_wrapped_files_load_with_plain_load_model_and_in_the_cli(tmp_path):
    pruned = tfprune.prune_weights(_mlp(), tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=1))
    pruned.compile("adam", "mse")
    rng = np.random.default_rng(0)
    pruned.fit(rng.random((64, 8), np.float32), rng.random((64, 3), np.float32), batch_size=16, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])  # 4 of 20 steps: mid-pruning
    sparsity = 1 - np.count_nonzero(tfprune.masks(pruned)[("hidden", "kernel")]) / (8 * 6)
    assert 0 < sparsity < 0.8
    paths = [str(tmp_path / "pruned.keras"), str(tmp_path / "pruned.h5")]
    for path in paths:
        pruned.save(path)
    out = _python("""
        import sys
        import numpy as np
        import tfprune
        import tf_keras
        from tfprune_cli import main
        for path in sys.argv[1:]:
            np.savez(path + ".npz", *tf_keras.models.load_model(path).get_weights())
            print("exit code", main(["report", path]))
        """, *paths)
    assert out.count("exit code 0") == 2 and out.count("\nhidden ") == 2  # rows name the inner layer
    for path in paths:
        loaded = np.load(path + ".npz")
        for expected, actual in zip(pruned.get_weights(), [loaded[f"arr_{i}"] for i in range(len(loaded.files))],
                                    strict=True):
            np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("entry_point", [
    lambda model: tfprune.oneshot(model, "weight", 0.5),
    tfprune.shrink,
    lambda model: tfprune.report(model, print_fn=None),
    lambda model: tfprune.threshold_groups(model, groups="unit"),
    lambda model: tfprune.group_sparsity_report(model, groups="unit"),
    lambda model: magnitude_masks(model, 0.5),
    lambda model: pai.score(model, "magnitude"),
    lambda model: pai.prune_at_init(model, "magnitude", 0.5),
    tfprune.sap_round,
], ids=["oneshot", "shrink", "report", "threshold_groups", "group_sparsity_report", "magnitude_masks", "pai_score",
        "prune_at_init", "sap_round"])
def test_non_finite_weights_are_refused_naming_the_layer(entry_point, value):
    model = _mlp()
    kernel = model.get_layer("hidden").kernel
    kernel.assign(np.where(np.arange(kernel.shape.num_elements()).reshape(kernel.shape) == 5, value, kernel.numpy()))
    with pytest.raises(ValueError, match="layer 'hidden' weight 'hidden/kernel:0' holds NaN or inf"):
        entry_point(model)
