"""The TFDS builder `celeb_a_in_the_wild` and the TFDS input of the training job."""

import filecmp
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from lnet_anet_tf import attributes
from lnet_anet_tf.data import celeba
from lnet_anet_tf.data import tfds_source
from lnet_anet_tf.data.celeb_a_in_the_wild import celeb_a_in_the_wild_dataset_builder as builder_module
from lnet_anet_tf.data.synthetic import generate_celeba

BUILDER_FOLDER = os.path.dirname(builder_module.__file__)
NUM_IDENTITIES, IMAGES_PER_IDENTITY = 6, 3


def partition_counts(data_dir) -> dict:
    """Count the rows of each partition code in the release's partition file."""
    counts = {name: 0 for name in attributes.PARTITIONS}
    codes = {code: name for name, code in attributes.PARTITIONS.items()}
    with open(os.path.join(data_dir, "Eval", "list_eval_partition.txt"), encoding="ascii") as file:
        for line in file:
            if line.strip():
                counts[codes[int(line.split()[1])]] += 1
    return counts


def prepare(manual_dir, data_dir, config="with_aligned"):
    builder = tfds.builder(f"celeb_a_in_the_wild/{config}", data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return builder


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds_synthetic")
    return generate_celeba(str(root / "celeba"), NUM_IDENTITIES, IMAGES_PER_IDENTITY, seed=0, num_workers=1)


@pytest.fixture(scope="module")
def prepared(synthetic_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_data")
    return prepare(synthetic_dir, data_dir)


class CelebAInTheWildTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's own builder checks, on a synthetic CelebA generated for the class."""

    DATASET_CLASS = builder_module.Builder

    @classmethod
    def setUpClass(cls):
        cls._example_root = tempfile.mkdtemp(prefix="celeb_a_in_the_wild_dummy_")
        example_dir = os.path.join(cls._example_root, "dummy_data")
        generate_celeba(example_dir, NUM_IDENTITIES, IMAGES_PER_IDENTITY, seed=1, num_workers=1)
        cls.EXAMPLE_DIR = example_dir
        cls.SPLITS = partition_counts(example_dir)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls._example_root, ignore_errors=True)


def test_split_sizes_match_partition_file(synthetic_dir, prepared):
    expected = partition_counts(synthetic_dir)

    actual = {name: prepared.info.splits[name].num_examples for name in expected}

    assert actual == expected
    assert set(prepared.info.splits) == set(attributes.PARTITIONS)


def test_examples_match_table(synthetic_dir, prepared):
    table = celeba.load_celeba(synthetic_dir)
    rows = {name: index for index, name in enumerate(table.image_names)}
    seen = 0

    for split, code in attributes.PARTITIONS.items():
        for example in tfds.as_numpy(prepared.as_dataset(split=split)):
            row = rows[example["image_id"].decode()]
            seen += 1
            with Image.open(table.wild_paths[row]) as image:
                width, height = image.size
            assert example["image"].shape == (height, width, 3)
            assert example["aligned_image"].shape == (218, 178, 3)
            np.testing.assert_array_equal(example["attributes"], table.attributes[row] == 1)
            np.testing.assert_array_equal(example["bbox_pixels"], table.boxes[row])
            np.testing.assert_array_equal(example["landmarks"].reshape(-1), table.wild_landmarks[row])
            np.testing.assert_array_equal(
                example["aligned_landmarks"].reshape(-1), table.aligned_landmarks[row]
            )
            assert example["identity"] == table.identities[row]
            assert table.partitions[row] == code

    assert seen == len(table)


def test_bbox_normalized_by_image_size(synthetic_dir, prepared):
    table = celeba.load_celeba(synthetic_dir)
    rows = {name: index for index, name in enumerate(table.image_names)}

    for example in tfds.as_numpy(prepared.as_dataset(split="train")):
        row = rows[example["image_id"].decode()]
        height, width = example["image"].shape[:2]
        x_1, y_1, box_width, box_height = table.boxes[row]
        expected = np.clip(
            [y_1 / height, x_1 / width, (y_1 + box_height) / height, (x_1 + box_width) / width], 0, 1
        )
        np.testing.assert_allclose(example["bbox"], expected, rtol=0, atol=1e-6)


def test_image_bytes_stored_unchanged(synthetic_dir, prepared):
    table = celeba.load_celeba(synthetic_dir)
    rows = {name: index for index, name in enumerate(table.image_names)}
    dataset = prepared.as_dataset(
        split="test", decoders={"image": tfds.decode.SkipDecoding()}
    )

    for example in tfds.as_numpy(dataset):
        row = rows[example["image_id"].decode()]
        with open(table.wild_paths[row], "rb") as file:
            assert example["image"] == file.read()


def test_box_past_border_clipped():
    box = np.array([-10, 20, 120, 90])

    bbox = builder_module.normalized_box(box, (100, 100), "photo.jpg")

    assert (bbox.ymin, bbox.xmin, bbox.ymax, bbox.xmax) == (0.2, 0.0, 1.0, 1.0)


def test_box_without_area_rejected():
    with pytest.raises(ValueError, match="photo.jpg"):
        builder_module.normalized_box(np.array([5, 5, 0, 10]), (100, 100), "photo.jpg")


def test_wild_only_without_aligned_folder(synthetic_dir, tmp_path):
    manual_dir = tmp_path / "manual"
    shutil.copytree(synthetic_dir, manual_dir)
    shutil.rmtree(manual_dir / "Img" / "img_align_celeba")

    builder = prepare(manual_dir, tmp_path / "data", config="wild_only")

    assert "aligned_image" not in builder.info.features
    assert builder.info.splits.total_num_examples == NUM_IDENTITIES * IMAGES_PER_IDENTITY


def test_missing_wild_images_named(synthetic_dir, tmp_path):
    manual_dir = tmp_path / "manual"
    shutil.copytree(synthetic_dir, manual_dir)
    shutil.rmtree(manual_dir / "Img" / "img_celeba")

    with pytest.raises(ValueError, match="img_celeba"):
        prepare(manual_dir, tmp_path / "data", config="wild_only")


def run_python(arguments, cwd):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        arguments, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


def test_prepare_in_subprocess(synthetic_dir, tmp_path):
    # The path for installs without the `tfds` command's imports (see the next
    # test): a fresh process builds the dataset through download_and_prepare.
    data_dir = tmp_path / "data"
    script = (
        "import tensorflow_datasets as tfds\n"
        "from lnet_anet_tf.data.celeb_a_in_the_wild import celeb_a_in_the_wild_dataset_builder\n"
        f"builder = tfds.builder('celeb_a_in_the_wild', data_dir={str(data_dir)!r})\n"
        "builder.download_and_prepare(download_config=tfds.download.DownloadConfig("
        f"manual_dir={synthetic_dir!r}))\n"
    )

    result = run_python([sys.executable, "-c", script], cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    builder = tfds.builder("celeb_a_in_the_wild", data_dir=str(data_dir))
    assert builder.is_prepared()
    counts = {name: builder.info.splits[name].num_examples for name in attributes.PARTITIONS}
    assert counts == partition_counts(synthetic_dir)


@pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is None or importlib.util.find_spec("mlcroissant") is None,
    reason="the tfds command of tensorflow-datasets 4.9.10 imports apache_beam and mlcroissant "
    "at start-up; install the test extra",
)
def test_tfds_build_command(synthetic_dir, tmp_path):
    data_dir = tmp_path / "data"
    tfds_command = os.path.join(os.path.dirname(sys.executable), "tfds")

    result = run_python(
        [tfds_command, "build", BUILDER_FOLDER, f"--manual_dir={synthetic_dir}",
         f"--data_dir={data_dir}"],
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    for config in ("with_aligned", "wild_only"):
        builder = tfds.builder(f"celeb_a_in_the_wild/{config}", data_dir=str(data_dir))
        assert builder.info.splits.total_num_examples == NUM_IDENTITIES * IMAGES_PER_IDENTITY


# ---------------------------------------------------------------------------
# The TFDS input of the training job.


def test_copy_reads_back_as_source(synthetic_dir, prepared, tmp_path):
    source = celeba.load_celeba(synthetic_dir)

    copy_dir = tfds_source.prepare_data_dir(
        "celeb_a_in_the_wild", str(prepared.data_dir_root), str(tmp_path / "cache"), ["finetune_lnet_o"]
    )
    copy = celeba.load_celeba(copy_dir)

    copy = copy.select(np.argsort(copy.image_names))
    for column in ("image_names", "attributes", "boxes", "wild_landmarks", "aligned_landmarks",
                   "identities", "partitions"):
        np.testing.assert_array_equal(getattr(copy, column), getattr(source, column), err_msg=column)
    for column in ("wild_paths", "aligned_paths"):
        for copied, original in zip(getattr(copy, column), getattr(source, column)):
            assert filecmp.cmp(copied, original, shallow=False), copied


def test_copy_reused_on_second_call(prepared, tmp_path):
    arguments = ("celeb_a_in_the_wild", str(prepared.data_dir_root), str(tmp_path / "cache"), [])
    first = tfds_source.prepare_data_dir(*arguments)
    marker = os.path.join(first, tfds_source.SOURCE_FILENAME)
    written = os.stat(marker).st_mtime_ns

    second = tfds_source.prepare_data_dir(*arguments)

    assert second == first
    assert os.stat(marker).st_mtime_ns == written


def test_celeb_a_mock_copied_as_aligned_only(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        builder = tfds.builder("celeb_a", data_dir=str(tmp_path / "data"))
        copy_dir = tfds_source.materialize(builder, str(tmp_path / "copy"))
        examples = [
            example
            for split in attributes.PARTITIONS
            for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
        ]

    table = celeba.load_celeba(copy_dir)

    assert len(table) == 12
    assert table.wild_paths is None
    assert table.boxes is None
    np.testing.assert_array_equal(np.bincount(table.partitions), [4, 4, 4])
    for row, example in enumerate(examples):
        expected = [example["attributes"][name] for name in attributes.ATTRIBUTE_NAMES]
        np.testing.assert_array_equal(table.attributes[row], expected)
        assert table.identities[row] == example["identity"]["Identity_No"]
        with Image.open(table.aligned_paths[row]) as image:
            assert image.size == (178, 218)


def test_celeb_a_rejects_in_the_wild_stages():
    with pytest.raises(ValueError, match="finetune_lnet_o"):
        tfds_source.check_stages("celeb_a", ["pretrain_anet", "finetune_lnet_o"])

    tfds_source.check_stages("celeb_a", ["pretrain_lnet", "pretrain_anet"])
    tfds_source.check_stages("celeb_a_in_the_wild", ["finetune_lnet_o", "evaluate"])


def test_unprepared_dataset_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build lnet_anet_tf/data/celeb_a_in_the_wild"):
        tfds_source.load_builder("celeb_a_in_the_wild", str(tmp_path))


def test_train_rejects_celeb_a_for_wild_stages(tmp_path):
    result = run_python(
        [sys.executable, "-m", "lnet_anet_tf.train", "--tfds_name=celeb_a",
         f"--tfds_data_dir={tmp_path}", f"--cache_dir={tmp_path / 'cache'}",
         "--stages=pretrain_anet,finetune_lnet_o"],
        cwd=tmp_path,
    )

    assert result.returncode != 0
    assert "cannot feed stage(s) finetune_lnet_o" in result.stderr


@pytest.mark.slow
def test_train_stage_reads_tfds_copy(prepared, tmp_path):
    overrides = ["anet.conv_filters=(8, 8, 8, 8)", "anet.feature_units=16",
                 "stages.pretrain_anet.epochs=1", "stages.pretrain_anet.batch_size=4"]
    command = [
        sys.executable, "-m", "lnet_anet_tf.train", "--tfds_name=celeb_a_in_the_wild",
        f"--tfds_data_dir={prepared.data_dir_root}", f"--cache_dir={tmp_path / 'cache'}",
        f"--model_dir={tmp_path / 'run'}", "--stages=pretrain_anet", "--preset=demo",
        "--progress=off",
    ] + [f"--config_override={override}" for override in overrides]

    result = run_python(command, cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "run" / "pretrain_anet" / "DONE.json").exists()
    run_info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert run_info["data_dir"].startswith(str(tmp_path / "cache" / "tfds"))
