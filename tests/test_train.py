"""The training job end to end on a tiny synthetic dataset, in a subprocess."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lnet_anet_tf import attributes

# Small nets and data, so that every stage runs in about a minute on 2 CPU cores.
TINY_OVERRIDES = (
    "synthetic.num_identities=30",
    "synthetic.images_per_identity=6",
    "synthetic.object_classes=4",
    "synthetic.object_images_per_class=16",
    "lnet_o.input_size=64",
    "lnet_s.input_size=64",
    "lnet_o.conv_filters=(16, 24, 24, 24, 24)",
    "lnet_s.conv_filters=(16, 24, 24, 24, 24)",
    "lnet_o.fc_units=(64, 64)",
    "lnet_s.fc_units=(64, 64)",
    "anet.conv_filters=(16, 16, 24, 24)",
    "anet.feature_units=48",
    "stages.pretrain_lnet.epochs=1",
    "stages.pretrain_anet.epochs=2",
    "stages.finetune_lnet_o.epochs=3",
    "stages.finetune_lnet_s.epochs=3",
    "stages.finetune_anet.epochs=4",
    "stages.finetune_anet.batch_size=32",
    "svm.epochs=10",
)
STAGES_WITHOUT_EXPORT = "pretrain_lnet,pretrain_anet,finetune_lnet_o,finetune_lnet_s,finetune_anet,fit_svm,evaluate"

# Attributes the generator draws large and in strong colours.
CLEARLY_DRAWN = ("Eyeglasses", "Wearing_Hat", "Blond_Hair", "Black_Hair", "Male", "Smiling", "No_Beard")


def train_command(model_dir, cache_dir, *extra):
    command = [
        sys.executable, "-m", "lnet_anet_tf.train",
        f"--model_dir={model_dir}", f"--cache_dir={cache_dir}", "--progress=off",
        f"--stages={STAGES_WITHOUT_EXPORT}",
    ]
    command += [f"--config_override={override}" for override in TINY_OVERRIDES]
    return command + list(extra)


def run(command, cwd):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model_dir, cache_dir = root / "run", root / "cache"
    result = run(train_command(model_dir, cache_dir), cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"model_dir": model_dir, "cache_dir": cache_dir, "root": root, "result": result}


def test_every_stage_leaves_its_outputs(tiny_run):
    model_dir = tiny_run["model_dir"]

    for stage in STAGES_WITHOUT_EXPORT.split(","):
        assert (model_dir / stage / "DONE.json").exists(), stage
    for stage in ("finetune_lnet_o", "finetune_lnet_s", "finetune_anet"):
        assert (model_dir / stage / "model.weights.h5").exists(), stage
        assert (model_dir / stage / "log.csv").exists(), stage
    assert (model_dir / "fit_svm" / "svm.npz").exists()
    assert (model_dir / "config.json").exists()
    assert (model_dir / "evaluate" / "report.md").exists()


def test_metrics_finite_and_above_chance(tiny_run):
    metrics = json.loads((tiny_run["model_dir"] / "evaluate" / "metrics.json").read_text())

    assert metrics["dataset"] == "synthetic"
    per_attribute = metrics["attributes"]["per_attribute"]
    assert set(per_attribute) == set(attributes.ATTRIBUTE_NAMES)
    values = [entry[key] for entry in per_attribute.values() for key in ("accuracy", "balanced_accuracy")]
    assert np.all(np.isfinite(values))
    for net in ("lnet_o", "lnet_s"):
        assert 0.0 <= metrics["localization"][net]["recall"] <= 1.0
    at_boxes = metrics["attributes_at_annotated_boxes"]
    assert set(at_boxes["per_attribute"]) == set(attributes.ATTRIBUTE_NAMES)
    assert 0.0 < at_boxes["mean_accuracy"] <= 1.0

    drawn = np.mean([per_attribute[name]["balanced_accuracy"] for name in CLEARLY_DRAWN])
    assert drawn > 0.55, {name: per_attribute[name] for name in CLEARLY_DRAWN}


def test_report_printed_at_the_end(tiny_run):
    assert "# Evaluation report" in tiny_run["result"].stdout
    assert "synthetic" in tiny_run["result"].stdout


def test_aligned_images_added_by_default(tiny_run):
    assert "finetune_anet adds the aligned training images (--add_aligned, the default" in tiny_run["result"].stderr


def test_noadd_aligned_flag_respected(tmp_path):
    command = train_command(tmp_path / "run", tmp_path / "cache", "--noadd_aligned", "--stages=finetune_anet")

    result = run(command, cwd=tmp_path)

    assert "finetune_anet does not add the aligned training images (--noadd_aligned)" in result.stderr


def test_rerun_skips_finished_stages(tiny_run):
    before = (tiny_run["model_dir"] / "evaluate" / "metrics.json").read_text()

    result = run(train_command(tiny_run["model_dir"], tiny_run["cache_dir"]), cwd=tiny_run["root"])

    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("already finished") == len(STAGES_WITHOUT_EXPORT.split(","))
    assert (tiny_run["model_dir"] / "evaluate" / "metrics.json").read_text() == before


def test_changed_config_in_same_model_dir_rejected(tiny_run):
    command = train_command(tiny_run["model_dir"], tiny_run["cache_dir"], "--config_override=svm.l2=0.5")

    result = run(command, cwd=tiny_run["root"])

    assert result.returncode != 0
    assert "different config" in result.stderr
    assert "svm" in result.stderr


def test_unknown_stage_rejected(tmp_path):
    result = run([sys.executable, "-m", "lnet_anet_tf.train", "--stages=pretrain_everything"], cwd=tmp_path)

    assert result.returncode != 0
    assert "Unknown stage(s) pretrain_everything" in result.stderr


def test_seed_override_rejected(tmp_path):
    model_dir = tmp_path / "run"
    command = train_command(model_dir, tmp_path / "cache", "--config_override=seed=1", "--stages=evaluate")

    result = run(command, cwd=tmp_path)

    assert result.returncode != 0
    assert "--config_override=seed=1 would be ignored: set the seed with --seed" in result.stderr
    assert not model_dir.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "synthetic.brightness_range=(1.2, 0.8)",
            "The config setting synthetic.brightness_range is (1.2, 0.8)",
        ),
        (
            "localization.lnet_s_recrop_scales=(1.0, -0.5)",
            "lnet_s_recrop_scales must be a non-empty tuple of positive numbers",
        ),
    ],
)
def test_invalid_setting_rejected(tmp_path, override, message):
    model_dir, cache_dir = tmp_path / "run", tmp_path / "cache"
    command = train_command(model_dir, cache_dir, f"--config_override={override}", "--stages=evaluate")

    result = run(command, cwd=tmp_path)

    assert result.returncode != 0
    assert message in result.stderr
    assert not model_dir.exists()
    assert not cache_dir.exists()
