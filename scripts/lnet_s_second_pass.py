"""Measure LNet_s's recall when it runs a second time, on a crop about its own box.

The cascade's first LNet_s pass reads a square crop about LNet_o's head box. When
that box is too small or too large, the face fills too much or too little of the crop,
and LNet_s misses it (`scripts/localization_bands.py`). This script tries a second
pass: a square crop about LNet_s's first box, `factor` times the box's side
(`localization.square_context_box`), and LNet_s again on that crop.

The calibrated factor reads no box label. It is the inverse of the median ratio
of LNet_s's box side to its crop side on training images, so that the second
crop frames LNet_s's first box as a typical first-pass crop does. Factors given
with --factors are measured too. They show how recall depends on the factor,
but they are compared on the test labels, so choosing one of them for training
or prediction would tune a parameter on the test split.

The script reads the test images' annotated face boxes, so it is an evaluation
tool. It measures the first pass alone even when the run sets
`lnet_s_recrop_context`, and it changes nothing in the run.

    python scripts/lnet_s_second_pass.py --model_dir=runs/demo
    python scripts/lnet_s_second_pass.py --model_dir=runs/celeba --data_dir=/data/celeba
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import localization_bands
from lnet_anet_tf import evaluate
from lnet_anet_tf import image_io
from lnet_anet_tf import localization
from lnet_anet_tf import preprocessing
from lnet_anet_tf import trained

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command-line flags (only when the script runs, as in localization_bands.py)."""
    flags.DEFINE_string("model_dir", None, "A finished training run's model directory.", required=True)
    flags.DEFINE_string("data_dir", None, "CelebA folder; default: the one in <model_dir>/run_info.json.")
    flags.DEFINE_string("cache_dir", None, "Synthetic dataset cache, read instead of run_info.json's data_dir.")
    flags.DEFINE_integer(
        "calibration_images", 300, "Training images, evenly spaced, that calibrate the factor."
    )
    flags.DEFINE_list(
        "factors", ["1.5", "2.0", "2.5", "3.0"],
        "Further crop factors to measure on the test split, for comparison only.",
    )


def calibrated_factor(face_boxes: np.ndarray, crops: np.ndarray) -> float:
    """Return 1 / the median of LNet_s's box side divided by its crop side."""
    ratios = localization_bands.side(face_boxes) / localization_bands.side(crops)
    return float(1.0 / np.median(ratios))


def lnet_s_in_crops(cascade):
    """Return a function (image [1, H, W, 3] in [0, 255], crop [1, 4]) -> LNet_s's box [1, 4]."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, None, None, 3], tf.float32),
            tf.TensorSpec([1, 4], tf.float32),
        ]
    )
    def locate(images, crops):
        normalized = preprocessing.normalize(images)
        return cascade.localize_face_in_crops(normalized, crops)["face_box"]

    return locate


def second_passes(cascade, paths, face_boxes: np.ndarray, sizes: np.ndarray, factors) -> list:
    """Return LNet_s's boxes [N, 4] in square crops of each factor times `face_boxes`.

    Each image is read once for all factors. The result has one array per factor.
    """
    crops = [localization_bands.crop_boxes(cascade, face_boxes, sizes, factor) for factor in factors]
    locate = lnet_s_in_crops(cascade)
    boxes = [[] for _ in factors]
    for index, path in enumerate(paths):
        image = evaluate.pixel_batch(path)
        for factor_boxes, factor_crops in zip(boxes, crops):
            factor_boxes.append(locate(image, factor_crops[index : index + 1]).numpy()[0])
    return [np.stack(factor_boxes) for factor_boxes in boxes]


def first_pass(cascade, paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the cascade's face boxes, LNet_s's crops and the image sizes [N, 2]."""
    predictions = evaluate.predict_files(cascade, paths)
    sizes = image_io.image_sizes(paths)
    crops = localization_bands.crop_boxes(cascade, predictions["head_box"], sizes)
    return predictions["face_box"], crops, sizes


def result_row(label: str, factor: str, ious: np.ndarray) -> str:
    return f"| {label} | {factor} | {100.0 * np.mean(ious >= 0.5):.2f} | {ious.mean():.3f} |"


def main(argv):
    del argv
    config = trained.load_config(FLAGS.model_dir)
    data_dir, table = localization_bands.load_dataset(
        FLAGS.model_dir, config, FLAGS.data_dir, FLAGS.cache_dir
    )
    # The first pass is the cascade's single pass, whatever the run configured.
    config = dataclasses.replace(
        config,
        localization=dataclasses.replace(config.localization, lnet_s_recrop_context=None),
    )
    test = table.partition("test")
    if test.boxes is None:
        raise app.UsageError(f"{data_dir} has no face boxes to compare with.")
    cascade = trained.load_cascade(FLAGS.model_dir, config)

    # Calibration: training images, LNet_s's own boxes, no labels.
    train = table.partition("train")
    step = max(1, len(train) // max(1, FLAGS.calibration_images))
    train_paths = train.select(np.arange(0, len(train), step)).require("wild_paths", "Calibrating")
    factor = calibrated_factor(*first_pass(cascade, train_paths)[:2])

    test_paths = test.require("wild_paths", "Measuring the second pass")
    face_boxes, _, sizes = first_pass(cascade, test_paths)
    truth = localization.xywh_pixels_to_normalized(test.boxes, sizes[:, 0], sizes[:, 1]).numpy()

    rows = [
        "| LNet_s passes | crop factor | recall at IoU >= 0.5 (%) | mean IoU |",
        "| --- | --- | --- | --- |",
        result_row("1", "", localization.iou(face_boxes, truth).numpy()),
    ]
    labels = [(f"2, calibrated on {len(train_paths)} training images", f"{factor:.3f}")]
    labels += [("2, for comparison", other) for other in FLAGS.factors]
    factors = [factor] + [float(other) for other in FLAGS.factors]
    for (label, shown), boxes in zip(
        labels, second_passes(cascade, test_paths, face_boxes, sizes, factors)
    ):
        rows.append(result_row(label, shown, localization.iou(boxes, truth).numpy()))
    print(f"{len(test_paths)} test images of {data_dir}.\n")
    print("\n".join(rows))


if __name__ == "__main__":
    define_flags()
    app.run(main)
