"""Images for the TFLite export: calibration canvases, face crops and their rows.

The int8 variants calibrate activation ranges on training images, quantization-
aware training fine-tunes ANet on training faces, and the parity script measures
every variant on the test images. All of them read the same two kinds of input
that the TFLite models take: photos letterboxed into the `cascade` model's canvas,
and face crops cut where the float cascade finds the face.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from lnet_anet_tf import image_io
from lnet_anet_tf import localization
from lnet_anet_tf import preprocessing
from lnet_anet_tf import tflite_export
from lnet_anet_tf.cascade import Cascade
from lnet_anet_tf.data.table import CelebATable


def spread_rows(table: CelebATable, partition: str, max_rows: int) -> CelebATable:
    """Return at most `max_rows` rows of `partition`, evenly spread over it, in order.

    Spreading instead of taking the first rows keeps identities and attributes
    mixed when the table is sorted by identity.
    """
    rows = table.partition(partition)
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}.")
    if len(rows) <= max_rows:
        return rows
    indices = np.linspace(0, len(rows) - 1, max_rows).round().astype(np.int64)
    return rows.select(np.unique(indices))


def canvases(paths, canvas_side: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (canvas, window) for each image file, as `tflite_export.letterbox_canvas` makes them."""
    for path in paths:
        image = image_io.read_image(str(path))
        yield tflite_export.letterbox_canvas(image.numpy(), canvas_side)


def face_crops(cascade: Cascade, paths, side: int) -> dict:
    """Find the face in each image file with the float cascade and cut its face crop.

    The crop is the face box enlarged by `lnet_s_context`, the region that ANet's
    patches tile, resized to `side` x `side` from the full-resolution image.
    Returns "crops" uint8 [N, side, side, 3] (rounded to whole pixel values, as a
    client would send them) and "face_boxes" float32 [N, 4].
    """
    cut = _face_crop_function(cascade, side)
    crops, boxes = [], []
    for index, path in enumerate(paths):
        image = tf.cast(image_io.read_image(str(path)), tf.float32)[tf.newaxis]
        crop, face_box = cut(image)
        crops.append(crop.numpy()[0])
        boxes.append(face_box.numpy()[0])
        if (index + 1) % 200 == 0:
            logging.info("Cut face crops from %d of %d images.", index + 1, len(paths))
    if not crops:
        return {
            "crops": np.zeros((0, side, side, 3), np.uint8),
            "face_boxes": np.zeros((0, 4), np.float32),
        }
    return {"crops": np.stack(crops), "face_boxes": np.stack(boxes).astype(np.float32)}


def _face_crop_function(cascade: Cascade, side: int):
    """Return a tf.function: one image [1, H, W, 3] -> (uint8 face crop, face box [1, 4]).

    It runs the cascade's two localization steps, as `Cascade.__call__` does, but
    not ANet, and it cuts the crop in the same graph. Run eagerly, the crop's
    ops took longer than the whole cascade.
    """

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32, name="images")])
    def cut(images):
        normalized = preprocessing.normalize(images)
        head = cascade.localize_head(normalized)
        face_box = cascade.localize_face(normalized, head["head_box"])["face_box"]
        crop = localization.crop_and_resize(normalized, cascade.face_crop_boxes(face_box), side)
        pixels = tf.clip_by_value(tf.round((crop + 1.0) * 127.5), 0.0, 255.0)
        return tf.cast(pixels, tf.uint8), face_box

    return cut
