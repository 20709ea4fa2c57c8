"""Deployment files, their real sizes, and a side-by-side comparison of model variants.

Zeros do not make `.keras`, `.h5`, SavedModel or float TFLite files smaller; only compression (reported here as
the zip-deflated size), the sparse TFLite format or physically narrower layers do, so every size is reported
raw and zipped. Each file appears under its final name only once complete, so an interrupted export never
leaves a truncated artifact that a later step could mistake for a good one.
"""
import contextlib
import io
import os
import tempfile
import warnings
import zipfile

import numpy as np

from tfprune._keras import FLAVORS, check_model, flavor_of, input_shape, is_model, keras, keras3, load_model, tf
from tfprune.bench import compare_latency, predict
from tfprune.metrics import count_macs, count_nonzero, count_params, format_table
from tfprune.mask import iter_layers, strip as strip_wrappers
from tfprune._io import atomic_write

__all__ = ["FORMATS", "save", "artifact_size", "format_report", "compare"]

# Format -> suffix of the artifact's name; SavedModel is a directory.
FORMATS = {
    "keras": ".keras",
    "h5": ".h5",
    "saved_model": "_saved_model",
    "tflite": ".tflite",
    "tflite_sparse": "_sparse.tflite",
    "tflite_int8": "_int8.tflite",
}


def _input_arrays(data):
    """`representative_data` given as arrays: one float32 array per model input."""
    return [np.asarray(a, dtype=np.float32) for a in (data if isinstance(data, (list, tuple)) else [data])]


def _check_representative(model, data):
    """Arrays must hold examples of the model's input shapes: the converter's own error for a mismatch is an opaque
    'BytesRequired number of elements overflowed'. A callable's output is not known until the conversion."""
    if callable(data):
        return
    arrays = _input_arrays(data)
    if len(arrays) != len(model.inputs):
        raise ValueError(f"save: `representative_data` holds {len(arrays)} arrays but the model takes "
                         f"{len(model.inputs)} inputs; pass one array per input, in model.inputs order.")
    for array, tensor in zip(arrays, model.inputs):
        expected = tuple(tensor.shape[1:])
        shape = array.shape[1:]
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
            raise ValueError(f"save: `representative_data` holds examples of shape {shape} but input "
                             f"'{tensor.name}' takes {expected} (after the batch axis); reshape it, e.g. "
                             f"x.reshape((-1,) + {expected}).")


def _representative(data):
    """TFLite's representative dataset: a callable is used as is; arrays are fed one example at a time."""
    if callable(data):
        return data
    arrays = _input_arrays(data)

    def examples():
        for i in range(arrays[0].shape[0]):
            yield [a[i:i + 1] for a in arrays]

    return examples


def _tflite_bytes(saved_model, fmt, representative_data):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if fmt == "tflite_sparse":
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    elif fmt == "tflite_int8":
        # Integer weights and activations; input and output stay float32 so the file drops in for the float one.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # Inputs stay float32 and are quantized by a calibrated op, so no input statistics are needed.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs", category=UserWarning)
        return converter.convert()


@contextlib.contextmanager
def _tf_log_dropped(prefix):
    """TensorFlow's Python log records starting with `prefix` are dropped while the block runs."""
    logger = tf.get_logger()

    def keep(record):
        return not record.getMessage().startswith(prefix)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _export_saved_model(model, path):
    """`model.export`: the inference graph only; its endpoint listing is kept off stdout."""
    logging = keras3.config if flavor_of(model) is keras3 else keras.utils
    interactive = logging.is_interactive_logging_enabled()
    logging.disable_interactive_logging()
    try:
        model.export(path)
    finally:
        if interactive:
            logging.enable_interactive_logging()


