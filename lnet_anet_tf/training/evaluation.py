"""Run a model over a distributed dataset: metric means, or outputs as NumPy."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from lnet_anet_tf.training import steps as steps_lib


def evaluate(
    model: keras.Model,
    loss_fn: Callable,
    dataset_fn: Callable,
    *,
    strategy: tf.distribute.Strategy | None = None,
    metrics_fn: Callable | None = None,
    steps: int | None = None,
) -> dict[str, float]:
    """Return the mean per-example `loss` and metrics of `model` over a dataset.

    `dataset_fn(input_context)` returns a `tf.data.Dataset` of `(inputs, labels)`
    batched per replica; partial batches are fine. `steps=None` runs until the
    dataset ends. The loss here excludes the model's regularization losses.
    """
    strategy = strategy or tf.distribute.get_strategy()
    eval_step = steps_lib.build_eval_step(model, loss_fn, strategy, metrics_fn)
    return run_evaluation(eval_step, strategy, dataset_fn, steps)


def run_evaluation(
    eval_step: Callable,
    strategy: tf.distribute.Strategy,
    dataset_fn: Callable,
    steps: int | None,
) -> dict[str, float]:
    """Evaluate with an `eval_step` from `steps.build_eval_step`, built once by the caller."""
    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    return evaluate_distributed(eval_step, dataset, steps)


def evaluate_distributed(eval_step: Callable, dataset, steps: int | None) -> dict[str, float]:
    """Evaluate with `eval_step` over a dataset that the strategy already distributed.

    A caller that evaluates after every epoch distributes its dataset once and
    passes it here each time, so a dataset that caches its elements reads its
    files only the first time.
    """
    totals: dict[str, float] = {}
    for index, batch in enumerate(dataset):
        if steps is not None and index >= steps:
            break
        for name, value in eval_step(batch).items():
            totals[name] = totals.get(name, 0.0) + float(value)

    count = totals.pop("count", 0.0)
    if count == 0:
        raise ValueError("The evaluation dataset produced no examples.")
    return {name: total / count for name, total in totals.items()}


def predict(
    model: keras.Model,
    dataset_fn: Callable,
    *,
    strategy: tf.distribute.Strategy | None = None,
    steps: int | None = None,
):
    """Return `model`'s outputs over a dataset as NumPy arrays, in dataset order.

    `dataset_fn(input_context)` returns a `tf.data.Dataset` whose elements are
    `inputs` or `(inputs, labels[, sample_weight])`, batched per replica; partial
    batches are fine. The result has the structure of the model's outputs, each
    array concatenated over all examples.

    On one worker the order equals the dataset's order. With several workers each
    step gathers every worker's batches in worker order, so the result interleaves
    the workers' shards step by step.
    """
    strategy = strategy or tf.distribute.get_strategy()
    predict_step = steps_lib.build_predict_step(model, strategy)
    dataset = strategy.distribute_datasets_from_function(dataset_fn)

    batches = []
    for index, batch in enumerate(dataset):
        if steps is not None and index >= steps:
            break
        batches.append(tf.nest.map_structure(lambda value: value.numpy(), predict_step(batch)))
    if not batches:
        raise ValueError("The prediction dataset produced no examples.")
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *batches)
