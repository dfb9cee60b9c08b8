"""A tiny multi-label classifier and its data, shared by the training-loop tests.

The data is a fixed random set of feature vectors with 3 binary labels. Each epoch
shuffles it with a seed derived from the epoch, so a resumed run reads the same
batches as an uninterrupted one.
"""

import time

import keras
import numpy as np
import tensorflow as tf

NUM_FEATURES = 6
NUM_LABELS = 3


def make_data(num_examples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    directions = rng.normal(size=(NUM_FEATURES, NUM_LABELS))
    labels = (features @ directions > 0).astype(np.float32)
    return features, labels


def make_model(batch_norm: bool = True, dropout: float = 0.25) -> keras.Model:
    layers = [keras.Input((NUM_FEATURES,)), keras.layers.Dense(16, activation="relu")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(
        keras.layers.Dense(
            NUM_LABELS, kernel_regularizer=keras.regularizers.L2(1e-3), dtype="float32"
        )
    )
    return keras.Sequential(layers)


def loss_fn(labels, logits):
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(losses, axis=-1)


def metrics_fn(labels, logits):
    correct = tf.cast(tf.equal(tf.cast(logits > 0, labels.dtype), labels), tf.float32)
    return {"accuracy": tf.reduce_mean(correct, axis=-1)}


def make_dataset_fn(
    features,
    labels,
    global_batch_size: int,
    seed: int = 0,
    nan_at=None,
    delay_s: float = 0.0,
):
    """Return `dataset_fn(input_context, epoch)` over the arrays.

    `nan_at=(epoch, batch)` replaces that batch's labels with NaN. `delay_s` makes
    each batch that long to produce, so a test can kill the process mid-stage.
    """

    def dataset_fn(input_context, epoch):
        dataset = tf.data.Dataset.from_tensor_slices((features, labels))
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        dataset = dataset.shuffle(len(features), seed=seed * 1000 + epoch)
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        if nan_at is not None and nan_at[0] == epoch:
            dataset = dataset.enumerate().map(
                lambda index, batch: (
                    batch[0],
                    tf.where(index == nan_at[1], float("nan"), batch[1]),
                )
            )
        if delay_s:
            dataset = dataset.map(lambda x, y: (_slow_identity(x, delay_s), y))
        return dataset

    return dataset_fn


def _slow_identity(tensor, delay_s):
    def sleep_then_return(value):
        time.sleep(delay_s)
        return value

    result = tf.numpy_function(sleep_then_return, [tensor], tensor.dtype)
    result.set_shape(tensor.shape)
    return result


def make_validation_dataset_fn(features, labels, per_replica_batch_size: int):
    def dataset_fn(input_context):
        dataset = tf.data.Dataset.from_tensor_slices((features, labels))
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return dataset.batch(per_replica_batch_size)

    return dataset_fn
