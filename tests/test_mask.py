"""The mask model: MaskedLayer semantics, the masks() view over both wrapper kinds, strip, with_masks."""
import numpy as np
import pytest

import tfprune
from tfprune import mask
from tfprune._keras import keras, tf


def _model():
    return tfprune.models.mlp(hidden=(16, 8), seed=0, flavor="tf_keras")


def test_with_masks_zeroes_weights_and_gradients(mnist_small):
    model = _model()
    kernel = model.get_layer("dense_0").kernel.numpy()
    keep = (np.abs(kernel) > np.median(np.abs(kernel))).astype(np.float32)
    masked = mask.with_masks(model, {"dense_0": keep})
    assert np.all(model.get_layer("dense_0").kernel.numpy() == kernel)  # caller untouched
    masked.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x, y), _ = mnist_small
    masked.fit(x[:500], y[:500], epochs=1, verbose=0)
    effective = masked.get_layer("masked_dense_0").masked_weights()["kernel"]
    assert np.all(effective[keep == 0] == 0) and np.all(effective[keep == 1] != 0)


def test_masks_view_covers_tfmot_and_tfprune_wrappers():
    tfmot_model = tfprune.prune_weights(_model(), tfprune.ConstantSparsity(0.5, 0))
    assert ("dense_0", "kernel") in tfprune.masks(tfmot_model)
    own = tfprune.prune_weights(_model(), tfprune.ConstantSparsity(0.5, 0), scope="global")
    assert set(tfprune.masks(own)) == {("dense_0", "kernel"), ("dense_1", "kernel"), ("logits", "kernel")}


def test_channel_keeps_and_element_masks_multiply():
    layer = mask.MaskedLayer(keras.layers.Dense(3, use_bias=False), element_masked=["kernel"],
                             channel_masked={"kernel": [1]})
    layer.build((None, 2))
    layer.masks["kernel"].assign([[1, 0, 1], [1, 1, 1]])
    layer.keep("kernel", 1).assign([1, 1, 0])
    np.testing.assert_array_equal(layer.mask_values()["kernel"], [[1, 0, 0], [1, 1, 0]])
    config = layer.get_config()
    clone = mask.MaskedLayer.from_config(config)
    assert clone.channel_masked == {"kernel": [1]} and clone.element_masked == ("kernel",)


def _channels_first_conv_runs():
    """Whether TensorFlow runs a channels-first Conv2D here: on a CPU only through oneDNN, which it turns on by
    default only on CPUs with AVX-512 features (an AVX2 machine failed the test below: 'only supports NHWC')."""
    try:
        tf.nn.conv2d(tf.zeros([1, 1, 3, 3]), tf.zeros([1, 1, 1, 1]), 1, "VALID", data_format="NCHW")
        return True
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False


@pytest.mark.parametrize("inner, input_shape", [
    (lambda: keras.layers.Dense(6, activation="sigmoid"), (5, 4)),
    (lambda: keras.layers.Conv2D(6, 3, activation="tanh"), (2, 5, 5, 4)),
    pytest.param(lambda: keras.layers.Conv2D(6, 3, data_format="channels_first"), (2, 4, 5, 5),
                 marks=pytest.mark.skipif(not _channels_first_conv_runs(), reason="TensorFlow cannot run a "
                                          "channels-first Conv2D on this CPU (oneDNN off; TF_ENABLE_ONEDNN_OPTS=1 runs it)")),
    (lambda: keras.layers.Conv2DTranspose(6, 3, activation="relu"), (2, 5, 5, 4)),
    (lambda: keras.layers.Dense(6, activation="relu", activity_regularizer="l2"), (5, 4)),
])
def test_channel_keeps_on_activations_match_keeps_on_the_kernel(inner, input_shape):
    """Dense/channels-last convs mask activations, other layers the kernel: same outputs, same zero gradients."""
    layer = inner()
    rank = len(layer.compute_output_shape(input_shape))
    in_axis, out_axis = (0, 1) if rank == 2 else (2, 3)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        in_axis, out_axis = out_axis, in_axis  # its kernel is (h, w, out, in)
    masked = mask.MaskedLayer(layer, element_masked=["kernel"],
                              channel_masked={"kernel": [in_axis, out_axis], "bias": [0]})
    x = np.random.default_rng(0).normal(size=input_shape).astype(np.float32)
    masked(x)
    rng = np.random.default_rng(1)
    masked.masks["kernel"].assign((rng.random(layer.kernel.shape) > 0.3).astype(np.float32))
    keep_in = np.array([1, 0, 1, 1], np.float32)
    keep_out = np.array([1, 1, 0, 1, 0, 1], np.float32)
    masked.keep("kernel", in_axis).assign(keep_in)
    masked.keep("kernel", out_axis).assign(keep_out)
    masked.keep("bias", 0).assign(keep_out)
    layer.bias.assign(rng.normal(size=6).astype(np.float32))
    with tf.GradientTape() as tape:
        outputs = masked(x)
        loss = tf.reduce_sum(outputs ** 2)
    gradient = tape.gradient(loss, layer.kernel).numpy()
    reference = inner()
    reference.build(input_shape)
    reference.set_weights([value for value in masked.masked_weights().values()])
    np.testing.assert_allclose(outputs.numpy(), reference(x).numpy(), atol=1e-6)
    np.testing.assert_allclose([float(loss) for loss in masked.losses], [float(loss) for loss in reference.losses],
                               rtol=1e-6)
    assert np.all(gradient[masked.mask_values()["kernel"] == 0] == 0)


def test_bad_mask_raises_before_building():
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        mask.with_masks(_model(), {"nope": np.ones((784, 16))})
    with pytest.raises(ValueError, match="shape"):
        mask.with_masks(_model(), {"dense_0": np.ones((3, 3))})


def test_strip_of_nested_model_keeps_outputs():
    inner = _model()
    inputs = keras.Input((784,))
    outer = keras.Model(inputs, keras.layers.Softmax()(inner(inputs)))
    pruned = tfprune.prune_weights(outer, tfprune.ConstantSparsity(0.5, 0), scope="global")
    callback = tfprune.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    stripped = tfprune.strip(pruned)
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)  # random inputs, only to compare outputs
    np.testing.assert_allclose(stripped(x), pruned(x), atol=1e-6)
    assert not mask.has_wrappers(stripped)
