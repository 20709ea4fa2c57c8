"""Inference latency of a model as Keras, SavedModel or LiteRT, measured the same way for each.

Keras models are timed as a `tf.function` of `model(x, training=False)`: `predict` adds per-call data
pipeline overhead and eager mode adds Python dispatch per layer, neither of which a deployment pays. XLA is off
because on CPU it was several times slower for convnets. TensorFlow fixes its thread pools when it runs its first
op, so a benchmark script calls `set_threads` at its start; results record the pool size actually in force.
"""
import functools
import os
import time

import numpy as np

from tfprune._keras import is_model, load_model, tf

__all__ = ["DeviceUnavailableError", "set_threads", "latency", "compare_latency", "predict", "BACKENDS"]

BACKENDS = ("keras", "saved_model", "litert")
DEVICES = ("cpu", "gpu")


class DeviceUnavailableError(RuntimeError):
    """The requested device cannot run the requested backend on this machine."""


def set_threads(n):
    """Fix TensorFlow's intra- and inter-op pools to `n` threads; only possible before TF runs its first op.

    Args:
      n: threads per pool, >= 1.

    Raises:
      ValueError: `n` is not a positive int.
      RuntimeError: TensorFlow has already run ops (the message says how many threads are in force).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_threads: `n` must be a positive int, got {n!r}.")
    threading = tf.config.threading
    intra, inter = threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()
    try:
        threading.set_intra_op_parallelism_threads(n)
        threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as error:
        raise RuntimeError(
            f"set_threads({n}): TensorFlow already runs ops with {intra} intra-op and {inter} inter-op threads "
            "(0 = its default, one per core) and cannot change them within a process. Call set_threads at the "
            "start of the program, before any model is built or run."
        ) from error


def _default_backend(model_or_path):
    if is_model(model_or_path):
        return "keras"
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if path.endswith(".tflite"):
            return "litert"
        if os.path.isdir(path):
            return "saved_model"
        if path.endswith((".keras", ".h5")):
            return "keras"
        raise ValueError(f"cannot tell the backend of {path!r}: expected a .tflite, .keras or .h5 file or a "
                         "SavedModel directory; pass `backend=` explicitly.")
    raise TypeError(f"expected a Keras Model or a path, got {type(model_or_path).__name__}.")


class _TFRunner:
    """Inputs are placed on the device once, so the timed call measures the model, not the copy."""

    def prepare(self, arrays):
        with tf.device(self.device):
            return [tf.constant(a) for a in arrays]

    def threads(self):
        return tf.config.threading.get_intra_op_parallelism_threads()


class _KerasRunner(_TFRunner):
    """`model(x, training=False)` compiled once as a tf.function (no XLA) on the requested device."""

    def __init__(self, model, device):
        if not is_model(model):
            model = load_model(model, compile=False)
        self.device = device
        self.specs = [(tuple(t.shape[1:]), tf.as_dtype(t.dtype).as_numpy_dtype) for t in model.inputs]
        # A function object of this model's own: TensorFlow counts traces per Python function (a lambda's code
        # is shared by every runner), so one trace per model would read as retracing after five models.
        self._fn = tf.function(functools.partial(model, training=False), jit_compile=False, reduce_retracing=True)
        self._single = len(model.inputs) == 1

    def __call__(self, tensors):
        with tf.device(self.device):
            return [t.numpy() for t in tf.nest.flatten(self._fn(tensors[0] if self._single else tensors))]


class _SavedModelRunner(_TFRunner):
    """The `serving_default` signature of a SavedModel; inputs go in the signature's (name-sorted) order."""

    def __init__(self, path, device):
        if is_model(path) or not os.path.isdir(os.fspath(path)):
            raise ValueError("backend='saved_model' needs a SavedModel directory; write one with "
                             "tfprune.export.save(model, directory, formats=('saved_model',)).")
        self.device = device
        self._loaded = tf.saved_model.load(os.fspath(path))
        if "serving_default" not in self._loaded.signatures:
            raise ValueError(f"SavedModel {os.fspath(path)!r} has no 'serving_default' signature; export it "
                             "with tfprune.export.save or keras `model.export`.")
        self._fn = self._loaded.signatures["serving_default"]
        inputs = self._fn.structured_input_signature[1]
        self._names = sorted(inputs)
        self.specs = [(tuple(inputs[n].shape[1:]), inputs[n].dtype.as_numpy_dtype) for n in self._names]

    def __call__(self, tensors):
        with tf.device(self.device):
            outputs = self._fn(**dict(zip(self._names, tensors)))
        return [outputs[k].numpy() for k in sorted(outputs)]


