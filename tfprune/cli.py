"""The `tfprune` command's work: load, run and print.

`tfprune_cli` (outside the package, so that parsing needs no TensorFlow) parses and checks the arguments, then
calls `COMMANDS[name](args)`.

Errors a user can fix raise `tfprune_cli.UsageError` (or ValueError), reported in one line with exit code 2.
"""
import dataclasses
import math
import os

from tfprune import bench, data as datasets, demo, export, plots
from tfprune._keras import flavor_of, load_model
from tfprune.batch_norm import statistics_layers
from tfprune.budget import format_budget_report, prune_to_budget, sensitivity
from tfprune.mask import strip
from tfprune.metrics import format_table
from tfprune.oneshot import oneshot
from tfprune.report import report
from tfprune.shrink import shrink
from tfprune.study import Study
from tfprune_cli import KERAS_SUFFIXES, UsageError

__all__ = ["COMMANDS"]


def _load(path):
    """A model from a .keras or .h5 file, read by the Keras that wrote it (Keras 3 or tf_keras), with a one-line
    error for a damaged or foreign one."""
    try:
        return load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for foreign or damaged files
        detail = str(error).splitlines()[0] if str(error) else "no details"
        raise UsageError(f"cannot load {path!r} as a Keras model: load_model raised "
                         f"{type(error).__name__}: {detail}") from None


def _study(args):
    study = Study.preset(args.preset) if args.preset else Study.from_config(args.config)
    fast = args.fast or os.environ.get("TFPRUNE_FAST") == "1"
    if fast:
        study = study.fast()
    # Fast results go to their own folder by default, so they never meet a full run's.
    output = args.out or (study.output + "-fast" if fast else study.output)
    study = dataclasses.replace(study, output=output)
    rows = study.run(replace=args.replace)
    print()
    print(study.tables(rows))
    paths = study.plot(rows)
    print(f"\nresults: {os.path.join(output, 'results.jsonl')} (and results.csv; each row's `study` is the digest "
          f"{study.digest()} of {os.path.join(output, 'study.json')}); figures: {', '.join(paths.values())}")
    if fast:
        print("(--fast: one dense and one fine-tune epoch; a smoke run, not numbers to report)")


def _report(args):
    model = _load(args.model)
    print(f"{args.model}: model '{model.name}'")
    report(model)


def _data_for(model, name, option):
    """Dataset `name`'s ((x, y), (x_test, y_test)), images reshaped to the model's input shape."""
    (x, y), (x_test, y_test) = getattr(datasets, name)()
    shape = tuple(model.input_shape[1:])
    if None in shape or math.prod(shape) != x.shape[1]:
        raise UsageError(f"{option} {name}: its {x.shape[1]} features do not fit the model's input shape {shape}.")
    return (x.reshape((-1,) + shape), y), (x_test.reshape((-1,) + shape), y_test)


def _export(args):
    model = _load(args.model)
    representative = None
    if "tflite_int8" in args.formats:
        representative = _data_for(model, args.calibration, "--calibration")[0][0][:200]
    name = args.name or os.path.splitext(os.path.basename(args.model))[0]
    print(export.format_report(export.save(model, args.out, formats=args.formats,
                                           representative_data=representative, name=name, strip=strip)))


def _bench(args):
    backend = args.backend or bench._default_backend(args.model)
    if args.threads is not None and backend != "litert":
        try:
            bench.set_threads(args.threads)  # must precede loading: TF fixes its pools at its first op
        except RuntimeError as error:
            raise UsageError(str(error)) from None
    target = _load(args.model) if args.model.endswith(KERAS_SUFFIXES) else args.model
    result = bench.latency(target, batch_size=args.batch_size, backend=backend, threads=args.threads,
                           warmup=args.warmup, repeats=args.repeats)
    print(f"{args.model}: median {result['median_ms']:.3f} ms (p10 {result['p10_ms']:.3f}, p90 "
          f"{result['p90_ms']:.3f}) per call of batch {result['batch_size']}, backend {result['backend']}, "
          f"{result['threads']} thread(s) (0 = TensorFlow's default), {result['repeats']} timed runs")


def _prune(args):
    pruned = strip(oneshot(_load(args.model), args.method, args.sparsity))
    if args.shrink:
        pruned = shrink(pruned)
    report(pruned)
    directory, file = os.path.split(args.out)
    stem, suffix = os.path.splitext(file)
    export.save(pruned, directory or ".", formats=(suffix[1:],), name=stem)
    print(f"wrote {args.out}")


def _sensitivity(args):
    model = _load(args.model)
    (x, _), held_out = _data_for(model, args.data, "--data")
    rows = sensitivity(model, held_out, ratios=args.ratios, metric=args.metric, runtime=args.runtime,
                       calibration=x[:512] if statistics_layers(model) else None)
    print(format_table(rows))
    if args.plot:
        print(f"wrote {plots.sensitivity(rows, args.plot)}")


def _budget(args):
    model = _load(args.model)
    keras = flavor_of(model)

    def compile_fn(network):
        network.compile(keras.optimizers.Adam(args.lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    budget = {metric: value for metric, value in (("latency_ms", args.latency_ms), ("bytes", args.bytes),
                                                  ("macs", args.macs)) if value is not None}
    (x, y), _ = _data_for(model, args.data, "--data")
    split = len(x) * 4 // 5  # the last fifth of the training split picks proposals and measures accuracy
    result = prune_to_budget(model, (x[:split], y[:split]), (x[split:], y[split:]), budget, args.runtime,
                             directory=args.out, compile_fn=compile_fn, epochs=args.epochs,
                             final_epochs=args.final_epochs, max_rounds=args.max_rounds, round_to=args.round_to,
                             channel_block=args.channel_block)
    if not result.rows:  # already met: nothing was written
        print(format_budget_report(result.report))


def _demo(args):
    demo.main(args.out, args.epochs)


#: Subcommand name -> function of the parsed, checked arguments.
COMMANDS = {"study": _study, "report": _report, "export": _export, "bench": _bench, "prune": _prune,
            "sensitivity": _sensitivity, "budget": _budget, "demo": _demo}
