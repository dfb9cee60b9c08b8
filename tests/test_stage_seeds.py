"""Tests of the per-stage seeds: a stage's model must not depend on earlier random draws."""

import keras
import numpy as np

from lnet_anet_tf.stages import STAGE_NAMES
from lnet_anet_tf.stages import stage_seed
from lnet_anet_tf.stages.fitting import build_seeded


def small_net():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    outputs = keras.layers.Dropout(0.5, name="dropout")(hidden)
    return keras.Model(inputs, outputs)


def initial_state(model):
    dropout = model.get_layer("dropout")
    return model.get_layer("dense").get_weights()[0], dropout.seed_generator.state.numpy()


def test_build_seeded_ignores_earlier_draws():
    # A stage that builds another net before its own (boxes computed) must give
    # its model the same start as one that skips that net (boxes from the cache).
    keras.utils.set_random_seed(1)
    small_net()
    after_other_net = initial_state(build_seeded(0, "finetune_anet", small_net))

    keras.utils.set_random_seed(1)
    directly = initial_state(build_seeded(0, "finetune_anet", small_net))

    np.testing.assert_array_equal(after_other_net[0], directly[0])
    np.testing.assert_array_equal(after_other_net[1], directly[1])


def test_build_seeded_varies_with_seeds():
    anet = initial_state(build_seeded(0, "finetune_anet", small_net))[0]
    lnet_s = initial_state(build_seeded(0, "finetune_lnet_s", small_net))[0]
    other_seed = initial_state(build_seeded(1, "finetune_anet", small_net))[0]

    assert not np.array_equal(anet, lnet_s)
    assert not np.array_equal(anet, other_seed)


def test_stage_seeds_are_distinct():
    seeds = [stage_seed(0, name) for name in STAGE_NAMES]

    assert len(set(seeds)) == len(STAGE_NAMES)
