"""TFRecord shards as the training stages' input: checks against the table, joined pipelines."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lnet_anet_tf.data import celeba
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data import shard_pipeline
from lnet_anet_tf.data import shard_source
from lnet_anet_tf.data import tfrecords
from lnet_anet_tf.data.synthetic import generate_celeba
from lnet_anet_tf.stages import inputs as inputs_lib

IMAGE_SIZE = 40
CROP_SIZE = 24
NUM_SHARDS = 3
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
WORKER_MAIN = os.path.join(TESTS_DIR, "shard_workers_main.py")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    # 6 identities x 4 images: 16 train, 4 validation and 4 test images.
    root = tmp_path_factory.mktemp("shard_synthetic")
    return generate_celeba(str(root / "celeba"), 6, 4, seed=0, num_workers=1)


@pytest.fixture(scope="module")
def table(synthetic_dir):
    return celeba.load_celeba(synthetic_dir)


@pytest.fixture(scope="module")
def converted(table, tmp_path_factory):
    root = tmp_path_factory.mktemp("shard_folders")
    for image in tfrecords.IMAGE_KINDS:
        tfrecords.write_tfrecords(table, str(root / image), num_shards=NUM_SHARDS, image=image, progress=False)
    return root


@pytest.fixture(scope="module")
def sources(table, converted):
    return {image: shard_source.open_shards(str(converted / image), table) for image in tfrecords.IMAGE_KINDS}


def train_rows(table):
    return inputs_lib.partition_rows(table, "train")


def by_index(dataset):
    """Return index -> (image, label) over a dataset built with_index."""
    elements = {}
    for features, labels in dataset:
        for index, image, label in zip(
            features["index"].numpy(), features["image"].numpy(), labels.numpy()
        ):
            assert int(index) not in elements, f"index {index} appears twice"
            elements[int(index)] = (image, label)
    return elements


def indices(dataset):
    return np.concatenate([features["index"].numpy() for features, _ in dataset])


def patch_examples(table):
    """Three jittered boxes per training row in the wild images, one centre box per aligned image."""
    rows = train_rows(table)
    wild_rows = np.repeat(rows, 3)
    rng = np.random.default_rng(0)
    wild_boxes = np.asarray([0.1, 0.15, 0.8, 0.9], np.float32) + rng.uniform(-0.05, 0.05, (len(wild_rows), 4))
    aligned_boxes = np.tile(np.asarray(pipeline.ALIGNED_FACE_BOX, np.float32), (len(rows), 1))
    boxes = np.concatenate([wild_boxes, aligned_boxes]).astype(np.float32)
    labels = np.arange(len(boxes), dtype=np.int32)
    return wild_rows, rows, boxes, labels


def flip_shards(output_dir, first, second):
    """Swap two shard files and their manifest entries, as a mixed-up copy would."""
    first_path, second_path = os.path.join(output_dir, first), os.path.join(output_dir, second)
    os.rename(first_path, first_path + ".swap")
    os.rename(second_path, first_path)
    os.rename(first_path + ".swap", second_path)
    manifest_path = os.path.join(output_dir, tfrecords.MANIFEST_FILENAME)
    with open(manifest_path) as file:
        manifest = json.load(file)
    entries = manifest["shards"]
    entries[first], entries[second] = entries[second], entries[first]
    with open(manifest_path, "w") as file:
        json.dump(manifest, file)


# ---------------------------------------------------------------------------
# Checking a folder against the table.


def test_open_shards_plans_every_row(table, sources):
    source = sources["wild"]

    rows = np.concatenate(source.rows)

    assert sorted(rows.tolist()) == list(range(len(table)))
    assert len(source.paths) == 3 * NUM_SHARDS
    assert source.image == "wild"
    for path, shard_rows in zip(source.paths, source.rows):
        recorded = [int(record["row"]) for record in tfrecords.read_records(path)]
        assert recorded == shard_rows.tolist()


def test_other_data_rejected(converted, tmp_path):
    other_dir = generate_celeba(str(tmp_path / "other"), 6, 4, seed=5, num_workers=1)
    other = celeba.load_celeba(other_dir)
    other.image_names[0], other.image_names[1] = other.image_names[1], other.image_names[0]

    with pytest.raises(ValueError, match="converted from other data"):
        shard_source.open_shards(str(converted / "wild"), other)


def test_partition_counts_checked(table, converted):
    without_first_train_row = table.select(np.arange(1, len(table)))

    with pytest.raises(ValueError, match="manifest lists 16 train images, the partition file has 15"):
        shard_source.open_shards(str(converted / "wild"), without_first_train_row)


def test_missing_shard_named(table, converted, tmp_path):
    copy = tmp_path / "wild"
    shutil.copytree(converted / "wild", copy)
    os.remove(copy / "validation-00001-of-00003.tfrecord")

    with pytest.raises(FileNotFoundError, match="validation-00001-of-00003.tfrecord is missing"):
        shard_source.open_shards(str(copy), table)


def test_changed_shard_size_named(table, converted, tmp_path):
    copy = tmp_path / "wild"
    shutil.copytree(converted / "wild", copy)
    with open(copy / "train-00002-of-00003.tfrecord", "ab") as file:
        file.write(b"tail")

    with pytest.raises(ValueError, match="train-00002-of-00003.tfrecord has .* bytes"):
        shard_source.open_shards(str(copy), table)


def test_unfinished_conversion_rejected(table, converted, tmp_path):
    copy = tmp_path / "wild"
    shutil.copytree(converted / "wild", copy)
    manifest = json.loads((copy / tfrecords.MANIFEST_FILENAME).read_text())
    (copy / tfrecords.MANIFEST_FILENAME).write_text(json.dumps(dict(manifest, complete=False)))

    with pytest.raises(FileNotFoundError, match="did not finish"):
        shard_source.open_shards(str(copy), table)


def test_swapped_shards_named_when_read(table, converted, tmp_path):
    # The 4 test rows are planned as 2, 1 and 1 per shard. Swapping the two shards of
    # one record each, with their manifest entries, passes every manifest check.
    copy = tmp_path / "wild"
    shutil.copytree(converted / "wild", copy)
    flip_shards(str(copy), "test-00001-of-00003.tfrecord", "test-00002-of-00003.tfrecord")
    source = shard_source.open_shards(str(copy), table)
    dataset = shard_pipeline.whole_image_shard_dataset(
        source, np.arange(len(table)), table.attributes.astype(np.float32), IMAGE_SIZE, 4,
        training=False,
    )

    with pytest.raises(tf.errors.InvalidArgumentError, match="test-0000[12]-of-00003.tfrecord contains a record of row"):
        for _ in dataset:
            pass


def test_changed_attributes_named_when_read(table, converted):
    # Image names and partitions match, so only the records show the difference.
    changed = table.select(np.arange(len(table)))
    changed.attributes = table.attributes.copy()
    changed.attributes[3, 0] = 1 - changed.attributes[3, 0]
    source = shard_source.open_shards(str(converted / "wild"), changed)
    dataset = shard_pipeline.whole_image_shard_dataset(
        source, np.asarray([3]), changed.attributes[[3]].astype(np.float32), IMAGE_SIZE, 1,
        training=False,
    )

    with pytest.raises(tf.errors.InvalidArgumentError, match="contains a record of row 3 whose shard, partition or attributes differ"):
        list(dataset)


# ---------------------------------------------------------------------------
# The joined pipelines against the per-file pipelines.


def test_whole_images_match_file_pipeline(table, sources):
    rows = train_rows(table)
    labels = table.attributes[rows].astype(np.float32)
    options = dict(training=False, augment=True, epoch=2, seed=3, with_index=True)
    expected = pipeline.whole_image_dataset(table.select(rows), IMAGE_SIZE, 5, **options)

    actual = shard_pipeline.whole_image_shard_dataset(sources["wild"], rows, labels, IMAGE_SIZE, 5, **options)

    assert actual.element_spec == expected.element_spec
    assert int(actual.cardinality()) == int(expected.cardinality())
    expected_elements, actual_elements = by_index(expected), by_index(actual)
    assert sorted(actual_elements) == list(range(len(rows)))
    for index, (image, label) in actual_elements.items():
        np.testing.assert_array_equal(image, expected_elements[index][0])
        np.testing.assert_array_equal(label, expected_elements[index][1])


def test_crops_of_two_image_kinds_match_file_pipeline(table, sources):
    wild_rows, aligned_rows, boxes, labels = patch_examples(table)
    paths = np.concatenate([table.wild_paths[wild_rows], table.aligned_paths[aligned_rows]])
    options = dict(training=False, augment=True, epoch=1, with_index=True)
    expected = pipeline.crop_dataset(paths, boxes, labels, CROP_SIZE, 7, **options)

    actual = shard_pipeline.crop_shard_dataset(
        [(sources["wild"], wild_rows), (sources["aligned"], aligned_rows)],
        boxes, labels, CROP_SIZE, 7, **options,
    )

    assert actual.element_spec == expected.element_spec
    expected_elements, actual_elements = by_index(expected), by_index(actual)
    assert sorted(actual_elements) == list(range(len(boxes)))
    for index, (crop, label) in actual_elements.items():
        np.testing.assert_array_equal(crop, expected_elements[index][0])
        assert label == index


def test_training_epoch_order_repeats(table, sources):
    wild_rows, _, boxes, labels = patch_examples(table)
    wild_boxes, wild_labels = boxes[: len(wild_rows)], labels[: len(wild_rows)]

    def order(epoch):
        return indices(shard_pipeline.crop_shard_dataset(
            [(sources["wild"], wild_rows)], wild_boxes, wild_labels, CROP_SIZE, 4,
            training=True, epoch=epoch, with_index=True,
        ))

    first = order(0)

    np.testing.assert_array_equal(order(0), first)
    assert not np.array_equal(order(1), first)
    assert len(first) == 48
    assert len(set(first.tolist())) == 48
    # Patches of one row do not stay together after the second shuffle.
    assert np.mean(np.abs(np.diff(first)) == 1) < 0.5


@pytest.mark.parametrize("num_pipelines", [2, 3])
def test_pipelines_read_disjoint_complete_parts(table, sources, num_pipelines):
    rows = np.arange(len(table))
    labels = table.attributes.astype(np.float32)
    seen = []

    for pipeline_id in range(num_pipelines):
        context = tf.distribute.InputContext(num_pipelines, pipeline_id, num_pipelines)
        dataset = shard_pipeline.whole_image_shard_dataset(
            sources["wild"], rows, labels, IMAGE_SIZE, num_pipelines, training=False,
            input_context=context, with_index=True,
        )
        seen.append(set(indices(dataset).tolist()))

    for first in range(num_pipelines):
        for second in range(first + 1, num_pipelines):
            assert not seen[first] & seen[second]
    assert set().union(*seen) == set(range(len(table)))


def test_training_pipelines_run_equal_steps(table, sources):
    wild_rows, aligned_rows, boxes, labels = patch_examples(table)
    parts = [(sources["wild"], wild_rows), (sources["aligned"], aligned_rows)]
    smallest = shard_pipeline.min_examples_per_pipeline(parts, 2, seed=0, epochs=3)

    for epoch in range(3):
        steps = []
        for pipeline_id in range(2):
            context = tf.distribute.InputContext(2, pipeline_id, 2)
            dataset = shard_pipeline.crop_shard_dataset(
                parts, boxes, labels, CROP_SIZE, 8, training=True, epoch=epoch,
                input_context=context,
            )
            steps.append((int(dataset.cardinality()), sum(1 for _ in dataset)))
        assert steps[0] == steps[1]
        assert steps[0][0] == steps[0][1]
        assert steps[0][0] >= smallest // 4


def test_assign_files_balances_examples():
    file_examples = np.asarray([12, 12, 12, 12, 4, 4, 4, 4])
    order = np.asarray([4, 5, 6, 7, 0, 1, 2, 3])

    assigned = shard_pipeline.assign_files(order, file_examples, 2)

    totals = [int(file_examples[files].sum()) for files in assigned]
    assert totals == [32, 32]
    assert sorted(np.concatenate(assigned).tolist()) == list(range(8))


def test_too_few_files_for_pipelines_rejected():
    with pytest.raises(ValueError, match="--num_shards of at least 4"):
        shard_pipeline.assign_files(np.arange(3), np.ones(3), 4)


def test_files_without_examples_left_out(table, sources):
    rows = inputs_lib.partition_rows(table, "test")
    labels = table.attributes[rows].astype(np.float32)
    counts = []

    for pipeline_id in range(3):
        context = tf.distribute.InputContext(3, pipeline_id, 3)
        dataset = shard_pipeline.whole_image_shard_dataset(
            sources["wild"], rows, labels, IMAGE_SIZE, 3, training=False, input_context=context,
            with_index=True,
        )
        counts.append(len(indices(dataset)))

    # Each pipeline reads one of the three test shards (2, 1 and 1 rows), none of
    # the six train and validation shards.
    assert sorted(counts) == [1, 1, 2]
    with pytest.raises(ValueError, match="3 TFRecord files contain the examples"):
        shard_pipeline.whole_image_shard_dataset(
            sources["wild"], rows, labels, IMAGE_SIZE, 4, training=False,
            input_context=tf.distribute.InputContext(4, 0, 4),
        )


def test_out_of_range_rows_rejected(sources):
    with pytest.raises(ValueError, match=r"rows\[1\] of part 0 is 99"):
        shard_pipeline.whole_image_shard_dataset(
            sources["wild"], np.asarray([0, 99]), np.zeros((2, 40), np.float32), IMAGE_SIZE, 2,
            training=False,
        )


# ---------------------------------------------------------------------------
# The training job's choice between image files and shards.


def test_stage_inputs_same_elements_either_way(table, sources):
    rows = train_rows(table)
    boxes = np.tile(np.asarray([0.1, 0.1, 0.9, 0.9], np.float32), (len(rows), 1))
    labels = table.attributes[rows].astype(np.float32)
    from_files = inputs_lib.StageInputs(table, seed=1)
    from_shards = inputs_lib.StageInputs(table, seed=1, shards=sources)
    elements = {}

    for name, inputs in (("files", from_files), ("shards", from_shards)):
        dataset = inputs.crops([("wild", rows)], boxes, labels, CROP_SIZE, 4, training=False,
                               augment=True, with_index=True)
        elements[name] = by_index(dataset)

    assert from_files.examples_per_pipeline([("wild", rows)], epochs=2) is None
    assert from_shards.examples_per_pipeline([("wild", rows)], epochs=2)(1) == len(rows)
    assert sorted(elements["shards"]) == sorted(elements["files"])
    for index, (crop, _) in elements["shards"].items():
        np.testing.assert_array_equal(crop, elements["files"][index][0])


def test_missing_image_kind_names_stages(table, converted):
    with pytest.raises(ValueError, match="pretrain_anet, finetune_anet read aligned images"):
        inputs_lib.open_tfrecord_dirs(
            [str(converted / "wild")], table, ["pretrain_anet", "finetune_anet", "evaluate"],
            add_aligned=True,
        )

    sources = inputs_lib.open_tfrecord_dirs(
        [str(converted / "wild")], table, ["finetune_lnet_o", "fit_svm", "evaluate", "export"],
        add_aligned=False,
    )
    assert set(sources) == {"wild"}


def test_two_folders_of_one_kind_rejected(table, converted, tmp_path):
    shutil.copytree(converted / "wild", tmp_path / "wild_copy")

    with pytest.raises(ValueError, match="both contain wild images"):
        inputs_lib.open_tfrecord_dirs(
            [str(converted / "wild"), str(tmp_path / "wild_copy")], table, ["finetune_lnet_o"],
            add_aligned=False,
        )


def test_mixed_sources_rejected(table, sources):
    inputs = inputs_lib.StageInputs(table, seed=0, shards={"wild": sources["wild"]})

    with pytest.raises(ValueError, match="only \\['wild'\\] have TFRecords"):
        inputs.reads_shards(["wild", "aligned"])


# ---------------------------------------------------------------------------
# Two worker processes under MultiWorkerMirroredStrategy.


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_workers(synthetic_dir, shard_dir, output_dir) -> list:
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
        processes.append(subprocess.Popen(
            [sys.executable, WORKER_MAIN, f"--data_dir={synthetic_dir}", f"--shard_dir={shard_dir}",
             f"--result_path={output_dir / f'worker{index}.json'}"],
            cwd=TESTS_DIR, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        ))
    try:
        errors = [process.communicate(timeout=300)[1] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, error in zip(processes, errors):
        assert process.returncode == 0, error[-4000:]
    return [json.loads((output_dir / f"worker{index}.json").read_text()) for index in range(2)]


@pytest.mark.slow
def test_two_workers_read_disjoint_halves(table, synthetic_dir, converted, tmp_path):
    workers = run_workers(synthetic_dir, converted / "wild", tmp_path)

    assert [worker["input_contexts"] for worker in workers] == [[[0, 2]], [[1, 2]]]
    for key in ("evaluation_rows", "pattern_rows"):
        first, second = (set(worker[key]) for worker in workers)
        assert len(first) == len(workers[0][key]), key
        assert not first & second, key
        assert first | second == set(range(len(table))), key
        assert abs(len(first) - len(second)) <= 4, key
    first, second = (set(worker["training_rows"]) for worker in workers)
    assert not first & second
    assert workers[0]["training_steps"] == workers[1]["training_steps"] > 0
    assert len(workers[0]["training_rows"]) == len(workers[1]["training_rows"])
