"""Boxes that one localization net predicts over the dataset, as the next stage's inputs.

LNet_o's head boxes decide LNet_s's training crops, and LNet_s's face boxes decide
ANet's. Both are computed with the ops the cascade uses at prediction time
(`localization.response_map`, `locate`, `square_context_box`,
`crop_box_to_image`), on every row of the table, and cached as `.npz` files in
the consuming stage's directory.
No ground-truth box is read here.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from lnet_anet_tf import localization
from lnet_anet_tf import preprocessing
from lnet_anet_tf.config import LocalizationConfig
from lnet_anet_tf.stages.context import save_arrays_atomic
from lnet_anet_tf.stages.inputs import WILD, StageInputs

BATCH_SIZE = 64


def _locate_fn(model, config: LocalizationConfig):
    blank = localization.blank_response(model)
    geometry = localization.map_geometry(model)

    @tf.function
    def locate(images):
        response = localization.response_map(model(images, training=False)["feature_map"], blank)
        return localization.locate(response, config, geometry)

    return locate


def predict_head_boxes(lnet_o, inputs: StageInputs, num_rows: int, config: LocalizationConfig) -> dict:
    """Return LNet_o's head boxes for every table row.

    The arrays are "boxes" [N, 4], "scores" [N], "valid" [N] and "crop_boxes"
    [N, 4], the square crops about the boxes that LNet_s reads
    (`localization.square_context_box`). Rows whose image was skipped as invalid
    have valid = False.
    """
    dataset = inputs.whole_images(
        np.arange(num_rows), lnet_o.input_shape[1], BATCH_SIZE, training=False, with_index=True
    )
    locate = _locate_fn(lnet_o, config)
    outputs = _empty(num_rows)
    outputs["crop_boxes"] = np.zeros([num_rows, 4], np.float32)
    for features, _ in dataset:
        boxes, scores = locate(features["image"])
        boxes = localization.ensure_min_size(
            preprocessing.window_to_image(boxes, features["window"]), config.min_box_side
        )
        crop_boxes = localization.square_context_box(
            boxes, config.lnet_o_context, preprocessing.window_aspect(features["window"])
        )
        index = features["index"].numpy()
        _store(outputs, index, boxes.numpy(), scores.numpy())
        outputs["crop_boxes"][index] = crop_boxes.numpy()
    return outputs


def predict_face_boxes(
    lnet_s, inputs: StageInputs, crop_boxes: np.ndarray, valid: np.ndarray, config: LocalizationConfig
) -> dict:
    """Return LNet_s's face boxes in image coordinates for crops of `crop_boxes` [N, 4].

    `crop_boxes` are the square crops about the head boxes that LNet_s reads, one
    per table row, and only the rows where `valid` is True are read. The outputs
    are those of `predict_head_boxes` without "crop_boxes", and other rows have
    valid = False.
    """
    rows = np.flatnonzero(valid)
    dataset = inputs.crops(
        [(WILD, rows)], crop_boxes[rows], np.zeros(len(rows), np.int32), lnet_s.input_shape[1],
        BATCH_SIZE, training=False, with_index=True,
    )
    locate = _locate_fn(lnet_s, config)
    outputs = _empty(len(crop_boxes))
    for features, _ in dataset:
        index = rows[features["index"].numpy()]
        boxes_in_crop, scores = locate(features["image"])
        boxes = localization.crop_box_to_image(
            boxes_in_crop, crop_boxes[index], config.min_box_side
        )
        _store(outputs, index, boxes.numpy(), scores.numpy())
    return outputs


def recrop_boxes(face_boxes: np.ndarray, head_crop_boxes: np.ndarray, factor: float) -> np.ndarray:
    """Return the square crops [N, 4] about LNet_s's first boxes for its second pass.

    They are `Cascade.face_recrop_boxes`. The image's aspect ratio is read from
    the head crops, which `square_context_box` made square in pixels with the
    aspect of the image's letterbox window, as the cascade's crops are.
    """
    heights = head_crop_boxes[:, 2] - head_crop_boxes[:, 0]
    widths = head_crop_boxes[:, 3] - head_crop_boxes[:, 1]
    # Rows of skipped images have empty crops; any aspect serves them.
    aspects = np.where(heights > 0, widths / np.where(heights > 0, heights, 1.0), 1.0)
    return localization.square_context_box(face_boxes, factor, aspects).numpy()


def average_passes(passes: list) -> dict:
    """Average the boxes and scores of several `predict_face_boxes` outputs.

    They are `Cascade.localize_face`'s second pass at several crop scales. A row
    is valid only where every pass read it.
    """
    valid = np.logical_and.reduce([found["valid"] for found in passes])
    return {
        "boxes": np.mean([found["boxes"] for found in passes], axis=0).astype(np.float32),
        "scores": np.mean([found["scores"] for found in passes], axis=0).astype(np.float32),
        "valid": valid,
    }


def _empty(size: int) -> dict:
    return {
        "boxes": np.zeros([size, 4], np.float32),
        "scores": np.zeros([size], np.float32),
        "valid": np.zeros([size], bool),
    }


def _store(outputs: dict, index, boxes, scores) -> None:
    outputs["boxes"][index] = boxes
    outputs["scores"][index] = scores
    outputs["valid"][index] = True


def cached(path: str, compute, required: tuple = ()) -> dict:
    """Load the arrays at `path`, or compute them with `compute()` and save them.

    A file that lacks one of the `required` arrays was written by an earlier
    version of this code and is computed again.
    """
    if os.path.exists(path):
        with np.load(path) as arrays:
            missing = sorted(set(required) - set(arrays.files))
            if not missing:
                logging.info("Loaded cached boxes from %s.", path)
                return {name: arrays[name] for name in arrays.files}
        logging.warning("%s lacks %s, so the boxes are computed again.", path, ", ".join(missing))
    outputs = compute()
    save_arrays_atomic(path, **outputs)
    logging.info(
        "Saved %d boxes (%d images skipped as invalid) to %s.",
        int(outputs["valid"].sum()), int((~outputs["valid"]).sum()), path,
    )
    return outputs
