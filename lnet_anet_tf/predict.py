"""Predict the face box and the 40 attributes of photos with an exported model.

    python -m lnet_anet_tf.predict photo.jpg photos/ --model=export/demo/saved_model/lnet_anet
    python -m lnet_anet_tf.predict photo.jpg --model=export/demo/tflite/cascade_int8.tflite \
        --visualize=out/

`--model` is a SavedModel version folder, the `saved_model/lnet_anet` folder
above the versions (the highest version is used), or a `.tflite` file. A folder
argument stands for every file below it, in sorted order.

Each photo gives one JSON line on stdout:

    {"path": ..., "image_size": {"height": H, "width": W},
     "box": {"x_1": ..., "y_1": ..., "width": ..., "height": ...},
     "box_normalized": [ymin, xmin, ymax, xmax], "localization_score": ...,
     "attributes": {"5_o_Clock_Shadow": 0.12, ...}, "present": ["Smiling", ...]}

`box` is the face box in whole pixels, in the format of CelebA's
`list_bbox_celeba.txt`: top-left corner, width and height. `box_normalized` is
the same box as fractions of the image height and width. `present` lists the
attributes whose probability is at least `--threshold`.

An `anet_*.tflite` model reads each photo as a face crop (see `tflite_export`):
its box is the whole photo and its localization score is null.

A file that cannot be read as an image gets one line on stderr with its path
and the reason. The other files are still processed, and the exit code is 1.

`--visualize=OUT_DIR` writes `<file name>.png` per photo (see `visualize`), with
`-2`, `-3` and so on after the file name when photos in different folders share
it. The heatmap is LNet_o's response map: the SavedModel's `predict_details`
signature and the `cascade` TFLite models return it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from lnet_anet_tf import attributes
from lnet_anet_tf import tflite_export
from lnet_anet_tf import visualize
from lnet_anet_tf.data import images as images_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command-line flags.

    Only the command line calls this, so that a program that imports this module
    and has flags of the same names does not define them twice.
    """
    flags.DEFINE_string(
        "model", None,
        "SavedModel version folder, the folder of numbered versions (the highest is "
        "used), or a .tflite file.",
    )
    flags.DEFINE_string("visualize", None, "Folder for one annotated PNG per photo.")
    flags.DEFINE_float(
        "threshold", 0.5, "Probability at or above which an attribute is listed as present."
    )
    flags.DEFINE_integer("top_k", 5, "Attributes written on each --visualize picture.")
    flags.DEFINE_integer(
        "max_pixels", images_lib.DEFAULT_MAX_PIXELS,
        "Photos with more pixels than this are rejected without being decoded.",
    )


class InvalidImageError(ValueError):
    """A file that is not a readable image; the message names the file and the reason."""


def _reject_export_folder(path: str) -> None:
    """Raise ValueError naming the models inside `path` when it is an export folder."""
    from lnet_anet_tf import export  # Only this error needs the export's layout.

    saved_model_base = export.saved_model_base(path)
    tflite_dir = os.path.join(path, export.TFLITE_DIR)
    if os.path.isdir(saved_model_base) or os.path.isdir(tflite_dir):
        example = os.path.join(tflite_dir, tflite_export.model_filename("cascade", "int8"))
        raise ValueError(
            f"--model={path} is an export folder, which contains several models. Pass "
            f"its SavedModel, --model={saved_model_base}, or one of its TFLite files, "
            f"for example --model={example}."
        )


def resolve_model_path(path: str) -> str:
    """Return the .tflite file or SavedModel version folder that `path` names."""
    if os.path.isfile(path):
        if not path.endswith(".tflite"):
            raise ValueError(
                f"--model={path} is a file but not a .tflite model. Pass a .tflite file "
                "or a SavedModel folder."
            )
        return path
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isdir(path):
        versions = sorted(
            int(name)
            for name in os.listdir(path)
            if name.isdigit() and os.path.exists(os.path.join(path, name, "saved_model.pb"))
        )
        if versions:
            return os.path.join(path, str(versions[-1]))
        _reject_export_folder(path)
    raise ValueError(
        f"--model={path} is neither a .tflite file, a SavedModel folder (with "
        "saved_model.pb) nor a folder of numbered SavedModel versions. Run "
        "`python -m lnet_anet_tf.export` to write one."
    )


