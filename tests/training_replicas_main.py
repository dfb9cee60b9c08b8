"""Run `evaluate` and `predict` on two logical CPU replicas and print the results.

The test compares them with plain model calls on the whole dataset. It runs this
file as a subprocess because logical devices must be configured before TensorFlow
initialises.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from lnet_anet_tf import training  # noqa: E402


def main():
    training.configure_logical_cpus(2)
    strategy = training.make_strategy("mirrored")
    training.enable_determinism(0)

    import tensorflow as tf
    import training_fixtures as fixtures

    with strategy.scope():
        model = fixtures.make_model(batch_norm=True, dropout=0.25)
    # 11 examples in per-replica batches of 2: the last step has a partial batch
    # on one replica and an empty one on the other.
    features, labels = fixtures.make_data(11, seed=4)

    def dataset_fn(input_context):
        dataset = tf.data.Dataset.from_tensor_slices((features, labels))
        return dataset.batch(2)

    outputs = training.predict(model, dataset_fn, strategy=strategy)
    metrics = training.evaluate(
        model, fixtures.loss_fn, dataset_fn, strategy=strategy, metrics_fn=fixtures.metrics_fn
    )

    expected = model(features, training=False).numpy()
    expected_loss = fixtures.loss_fn(labels, expected).numpy().mean()
    expected_accuracy = fixtures.metrics_fn(labels, expected)["accuracy"].numpy().mean()
    json.dump(
        {
            "replicas": strategy.num_replicas_in_sync,
            "predict_shape": list(outputs.shape),
            "predict_max_error": float(np.abs(outputs - expected).max()),
            "loss": metrics["loss"],
            "expected_loss": float(expected_loss),
            "accuracy": metrics["accuracy"],
            "expected_accuracy": float(expected_accuracy),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
