"""The training job on TFRecord shards against the same run on the image files.

Two stages keep it cheap and still cover both kinds of input that shards replace:
`finetune_lnet_o` trains on whole images, and `finetune_lnet_s` predicts LNet_o's
head boxes over every image and trains on crops of them, joined by row.
"""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lnet_anet_tf.data.synthetic import generate_celeba

CONVERT_SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "convert_to_tfrecords.py")
STAGES = ("finetune_lnet_o", "finetune_lnet_s")
# Tiny nets without dropout, and a batch larger than the 24 training images, so
# each epoch is one step over the same batch under both inputs: only the order of
# the examples inside the batch differs.
OVERRIDES = (
    "lnet_o.input_size=48",
    "lnet_s.input_size=48",
    "lnet_o.conv_filters=(8, 8, 8, 8, 8)",
    "lnet_s.conv_filters=(8, 8, 8, 8, 8)",
    "lnet_o.fc_units=(16, 16)",
    "lnet_s.fc_units=(16, 16)",
    "lnet_o.dropout_rate=0.0",
    "lnet_s.dropout_rate=0.0",
    "stages.finetune_lnet_o.epochs=2",
    "stages.finetune_lnet_s.epochs=2",
    "stages.finetune_lnet_o.batch_size=64",
    "stages.finetune_lnet_s.batch_size=64",
)
# The shard run sums the batch in another order, so float32 rounding differs; two
# Adam steps keep the weights within this of each other.
WEIGHT_TOLERANCE = 1e-4


def run(arguments, cwd):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_CONFIG", None)
    return subprocess.run(
        [sys.executable] + arguments, cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=600,
    )


def train(data_dir, model_dir, cwd, *extra):
    arguments = [
        "-m", "lnet_anet_tf.train", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
        f"--cache_dir={cwd / 'cache'}", "--preset=demo", "--progress=off",
        f"--stages={','.join(STAGES)}",
    ]
    arguments += [f"--config_override={override}" for override in OVERRIDES]
    return run(arguments + list(extra), cwd)


def read_weights(path) -> dict:
    weights = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: weights.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_tfrecords")
    data_dir = generate_celeba(str(root / "celeba"), 8, 4, seed=0, num_workers=1)
    convert = run([CONVERT_SCRIPT, f"--data_dir={data_dir}", f"--output_dir={root / 'shards'}",
                   "--num_shards=3", "--progress=off"], root)
    assert convert.returncode == 0, convert.stderr[-3000:]
    # The shard run gets the annotation files only, so any image file it opened
    # would fail.
    annotations_dir = root / "annotations"
    for folder in ("Anno", "Eval"):
        shutil.copytree(os.path.join(data_dir, folder), annotations_dir / folder)

    files = train(data_dir, root / "files", root)
    shards = train(annotations_dir, root / "shards_run", root, f"--tfrecord_dir={root / 'shards'}")

    assert files.returncode == 0, files.stderr[-4000:]
    assert shards.returncode == 0, shards.stderr[-4000:]
    return {"root": root, "files": root / "files", "shards": root / "shards_run", "log": shards.stderr}


def test_shard_run_reads_shards(runs):
    assert "Reading wild images from 9 TFRecord files" in runs["log"]
    run_info = json.loads((runs["shards"] / "run_info.json").read_text())
    assert run_info["tfrecord_dirs"] == {"wild": str(runs["root"] / "shards")}
    for stage in STAGES:
        assert (runs["shards"] / stage / "DONE.json").exists(), stage


def test_shard_run_metrics_match_file_run(runs):
    for stage in STAGES:
        files = json.loads((runs["files"] / stage / "DONE.json").read_text())["metrics"]
        shards = json.loads((runs["shards"] / stage / "DONE.json").read_text())["metrics"]
        assert shards.keys() == files.keys()
        for name in files:
            assert shards[name] == pytest.approx(files[name], abs=1e-5), (stage, name)


def test_shard_run_weights_match_file_run(runs):
    for stage in STAGES:
        files = read_weights(runs["files"] / stage / "model.weights.h5")
        shards = read_weights(runs["shards"] / stage / "model.weights.h5")
        assert shards.keys() == files.keys()
        for name in files:
            np.testing.assert_allclose(shards[name], files[name], atol=WEIGHT_TOLERANCE, err_msg=f"{stage} {name}")


def test_shard_run_head_boxes_match_file_run(runs):
    files = np.load(runs["files"] / "finetune_lnet_s" / "lnet_o_boxes.npz")
    shards = np.load(runs["shards"] / "finetune_lnet_s" / "lnet_o_boxes.npz")

    np.testing.assert_array_equal(shards["valid"], files["valid"])
    assert shards["valid"].all()
    np.testing.assert_allclose(shards["boxes"], files["boxes"], atol=1e-4)


def test_shards_of_other_data_rejected(runs, tmp_path):
    other_dir = generate_celeba(str(tmp_path / "other"), 9, 4, seed=0, num_workers=1)

    result = train(other_dir, tmp_path / "run", tmp_path, f"--tfrecord_dir={runs['root'] / 'shards'}")

    assert result.returncode != 0
    assert "do not match the annotation files" in result.stderr
    assert not (tmp_path / "run" / "finetune_lnet_o").exists()