class SavedModelPredictor:
    """Runs the SavedModel's `predict_details` signature on a file's bytes."""

    def __init__(self, path: str):
        self.model = tf.saved_model.load(path)
        self.details = self.model.signatures["predict_details"]
        names = self.model.signatures["attribute_names"]()["attribute_names"].numpy()
        self.names = [name.decode("utf-8") for name in names]

    def predict(self, contents: bytes, image: np.ndarray) -> Optional[dict]:
        """Return the outputs for one photo, or None when the model marks it invalid."""
        outputs = self.details(image_bytes=tf.constant([contents]))
        if not bool(outputs["valid"][0]):
            return None
        result = {key: value.numpy()[0] for key, value in outputs.items()}
        result["response_window"] = None
        return result


class TFLitePredictor:
    """Runs a `cascade_*` or `anet_*` TFLite model with the LiteRT interpreter."""

    def __init__(self, path: str):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path)
        self.runner = self.interpreter.get_signature_runner(tflite_export.SIGNATURE_KEY)
        input_details = self.runner.get_input_details()[tflite_export.INPUT_NAME]
        self.side = int(input_details["shape"][1])
        self.is_cascade = "face_box" in self.runner.get_output_details()
        self.names = _read_labels(os.path.join(os.path.dirname(path), tflite_export.LABELS_FILENAME))

    def predict(self, contents: bytes, image: np.ndarray) -> Optional[dict]:
        if self.is_cascade:
            canvas, window = tflite_export.letterbox_canvas(image, self.side)
            outputs = self.runner(**{tflite_export.INPUT_NAME: canvas[np.newaxis]})
            result = {key: value[0] for key, value in outputs.items()}
            result["face_box"] = tflite_export.canvas_box_to_image(result["face_box"], window)
            result["head_box"] = tflite_export.canvas_box_to_image(result["head_box"], window)
            result["response_window"] = window
            return result

        face = tf.image.resize(image[np.newaxis].astype(np.float32), [self.side, self.side])
        outputs = self.runner(**{tflite_export.INPUT_NAME: face.numpy()})
        return {
            "attribute_probabilities": outputs["attribute_probabilities"][0],
            "face_box": np.array([0.0, 0.0, 1.0, 1.0], np.float32),
            "localization_score": None,
        }


def _read_labels(path: str) -> list:
    if not os.path.exists(path):
        logging.warning(
            "%s not found; using the package's attribute order for the outputs.", path
        )
        return list(attributes.ATTRIBUTE_NAMES)
    with open(path, encoding="utf-8") as file:
        names = [line.strip() for line in file if line.strip()]
    if len(names) != attributes.NUM_ATTRIBUTES:
        raise ValueError(
            f"{path} lists {len(names)} attribute names, expected "
            f"{attributes.NUM_ATTRIBUTES}. Copy labels.txt from the same export."
        )
    return names


def load_predictor(path: str):
    """Return the predictor for a model path as `resolve_model_path` accepts it."""
    resolved = resolve_model_path(path)
    if resolved.endswith(".tflite"):
        return TFLitePredictor(resolved)
    return SavedModelPredictor(resolved)


def expand_paths(arguments) -> Iterator[str]:
    """Yield each file argument, and every file below each folder argument, in sorted order."""
    for argument in arguments:
        if os.path.isdir(argument):
            for folder, subfolders, files in os.walk(argument):
                subfolders.sort()
                for name in sorted(files):
                    yield os.path.join(folder, name)
        else:
            yield argument


