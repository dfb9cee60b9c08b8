"""The training engine: distribution strategies, the stage loop and the SVM trainer."""

from lnet_anet_tf.training.evaluation import evaluate, predict
from lnet_anet_tf.training.loop import NonFiniteLossError, StageResult, fit
from lnet_anet_tf.training.strategy import (
    configure_logical_cpus,
    configure_precision,
    enable_determinism,
    is_chief,
    make_strategy,
)
