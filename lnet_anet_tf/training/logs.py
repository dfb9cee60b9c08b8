"""Progress bar, log lines, TensorBoard scalars and CSV log of a training stage.

Only the chief of a multi-worker run writes files or prints; the other workers get
a `StageLogger` that does nothing.
"""

from __future__ import annotations

import csv
import io
import os
import sys

import keras
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from lnet_anet_tf.training import checkpointing

CSV_FILENAME = "log.csv"

# `tf.summary.scalar` lives in the `tensorboard` package, which TensorFlow 2.21 no
# longer installs. `tf.summary.write` with the scalar plugin's metadata writes the
# same event records, so viewing them needs TensorBoard but writing them does not.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def write_scalar(tag: str, value: float, step: int) -> None:
    """Write one TensorBoard scalar to the default summary writer."""
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


def format_metrics(metrics: dict) -> str:
    return ", ".join(f"{name}={value:.6g}" for name, value in metrics.items())


class StageLogger:
    """Progress bar per epoch, absl log lines, TensorBoard scalars and `log.csv`."""

    def __init__(self, stage_name: str, stage_dir: str, *, enabled: bool, progress: bool | None):
        self.stage_name = stage_name
        self.stage_dir = stage_dir
        self.enabled = enabled
        # The progress bar redraws one line, which only makes sense on a terminal.
        self.show_progress = enabled and (sys.stdout.isatty() if progress is None else progress)
        if enabled:
            self._writer = tf.summary.create_file_writer(os.path.join(stage_dir, "logs"))
        else:
            self._writer = tf.summary.create_noop_writer()
        self._progbar = None
        self._steps_per_epoch = 0

    def start_epoch(self, epoch: int, epochs: int, steps_per_epoch: int) -> None:
        if not self.show_progress:
            return
        print(f"Stage {self.stage_name}, epoch {epoch + 1}/{epochs}", flush=True)
        self._steps_per_epoch = steps_per_epoch

    def log_step(self, step: int, step_in_epoch: int, step_values: dict, epoch_means: dict) -> None:
        if not self.enabled:
            return
        with self._writer.as_default():
            for name, value in step_values.items():
                write_scalar(f"train_step/{name}", value, step)
        if not self.show_progress:
            return
        if self._progbar is None:
            # The loop passes epoch means, which the bar must show as they are
            # instead of averaging them again.
            self._progbar = keras.utils.Progbar(
                self._steps_per_epoch, stateful_metrics=list(epoch_means)
            )
        self._progbar.update(step_in_epoch, values=list(epoch_means.items()), finalize=False)

    def end_epoch(self, epoch: int, epochs: int, step: int, history: list[dict]) -> None:
        """Log the finished epoch's row (`history[-1]`) and rewrite `log.csv`."""
        if not self.enabled:
            return
        row = history[-1]
        if self._progbar is not None:
            self._progbar.update(self._progbar.target, finalize=True)
            self._progbar = None

        with self._writer.as_default():
            for name, value in row.items():
                if name != "epoch":
                    write_scalar(f"epoch/{name}", value, step)
        self._writer.flush()
        write_csv(os.path.join(self.stage_dir, CSV_FILENAME), history)
        logging.info(
            "Stage %s epoch %d/%s (step %d): %s",
            self.stage_name,
            epoch + 1,
            epochs,
            step,
            format_metrics({name: value for name, value in row.items() if name != "epoch"}),
        )

    def summary(self, steps: int, wall_time_s: float, examples_per_second: float, metrics: dict) -> None:
        if not self.enabled:
            return
        logging.info(
            "Stage %s finished: %d steps, %.1f s, %.1f examples/s; %s",
            self.stage_name,
            steps,
            wall_time_s,
            examples_per_second,
            format_metrics(metrics),
        )

    def close(self) -> None:
        if self._progbar is not None:
            print(flush=True)
        self._writer.close()


def write_csv(path: str, history: list[dict]) -> None:
    """Write one row per epoch of `history` to `path`, replacing it atomically.

    The rows come from the checkpoint, so after a resume the file is rebuilt from
    the restored history. It never contains an epoch twice or misses one.
    """
    columns = ["epoch"]
    for row in history:
        columns += [name for name in row if name not in columns]

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({name: _csv_value(row.get(name, "")) for name in columns})
    checkpointing.write_text_atomic(path, buffer.getvalue())


def _csv_value(value):
    # repr keeps every digit of a float so the CSV matches the checkpoint exactly.
    return repr(value) if isinstance(value, float) else value
