"""The `evaluate` stage: the trained cascade on the test partition.

Attribute accuracy, balanced accuracy and ROC AUC per attribute and their means, and the
localization recall at IoU >= 0.5 of LNet_o's and LNet_s's boxes against the
annotated face boxes of `list_bbox_celeba.txt`. This is the only place where box
labels are read.

With box labels, the attributes are also scored a second time: ANet and the SVMs
read the annotated face box of each test image instead of LNet_s's box. The
difference between the two accuracies is what localization errors cost. The
errors that remain with the annotated boxes are ANet's and the SVMs'.

    python -m lnet_anet_tf.train --model_dir=runs/demo --stages=evaluate [--data_dir=DIR]

writes `metrics.json` and `report.md` into `<model_dir>/evaluate/`. A finished
evaluation is skipped, so delete `<model_dir>/evaluate/DONE.json` to run it
again, for example after a change to this module.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from lnet_anet_tf import baselines
from lnet_anet_tf import image_io
from lnet_anet_tf import localization
from lnet_anet_tf import metrics as metrics_lib
from lnet_anet_tf import preprocessing
from lnet_anet_tf import report
from lnet_anet_tf.cascade import Cascade
from lnet_anet_tf.data.table import CelebATable
from lnet_anet_tf.training import checkpointing

METRICS_FILENAME = "metrics.json"
REPORT_FILENAME = "report.md"


def predict_files(cascade: Cascade, paths, log_every: int = 200) -> dict:
    """Run the cascade on each image file, one at a time, and stack the outputs.

    Images keep their own size: the cascade letterboxes each one itself, exactly
    as it does when serving. Returns "face_box", "head_box" (normalized [ymin, xmin,
    ymax, xmax]), "localization_score" and "attribute_probabilities" as arrays.
    """
    # One concrete function for every image size, so a new size does not retrace.
    serve = cascade.__call__.get_concrete_function(
        tf.TensorSpec([1, None, None, 3], tf.float32, name="images")
    )
    keys = ("face_box", "head_box", "localization_score", "attribute_probabilities")
    outputs = {key: [] for key in keys}
    for index, path in enumerate(paths):
        result = serve(pixel_batch(path))
        for key in keys:
            outputs[key].append(result[key].numpy()[0])
        if log_every and (index + 1) % log_every == 0:
            logging.info("Evaluated %d of %d images.", index + 1, len(paths))
    return {key: np.stack(values) for key, values in outputs.items()}


def predict_attributes_at_boxes(cascade: Cascade, paths, face_boxes) -> np.ndarray:
    """Return the attribute probabilities [N, 40] of ANet and the SVMs at given boxes.

    `face_boxes` are normalized [ymin, xmin, ymax, xmax], one per image file. They
    take the place of LNet_s's boxes. The rest is the cascade's own path: the box
    enlarged by `lnet_s_context`, the patches, ANet, the SVMs and Platt scaling.
    """
    face_boxes = np.asarray(face_boxes, np.float32)
    if face_boxes.shape != (len(paths), 4):
        raise ValueError(
            f"Invalid face_boxes shape {face_boxes.shape}: expected ({len(paths)}, 4), "
            "one normalized box per image file."
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, None, None, 3], tf.float32),
            tf.TensorSpec([1, 4], tf.float32),
        ]
    )
    def attributes_at_boxes(images, boxes):
        normalized = preprocessing.normalize(images)
        return cascade.attribute_scores_from_images(normalized, boxes)["attribute_probabilities"]

    probabilities = []
    for index, path in enumerate(paths):
        boxes = face_boxes[index : index + 1]
        probabilities.append(attributes_at_boxes(pixel_batch(path), boxes).numpy()[0])
    return np.stack(probabilities)


def pixel_batch(path) -> tf.Tensor:
    """Read one image file as a float32 batch [1, H, W, 3] of pixel values in [0, 255]."""
    return tf.cast(image_io.read_image(path), tf.float32)[tf.newaxis]


def evaluate_cascade(cascade: Cascade, test: CelebATable, train: CelebATable) -> dict:
    """Compute every metric of the report on the test rows; see the module docstring."""
    paths = test.require("wild_paths", "Evaluating the cascade on in-the-wild images")
    start = time.perf_counter()
    predictions = predict_files(cascade, paths)
    seconds = time.perf_counter() - start

    results = {
        "num_test_images": int(len(test)),
        "seconds_per_image": seconds / max(len(test), 1),
        "attributes": metrics_lib.attribute_metrics(
            predictions["attribute_probabilities"], test.attributes
        ),
    }

    if test.boxes is None:
        reason = test.missing_parts.get("boxes", "the dataset has no face boxes")
        logging.warning("Localization is not evaluated: %s.", reason)
        results["localization"] = {"unavailable": reason}
    else:
        sizes = image_io.image_sizes(paths)
        truth = localization.xywh_pixels_to_normalized(
            test.boxes, sizes[:, 0], sizes[:, 1]
        ).numpy()
        results["localization"] = {
            "lnet_o": metrics_lib.localization_metrics(predictions["head_box"], truth),
            "lnet_s": metrics_lib.localization_metrics(predictions["face_box"], truth),
        }
        results["attributes_at_annotated_boxes"] = metrics_lib.attribute_metrics(
            predict_attributes_at_boxes(cascade, paths, truth), test.attributes
        )

    results["baselines"] = baselines.run_baselines(train, test)
    return results


def write_results(results: dict, output_dir: str, *, dataset_kind: str, preset: str) -> dict:
    """Write `metrics.json` and `report.md` atomically; return their paths."""
    metrics_path = os.path.join(output_dir, METRICS_FILENAME)
    report_path = os.path.join(output_dir, REPORT_FILENAME)
    document = {"dataset": dataset_kind, "preset": preset, **results}
    checkpointing.write_text_atomic(
        metrics_path, json.dumps(document, indent=2, sort_keys=True) + "\n"
    )
    checkpointing.write_text_atomic(
        report_path, report.render(document)
    )
    return {"metrics": metrics_path, "report": report_path}


def summary_line(results: dict) -> str:
    """Return the headline numbers as one line for the log."""
    parts = [
        f"mean accuracy {results['attributes']['mean_accuracy']:.4f}",
        f"mean balanced accuracy {results['attributes']['mean_balanced_accuracy']:.4f}",
    ]
    at_boxes = results.get("attributes_at_annotated_boxes")
    if at_boxes:
        parts.append(f"mean accuracy on annotated boxes {at_boxes['mean_accuracy']:.4f}")
    for net in ("lnet_o", "lnet_s"):
        entry = results["localization"].get(net)
        if entry:
            parts.append(f"{net} recall@0.5 {entry['recall']:.4f}")
    return ", ".join(parts)

