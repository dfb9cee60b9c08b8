"""The run context every stage reads: config, data, model directory and strategy."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from lnet_anet_tf.config import Config
from lnet_anet_tf.data.table import CelebATable
from lnet_anet_tf.stages.inputs import StageInputs
from lnet_anet_tf.training import checkpointing

# Written last by every stage that finished, so a rerun can skip the stage.
DONE_FILENAME = checkpointing.DONE_FILENAME


@dataclasses.dataclass
class RunContext:
    """The inputs and settings shared by the stages of one training run."""

    config: Config
    table: CelebATable
    # A directory of class folders or a TFDS dataset name, for pre-training LNet.
    object_source: str
    model_dir: str
    strategy: tf.distribute.Strategy
    tfds_data_dir: Optional[str] = None
    jit_compile: bool = False
    checkpoint_every_steps: Optional[int] = None
    progress: Optional[bool] = None
    on_bad_example: str = "error"
    add_aligned: bool = False
    export_dir: Optional[str] = None
    # "synthetic" for the embedded dataset, "celeba" for a real copy; reports label
    # their numbers with it and compare only real CelebA with published results.
    dataset_kind: str = "synthetic"
    # Image kind ("wild" or "aligned") -> the ShardSource that the stages read those
    # images from (--tfrecord_dir). A kind without an entry is read from image files.
    shards: dict = dataclasses.field(default_factory=dict)

    def inputs(self) -> StageInputs:
        """Return the dataset builders over this run's table and shards."""
        return StageInputs(self.table, self.config.seed, self.on_bad_example, self.shards)

    def stage_dir(self, stage_name: str) -> str:
        return os.path.join(self.model_dir, stage_name)

    def weights_path(self, stage_name: str) -> str:
        """Return the final weights file that `loop.fit` writes for `stage_name`."""
        return os.path.join(self.stage_dir(stage_name), checkpointing.WEIGHTS_FILENAME)

    def require_weights(self, stage_name: str, needed_by: str) -> str:
        path = self.weights_path(stage_name)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Stage {needed_by} needs the weights of stage {stage_name} at {path}, "
                f"which do not exist. Run --stages={stage_name},{needed_by} (or all "
                f"stages) with the same --model_dir."
            )
        return path

    def is_done(self, stage_name: str) -> bool:
        return os.path.exists(os.path.join(self.stage_dir(stage_name), DONE_FILENAME))

    def mark_done(self, stage_name: str, summary: dict) -> None:
        """Write the stage's DONE.json for stages that do not train with `loop.fit`."""
        text = json.dumps({"stage_name": stage_name, **summary}, indent=2, sort_keys=True)
        checkpointing.write_text_atomic(
            os.path.join(self.stage_dir(stage_name), DONE_FILENAME), text + "\n"
        )

    def read_done(self, stage_name: str) -> dict:
        with open(os.path.join(self.stage_dir(stage_name), DONE_FILENAME), encoding="utf-8") as file:
            return json.load(file)


def save_arrays_atomic(path: str, **arrays: np.ndarray) -> None:
    """Write an `.npz` file through a temporary name and a rename."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
