"""Importance criteria for unit/filter pruning: one score per channel of a group, higher = keep.

A criterion is ``criterion(group, tensors) -> scores`` of shape ``(group.size,)``. It reads only what
`tensors` offers: ``weight(slice)``, ``gradient(slice)`` (dL/dweight on calibration data) and
``activations(layer_name)``, all tensors. Its ``needs`` attribute (``set()``, ``{"gradients"}`` or
``{"activations"}``) tells callers which data to compute, so weight-only criteria never run the model.
`ModelTensors` is a ready-made `tensors` for a plain model.

The built-in criteria are TensorFlow ops, so unit pruning scores channels inside one compiled update on the
device that holds the weights. A criterion written with numpy works too: the pruner then runs it eagerly
(the weights it reads are copied to the host) and says so once.

Criteria score whole groups, so coupled slices (residual partners, concatenated branches) are judged once.
"""
import numpy as np

from tfprune._keras import graph_nodes, is_graph_model, is_layer, is_model, is_variable, keras, tf
from tfprune.graph import KERNEL_WEIGHTS, unwrap_layer
from tfprune.registry import resolve_weight

__all__ = ["CRITERIA", "KERNEL_WEIGHTS", "ModelTensors", "apoz", "bn_gamma", "get_criterion", "l1", "l2",
           "mean_column_norm", "normalize_scores", "random_criterion", "register_criterion", "score_group", "taylor"]

#: Weights that map a layer's inputs to its outputs; weight-norm criteria read only these.
_DATA_KINDS = frozenset({"gradients", "activations"})
_RUNNING_STATISTICS = ("moving_mean", "moving_variance")

#: name -> registered criterion; iterate it for the names.
CRITERIA = {}


def register_criterion(name, needs=None):
    """Decorator adding a criterion under `name`; it gets ``needs`` (default: kept, else empty) and ``tfprune_name``.

    Names are unique so a saved pruning plan always resolves to the same function.
    Example: ``@register_criterion("l1_out", needs=set())`` above ``def l1_out(group, tensors): ...``.

    Args:
      name: the name `prune_units(criterion=...)` and `get_criterion` accept.
      needs: the data the criterion reads, a subset of ``{"gradients", "activations"}``; None keeps the
        function's own ``needs`` attribute, or none.

    Returns:
      a decorator that registers the criterion and returns it unchanged but for the two attributes.

    Raises:
      ValueError: (when the decorator is applied) `name` is already registered, or `needs` names other data.
    """
    def register(criterion):
        if name in CRITERIA:
            raise ValueError(f"A criterion named '{name}' is already registered; choose another name.")
        required = frozenset(needs if needs is not None else getattr(criterion, "needs", ()))
        if not required <= _DATA_KINDS:
            raise ValueError(f"criterion '{name}': needs must be a subset of {sorted(_DATA_KINDS)}, "
                             f"got {sorted(required)}.")
        criterion.needs = required
        criterion.tfprune_name = name
        CRITERIA[name] = criterion
        return criterion
    return register


def get_criterion(name_or_callable):
    """The registered criterion called `name`, or a callable criterion after checking it declares `needs`, so
    callers know which data to compute before scoring.

    Args:
      name_or_callable: a name in `CRITERIA`, or a function ``criterion(group, tensors) -> scores`` with a
        ``needs`` attribute.

    Returns:
      the criterion function.

    Raises:
      ValueError: an unknown name.
      TypeError: neither a string nor a callable, or a callable without ``needs``.
    """
    if isinstance(name_or_callable, str):
        if name_or_callable not in CRITERIA:
            raise ValueError(f"Unknown criterion '{name_or_callable}'. Choices: {sorted(CRITERIA)}.")
        return CRITERIA[name_or_callable]
    if not callable(name_or_callable):
        raise TypeError(f"criterion must be a name or a callable, got {type(name_or_callable).__name__}.")
    if not hasattr(name_or_callable, "needs"):
        raise TypeError(f"criterion {getattr(name_or_callable, '__name__', name_or_callable)!r} has no `needs` "
                        f"attribute; decorate it with @register_criterion('name') or set fn.needs = set().")
    return name_or_callable


