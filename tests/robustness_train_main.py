"""Run the training job, pausing at one moment that is too short to hit with a timer.

    ROBUSTNESS_PAUSE=save:finetune_anet:2:READY python robustness_train_main.py FLAGS...
    ROBUSTNESS_PAUSE=done_marker:finetune_lnet_o:READY python robustness_train_main.py FLAGS...

runs `python -m lnet_anet_tf.train FLAGS...` and, at the moment given, creates the
file READY and sleeps until the test kills the process:

- `save:<stage>:<n>`: inside the n-th checkpoint save of the stage, after the
  checkpoint files are written and before the `checkpoint` state file names them.
  A kill there leaves a torn checkpoint.
- `done_marker:<stage>`: after the stage's final weights are written and before
  its `DONE.json`.

Without ROBUSTNESS_PAUSE it is the training job unchanged.
"""

import os
import time

from absl import app
import tensorflow as tf

from lnet_anet_tf import train
from lnet_anet_tf.training import checkpointing


def _pause(ready_path: str) -> None:
    with open(ready_path, "w", encoding="utf-8") as file:
        file.write(str(os.getpid()))
    while True:
        time.sleep(1)


def _pause_in_save(stage: str, number: int, ready_path: str) -> None:
    record_state = tf.train.CheckpointManager._record_state
    saves = []

    def record_state_after_pause(manager):
        # TensorFlow 2.21 records the state twice per save, before and after it
        # deletes old checkpoints. The first call for a new checkpoint is the one to
        # hold. The manager's directory is <model_dir>/<stage>/checkpoints.
        in_stage = os.path.basename(os.path.dirname(manager.directory)) == stage
        if in_stage and manager.latest_checkpoint not in saves:
            saves.append(manager.latest_checkpoint)
            if len(saves) == number:
                _pause(ready_path)
        return record_state(manager)

    tf.train.CheckpointManager._record_state = record_state_after_pause


def _pause_before_done_marker(stage: str, ready_path: str) -> None:
    write_done_marker = checkpointing.write_done_marker

    def write_done_marker_after_pause(stage_dir, marker):
        if os.path.basename(stage_dir) == stage:
            _pause(ready_path)
        write_done_marker(stage_dir, marker)

    checkpointing.write_done_marker = write_done_marker_after_pause


def install_pause(spec: str) -> None:
    kind, arguments = spec.split(":", 1)
    if kind == "save":
        stage, number, ready_path = arguments.split(":", 2)
        _pause_in_save(stage, int(number), ready_path)
    elif kind == "done_marker":
        stage, ready_path = arguments.split(":", 1)
        _pause_before_done_marker(stage, ready_path)
    else:
        raise ValueError(f"ROBUSTNESS_PAUSE={spec!r} is invalid; expected save:... or done_marker:...")


if __name__ == "__main__":
    if os.environ.get("ROBUSTNESS_PAUSE"):
        install_pause(os.environ["ROBUSTNESS_PAUSE"])
    app.run(train.main)
