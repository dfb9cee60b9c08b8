"""The training job's stages, in the order `python -m lnet_anet_tf.train` runs them."""

import numpy as np

STAGE_NAMES = (
    "pretrain_lnet",
    "pretrain_anet",
    "finetune_lnet_o",
    "finetune_lnet_s",
    "finetune_anet",
    "fit_svm",
    "evaluate",
    "export",
)


def stage_seed(seed: int, name: str) -> int:
    """Return the random seed that stage `name` starts from, derived from the run's seed."""
    index = STAGE_NAMES.index(name)
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