def _litert_interpreter():
    """LiteRT's Interpreter class; imported here because LiteRT is an extra, not needed to import tfprune."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ImportError("backend='litert' runs models in LiteRT, which is not installed; install it with "
                          "`pip install tfprune[demo]` or `pip install ai-edge-litert`.") from error
    return Interpreter


class _LiteRTRunner:
    """A LiteRT interpreter whose input tensors are resized to the batch given; floats are quantized on entry."""

    def __init__(self, model_or_path, threads):
        interpreter_class = _litert_interpreter()
        if is_model(model_or_path):
            content = tf.lite.TFLiteConverter.from_keras_model(model_or_path).convert()
            self._interpreter = interpreter_class(model_content=content, num_threads=threads)
        else:
            self._interpreter = interpreter_class(model_path=os.fspath(model_or_path), num_threads=threads)
        self._threads = 1 if threads is None else threads  # LiteRT's own default is one thread
        self._inputs = self._interpreter.get_input_details()
        self._outputs = None  # output indices, looked up once per allocation: not part of the timed call
        self._batch = None
        self.specs = [(tuple(d["shape_signature"][1:]),
                       np.float32 if d["quantization"][0] else d["dtype"]) for d in self._inputs]

    def prepare(self, arrays):
        batch = arrays[0].shape[0]
        if batch != self._batch:
            for detail, array in zip(self._inputs, arrays):
                self._interpreter.resize_tensor_input(detail["index"], list(array.shape))
            self._interpreter.allocate_tensors()
            self._outputs = [detail["index"] for detail in self._interpreter.get_output_details()]
            self._batch = batch
        prepared = []
        for detail, array in zip(self._inputs, arrays):
            scale, zero_point = detail["quantization"]
            if scale and not np.issubdtype(array.dtype, np.integer):
                info = np.iinfo(detail["dtype"])
                array = np.clip(np.round(array / scale + zero_point), info.min, info.max)
            prepared.append(np.ascontiguousarray(array, dtype=detail["dtype"]))
        return prepared

    def __call__(self, arrays):
        for detail, array in zip(self._inputs, arrays):
            self._interpreter.set_tensor(detail["index"], array)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(index) for index in self._outputs]

    def dequantize(self, outputs):
        result = []
        for detail, output in zip(self._interpreter.get_output_details(), outputs):
            scale, zero_point = detail["quantization"]
            result.append((output.astype(np.float32) - zero_point) * scale if scale else output)
        return result

    def threads(self):
        return self._threads


def _runner(model_or_path, backend, device, threads):
    """Check arguments before anything is loaded, then build the backend's runner."""
    backend = _default_backend(model_or_path) if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS} (or None to infer it), got {backend!r}.")
    if device not in DEVICES:
        raise ValueError(f"`device` must be one of {DEVICES}, got {device!r}.")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"`threads` must be a positive int or None, got {threads!r}.")
    if device == "gpu" and backend == "litert":
        raise DeviceUnavailableError("device='gpu' with backend='litert': ai_edge_litert ships no GPU delegate "
                                     "for x86; use device='cpu' or backend='keras'/'saved_model'.")
    if device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise DeviceUnavailableError("device='gpu' but TensorFlow sees no GPU "
                                     "(tf.config.list_physical_devices('GPU') is empty); use device='cpu'.")
    if backend == "litert":
        return backend, _LiteRTRunner(model_or_path, threads)
    if threads is not None and threads != tf.config.threading.get_intra_op_parallelism_threads():
        set_threads(threads)
    tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
    runner = _KerasRunner if backend == "keras" else _SavedModelRunner
    return backend, runner(model_or_path, tf_device)


def _as_list(data):
    return [np.asarray(a) for a in data] if isinstance(data, (list, tuple)) else [np.asarray(data)]


def _inputs(specs, batch_size, input_data, seed):
    """The caller's data checked against the model's inputs, or seeded random data of the right shape."""
    if input_data is not None:
        arrays = _as_list(input_data)
        if len(arrays) != len(specs):
            raise ValueError(f"`input_data` has {len(arrays)} arrays but the model takes {len(specs)} inputs.")
        if any(a.shape[0] != batch_size for a in arrays):
            raise ValueError(f"`input_data` has {arrays[0].shape[0]} rows but batch_size={batch_size}; pass "
                             f"batch_size={arrays[0].shape[0]}.")
        return arrays
    rng = np.random.default_rng(seed)
    arrays = []
    for shape, dtype in specs:
        if any(d is None or d < 0 for d in shape):
            raise ValueError(f"the model's input shape {shape} is not fixed; pass `input_data`.")
        size = (batch_size,) + tuple(shape)
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=size).astype(dtype))
        else:
            arrays.append(rng.standard_normal(size).astype(dtype))
    return arrays


