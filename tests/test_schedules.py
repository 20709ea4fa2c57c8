"""tfprune's Python evaluation of TFMOT schedules must agree with TFMOT's own graph evaluation."""
import numpy as np
import pytest

import tfprune
from tfprune import schedules
from tfprune._keras import keras


@pytest.mark.parametrize("schedule", [
    tfprune.PolynomialDecay(0.1, 0.85, begin_step=5, end_step=95, power=3, frequency=7),
    tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=40, power=1, frequency=1),
    tfprune.ConstantSparsity(0.6, begin_step=3, end_step=50, frequency=4),
    tfprune.ConstantSparsity(0.3, begin_step=0, end_step=-1, frequency=10),
])
def test_evaluate_matches_tfmot(schedule):
    for step in range(0, 120):
        fires, sparsity = schedules.evaluate(schedule, step)
        tf_fires, tf_sparsity = schedule(step)
        assert fires == bool(tf_fires), step
        assert sparsity == pytest.approx(float(tf_sparsity), abs=1e-6), step


def test_with_target_and_last_firing_step():
    schedule = tfprune.PolynomialDecay(0.2, 0.8, begin_step=0, end_step=100, frequency=30)
    assert schedules.last_firing_step(schedule) == 90
    lowered = schedules.with_target(schedule, 0.1)
    assert schedules.final_sparsity(lowered) == pytest.approx(0.1)
    assert schedules.evaluate(lowered, 0)[1] == pytest.approx(0.1)  # initial never above the target
    assert schedules.deserialize(schedules.serialize(schedule)).get_config() == schedule.get_config()


def test_warning_only_when_target_is_unreachable():
    with pytest.warns(UserWarning, match="frequency"):
        schedules.warn_if_never_reaches_target(tfprune.PolynomialDecay(0.0, 0.8, 0, 150, frequency=100))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schedules.warn_if_never_reaches_target(tfprune.PolynomialDecay(0.0, 0.8, 0, 200, frequency=100))
    np.testing.assert_equal(schedules.last_firing_step(tfprune.ConstantSparsity(0.5, 0)), None)


def _small_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden))


@pytest.mark.parametrize("prune", [
    lambda model, schedule: tfprune.prune_weights(model, schedule, scope="global"),
    lambda model, schedule: tfprune.prune_weights(model, schedule, scope="layer"),
    lambda model, schedule: tfprune.prune_units(model, schedule),
])
def test_falling_sparsity_warns_at_the_users_call(prune):
    with pytest.warns(UserWarning, match=r"lowers sparsity during training.*swap the two, initial_sparsity=0.2, "
                                         r"final_sparsity=0.5") as caught:
        prune(_small_model(), tfprune.PolynomialDecay(0.5, 0.2, begin_step=0, end_step=100, frequency=10))
    assert [w.filename for w in caught if "lowers sparsity" in str(w.message)] == [__file__]
