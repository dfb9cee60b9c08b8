"""Tests for the predictor command and the prediction overlays, on real photos."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

import export_fixtures
import robustness_image_rss
from lnet_anet_tf import attributes
from lnet_anet_tf import export
from lnet_anet_tf import predict
from lnet_anet_tf import trained
from lnet_anet_tf import visualize

PREDICT_COMMAND = [sys.executable, "-m", "lnet_anet_tf.predict"]


def lfw_face(index: int, side: int = 100) -> np.ndarray:
    face = (skimage.data.lfw_subset()[index] * 255).astype(np.uint8)
    return np.array(Image.fromarray(face).resize((side, side), Image.BICUBIC).convert("RGB"))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    model_dir = export_fixtures.write_model_dir(tmp_path_factory.mktemp("run"))
    export_dir = str(tmp_path_factory.mktemp("export"))
    cascade = trained.load_cascade(model_dir)
    export.export_saved_model(cascade, export_dir)
    export.export_tflite(cascade, model_dir, export_dir, None, variants=["float32"])
    return export_dir


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Good photos of many kinds, written as files."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut = skimage.data.astronaut()
    images = {
        "astronaut.jpg": Image.fromarray(astronaut),
        "lfw_0.png": Image.fromarray(lfw_face(0)),
        "lfw_1.jpg": Image.fromarray(lfw_face(1, 150)),
        "gray.png": Image.fromarray(astronaut).convert("L"),
        "rgba.png": Image.fromarray(astronaut).convert("RGBA"),
        "large.jpg": Image.fromarray(astronaut).resize((4000, 3000), Image.BILINEAR),
        "tiny.png": Image.fromarray(astronaut[200:216, 200:216]),
    }
    sizes = {}
    for name, image in images.items():
        image.save(folder / name)
        sizes[name] = (image.height, image.width)
    return folder, sizes


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """One good photo and three files that are not usable images."""
    folder = tmp_path_factory.mktemp("mixed")
    Image.fromarray(lfw_face(2)).save(folder / "good.png")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "empty.jpg").write_bytes(b"")
    Image.fromarray(skimage.data.astronaut()).save(folder / "whole.jpg")
    contents = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(contents[: len(contents) // 2])
    (folder / "whole.jpg").unlink()
    return folder


def run_predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PREDICT_COMMAND, *map(str, args)], capture_output=True, text=True, timeout=600
    )


def check_record(record: dict, height: int, width: int, threshold: float = 0.5) -> None:
    assert record["image_size"] == {"height": height, "width": width}
    box = record["box"]
    assert box["x_1"] >= 0
    assert box["y_1"] >= 0
    assert box["width"] >= 0
    assert box["height"] >= 0
    assert box["x_1"] + box["width"] <= width
    assert box["y_1"] + box["height"] <= height
    ymin, xmin, ymax, xmax = record["box_normalized"]
    assert 0 <= ymin <= ymax <= 1
    assert 0 <= xmin <= xmax <= 1
    assert list(record["attributes"]) == list(attributes.ATTRIBUTE_NAMES)
    values = list(record["attributes"].values())
    assert all(0.0 <= value <= 1.0 for value in values)
    expected_present = [name for name, value in record["attributes"].items() if value >= threshold]
    assert record["present"] == expected_present


# The command on good photos.


@pytest.mark.parametrize("backend", ["saved_model", "tflite_cascade"])
def test_predict_photos(export_dir, photos, tmp_path, backend):
    folder, sizes = photos
    model = {
        "saved_model": os.path.join(export_dir, "saved_model", "lnet_anet"),
        "tflite_cascade": os.path.join(export_dir, "tflite", "cascade_float32.tflite"),
    }[backend]
    out_dir = tmp_path / "overlays"

    result = run_predict(folder, "--model", model, "--visualize", out_dir, "--threshold", "0.6")

    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [os.path.basename(record["path"]) for record in records] == sorted(sizes)
    for record in records:
        name = os.path.basename(record["path"])
        check_record(record, *sizes[name], threshold=0.6)
        assert 0.0 <= record["localization_score"] <= 1.0
        with Image.open(out_dir / f"{name}.png") as overlay:
            assert (overlay.height, overlay.width) == sizes[name]
            assert overlay.mode == "RGB"


def test_predict_with_anet_model_uses_whole_image(export_dir, photos):
    folder, sizes = photos
    model = os.path.join(export_dir, "tflite", "anet_float32.tflite")
    result = run_predict(folder / "lfw_0.png", "--model", model)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    check_record(record, *sizes["lfw_0.png"])
    assert record["box"] == {"x_1": 0, "y_1": 0, "width": 100, "height": 100}
    assert record["localization_score"] is None


# Bad input.


@pytest.mark.parametrize("backend", ["saved_model", "tflite_cascade"])
def test_bad_files_are_reported_and_others_processed(export_dir, mixed_folder, backend):
    model = {
        "saved_model": os.path.join(export_dir, "saved_model", "lnet_anet", "1"),
        "tflite_cascade": os.path.join(export_dir, "tflite", "cascade_float32.tflite"),
    }[backend]

    result = run_predict(mixed_folder, "--model", model)

    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [os.path.basename(record["path"]) for record in records] == ["good.png"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    reasons = {
        "empty.jpg": "the file is empty",
        "notes.txt": "not a JPEG, PNG",
        "truncated.jpg": "probably truncated",
    }
    for name, reason in reasons.items():
        matching = [line for line in errors if str(mixed_folder / name) in line]
        assert len(matching) == 1, (name, errors)
        assert reason in matching[0], matching[0]
    assert "3 file(s) could not be processed" in result.stderr


def test_missing_file_is_reported(export_dir, tmp_path):
    model = os.path.join(export_dir, "tflite", "cascade_float32.tflite")
    result = run_predict(tmp_path / "absent.jpg", "--model", model)
    assert result.returncode == 1
    assert f"error: {tmp_path / 'absent.jpg'}: cannot read the file" in result.stderr


def test_invalid_model_path_is_a_usage_error(tmp_path):
    Image.fromarray(lfw_face(0)).save(tmp_path / "face.png")
    result = run_predict(tmp_path / "face.png", "--model", tmp_path)
    assert result.returncode != 0
    assert "is neither a .tflite file" in result.stderr
    assert result.stdout == ""


# The pieces, in process.


def test_resolve_model_path_picks_highest_version(tmp_path):
    for version in ("1", "10", "9", "notes"):
        os.makedirs(tmp_path / version)
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    assert predict.resolve_model_path(str(tmp_path)) == str(tmp_path / "10")
    assert predict.resolve_model_path(str(tmp_path / "9")) == str(tmp_path / "9")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="not a .tflite model"):
        predict.resolve_model_path(str(tmp_path / "model.onnx"))


def test_export_folder_points_to_its_models(tmp_path):
    os.makedirs(tmp_path / "saved_model" / "lnet_anet" / "1")
    os.makedirs(tmp_path / "tflite")

    with pytest.raises(ValueError, match="is an export folder") as raised:
        predict.resolve_model_path(str(tmp_path))

    assert f"--model={tmp_path / 'saved_model' / 'lnet_anet'}" in str(raised.value)
    assert str(tmp_path / "tflite" / "cascade_int8.tflite") in str(raised.value)


def test_expand_paths_walks_folders_in_order(tmp_path):
    for name in ("b.jpg", "a.png", "sub/c.jpg"):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    paths = list(predict.expand_paths([str(tmp_path), "single.jpg"]))
    assert paths == [
        str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), str(tmp_path / "sub" / "c.jpg"), "single.jpg",
    ]


def test_read_image_rejects_oversized_photo_by_header(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    with pytest.raises(predict.InvalidImageError, match="more than max_pixels=1000"):
        predict.read_image(str(path), max_pixels=1000)
    contents, image = predict.read_image(str(path), max_pixels=512 * 512)
    assert image.shape == (512, 512, 3)
    assert contents[:4] == b"\x89PNG"


def test_read_image_rejects_webp_bomb_by_header(tmp_path):
    # A 34-byte lossless WebP that decodes to 16383x16383 black pixels.
    path = tmp_path / "bomb.webp"
    path.write_bytes(robustness_image_rss.lossless_bomb())

    with pytest.raises(predict.InvalidImageError) as raised:
        predict.read_image(str(path), max_pixels=predict.images_lib.DEFAULT_MAX_PIXELS)

    message = str(raised.value)
    assert message.startswith(f"{path}: not a usable image: the image is 16383x16383 = 268.4 megapixels")
    assert f"more than max_pixels={predict.images_lib.DEFAULT_MAX_PIXELS}" in message
    assert "Pass a larger --max_pixels if the file is trusted." in message


def test_overlay_names_stay_unique():
    used = set()
    names = [predict.overlay_name(path, used) for path in ("a/x.jpg", "b/x.jpg", "x.jpg", "y.jpg")]
    assert names == ["x.jpg.png", "x.jpg-2.png", "x.jpg-3.png", "y.jpg.png"]


def test_record_box_in_pixels():
    outputs = {
        "face_box": np.array([0.1, 0.2, 0.5, 0.9], np.float32),
        "localization_score": np.float32(0.75),
        "attribute_probabilities": np.linspace(0, 1, 40, dtype=np.float32),
    }
    record = predict.to_record("x.jpg", np.zeros((200, 300, 3), np.uint8), outputs,
                               list(attributes.ATTRIBUTE_NAMES), 0.5)
    assert record["box"] == {"x_1": 60, "y_1": 20, "width": 210, "height": 80}
    assert record["localization_score"] == 0.75
    assert record["present"] == list(attributes.ATTRIBUTE_NAMES[20:])


def test_render_draws_heatmap_box_and_text():
    image = np.full((300, 400, 3), 128, np.uint8)
    response = np.zeros((10, 10), np.float32)
    response[2:5, 3:6] = 1.0
    picture = visualize.render(
        image, [0.25, 0.25, 0.75, 0.75], np.linspace(0, 1, 40), attributes.ATTRIBUTE_NAMES,
        response=response, top_k=3,
    )
    pixels = np.asarray(picture).astype(int)
    assert pixels.shape == (300, 400, 3)
    # The face box's left edge is green.
    assert tuple(pixels[150, 100]) == (0, 255, 0)
    # The response covers the letterboxed frame, in which the image fills rows
    # 0.125 to 0.875: the hot cells (frame rows 0.2 to 0.5, columns 0.3 to 0.6)
    # turn red-yellow and a cold corner stays nearly gray.
    hot = pixels[120, 180]
    assert hot[0] > 180, hot
    assert hot[2] < 100, hot
    assert abs(pixels[290, 390] - 128).max() < 60
    # The text band is dark at the top left.
    assert pixels[2, 2].max() < 80


def test_letterbox_window_of_wide_image():
    np.testing.assert_allclose(visualize.letterbox_window(100, 200), [0.25, 0.0, 0.75, 1.0])
    np.testing.assert_allclose(visualize.letterbox_window(50, 50), [0.0, 0.0, 1.0, 1.0])
