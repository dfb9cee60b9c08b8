"""Checkpoints of one training stage, atomic output files and the completion marker.

A stage directory holds:

    checkpoints/    tf.train.CheckpointManager files (`ckpt-<step>.*`, `checkpoint`)
    logs/           TensorBoard event files
    log.csv         one row per finished epoch
    model.weights.h5  the final weights
    DONE.json       written last: the stage finished with these final metrics

A checkpoint becomes visible only once complete. TensorFlow (checked in 2.21,
`tf.train.CheckpointManager.save`) writes `ckpt-<step>.index` and its data files
first, and then atomically replaces the `checkpoint` state file that names the
latest one. A process killed during a save therefore leaves the previous
checkpoint as the latest. The loop's own counters and epoch history are stored
inside the checkpoint (`LoopState`), so they always match the weights.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import uuid

import keras
import tensorflow as tf
from absl import logging

from lnet_anet_tf.training import strategy as strategy_lib

DONE_FILENAME = "DONE.json"
WEIGHTS_FILENAME = "model.weights.h5"


class LoopState(tf.train.experimental.PythonState):
    """Training-loop counters and history, saved as JSON inside each checkpoint.

    `step` counts finished steps over the whole stage and `epoch` finished epochs.
    `epoch_sums` contains the running sums of the step metrics of the epoch in
    progress, so a run resumed mid-epoch reports the same epoch means as an
    uninterrupted one. `history` contains one dict of epoch metrics per finished epoch.
    """

    _FIELDS = (
        "steps_per_epoch", "global_batch_size", "epochs", "step", "epoch", "epoch_sums", "history",
    )

    def __init__(self, steps_per_epoch: int, global_batch_size: int, epochs: int):
        self.steps_per_epoch = steps_per_epoch
        self.global_batch_size = global_batch_size
        self.epochs = epochs
        self.step = 0
        self.epoch = 0
        self.epoch_sums: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    def serialize(self) -> str:
        # Python's float repr round-trips exactly, so the sums resume bitwise equal.
        return json.dumps({name: getattr(self, name) for name in self._FIELDS})

    def deserialize(self, string_value) -> None:
        if isinstance(string_value, bytes):
            string_value = string_value.decode("utf-8")
        values = json.loads(string_value)
        for name in self._FIELDS:
            setattr(self, name, values[name])

    @property
    def step_in_epoch(self) -> int:
        return self.step - self.epoch * self.steps_per_epoch


class StageCheckpoint:
    """The checkpoint of one stage: model, optimizer and `LoopState`.

    Every worker of a multi-worker run saves, because saving a distributed variable
    may need collective ops, but only the chief writes to `checkpoints/`. The other
    workers write to a scratch directory that they delete after each save, and all
    workers restore from the chief's directory, so `model_dir` must be a file
    system that all workers share.
    """

    def __init__(
        self,
        stage_dir: str,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        state: LoopState,
        strategy: tf.distribute.Strategy,
        max_to_keep: int = 3,
    ):
        self.directory = os.path.join(stage_dir, "checkpoints")
        self.state = state
        self._is_chief = strategy_lib.is_chief(strategy)

        # Keras random-number layers (Dropout and others) keep their seed state in a
        # variable that `tf.train.Checkpoint(model=...)` does not track. Tracking
        # every model variable explicitly saves it too, so dropout masks after a
        # resume equal those of an uninterrupted run.
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            model_variables=list(model.variables),
            loop_state=state,
        )
        if self._is_chief:
            write_directory = self.directory
        else:
            write_directory = os.path.join(
                self.directory, f".scratch-{strategy_lib.worker_name(strategy)}"
            )
        self._write_directory = write_directory
        self._manager = tf.train.CheckpointManager(
            self.checkpoint, write_directory, max_to_keep=max_to_keep
        )

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest complete checkpoint in the chief's directory."""
        return tf.train.latest_checkpoint(self.directory)

    def restore_latest(self) -> str | None:
        """Restore the newest complete checkpoint; return its path, or None if none."""
        if self._is_chief:
            self._delete_orphans()
        path = self.latest
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            raise RuntimeError(
                f"Cannot restore checkpoint {path}: {error}. If the model or "
                "optimizer changed since it was written, delete "
                f"{self.directory} (or use another model_dir) to start the stage over."
            ) from error
        return path

    def save(self) -> str:
        """Save a checkpoint numbered by the stage step; return its path prefix.

        Raises OSError naming the checkpoint and the last complete one when the
        write fails, for example on a full disk.
        """
        try:
            path = self._manager.save(checkpoint_number=self.state.step)
        except (tf.errors.OpError, OSError) as error:
            # TensorFlow reports a full disk as an OutOfRangeError of its SaveV2 op,
            # whose message starts with the function name and ends with the op name.
            reason = error.message if isinstance(error, tf.errors.OpError) else str(error)
            reason = re.sub(r"\s*\[Op:\w+\]$", "", re.sub(r"^\{\{[^}]*\}\}\s*", "", reason))
            raise OSError(
                f"Saving checkpoint ckpt-{self.state.step} into {self._write_directory} "
                f"failed: {reason}. The last complete checkpoint, "
                f"{self.latest or 'none'}, is unchanged: free disk space and rerun the "
                "same command to resume from it."
            ) from error
        if not self._is_chief:
            shutil.rmtree(self._write_directory, ignore_errors=True)
        return path

    def _delete_orphans(self) -> None:
        # A save killed before the state file was updated leaves files of a
        # checkpoint that the state file does not name. Nothing ever restores them,
        # so they only take disk space.
        checkpoint_state = tf.train.get_checkpoint_state(self.directory)
        kept = set()
        if checkpoint_state is not None:
            kept = {os.path.basename(path) for path in checkpoint_state.all_model_checkpoint_paths}
        pattern = re.compile(r"^(ckpt-\d+)(\.index|\.data-\d+-of-\d+|_temp.*)$")
        for path in glob.glob(os.path.join(self.directory, "ckpt-*")):
            match = pattern.match(os.path.basename(path))
            if match and match.group(1) not in kept:
                logging.warning("Deleting %s of an incomplete checkpoint save.", path)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)


@dataclasses.dataclass(frozen=True)
class DoneMarker:
    """Contents of `DONE.json`: how a finished stage ended."""

    stage_name: str
    metrics: dict
    steps: int
    epochs: int
    steps_per_epoch: int
    global_batch_size: int
    weights_path: str  # relative to the stage directory
    wall_time_s: float
    examples_per_second: float


def read_done_marker(stage_dir: str) -> DoneMarker | None:
    """Read `DONE.json` from `stage_dir`; None when the stage has not finished."""
    path = os.path.join(stage_dir, DONE_FILENAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return DoneMarker(**json.load(file))
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(
            f"Invalid completion marker {path}: {error}. Delete it to train the "
            "stage again from its last checkpoint."
        ) from None


def write_done_marker(stage_dir: str, marker: DoneMarker) -> None:
    write_text_atomic(
        os.path.join(stage_dir, DONE_FILENAME),
        json.dumps(dataclasses.asdict(marker), indent=2, sort_keys=True) + "\n",
    )


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with open(temporary, "x", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_weights_atomic(model: keras.Model, path: str) -> None:
    """Save `model`'s weights to `path` (a `.weights.h5` file) through a rename."""
    directory = os.path.dirname(path) or "."
    # Keras requires the `.weights.h5` suffix, so the suffix stays on the temp name.
    temporary = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        model.save_weights(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
