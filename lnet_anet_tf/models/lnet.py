"""LNet_o and LNet_s: the AlexNet-like localization nets.

Layers (`paper` preset, 227x227 input; every conv is followed by ReLU):

    conv1 96@11x11 stride 4, valid  -> 55x55, LRN, max pool 3x3/2 -> 27x27
    conv2 256@5x5, same             -> 27x27, LRN, max pool 3x3/2 -> 13x13
    conv3 384@3x3, same             -> 13x13
    conv4 384@3x3, same             -> 13x13
    conv5 256@3x3, same             -> 13x13 ("feature_map"), max pool 3x3/2 -> 6x6
    fc6 4096, dropout; fc7 4096, dropout; head

The paddings (conv1 none, conv2 2, conv3-5 1) are AlexNet's, and LRN uses
AlexNet's Caffe settings. AlexNet's two-GPU filter groups in conv2, conv4 and
conv5 are not reproduced, so every filter reads all input channels.

Parameters with the `paper` preset (LRN, so every conv has a bias): conv1-conv5
3,747,200, fc6 37,752,832, fc7 16,781,312, the head 4096 * n + n; with the 40
attributes as head, 58,445,224 in all.

The `demo` preset keeps the layer sequence with fewer filters (32, 64, 96, 96,
64), a 5x5 stride-2 conv1, batch normalization in place of LRN, no pooling after
conv5 and 256-unit fully connected layers, so that a 96x96 input still gives a
10x10 feature map (1,963,272 parameters with a 40-attribute head).
"""

from __future__ import annotations

import keras

from lnet_anet_tf.config import LNetConfig
from lnet_anet_tf.models.blocks import float32_output
from lnet_anet_tf.models.blocks import normalize_and_activate
from lnet_anet_tf.models.blocks import weight_decay_regularizer
from lnet_anet_tf.models.heads import add_head
from lnet_anet_tf.models.normalization import validate_normalization

# AlexNet normalizes the responses of its first two conv layers only.
_LRN_LAYERS = 2


def build_lnet(
    config: LNetConfig,
    num_outputs: int,
    head_name: str = "attributes",
    name: str = "lnet_o",
) -> keras.Model:
    """Build an LNet as a functional model.

    Input: float32 images in [-1, 1], [batch, input_size, input_size, 3].
    Outputs: "logits" [batch, num_outputs] from a Dense head named `head_name`,
    and "feature_map", the last conv layer's output after ReLU, before pooling.
    Both are float32 under any dtype policy.
    """
    _validate(config)
    regularizer = weight_decay_regularizer(config.weight_decay)
    images = keras.Input((config.input_size, config.input_size, 3), name="images")

    x = images
    num_conv = len(config.conv_filters)
    layer_specs = zip(
        config.conv_filters, config.conv_kernel_sizes, config.conv_strides, config.pool_after
    )
    for index, (filters, kernel_size, stride, pool) in enumerate(layer_specs, start=1):
        conv_name = f"conv{index}"
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding="valid" if index == 1 else "same",
            use_bias=config.normalization != "batch_norm",
            kernel_regularizer=regularizer,
            name=conv_name,
        )(x)
        x = normalize_and_activate(
            x,
            config.normalization,
            conv_name,
            use_lrn=index <= _LRN_LAYERS,
            batch_norm_momentum=config.batch_norm_momentum,
        )
        if index == num_conv:
            feature_map = float32_output(x, "feature_map")
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"pool{index}")(x)

    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(config.fc_units, start=num_conv + 1):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"fc{index}"
        )(x)
        x = keras.layers.Dropout(config.dropout_rate, name=f"fc{index}_dropout")(x)

    logits = add_head(x, num_outputs, head_name, kernel_regularizer=regularizer)
    return keras.Model(images, {"logits": logits, "feature_map": feature_map}, name=name)


def _validate(config: LNetConfig) -> None:
    validate_normalization(config.normalization)
    lengths = {
        "conv_filters": len(config.conv_filters),
        "conv_kernel_sizes": len(config.conv_kernel_sizes),
        "conv_strides": len(config.conv_strides),
        "pool_after": len(config.pool_after),
    }
    if len(set(lengths.values())) != 1 or lengths["conv_filters"] == 0:
        raise ValueError(
            f"LNetConfig needs one entry per conv layer in each of {sorted(lengths)}, "
            f"got lengths {lengths}."
        )
