"""shrink: a unit-pruned (or group-lasso zeroed) model and its shrunk copy compute the same outputs, while
channels, params and MACs really drop; the rule keeps channels that are not provably dead; files load as plain
Keras and convert to LiteRT."""
import warnings

import numpy as np
import pytest

from tfprune import ConstantSparsity, UpdatePruningStep, prune_units, strip
from tfprune._keras import flavor_of, keras, keras3, load_model, output_shape
from tfprune.bench import predict
from tfprune.export import save
from tfprune.graph import UnsupportedLayerError, build_channel_graph
from tfprune.metrics import count_macs, count_params
from tfprune.models import lenet5, mlp, resnet20, vgg
from tfprune.shrink import shrink, shrink_report

L = keras.layers


def _random_statistics(model, seed=0):
    """BatchNorm moving statistics and affine terms away from their init, so inference mode is a real test."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=size))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=size))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, size=size))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(scale=0.1, size=size))
    return model


def _unit_pruned(model, sparsity=0.4, criterion="l2"):
    """Masks written by one pruning step of the callback, without training."""
    pruned = prune_units(_random_statistics(model), ConstantSparsity(sparsity, 0, frequency=1), criterion=criterion)
    callback = UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    return pruned


def _inputs(model, n=4, seed=1):
    return np.random.default_rng(seed).normal(size=(n,) + tuple(model.input_shape[1:])).astype("float32")


def _outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def _assert_same_outputs(reference, shrunk, x, atol=1e-5):
    for expected, actual in zip(_outputs(reference, x), _outputs(shrunk, x)):
        assert np.max(np.abs(expected - actual)) <= atol


def _widths(model):
    """{layer name: output channels} of every layer with a kernel."""
    return {layer.name: output_shape(layer)[-1] for layer in model.layers
            if any(hasattr(layer, w) for w in ("kernel", "depthwise_kernel", "pointwise_kernel"))}


def _assert_shrinks(model, sparsity=0.4, criterion="l2"):
    graph = build_channel_graph(model)
    pruned = _unit_pruned(model, sparsity, criterion)
    shrunk = shrink(pruned)
    _assert_same_outputs(pruned, shrunk, _inputs(model))
    assert count_params(shrunk) < count_params(model) and count_macs(shrunk) < count_macs(model)
    before, after = _widths(model), _widths(shrunk)
    for group in graph.prunable_groups():
        if group.size >= 3:
            producer = group.producers[0]
            assert after[producer] < before[producer], f"group of '{producer}' did not shrink"
    assert all(type(layer).__module__.split(".")[0] in ("keras", "tf_keras") for layer in shrunk.layers)  # plain layers
    assert flavor_of(shrunk) is flavor_of(model)
    return pruned, shrunk


@pytest.mark.parametrize("build", [lambda: mlp(hidden=(64, 32)), lenet5, lambda: vgg(11, 0.125),
                                   lambda: resnet20(widths=(8, 16, 32))], ids=["mlp", "lenet5", "vgg11", "resnet20"])
def test_reference_models_shrink_to_the_same_outputs(build):
    _assert_shrinks(build())


def _concat_depthwise_model():
    inputs = keras.Input((8, 8, 3), name="input")
    a = L.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    b = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv_b")(inputs)
    b = L.ReLU(name="relu_b")(L.BatchNormalization(name="bn_b")(b))
    c = L.Concatenate(name="concat")([a, b])
    d1 = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw1")(c)
    d2 = L.BatchNormalization(name="bn_dw2")(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(c))
    s = L.SeparableConv2D(10, 3, depth_multiplier=2, padding="same", activation="relu", name="sep")(
        L.Concatenate(name="concat_dw")([d1, d2]))
    s = L.MaxPooling2D(2, name="pool")(s)
    return keras.Model(inputs, L.Dense(5, name="logits")(L.Flatten(name="flatten")(s)))


def test_concatenate_depthwise_separable_flatten_shrink():
    _, shrunk = _assert_shrinks(_concat_depthwise_model(), criterion="random")
    widths = _widths(shrunk)
    assert shrunk.get_layer("dw2").depth_multiplier == 2
    assert widths["dw1"] == widths["conv_a"] + widths["conv_b"] and widths["dw2"] == 2 * widths["dw1"]


@pytest.mark.parametrize("flavor", [keras, keras3], ids=["tf_keras", "keras3"])
@pytest.mark.parametrize("name, options", [("MobileNetV2", {"alpha": 0.35}), ("ResNet50", {})],
                         ids=["mobilenet_v2", "resnet50"])
def test_keras_applications_shrink(flavor, name, options):
    build = getattr(flavor.applications, name)
    _assert_shrinks(build(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None, **options))


def test_round_to_keeps_multiples_and_the_same_outputs():
    model = resnet20(widths=(8, 16, 32))
    pruned = _unit_pruned(model, sparsity=0.6)
    shrunk = shrink(pruned, round_to=4)
    _assert_same_outputs(pruned, shrunk, _inputs(model))
    before, after = _widths(model), _widths(shrunk)
    assert all(after[name] % 4 == 0 or after[name] == before[name] for name in after)
    assert count_params(shrunk) < count_params(model)


def test_group_lasso_zero_filters_shrink_and_the_rule_keeps_visible_channels():
    """Zero filters with zero BN gamma/beta go; a zero filter whose BN beta is not zero still shows up."""
    model = _random_statistics(vgg(11, 0.125))
    conv, bn = model.get_layer("conv_2"), model.get_layer("bn_2")
    kernel, gamma, beta = conv.kernel.numpy(), bn.gamma.numpy(), bn.beta.numpy()
    kernel[..., [0, 3, 5, 7]] = 0.0
    gamma[[0, 3, 5]] = beta[[0, 3, 5]] = 0.0
    beta[7] = 0.5  # BN(0) = beta - gamma * mean / sqrt(var + eps) != 0
    kernel[..., 9] = 1e-9  # removed only with a tolerance
    gamma[9] = beta[9] = 0.0
    conv.kernel.assign(kernel)
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    x = _inputs(model)
    exact = shrink(model)
    _assert_same_outputs(model, exact, x)
    assert exact.get_layer("conv_2").filters == 32 - 3
    assert exact.get_layer("conv_3").kernel.shape[2] == 32 - 3
    loose = shrink(model, tolerance=1e-6)
    assert loose.get_layer("conv_2").filters == 32 - 4
    _assert_same_outputs(model, loose, x)
    assert shrink(model, exclude=["conv_2"]).get_layer("conv_2").filters == 32


def test_non_zero_activation_at_zero_needs_zero_consumer_rows():
    inputs = keras.Input((6,))
    hidden = L.Dense(16, activation="sigmoid", name="hidden")(inputs)
    model = keras.Model(inputs, L.Dense(3, name="logits")(hidden))
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, :4], bias[:4] = 0.0, 0.0
    model.get_layer("hidden").set_weights([kernel, bias])
    assert shrink(model).get_layer("hidden").units == 16  # sigmoid(0) = 0.5 still reaches the logits
    pruned = _unit_pruned(model, sparsity=0.5)
    shrunk = shrink(pruned)
    assert shrunk.get_layer("hidden").units == 8  # unit pruning zeroed the consumer rows as well
    _assert_same_outputs(pruned, shrunk, _inputs(model))


def test_keeps_at_least_one_channel():
    model = mlp(hidden=(8,))
    layer = model.get_layer("dense_0")
    layer.kernel.assign(np.zeros(layer.kernel.shape))
    shrunk = shrink(model)
    assert shrunk.get_layer("dense_0").units == 1
    _assert_same_outputs(model, shrunk, _inputs(model))


def test_report_counts_channels_params_and_macs():
    pruned = _unit_pruned(lenet5())
    shrunk = shrink(pruned)
    rows, text = shrink_report(pruned, shrunk)
    by_name = {row["layer"]: row for row in rows}
    assert by_name["conv_0"]["units_before"] == 20 and by_name["conv_0"]["units_after"] == 12
    assert by_name["total"]["params_before"] == count_params(pruned)
    assert by_name["total"]["params_after"] == count_params(shrunk)
    assert by_name["total"]["macs_after"] == count_macs(shrunk) < by_name["total"]["macs_before"]
    assert "conv_0" in text and "total" in text


def test_shrunk_model_saves_loads_plain_and_matches_litert(tmp_path):
    pruned = _unit_pruned(vgg(11, 0.125))
    shrunk = shrink(pruned)
    report = save(shrunk, tmp_path, formats=("keras", "tflite"), name="shrunk")
    loaded = load_model(report["artifacts"]["keras"]["path"], compile=False)
    assert all(type(layer).__module__.split(".")[0] in ("keras", "tf_keras") for layer in loaded.layers)
    x = _inputs(shrunk)
    _assert_same_outputs(shrunk, loaded, x, atol=0.0)
    litert = predict(report["artifacts"]["tflite"]["path"], x, backend="litert")
    np.testing.assert_allclose(litert, _outputs(shrunk, x)[0], atol=1e-4)


def test_unsupported_layers_raise_and_nested_models_shrink():
    inputs = keras.Input((6,))
    x = L.Dense(8, name="dense")(inputs)
    x = L.Lambda(lambda t: t * 2, name="doubler")(x)
    with pytest.raises(UnsupportedLayerError, match="doubler"):
        shrink(keras.Model(inputs, L.Dense(2, name="logits")(x)))

    block = keras.Sequential([keras.Input((6,)), L.Dense(5, name="inner")], name="block")
    inputs = keras.Input((7,))
    outer = L.Dense(6, name="outer")
    model = keras.Model(inputs, L.Dense(2, name="out")(block(outer(inputs))))
    outer.kernel.assign(outer.kernel.numpy() * (np.arange(6) < 3))
    inner = block.get_layer("inner")
    inner.kernel.assign(inner.kernel.numpy() * (np.arange(5) < 4))
    inner.bias.assign(inner.bias.numpy() * (np.arange(5) < 4))
    shrunk = shrink(model)  # the nested model is rebuilt narrower on its narrowed input
    assert shrunk.get_layer("block").get_layer("inner").kernel.shape == (3, 4)
    _assert_same_outputs(model, shrunk, _inputs(model))
    assert shrink(model, exclude=["block"]).get_layer("block").get_layer("inner").kernel.shape == (6, 5)
    with pytest.raises(ValueError, match="round_to"):
        shrink(model, round_to=0)


def test_layer_normalization_masked_by_tfprune_shrinks_exactly_else_warns():
    """tfprune's mask normalizes over the kept channels, so the shrunk model matches; zeros made any other way
    change LayerNormalization's statistics when removed, and shrink says so."""
    inputs = keras.Input((6,))
    x = L.LayerNormalization(name="norm")(L.Dense(8, name="dense")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    model.get_layer("norm").beta.assign(np.linspace(-1.0, 1.0, 8))
    pruned = _unit_pruned(model, sparsity=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shrunk = shrink(pruned)
    assert shrunk.get_layer("norm").gamma.shape == (4,)
    _assert_same_outputs(pruned, shrunk, _inputs(model))
    with pytest.warns(UserWarning, match="LayerNormalization"):
        shrink(strip(pruned))


