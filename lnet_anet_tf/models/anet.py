"""ANet: the attribute net, with a locally shared and a locally connected conv layer.

Layers (`paper` preset, 96x96 face input; every conv is followed by batch
normalization and ReLU, pools are 2x2 max pools with stride 2, no padding):

    conv1  64@5x5, shared over the whole map     -> 92x92, pool -> 46x46
    conv2  96@3x3, shared over the whole map     -> 44x44, pool -> 22x22
    conv3 128@3x3, shared in 2x2 regions         -> 20x20 ("locally shared",
          10x10 regions), pool -> 10x10
    conv4 160@3x3, unshared                      -> 8x8 ("feature_map",
          locally connected)
    fc5 512 ("features", ReLU), dropout, head

Liu et al. (ICCV 2015) give ANet four conv layers whose upper layers share
filters only locally, followed by fully connected layers, a design that resembles
the DeepID2 face identification nets. The reason for local filters is that a
face crop puts the eyes, nose and mouth at roughly fixed places, so each place
can learn filters of its own. The layer widths, kernel sizes, 2x2 share
regions, 96 px input and 512-unit feature layer are this project's choice,
sized so that the locally connected conv4 still has an 8x8 output.

Parameters with the `paper` preset (batch normalization, so no conv has a bias;
counts include the batch norm moving statistics): the trunk up to fc5 has
28,160,960, of which conv3 has 11,059,200 and conv4 11,796,480; the head adds
512 * n + n, with the 10,177 CelebA identities 5,220,801, so 33,381,761 in all.

The `demo` preset keeps the layer sequence with widths 32, 48, 64, 64, a 48 px
input, no pooling after conv3 (conv4 maps 8x8 to 6x6) and a 128-unit feature
layer.
"""

from __future__ import annotations

import keras

from lnet_anet_tf.config import ANetConfig
from lnet_anet_tf.layers import LocallyConnected2D
from lnet_anet_tf.models.blocks import float32_output
from lnet_anet_tf.models.blocks import normalize_and_activate
from lnet_anet_tf.models.blocks import weight_decay_regularizer
from lnet_anet_tf.models.heads import add_head
from lnet_anet_tf.models.normalization import validate_normalization

# With "lrn", the first two conv layers are normalized, as in AlexNet.
_LRN_LAYERS = 2


def build_anet(
    config: ANetConfig,
    num_outputs: int,
    head_name: str = "identities",
    name: str = "anet",
) -> keras.Model:
    """Build ANet as a functional model.

    Input: float32 face crops in [-1, 1], [batch, input_size, input_size, 3].
    Outputs, all float32 under any dtype policy:
    - "logits" [batch, num_outputs], from a Dense head named `head_name`;
    - "feature_map", the last conv layer's output after ReLU;
    - "features", the fully connected feature vector that the attribute SVMs read.
    """
    _validate(config)
    regularizer = weight_decay_regularizer(config.weight_decay)
    images = keras.Input((config.input_size, config.input_size, 3), name="images")

    x = images
    num_conv = len(config.conv_filters)
    layer_specs = zip(
        config.conv_filters, config.conv_kernel_sizes, config.share_sizes, config.pool_after
    )
    for index, (filters, kernel_size, share_size, pool) in enumerate(layer_specs, start=1):
        conv_name = f"conv{index}"
        x = _conv(x, filters, kernel_size, share_size, config, regularizer, conv_name)
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
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{index}")(x)

    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(
        config.feature_units,
        activation="relu",
        kernel_regularizer=regularizer,
        name=f"fc{num_conv + 1}",
    )(x)
    features = float32_output(x, "features")
    x = keras.layers.Dropout(config.dropout_rate, name=f"fc{num_conv + 1}_dropout")(x)

    logits = add_head(x, num_outputs, head_name, kernel_regularizer=regularizer)
    outputs = {"logits": logits, "feature_map": feature_map, "features": features}
    return keras.Model(images, outputs, name=name)


def _conv(x, filters, kernel_size, share_size, config, regularizer, name):
    # share_size None is an ordinary convolution, which Conv2D runs fastest.
    use_bias = config.normalization != "batch_norm"
    if share_size is None:
        layer = keras.layers.Conv2D(
            filters, kernel_size, use_bias=use_bias, kernel_regularizer=regularizer, name=name
        )
    else:
        layer = LocallyConnected2D(
            filters,
            kernel_size,
            share_size=tuple(share_size),
            use_bias=use_bias,
            kernel_regularizer=regularizer,
            name=name,
        )
    return layer(x)


def _validate(config: ANetConfig) -> None:
    validate_normalization(config.normalization)
    lengths = {
        "conv_filters": len(config.conv_filters),
        "conv_kernel_sizes": len(config.conv_kernel_sizes),
        "share_sizes": len(config.share_sizes),
        "pool_after": len(config.pool_after),
    }
    if len(set(lengths.values())) != 1 or lengths["conv_filters"] == 0:
        raise ValueError(
            f"ANetConfig needs one entry per conv layer in each of {sorted(lengths)}, "
            f"got lengths {lengths}."
        )