def score_group(criterion, group, tensors):
    """Run `criterion` on `group` and check it returned one finite score per channel (a float64 tensor).

    Inside a compiled update the finiteness check is an assertion op: it fails the update, naming the group.

    Args:
      criterion: a criterion function (see `get_criterion`).
      group: the `tfprune.graph.ChannelGroup` to score.
      tensors: what the criterion reads (`ModelTensors` or the pruner's own).

    Returns:
      the scores, a float64 tensor of shape ``(group.size,)``.

    Raises:
      ValueError: the scores have another shape, or (eagerly) are not all finite; and whatever `criterion`
        raises.
      tf.errors.InvalidArgumentError: non-finite scores inside a compiled update.
    """
    scores = tf.cast(criterion(group, tensors), tf.float64)
    name = getattr(criterion, "tfprune_name", getattr(criterion, "__name__", repr(criterion)))
    if tuple(scores.shape) != (group.size,):
        raise ValueError(f"criterion '{name}' returned shape {tuple(scores.shape)} for group {group.id}; "
                         f"expected ({group.size},).")
    message = f"criterion '{name}' returned non-finite scores for group {group.id} (producers {group.producers})."
    if not tf.executing_eagerly():
        return tf.debugging.assert_all_finite(scores, message)
    if not np.all(np.isfinite(scores.numpy())):
        raise ValueError(message)
    return scores


def normalize_scores(scores):
    """Scores divided by their mean magnitude, so groups of different layers can be ranked together.

    The mean of |scores| equals the mean for the non-negative built-in criteria and keeps the order for
    signed ones; all-zero (and empty) scores stay as they are.

    Args:
      scores: one group's scores, a tensor or array.

    Returns:
      a float64 tensor of the same shape.
    """
    scores = tf.cast(scores, tf.float64)
    scale = tf.math.divide_no_nan(tf.reduce_sum(tf.abs(scores)), tf.cast(tf.size(scores), tf.float64))
    return tf.where(scale > 0, scores / tf.where(scale > 0, scale, 1.0), scores)


# --- built-in criteria -----------------------------------------------------------------------------

def _kernel_slices(group):
    """The producer/channel-preserving kernel slices of a group: what weight-norm criteria read."""
    pieces = [piece for piece in group.slices
              if piece.role == "out" and piece.weight.rsplit(".", 1)[-1] in KERNEL_WEIGHTS]  # "_query_dense.kernel" too
    if not pieces:
        raise ValueError(f"Group {group.id} has no producer kernel ({group.reason or 'no producer'}); "
                         f"weight-norm criteria need one.")
    return pieces


def _channel_sums(group, tensors, squared):
    """(Σ |w| or Σ w² per channel over the group's kernel slices, entries per channel)."""
    sums, entries = 0.0, 0
    for piece in _kernel_slices(group):
        weight = tensors.weight(piece)
        piece_sums, piece_entries = piece.channel_sums(weight if squared else tf.abs(weight), squared=squared)
        sums, entries = sums + piece_sums, entries + piece_entries
    return sums, entries


@register_criterion("l2")
def l2(group, tensors):
    """Group L2 norm of each channel's output kernel entries (biases and BatchNorm left out): the usual
    weight-only criterion, needing no data.

    Args:
      group: the `tfprune.graph.ChannelGroup` to score.
      tensors: gives ``weight(slice)`` (e.g. `ModelTensors`).

    Returns:
      a tensor of ``group.size`` non-negative scores.

    Raises:
      ValueError: the group has no producer kernel.
    """
    return tf.sqrt(_channel_sums(group, tensors, squared=True)[0])


@register_criterion("l1")
def l1(group, tensors):
    """Sum of |w| over each channel's output kernel entries (Li et al. 2017's filter norm), needing no data.

    Args:
      group, tensors: as for `l2`.

    Returns:
      a tensor of ``group.size`` non-negative scores.

    Raises:
      ValueError: as for `l2`.
    """
    return _channel_sums(group, tensors, squared=False)[0]


@register_criterion("mean_column_norm")
def mean_column_norm(group, tensors):
    """RMS of each channel's output kernel entries: comparable across layers with different fan-in.

    Args:
      group, tensors: as for `l2`.

    Returns:
      a tensor of ``group.size`` non-negative scores.

    Raises:
      ValueError: as for `l2`.
    """
    sums, entries = _channel_sums(group, tensors, squared=True)
    return tf.sqrt(sums / entries)


@register_criterion("bn_gamma")
def bn_gamma(group, tensors):
    """Sum of |gamma| over the group's BatchNormalization layers (network slimming's channel scale), which
    a sparsity penalty on gamma drives to zero for unneeded channels.

    Args:
      group: the `tfprune.graph.ChannelGroup` to score.
      tensors: gives ``weight(slice)`` (e.g. `ModelTensors`).

    Returns:
      a tensor of ``group.size`` non-negative scores.

    Raises:
      ValueError: the group has no BatchNormalization, or its BatchNormalization has no gamma (scale=False).
    """
    batch_norms = {piece.layer for piece in group.slices if piece.weight == "moving_variance"}
    if not batch_norms:
        raise ValueError(f"Group {group.id} (producers {group.producers}) has no BatchNormalization; "
                         f"'bn_gamma' needs one. Use 'l2' for this model.")
    gammas = [piece for piece in group.slices if piece.weight == "gamma" and piece.layer in batch_norms]
    if not gammas:
        raise ValueError(f"BatchNormalization {sorted(batch_norms)} of group {group.id} has no gamma "
                         f"(scale=False); 'bn_gamma' needs it. Use 'l2' for this model.")
    return tf.add_n([tf.reduce_sum(tf.abs(piece.channel_view(tensors.weight(piece))), axis=1) for piece in gammas])


