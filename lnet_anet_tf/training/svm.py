"""One linear SVM per attribute on feature vectors, and Platt scaling of its scores.

The SVMs train as one stage of the distributed loop: a linear layer with K outputs,
labels mapped from {0, 1} to {-1, +1}, and per attribute the primal objective

    l2 / 2 * ||w_k||^2 + mean_i loss(y_ik * (x_i . w_k + b_k)),

with loss the squared hinge max(0, 1 - m)^2 or the hinge max(0, 1 - m). The
attributes share no parameters, so the sum of the K objectives is minimised at
once. The features are standardised with the training mean and standard
deviation, and that transform is folded into the returned weights and bias, so
inference is `features @ weights + bias`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from lnet_anet_tf.config import SVMConfig
from lnet_anet_tf.training import loop
from lnet_anet_tf.training import strategy as strategy_lib

LOSSES = ("squared_hinge", "hinge")


@dataclasses.dataclass(frozen=True)
class LinearSVM:
    """Linear decision functions `features @ weights + bias`, one column per attribute."""

    weights: np.ndarray  # [F, K] float32
    bias: np.ndarray  # [K] float32

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """Return the scores [N, K]; a positive score predicts the attribute."""
        return np.asarray(features, np.float32) @ self.weights + self.bias


def train_svm(
    features: np.ndarray,
    labels: np.ndarray,
    config: SVMConfig,
    *,
    model_dir: str,
    stage_name: str = "svm",
    strategy: tf.distribute.Strategy | None = None,
    loss: str = "squared_hinge",
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[LinearSVM, loop.StageResult]:
    """Train one linear SVM per column of `labels` and return it with the stage result.

    `features` is [N, F] and `labels` is [N, K] with values 0 or 1. Training is the
    stage `model_dir/<stage_name>` of `loop.fit`, so it resumes after a kill and is
    skipped once finished. The optimizer is Adam with `config.learning_rate`
    decayed to zero by a cosine schedule over `config.epochs` epochs.
    """
    strategy = strategy or tf.distribute.get_strategy()
    features, labels = _check_inputs(features, labels)
    if loss not in LOSSES:
        raise ValueError(f"Invalid SVM loss {loss!r}; expected one of {', '.join(LOSSES)}.")

    mean, std = _standardization(features)
    standardized = ((features - mean) / std).astype(np.float32)
    targets = (2.0 * labels - 1.0).astype(np.float32)

    global_batch_size, steps_per_epoch = _batching(len(features), config.batch_size, strategy)
    with strategy.scope():
        model = _linear_model(features.shape[1], labels.shape[1], config.l2)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch
        )
        optimizer = keras.optimizers.Adam(schedule)

    result = loop.fit(
        stage_name=stage_name,
        model=model,
        loss_fn=_loss_fn(loss),
        metrics_fn=_accuracy,
        dataset_fn=_dataset_fn(standardized, targets, global_batch_size, seed),
        global_batch_size=global_batch_size,
        steps_per_epoch=steps_per_epoch,
        epochs=config.epochs,
        optimizer=optimizer,
        model_dir=model_dir,
        strategy=strategy,
        progress=progress,
    )

    kernel, bias = (np.asarray(weight, np.float64) for weight in model.get_weights())
    return _fold_standardization(kernel, bias, mean, std), result


def _check_inputs(features, labels):
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 2 or len(features) != len(labels):
        raise ValueError(
            f"Expected features [N, F] and labels [N, K] with the same N; got shapes "
            f"{features.shape} and {labels.shape}."
        )
    if not np.all(np.isfinite(features)):
        row, column = np.argwhere(~np.isfinite(features))[0]
        raise ValueError(
            f"Features contain {features[row, column].item()} at row {row}, column {column}; "
            "SVM features must be finite."
        )
    invalid = (labels != 0) & (labels != 1)
    if invalid.any():
        row, column = np.argwhere(invalid)[0]
        raise ValueError(
            f"SVM labels must be 0 or 1; found {labels[row, column].item()!r} at row {row}, "
            f"column {column}. Map CelebA's -1 labels to 0 first."
        )
    return features.astype(np.float64), labels.astype(np.float64)


def _standardization(features):
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    # A constant feature carries no information; a unit std leaves it centred at 0.
    std = np.where(std > 1e-12, std, 1.0)
    return mean, std


def _fold_standardization(kernel, bias, mean, std) -> LinearSVM:
    # ((x - mean) / std) @ W + b == x @ (W / std[:, None]) + (b - (mean / std) @ W)
    weights = kernel / std[:, None]
    folded_bias = bias - (mean / std) @ kernel
    return LinearSVM(weights=weights.astype(np.float32), bias=folded_bias.astype(np.float32))


def _batching(num_examples, batch_size, strategy):
    replicas = strategy.num_replicas_in_sync
    global_batch_size = min(batch_size, num_examples) // replicas * replicas
    if global_batch_size == 0:
        raise ValueError(
            f"{num_examples} training examples are fewer than the {replicas} replicas "
            "of the distribution strategy."
        )
    # Each worker's input pipeline reads its own shard of the examples and feeds
    # its local replicas, so the smallest shard bounds the steps per epoch.
    pipelines = strategy_lib.num_workers(strategy)
    steps_per_epoch = (num_examples // pipelines) // (global_batch_size // pipelines)
    return global_batch_size, steps_per_epoch


def _linear_model(num_features, num_attributes, l2):
    # The kernel regularizer adds l2 * sum(w^2); halving l2 gives l2 / 2 * ||w||^2.
    # The SVMs always compute in float32, even under a mixed precision policy.
    return keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Dense(
                num_attributes,
                kernel_initializer="zeros",
                kernel_regularizer=keras.regularizers.L2(l2 / 2),
                dtype="float32",
            ),
        ]
    )


def _loss_fn(loss):
    def svm_loss(targets, scores):
        margins = tf.nn.relu(1.0 - targets * scores)
        if loss == "squared_hinge":
            margins = tf.square(margins)
        # A sum over attributes keeps each attribute's objective a standard SVM.
        return tf.reduce_sum(margins, axis=-1)

    return svm_loss


def _accuracy(targets, scores):
    correct = tf.cast(tf.equal(tf.sign(scores), targets), tf.float32)
    return {"accuracy": tf.reduce_mean(correct, axis=-1)}


def _dataset_fn(features, targets, global_batch_size, seed):
    def dataset_fn(input_context, epoch):
        dataset = tf.data.Dataset.from_tensor_slices((features, targets))
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        dataset = dataset.shuffle(len(features), seed=seed * 1_000_003 + epoch)
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
        return dataset.batch(batch_size, drop_remainder=True)

    return dataset_fn


def fit_platt(scores: np.ndarray, labels: np.ndarray, max_iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Fit Platt scaling per attribute: P(label = 1 | score) = sigmoid(scale * score + offset).

    `scores` and `labels` are [N, K] and should come from data the SVM did not train
    on. Each column is a logistic regression with Platt's smoothed targets
    (N+ + 1) / (N+ + 2) and 1 / (N- + 2). Newton's method with a backtracking line
    search solves it, the procedure of Lin, Lin and Weng, "A note on Platt's
    probabilistic outputs for support vector machines".
    Returns `(scale [K], offset [K])` as float32.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(
            f"Expected scores and labels of the same shape [N, K]; got {scores.shape} "
            f"and {labels.shape}."
        )
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("Platt scaling labels must be 0 or 1.")

    scales, offsets = [], []
    for column in range(scores.shape[1]):
        scale, offset = _fit_platt_column(scores[:, column], labels[:, column], max_iterations)
        scales.append(scale)
        offsets.append(offset)
    return np.asarray(scales, np.float32), np.asarray(offsets, np.float32)


def platt_probabilities(scores: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Return sigmoid(scale * scores + offset), the calibrated probabilities [N, K]."""
    logits = np.asarray(scores, np.float64) * scale + offset
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _fit_platt_column(scores, labels, max_iterations):
    positives = float(labels.sum())
    negatives = len(labels) - positives
    targets = np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    params = np.array([0.0, np.log((positives + 1) / (negatives + 1))])
    design = np.stack([scores, np.ones_like(scores)], axis=1)

    def objective(p):
        logits = design @ p
        # Cross-entropy with soft targets: t * softplus(-z) + (1 - t) * softplus(z).
        return np.sum(targets * np.logaddexp(0, -logits) + (1 - targets) * np.logaddexp(0, logits))

    value = objective(params)
    for _ in range(max_iterations):
        probabilities = 1.0 / (1.0 + np.exp(-(design @ params)))
        gradient = design.T @ (probabilities - targets)
        if np.max(np.abs(gradient)) < 1e-8 * len(scores):
            break
        weights = probabilities * (1 - probabilities)
        hessian = design.T @ (design * weights[:, None]) + 1e-12 * np.eye(2)
        direction = -np.linalg.solve(hessian, gradient)

        # Backtracking (Armijo) line search keeps Newton's method from overshooting.
        step = 1.0
        while step > 1e-10:
            candidate = params + step * direction
            candidate_value = objective(candidate)
            if candidate_value <= value + 1e-4 * step * gradient @ direction:
                break
            step /= 2
        else:
            break
        params, value = candidate, candidate_value
    return params[0], params[1]
