"""The `tfprune` command: run studies, and inspect, export, time and prune saved tf_keras models.

Every subcommand returns an exit code: 0 on success, 2 for bad arguments or unreadable inputs (the message on
stderr names the argument and the fix), so scripts can tell a mistake from a crash.

Each command checks its arguments and input paths before it loads or converts anything.
"""
import argparse
import dataclasses
import math
import os
import sys
import textwrap

from tfprune import bench, data as datasets, export
from tfprune._keras import keras
from tfprune.mask import strip
from tfprune.oneshot import oneshot
from tfprune.report import report
from tfprune.shrink import shrink
from tfprune.study import METHODS, PRESETS, Study

KERAS_SUFFIXES = (".keras", ".h5")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 2."""


def _existing(path, what="MODEL"):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist; check the path.")
    return path


def _load(path):
    """A tf_keras model from a .keras or .h5 file, with a one-line error for anything else."""
    _existing(path)
    if os.path.isdir(path) or not path.endswith(KERAS_SUFFIXES):
        raise UsageError(f"MODEL {path!r} is not a .keras or .h5 file; save the model with "
                         "model.save('model.keras') (tf_keras) and pass that file.")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for foreign or damaged files
        detail = str(error).splitlines()[0] if str(error) else "no details"
        raise UsageError(f"cannot load {path!r} as a tf_keras model: tf_keras.models.load_model raised "
                         f"{type(error).__name__}: {detail}") from None


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.5") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1); give a fraction, e.g. 0.9 for 90%")
    return value


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


# -- subcommands --------------------------------------------------------------------------------------------------
def _study(args):
    if args.config is not None:
        _existing(args.config, "CONFIG")
    study = Study.preset(args.preset) if args.preset else Study.from_config(args.config)
    fast = args.fast or os.environ.get("TFPRUNE_FAST") == "1"
    if fast:
        study = study.fast()
    # Fast results go to their own folder by default, so they never sit in the tables of a full run.
    output = args.out or (study.output + "-fast" if fast else study.output)
    study = dataclasses.replace(study, output=output)
    rows = study.run()
    print()
    print(study.tables(rows))
    paths = study.plot(rows)
    print(f"\nresults: {os.path.join(output, 'results.jsonl')} (and results.csv); figures: "
          f"{', '.join(paths.values())}")
    if fast:
        print("(--fast: one dense and one fine-tune epoch; a smoke run, not numbers to report)")


def _report(args):
    model = _load(args.model)
    print(f"{args.model}: model '{model.name}'")
    report(model)


def _export(args):
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in export.FORMATS]
    if unknown or not formats:
        raise UsageError(f"--formats: unknown {unknown or 'empty list'}; choose from {','.join(export.FORMATS)}.")
    if "tflite_int8" in formats and args.calibration is None:
        raise UsageError("--formats tflite_int8 calibrates activations on real inputs; add --calibration "
                         "mnist_5k or --calibration digits (a dataset the model's input fits).")
    model = _load(args.model)
    representative = None
    if "tflite_int8" in formats:
        x = getattr(datasets, args.calibration)()[0][0][:200]
        shape = tuple(model.input_shape[1:])
        if None in shape or math.prod(shape) != x.shape[1]:
            raise UsageError(f"--calibration {args.calibration}: its {x.shape[1]} features do not fit the model's "
                             f"input shape {shape}.")
        representative = x.reshape((-1,) + shape)
    name = args.name or os.path.splitext(os.path.basename(args.model))[0]
    print(export.format_report(export.save(model, args.out, formats=formats, representative_data=representative,
                                           name=name, strip=strip)))


def _bench(args):
    path = _existing(args.model)
    if os.path.isdir(path):
        if not any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES):
            raise UsageError(f"MODEL {path!r} is a folder without saved_model.pb, so not a SavedModel; pass a "
                             "SavedModel folder (tfprune export --formats saved_model) or a .tflite, .keras or "
                             ".h5 file.")
    elif args.backend is None and not path.endswith((".tflite",) + KERAS_SUFFIXES):
        raise UsageError(f"cannot tell the backend of {path!r}: expected a .tflite, .keras or .h5 file or a "
                         "SavedModel folder; pass --backend explicitly.")
    backend = args.backend or bench._default_backend(path)
    if args.threads is not None and backend != "litert":
        try:
            bench.set_threads(args.threads)  # must precede loading: TF fixes its pools at its first op
        except RuntimeError as error:
            raise UsageError(str(error)) from None
    target = _load(path) if path.endswith(KERAS_SUFFIXES) else path
    result = bench.latency(target, batch_size=args.batch_size, backend=backend, threads=args.threads,
                           warmup=args.warmup, repeats=args.repeats)
    print(f"{args.model}: median {result['median_ms']:.3f} ms (p10 {result['p10_ms']:.3f}, p90 "
          f"{result['p90_ms']:.3f}) per call of batch {result['batch_size']}, backend {result['backend']}, "
          f"{result['threads']} thread(s) (0 = TensorFlow's default), {result['repeats']} timed runs")


def _prune(args):
    if args.shrink and args.method != "unit":
        raise UsageError("--shrink removes whole units, which --method weight does not create; use --method unit.")
    out = args.out or f"{os.path.splitext(args.model)[0]}_{args.method}{round(100 * args.sparsity)}.keras"
    if not out.endswith(KERAS_SUFFIXES):
        raise UsageError(f"--out {out!r} must end in .keras or .h5.")
    model = _load(args.model)
    pruned = strip(oneshot(model, args.method, args.sparsity))
    if args.shrink:
        pruned = shrink(pruned)
    report(pruned)
    directory, file = os.path.split(out)
    stem, suffix = os.path.splitext(file)
    export.save(pruned, directory or ".", formats=(suffix[1:],), name=stem)
    print(f"wrote {out}")


# -- the parser -----------------------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfprune", description="Pruning for tf_keras models that really shrinks them, and says by how much.",
        epilog="Run 'tfprune COMMAND --help' for a command's options. Exit codes: 0 success, 2 bad arguments or "
               "unreadable input.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter

    study = commands.add_parser(
        "study", help="run a resumable grid of pruning methods x sparsities x seeds", formatter_class=formatter,
        description="Run a study: train the dense model once per seed, then prune, train and measure every cell\n"
                    "(accuracy, sparsity, zipped size, optionally latency). Each finished cell is saved at once,\n"
                    "so rerunning the same command resumes where it stopped. Prints the accuracy tables and writes\n"
                    "results.jsonl, results.csv and plots/*.png into the output folder.",
        epilog="examples:\n  tfprune study --preset seeds-mnist\n  tfprune study --preset seeds-mnist --fast\n"
               "  tfprune study my_study.json --out runs/my_study\n\n"
               "CONFIG is a JSON object of tfprune.study.Study's arguments, e.g.\n"
               '  {"model": "mlp", "dataset": "digits", "methods": ["oneshot_weight", "gradual_unit"],\n'
               '   "sparsities": [0.5, 0.9], "epochs": 10, "seeds": [0, 1], "output": "runs/digits"}\n'
               + textwrap.fill(f"methods: {', '.join(METHODS)}", width=100, subsequent_indent="  "))
    source = study.add_mutually_exclusive_group(required=True)
    source.add_argument("config", nargs="?", metavar="CONFIG", help="JSON file with the study's settings")
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named study instead of CONFIG")
    study.add_argument("--out", metavar="DIR", help="output folder (default: the study's `output`, plus '-fast' "
                                                    "with --fast)")
    study.add_argument("--fast", action="store_true", help="one dense and one fine-tune epoch, for a quick check "
                                                           "(also set by TFPRUNE_FAST=1)")
    study.set_defaults(run=_study)

    show = commands.add_parser("report", help="per-layer params, non-zeros, sparsity and live units of a model",
                               description="Print tfprune.report for a saved tf_keras model (.keras or .h5).")
    show.add_argument("model", metavar="MODEL", help="a .keras or .h5 file")
    show.set_defaults(run=_report)

    write = commands.add_parser(
        "export", help="write a model in deployment formats and report their raw and zipped sizes",
        description="Strip pruning wrappers and write MODEL in each format to DIR/NAME<suffix>, atomically; "
                    "prints params, non-zeros, MACs and each file's bytes and zip-deflated bytes.")
    write.add_argument("model", metavar="MODEL", help="a .keras or .h5 file")
    write.add_argument("--formats", default="keras,tflite", help=f"comma-separated, from {','.join(export.FORMATS)} "
                                                                 "(default: keras,tflite)")
    write.add_argument("--out", required=True, metavar="DIR", help="folder for the files (created if missing)")
    write.add_argument("--name", help="file name stem (default: MODEL's)")
    write.add_argument("--calibration", choices=("mnist_5k", "digits"),
                       help="dataset whose first 200 training images calibrate tflite_int8")
    write.set_defaults(run=_export)

    time_ = commands.add_parser(
        "bench", help="median inference latency of a model file",
        description="Time MODEL as a Keras tf.function, a SavedModel signature or in LiteRT on random inputs of "
                    "the model's shape, and print the median and spread in ms.")
    time_.add_argument("model", metavar="MODEL", help="a .keras/.h5/.tflite file or a SavedModel folder")
    time_.add_argument("--backend", choices=bench.BACKENDS, help="default: from MODEL (.tflite -> litert, folder "
                                                                 "-> saved_model, else keras)")
    time_.add_argument("--batch-size", type=_positive, default=1, help="examples per call (default 1)")
    time_.add_argument("--threads", type=_positive, help="LiteRT threads, or TensorFlow's intra/inter-op pools "
                                                         "(default: LiteRT 1, TensorFlow one per core)")
    time_.add_argument("--warmup", type=_positive, default=10, help="untimed calls first (default 10)")
    time_.add_argument("--repeats", type=_positive, default=50, help="timed calls (default 50)")
    time_.set_defaults(run=_bench)

    cut = commands.add_parser(
        "prune", help="prune a trained model once, without retraining", formatter_class=formatter,
        description="One-shot pruning of a saved model; layers producing the model's outputs stay whole.\n"
                    "  --method weight: zero the SPARSITY fraction of smallest-|w| kernel entries of each layer.\n"
                    "  --method unit:   one prune_units step (L2 criterion): each layer's SPARSITY fraction of\n"
                    "                   weakest units/filters is masked with every coupled tensor (next layer's\n"
                    "                   inputs, BatchNorm, residual branches), then stripped to zeros;\n"
                    "                   --shrink then removes those units, giving a narrower model.\n"
                    "No retraining happens: expect an accuracy drop; fine-tune with the Python API.",
        epilog="example:\n  tfprune prune model.keras --method unit --sparsity 0.5 --shrink --out small.keras")
    cut.add_argument("model", metavar="MODEL", help="a .keras or .h5 file")
    cut.add_argument("--method", choices=("unit", "weight"), required=True, help="what to remove (see above)")
    cut.add_argument("--sparsity", type=_fraction, required=True, help="fraction in [0, 1) to remove, e.g. 0.5")
    cut.add_argument("--out", metavar="PATH", help="result file, .keras or .h5 (default: MODEL_<method><k>.keras)")
    cut.add_argument("--shrink", action="store_true", help="remove the pruned units physically (unit only)")
    cut.set_defaults(run=_prune)
    return parser


def main(argv=None):
    """Run the command line in `argv` (default sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits for --help (0) and for usage errors (2)
        return exit_.code
    # TensorFlow's C++ start-up lines are noise in a command's output; a level the user set wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args.run(args)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"tfprune {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
