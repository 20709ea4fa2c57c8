"""Importance criteria against direct numpy computations on tiny models."""
import numpy as np
import pytest

from tfprune import criteria
from tfprune._keras import keras, tf, tfmot
from tfprune.criteria import ModelTensors, get_criterion, normalize_scores, register_criterion, score_group
from tfprune.graph import build_channel_graph

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _tiny():
    inputs = keras.Input((6, 6, 2), name="input")
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(5, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(x))
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(-2, 2, 4), np.array([-50.0, 0.0, 0.3, 1.0]), rng.normal(size=4),
                    rng.uniform(0.5, 2, 4)])  # channel 0 is (almost) always cut by the ReLU
    model.get_layer("conv").bias.assign(rng.normal(size=4))
    return model


def _data(n=16):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, n)


def _groups(model):
    graph = build_channel_graph(model)
    return {group.producers[0]: group for group in graph.prunable_groups()}


def _direct_gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=False))
    return {v.name: g.numpy() for v, g in zip(model.trainable_variables,
                                               tape.gradient(loss, model.trainable_variables))}


def test_weight_norm_criteria_match_numpy():
    model = _tiny()
    conv = _groups(model)["conv"]
    tensors = ModelTensors(model)
    kernel = model.get_layer("conv").kernel.numpy().reshape(-1, 4)  # (entries, channels)
    np.testing.assert_allclose(criteria.l2(conv, tensors), np.sqrt((kernel ** 2).sum(0)), rtol=1e-6)
    np.testing.assert_allclose(criteria.l1(conv, tensors), np.abs(kernel).sum(0), rtol=1e-6)
    np.testing.assert_allclose(criteria.mean_column_norm(conv, tensors),
                               np.sqrt((kernel ** 2).sum(0) / kernel.shape[0]), rtol=1e-6)
    np.testing.assert_allclose(criteria.bn_gamma(conv, tensors), np.abs(model.get_layer("bn").gamma.numpy()))
    with pytest.raises(ValueError, match="has no BatchNormalization"):
        criteria.bn_gamma(_groups(model)["hidden"], tensors)


def test_l2_covers_depthwise_entries_of_the_group():
    inputs = keras.Input((5, 5, 3))
    a = L.Conv2D(2, 1, name="a")(inputs)
    b = L.Conv2D(3, 1, name="b")(inputs)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(L.Concatenate()([a, b]))
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(x)))
    b_group = _groups(model)["b"]
    depthwise = model.get_layer("dw").depthwise_kernel.numpy()[:, :, 2:, :]  # channels of b
    squares = (model.get_layer("b").kernel.numpy().reshape(-1, 3) ** 2).sum(0) + \
        (np.moveaxis(depthwise, 2, 0).reshape(3, -1) ** 2).sum(1)
    np.testing.assert_allclose(criteria.l2(b_group, ModelTensors(model)), np.sqrt(squares), rtol=1e-6)


def test_taylor_matches_gradient_times_weight():
    model = _tiny()
    x, y = _data()
    groups = _groups(model)
    tensors = ModelTensors(model, x, y, loss=LOSS, batch_size=5)  # batch means must average to the full mean
    grads = _direct_gradients(model, x, y)

    def term(layer, weight, axis):
        variable = getattr(model.get_layer(layer), weight)
        product = variable.numpy() * grads[variable.name]
        return np.moveaxis(product, axis, -1).reshape(-1, product.shape[axis]).sum(0)

    conv = term("conv", "kernel", 3) + term("conv", "bias", 0) + term("bn", "gamma", 0) + term("bn", "beta", 0)
    np.testing.assert_allclose(criteria.taylor(groups["conv"], tensors), conv ** 2, rtol=1e-3, atol=1e-10)
    hidden = term("hidden", "kernel", 1) + term("hidden", "bias", 0)
    np.testing.assert_allclose(criteria.taylor(groups["hidden"], tensors), hidden ** 2, rtol=1e-3, atol=1e-10)
    with pytest.raises(ValueError, match="needs gradients"):
        criteria.taylor(groups["conv"], ModelTensors(model))
    with pytest.raises(ValueError, match="need labels and a loss"):
        criteria.taylor(groups["conv"], ModelTensors(model, x))


