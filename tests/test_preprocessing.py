"""Tests of the letterbox geometry that the cascade and the stages share."""

import numpy as np
import pytest
import tensorflow as tf

from lnet_anet_tf import preprocessing


@pytest.mark.parametrize("height, width", [(100, 200), (200, 100), (37, 53), (96, 96), (1, 300)])
def test_letterbox_window_matches_letterbox(height, width):
    images = tf.zeros([1, height, width, 3])

    _, window = preprocessing.letterbox(images, 96)

    np.testing.assert_array_equal(preprocessing.letterbox_window(height, width, 96), window)


@pytest.mark.parametrize("height, width", [(100, 200), (218, 178), (160, 256)])
def test_window_aspect_matches_image(height, width):
    window = preprocessing.letterbox_window(height, width, 96)

    aspect = float(preprocessing.window_aspect(window))

    # The shorter side is rounded to whole pixels of the 96-pixel square.
    assert aspect == pytest.approx(height / width, abs=1.0 / 96)


def test_window_aspect_of_batched_windows():
    windows = tf.constant([[0.25, 0.0, 0.75, 1.0], [0.0, 0.1, 1.0, 0.9]])

    np.testing.assert_allclose(preprocessing.window_aspect(windows), [0.5, 1.25])
