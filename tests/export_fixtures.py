"""Model directories with random weights, in a training run's layout, for the export tests.

Training even the tiny synthetic run takes minutes, so the export, TFLite and
predictor tests build the nets from a shrunken demo config, give them random
weights and random SVM arrays, and save them where `lnet_anet_tf.trained` reads
them: `config.json`, `finetune_<net>/model.weights.h5` and `fit_svm/svm.npz`.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf import config as config_lib
from lnet_anet_tf import trained
from lnet_anet_tf.models import build_anet, build_lnet
from lnet_anet_tf.training import checkpointing

# Narrow layers keep conversion and inference fast; the input sizes, and so the
# response-map and patch geometry, stay those of the demo preset.
TINY_OVERRIDES = (
    "lnet_o.conv_filters=(8, 8, 8, 8, 8)",
    "lnet_o.fc_units=(16, 16)",
    "lnet_s.conv_filters=(8, 8, 8, 8, 8)",
    "lnet_s.fc_units=(16, 16)",
    "anet.conv_filters=(8, 8, 8, 8)",
    "anet.feature_units=16",
)


def tiny_config() -> config_lib.Config:
    config = config_lib.get_config("demo")
    for assignment in TINY_OVERRIDES:
        config = config_lib.override(config, assignment)
    return config


def _randomize_batch_norm(model: keras.Model, rng: np.random.Generator) -> None:
    """Give batch normalization non-trivial statistics, so a twin that skips them fails."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, size),
                    rng.normal(0.0, 0.1, size),
                    rng.normal(0.0, 0.1, size),
                    rng.uniform(0.5, 2.0, size),
                ]
            )


def write_model_dir(model_dir, config: config_lib.Config | None = None, seed: int = 0) -> str:
    """Write a random-weight model directory; return its path."""
    model_dir = str(model_dir)
    config = config or tiny_config()
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    num_attributes = attributes.NUM_ATTRIBUTES
    models = {
        "lnet_o": build_lnet(config.lnet_o, num_attributes, "attributes", name="lnet_o"),
        "lnet_s": build_lnet(config.lnet_s, num_attributes, "attributes", name="lnet_s"),
        "anet": build_anet(config.anet, num_attributes, "attributes", name="anet"),
    }
    for name, model in models.items():
        _randomize_batch_norm(model, rng)
        stage_dir = os.path.join(model_dir, f"finetune_{name}")
        os.makedirs(stage_dir, exist_ok=True)
        model.save_weights(os.path.join(stage_dir, checkpointing.WEIGHTS_FILENAME))

    num_features = int(models["anet"].output["features"].shape[-1])
    svm_dir = os.path.join(model_dir, trained.SVM_STAGE)
    os.makedirs(svm_dir, exist_ok=True)
    np.savez(
        os.path.join(svm_dir, trained.SVM_FILENAME),
        weights=rng.normal(0.0, 0.3, (num_features, num_attributes)).astype(np.float32),
        bias=rng.normal(0.0, 0.1, num_attributes).astype(np.float32),
        platt_scale=rng.uniform(0.5, 2.0, num_attributes).astype(np.float32),
        platt_offset=rng.normal(0.0, 0.5, num_attributes).astype(np.float32),
    )
    config_lib.save_json(config, os.path.join(model_dir, trained.CONFIG_FILENAME))
    return model_dir
