"""Tests of scripts/lnet_s_second_pass.py: the label-free calibration and the second crop."""

import os
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from lnet_anet_tf import localization
from lnet_anet_tf import preprocessing
from lnet_anet_tf.config import LocalizationConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import lnet_s_second_pass  # noqa: E402


def test_calibrated_factor_inverts_median_ratio():
    crops = np.array([[0.0, 0.0, 0.4, 0.4]] * 3, np.float32)
    # Sides 0.1, 0.3 and 0.2 of crops of side 0.4: ratios 0.25, 0.75 and 0.5.
    faces = np.array(
        [[0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 0.3, 0.3], [0.1, 0.1, 0.3, 0.3]], np.float32
    )

    assert lnet_s_second_pass.calibrated_factor(faces, crops) == pytest.approx(2.0)


class _RecordingCascade:
    """Stands in for a Cascade: returns the crops it is given as the face boxes."""

    lnet_o_size = 96
    localization_config = LocalizationConfig()

    def localize_face_in_crops(self, images, crops):
        return {"face_box": crops}


def test_second_pass_crops_about_first_box(tmp_path):
    sizes = np.array([[64, 48], [50, 50]])
    paths = []
    for index, (height, width) in enumerate(sizes):
        path = tmp_path / f"{index}.png"
        keras.utils.save_img(path, np.zeros([height, width, 3], np.uint8))
        paths.append(str(path))
    boxes = np.array([[0.2, 0.3, 0.5, 0.6], [0.1, 0.1, 0.3, 0.4]], np.float32)
    cascade = _RecordingCascade()

    results = lnet_s_second_pass.second_passes(cascade, paths, boxes, sizes, [2.0, 3.0])

    assert len(results) == 2
    for factor, result in zip([2.0, 3.0], results):
        assert result.shape == (2, 4)
        for box, (height, width), crop in zip(boxes, sizes, result):
            _, window = preprocessing.letterbox(tf.zeros([1, height, width, 3]), 96)
            expected = localization.square_context_box(
                box, factor, preprocessing.window_aspect(window)
            )
            np.testing.assert_allclose(crop, expected, atol=1e-6)