def read_image(path: str, max_pixels: int) -> tuple[bytes, np.ndarray]:
    """Return a file's bytes and its uint8 RGB pixels [H, W, 3], or raise InvalidImageError."""
    try:
        with open(path, "rb") as file:
            contents = file.read()
    except OSError as error:
        raise InvalidImageError(f"{path}: cannot read the file ({error.strerror}).") from None

    size = None
    try:
        height, width = (int(side) for side in images_lib.header_image_size(contents))
        if height * width > max_pixels:
            size = (height, width)
        else:
            image = images_lib.decode_image(contents).numpy()
            if image.shape[0] * image.shape[1] <= max_pixels:
                return contents, image
            size = image.shape[:2]
    except tf.errors.InvalidArgumentError:
        pass
    reason = images_lib.describe_invalid_image(path, max_pixels, size)
    hint = " Pass a larger --max_pixels if the file is trusted." if size is not None else ""
    raise InvalidImageError(f"{path}: not a usable image: {reason}.{hint}")


def to_record(path: str, image: np.ndarray, outputs: dict, names: list, threshold: float) -> dict:
    """Build the JSON line of one photo from the model's outputs."""
    height, width = image.shape[:2]
    ymin, xmin, ymax, xmax = (float(value) for value in outputs["face_box"])
    x_1, y_1 = round(xmin * width), round(ymin * height)
    probabilities = [float(value) for value in outputs["attribute_probabilities"]]
    score = outputs.get("localization_score")
    return {
        "path": path,
        "image_size": {"height": int(height), "width": int(width)},
        "box": {
            "x_1": x_1,
            "y_1": y_1,
            "width": round(xmax * width) - x_1,
            "height": round(ymax * height) - y_1,
        },
        "box_normalized": [round(value, 6) for value in (ymin, xmin, ymax, xmax)],
        "localization_score": None if score is None else round(float(score), 6),
        "attributes": {name: round(value, 6) for name, value in zip(names, probabilities)},
        "present": [name for name, value in zip(names, probabilities) if value >= threshold],
    }


def overlay_name(path: str, used: set) -> str:
    """Return `<file name>.png`, or `<file name>-2.png` and so on when that name is taken."""
    base = os.path.basename(path)
    name, count = f"{base}.png", 1
    while name in used:
        count += 1
        name = f"{base}-{count}.png"
    used.add(name)
    return name


def write_visualization(out_dir: str, name: str, image: np.ndarray, outputs: dict, names) -> str:
    """Draw one prediction into `<out_dir>/<name>`; return the PNG's path."""
    picture = visualize.render(
        image,
        outputs["face_box"],
        outputs["attribute_probabilities"],
        names,
        head_box=outputs.get("head_box"),
        response=outputs.get("lnet_o_response"),
        response_window=outputs.get("response_window"),
        top_k=FLAGS.top_k,
    )
    target = os.path.join(out_dir, name)
    visualize.save_png(picture, target)
    return target


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Pass at least one image file or folder.")
    if not FLAGS.model:
        raise app.UsageError("--model is required: a SavedModel folder or a .tflite file.")
    try:
        predictor = load_predictor(FLAGS.model)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if FLAGS.visualize:
        os.makedirs(FLAGS.visualize, exist_ok=True)

    failures = 0
    overlay_names = set()
    for path in expand_paths(paths):
        try:
            contents, image = read_image(path, FLAGS.max_pixels)
            outputs = predictor.predict(contents, image)
            if outputs is None:
                reason = images_lib.describe_invalid_image(path, FLAGS.max_pixels)
                raise InvalidImageError(f"{path}: the model rejected the image: {reason}.")
        except InvalidImageError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
            continue
        record = to_record(path, image, outputs, predictor.names, FLAGS.threshold)
        print(json.dumps(record), flush=True)
        if FLAGS.visualize:
            name = overlay_name(path, overlay_names)
            write_visualization(FLAGS.visualize, name, image, outputs, predictor.names)

    if failures:
        print(f"error: {failures} file(s) could not be processed.", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
