"""Tests of the box cache that links one localization stage to the next."""

import numpy as np

from lnet_anet_tf.stages import boxes as boxes_lib


def compute_counter(value):
    calls = []

    def compute():
        calls.append(1)
        return {"boxes": np.full([2, 4], value, np.float32), "valid": np.ones([2], bool)}

    return compute, calls


def test_cached_computes_once(tmp_path):
    path = str(tmp_path / "boxes.npz")
    compute, calls = compute_counter(0.5)

    first = boxes_lib.cached(path, compute, required=("boxes", "valid"))
    second = boxes_lib.cached(path, compute, required=("boxes", "valid"))

    assert len(calls) == 1
    np.testing.assert_array_equal(first["boxes"], second["boxes"])


def test_cached_recomputes_stale_file(tmp_path):
    path = str(tmp_path / "boxes.npz")
    np.savez(path, boxes=np.zeros([2, 4], np.float32))
    compute, calls = compute_counter(0.25)

    outputs = boxes_lib.cached(path, compute, required=("boxes", "valid"))

    assert len(calls) == 1
    np.testing.assert_array_equal(outputs["boxes"], 0.25)
    with np.load(path) as saved:
        assert sorted(saved.files) == ["boxes", "valid"]


def test_average_passes_means_boxes_and_scores():
    first = {
        "boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], np.float32),
        "scores": np.array([0.2, 0.0], np.float32),
        "valid": np.array([True, True]),
    }
    second = {
        "boxes": np.array([[0.3, 0.2, 0.7, 0.6], [0.0, 0.0, 0.0, 0.0]], np.float32),
        "scores": np.array([0.6, 0.0], np.float32),
        "valid": np.array([True, False]),
    }

    averaged = boxes_lib.average_passes([first, second])

    np.testing.assert_allclose(averaged["boxes"][0], [0.2, 0.15, 0.6, 0.55], atol=1e-6)
    np.testing.assert_allclose(averaged["scores"], [0.4, 0.0], atol=1e-6)
    np.testing.assert_array_equal(averaged["valid"], [True, False])
    assert averaged["boxes"].dtype == np.float32
