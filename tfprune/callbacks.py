"""Callbacks that drive every pruning wrapper during `model.fit` (or a custom training loop).

One `UpdatePruningStep` serves TFMOT's wrappers and tfprune's: it keeps the step counter, asks each
pruner's schedule whether this step prunes, and writes masked zeros into the weights at epoch end.

Custom training loop (gives the same masks as `fit`)::

    callback = tfprune.UpdatePruningStep()      # data=(x, y) for "taylor"/"apoz"
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(epochs):
        callback.on_epoch_begin(epoch)            # the first step's pruning, outside any timed batch
        for batch, (x, y) in enumerate(dataset):
            callback.on_train_batch_begin(batch)  # masks change here when a schedule fires
            train_step(x, y)                      # model(x, training=True) computes with weight * mask
            callback.on_train_batch_end(batch)    # advances the step
        callback.on_epoch_end(epoch)              # writes the masked zeros into the weights
"""
import numpy as np

from tfprune import schedules
from tfprune._keras import keras, tf, tf_variable, tfmot
from tfprune.mask import current_step, mask_writer, masked_layers, masks
from tfprune.unit import UnitPruner
from tfprune.weight import WeightPruner


@keras.utils.register_keras_serializable(package="tfprune")
class UpdatePruningStep(keras.callbacks.Callback):
    """Advances pruning schedules and updates masks; required when training any pruned model.

    Args:
      data: optional calibration batch ``(x, y)`` for unit criteria that need gradients or activations
        (``taylor``, ``apoz``; y may be None for ``apoz``); ignored otherwise. Keep it small: it is scored
        every time the schedule fires.

    Raises:
      ValueError: `data` is not a pair; at the start of training, a unit criterion needs `data` it was not
        given.
    """

    def __init__(self, data=None):
        super().__init__()
        if data is not None and not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ValueError(f"UpdatePruningStep: data must be a calibration pair (x, y) (y may be None for "
                             f"'apoz'), got a {type(data).__name__}.")
        self.data = None if data is None else tuple(data)
        self.step = 0
        self._pruned_step = None
        self.layers = []
        self.pruners = []
        self._prepared_for = None
        self._tfmot = tfmot.sparsity.keras.UpdatePruningStep()

    def on_train_begin(self, logs=None):
        layers = masked_layers(self.model)
        # Another fit of the same model (an epoch per fit, IMP rounds) keeps the pruners and their compiled
        # functions instead of analysing and tracing again.
        if self.model is not self._prepared_for or [id(layer) for layer in layers] != [id(l) for l in self.layers]:
            # Pruners check their plans (e.g. missing calibration data) before any state changes.
            self.pruners = WeightPruner.from_model(layers) + UnitPruner.from_model(self.model, layers, self.data)
            self.layers = layers
            self._apply_masks = mask_writer(layers)
            self._prepared_for = self.model
        self._tfmot.set_model(self.model)
        self._tfmot.on_train_begin(logs)
        self.step = None  # read later, after any callback (BackupAndRestore) restored the model
        self._pruned_step = None

    def on_epoch_begin(self, epoch, logs=None):
        # Keras times batch hooks and warns when they outlast the batch; the step read and a first update (which
        # also runs the compiled updates for the first time) are one-off costs, paid here when the epoch starts.
        self._prune_due()

    def on_train_batch_begin(self, batch, logs=None):
        self._prune_due()

    def _prune_due(self):
        """Update the masks whose schedules fire at the current step, once per step."""
        if self.step is None:
            self.step = current_step(self.model)
            for layer in self.layers:  # wrappers added later start at the model's step
                if int(layer.pruning_step.numpy()) != self.step:
                    tf_variable(layer.pruning_step).assign(self.step, read_value=False)
        if self._pruned_step == self.step:
            return
        self._pruned_step = self.step
        for pruner in self.pruners:
            fires, sparsity = schedules.evaluate(pruner.schedule, self.step - pruner.start)
            if fires:
                pruner.update(sparsity, self.step)

    def on_train_batch_end(self, batch, logs=None):
        if self.step is not None:
            self.step += 1  # mirrors the layers' steps, which each training call advances in the graph

    def on_epoch_end(self, epoch, logs=None):
        self._tfmot.on_epoch_end(epoch, logs)
        self._apply_masks()

    def get_config(self):
        return {}


class ScalarLogger(keras.callbacks.Callback):
    """Base for callbacks that log scalars to TensorBoard: one writer, opened on first use, closed at train end.

    Args:
      log_dir: the TensorBoard folder; None writes nothing.
    """

    def __init__(self, log_dir=None):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def write_scalars(self, step, values):
        """Write scalars to TensorBoard (nothing when there is no log_dir).

        Args:
          step: the x-axis value, e.g. the epoch.
          values: ``{tag: float}``.
        """
        if self.log_dir is None:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@keras.utils.register_keras_serializable(package="tfprune")
class PruningSummaries(ScalarLogger):
    """Writes per-layer weight sparsity and unit sparsity to TensorBoard at each epoch end.

    Tags: ``sparsity/<layer>/<weight>`` (effective mask) and ``unit_sparsity/<layer>/<weight>_axis<k>``
    (fraction of removed channels along each masked axis, e.g. a Dense kernel's axis 1 = its units).

    Args:
      log_dir: the TensorBoard folder to write to (``tensorboard --logdir`` it); required, since writing
        these summaries is this callback's only job.

    Raises:
      ValueError: `log_dir` is empty or None.
    """

    def __init__(self, log_dir):
        if not log_dir:
            raise ValueError("PruningSummaries: `log_dir` must name the folder to write the summaries to, e.g. "
                             f"PruningSummaries(log_dir='logs/pruning'); got {log_dir!r}.")
        super().__init__(log_dir)

    def on_epoch_end(self, epoch, logs=None):
        values = {f"sparsity/{layer}/{attribute}": 1.0 - float(np.mean(mask))
                  for (layer, attribute), mask in masks(self.model).items()}
        for layer in masked_layers(self.model):
            for name, axes in layer.channel_masked.items():
                for axis in axes:
                    values[f"unit_sparsity/{layer.layer.name}/{name}_axis{axis}"] = 1.0 - float(
                        np.mean(layer.keep(name, axis).numpy()))
        self.write_scalars(epoch, values)

    def get_config(self):
        return {"log_dir": self.log_dir}
