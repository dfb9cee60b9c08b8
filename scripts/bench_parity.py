"""Measure how far each exported model is from the float cascade, on the test partition.

    python scripts/bench_parity.py --model_dir=runs/demo --export_dir=/tmp/parity \
        --output_json=/tmp/parity.json

Exports the run (SavedModel and every TFLite variant) into `--export_dir`, unless
`--skip_export` is set and the export is already there, then measures on the test
images of the run's dataset:

- SavedModel vs float32 TFLite cascade: max |difference| of the probabilities and
  of the face boxes, both models on the same letterboxed canvas.
- For each cascade variant: mean accuracy and mean balanced accuracy of the 40
  attributes (threshold 0.5), the difference to float32 in points, and the mean
  IoU of its face boxes with the float32 model's boxes.
- For each ANet variant, on the face crops that the float cascade finds: mean
  accuracy and the difference to float32; for float32, the max |difference| of
  the probabilities from ANet + SVMs run in TensorFlow.
- File size and mean time per image of every TFLite model (LiteRT interpreter,
  default threads), for orientation only.

Prints a Markdown table and writes all numbers as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging
from ai_edge_litert.interpreter import Interpreter

from lnet_anet_tf import export
from lnet_anet_tf import export_data
from lnet_anet_tf import localization
from lnet_anet_tf import metrics
from lnet_anet_tf import preprocessing
from lnet_anet_tf import tflite_export
from lnet_anet_tf import trained

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Model directory of a finished training run.")
flags.DEFINE_string("export_dir", None, "Where the export is written (or already is).")
flags.DEFINE_string("data_dir", None, "Dataset; default: the one in <model_dir>/run_info.json.")
flags.DEFINE_bool("skip_export", False, "Measure the export already in --export_dir.")
flags.DEFINE_integer("max_test_images", 500, "Test images measured, spread over the partition.")
flags.DEFINE_string("output_json", None, "File for the measured numbers.")


def run_tflite(path: str, inputs: list) -> tuple[dict, float]:
    """Run a .tflite model on each input; return stacked outputs and seconds per input."""
    runner = Interpreter(model_path=path).get_signature_runner(tflite_export.SIGNATURE_KEY)
    outputs = []
    start = time.perf_counter()
    for image in inputs:
        outputs.append(runner(**{tflite_export.INPUT_NAME: image[np.newaxis]}))
    seconds = (time.perf_counter() - start) / max(len(inputs), 1)
    stacked = {key: np.concatenate([output[key] for output in outputs]) for key in outputs[0]}
    return stacked, seconds


def mean_iou(boxes: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(localization.iou(boxes, reference).numpy()))


def measure_cascade(paths: dict, saved_model, canvases, windows, labels) -> dict:
    float_outputs, _ = run_tflite(paths["cascade_float32"], canvases)
    served = saved_model.signatures["predict_images"](images=tf.constant(np.stack(canvases)))
    results = {
        "saved_model_vs_float32": {
            "max_abs_probability_difference": float(
                np.abs(served["attribute_probabilities"].numpy() - float_outputs["attribute_probabilities"]).max()
            ),
            "max_abs_face_box_difference": float(
                np.abs(served["face_box"].numpy() - float_outputs["face_box"]).max()
            ),
        },
        "variants": {},
    }
    float_boxes = preprocessing.window_to_image(float_outputs["face_box"], windows).numpy()
    float_accuracy = metrics.attribute_metrics(float_outputs["attribute_probabilities"], labels)
    for variant in tflite_export.VARIANTS:
        name = f"cascade_{variant}"
        if name not in paths:
            continue
        outputs, seconds = run_tflite(paths[name], canvases)
        scores = metrics.attribute_metrics(outputs["attribute_probabilities"], labels)
        boxes = preprocessing.window_to_image(outputs["face_box"], windows).numpy()
        results["variants"][variant] = {
            "mean_accuracy": scores["mean_accuracy"],
            "mean_balanced_accuracy": scores["mean_balanced_accuracy"],
            "accuracy_points_vs_float32": 100 * (scores["mean_accuracy"] - float_accuracy["mean_accuracy"]),
            "face_box_mean_iou_vs_float32": mean_iou(boxes, float_boxes),
            "bytes": os.path.getsize(paths[name]),
            "milliseconds_per_image": 1000 * seconds,
        }
    return results


def measure_anet(paths: dict, cascade, crops, labels) -> dict:
    float_outputs, _ = run_tflite(paths["anet_float32"], crops)
    in_tensorflow = cascade.attribute_scores_from_faces(preprocessing.normalize(np.stack(crops)))
    results = {
        "tensorflow_vs_float32": {
            "max_abs_probability_difference": float(
                np.abs(in_tensorflow["attribute_probabilities"].numpy() - float_outputs["attribute_probabilities"]).max()
            )
        },
        "variants": {},
    }
    float_accuracy = metrics.attribute_metrics(float_outputs["attribute_probabilities"], labels)
    for variant in tflite_export.VARIANTS:
        name = f"anet_{variant}"
        if name not in paths:
            continue
        outputs, seconds = run_tflite(paths[name], crops)
        scores = metrics.attribute_metrics(outputs["attribute_probabilities"], labels)
        results["variants"][variant] = {
            "mean_accuracy": scores["mean_accuracy"],
            "mean_balanced_accuracy": scores["mean_balanced_accuracy"],
            "accuracy_points_vs_float32": 100 * (scores["mean_accuracy"] - float_accuracy["mean_accuracy"]),
            "bytes": os.path.getsize(paths[name]),
            "milliseconds_per_image": 1000 * seconds,
        }
    return results


def existing_export(export_dir: str) -> dict:
    tflite_dir = os.path.join(export_dir, export.TFLITE_DIR)
    paths = {
        name[: -len(".tflite")]: os.path.join(tflite_dir, name)
        for name in os.listdir(tflite_dir)
        if name.endswith(".tflite")
    }
    versions = export.existing_versions(export.saved_model_base(export_dir))
    paths["saved_model"] = os.path.join(export.saved_model_base(export_dir), str(versions[-1]))
    return paths


def print_table(results: dict) -> None:
    parity = results["cascade"]["saved_model_vs_float32"]
    print(f"test images: {results['num_test_images']}")
    print(
        "SavedModel vs float32 TFLite cascade: max |diff| probabilities "
        f"{parity['max_abs_probability_difference']:.3g}, face boxes "
        f"{parity['max_abs_face_box_difference']:.3g}"
    )
    anet_parity = results["anet"]["tensorflow_vs_float32"]["max_abs_probability_difference"]
    print(f"ANet + SVMs in TensorFlow vs float32 TFLite ANet: max |diff| probabilities {anet_parity:.3g}")
    print()
    print("| model | variant | mean accuracy | vs float32 (points) | box IoU vs float32 | size (MB) | ms per image |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in ("cascade", "anet"):
        for variant, row in results[model]["variants"].items():
            iou = row.get("face_box_mean_iou_vs_float32")
            print(
                f"| {model} | {variant} | {row['mean_accuracy']:.4f} | "
                f"{row['accuracy_points_vs_float32']:+.2f} | "
                f"{'-' if iou is None else f'{iou:.4f}'} | {row['bytes'] / 1e6:.2f} | "
                f"{row['milliseconds_per_image']:.1f} |"
            )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    if not FLAGS.model_dir or not FLAGS.export_dir:
        raise app.UsageError("--model_dir and --export_dir are required.")
    table = export.load_table(FLAGS.model_dir, FLAGS.data_dir)
    if FLAGS.skip_export:
        paths = existing_export(FLAGS.export_dir)
    else:
        paths = export.export_all(FLAGS.model_dir, FLAGS.export_dir, table)

    cascade = trained.load_cascade(FLAGS.model_dir)
    manifest_path = os.path.join(FLAGS.export_dir, export.TFLITE_DIR, export.MANIFEST_FILENAME)
    with open(manifest_path, encoding="utf-8") as file:
        manifest = json.load(file)
    test = export_data.spread_rows(table, "test", FLAGS.max_test_images)
    test_paths = test.require("wild_paths", "Measuring parity")
    labels = test.attributes

    logging.info("Letterboxing %d test images.", len(test_paths))
    canvas_pairs = list(export_data.canvases(test_paths, manifest["canvas_side"]))
    canvases = [canvas for canvas, _ in canvas_pairs]
    windows = np.stack([window for _, window in canvas_pairs])
    logging.info("Cutting face crops with the float cascade.")
    crops = list(
        export_data.face_crops(cascade, test_paths, manifest["face_side"])["crops"].astype(np.float32)
    )

    saved_model = tf.saved_model.load(paths["saved_model"])
    results = {
        "model_dir": os.path.abspath(FLAGS.model_dir),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "num_test_images": int(len(test_paths)),
        "cascade": measure_cascade(paths, saved_model, canvases, windows, labels),
        "anet": measure_anet(paths, cascade, crops, labels),
    }
    print_table(results)
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2, sort_keys=True)
            file.write("\n")


if __name__ == "__main__":
    app.run(main)
