"""Distributed train, evaluation and prediction steps as `tf.function`s.

Contracts shared by all steps:

- A dataset element is `(inputs, labels)` (or `inputs` alone for prediction),
  batched per replica.
- `loss_fn(labels, outputs)` returns one float loss per example, shape `[batch]`.
- `metrics_fn(labels, outputs)`, when given, returns a dict of per-example float
  tensors, each of shape `[batch]`; the loop reports their means.
- Model outputs are cast to float32 before `loss_fn` and `metrics_fn`, so under a
  mixed precision policy both see float32 tensors.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

SUM = tf.distribute.ReduceOp.SUM


def build_train_step(
    model: keras.Model,
    loss_fn: Callable,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    *,
    global_batch_size: int,
    metrics_fn: Callable | None = None,
    jit_compile: bool = False,
) -> Callable:
    """Build `train_step(iterator) -> dict` that runs one optimizer step.

    The returned dict contains the step's `loss` (the mean per-example loss plus
    the model's regularization losses) and the means of `metrics_fn`'s values, all
    reduced over replicas. Each replica divides its loss by the global batch size
    and the optimizer sums the gradients over replicas, so the update equals one
    step on the whole global batch. Layers that use batch statistics, such as
    BatchNormalization, still see only their replica's part of the batch.
    """
    per_replica_batch_size = global_batch_size // strategy.num_replicas_in_sync
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(inputs, labels):
        with tf.GradientTape() as tape:
            outputs = _to_float32(model(inputs, training=True))
            per_example_loss = _per_example(loss_fn(labels, outputs), "loss_fn")
            loss = tf.nn.compute_average_loss(
                per_example_loss, global_batch_size=global_batch_size
            )
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss) if scales_loss else loss

        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        values = {"loss": loss}
        for name, value in _metric_values(metrics_fn, labels, outputs).items():
            values[name] = tf.nn.compute_average_loss(
                value, global_batch_size=global_batch_size
            )
        return gradients, values

    if jit_compile:
        # Only the forward and backward pass is compiled: the gradient all-reduce
        # and the optimizer update run outside XLA, where tf.distribute supports them.
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(batch):
        inputs, labels = _unpack_training_batch(batch)
        _assert_batch_size(inputs, per_replica_batch_size)
        gradients, values = forward_backward(inputs, labels)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return values

    @tf.function
    def train_step(iterator):
        values = strategy.run(replica_step, args=(next(iterator),))
        return {name: strategy.reduce(SUM, value, axis=None) for name, value in values.items()}

    return train_step


def build_eval_step(
    model: keras.Model,
    loss_fn: Callable,
    strategy: tf.distribute.Strategy,
    metrics_fn: Callable | None = None,
) -> Callable:
    """Build `eval_step(batch) -> dict` of per-example sums and the example `count`.

    Sums instead of means keep the result exact when the last batch is partial or
    some replicas receive an empty batch.
    """

    def replica_step(batch):
        inputs, labels = _unpack_training_batch(batch)
        outputs = _to_float32(model(inputs, training=False))
        per_example_loss = _per_example(loss_fn(labels, outputs), "loss_fn")
        sums = {
            "count": tf.cast(tf.shape(per_example_loss)[0], tf.float64),
            "loss": tf.reduce_sum(tf.cast(per_example_loss, tf.float64)),
        }
        for name, value in _metric_values(metrics_fn, labels, outputs).items():
            sums[name] = tf.reduce_sum(tf.cast(value, tf.float64))
        return sums

    @tf.function(reduce_retracing=True)
    def eval_step(batch):
        sums = strategy.run(replica_step, args=(batch,))
        return {name: strategy.reduce(SUM, value, axis=None) for name, value in sums.items()}

    return eval_step


def build_predict_step(model: keras.Model, strategy: tf.distribute.Strategy) -> Callable:
    """Build `predict_step(batch)` that returns all replicas' outputs, concatenated.

    `strategy.gather` concatenates in replica order, and a single input pipeline
    hands consecutive batches to consecutive replicas, so on one worker the result
    keeps the dataset's order.
    """

    def replica_step(batch):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        return model(inputs, training=False)

    @tf.function(reduce_retracing=True)
    def predict_step(batch):
        outputs = strategy.run(replica_step, args=(batch,))
        return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), outputs)

    return predict_step


def build_replica_sync(model: keras.Model, strategy: tf.distribute.Strategy) -> Callable | None:
    """Build `sync()` that sets each replica's non-trainable float variables to their mean.

    Keras 3 (checked in 3.15) creates layer state such as BatchNormalization's
    moving mean and variance with aggregation NONE. Under a multi-replica strategy
    every replica therefore updates its own copy from its own batches, and a
    checkpoint or export keeps only the first replica's copy. Averaging the copies gives every replica the statistics
    of the whole global batch. The moving averages are linear in the batch
    statistics, so averaging at any step leaves later averages unchanged up to
    rounding. Returns None under a single replica, where there is nothing to sync.
    """
    if strategy.num_replicas_in_sync == 1:
        return None
    variables = [
        getattr(variable, "value", variable)
        for variable in model.non_trainable_variables
        if tf.as_dtype(variable.dtype).is_floating
    ]
    if not variables:
        return None

    def replica_sync():
        context = tf.distribute.get_replica_context()
        values = [tf.identity(variable) for variable in variables]
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN, values)
        for variable, mean in zip(variables, means):
            variable.assign(mean)

    @tf.function
    def sync():
        strategy.run(replica_sync)

    return sync


def _unpack_training_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            "Each dataset element must be an (inputs, labels) pair batched per "
            f"replica; got {batch!r}."
        )
    return batch[0], batch[1]


def _assert_batch_size(inputs, per_replica_batch_size: int) -> None:
    batch_size = tf.shape(tf.nest.flatten(inputs)[0])[0]
    tf.debugging.assert_equal(
        batch_size,
        per_replica_batch_size,
        message=(
            f"Each replica expects training batches of exactly {per_replica_batch_size} "
            "examples (the global batch size divided by the number of replicas). "
            "Batch with input_context.get_per_replica_batch_size(global_batch_size) "
            "and drop_remainder=True."
        ),
    )


def _per_example(value, producer: str) -> tf.Tensor:
    value = tf.cast(value, tf.float32)
    if value.shape.rank != 1:
        raise ValueError(
            f"{producer} must return one value per example, shape [batch]; got shape "
            f"{value.shape}. Reduce over the other axes inside {producer}."
        )
    return value


def _metric_values(metrics_fn: Callable | None, labels, outputs) -> dict:
    if metrics_fn is None:
        return {}
    values = metrics_fn(labels, outputs)
    if not isinstance(values, dict):
        raise ValueError(f"metrics_fn must return a dict of name -> tensor, got {values!r}.")
    if "loss" in values or "count" in values:
        raise ValueError("metrics_fn must not return the reserved names 'loss' or 'count'.")
    return {name: _per_example(value, f"metrics_fn[{name!r}]") for name, value in values.items()}


def _to_float32(outputs):
    def cast(value):
        if value.dtype.is_floating and value.dtype != tf.float32:
            return tf.cast(value, tf.float32)
        return value

    return tf.nest.map_structure(cast, outputs)
