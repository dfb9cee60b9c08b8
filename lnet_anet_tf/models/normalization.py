"""Local response normalization and the choice between LRN, batch norm and none."""

from __future__ import annotations

import keras
import tensorflow as tf

NORMALIZATIONS = ("lrn", "batch_norm", "none")


@keras.saving.register_keras_serializable(package="lnet_anet_tf")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels, as in AlexNet.

    Computes `x / (bias + alpha * sum(x**2 over 2 * depth_radius + 1 channels))**beta`
    with `tf.nn.local_response_normalization`, which TFLite converts to its builtin
    LOCAL_RESPONSE_NORMALIZATION. That builtin has no int8 kernel: a conversion
    with TFLITE_BUILTINS_INT8 (TensorFlow 2.21) keeps it in float32 behind a
    DEQUANTIZE, so use "batch_norm" for an all-int8 model. The defaults are
    AlexNet's Caffe settings (local_size 5, alpha 1e-4, beta 0.75, k 1). Caffe
    divides alpha by local_size, so alpha here is 1e-4 / 5.
    """

    def __init__(self, depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        return tf.nn.local_response_normalization(
            inputs,
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth_radius": self.depth_radius,
                "bias": self.bias,
                "alpha": self.alpha,
                "beta": self.beta,
            }
        )
        return config


def validate_normalization(normalization: str) -> None:
    """Raise ValueError unless `normalization` is one of NORMALIZATIONS."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Invalid normalization {normalization!r}; expected one of {NORMALIZATIONS}."
        )
