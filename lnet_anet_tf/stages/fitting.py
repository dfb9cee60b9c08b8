"""Losses, metrics and the `loop.fit` call that every network-training stage shares."""

from __future__ import annotations

from typing import Callable, Optional

import keras
import tensorflow as tf

from lnet_anet_tf.stages import stage_seed
from lnet_anet_tf.stages.context import RunContext
from lnet_anet_tf.training import loop
from lnet_anet_tf.training import strategy as strategy_lib


def softmax_loss(labels, outputs):
    """Per-example softmax cross-entropy over classes or identities."""
    return keras.losses.sparse_categorical_crossentropy(labels, outputs["logits"], from_logits=True)


def softmax_metrics(labels, outputs):
    predicted = tf.argmax(outputs["logits"], axis=-1, output_type=tf.int32)
    return {"accuracy": tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32)}


def sigmoid_loss(labels, outputs):
    """Per-example sigmoid cross-entropy, averaged over the 40 attributes."""
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=outputs["logits"])
    return tf.reduce_mean(losses, axis=-1)


def attribute_metrics(labels, outputs):
    correct = tf.equal(outputs["logits"] > 0.0, labels > 0.5)
    return {"accuracy": tf.reduce_mean(tf.cast(correct, tf.float32), axis=-1)}


# Validation sets up to this size stay in memory after the first epoch. The demo
# preset's take about 33 MB. A CelebA validation partition at the paper preset's
# LNet input (227 x 227) takes about 12 GB, so it is read from its files every epoch.
VALIDATION_CACHE_BYTES = 256 * 2**20


def cache_if_small(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Return `dataset.cache()` when its batches fit in `VALIDATION_CACHE_BYTES`, else `dataset`.

    Only for datasets that give the same elements on every pass (evaluation
    datasets): the cache repeats the first pass. A dataset whose length or
    example shapes TensorFlow cannot infer is left as it is.
    """
    batches = int(dataset.cardinality())
    specs = tf.nest.flatten(dataset.element_spec)
    sizes = [spec.shape[1:].num_elements() for spec in specs]
    if batches < 0 or None in sizes:
        return dataset
    example_bytes = sum(size * spec.dtype.size for size, spec in zip(sizes, specs))
    if batches * batch_size * example_bytes > VALIDATION_CACHE_BYTES:
        return dataset
    return dataset.cache()


def batching(
    context: RunContext,
    stage_name: str,
    num_examples: int,
    examples_per_pipeline: Optional[Callable[[int], int]] = None,
) -> tuple[int, int]:
    """Return (global batch size, steps per epoch) for `num_examples` training examples.

    The global batch is the stage's configured batch size, lowered to the data size
    and rounded down to a multiple of the replica count. The steps per epoch count
    whole batches of the smallest input pipeline's examples: an equal share of the
    rows for image files, or `examples_per_pipeline(number of pipelines)` when the
    pipelines read whole TFRecord files.
    """
    strategy = context.strategy
    replicas = strategy.num_replicas_in_sync
    pipelines = strategy_lib.num_workers(strategy)
    configured = context.config.stages[stage_name].batch_size
    global_batch_size = min(configured, num_examples) // replicas * replicas
    if global_batch_size == 0:
        raise ValueError(
            f"Stage {stage_name} has {num_examples} training examples, fewer than the "
            f"{replicas} replicas in sync; use more data or fewer devices."
        )
    if examples_per_pipeline is None:
        steps_per_epoch = (num_examples // pipelines) // (global_batch_size // pipelines)
        return global_batch_size, max(steps_per_epoch, 1)
    smallest = examples_per_pipeline(pipelines)
    steps_per_epoch = smallest // (global_batch_size // pipelines)
    if steps_per_epoch == 0:
        raise ValueError(
            f"Stage {stage_name}: the smallest of the {pipelines} input pipelines reads "
            f"{smallest} training examples from its TFRecord files, fewer than its "
            f"{global_batch_size // pipelines} per step. Convert with more --num_shards so "
            "the files split more evenly, or lower the stage's batch_size."
        )
    return global_batch_size, steps_per_epoch


def make_optimizer(context: RunContext, stage_name: str, steps_per_epoch: int):
    """Adam with a cosine decay of the stage's learning rate over all its steps."""
    stage = context.config.stages[stage_name]
    total_steps = max(1, stage.epochs * steps_per_epoch)
    warmup_steps = int(stage.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else stage.learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=stage.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    return keras.optimizers.Adam(schedule)


def build_seeded(seed: int, stage_name: str, build_model: Callable[[], keras.Model]) -> keras.Model:
    """Seed the global generators with the stage's seed, then call `build_model`.

    Before its model, a stage may build other nets (finetune_lnet_s builds LNet_o
    for its boxes, finetune_anet builds LNet_s) or load their outputs from the
    .npz cache instead. Building a net draws from the global generators, so
    without this seed a rerun that found the cache gave the model other
    initial weights and dropout seeds than the uninterrupted run did.
    """
    keras.utils.set_random_seed(stage_seed(seed, stage_name))
    return build_model()


def fit_stage(
    context: RunContext,
    stage_name: str,
    *,
    build_model: Callable[[], keras.Model],
    loss_fn: Callable,
    metrics_fn: Callable,
    train_dataset: Callable,
    num_examples: int,
    validation_dataset: Optional[Callable] = None,
    examples_per_pipeline: Optional[Callable[[int], int]] = None,
) -> tuple[keras.Model, loop.StageResult]:
    """Build the stage's model inside the strategy's scope and train it with `loop.fit`.

    `train_dataset(batch_size, epoch, input_context)` and
    `validation_dataset(batch_size, input_context)` build the pipelines; the
    batch size they receive is the global one. `examples_per_pipeline` is
    `StageInputs.examples_per_pipeline`'s result, see `batching`.
    """
    global_batch_size, steps_per_epoch = batching(
        context, stage_name, num_examples, examples_per_pipeline
    )
    with context.strategy.scope():
        model = build_seeded(context.config.seed, stage_name, build_model)
        optimizer = make_optimizer(context, stage_name, steps_per_epoch)

    def dataset_fn(input_context, epoch):
        return train_dataset(global_batch_size, epoch, input_context)

    validation_fn = None
    if validation_dataset is not None:
        def validation_fn(input_context):
            dataset = validation_dataset(global_batch_size, input_context)
            return cache_if_small(dataset, global_batch_size)

    result = loop.fit(
        stage_name=stage_name,
        model=model,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        dataset_fn=dataset_fn,
        global_batch_size=global_batch_size,
        steps_per_epoch=steps_per_epoch,
        epochs=context.config.stages[stage_name].epochs,
        optimizer=optimizer,
        model_dir=context.model_dir,
        strategy=context.strategy,
        validation_dataset_fn=validation_fn,
        checkpoint_every_steps=context.checkpoint_every_steps,
        jit_compile=context.jit_compile,
        progress=context.progress,
    )
    return model, result
