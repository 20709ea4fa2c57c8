"""Callbacks that drive every pruning wrapper during `model.fit` (or a custom training loop).

One `UpdatePruningStep` serves TFMOT's wrappers and tfprune's: it keeps the step counter, asks each
pruner's schedule whether this step prunes, and writes masked zeros into the weights at epoch end.
Custom loop recipe: ``cb.set_model(model); cb.on_train_begin()``, then per batch
``cb.on_train_batch_begin(i)`` before the train step and ``cb.on_train_batch_end(i)`` after it, and
``cb.on_epoch_end(epoch)`` per epoch.
"""
import numpy as np

from tfprune import schedules
from tfprune._keras import keras, tf, tfmot
from tfprune.mask import masked_layers, masks
from tfprune.unit import UnitPruner
from tfprune.weight import WeightPruner


@keras.utils.register_keras_serializable(package="tfprune")
class UpdatePruningStep(keras.callbacks.Callback):
    """Advances pruning schedules and updates masks; required when training any pruned model.

    Args:
      data: optional calibration batch ``(x, y)`` for unit criteria that need gradients or activations
        (``taylor``, ``apoz``); ignored otherwise.
    """

    def __init__(self, data=None):
        super().__init__()
        self.data = data
        self.step = 0
        self.layers = []
        self.pruners = []
        self._tfmot = tfmot.sparsity.keras.UpdatePruningStep()

    def on_train_begin(self, logs=None):
        self._tfmot.set_model(self.model)
        self._tfmot.on_train_begin(logs)
        self.layers = masked_layers(self.model)
        if not self.layers:
            return
        self.step = max(int(self.layers[0].pruning_step.numpy()), 0)
        self.pruners = WeightPruner.from_model(self.layers) + UnitPruner.from_model(self.model, self.layers,
                                                                                     self.data)
        self._store_step()

    def on_train_batch_begin(self, batch, logs=None):
        for pruner in self.pruners:
            fires, sparsity = schedules.evaluate(pruner.schedule, self.step)
            if fires:
                pruner.update(sparsity)

    def on_train_batch_end(self, batch, logs=None):
        if self.layers:
            self.step += 1
            self._store_step()

    def on_epoch_end(self, epoch, logs=None):
        self._tfmot.on_epoch_end(epoch, logs)
        for layer in self.layers:
            layer.apply_masks()

    def _store_step(self):
        keras.backend.batch_set_value([(layer.pruning_step, self.step) for layer in self.layers])

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="tfprune")
class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer weight sparsity and unit sparsity to TensorBoard at each epoch end."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch):
            for (layer, attribute), mask in masks(self.model).items():
                tf.summary.scalar(f"sparsity/{layer}/{attribute}", 1.0 - float(np.mean(mask)))
            for layer in masked_layers(self.model):
                for (attribute, axis), keep in layer.keeps.items():
                    tf.summary.scalar(f"unit_sparsity/{layer.layer.name}/{attribute}_axis{axis}",
                                      1.0 - float(np.mean(keep.numpy())))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        return {"log_dir": self.log_dir}