def _write(model, fmt, temp, saved_model, representative_data):
    """Write `fmt` (not saved_model) to `temp`; TFLite formats convert the SavedModel at `saved_model`."""
    if fmt in ("keras", "h5"):
        # The caller asked for this format: Keras' advice that HDF5 is legacy is noise here, and so is the
        # warning its HDF5 writer gives for every uncompiled model ("Compiled the loaded model, but the compiled
        # metrics have yet to be built").
        with warnings.catch_warnings(), _tf_log_dropped("Compiled the loaded model"):
            warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy", category=UserWarning)
            model.save(temp, **({} if flavor_of(model) is keras3 else {"save_format": fmt}))
    else:
        content = _tflite_bytes(saved_model, fmt, representative_data)
        with open(temp, "wb") as handle:
            handle.write(content)


#: Recurrent layers that Keras can unroll (its convolutional recurrent layers cannot be).
_CONVOLUTIONAL_RNNS = tuple(getattr(flavor.layers, f"ConvLSTM{rank}D") for flavor in FLAVORS for rank in (1, 2, 3))
_RECURRENT = tuple(getattr(flavor.layers, name) for flavor in FLAVORS for name in ("RNN", "Bidirectional"))


class _GroupNormalizationForTFLite(keras.layers.GroupNormalization):
    """GroupNormalization without Keras-mask support, for conversion only: without a mask tf_keras still weights
    its moments by a tensor of ones, which the converter lowers to BROADCAST_TO ops that fail at run time
    ("Output shape must be broadcastable") whatever the batch size."""

    def call(self, inputs):
        shape = tf.shape(inputs)
        grouped = self._reshape_into_groups(inputs)
        axes = list(range(1, grouped.shape.rank))
        axes.pop(self.axis - 1)  # statistics per example and group, as tf_keras takes them
        mean, variance = tf.nn.moments(grouped, axes=axes, keepdims=True)
        gamma, beta = self._get_reshaped_weights(shape)
        return tf.reshape(tf.nn.batch_normalization(grouped, mean, variance, beta, gamma, self.epsilon), shape)


def _time_steps(layer):
    """The fixed number of time steps a recurrent layer runs over; raises when the model leaves it open."""
    shape = input_shape(layer)  # the sequence's: initial states come after it
    steps = shape[0 if getattr(getattr(layer, "forward_layer", layer), "time_major", False) else 1]
    if steps is None:
        raise ValueError(f"save: {type(layer).__name__} layer '{layer.name}' has no fixed number of time steps "
                         f"(input shape {shape}); TFLite runs recurrent layers unrolled over a known length. "
                         f"Build the model on fixed-length sequences (e.g. keras.Input(shape=(steps, ...))), or "
                         f"leave the TFLite formats out of `formats`.")
    return steps


def _for_tflite(model):
    """(the model TFLite converts, notes for the report): `model` itself, or a copy whose layers convert to
    builtin ops that run at any batch size, with a note per kind of change. The other formats keep `model`.

    Recurrent layers are unrolled: TFLite has no builtin op for a Keras RNN's loop over a batch of unknown size
    (the converter stops at "'tf.TensorListReserve' op requires element_shape to be static"); with a fixed batch
    it fuses an LSTM into an op whose state carries over from one invocation to the next, and the select-TF-ops
    route needs the Flex delegate, which LiteRT's pip package does not ship. Unrolled, the recurrence is plain
    builtin ops: the same outputs, no state between calls. GroupNormalization layers that receive no Keras mask
    take plain moments (`_GroupNormalizationForTFLite`), the same outputs.
    """
    layers = list(iter_layers(model))
    recurrent = [layer for layer in layers if isinstance(layer, _RECURRENT)
                 and not isinstance(getattr(layer, "forward_layer", layer), _CONVOLUTIONAL_RNNS)]
    group_norms = [layer for layer in layers if type(layer) is keras.layers.GroupNormalization
                   and layer.get_input_mask_at(0) is None]
    if not recurrent and not group_norms:
        return model, []
    steps = [_time_steps(layer) for layer in recurrent]

    def clone(layer):
        if is_model(layer):
            return flavor_of(layer).models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        if layer in group_norms:
            return _GroupNormalizationForTFLite.from_config(config)
        if layer in recurrent:  # a Bidirectional wrapper's directions are configs of their own
            directions = [config[key]["config"] for key in ("layer", "backward_layer") if key in config]
            for settings in directions or [config]:
                settings["unroll"] = True
        return type(layer).from_config(config)

    copy = flavor_of(model).models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    notes = []
    if recurrent:
        names = ", ".join(f"'{layer.name}' ({count} steps)" for layer, count in zip(recurrent, steps))
        notes.append(f"TFLite formats convert recurrent layers {names} unrolled: TFLite's builtin ops cannot run a "
                     f"Keras RNN's loop over a batch of unknown size")
    if group_norms:
        names = ", ".join(f"'{layer.name}'" for layer in group_norms)
        notes.append(f"TFLite formats convert GroupNormalization {names} with plain moments: tf_keras weights them "
                     f"by a mask of ones, whose broadcasts fail in LiteRT")
    return copy, notes


