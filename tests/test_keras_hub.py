"""keras_hub backbones built from constructor arguments (no preset download): the feed-forward units of BERT's
and GPT-2's transformer layers prune and shrink exactly; a ViT names the layer that blocks it."""
import keras_hub
import numpy as np
import pytest

import tfprune
from tfprune.registry import UnsupportedLayerError

SIZES = dict(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
             max_sequence_length=16)


@pytest.mark.parametrize("backbone", [keras_hub.models.BertBackbone, keras_hub.models.GPT2Backbone],
                         ids=["bert", "gpt2"])
def test_feed_forward_units_prune_and_shrink(backbone):
    model = backbone(**SIZES)
    rng = np.random.default_rng(0)
    given = {"token_ids": rng.integers(0, 100, (2, 16)), "padding_mask": np.ones((2, 16), "int32"),
             "segment_ids": np.zeros((2, 16), "int32")}
    inputs = {name: given[name] for name in model.input}
    groups = tfprune.graph.build_channel_graph(model).prunable_groups()
    assert sorted(g.producers[0] for g in groups) == ["transformer_layer_0", "transformer_layer_1"]
    pruned = tfprune.oneshot(model, method="unit", sparsity=0.5)
    shrunk = tfprune.shrink(pruned)
    assert [shrunk.get_layer(f"transformer_layer_{i}").intermediate_dim for i in (0, 1)] == [32, 32]
    expected, actual = pruned(inputs), shrunk(inputs)
    for key in (expected if isinstance(expected, dict) else [None]):
        want, got = (np.asarray(expected[key]), np.asarray(actual[key])) if key else (np.asarray(expected),
                                                                                       np.asarray(actual))
        assert np.max(np.abs(want - got)) <= 1e-4 * max(1.0, np.max(np.abs(want)))
    assert shrunk.count_params() < model.count_params()


def test_vit_names_the_layer_that_blocks_it():
    model = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
                                         hidden_dim=32, mlp_dim=64)
    with pytest.raises(UnsupportedLayerError, match="'vit_patching_and_embedding' \\(ViTPatchingAndEmbedding\\)"):
        tfprune.prune_units(model, tfprune.ConstantSparsity(0.5, 0))
