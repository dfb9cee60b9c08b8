"""Tests of scripts/validation_accuracy.py: runs compared on validation images only."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import export_fixtures
from lnet_anet_tf.data.synthetic import generate_celeba

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import validation_accuracy  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    data_dir = generate_celeba(str(root / "celeba"), 20, 2, seed=0, num_workers=1)
    model_dirs = [
        export_fixtures.write_model_dir(root / f"run_{seed}", seed=seed) for seed in (0, 1)
    ]
    return {"root": root, "data_dir": data_dir, "model_dirs": model_dirs}


def read_partition(data_dir, code):
    """Return the image names of one partition and their 0/1 labels, read from the files."""
    with open(os.path.join(data_dir, "Eval", "list_eval_partition.txt")) as file:
        names = [line.split()[0] for line in file if line.split()[1:] == [str(code)]]
    with open(os.path.join(data_dir, "Anno", "list_attr_celeba.txt")) as file:
        lines = file.read().splitlines()[2:]
    labels = {line.split()[0]: [int(value) > 0 for value in line.split()[1:]] for line in lines}
    return names, np.array([labels[name] for name in names])


def expected_mean_accuracy(model_dir, data_dir, code):
    cascade = validation_accuracy.trained.load_cascade(model_dir)
    names, labels = read_partition(data_dir, code)
    predictions = []
    for name in names:
        pixels = tf.io.decode_jpeg(tf.io.read_file(os.path.join(data_dir, "Img", "img_celeba", name)))
        image = tf.cast(pixels, tf.float32)[tf.newaxis]
        predictions.append(cascade(image)["attribute_probabilities"].numpy()[0] >= 0.5)
    return float((np.array(predictions) == labels).mean())


def test_metrics_are_of_validation_images(runs):
    model_dir, data_dir = runs["model_dirs"][0], runs["data_dir"]

    result = validation_accuracy.validation_metrics(model_dir, data_dir, None)

    names, _ = read_partition(data_dir, 1)
    assert result["num_examples"] == len(names) > 0
    expected = expected_mean_accuracy(model_dir, data_dir, 1)
    assert result["mean_accuracy"] == pytest.approx(expected, abs=1e-9)
    # The test partition gives another value, so a mix-up of the two would show.
    assert expected_mean_accuracy(model_dir, data_dir, 2) != pytest.approx(expected, abs=1e-9)


def test_script_prints_one_row_per_run(runs):
    command = [
        sys.executable, os.path.join(REPO_ROOT, "scripts", "validation_accuracy.py"),
        f"--model_dirs={','.join(runs['model_dirs'])}", f"--data_dir={runs['data_dir']}",
    ]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| /")]
    assert [row.split(" | ")[0][2:] for row in rows] == runs["model_dirs"]
    for model_dir, row in zip(runs["model_dirs"], rows):
        metrics = validation_accuracy.validation_metrics(model_dir, runs["data_dir"], None)
        assert row == validation_accuracy.result_row(model_dir, metrics)


def test_run_without_config_is_rejected(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a training run's model directory"):
        validation_accuracy.validation_metrics(str(tmp_path), runs["data_dir"], None)
