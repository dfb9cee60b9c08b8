"""Pieces both builders share: weight decay, normalization + ReLU, float32 outputs."""

from __future__ import annotations

import keras

from lnet_anet_tf.models.normalization import LocalResponseNormalization


def weight_decay_regularizer(weight_decay: float):
    """Return the L2 kernel regularizer for `weight_decay`, or None when it is 0.

    `weight_decay` is the coefficient of the gradient term, as in Caffe and SGD
    with weight decay (gradient += weight_decay * w), so the loss term is
    weight_decay / 2 * sum(w**2).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
    if weight_decay == 0:
        return None
    return keras.regularizers.L2(weight_decay / 2)


def normalize_and_activate(
    x, normalization: str, name: str, use_lrn: bool, batch_norm_momentum: float = 0.99
):
    """Apply `normalization` and ReLU to the output of conv layer `name`.

    "batch_norm" puts batch normalization between the conv and the ReLU of every
    conv layer. "lrn" puts local response normalization after the ReLU, only where
    `use_lrn` is true (AlexNet has it after conv1 and conv2). "none" is ReLU alone.
    `batch_norm_momentum` is the moving-average momentum of the batch statistics.
    """
    if normalization == "batch_norm":
        x = keras.layers.BatchNormalization(momentum=batch_norm_momentum, name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if normalization == "lrn" and use_lrn:
        x = LocalResponseNormalization(name=f"{name}_lrn")(x)
    return x


def float32_output(x, name: str):
    """Pass `x` through a float32 identity layer, so a model output stays float32
    under the mixed_float16 policy (an identity costs no op after conversion)."""
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)