@register_criterion("taylor", needs={"gradients"})
def taylor(group, tensors):
    """First-order Taylor estimate of the loss change when a channel is removed (Molchanov et al. 2019).

    (sum of w * dL/dw over the channel's output slices, biases and BatchNorm scale/shift included)^2;
    running statistics have no gradient and are skipped.

    Args:
      group: the `tfprune.graph.ChannelGroup` to score.
      tensors: gives ``weight(slice)`` and ``gradient(slice)`` (e.g. `ModelTensors` with labelled data).

    Returns:
      a float64 tensor of ``group.size`` non-negative scores.

    Raises:
      ValueError: as ``tensors.gradient`` (`ModelTensors`: no data, labels or loss, or a frozen weight).
    """
    total = tf.zeros([group.size], tf.float64)
    for piece in group.slices:
        if piece.role != "out" or piece.weight in _RUNNING_STATISTICS:
            continue
        product = (tf.cast(piece.channel_view(tensors.weight(piece)), tf.float64)
                   * piece.channel_view(tensors.gradient(piece)))
        total += tf.reduce_sum(product, axis=1)
    return total ** 2


@register_criterion("apoz", needs={"activations"})
def apoz(group, tensors):
    """1 - Average Percentage of Zeros of the channel's post-ReLU outputs (Hu et al. 2016): often-dead = low.

    Args:
      group: the `tfprune.graph.ChannelGroup` to score.
      tensors: gives ``activations(layer_name)`` (e.g. `ModelTensors` with data).

    Returns:
      a float64 tensor of ``group.size`` scores in [0, 1].

    Raises:
      ValueError: no layer of the group applies a ReLU; and as ``tensors.activations`` (`ModelTensors`: no
        data).
    """
    outputs = [piece for piece in group.carrier_slices if piece.layer in group.relu_carriers]
    if not outputs:
        raise ValueError(f"Group {group.id} (carriers {group.carriers}) has no ReLU output; 'apoz' needs a "
                         f"ReLU layer, Activation('relu') or activation='relu' on a layer of the group.")
    entries = tf.concat([piece.channel_view(tensors.activations(piece.layer)) for piece in outputs], axis=1)
    return 1.0 - tf.reduce_mean(tf.cast(tf.equal(entries, 0), tf.float64), axis=1)


def random_criterion(seed=0):
    """A criterion giving uniform random scores, seeded per group so the result does not depend on call order;
    the baseline any real criterion should beat. ``"random"`` is this with seed 0.

    Args:
      seed: the seed, combined with each group's id.

    Returns:
      a criterion function (needs no data) returning ``group.size`` scores in [0, 1).
    """
    def random_scores(group, tensors):
        return np.random.default_rng([seed, group.id]).random(group.size)
    random_scores.needs = frozenset()
    return random_scores


register_criterion("random")(random_criterion(0))


# --- tensors for a plain model ---------------------------------------------------------------------

