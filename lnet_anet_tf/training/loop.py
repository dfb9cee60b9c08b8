"""The custom training loop that every training stage runs.

`fit` trains one named stage over a `tf.distribute.Strategy` and can be killed at
any moment: running the same call again resumes from the stage's last checkpoint
and ends with the same metrics and weights as an uninterrupted run, provided that

- `dataset_fn(input_context, epoch)` yields the same batches for the same epoch
  (shuffle with a seed derived from the epoch, no nondeterministic map or
  interleave), and
- TensorFlow ops are deterministic (`strategy.enable_determinism`) and the run
  uses the same devices.

The loop skips the batches of the interrupted epoch that were already trained on,
and restores the model, optimizer, dropout seed state, step counters and epoch
history from the checkpoint. A finished stage writes `DONE.json`; calling `fit`
again then only loads the final weights into the model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Callable

import keras
import tensorflow as tf
from absl import logging

from lnet_anet_tf.training import checkpointing
from lnet_anet_tf.training import evaluation
from lnet_anet_tf.training import logs
from lnet_anet_tf.training import steps as steps_lib
from lnet_anet_tf.training import strategy as strategy_lib


@dataclasses.dataclass(frozen=True)
class StageResult:
    """The outcome of one training stage.

    `metrics` contains the last epoch's training means (`loss` and each metric)
    and, with validation, the same names prefixed `val_`. `wall_time_s` is the
    duration of the `fit` call that finished the stage, including tracing,
    validation and checkpoint saves. `examples_per_second` divides the examples
    that call trained on by `wall_time_s`. When `skipped` is True, both come from
    `DONE.json`. `resumed_from_step` is 0 for a fresh start.
    """

    stage_name: str
    metrics: dict
    steps: int
    epochs: int
    examples_per_second: float
    wall_time_s: float
    resumed_from_step: int
    skipped: bool
    weights_path: str


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN or infinite loss."""


def fit(
    *,
    stage_name: str,
    model: keras.Model,
    loss_fn: Callable,
    dataset_fn: Callable,
    global_batch_size: int,
    steps_per_epoch: int,
    epochs: int,
    optimizer: keras.optimizers.Optimizer,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
    metrics_fn: Callable | None = None,
    validation_dataset_fn: Callable | None = None,
    validation_steps: int | None = None,
    checkpoint_every_steps: int | None = None,
    max_checkpoints_to_keep: int = 3,
    jit_compile: bool = False,
    progress: bool | None = None,
) -> StageResult:
    """Train `model` for one stage, resuming from and writing `model_dir/<stage_name>`.

    Create `model` and `optimizer` inside `strategy.scope()`. `dataset_fn(
    input_context, epoch)` returns a `tf.data.Dataset` of `(inputs, labels)` batched
    per replica with `input_context.get_per_replica_batch_size(global_batch_size)`
    and `drop_remainder=True`, sharded with `input_context` when there are several
    input pipelines, and at least `steps_per_epoch` batches per replica long.
    `loss_fn` and `metrics_fn` return per-example values; see `steps`.
    `validation_dataset_fn(input_context)` is distributed once and evaluated after
    every epoch, so a validation dataset that ends in `cache()` reads its files
    only in the first epoch.

    Checkpoints are saved after every epoch and, when `checkpoint_every_steps` is
    set, every that many steps. With a `mixed_float16` policy the optimizer is
    wrapped in `keras.optimizers.LossScaleOptimizer`. `progress=None` shows a
    progress bar only when standard output is a terminal.

    Raises `NonFiniteLossError` when a step's loss is NaN or infinite. Nothing is
    saved after that step, so the stage's last checkpoint stays the last good one.
    """
    strategy = strategy or tf.distribute.get_strategy()
    _check_arguments(
        stage_name, global_batch_size, steps_per_epoch, epochs, checkpoint_every_steps, strategy
    )
    stage_dir = os.path.join(model_dir, stage_name)

    marker = checkpointing.read_done_marker(stage_dir)
    if marker is not None:
        return _load_finished_stage(
            marker, model, stage_dir, global_batch_size, steps_per_epoch, epochs
        )

    optimizer = _prepare_optimizer(model, optimizer, strategy)
    state = checkpointing.LoopState(steps_per_epoch, global_batch_size, epochs)
    checkpoint = checkpointing.StageCheckpoint(
        stage_dir, model, optimizer, state, strategy, max_checkpoints_to_keep
    )
    resumed_from_step = _restore(checkpoint, optimizer, stage_name)

    run = _StageRun(
        stage_name=stage_name,
        stage_dir=stage_dir,
        strategy=strategy,
        state=state,
        checkpoint=checkpoint,
        logger=logs.StageLogger(
            stage_name, stage_dir, enabled=strategy_lib.is_chief(strategy), progress=progress
        ),
        train_step=steps_lib.build_train_step(
            model,
            loss_fn,
            optimizer,
            strategy,
            global_batch_size=global_batch_size,
            metrics_fn=metrics_fn,
            jit_compile=jit_compile,
        ),
        dataset_fn=dataset_fn,
        checkpoint_every_steps=checkpoint_every_steps,
        sync_replicas=steps_lib.build_replica_sync(model, strategy),
    )
    if validation_dataset_fn is not None:
        run.eval_step = steps_lib.build_eval_step(model, loss_fn, strategy, metrics_fn)
        run.validation_dataset = strategy.distribute_datasets_from_function(
            validation_dataset_fn
        )
        run.validation_steps = validation_steps

    start_time = time.perf_counter()
    try:
        while state.epoch < epochs:
            run.train_epoch()
            run.end_epoch()
    finally:
        run.logger.close()
    wall_time_s = time.perf_counter() - start_time
    return run.finish(model, resumed_from_step, wall_time_s)