def test_apoz_matches_zero_fraction_of_relu_outputs():
    model = _tiny()
    x, _ = _data()
    groups = _groups(model)
    tensors = ModelTensors(model, x)
    relu_out = keras.Model(model.inputs, model.get_layer("relu").output)(x).numpy()
    expected = 1 - (relu_out == 0).reshape(-1, 4).mean(0)
    scores = np.asarray(criteria.apoz(groups["conv"], tensors))
    np.testing.assert_allclose(scores, expected)
    assert scores[0] < scores[1:].min()  # the channel the ReLU always cuts ranks last
    hidden_out = keras.Model(model.inputs, model.get_layer("hidden").output)(x).numpy()
    np.testing.assert_allclose(criteria.apoz(groups["hidden"], tensors), 1 - (hidden_out == 0).mean(0))

    inputs = keras.Input((3,))
    linear = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(4, name="plain")(inputs)))
    with pytest.raises(ValueError, match="has no ReLU output"):
        criteria.apoz(_groups(linear)["plain"], ModelTensors(linear, np.ones((2, 3))))


def test_activations_reach_wrapped_and_nested_layers():
    block = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="relu", name="inner")], name="block")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="out")(block(L.Dense(4, name="first")(inputs))))
    x = np.random.default_rng(2).normal(size=(6, 4)).astype("float32")
    expected = block(model.get_layer("first")(x)).numpy()
    np.testing.assert_allclose(ModelTensors(model, x, batch_size=4).activations("inner"), expected, rtol=1e-6)
    assert criteria.apoz(_groups(model)["inner"], ModelTensors(model, x)).shape == (3,)

    pruned = tfmot.sparsity.keras.prune_low_magnitude(_tiny())
    x, _ = _data(4)
    wrapper = pruned.get_layer("prune_low_magnitude_hidden")
    np.testing.assert_allclose(ModelTensors(pruned, x).activations("hidden"),
                               keras.Model(pruned.inputs, wrapper.output)(x).numpy(), rtol=1e-6)


def test_random_is_seeded_per_group():
    model = _tiny()
    groups = _groups(model)
    tensors = ModelTensors(model)
    first = criteria.random_criterion(3)(groups["conv"], tensors)
    assert first.shape == (4,) and np.all((first >= 0) & (first < 1))
    np.testing.assert_array_equal(criteria.random_criterion(3)(groups["conv"], tensors), first)
    assert not np.array_equal(criteria.random_criterion(4)(groups["conv"], tensors), first)
    assert get_criterion("random")(groups["conv"], tensors).shape == (4,)


def test_registry_needs_and_errors():
    assert {"l1", "l2", "mean_column_norm", "bn_gamma", "taylor", "apoz", "random"} <= set(criteria.CRITERIA)
    assert get_criterion("l2") is criteria.l2 and criteria.l2.tfprune_name == "l2"
    assert criteria.l2.needs == set() and criteria.taylor.needs == {"gradients"}
    assert criteria.apoz.needs == {"activations"} and criteria.random_criterion(1).needs == set()
    with pytest.raises(ValueError, match=r"Unknown criterion 'l3'.*'l2'"):
        get_criterion("l3")
    with pytest.raises(TypeError, match="needs"):
        get_criterion(lambda group, tensors: None)

    @register_criterion("test_channel_index", needs={"activations"})
    def channel_index(group, tensors):
        return np.arange(group.size, dtype=float)

    try:
        assert get_criterion("test_channel_index") is channel_index and channel_index.needs == {"activations"}
        with pytest.raises(ValueError, match="already registered"):
            register_criterion("test_channel_index")(channel_index)
        group = _groups(_tiny())["conv"]
        np.testing.assert_array_equal(score_group(channel_index, group, None), np.arange(4))
        with pytest.raises(ValueError, match=r"returned shape \(3,\).*expected \(4,\)"):
            score_group(lambda g, t: np.zeros(3), group, None)
    finally:
        del criteria.CRITERIA["test_channel_index"]
    with pytest.raises(ValueError, match="needs must be a subset"):
        register_criterion("test_bad_needs", needs={"labels"})(lambda g, t: None)


def test_normalize_scores():
    np.testing.assert_allclose(normalize_scores([1.0, 2.0, 3.0]), [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(normalize_scores(np.zeros(3)), np.zeros(3))
    signed = normalize_scores([-1.0, 0.0, 3.0])
    assert np.argsort(signed).tolist() == [0, 1, 2] and np.isclose(np.abs(signed).mean(), 1.0)