class ModelTensors:
    """Weights, and on demand gradients and activations of `model` on calibration data `x` (labels `y`).

    Gradients are the dataset mean of dL/dweight in inference mode; `loss` defaults to the compiled loss.
    Example: ``tfprune.criteria.taylor(group, ModelTensors(model, x, y))``.

    Args:
      model: the model whose layers the groups name (nested models and pruning wrappers are looked through).
      x: calibration inputs (array, or nested lists/dicts of arrays); needed for gradients and activations.
      y: labels for `x`; needed for gradients.
      loss: a Keras loss (name or function); None uses ``model.loss``.
      batch_size: rows per forward pass.

    Raises:
      (from the methods) ValueError: a slice names a layer or weight the model lacks; gradients or
        activations asked for without `x`, or gradients without `y` and a loss; a gradient of a frozen weight.
    """

    def __init__(self, model, x=None, y=None, loss=None, batch_size=128):
        self.model = model
        self.x, self.y = x, y
        self.loss = loss if loss is not None else getattr(model, "loss", None)
        self.batch_size = batch_size
        self.layers = _innermost_layers(model)
        self._gradients = None
        self._activations = {}

    def _variable(self, piece):
        if piece.layer not in self.layers:
            raise ValueError(f"No layer named '{piece.layer}' in model '{self.model.name}'.")
        layer = self.layers[piece.layer]
        variable = resolve_weight(layer, piece.weight)
        if not is_variable(variable):
            raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) has no weight '{piece.weight}'.")
        return variable

    def weight(self, piece):
        """The weight's current value, a tensor on the variable's device.

        Args:
          piece: a `tfprune.graph.ChannelSlice` (its ``layer`` and ``weight`` name the variable).

        Returns:
          the whole weight tensor (the criterion takes the slice's channels).

        Raises:
          ValueError: the model has no such layer, or the layer no such weight.
        """
        return tf.convert_to_tensor(self._variable(piece))

    def _batches(self, what, with_labels=False):
        """(x, y, share of the data) per batch; x and y may be arrays or nested lists/dicts of arrays."""
        if self.x is None:
            raise ValueError(f"This criterion needs {what}: give calibration data, ModelTensors(model, x, y).")
        if with_labels and (self.y is None or self.loss is None):
            raise ValueError(f"{what.capitalize()} need labels and a loss: ModelTensors(model, x, y, loss=...) "
                             f"or a compiled model.")
        total = tf.nest.flatten(self.x)[0].shape[0]
        for start in range(0, total, self.batch_size):
            rows = slice(start, start + self.batch_size)
            x = _take_rows(self.x, rows)
            yield x, _take_rows(self.y, rows) if with_labels else None, tf.nest.flatten(x)[0].shape[0] / total

    def gradient(self, piece):
        """The mean dL/dweight over the calibration data, computed for all weights on the first call.

        Args:
          piece: a `tfprune.graph.ChannelSlice` (its ``layer`` and ``weight`` name the variable).

        Returns:
          a float64 tensor shaped like the whole weight.

        Raises:
          ValueError: no such layer or weight, no `x`, no `y` or loss, or the weight is not trainable.
        """
        variable = self._variable(piece)
        if self._gradients is None:
            self._gradients = self._mean_gradients()
        if variable.ref() not in self._gradients:
            raise ValueError(f"Weight '{piece.layer}.{piece.weight}' is not trainable, so it has no gradient.")
        return self._gradients[variable.ref()]

    def _mean_gradients(self):
        batches = list(self._batches("gradients", with_labels=True))
        loss_fn = keras.losses.get(self.loss)
        variables = self.model.trainable_variables
        totals = [tf.zeros(v.shape, tf.float64) for v in variables]
        for x, y, share in batches:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(loss_fn(y, self.model(x, training=False)))
            totals = [total if gradient is None else total + share * tf.cast(tf.convert_to_tensor(gradient), tf.float64)
                      for total, gradient in zip(totals, tape.gradient(loss, variables))]
        return {v.ref(): total for v, total in zip(variables, totals)}

    def activations(self, layer_name):
        """A layer's outputs on all the calibration data (inference mode), computed once per layer.

        Args:
          layer_name: the layer's name (a wrapper's inner name, or a layer inside a nested model, accepted).

        Returns:
          the outputs of every batch, concatenated along the batch axis.

        Raises:
          ValueError: the model has no such layer, or there is no `x`.
        """
        if layer_name not in self._activations:
            output_of = _output_function(self.model, layer_name)
            self._activations[layer_name] = tf.concat(
                [output_of(x) for x, _, _ in self._batches("activations")], axis=0)
        return self._activations[layer_name]


def _take_rows(data, rows):
    return tf.nest.map_structure(lambda array: array[rows], data)


def _innermost_layers(model):
    """{inner name: layer} of `model` and its nested models, Keras 3 operations (``x + 3``) included."""
    layers = {}
    for layer in model.layers:
        inner = unwrap_layer(layer)
        layers[inner.name] = inner
        if is_model(inner):
            layers.update(_innermost_layers(inner))
    if is_graph_model(model):
        layers.update({node.layer.name: node.layer for node in graph_nodes(model) if not is_layer(node.layer)})
    return layers


def _output_function(model, name):
    """inputs -> output of layer `name` (inner name of a wrapper accepted), reaching into nested models."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            if name in (layer.name, unwrap_layer(layer).name):
                probe = keras.Model(model.inputs, node.outputs)
                return lambda x: probe(x, training=False)
            if isinstance(layer, keras.Model) and name in _innermost_layers(layer):
                inner = _output_function(layer, name)
                feed = keras.Model(model.inputs, node.input_tensors)
                return lambda x: inner(feed(x, training=False))
    raise ValueError(f"No layer named '{name}' in model '{model.name}'.")
