"""Sharded TFRecords: conversion, resume, reading, per-worker sharding and damage."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from lnet_anet_tf import attributes
from lnet_anet_tf.data import celeba
from lnet_anet_tf.data import images
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data import tfrecords
from lnet_anet_tf.data.synthetic import generate_celeba

NUM_SHARDS = 4
IMAGE_SIZE = 48
SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "convert_to_tfrecords.py")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfrecord_synthetic")
    # 6 identities x 4 images: 16 train, 4 validation and 4 test images.
    return generate_celeba(str(root / "celeba"), 6, 4, seed=0, num_workers=1)


@pytest.fixture(scope="module")
def table(synthetic_dir):
    return celeba.load_celeba(synthetic_dir)


@pytest.fixture(scope="module")
def converted(table, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("tfrecords") / "shards")
    manifest = tfrecords.write_tfrecords(table, output_dir, num_shards=NUM_SHARDS, progress=False)
    return output_dir, manifest


def all_pattern(output_dir):
    return os.path.join(output_dir, "*" + tfrecords.SHARD_SUFFIX)


def indices(dataset):
    return np.concatenate([features["index"].numpy() for features, _ in dataset])


def count_records(path):
    return sum(1 for _ in tf.data.TFRecordDataset(path))


def flip_byte(path, offset):
    with open(path, "r+b") as file:
        file.seek(offset)
        value = file.read(1)
        file.seek(offset)
        file.write(bytes([value[0] ^ 0xFF]))


def test_round_trip_every_field(table, converted):
    output_dir, _ = converted
    seen = []

    for record in tfrecords.read_records(all_pattern(output_dir)):
        row = int(record["row"])
        seen.append(row)
        path = table.wild_paths[row]
        with open(path, "rb") as file:
            assert record["image/encoded"].numpy() == file.read()
        with Image.open(path) as image:
            assert (int(record["image/width"]), int(record["image/height"])) == image.size
        assert record["image/format"].numpy() == b"jpeg"
        assert record["image/name"].numpy().decode() == table.image_names[row]
        np.testing.assert_array_equal(record["attributes"], table.attributes[row])
        assert int(record["partition"]) == table.partitions[row]
        np.testing.assert_array_equal(record["box"], table.boxes[row])
        np.testing.assert_array_equal(record["landmarks"], table.wild_landmarks[row])
        assert int(record["identity"]) == table.identities[row]

    assert sorted(seen) == list(range(len(table)))


def test_shards_per_partition(table, converted):
    output_dir, manifest = converted

    for split, code in attributes.PARTITIONS.items():
        expected = int(np.sum(table.partitions == code))
        names = manifest["splits"][split]["shards"]
        counts = [count_records(os.path.join(output_dir, name)) for name in names]
        assert manifest["splits"][split]["num_examples"] == expected
        assert sum(counts) == expected
        assert len(names) == min(NUM_SHARDS, expected)
        assert counts == [manifest["shards"][name]["num_examples"] for name in names]
        assert max(counts) - min(counts) <= 1


def test_partition_rows_stay_in_split(table, converted):
    output_dir, _ = converted

    for split, code in attributes.PARTITIONS.items():
        pattern = tfrecords.split_pattern(output_dir, split)
        partitions = [int(record["partition"]) for record in tfrecords.read_records(pattern)]
        assert set(partitions) == {code}


def test_dataset_matches_whole_image_pipeline(table, converted):
    output_dir, _ = converted
    expected = pipeline.whole_image_dataset(table, IMAGE_SIZE, 5, training=False, with_index=True)
    expected_by_row = {}
    for features, labels in expected:
        for index, image, window, label in zip(
            features["index"].numpy(), features["image"].numpy(), features["window"].numpy(),
            labels.numpy(),
        ):
            expected_by_row[int(index)] = (image, window, label)

    actual = tfrecords.tfrecord_dataset(
        all_pattern(output_dir), IMAGE_SIZE, 5, training=False, with_index=True
    )

    assert actual.element_spec == expected.element_spec
    rows = []
    for features, labels in actual:
        for index, image, window, label in zip(
            features["index"].numpy(), features["image"].numpy(), features["window"].numpy(),
            labels.numpy(),
        ):
            rows.append(int(index))
            np.testing.assert_allclose(image, expected_by_row[int(index)][0], atol=1e-6)
            np.testing.assert_allclose(window, expected_by_row[int(index)][1], atol=1e-6)
            np.testing.assert_array_equal(label, expected_by_row[int(index)][2])
    assert sorted(rows) == list(range(len(table)))


def test_training_order_repeats_per_epoch(converted):
    pattern = tfrecords.split_pattern(converted[0], "train")

    def order(epoch):
        dataset = tfrecords.tfrecord_dataset(
            pattern, IMAGE_SIZE, 4, training=True, epoch=epoch, augment=True, with_index=True
        )
        return indices(dataset)

    first = order(0)

    np.testing.assert_array_equal(order(0), first)
    assert not np.array_equal(order(1), first)
    assert len(first) == 16


def test_augment_flips_like_whole_image_pipeline(table, converted):
    # Both pipelines seed each flip with (seed, epoch) and the table row.
    train = table.partition("train")
    expected = pipeline.whole_image_dataset(
        train, IMAGE_SIZE, 16, training=False, augment=True, epoch=3, with_index=True
    )
    actual = tfrecords.tfrecord_dataset(
        tfrecords.split_pattern(converted[0], "train"), IMAGE_SIZE, 16, training=False,
        augment=True, epoch=3, with_index=True,
    )
    train_rows = np.flatnonzero(table.partitions == 0)
    expected_images = {}
    for features, _ in expected:
        for index, image in zip(features["index"].numpy(), features["image"].numpy()):
            expected_images[int(train_rows[index])] = image

    for features, _ in actual:
        for index, image in zip(features["index"].numpy(), features["image"].numpy()):
            np.testing.assert_allclose(image, expected_images[int(index)], atol=1e-6)


@pytest.mark.parametrize("num_pipelines", [2, 3])
def test_worker_shards_disjoint_and_complete(converted, num_pipelines):
    pattern = tfrecords.split_pattern(converted[0], "train")
    per_pipeline = []

    for pipeline_id in range(num_pipelines):
        context = tf.distribute.InputContext(num_pipelines, pipeline_id, num_pipelines)
        dataset = tfrecords.tfrecord_dataset(
            pattern, IMAGE_SIZE, num_pipelines, training=False, input_context=context,
            with_index=True,
        )
        per_pipeline.append(set(indices(dataset).tolist()))

    for first in range(num_pipelines):
        for second in range(first + 1, num_pipelines):
            assert not per_pipeline[first] & per_pipeline[second]
    assert len(set().union(*per_pipeline)) == 16


def test_worker_files_disjoint_for_eight_workers():
    files = [f"train-{index:05d}-of-00016.tfrecord" for index in range(16)]

    shards = [
        tfrecords.shard_files(files, tf.distribute.InputContext(8, pipeline_id, 1))
        for pipeline_id in range(8)
    ]

    assert all(len(shard) == 2 for shard in shards)
    assert sorted(sum(shards, [])) == files


def test_training_shards_run_equal_steps(converted):
    pattern = tfrecords.split_pattern(converted[0], "train")
    steps = []

    for pipeline_id in range(3):
        context = tf.distribute.InputContext(3, pipeline_id, 3)
        dataset = tfrecords.tfrecord_dataset(
            pattern, IMAGE_SIZE, 3, training=True, input_context=context
        )
        steps.append((int(dataset.cardinality()), sum(1 for _ in dataset)))

    assert len(set(steps)) == 1
    assert steps[0][0] == steps[0][1]


def test_too_few_files_for_workers_rejected(converted):
    pattern = tfrecords.split_pattern(converted[0], "test")
    context = tf.distribute.InputContext(8, 0, 8)

    with pytest.raises(ValueError, match="--num_shards of at least 8"):
        tfrecords.tfrecord_dataset(pattern, IMAGE_SIZE, 8, training=False, input_context=context)


def test_resume_skips_finished_shard(table, converted, tmp_path):
    source_dir, source_manifest = converted
    output_dir = tmp_path / "partial"
    output_dir.mkdir()
    finished = "train-00000-of-00004.tfrecord"
    shutil.copy2(os.path.join(source_dir, finished), output_dir / finished)
    partial = dict(source_manifest, complete=False, shards={finished: source_manifest["shards"][finished]})
    (output_dir / tfrecords.MANIFEST_FILENAME).write_text(json.dumps(partial))
    stale = output_dir / f"{tfrecords.TEMPORARY_PREFIX}999-train-00001-of-00004.tfrecord"
    stale.write_bytes(b"half a shard")
    finished_mtime = os.stat(output_dir / finished).st_mtime_ns

    manifest = tfrecords.write_tfrecords(table, str(output_dir), num_shards=NUM_SHARDS, progress=False)

    assert not stale.exists()
    assert os.stat(output_dir / finished).st_mtime_ns == finished_mtime
    assert manifest["complete"]
    assert manifest["shards"] == source_manifest["shards"]
    for name, entry in manifest["shards"].items():
        assert count_records(str(output_dir / name)) == entry["num_examples"]
        assert tfrecords.file_sha256(str(output_dir / name)) == entry["sha256"]


def test_resume_rewrites_damaged_shard(table, converted, tmp_path):
    output_dir = str(tmp_path / "shards")
    shutil.copytree(converted[0], output_dir)
    damaged = os.path.join(output_dir, "validation-00000-of-00004.tfrecord")
    flip_byte(damaged, 100)

    manifest = tfrecords.write_tfrecords(table, output_dir, num_shards=NUM_SHARDS, progress=False)

    assert tfrecords.file_sha256(damaged) == manifest["shards"]["validation-00000-of-00004.tfrecord"]["sha256"]
    assert manifest["shards"] == converted[1]["shards"]


def test_changed_settings_rejected(table, converted, tmp_path):
    output_dir = str(tmp_path / "shards")
    shutil.copytree(converted[0], output_dir)

    with pytest.raises(ValueError, match="num_shards"):
        tfrecords.write_tfrecords(table, output_dir, num_shards=NUM_SHARDS + 1, progress=False)


def test_corrupted_shard_named_in_error(converted, tmp_path):
    output_dir = str(tmp_path / "shards")
    shutil.copytree(converted[0], output_dir)
    damaged = os.path.join(output_dir, "train-00002-of-00004.tfrecord")
    flip_byte(damaged, os.path.getsize(damaged) // 2)
    dataset = tfrecords.tfrecord_dataset(
        tfrecords.split_pattern(output_dir, "train"), IMAGE_SIZE, 4, training=False
    )

    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00002-of-00004.tfrecord is corrupt"):
        for _ in dataset:
            pass


def test_truncated_shard_named_in_error(converted, tmp_path):
    output_dir = str(tmp_path / "shards")
    shutil.copytree(converted[0], output_dir)
    truncated = os.path.join(output_dir, "test-00001-of-00004.tfrecord")
    with open(truncated, "r+b") as file:
        file.truncate(os.path.getsize(truncated) - 10)

    with pytest.raises(tf.errors.InvalidArgumentError, match="test-00001-of-00004.tfrecord is corrupt"):
        list(tfrecords.read_records(tfrecords.split_pattern(output_dir, "test")))


def test_unfinished_conversion_rejected_by_reader(converted, tmp_path):
    output_dir = tmp_path / "shards"
    shutil.copytree(converted[0], output_dir)
    manifest = json.loads((output_dir / tfrecords.MANIFEST_FILENAME).read_text())
    (output_dir / tfrecords.MANIFEST_FILENAME).write_text(json.dumps(dict(manifest, complete=False)))

    with pytest.raises(FileNotFoundError, match="did not finish"):
        tfrecords.list_shards(all_pattern(str(output_dir)))


def test_unlisted_file_rejected(converted, tmp_path):
    output_dir = tmp_path / "shards"
    shutil.copytree(converted[0], output_dir)
    (output_dir / "extra-00000-of-00001.tfrecord").write_bytes(b"")

    with pytest.raises(ValueError, match="extra-00000-of-00001.tfrecord"):
        tfrecords.list_shards(all_pattern(str(output_dir)))


def test_invalid_image_named_by_converter(synthetic_dir, tmp_path):
    copy_dir = tmp_path / "celeba"
    shutil.copytree(synthetic_dir, copy_dir)
    damaged = copy_dir / "Img" / "img_celeba" / "000005.jpg"
    damaged.write_bytes(damaged.read_bytes()[:300])
    table = celeba.load_celeba(str(copy_dir))

    with pytest.raises(images.InvalidImageError, match="000005.jpg"):
        tfrecords.write_tfrecords(table, str(tmp_path / "shards"), num_shards=2, progress=False)
    assert not [name for name in os.listdir(tmp_path / "shards") if name.startswith(".tmp-")]


def test_aligned_images_with_aligned_landmarks(table, tmp_path):
    manifest = tfrecords.write_tfrecords(
        table, str(tmp_path / "shards"), num_shards=2, image="aligned", progress=False
    )

    for record in tfrecords.read_records(all_pattern(str(tmp_path / "shards"))):
        row = int(record["row"])
        assert (int(record["image/height"]), int(record["image/width"])) == (218, 178)
        np.testing.assert_array_equal(record["landmarks"], table.aligned_landmarks[row])
    assert manifest["image"] == "aligned"


def test_convert_script_resumes(synthetic_dir, tmp_path):
    output_dir = tmp_path / "shards"
    command = [sys.executable, SCRIPT, f"--data_dir={synthetic_dir}", f"--output_dir={output_dir}",
               "--num_shards=2", "--progress=off"]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    first = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    second = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)

    assert first.returncode == 0, first.stderr[-3000:]
    assert f"{output_dir} contains all 24 examples; counts verified." in first.stdout
    assert second.returncode == 0, second.stderr[-3000:]
    assert "6 finished before, 0 to write" in second.stderr
    assert f"{output_dir} contains all 24 examples" in second.stdout
    assert json.loads((output_dir / tfrecords.MANIFEST_FILENAME).read_text())["complete"]
