"""Rebuild the trained nets and the cascade from a training run's model directory."""

from __future__ import annotations

import json
import os

import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf import config as config_lib
from lnet_anet_tf.cascade import Cascade
from lnet_anet_tf.models import build_anet, build_lnet
from lnet_anet_tf.training import checkpointing

CONFIG_FILENAME = "config.json"
# The training job writes the data_dir it read and the kind of dataset to this file.
RUN_INFO_FILENAME = "run_info.json"
SVM_FILENAME = "svm.npz"
SVM_STAGE = "fit_svm"


def load_config(model_dir: str) -> config_lib.Config:
    """Read the resolved config that the training job saved in `model_dir`."""
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a training run's model directory. "
            "Pass the --model_dir that `python -m lnet_anet_tf.train` wrote."
        )
    try:
        with open(path, encoding="utf-8") as file:
            return config_lib.from_dict(json.load(file))
    except ValueError as error:  # json.JSONDecodeError is a ValueError too
        raise ValueError(
            f"{path}: {error} Another version of lnet_anet_tf may have written it; "
            "use that version, or train again with a new --model_dir."
        ) from error


def recorded_data_dir(model_dir: str) -> str | None:
    """Return the data_dir that the training job recorded in `<model_dir>/run_info.json`.

    Returns None when the model directory has no such file or the file names no
    data_dir.
    """
    path = os.path.join(model_dir, RUN_INFO_FILENAME)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file).get("data_dir")


def stage_weights(model_dir: str, stage_name: str) -> str:
    path = os.path.join(model_dir, stage_name, checkpointing.WEIGHTS_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: stage {stage_name} has not finished in {model_dir}. "
            f"Run `python -m lnet_anet_tf.train --model_dir={model_dir}` to finish it."
        )
    return path


def load_attribute_models(model_dir: str, config: config_lib.Config) -> dict:
    """Build LNet_o, LNet_s and ANet with attribute heads and load their final weights."""
    num_attributes = attributes.NUM_ATTRIBUTES
    models = {
        "lnet_o": build_lnet(config.lnet_o, num_attributes, "attributes", name="lnet_o"),
        "lnet_s": build_lnet(config.lnet_s, num_attributes, "attributes", name="lnet_s"),
        "anet": build_anet(config.anet, num_attributes, "attributes", name="anet"),
    }
    for name, model in models.items():
        model.load_weights(stage_weights(model_dir, f"finetune_{name}"))
    return models


def load_svm(model_dir: str) -> dict:
    """Return the SVM weights, bias and Platt parameters that `fit_svm` saved."""
    path = os.path.join(model_dir, SVM_STAGE, SVM_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: stage {SVM_STAGE} has not finished in {model_dir}. "
            f"Run `python -m lnet_anet_tf.train --model_dir={model_dir}` to finish it."
        )
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def load_cascade(model_dir: str, config: config_lib.Config | None = None) -> Cascade:
    """Return the trained cascade of the run in `model_dir`."""
    config = config or load_config(model_dir)
    models = load_attribute_models(model_dir, config)
    svm = load_svm(model_dir)
    return Cascade(
        models["lnet_o"],
        models["lnet_s"],
        models["anet"],
        svm_weights=svm["weights"],
        svm_bias=svm["bias"],
        platt_scale=svm["platt_scale"],
        platt_offset=svm["platt_offset"],
        config=config,
    )