@dataclasses.dataclass
class _StageRun:
    """The parts of one `fit` call that the epochs share."""

    stage_name: str
    stage_dir: str
    strategy: tf.distribute.Strategy
    state: checkpointing.LoopState
    checkpoint: checkpointing.StageCheckpoint
    logger: logs.StageLogger
    train_step: Callable
    dataset_fn: Callable
    checkpoint_every_steps: int | None
    sync_replicas: Callable | None
    eval_step: Callable | None = None
    validation_dataset: tf.distribute.DistributedDataset | None = None
    validation_steps: int | None = None

    def train_epoch(self) -> None:
        state = self.state
        epoch = state.epoch
        self.logger.start_epoch(epoch, state.epochs, state.steps_per_epoch)
        dataset = self.strategy.distribute_datasets_from_function(
            _remaining_batches(self.dataset_fn, epoch, state.step_in_epoch, state.steps_per_epoch)
        )
        iterator = iter(dataset)

        while state.step_in_epoch < state.steps_per_epoch:
            try:
                values = self.train_step(iterator)
            except tf.errors.OutOfRangeError:
                raise ValueError(
                    f"Stage {self.stage_name}: the training dataset of epoch {epoch} ended "
                    f"after {state.step_in_epoch} of {state.steps_per_epoch} steps. Make "
                    "dataset_fn produce at least steps_per_epoch batches per replica, or "
                    "lower steps_per_epoch."
                ) from None
            values = {name: float(value) for name, value in values.items()}
            self._check_finite(values["loss"])

            state.step += 1
            for name, value in values.items():
                state.epoch_sums[name] = state.epoch_sums.get(name, 0.0) + value
            means = {name: total / state.step_in_epoch for name, total in state.epoch_sums.items()}
            self.logger.log_step(state.step, state.step_in_epoch, values, means)

            # The epoch's last step is saved by `end_epoch`, together with the epoch row.
            if (
                self.checkpoint_every_steps
                and state.step % self.checkpoint_every_steps == 0
                and state.step_in_epoch < state.steps_per_epoch
            ):
                self._sync_replicas()
                self.checkpoint.save()

    def _sync_replicas(self) -> None:
        # Checkpoints, validation and exports then read the replicas' mean layer
        # state, so a resumed run continues from the state an uninterrupted run has.
        if self.sync_replicas is not None:
            self.sync_replicas()

    def _check_finite(self, loss: float) -> None:
        if math.isfinite(loss):
            return
        raise NonFiniteLossError(
            f"Stage {self.stage_name} stopped: the loss at step {self.state.step + 1} "
            f"(epoch {self.state.epoch + 1}) is {loss}. The last good checkpoint is "
            f"{self.checkpoint.latest or 'none (no checkpoint was saved yet)'}; "
            "rerunning resumes from it. Try a lower learning rate, disable mixed "
            "precision if it is on, and check the inputs and labels for NaN or "
            "infinite values."
        )

    def end_epoch(self) -> None:
        """Validate, append the epoch row to the history, save and log."""
        state = self.state
        row = {"epoch": state.epoch + 1}
        row.update({name: total / state.steps_per_epoch for name, total in state.epoch_sums.items()})
        self._sync_replicas()
        if self.eval_step is not None:
            results = evaluation.evaluate_distributed(
                self.eval_step, self.validation_dataset, self.validation_steps
            )
            row.update({f"val_{name}": value for name, value in results.items()})

        state.history.append(row)
        state.epoch += 1
        state.epoch_sums = {}
        self.checkpoint.save()
        self.logger.end_epoch(state.epoch - 1, state.epochs, state.step, state.history)

    def finish(self, model, resumed_from_step: int, wall_time_s: float) -> StageResult:
        """Export the final weights, write `DONE.json` and log the stage summary."""
        state = self.state
        weights_path = os.path.join(self.stage_dir, checkpointing.WEIGHTS_FILENAME)
        examples = (state.step - resumed_from_step) * state.global_batch_size
        examples_per_second = examples / wall_time_s if examples else 0.0
        metrics = {name: value for name, value in state.history[-1].items() if name != "epoch"}

        # The weights go first, so a run killed before the marker is written exports
        # them again when rerun.
        if strategy_lib.is_chief(self.strategy):
            checkpointing.save_weights_atomic(model, weights_path)
            checkpointing.write_done_marker(
                self.stage_dir,
                checkpointing.DoneMarker(
                    stage_name=self.stage_name,
                    metrics=metrics,
                    steps=state.step,
                    epochs=state.epochs,
                    steps_per_epoch=state.steps_per_epoch,
                    global_batch_size=state.global_batch_size,
                    weights_path=checkpointing.WEIGHTS_FILENAME,
                    wall_time_s=wall_time_s,
                    examples_per_second=examples_per_second,
                ),
            )
        self.logger.summary(state.step, wall_time_s, examples_per_second, metrics)
        return StageResult(
            stage_name=self.stage_name,
            metrics=metrics,
            steps=state.step,
            epochs=state.epochs,
            examples_per_second=examples_per_second,
            wall_time_s=wall_time_s,
            resumed_from_step=resumed_from_step,
            skipped=False,
            weights_path=weights_path,
        )