def compare_latency(models, batch_size=1, backend=None, device="cpu", threads=None, warmup=10, repeats=50,
                    input_data=None, seed=0):
    """Latency of several models, timed round robin so that machine drift hits every model alike.

    Args:
      models: ``{name: tf_keras Model or path}`` (.tflite, .keras, .h5, SavedModel directory).
      batch_size: examples per call.
      backend: ``"keras"``, ``"saved_model"``, ``"litert"``, or None: Keras for models, the natural backend for
        paths.
      device: ``"cpu"`` or ``"gpu"`` (TensorFlow backends only).
      threads: LiteRT's `num_threads` (default 1); for TensorFlow backends `set_threads`, which fails once
        TensorFlow has run ops, so set it at process start.
      warmup: untimed calls first.
      repeats: timed calls.
      input_data: the inputs (one array per model input, `batch_size` rows); None: seeded random data.
      seed: the random data's seed.

    Returns:
      ``{name: result}``; a result holds ``median_ms``, ``p10_ms``, ``p90_ms``, ``mean_ms``, the settings and
      ``threads``, the pool size in force (for TensorFlow, 0 means its default of one per core).

    Raises:
      ValueError: a bad argument, a path of no known kind, or inputs of no fixed shape without `input_data`.
      DeviceUnavailableError: the device cannot run the backend here.
      ImportError: ``litert`` without LiteRT installed.
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("`models` must be a non-empty dict {name: model or path}.")
    for argument, value, least in (("batch_size", batch_size, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"`{argument}` must be an int >= {least}, got {value!r}.")
    prepared = {}
    for name, model in models.items():
        chosen, runner = _runner(model, backend, device, threads)
        prepared[name] = (chosen, runner, runner.prepare(_inputs(runner.specs, batch_size, input_data, seed)))
    for _, runner, inputs in prepared.values():
        for _ in range(warmup):
            runner(inputs)
    names = list(prepared)
    times = {name: [] for name in names}
    for r in range(repeats):
        # Rotate the starting model too, so none always runs right after another.
        for name in names[r % len(names):] + names[:r % len(names)]:
            _, runner, inputs = prepared[name]
            start = time.perf_counter()
            runner(inputs)
            times[name].append((time.perf_counter() - start) * 1e3)
    results = {}
    for name, (chosen, runner, _) in prepared.items():
        t = np.asarray(times[name])
        results[name] = {
            "median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean()), "repeats": repeats,
            "warmup": warmup, "batch_size": batch_size, "backend": chosen, "device": device,
            "threads": runner.threads(),
        }
    return results


def latency(model_or_path, batch_size=1, backend=None, device="cpu", threads=None, warmup=10, repeats=50,
            input_data=None, seed=0):
    """Median and spread of one inference call, in ms. Example: ``latency("out/model.tflite", threads=1)``.

    Args:
      model_or_path: a tf_keras Model or a path (.tflite, .keras, .h5, SavedModel directory).
      batch_size, backend, device, threads, warmup, repeats, input_data, seed: as in `compare_latency`.

    Returns:
      the model's result, as in `compare_latency`.

    Raises:
      as `compare_latency`.
    """
    return compare_latency({"model": model_or_path}, batch_size=batch_size, backend=backend, device=device,
                           threads=threads, warmup=warmup, repeats=repeats, input_data=input_data,
                           seed=seed)["model"]


def predict(model_or_path, x, backend=None, batch_size=256, device="cpu", threads=None):
    """Outputs of any backend over `x` in batches, for accuracy checks.

    Args:
      model_or_path: a tf_keras Model or a path (.tflite, .keras, .h5, SavedModel directory).
      x: the inputs, an array or one array per model input.
      backend, device, threads: as in `compare_latency`.
      batch_size: examples per call.

    Returns:
      the outputs as an array (a list for several outputs); quantized LiteRT outputs are dequantized.

    Raises:
      ValueError: a bad argument or a path of no known kind.
      DeviceUnavailableError: the device cannot run the backend here.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    _, runner = _runner(model_or_path, backend, device, threads)
    arrays = _as_list(x)
    chunks = []
    for start in range(0, arrays[0].shape[0], batch_size):
        outputs = runner(runner.prepare([a[start:start + batch_size] for a in arrays]))
        chunks.append(runner.dequantize(outputs) if isinstance(runner, _LiteRTRunner) else outputs)
    outputs = [np.concatenate(parts) for parts in zip(*chunks)]
    return outputs[0] if len(outputs) == 1 else outputs