def _stripped(model, strip):
    """The inference model: plain layers holding weight x mask (`tfprune.strip` unless `strip` is given)."""
    return check_model((strip or strip_wrappers)(model), "strip(model)")


def _macs(model):
    """MACs, or None where an input shape is not fixed (the files are still worth writing)."""
    try:
        return count_macs(model)
    except ValueError:
        return None


def artifact_size(path):
    """Raw bytes and the size after zip deflate, as TFMOT's docs measure.

    Args:
      path: a file, or a directory (all its files count).

    Returns:
      ``{"bytes": raw, "zipped_bytes": deflated}``.

    Raises:
      FileNotFoundError: `path` does not exist.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
        root = path
    else:
        files, root = [path], os.path.dirname(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            archive.write(file, arcname=os.path.relpath(file, root))
    return {"bytes": sum(os.path.getsize(f) for f in files), "zipped_bytes": len(buffer.getvalue())}


def save(model, directory, formats=("keras", "saved_model", "tflite"), representative_data=None, name="model",
         strip=None):
    """Write `model` (stripped of pruning wrappers) as `directory/name<suffix>` per format; return a report.

    Formats: see FORMATS. `tflite_int8` needs `representative_data`: an array of inputs shaped like the model's
    (a few hundred examples are enough) or a callable yielding lists of input arrays. `strip` (default
    `tfprune.strip`) first turns pruning wrappers into plain layers holding weight x mask. Files are written
    atomically (`tfprune._io`), which also clears what a killed earlier save of the same names left. The report holds the model's
    params, nonzero and macs (None when an input shape is not fixed), per format the path, raw bytes and
    zipped bytes, and `notes` on how files were made: TFLite formats convert recurrent layers (LSTM, GRU,
    SimpleRNN, Bidirectional) unrolled, which needs a fixed number of time steps, and GroupNormalization with
    plain moments.

    Args:
      model: a tf_keras model, wrapped or plain (not changed).
      directory: the folder for the files (created if missing).
      formats: names from `FORMATS`, or one name.
      representative_data: calibration inputs for ``tflite_int8`` (see above).
      name: the files' stem, a plain file name.
      strip: the function turning pruning wrappers into plain layers (default `tfprune.strip`).

    Returns:
      the report described above: ``name``, ``params``, ``nonzero``, ``macs``, ``artifacts`` (``{format:
      {"path", "bytes", "zipped_bytes"}}``) and ``notes`` (a list of sentences).

    Raises:
      ValueError: an unknown format, ``tflite_int8`` without `representative_data` or with arrays not shaped
        like the model's inputs, or a `name` with a path separator or a leading '.', or a TFLite format for a
        recurrent layer without a fixed number of time steps.
      TypeError: `model` is not a tf_keras model.
    """
    check_model(model)
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"save: unknown `formats` {unknown}; choose from {list(FORMATS)}.")
    if "tflite_int8" in formats:
        if representative_data is None:
            raise ValueError("save: format 'tflite_int8' calibrates activations on `representative_data`; pass a "
                             "few hundred input examples (an array) or a callable yielding lists of input arrays.")
        _check_representative(model, representative_data)
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"save: `name` must be a plain file name without '{os.sep}' or a leading '.', got "
                         f"{name!r}.")
    model = _stripped(model, strip)
    tflite = any(fmt.startswith("tflite") for fmt in formats)
    tflite_model, notes = _for_tflite(model) if tflite else (model, [])
    report = {"name": name, "params": count_params(model), "nonzero": count_nonzero(model), "macs": _macs(model),
              "artifacts": {}, "notes": notes}
    os.makedirs(directory, exist_ok=True)
    paths = {fmt: os.path.join(os.fspath(directory), name + FORMATS[fmt]) for fmt in formats}
    with tempfile.TemporaryDirectory() as scratch:
        # TFLite converts a SavedModel; Keras' converter would write one of its own for every TFLite format, so
        # one SavedModel (the one asked for, written first, or a scratch one) serves them all.
        saved_model = paths.get("saved_model", os.path.join(scratch, "saved_model"))
        if "saved_model" in formats:
            atomic_write(saved_model, lambda temp: _export_saved_model(model, temp))
        if tflite_model is not model:  # TFLite converts a copy made for its builtin ops
            saved_model = os.path.join(scratch, "tflite_saved_model")
            _export_saved_model(tflite_model, saved_model)
        elif tflite and "saved_model" not in formats:
            _export_saved_model(model, saved_model)
        for fmt in formats:
            if fmt != "saved_model":
                atomic_write(paths[fmt], lambda temp, fmt=fmt: _write(model, fmt, temp, saved_model,
                                                                       representative_data))
            report["artifacts"][fmt] = {"path": paths[fmt], **artifact_size(paths[fmt])}
    return report


def format_report(report):
    """A header line with the model's counts, then one line per artifact, then the report's notes.

    Args:
      report: what `save` returned.

    Returns:
      the text.
    """
    params, nonzero = report["params"], report["nonzero"]
    zeros = f" ({1 - nonzero / params:.1%} zero)" if params else ""
    macs = "unknown" if report["macs"] is None else report["macs"]
    rows = [{"format": fmt, **artifact} for fmt, artifact in report["artifacts"].items()]
    return (f"{report['name']}: {params} params, {nonzero} non-zero{zeros}, {macs} MACs per example\n"
            + format_table(rows, columns=["format", "bytes", "zipped_bytes", "path"])
            + "".join(f"\nnote: {note}" for note in report.get("notes", ())))


_COMPARE_COLUMNS = ("variant", "format", "bytes", "zipped_bytes", "params", "nonzero", "macs", "tf_ms",
                    "litert_ms")


def _path_format(path):
    if os.path.isdir(path):
        return "saved_model"
    for fmt, suffix in (("tflite", ".tflite"), ("keras", ".keras"), ("h5", ".h5")):
        if path.endswith(suffix):
            return fmt
    raise ValueError(f"compare: cannot read {path!r}; pass a tf_keras Model, a .tflite/.keras/.h5 file or a "
                     "SavedModel directory.")


def _accuracy(model_or_path, backend, data):
    x, y = data
    logits = predict(model_or_path, x, backend=backend)
    if isinstance(logits, list):
        raise ValueError("compare: accuracy needs single-output models (logits).")
    labels = np.asarray(y)
    labels = labels.argmax(-1) if labels.ndim > 1 else labels
    return float(np.mean(logits.argmax(-1) == labels))


def compare(models, data=None, representative_data=None, size_format="tflite", directory=None, batch_size=32,
            threads=None, warmup=5, repeats=20, strip=None):
    """One row per variant: size, params, non-zeros, MACs, latency and accuracy; returns (rows, text).

    `models` maps a name to a tf_keras Model or a path (.tflite, .keras, .h5, SavedModel directory). Models
    are written as `size_format` into `directory` (a temporary one if None) and that file's size is reported.
    `tf_ms` times a Keras `tf.function` (or a SavedModel's signature) at `batch_size`; `litert_ms` times LiteRT
    at batch 1 with `threads` (default 1) on the row's TFLite file, or a float conversion of a Keras model.
    `data` = (x, y) adds accuracy: argmax of the outputs against labels (integers or one-hot). Variants run
    as given (a wrapped model is timed with its wrappers), and their latencies are interleaved.

    Args:
      models: ``{name: model or path}``.
      data: optional ``(x, y)`` test data for an accuracy column.
      representative_data: calibration inputs when `size_format` is ``tflite_int8``.
      size_format: the format from `FORMATS` whose file size is reported.
      directory: where the variants' files go (None: a temporary folder).
      batch_size: the batch of the TensorFlow timings.
      threads: LiteRT threads (None: 1).
      warmup, repeats: untimed and timed calls per variant.
      strip: as in `save`.

    Returns:
      ``(rows, text)``: one dict per variant (columns variant, format, bytes, zipped_bytes, params, nonzero,
      macs, tf_ms, litert_ms and, with `data`, accuracy) and the notes plus the table as text.

    Raises:
      ValueError: an empty `models`, an unknown `size_format`, a path of no known format, or a multi-output
        model with `data`.
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("compare: `models` must be a non-empty dict {name: model or path}.")
    if size_format not in FORMATS:
        raise ValueError(f"compare: unknown `size_format` {size_format!r}; choose from {list(FORMATS)}.")
    with tempfile.TemporaryDirectory() as scratch:
        directory = scratch if directory is None else directory
        rows, tf_targets, litert_targets = [], {}, {}
        for name, variant in models.items():
            row = dict.fromkeys(_COMPARE_COLUMNS) | {"variant": name}
            if is_model(variant):
                report = save(variant, directory, formats=(size_format,), representative_data=representative_data,
                              name=name, strip=strip)
                artifact = report["artifacts"][size_format]
                row.update(format=size_format, bytes=artifact["bytes"], zipped_bytes=artifact["zipped_bytes"],
                           params=report["params"], nonzero=report["nonzero"], macs=report["macs"])
                tf_targets[name] = variant
                litert_targets[name] = artifact["path"] if size_format.startswith("tflite") else variant
                rows.append(row)
                continue
            path = os.fspath(variant)
            row.update(format=_path_format(path), **artifact_size(path))
            if row["format"] in ("keras", "h5"):
                model = load_model(path, compile=False)
                row.update(params=count_params(model), nonzero=count_nonzero(model), macs=_macs(model))
                tf_targets[name] = litert_targets[name] = model
            elif row["format"] == "saved_model":
                tf_targets[name] = path
            else:
                litert_targets[name] = path
            rows.append(row)
        tf_times = compare_latency(tf_targets, batch_size=batch_size, warmup=warmup, repeats=repeats) \
            if tf_targets else {}
        litert_times = compare_latency(litert_targets, backend="litert", threads=threads, warmup=warmup,
                                       repeats=repeats) if litert_targets else {}
        for row in rows:
            name = row["variant"]
            row["tf_ms"] = tf_times[name]["median_ms"] if name in tf_times else None
            row["litert_ms"] = litert_times[name]["median_ms"] if name in litert_times else None
            if data is not None:
                if name in tf_targets:
                    row["accuracy"] = _accuracy(tf_targets[name], None, data)
                else:
                    row["accuracy"] = _accuracy(litert_targets[name], "litert", data)
    notes = []
    if tf_times:
        threads_in_force = next(iter(tf_times.values()))["threads"]
        notes.append(f"tf_ms: median at batch {batch_size}, {threads_in_force} intra-op threads (0 = TF default)")
    if litert_times:
        notes.append(f"litert_ms: median at batch 1, {next(iter(litert_times.values()))['threads']} thread(s)")
    columns = _COMPARE_COLUMNS + (("accuracy",) if data is not None else ())
    return rows, "; ".join(notes) + "\n" + format_table(rows, columns=columns)