def _check_arguments(stage_name, global_batch_size, steps_per_epoch, epochs, checkpoint_every_steps, strategy):
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stage_name or ""):
        raise ValueError(
            f"Invalid stage name {stage_name!r}: it names a directory, so use only "
            "letters, digits, '_', '.' and '-'."
        )
    for name, value in (
        ("global_batch_size", global_batch_size),
        ("steps_per_epoch", steps_per_epoch),
        ("epochs", epochs),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if checkpoint_every_steps is not None and (
        not isinstance(checkpoint_every_steps, int) or checkpoint_every_steps < 1
    ):
        raise ValueError(
            f"checkpoint_every_steps must be a positive integer or None, got "
            f"{checkpoint_every_steps!r}."
        )
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by the "
            f"{replicas} replicas of the distribution strategy; use a multiple of {replicas}."
        )


def _prepare_optimizer(model, optimizer, strategy):
    """Check that both live in `strategy`'s scope, add loss scaling, build the optimizer."""
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"Model {model.name!r} has no trainable variables yet. Build it before "
            "training, for example with a keras.Input or by calling it once on a batch."
        )
    foreign = [
        variable.path
        for variable in model.variables
        if not strategy.extended.variable_created_in_scope(getattr(variable, "value", variable))
    ]
    if foreign:
        raise ValueError(
            f"Model variables {foreign[:3]} were not created in the distribution "
            "strategy's scope. Build the model inside `with strategy.scope():`."
        )
    iterations = getattr(optimizer.iterations, "value", optimizer.iterations)
    if not strategy.extended.variable_created_in_scope(iterations):
        raise ValueError(
            "The optimizer was not created in the distribution strategy's scope. "
            "Create it inside `with strategy.scope():`."
        )

    with strategy.scope():
        mixed = "mixed_float16" in (
            keras.mixed_precision.global_policy().name,
            model.dtype_policy.name,
        )
        if mixed and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
    return optimizer


