"""Tests of scripts/localization_bands.py: bands of face-to-crop size."""

import json
import os
import sys
import types

import numpy as np
import tensorflow as tf

from lnet_anet_tf import localization
from lnet_anet_tf import preprocessing
from lnet_anet_tf.config import LocalizationConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import localization_bands  # noqa: E402


def test_band_table_counts_and_recall():
    ratios = np.array([0.1, 0.45, 0.45, 2.0])
    ious = np.array([0.6, 0.4, 0.7, 0.9])

    table = localization_bands.band_table(ratios, ious, [0.3, 0.5, 1.0]).splitlines()

    assert table[2] == "| 0 to 0.3 | 1 | 100.00 | 0.600 |"
    assert table[3] == "| 0.3 to 0.5 | 2 | 50.00 | 0.550 |"
    assert table[4] == "| 0.5 to 1 | 0 | | |"
    assert table[5] == "| 1 and more | 1 | 100.00 | 0.900 |"


def test_crop_boxes_match_letterbox():
    cascade = types.SimpleNamespace(lnet_o_size=96, localization_config=LocalizationConfig())
    sizes = np.array([[160, 256], [218, 178], [200, 200]])
    head_boxes = np.array(
        [[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.6, 0.5], [0.0, 0.0, 0.4, 0.4]], np.float32
    )

    crops = localization_bands.crop_boxes(cascade, head_boxes, sizes)

    for box, (height, width), crop in zip(head_boxes, sizes, crops):
        _, window = preprocessing.letterbox(tf.zeros([1, height, width, 3]), 96)
        expected = localization.square_context_box(
            box, LocalizationConfig().lnet_o_context, preprocessing.window_aspect(window)
        )
        np.testing.assert_allclose(crop, expected, atol=1e-6)


def test_crop_boxes_use_given_factor():
    cascade = types.SimpleNamespace(lnet_o_size=96, localization_config=LocalizationConfig())
    sizes = np.array([[200, 200], [200, 200]])
    boxes = np.array([[0.2, 0.2, 0.4, 0.4], [0.5, 0.4, 0.6, 0.5]], np.float32)

    crops = localization_bands.crop_boxes(cascade, boxes, sizes, factor=2.5)

    np.testing.assert_allclose(localization_bands.side(crops), 2.5 * localization_bands.side(boxes), rtol=1e-5)
    np.testing.assert_allclose(crops[:, :2] + crops[:, 2:], boxes[:, :2] + boxes[:, 2:], atol=1e-6)


def test_load_dataset_defaults_to_job_cache(monkeypatch, tmp_path):
    from lnet_anet_tf.config import get_config
    from lnet_anet_tf.data import celeba
    from lnet_anet_tf.data import synthetic

    requested = []
    monkeypatch.setattr(
        synthetic, "ensure_default_dataset",
        lambda cache_dir, config: requested.append(cache_dir) or ("/data/celeba", "/data/objects"),
    )
    monkeypatch.setattr(celeba, "load_celeba", lambda data_dir: f"table of {data_dir}")

    data_dir, table = localization_bands.load_dataset(str(tmp_path), get_config("demo"), None, None)

    assert requested == [synthetic.DEFAULT_CACHE_DIR]
    assert data_dir == "/data/celeba"
    assert table == "table of /data/celeba"


def test_load_dataset_reads_run_info(monkeypatch, tmp_path):
    from lnet_anet_tf.config import get_config
    from lnet_anet_tf.data import celeba
    from lnet_anet_tf.data import synthetic

    recorded = tmp_path / "recorded_celeba"
    recorded.mkdir()
    (tmp_path / "run_info.json").write_text(json.dumps({"data_dir": str(recorded)}))
    requested = []
    monkeypatch.setattr(
        synthetic, "ensure_default_dataset",
        lambda cache_dir, config: requested.append(cache_dir) or ("/cache/celeba", "/cache/objects"),
    )
    monkeypatch.setattr(celeba, "load_celeba", lambda data_dir: f"table of {data_dir}")
    config = get_config("demo")

    data_dir, _ = localization_bands.load_dataset(str(tmp_path), config, None, None)
    assert data_dir == str(recorded)
    assert requested == []

    data_dir, _ = localization_bands.load_dataset(str(tmp_path), config, None, "/my/cache")
    assert data_dir == "/cache/celeba"
    assert requested == ["/my/cache"]

    data_dir, _ = localization_bands.load_dataset(str(tmp_path), config, "/given", None)
    assert data_dir == "/given"
