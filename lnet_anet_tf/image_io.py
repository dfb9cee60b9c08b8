"""Eager reads of single image files, for evaluation and baselines."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_JPEG_MAGIC = b"\xff\xd8\xff"


def read_image(path: str) -> tf.Tensor:
    """Decode an image file to uint8 [height, width, 3], naming the file on failure."""
    try:
        contents = tf.io.read_file(path)
        return tf.io.decode_image(contents, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise ValueError(
            f"Cannot decode image {path}: {error.message}. Replace or remove the file, "
            "or run with --on_bad_example=skip to leave it out."
        ) from None


def image_sizes(paths) -> np.ndarray:
    """Return [N, 2] (height, width) of image files; JPEG sizes come from the header."""
    sizes = []
    for path in paths:
        with open(path, "rb") as file:
            is_jpeg = file.read(3) == _JPEG_MAGIC
        if is_jpeg:
            shape = tf.image.extract_jpeg_shape(tf.io.read_file(path))
        else:
            shape = tf.shape(read_image(path))
        sizes.append(shape.numpy()[:2])
    return np.asarray(sizes, np.int64).reshape(-1, 2)
