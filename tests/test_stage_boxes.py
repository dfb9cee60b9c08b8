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
