"""Image preprocessing shared by the input pipelines, the cascade and the exports.

Every op here is a TFLite builtin (RESIZE_BILINEAR, PAD, arithmetic), so the same
code runs in training, in the SavedModel and inside a converted TFLite model.
"""

from __future__ import annotations

import tensorflow as tf


def normalize(images: tf.Tensor) -> tf.Tensor:
    """Map float pixel values in [0, 255] to [-1, 1]."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def letterbox(images: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize a batch to `size` x `size`, keeping the aspect ratio, and pad the rest.

    `images` is float [batch, height, width, channels], already normalized, so the
    zero padding is mid-gray. Returns the padded batch and the content window
    [ymin, xmin, ymax, xmax] that the image occupies, normalized to the output side.
    The window is the same for every image because a batch shares one shape.
    """
    shape = tf.shape(images)
    new_height, new_width, pad_top, pad_left = _letterbox_layout(shape[1], shape[2], size)
    resized = tf.image.resize(images, tf.stack([new_height, new_width]), method="bilinear")

    paddings = [
        [0, 0],
        [pad_top, size - new_height - pad_top],
        [pad_left, size - new_width - pad_left],
        [0, 0],
    ]
    padded = tf.pad(resized, paddings)
    padded = tf.ensure_shape(padded, [None, size, size, None])
    return padded, _window(new_height, new_width, pad_top, pad_left, size)


def letterbox_window(height: tf.Tensor, width: tf.Tensor, size: int) -> tf.Tensor:
    """Return the content window that `letterbox` gives an image of this size."""
    return _window(*_letterbox_layout(height, width, size), size)


def window_aspect(window: tf.Tensor) -> tf.Tensor:
    """Return the image's height / width in pixels from its [..., 4] content window.

    The window's sides are whole pixels of the letterboxed square, so the ratio is
    the image's to within a pixel of that square.
    """
    window = tf.convert_to_tensor(window, tf.float32)
    top, left, bottom, right = tf.unstack(window, axis=-1)
    return (bottom - top) / (right - left)


def _letterbox_layout(height: tf.Tensor, width: tf.Tensor, size: int) -> tuple:
    """Return the resized height and width and the top and left padding, in pixels."""
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    scale = float(size) / tf.maximum(height, width)

    # Clamp to at least one pixel so that a 1-pixel-wide image stays valid.
    new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), 1)
    new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), 1)
    new_height = tf.minimum(new_height, size)
    new_width = tf.minimum(new_width, size)
    return new_height, new_width, (size - new_height) // 2, (size - new_width) // 2


def _window(new_height, new_width, pad_top, pad_left, size: int) -> tf.Tensor:
    corners = tf.stack([pad_top, pad_left, pad_top + new_height, pad_left + new_width])
    return tf.cast(corners, tf.float32) / float(size)


def window_to_image(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Map normalized boxes in letterboxed coordinates to normalized image coordinates.

    `boxes` is [..., 4] as [ymin, xmin, ymax, xmax]; `window` is `letterbox`'s content
    window [4], or one window per box [..., 4] when images were letterboxed one by
    one. The result is clipped to [0, 1].
    """
    origin, extent = _window_origin_and_extent(window)
    return tf.clip_by_value((boxes - origin) / extent, 0.0, 1.0)


def image_to_window(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Inverse of `window_to_image`: image-normalized boxes to letterboxed coordinates."""
    origin, extent = _window_origin_and_extent(window)
    return boxes * extent + origin


def _window_origin_and_extent(window: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    window = tf.convert_to_tensor(window, tf.float32)
    top, left, bottom, right = tf.unstack(window, axis=-1)
    origin = tf.stack([top, left, top, left], axis=-1)
    extent = tf.stack([bottom - top, right - left, bottom - top, right - left], axis=-1)
    return origin, extent
