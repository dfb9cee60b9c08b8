"""Break LNet_s's localization recall down by how much of its crop the face fills.

LNet_s finds the face inside a square crop about LNet_o's box
(`localization.square_context_box`). When LNet_o's box is too small or too large,
the face fills too much or too little of that crop. This script runs a trained
cascade on the test partition and groups the images by the true face box's side
divided by the crop's side (the geometric mean of height and width each time). For
each group it prints the number of images, LNet_s's recall at IoU >= 0.5 and its
mean IoU, as a Markdown table.

It reads the annotated face boxes, so it is an evaluation tool: use it to see where
localization fails, never to choose a training parameter.

    python scripts/localization_bands.py --model_dir=runs/demo
    python scripts/localization_bands.py --model_dir=runs/celeba --data_dir=/data/celeba
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from lnet_anet_tf import evaluate
from lnet_anet_tf import image_io
from lnet_anet_tf import localization
from lnet_anet_tf import preprocessing
from lnet_anet_tf import trained

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command-line flags.

    They are defined only when the script runs, so that tests can import it
    beside other scripts that define flags of the same names.
    """
    flags.DEFINE_string("model_dir", None, "A finished training run's model directory.", required=True)
    flags.DEFINE_string("data_dir", None, "CelebA folder; default: the one in <model_dir>/run_info.json.")
    flags.DEFINE_string("cache_dir", None, "Synthetic dataset cache, read instead of run_info.json's data_dir.")
    flags.DEFINE_list(
        "band_edges", ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "1.0"],
        "Inner edges of the face-to-crop side bands.",
    )


def crop_boxes(cascade, boxes: np.ndarray, sizes: np.ndarray, factor: float | None = None) -> np.ndarray:
    """Return LNet_s's square crops [N, 4] about `boxes` of images of `sizes` [N, 2].

    The side is `factor` times the box's, by default `lnet_o_context`: the crops
    that the cascade cuts about LNet_o's head boxes.
    """
    if factor is None:
        factor = cascade.localization_config.lnet_o_context
    windows = preprocessing.letterbox_window(sizes[:, 0], sizes[:, 1], cascade.lnet_o_size)
    aspects = preprocessing.window_aspect(tf.transpose(windows))
    return localization.square_context_box(boxes, factor, aspects).numpy()


def side(boxes: np.ndarray) -> np.ndarray:
    return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def band_table(ratios: np.ndarray, ious: np.ndarray, edges: list) -> str:
    bounds = [0.0] + edges + [np.inf]
    lines = [
        "| face side / crop side | images | LNet_s recall at IoU >= 0.5 (%) | mean IoU |",
        "| --- | --- | --- | --- |",
    ]
    for low, high in zip(bounds[:-1], bounds[1:]):
        inside = (ratios >= low) & (ratios < high)
        label = f"{low:g} to {high:g}" if np.isfinite(high) else f"{low:g} and more"
        if not inside.any():
            lines.append(f"| {label} | 0 | | |")
            continue
        recall = 100.0 * np.mean(ious[inside] >= 0.5)
        lines.append(f"| {label} | {inside.sum()} | {recall:.2f} | {ious[inside].mean():.3f} |")
    return "\n".join(lines)


def load_dataset(model_dir: str, config, data_dir: str | None, cache_dir: str | None):
    """Return (data_dir, CelebA table) of the dataset that the run in `model_dir` used.

    `data_dir` wins, then the synthetic dataset in `cache_dir`. Without either,
    the data_dir that the training job recorded in `<model_dir>/run_info.json` is
    read, so a run trained with its own --cache_dir is measured on its own images.
    A model directory without that file, or whose folder is gone, falls back to
    the synthetic dataset in the job's default cache.
    """
    if data_dir is None and cache_dir is None:
        recorded = trained.recorded_data_dir(model_dir)
        if recorded and os.path.isdir(recorded):
            data_dir = recorded
    if data_dir is None:
        from lnet_anet_tf.data import synthetic

        data_dir, _ = synthetic.ensure_default_dataset(
            cache_dir or synthetic.DEFAULT_CACHE_DIR, config.synthetic
        )
    from lnet_anet_tf.data import celeba

    return data_dir, celeba.load_celeba(data_dir)


def main(argv):
    del argv
    config = trained.load_config(FLAGS.model_dir)
    data_dir, table = load_dataset(FLAGS.model_dir, config, FLAGS.data_dir, FLAGS.cache_dir)
    test = table.partition("test")
    if test.boxes is None:
        raise app.UsageError(f"{data_dir} has no face boxes to compare with.")
    paths = test.require("wild_paths", "Breaking localization down")

    cascade = trained.load_cascade(FLAGS.model_dir, config)
    predictions = evaluate.predict_files(cascade, paths)
    sizes = image_io.image_sizes(paths)
    truth = localization.xywh_pixels_to_normalized(test.boxes, sizes[:, 0], sizes[:, 1]).numpy()

    crops = crop_boxes(cascade, predictions["head_box"], sizes)
    ratios = side(truth) / side(crops)
    ious = localization.iou(predictions["face_box"], truth).numpy()
    edges = sorted(float(edge) for edge in FLAGS.band_edges)
    print(f"{len(paths)} test images of {data_dir}; LNet_s recall "
          f"{100.0 * np.mean(ious >= 0.5):.2f}%.\n")
    print(band_table(ratios, ious, edges))


if __name__ == "__main__":
    define_flags()
    app.run(main)
