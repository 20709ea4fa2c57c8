"""TFMOT pruning schedules, evaluated cheaply in Python and checked for schedules that never fire.

tfprune drives its own wrappers with the same `PolynomialDecay` / `ConstantSparsity` objects users
already pass to TFMOT. A schedule is asked `(should_prune, sparsity)` once per training step.
"""
import warnings

from tfprune._keras import tfmot

PruningSchedule = tfmot.sparsity.keras.PruningSchedule
PolynomialDecay = tfmot.sparsity.keras.PolynomialDecay
ConstantSparsity = tfmot.sparsity.keras.ConstantSparsity

_KNOWN = {"PolynomialDecay": PolynomialDecay, "ConstantSparsity": ConstantSparsity}


def check_schedule(schedule, argument="schedule"):
    """Check that `schedule` is a TFMOT pruning schedule.

    Args:
      schedule: the object to check.
      argument: the argument name the error message gives.

    Returns:
      `schedule`, unchanged.

    Raises:
      TypeError: `schedule` is not a `PruningSchedule`.
    """
    if not isinstance(schedule, PruningSchedule):
        raise TypeError(
            f"`{argument}` must be a TFMOT PruningSchedule such as "
            f"tfprune.PolynomialDecay(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=1000), "
            f"got {type(schedule).__name__}.")
    return schedule


def serialize(schedule):
    """The JSON-serialisable ``{"class_name", "config"}`` of `schedule`, as wrappers store it in their plans.

    Args:
      schedule: a `PruningSchedule`.

    Returns:
      the dict `deserialize` reads back.
    """
    return schedule.get_config()


def deserialize(config):
    """The schedule that `serialize` described.

    Args:
      config: ``{"class_name": ..., "config": {...}}``.

    Returns:
      a new `PolynomialDecay`, `ConstantSparsity` or registered custom schedule.

    Raises:
      ValueError: the class is neither built in nor registered with Keras.
    """
    cls = _KNOWN.get(config["class_name"])
    if cls is None:
        from tfprune._keras import keras
        cls = keras.utils.get_registered_object(config["class_name"])
    if cls is None:
        raise ValueError(f"Unknown pruning schedule class {config['class_name']!r}; register it with "
                         f"keras.utils.register_keras_serializable.")
    return cls.from_config(config["config"])


def _params(schedule):
    return schedule.get_config()["config"]


def fires(schedule, step):
    """Whether `schedule` prunes at `step` (the same arithmetic in the graph's check and the callback).

    Args:
      schedule: a `PruningSchedule`.
      step: the training step, an int or an int tensor.

    Returns:
      a Python bool for an int step, a bool tensor for a tensor.
    """
    if not isinstance(schedule, (PolynomialDecay, ConstantSparsity)):
        return schedule(step)[0]
    c = _params(schedule)
    begin, end, frequency = c["begin_step"], c["end_step"], c["frequency"]
    result = (step >= begin) & ((step - begin) % frequency == 0)
    return result if end == -1 else result & (step <= end)


def evaluate(schedule, step):
    """What `schedule` says at `step`, without TensorFlow ops for the built-in schedules.

    Args:
      schedule: a `PruningSchedule`.
      step: the training step, an int.

    Returns:
      ``(should_prune, sparsity)`` as a Python bool and float.
    """
    if isinstance(schedule, (PolynomialDecay, ConstantSparsity)):
        c = _params(schedule)
        begin, end = c["begin_step"], c["end_step"]
        fires_now = bool(fires(schedule, step))
        if isinstance(schedule, ConstantSparsity):
            return fires_now, float(c["target_sparsity"])
        progress = min(1.0, max(0.0, (step - begin) / (end - begin)))
        sparsity = c["final_sparsity"] + (c["initial_sparsity"] - c["final_sparsity"]) * (1 - progress) ** c["power"]
        return fires_now, float(sparsity)
    should_prune, sparsity = schedule(step)
    return bool(should_prune), float(sparsity)


def final_sparsity(schedule):
    """The sparsity a built-in schedule ends at.

    Args:
      schedule: a `PolynomialDecay` or `ConstantSparsity`.

    Returns:
      the final (or constant) sparsity, a float.

    Raises:
      ValueError: `schedule` is another kind of schedule.
    """
    c = _params(schedule)
    if isinstance(schedule, ConstantSparsity):
        return float(c["target_sparsity"])
    if isinstance(schedule, PolynomialDecay):
        return float(c["final_sparsity"])
    raise ValueError(f"final_sparsity: unknown schedule {type(schedule).__name__}")


def last_firing_step(schedule):
    """The last step at which a built-in schedule prunes.

    Args:
      schedule: a `PolynomialDecay` or `ConstantSparsity`.

    Returns:
      the step, or None when it prunes forever (``end_step=-1``).
    """
    c = _params(schedule)
    begin, end, frequency = c["begin_step"], c["end_step"], c["frequency"]
    if end == -1:
        return None
    return begin + ((end - begin) // frequency) * frequency


def warn_if_never_reaches_target(schedule):
    """Warn when a schedule will not prune as it was likely meant to.

    It never reaches its final sparsity (e.g. frequency 100 with end_step < 100), or its sparsity falls
    (initial and final swapped). Other schedules pass silently.

    Args:
      schedule: a `PruningSchedule`.

    Warns:
      UserWarning: naming the settings and a fix.
    """
    if not isinstance(schedule, PolynomialDecay):
        return
    c = _params(schedule)
    if c["final_sparsity"] < c["initial_sparsity"]:
        warnings.warn(
            f"PolynomialDecay(initial_sparsity={c['initial_sparsity']}, final_sparsity={c['final_sparsity']}) "
            "lowers sparsity during training: it prunes most at the start, then lets pruned weights back in at "
            "zero (pruned units stay pruned). Gradual pruning raises sparsity: swap the two, "
            f"initial_sparsity={c['final_sparsity']}, final_sparsity={c['initial_sparsity']}.",
            UserWarning, stacklevel=3)
    last = last_firing_step(schedule)
    if last is None:
        return
    _, reached = evaluate(schedule, last)
    target = final_sparsity(schedule)
    if reached < target - 1e-6:
        warnings.warn(
            f"PolynomialDecay(begin_step={c['begin_step']}, end_step={c['end_step']}, frequency={c['frequency']}) "
            f"last prunes at step {last} with sparsity {reached:.3f}, never reaching final_sparsity={target}. "
            f"Use a frequency that divides end_step - begin_step (e.g. frequency={max(1, (c['end_step'] - c['begin_step']) // 10)}).",
            UserWarning, stacklevel=3)


def with_target(schedule, target):
    """The same schedule timing with a different final sparsity (for per-layer sparsity maps).

    Args:
      schedule: a `PolynomialDecay` or `ConstantSparsity`.
      target: the new final sparsity; a `PolynomialDecay` starting above it starts at it instead.

    Returns:
      a new schedule of the same class.

    Raises:
      ValueError: `schedule` is another kind of schedule.
    """
    c = dict(_params(schedule))
    if isinstance(schedule, ConstantSparsity):
        c["target_sparsity"] = target
        return ConstantSparsity(**c)
    if isinstance(schedule, PolynomialDecay):
        c["initial_sparsity"] = min(c["initial_sparsity"], target)
        c["final_sparsity"] = target
        return PolynomialDecay(**c)
    raise ValueError(f"sparsity_map needs a PolynomialDecay or ConstantSparsity schedule, got "
                     f"{type(schedule).__name__}.")
