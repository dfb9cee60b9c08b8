"""Tests of lnet_anet_tf/export_data.py: the face crops that calibration and QAT read."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import export_fixtures
from lnet_anet_tf import export_data
from lnet_anet_tf import localization
from lnet_anet_tf import preprocessing
from lnet_anet_tf import trained

SIDE = 40


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    model_dir = export_fixtures.write_model_dir(tmp_path_factory.mktemp("run"))
    return trained.load_cascade(model_dir)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, (height, width) in enumerate([(120, 90), (80, 140), (100, 100)]):
        path = folder / f"{index}.png"
        keras.utils.save_img(path, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def test_face_boxes_match_cascade(cascade, photos):
    result = export_data.face_crops(cascade, photos, SIDE)

    assert result["face_boxes"].shape == (len(photos), 4)
    for path, box in zip(photos, result["face_boxes"]):
        image = tf.cast(tf.io.decode_png(tf.io.read_file(path)), tf.float32)[tf.newaxis]
        np.testing.assert_allclose(box, cascade(image)["face_box"].numpy()[0], atol=1e-5)


def test_crops_cut_about_enlarged_face_box(cascade, photos):
    result = export_data.face_crops(cascade, photos, SIDE)

    assert result["crops"].shape == (len(photos), SIDE, SIDE, 3)
    assert result["crops"].dtype == np.uint8
    for path, box, crop in zip(photos, result["face_boxes"], result["crops"]):
        image = tf.cast(tf.io.decode_png(tf.io.read_file(path)), tf.float32)[tf.newaxis]
        region = cascade.face_crop_boxes(tf.constant(box[np.newaxis]))
        expected = localization.crop_and_resize(preprocessing.normalize(image), region, SIDE)
        expected = np.clip(np.round((expected.numpy()[0] + 1.0) * 127.5), 0, 255)
        # Rounding may fall either way where the two computations differ in the last bit.
        assert np.abs(crop.astype(np.int32) - expected.astype(np.int32)).max() <= 1


def test_no_paths_give_empty_arrays(cascade):
    result = export_data.face_crops(cascade, [], SIDE)

    assert result["crops"].shape == (0, SIDE, SIDE, 3)
    assert result["face_boxes"].shape == (0, 4)
