"""Trivial baselines that the cascade must beat clearly on the same test split.

- Majority: every attribute predicted as its more frequent training value.
- Pixels + logistic regression: one logistic regression per attribute on the raw
  pixels of the aligned faces, downsampled to `PIXEL_SIZE`.
- Centre box: a box of the mean training face size at the image centre, for
  localization recall.

They use the same train and test rows as the cascade. The centre box reads the
training boxes, which is acceptable for a baseline that only the evaluation runs.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lnet_anet_tf import image_io
from lnet_anet_tf import localization
from lnet_anet_tf import metrics as metrics_lib
from lnet_anet_tf.data.table import CelebATable

# (height, width) of the downsampled aligned faces; 178x218 aligned images keep
# their aspect ratio at this size.
PIXEL_SIZE = (22, 18)
LOGISTIC_EPOCHS = 60
LOGISTIC_L2 = 1e-3


def run_baselines(train: CelebATable, test: CelebATable) -> dict:
    """Return the metrics of every baseline that the available data allows."""
    results = {"majority": majority_baseline(train, test)}

    if train.aligned_paths is None or test.aligned_paths is None:
        results["pixel_logistic_regression"] = {"unavailable": "the dataset has no aligned images"}
    else:
        results["pixel_logistic_regression"] = pixel_logistic_regression(train, test)

    if train.boxes is None or test.boxes is None or train.wild_paths is None:
        results["centre_box"] = {"unavailable": "the dataset has no face boxes"}
    else:
        results["centre_box"] = centre_box_baseline(train, test)
    return results


def majority_baseline(train: CelebATable, test: CelebATable) -> dict:
    majority = (train.attributes.mean(axis=0) >= 0.5).astype(np.float32)
    probabilities = np.tile(majority, (len(test), 1))
    return _summary(metrics_lib.attribute_metrics(probabilities, test.attributes))


def _summary(attribute_metrics: dict) -> dict:
    return {
        "mean_accuracy": attribute_metrics["mean_accuracy"],
        "mean_balanced_accuracy": attribute_metrics["mean_balanced_accuracy"],
        "mean_roc_auc": attribute_metrics["mean_roc_auc"],
    }


def _load_pixels(paths) -> np.ndarray:
    def load(path):
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=3, expand_animations=False
        )
        image = tf.image.resize(tf.cast(image, tf.float32), PIXEL_SIZE, antialias=True)
        return tf.reshape(image / 255.0, [-1])

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=str))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    return np.concatenate([batch.numpy() for batch in dataset])


def pixel_logistic_regression(train: CelebATable, test: CelebATable, seed: int = 0) -> dict:
    """Fit 40 L2-regularized logistic regressions on standardized pixels."""
    train_pixels = _load_pixels(train.aligned_paths)
    test_pixels = _load_pixels(test.aligned_paths)
    mean = train_pixels.mean(axis=0)
    std = train_pixels.std(axis=0) + 1e-6
    train_pixels = (train_pixels - mean) / std
    test_pixels = (test_pixels - mean) / std

    tf.random.set_seed(seed)
    num_features, num_attributes = train_pixels.shape[1], train.attributes.shape[1]
    weights = tf.Variable(tf.zeros([num_features, num_attributes]))
    bias = tf.Variable(tf.zeros([num_attributes]))
    optimizer = keras.optimizers.Adam(0.01)
    features = tf.constant(train_pixels, tf.float32)
    labels = tf.constant(train.attributes, tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = features @ weights + bias
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
            loss += LOGISTIC_L2 * tf.reduce_sum(tf.square(weights))
        optimizer.apply_gradients(zip(tape.gradient(loss, [weights, bias]), [weights, bias]))
        return loss

    # Full-batch Adam: the problem is convex and small, so plain full-batch steps converge.
    for _ in range(LOGISTIC_EPOCHS * 5):
        loss = step()
    logging.info("Pixel logistic regression: final training loss %.4f.", float(loss))

    probabilities = tf.sigmoid(test_pixels.astype(np.float32) @ weights.numpy() + bias.numpy())
    return _summary(metrics_lib.attribute_metrics(probabilities.numpy(), test.attributes))


def centre_box_baseline(train: CelebATable, test: CelebATable) -> dict:
    """Recall of a fixed box of the mean training face size at the image centre."""
    def normalized_boxes(table):
        sizes = image_io.image_sizes(table.wild_paths)
        return localization.xywh_pixels_to_normalized(
            table.boxes, sizes[:, 0], sizes[:, 1]
        ).numpy()

    train_boxes = normalized_boxes(train)
    height = float(np.mean(train_boxes[:, 2] - train_boxes[:, 0]))
    width = float(np.mean(train_boxes[:, 3] - train_boxes[:, 1]))
    centre_box = np.array(
        [0.5 - height / 2, 0.5 - width / 2, 0.5 + height / 2, 0.5 + width / 2], np.float32
    )
    predicted = np.tile(centre_box, (len(test), 1))
    result = metrics_lib.localization_metrics(predicted, normalized_boxes(test))
    return {"recall": result["recall"], "mean_iou": result["mean_iou"], "box": centre_box.tolist()}
