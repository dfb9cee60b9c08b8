"""The `evaluate` stage: the trained cascade on the test partition.

Attribute accuracy and balanced accuracy per attribute and their means, and the
localization recall at IoU >= 0.5 of LNet_o's and LNet_s's boxes against the
annotated face boxes of `list_bbox_celeba.txt`. This is the only place where box
labels are read.

    python -m lnet_anet_tf.evaluate --model_dir=runs/demo [--data_dir=DIR]

writes `metrics.json` and `report.md` into `<model_dir>/evaluate/`.
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
        image = image_io.read_image(path)
        result = serve(tf.cast(image, tf.float32)[tf.newaxis])
        for key in keys:
            outputs[key].append(result[key].numpy()[0])
        if log_every and (index + 1) % log_every == 0:
            logging.info("Evaluated %d of %d images.", index + 1, len(paths))
    return {key: np.stack(values) for key, values in outputs.items()}


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
    for net in ("lnet_o", "lnet_s"):
        entry = results["localization"].get(net)
        if entry:
            parts.append(f"{net} recall@0.5 {entry['recall']:.4f}")
    return ", ".join(parts)