def _restore(checkpoint, optimizer, stage_name) -> int:
    """Restore the stage's latest checkpoint, if any; return the step it resumes from."""
    state = checkpoint.state
    requested = (state.steps_per_epoch, state.global_batch_size, state.epochs)
    learning_rate = _constant_learning_rate(optimizer)
    path = checkpoint.restore_latest()
    if path is None:
        logging.info("Stage %s: starting from step 0.", stage_name)
        return 0

    restored = (state.steps_per_epoch, state.global_batch_size, state.epochs)
    if restored != requested:
        raise ValueError(
            f"Checkpoint {path} of stage {stage_name} was written with "
            f"steps_per_epoch, global_batch_size, epochs = {restored}, but this run "
            f"asks for {requested}. Run with the original values, or delete "
            f"{checkpoint.directory} to start the stage over."
        )

    # The learning rate is an optimizer variable, so the restore overwrote the
    # caller's value. The caller's value wins, which lets a rerun lower it.
    restored_rate = _constant_learning_rate(optimizer)
    if learning_rate is not None and restored_rate != learning_rate:
        logging.warning(
            "Stage %s: using learning rate %g instead of the checkpoint's %g.",
            stage_name, learning_rate, restored_rate,
        )
        optimizer.learning_rate = learning_rate

    logging.info(
        "Stage %s: resuming from %s (epoch %d, step %d).",
        stage_name, path, state.epoch, state.step,
    )
    return state.step


def _constant_learning_rate(optimizer) -> float | None:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner.get_config()["learning_rate"], dict):
        return None  # a schedule: it follows optimizer.iterations, which is restored
    return float(keras.ops.convert_to_numpy(inner.learning_rate))


def _remaining_batches(dataset_fn, epoch, done_steps, steps_per_epoch):
    """Wrap `dataset_fn` to skip the batches of the `done_steps` steps of `epoch`."""

    def make_dataset(input_context):
        dataset = dataset_fn(input_context, epoch)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(f"dataset_fn must return a tf.data.Dataset, got {type(dataset)}.")
        # One step takes one batch per replica, and the replicas fed by one input
        # pipeline take consecutive batches from it.
        batches_per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        dataset = dataset.skip(done_steps * batches_per_step)
        return dataset.take((steps_per_epoch - done_steps) * batches_per_step)

    return make_dataset


def _load_finished_stage(marker, model, stage_dir, global_batch_size, steps_per_epoch, epochs):
    recorded = (marker.steps_per_epoch, marker.global_batch_size, marker.epochs)
    if recorded != (steps_per_epoch, global_batch_size, epochs):
        raise ValueError(
            f"Stage {marker.stage_name} in {stage_dir} already finished with "
            f"steps_per_epoch, global_batch_size, epochs = {recorded}, but this run "
            f"asks for {(steps_per_epoch, global_batch_size, epochs)}. Delete "
            f"{stage_dir} to train it again, or use another model_dir."
        )
    weights_path = os.path.join(stage_dir, marker.weights_path)
    if not os.path.exists(weights_path):
        raise FileNotFoundError(
            f"Stage {marker.stage_name} is marked finished, but its weights file "
            f"{weights_path} is missing. Delete "
            f"{os.path.join(stage_dir, checkpointing.DONE_FILENAME)} and rerun to "
            "export the weights again from the final checkpoint."
        )
    model.load_weights(weights_path)
    logging.info(
        "Stage %s already finished (%s); loaded %s and skipped training.",
        marker.stage_name, os.path.join(stage_dir, checkpointing.DONE_FILENAME), weights_path,
    )
    return StageResult(
        stage_name=marker.stage_name,
        metrics=marker.metrics,
        steps=marker.steps,
        epochs=marker.epochs,
        examples_per_second=marker.examples_per_second,
        wall_time_s=marker.wall_time_s,
        resumed_from_step=marker.steps,
        skipped=True,
        weights_path=weights_path,
    )
