"""Studies: a tiny grid on real digits runs, commits rows as it goes, plots, and resumes without recomputing."""
import csv
import json
import os

import pytest

from tfprune import study as study_module
from tfprune._keras import keras
from tfprune.study import METHODS, Study, format_pivot, pivot, read_results


def tiny():
    """64-24-16-10 on scikit-learn's 8x8 digits: small enough to train in a second."""
    inputs = keras.Input((64,), name="pixels")
    x = keras.layers.Dense(24, activation="relu", name="hidden_0")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="hidden_1")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def tiny_study(output, **settings):
    defaults = dict(model=tiny, dataset="digits", methods=["oneshot_weight", "gradual_unit"], sparsities=[0.5, 0.8],
                    epochs=3, finetune_epochs=1, learning_rate=1e-2, output=str(output))
    return Study(**{**defaults, **settings})


@pytest.mark.slow
def test_tiny_study_writes_rows_tables_and_plots(tmp_path):
    study = tiny_study(tmp_path)
    lines = []
    rows = study.run(print_fn=lines.append)

    assert [(r["method"], r["sparsity"]) for r in rows] == [("oneshot_weight", 0.5), ("oneshot_weight", 0.8),
                                                           ("gradual_unit", 0.5), ("gradual_unit", 0.8)]
    assert lines[0].startswith("training the dense model") and lines[-1].startswith("[4/4] gradual_unit k=80%")
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["zipped_bytes"] < row["bytes"]
        assert row["params"] == 64 * 24 + 24 + 24 * 16 + 16 + 16 * 10 + 10
        assert set(row["layers"]) == {"hidden_0", "hidden_1", "logits"}
    weight = {r["sparsity"]: r for r in rows if r["method"] == "oneshot_weight"}
    assert weight[0.5]["actual_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert weight[0.8]["nonzero"] < weight[0.5]["nonzero"]
    # Unit masks also zero the next layer's input rows, so the kernels end sparser than the unit fraction.
    unit = {r["sparsity"]: r for r in rows if r["method"] == "gradual_unit"}
    assert unit[0.5]["layers"]["hidden_0"]["live_units"] == 12 and unit[0.5]["actual_sparsity"] > 0.5

    stored = read_results(tmp_path)
    assert [r["key"] for r in stored] == [r["key"] for r in rows]
    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [t["method"] for t in table] == [r["method"] for r in rows] and "layers" not in table[0]
    assert json.loads((tmp_path / "study.json").read_text())["model"].endswith(":tiny")
    assert len(os.listdir(tmp_path / "dense")) == 1

    text = study.tables()
    assert "One-shot pruning" in text and "Gradual pruning" in text and "k % | weight" in text
    paths = study.plot()
    assert sorted(paths) == ["accuracy", "layers", "size_latency"]
    for path in paths.values():
        assert os.path.getsize(path) > 1000
    assert not [name for name in os.listdir(tmp_path / "plots") if name.startswith(".")]


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_interrupted_study_resumes_without_recomputing(tmp_path, monkeypatch):
    real_train = study_module.train
    calls = []

    def interrupt_third_training(model, *args, **kwargs):
        calls.append(model.name)
        if len(calls) == 3:  # dense, gradual_unit@0.5, then stop during gradual_unit@0.8
            raise Interrupted
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(study_module, "train", interrupt_third_training)
    with pytest.raises(Interrupted):
        tiny_study(tmp_path).run(print_fn=lambda line: None)
    finished = read_results(tmp_path)
    assert [(r["method"], r["sparsity"]) for r in finished] == [("oneshot_weight", 0.5), ("oneshot_weight", 0.8),
                                                               ("gradual_unit", 0.5)]

    calls.clear()
    def count(model, *args, **kwargs):
        calls.append(model.name)
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(study_module, "train", count)
    lines = []
    rows = tiny_study(tmp_path).run(print_fn=lines.append)
    assert len(calls) == 1  # only gradual_unit@0.8: the dense model came from the cache
    assert lines[0] == f"3 of 4 cells finished earlier in {tmp_path}; running the other 1."
    assert rows[:3] == finished

    # A changed setting, replacing the folder's study, reruns only the cells it affects: one-shot cells do not
    # depend on fine-tuning. The gradual rows of the old settings are deleted, so no table mixes the two.
    calls.clear()
    lines.clear()
    changed = tiny_study(tmp_path, finetune_epochs=2)
    rows = changed.run(print_fn=lines.append, replace=True)
    assert len(calls) == 2 and [r["key"] for r in rows[:2]] == [r["key"] for r in finished[:2]]
    assert [r["accuracy"] for r in rows[:2]] == [r["accuracy"] for r in finished[:2]]
    assert lines[0].endswith("replaces: 2 finished cells kept, 2 rows deleted.")
    assert read_results(tmp_path) == rows and {r["study"] for r in rows} == {changed.digest()}


@pytest.mark.slow
def test_a_folder_holds_one_configuration(tmp_path):
    fast = tiny_study(tmp_path, methods=["oneshot_weight"], sparsities=[0.5], epochs=1)
    first = fast.run(print_fn=lambda line: None)
    assert first[0]["study"] == fast.digest() != tiny_study(tmp_path).digest()
    with open(tmp_path / "results.csv") as handle:
        assert next(csv.DictReader(handle))["study"] == fast.digest()
    # The same settings resume, whatever the folder is called; others are refused, naming both and the fix.
    assert tiny_study(tmp_path / "elsewhere", methods=["oneshot_weight"], sparsities=[0.5], epochs=1).digest() \
        == fast.digest()
    full = tiny_study(tmp_path, methods=["oneshot_weight"], sparsities=[0.5], epochs=3)
    message = (rf"holds another study \({fast.digest()}, settings in .*study.json\); this one \({full.digest()}\) "
               r"differs in epochs \(1 there, 3 here\)\. .*another folder .*replace=True")
    with pytest.raises(ValueError, match=message):
        full.run(print_fn=lambda line: None)
    assert read_results(tmp_path) == first and json.loads((tmp_path / "study.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_every_other_method_runs_one_cell(tmp_path):
    methods = ["gradual_weight", "group_lasso", "imp_weights", "imp_lr", "imp_none", "pai_snip",
               "pai_synflow_shuffle"]
    study = tiny_study(tmp_path, methods=methods, sparsities=[0.5], epochs=1)
    by_method = {row["method"]: row for row in study.run(print_fn=lambda line: None)}
    assert list(by_method) == methods
    for method in ("gradual_weight", "imp_weights", "imp_lr", "imp_none", "pai_snip", "pai_synflow_shuffle"):
        # Per-layer and global weight methods alike remove half of the hidden kernels; the output layer stays.
        assert by_method[method]["actual_sparsity"] == pytest.approx(0.5, abs=0.01), method
        assert by_method[method]["layers"]["logits"]["sparsity"] < 0.01, method
    assert by_method["imp_lr"]["extra"]["rounds"] == 4  # 0.8 ** 3 > 0.5 > 0.8 ** 4
    assert by_method["pai_synflow_shuffle"]["extra"]["rounds"] == 100  # the ablation of SynFlow's 100 rounds
    assert 0.0 <= by_method["group_lasso"]["extra"]["near_zero_units"] <= 1.0
    assert by_method["group_lasso"]["layers"]["hidden_0"]["live_units"] <= 12
    text = study.tables()
    assert "Iterative magnitude pruning" in text and "Pruning at initialization" in text and "synflow_shuffle" in text


@pytest.mark.slow
def test_shrink_and_latency_measure_the_narrow_model(tmp_path):
    common = dict(methods=["oneshot_unit"], sparsities=[0.5], epochs=1)
    plain = tiny_study(tmp_path / "plain", **common).run(print_fn=lambda line: None)[0]
    small = tiny_study(tmp_path / "small", shrink=True, latency="litert", **common).run(print_fn=lambda line: None)[0]
    assert small["params"] == 64 * 12 + 12 + 12 * 8 + 8 + 8 * 10 + 10 < plain["params"]
    assert small["accuracy"] == pytest.approx(plain["accuracy"], abs=1e-9)
    assert small["actual_sparsity"] == plain["actual_sparsity"] and small["latency_ms"] > 0
    assert plain["latency_ms"] is None


def test_config_file_presets_and_argument_errors(tmp_path):
    config = {"dataset": "digits", "methods": ["oneshot_unit"], "sparsities": [0.25], "seeds": [1, 2],
              "output": str(tmp_path)}
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config))
    study = Study.from_config(str(path))
    assert [(c["method"], c["sparsity"], c["seed"]) for c in study.cells()] == [("oneshot_unit", 0.25, 1),
                                                                               ("oneshot_unit", 0.25, 2)]
    assert Study.from_config(study.config()).cells() == study.cells()

    seeds = Study.preset("seeds-mnist")
    assert len(seeds.cells()) == 2 * 10 + 2 * 4 and seeds.epochs == 10
    fast = seeds.fast()
    assert (fast.epochs, fast.finetune_epochs) == (1, 1)
    assert {c["key"] for c in fast.cells()}.isdisjoint(c["key"] for c in seeds.cells())
    assert set(METHODS) >= {"oneshot_weight", "imp_lr", "pai_synflow", "pai_grasp_abs_invert", "group_lasso"}
    pai = Study.preset("pai-mnist")
    assert len(pai.cells()) == 5 * 3 + 2 * 3 and pai.model == "lenet5"
    assert pai.sparsities["pai_snip_reinit"] == [0.99] and pai.sparsities["pai_grasp"] == [0.9, 0.99, 0.999]

    errors = [
        ({"bogus": 1}, r"unknown settings \['bogus'\]; valid settings are \['model'"),
        ({"methods": ["prune_everything"]}, r"unknown `methods` \['prune_everything'\]; choose from"),
        ({"sparsities": [50]}, r"k=50% is 0.5"),
        ({"methods": ["oneshot_unit", "oneshot_weight"], "sparsities": {"oneshot_unit": [0.5]}},
         r"without a list: \['oneshot_weight'\]"),
        ({"model": "lenet5", "dataset": "digits"}, "needs 28x28 images"),
        ({"model": "no_such_module:f"}, "cannot be imported"),
        ({"latency": "gpu"}, "`latency` must be one of"),
        ({"epochs": 0}, "`epochs` must be an integer >= 1"),
    ]
    for settings, message in errors:
        with pytest.raises(ValueError, match=message):
            Study.from_config(settings)
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose from"):
        Study.preset("nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Study.from_config(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Study.from_config(str(tmp_path / "broken.json"))


def test_pivot_tables_average_seeds():
    rows = [{"method": "oneshot_weight", "sparsity": 0.5, "accuracy": a} for a in (0.9, 0.8)]
    rows.append({"method": "oneshot_unit", "sparsity": 0.9, "accuracy": 0.1})
    table = pivot(rows, ["oneshot_weight", "oneshot_unit"])
    assert table == [{"k": 50.0, "oneshot_weight": pytest.approx(0.85)}, {"k": 90.0, "oneshot_unit": 0.1}]
    assert format_pivot(table, {"oneshot_weight": "weight", "oneshot_unit": "unit"}).splitlines() == [
        "  k % | weight |   unit", "-----------------------", "   50 | 0.8500 |      -", "   90 |      - | 0.1000"]
