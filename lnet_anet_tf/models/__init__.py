"""Keras functional builders for LNet_o, LNet_s and ANet, and head utilities."""

from lnet_anet_tf.models.anet import build_anet
from lnet_anet_tf.models.heads import copy_trunk_weights
from lnet_anet_tf.models.heads import find_head
from lnet_anet_tf.models.heads import replace_head
from lnet_anet_tf.models.heads import trunk
from lnet_anet_tf.models.lnet import build_lnet
from lnet_anet_tf.models.normalization import LocalResponseNormalization

__all__ = [
    "LocalResponseNormalization",
    "build_anet",
    "build_lnet",
    "copy_trunk_weights",
    "find_head",
    "replace_head",
    "trunk",
]
