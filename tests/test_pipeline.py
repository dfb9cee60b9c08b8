"""Tests for the tf.data pipelines and image loading, on tiny files written with Pillow."""

import logging as python_logging
import os
import struct
import zlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from lnet_anet_tf import attributes
from lnet_anet_tf.data import images
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data.table import CelebATable

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def write_image(path, array, image_format=None):
    Image.fromarray(np.asarray(array, np.uint8)).save(path, format=image_format)
    return str(path)


def write_gray_images(folder, count, height=24, width=32):
    """Write `count` JPEGs whose gray level encodes their row: 10 * row, modulo 250."""
    paths = []
    for row in range(count):
        array = np.full((height, width, 3), 10 * row % 250, np.uint8)
        paths.append(write_image(folder / f"{row:03d}.jpg", array))
    return paths


def make_table(paths, attribute_values=None):
    count = len(paths)
    if attribute_values is None:
        attribute_values = np.zeros((count, attributes.NUM_ATTRIBUTES), np.uint8)
    return CelebATable(
        image_names=np.array([os.path.basename(path) for path in paths]),
        attributes=np.asarray(attribute_values, np.uint8),
        wild_paths=np.array(paths),
        aligned_paths=np.array(paths),
        identities=np.arange(1, count + 1, dtype=np.int32),
    )


def indices_of(dataset):
    return [int(index) for features, _ in dataset for index in features["index"].numpy()]


def encoded_jpeg(tmp_path):
    path = write_image(tmp_path / "source.jpg", np.random.default_rng(0).integers(0, 255, (48, 64, 3)))
    with open(path, "rb") as file:
        return file.read()


# Each invalid file kind: a writer that returns the file's bytes, and a phrase of the
# reason that the error message must contain.
def empty_file(tmp_path):
    return b""


def text_file(tmp_path):
    return b"name,value\nthis is not an image\n"


def truncated_jpeg(tmp_path):
    contents = encoded_jpeg(tmp_path)
    return contents[: len(contents) // 2]


def corrupt_middle_jpeg(tmp_path):
    # A run of 0xFF bytes in the entropy-coded data reads as an unknown marker, which
    # makes libjpeg fail. The file still starts and ends like a valid JPEG.
    contents = bytearray(encoded_jpeg(tmp_path))
    middle = len(contents) // 2
    contents[middle : middle + 64] = b"\xff" * 64
    return bytes(contents)


INVALID_FILES = {
    "empty": (empty_file, "the file is empty"),
    "text": (text_file, "is not a JPEG, PNG, GIF, BMP, WebP or JPEG XL image"),
    "truncated": (truncated_jpeg, "probably truncated"),
    "corrupt_middle": (corrupt_middle_jpeg, "decoder rejected the data"),
}


def table_with_invalid_file(tmp_path, kind, bad_row=3, count=6):
    paths = write_gray_images(tmp_path, count)
    writer, _ = INVALID_FILES[kind]
    bad_path = tmp_path / f"bad_{kind}.jpg"
    bad_path.write_bytes(writer(tmp_path))
    paths[bad_row] = str(bad_path)
    return make_table(paths), str(bad_path)


def png_with_header_size(path, width, height):
    """Write a PNG whose IHDR declares width x height, with almost no pixel data."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    contents = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(contents)
    return str(path)


# Whole images.


def test_whole_image_shapes_and_range(tmp_path):
    table = make_table(write_gray_images(tmp_path, 5))
    dataset = pipeline.whole_image_dataset(table, 16, 2, training=False)

    batches = list(dataset)
    assert [batch[0].shape[0] for batch in batches] == [2, 2, 1]
    images_batch, labels = batches[0]
    assert images_batch.shape == (2, 16, 16, 3)
    assert images_batch.dtype == tf.float32
    assert labels.shape == (2, attributes.NUM_ATTRIBUTES)
    assert labels.dtype == tf.float32
    all_images = np.concatenate([batch[0].numpy() for batch in batches])
    assert all_images.min() >= -1.0
    assert all_images.max() <= 1.0


def test_whole_image_letterbox_padding(tmp_path):
    # A white image twice as wide as high fills the middle half of the square.
    path = write_image(tmp_path / "wide.png", np.full((20, 40, 3), 255))
    dataset = pipeline.whole_image_dataset(make_table([path]), 16, 1, training=False, with_index=True)

    features, _ = next(iter(dataset))
    image = features["image"][0].numpy()
    np.testing.assert_allclose(image[:4], 0.0, atol=1e-6)
    np.testing.assert_allclose(image[12:], 0.0, atol=1e-6)
    np.testing.assert_allclose(image[4:12], 1.0, atol=1e-6)
    np.testing.assert_allclose(features["window"][0], [0.25, 0.0, 0.75, 1.0])


def test_whole_image_index_matches_rows(tmp_path):
    paths = write_gray_images(tmp_path, 7)
    values = np.random.default_rng(1).integers(0, 2, (7, attributes.NUM_ATTRIBUTES))
    table = make_table(paths, values)
    dataset = pipeline.whole_image_dataset(table, 8, 3, training=True, seed=4, with_index=True)

    for features, labels in dataset:
        rows = features["index"].numpy()
        np.testing.assert_array_equal(labels.numpy(), values[rows])
        # The gray level written into each file is 10 * row (for rows below 25).
        centre = features["image"].numpy()[:, 4, 4, 0]
        np.testing.assert_allclose((centre + 1.0) * 127.5, 10 * rows, atol=2.0)


def test_whole_image_augment_flips(tmp_path):
    array = np.zeros((16, 16, 3), np.uint8)
    array[:, :8] = RED
    array[:, 8:] = BLUE
    paths = [write_image(tmp_path / f"{row}.png", array) for row in range(8)]
    dataset = pipeline.whole_image_dataset(
        make_table(paths), 16, 8, training=True, augment=True, seed=0, epoch=0
    )

    batch = next(iter(dataset))[0].numpy()
    left_is_red = batch[:, 8, 2, 0] > 0.5
    assert left_is_red.any()
    assert (~left_is_red).any()


# Order, sharding and resuming.


def test_training_order_repeats_for_same_epoch(tmp_path):
    table = make_table(write_gray_images(tmp_path, 12))

    def order(seed, epoch):
        return indices_of(
            pipeline.whole_image_dataset(
                table, 8, 4, training=True, seed=seed, epoch=epoch, with_index=True
            )
        )

    first = order(seed=3, epoch=5)
    assert first == order(seed=3, epoch=5)
    assert sorted(first) == list(range(12))
    assert first != order(seed=3, epoch=6)
    assert first != order(seed=4, epoch=5)


def test_evaluation_keeps_row_order(tmp_path):
    table = make_table(write_gray_images(tmp_path, 9))
    dataset = pipeline.whole_image_dataset(table, 8, 4, training=False, with_index=True)

    assert indices_of(dataset) == list(range(9))


def test_unordered_option_keeps_all_rows(tmp_path):
    table = make_table(write_gray_images(tmp_path, 40))
    dataset = pipeline.whole_image_dataset(
        table, 8, 8, training=False, deterministic=False, with_index=True
    )

    assert sorted(indices_of(dataset)) == list(range(40))


def test_evaluation_shards_disjoint_and_complete(tmp_path):
    table = make_table(write_gray_images(tmp_path, 10))
    shards = []
    for pipeline_id in range(3):
        context = tf.distribute.InputContext(3, pipeline_id, 3)
        dataset = pipeline.whole_image_dataset(
            table, 8, 6, training=False, input_context=context, with_index=True
        )
        batch_sizes = [features["index"].shape[0] for features, _ in dataset]
        assert max(batch_sizes) == 2  # per-replica share of the global batch of 6
        shards.append(indices_of(dataset))

    all_rows = [row for shard in shards for row in shard]
    assert sorted(all_rows) == list(range(10))


def test_training_shards_disjoint_and_equal(tmp_path):
    table = make_table(write_gray_images(tmp_path, 11))
    shards = []
    for pipeline_id in range(3):
        context = tf.distribute.InputContext(3, pipeline_id, 3)
        dataset = pipeline.whole_image_dataset(
            table, 8, 3, training=True, seed=2, epoch=1, input_context=context, with_index=True
        )
        shards.append(indices_of(dataset))

    assert [len(shard) for shard in shards] == [3, 3, 3]
    all_rows = [row for shard in shards for row in shard]
    assert len(set(all_rows)) == 9


def test_start_batch_resumes_order(tmp_path):
    table = make_table(write_gray_images(tmp_path, 10))

    def order(start_batch):
        return indices_of(
            pipeline.whole_image_dataset(
                table, 8, 3, training=True, seed=1, epoch=2, start_batch=start_batch,
                with_index=True,
            )
        )

    assert order(start_batch=2) == order(start_batch=0)[6:]


def test_cardinality_known_when_raising(tmp_path):
    table = make_table(write_gray_images(tmp_path, 10))

    evaluation = pipeline.whole_image_dataset(table, 8, 4, training=False)
    training = pipeline.whole_image_dataset(table, 8, 4, training=True)
    skipping = pipeline.whole_image_dataset(table, 8, 4, training=False, on_bad_example="skip")

    assert int(evaluation.cardinality()) == 3
    assert int(training.cardinality()) == 2
    assert int(skipping.cardinality()) == tf.data.UNKNOWN_CARDINALITY


# Crops.


def test_crop_takes_box_region(tmp_path):
    array = np.zeros((100, 80, 3), np.uint8)
    array[:] = BLUE
    array[30:70, 20:60] = RED  # rows 30-69, columns 20-59
    path = write_image(tmp_path / "square.png", array)
    box = np.array([[32 / 99, 22 / 79, 67 / 99, 57 / 79]], np.float32)

    dataset = pipeline.crop_dataset([path], box, np.array([7]), 12, 1, training=False)
    crops, labels = next(iter(dataset))

    assert crops.shape == (1, 12, 12, 3)
    np.testing.assert_allclose(crops[0, ..., 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(crops[0, ..., 1:], -1.0, atol=1e-5)
    assert labels.dtype == tf.int32
    assert labels.numpy().tolist() == [7]


def test_crop_outside_image_is_gray(tmp_path):
    path = write_image(tmp_path / "white.png", np.full((10, 10, 3), 255))
    box = np.array([[-1.0, 0.0, 0.0, 1.0]], np.float32)  # entirely above the image

    crops, _ = next(iter(pipeline.crop_dataset([path], box, np.array([0]), 8, 1, training=False)))

    np.testing.assert_allclose(crops[0, :6], 0.0, atol=1e-6)


def test_crop_vector_labels_are_float(tmp_path):
    paths = write_gray_images(tmp_path, 3)
    boxes = np.tile([[0.0, 0.0, 1.0, 1.0]], (3, 1))
    vectors = np.eye(3, attributes.NUM_ATTRIBUTES, dtype=np.uint8)

    dataset = pipeline.crop_dataset(paths, boxes, vectors, 8, 3, training=False, with_index=True)
    features, labels = next(iter(dataset))

    assert labels.dtype == tf.float32
    np.testing.assert_array_equal(labels.numpy(), vectors[features["index"].numpy()])


def test_crop_augment_repeats_per_seed(tmp_path):
    array = np.zeros((32, 32, 3), np.uint8)
    array[:, :16] = RED
    array[:, 16:] = BLUE
    paths = [write_image(tmp_path / f"{row}.png", array) for row in range(16)]
    boxes = np.tile([[0.1, 0.1, 0.9, 0.9]], (16, 1))

    def crops(seed):
        dataset = pipeline.crop_dataset(
            paths, boxes, np.zeros(16, np.int32), 8, 16, training=True, seed=seed, augment=True
        )
        return next(iter(dataset))[0].numpy()

    first = crops(seed=0)
    np.testing.assert_array_equal(first, crops(seed=0))
    assert not np.array_equal(first, crops(seed=1))
    left_is_red = first[:, 4, 0, 0] > 0.5
    assert left_is_red.any()
    assert (~left_is_red).any()
    assert first.min() >= -1.0
    assert first.max() <= 1.0


def ring_crops(tmp_path, scale_jitter, count=32):
    """Crop a white square with a black 8-pixel centre, the box being the square.

    The image is 64 pixels and the square 32, so the 32-pixel crops show the
    centre 8 / factor pixels wide. There is no edge jitter.
    """
    array = np.zeros((64, 64, 3), np.uint8)
    array[16:48, 16:48] = 255
    array[28:36, 28:36] = 0
    paths = [write_image(tmp_path / f"{row}.png", array) for row in range(count)]
    boxes = np.tile([[0.25, 0.25, 0.75, 0.75]], (count, 1))
    dataset = pipeline.crop_dataset(
        paths, boxes, np.zeros(count, np.int32), 32, count, training=True, augment=True,
        box_jitter=0.0, scale_jitter=scale_jitter,
    )
    return next(iter(dataset))[0].numpy()


def centre_widths(crops):
    """Width and left end of the dark run through the middle of each crop's middle row."""
    dark = crops[:, 16, :, 0] < 0.0
    left = np.array([16 - np.argmin(row[16::-1]) + 1 for row in dark])
    right = np.array([16 + np.argmin(row[16:]) for row in dark])
    return right - left, left


def test_crop_scale_jitter_scales_about_centre(tmp_path):
    crops = ring_crops(tmp_path, scale_jitter=2.0)

    widths, left = centre_widths(crops)
    factors = 8.0 / widths
    assert np.all(factors >= 0.5 - 0.05)
    assert np.all(factors <= 2.0 + 0.3)
    assert (factors < 0.9).any()
    assert (factors > 1.1).any()
    # About the centre: the dark centre stays in the middle of every crop.
    np.testing.assert_allclose(left + widths / 2, 16, atol=1.0)


def test_crop_without_scale_jitter_keeps_box(tmp_path):
    widths, left = centre_widths(ring_crops(tmp_path, scale_jitter=1.0))

    np.testing.assert_array_equal(widths, 8)
    np.testing.assert_array_equal(left, 12)


def test_crop_rejects_scale_jitter_below_one(tmp_path):
    with pytest.raises(ValueError, match="scale_jitter must be in"):
        ring_crops(tmp_path, scale_jitter=0.5, count=1)


def test_crop_rejects_empty_boxes(tmp_path):
    paths = write_gray_images(tmp_path, 2)
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.5, 0.2, 0.5, 0.9]], np.float32)

    with pytest.raises(ValueError, match=r"boxes\[1\] = \[0.5"):
        pipeline.crop_dataset(paths, boxes, np.array([0, 1]), 8, 1, training=False)


def test_crop_mirrors_reversed_box(tmp_path):
    array = np.zeros((16, 16, 3), np.uint8)
    array[:, :8] = GREEN
    path = str(tmp_path / "half.png")
    Image.fromarray(array).save(path)
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]], np.float32)

    dataset = pipeline.crop_dataset([path, path], boxes, np.array([0, 1]), 16, 2, training=False)
    crops = next(iter(dataset))[0].numpy()

    np.testing.assert_allclose(crops[1], crops[0][:, ::-1], atol=1e-5)


# Repeated paths: each image is decoded once for all its rows.


def write_noise_images(folder, count, height=20, width=28):
    """Write `count` JPEGs of random pixels, so that crops of different images differ."""
    rng = np.random.default_rng(0)
    return [
        write_image(folder / f"noise_{row:03d}.jpg", rng.integers(0, 256, (height, width, 3)))
        for row in range(count)
    ]


def repeated_crop_inputs(tmp_path, num_images=6, rows_per_image=3):
    """Return (paths, boxes, labels): `rows_per_image` random boxes per image, rows image-major."""
    paths = np.repeat(write_noise_images(tmp_path, num_images), rows_per_image)
    rng = np.random.default_rng(1)
    corners = rng.uniform(0.0, 0.4, (len(paths), 2))
    sides = rng.uniform(0.3, 0.6, (len(paths), 2))
    boxes = np.concatenate([corners, corners + sides], axis=1).astype(np.float32)
    return paths, boxes, np.arange(len(paths), dtype=np.int32)


def crops_by_index(dataset):
    elements = {}
    for features, labels in dataset:
        for index, crop, label in zip(features["index"].numpy(), features["image"].numpy(), labels.numpy()):
            assert int(index) not in elements, f"index {index} appears twice"
            elements[int(index)] = (crop, label)
    return elements


def test_repeated_paths_match_separate_files(tmp_path):
    paths, boxes, labels = repeated_crop_inputs(tmp_path)
    copies = []
    for row, path in enumerate(paths):
        copy = tmp_path / f"copy_{row:03d}.jpg"
        copy.write_bytes(open(path, "rb").read())
        copies.append(str(copy))
    # Batches of 6 keep all 18 rows in training, in a different order for each input.
    options = dict(training=True, seed=1, epoch=2, augment=True, with_index=True)

    grouped = crops_by_index(pipeline.crop_dataset(paths, boxes, labels, 8, 6, **options))
    separate = crops_by_index(pipeline.crop_dataset(copies, boxes, labels, 8, 6, **options))

    assert sorted(grouped) == list(range(18))
    assert sorted(separate) == list(range(18))
    for index, (crop, label) in grouped.items():
        np.testing.assert_array_equal(crop, separate[index][0])
        assert label == index


def test_repeated_paths_training_order(tmp_path, monkeypatch):
    # Windows of 2 images x 3 rows, so that 6 images span 3 mixing windows.
    monkeypatch.setattr(pipeline, "MIX_WINDOW_IMAGES", 2)
    paths, boxes, labels = repeated_crop_inputs(tmp_path)

    def order(seed, epoch):
        dataset = pipeline.crop_dataset(
            paths, boxes, labels, 8, 6, training=True, seed=seed, epoch=epoch, with_index=True
        )
        return indices_of(dataset)

    first = order(seed=3, epoch=5)
    assert first == order(seed=3, epoch=5)
    assert sorted(first) == list(range(18))
    assert first != order(seed=3, epoch=6)
    assert first != order(seed=4, epoch=5)
    window_of_row = {row: position // 6 for position, row in enumerate(first)}
    for image in range(6):
        windows = {window_of_row[row] for row in range(3 * image, 3 * image + 3)}
        assert len(windows) == 1, f"the rows of image {image} span windows {windows}"


def test_repeated_paths_evaluation_keeps_row_order(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "MIX_WINDOW_IMAGES", 2)
    images_written = write_noise_images(tmp_path, 3)
    paths = [images_written[i] for i in (0, 1, 0, 2, 1, 0, 2, 2, 1, 0)]
    boxes = np.tile([[0.1, 0.2, 0.8, 0.9]], (len(paths), 1))

    dataset = pipeline.crop_dataset(
        paths, boxes, np.arange(len(paths)), 8, 3, training=False, with_index=True
    )

    assert indices_of(dataset) == list(range(len(paths)))


def test_repeated_paths_start_batch_resumes_order(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "MIX_WINDOW_IMAGES", 2)
    paths, boxes, labels = repeated_crop_inputs(tmp_path)

    def elements(start_batch):
        dataset = pipeline.crop_dataset(
            paths, boxes, labels, 8, 4, training=True, seed=1, epoch=0, augment=True,
            start_batch=start_batch, with_index=True,
        )
        return [(index, crop) for index, (crop, _) in crops_by_index(dataset).items()]

    resumed, uninterrupted = elements(start_batch=1), elements(start_batch=0)
    assert [index for index, _ in resumed] == [index for index, _ in uninterrupted[4:]]
    for (_, crop), (_, expected) in zip(resumed, uninterrupted[4:]):
        np.testing.assert_array_equal(crop, expected)
    assert elements(start_batch=5) == []


def test_repeated_paths_training_shards_disjoint_and_equal(tmp_path):
    paths, boxes, labels = repeated_crop_inputs(tmp_path)
    shards = []
    for pipeline_id in range(4):
        context = tf.distribute.InputContext(4, pipeline_id, 4)
        dataset = pipeline.crop_dataset(
            paths, boxes, labels, 8, 8, training=True, seed=2, input_context=context,
            with_index=True,
        )
        shards.append(indices_of(dataset))

    assert [len(shard) for shard in shards] == [4, 4, 4, 4]
    assert len({row for shard in shards for row in shard}) == 16


@pytest.mark.parametrize("kind", ["corrupt_middle", "too_large"])
def test_repeated_invalid_file_skipped_once(tmp_path, kind, caplog):
    paths = list(np.repeat(write_noise_images(tmp_path, 3), 2))
    bad_path = tmp_path / "bad.jpg"
    if kind == "too_large":
        png_with_header_size(bad_path, 7000, 6000)
    else:
        bad_path.write_bytes(corrupt_middle_jpeg(tmp_path))
    bad_rows = [1, 2, 5]
    for row in bad_rows:
        paths[row] = str(bad_path)
    boxes = np.tile([[0.0, 0.0, 1.0, 1.0]], (len(paths), 1))
    dataset = pipeline.crop_dataset(
        paths, boxes, np.arange(len(paths)), 8, 2, training=False, on_bad_example="skip",
        with_index=True,
    )

    with caplog.at_level(python_logging.WARNING):
        rows = indices_of(dataset)

    assert rows == [0, 3, 4]
    warnings = [record.getMessage() for record in caplog.records if str(bad_path) in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert "1 invalid image file(s) skipped so far" in warnings[0]


def test_repeated_invalid_file_raises_naming_it(tmp_path):
    paths = list(np.repeat(write_noise_images(tmp_path, 2), 3))
    bad_path = tmp_path / "bad.jpg"
    bad_path.write_bytes(truncated_jpeg(tmp_path))
    paths[3:6] = [str(bad_path)] * 3
    boxes = np.tile([[0.0, 0.0, 1.0, 1.0]], (len(paths), 1))
    dataset = pipeline.crop_dataset(paths, boxes, np.arange(6), 8, 2, training=True, seed=0)

    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        list(dataset)

    message = images.invalid_image_message(str(raised.value))
    assert message.startswith(f"Invalid image file {bad_path}: ")
    assert "probably truncated" in message


# Aligned faces.


def test_aligned_face_crops_centre_box(tmp_path):
    array = np.zeros((218, 178, 3), np.uint8)
    array[40:188, 15:163] = GREEN
    path = write_image(tmp_path / "000001.png", array)

    dataset = pipeline.aligned_face_dataset(make_table([path]), 16, 1, training=False)
    crops, labels = next(iter(dataset))

    assert crops.shape == (1, 16, 16, 3)
    green = crops[0, 1:-1, 1:-1].numpy()
    np.testing.assert_allclose(green[..., 1], 1.0, atol=1e-5)
    np.testing.assert_allclose(green[..., [0, 2]], -1.0, atol=1e-5)
    assert labels.shape == (1, attributes.NUM_ATTRIBUTES)


def test_aligned_face_identity_labels(tmp_path):
    table = make_table(write_gray_images(tmp_path, 4, height=218, width=178))

    dataset = pipeline.aligned_face_dataset(
        table, 8, 4, training=False, label="identities", with_index=True
    )
    features, labels = next(iter(dataset))

    assert labels.dtype == tf.int32
    np.testing.assert_array_equal(labels.numpy(), table.identities[features["index"].numpy()])


# Object classes.


def test_object_folder_labels(tmp_path):
    colours = {"cat": RED, "dog": GREEN, "zebra": BLUE}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for number in range(3):
            write_image(tmp_path / name / f"{number}.JPEG", np.full((12, 20, 3), colour))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")

    dataset, num_classes = pipeline.object_class_dataset(tmp_path, 16, 4, training=True, seed=0)

    assert num_classes == 3
    seen = []
    for batch, labels in dataset:
        assert batch.shape[1:] == (16, 16, 3)
        assert labels.dtype == tf.int32
        centre = batch.numpy()[:, 8, 8]
        channels = np.argmax(centre, axis=1)  # red, green, blue -> 0, 1, 2
        np.testing.assert_array_equal(channels, labels.numpy())
        seen.extend(labels.numpy().tolist())
    assert len(seen) == 8  # 9 images, the last incomplete batch is dropped
    assert set(seen) == {0, 1, 2}


def test_object_folder_missing_raises(tmp_path):
    with pytest.raises(ValueError, match="missing_folder does not exist"):
        pipeline.object_class_dataset(tmp_path / "missing_folder", 16, 4, training=False)


def test_object_folder_rejects_split(tmp_path):
    (tmp_path / "a").mkdir()
    write_image(tmp_path / "a" / "0.png", np.zeros((4, 4, 3)))

    with pytest.raises(ValueError, match="TFDS sources only"):
        pipeline.object_class_dataset(tmp_path, 16, 4, training=False, split="train")


def test_object_tfds_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    with tfds.testing.mock_data(num_examples=6):
        dataset, num_classes = pipeline.object_class_dataset(
            "tfds:imagenet2012", 16, 3, training=True, data_dir=tmp_path, augment=True
        )
        batches = list(dataset)

    assert num_classes == 1000
    assert len(batches) == 2
    for batch, labels in batches:
        assert batch.shape == (3, 16, 16, 3)
        assert batch.dtype == tf.float32
        assert labels.dtype == tf.int32
        assert np.all((labels.numpy() >= 0) & (labels.numpy() < 1000))
        assert batch.numpy().min() >= -1.0
        assert batch.numpy().max() <= 1.0


# Invalid files.


@pytest.mark.parametrize("kind", sorted(INVALID_FILES))
def test_invalid_file_raises_naming_it(tmp_path, kind):
    table, bad_path = table_with_invalid_file(tmp_path, kind)
    dataset = pipeline.whole_image_dataset(table, 8, 2, training=False)

    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        list(dataset)

    message = images.invalid_image_message(str(raised.value))
    assert message.startswith(f"Invalid image file {bad_path}: ")
    assert INVALID_FILES[kind][1] in message


@pytest.mark.parametrize("kind", sorted(INVALID_FILES))
def test_invalid_file_skipped_with_warning(tmp_path, kind, caplog):
    table, bad_path = table_with_invalid_file(tmp_path, kind, bad_row=3)
    dataset = pipeline.whole_image_dataset(
        table, 8, 2, training=False, on_bad_example="skip", with_index=True
    )

    with caplog.at_level(python_logging.WARNING):
        rows = indices_of(dataset)

    assert rows == [0, 1, 2, 4, 5]
    warnings = [record.getMessage() for record in caplog.records if bad_path in record.getMessage()]
    assert len(warnings) == 1
    assert INVALID_FILES[kind][1] in warnings[0]
    assert "1 invalid image file(s) skipped so far" in warnings[0]


def test_skip_at_chunk_edges(tmp_path, caplog):
    # Files are loaded in chunks of 16. Failures at both ends of a chunk and at the
    # end of the data must each be found.
    paths = write_gray_images(tmp_path, 34, height=4, width=4)
    bad_rows = [0, 15, 16, 33]
    for row in bad_rows:
        with open(paths[row], "wb") as file:
            file.write(b"")
    dataset = pipeline.whole_image_dataset(
        make_table(paths), 8, 5, training=False, on_bad_example="skip", with_index=True
    )

    with caplog.at_level(python_logging.WARNING):
        rows = indices_of(dataset)

    assert rows == [row for row in range(34) if row not in bad_rows]
    messages = [record.getMessage() for record in caplog.records]
    for row in bad_rows:
        assert any(paths[row] in message for message in messages)
    assert any("4 invalid image file(s) skipped so far" in message for message in messages)


def test_missing_file_named(tmp_path):
    paths = write_gray_images(tmp_path, 2)
    paths[1] = str(tmp_path / "deleted.jpg")

    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        list(pipeline.whole_image_dataset(make_table(paths), 8, 2, training=False))

    message = images.invalid_image_message(str(raised.value))
    assert message.startswith(f"Invalid image file {paths[1]}: the file does not exist")


def test_raise_invalid_image_errors_cleans_message(tmp_path):
    folder = tmp_path / "ünïcode 'quoted'"
    folder.mkdir()
    table, bad_path = table_with_invalid_file(folder, "empty")
    dataset = pipeline.whole_image_dataset(table, 8, 2, training=False)

    with pytest.raises(images.InvalidImageError) as raised:
        with images.raise_invalid_image_errors():
            list(dataset)

    assert str(raised.value) == (
        f"Invalid image file {bad_path}: the file is empty. Either replace or remove "
        "the file, or pass on_bad_example='skip' (flag --on_bad_example=skip)."
    )


def test_raise_invalid_image_errors_passes_others():
    with pytest.raises(tf.errors.InvalidArgumentError, match="unrelated"):
        with images.raise_invalid_image_errors():
            raise tf.errors.InvalidArgumentError(None, None, "unrelated failure")


# Decompression bombs and image formats.


def test_png_header_above_max_pixels_not_decoded(tmp_path):
    # 7000 x 6000 = 42 megapixels declared, with only 16 bytes of pixel data: the
    # header check must reject it before the decoder reads the missing data.
    paths = write_gray_images(tmp_path, 2)
    paths[0] = png_with_header_size(tmp_path / "bomb.png", 7000, 6000)

    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        list(pipeline.whole_image_dataset(make_table(paths), 8, 2, training=False))

    message = images.invalid_image_message(str(raised.value))
    assert message.startswith(f"Invalid image file {paths[0]}: the image is 7000x6000")
    assert "max_pixels=40000000" in message
    assert "raise max_pixels" in message


def test_jpeg_above_max_pixels_skipped(tmp_path, caplog):
    paths = write_gray_images(tmp_path, 3, height=10, width=10)
    paths[1] = write_image(tmp_path / "large.jpg", np.zeros((30, 40, 3)))
    dataset = pipeline.whole_image_dataset(
        make_table(paths), 8, 3, training=False, on_bad_example="skip", max_pixels=500,
        with_index=True,
    )

    with caplog.at_level(python_logging.WARNING):
        rows = indices_of(dataset)

    assert rows == [0, 2]
    assert any("large.jpg: the image is 40x30" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "GIF", "BMP"])
def test_header_image_size(tmp_path, image_format):
    path = write_image(tmp_path / "image", np.zeros((13, 21, 3)), image_format)

    height, width = images.header_image_size(tf.io.read_file(path))

    assert (int(height), int(width)) == (13, 21)


def test_header_image_size_top_down_bmp(tmp_path):
    path = write_image(tmp_path / "image.bmp", np.zeros((13, 21, 3)))
    contents = bytearray(open(path, "rb").read())
    contents[22:26] = struct.pack("<i", -13)  # a negative height marks top-down rows

    height, width = images.header_image_size(tf.constant(bytes(contents)))

    assert (int(height), int(width)) == (13, 21)


def test_header_image_size_unknown_format():
    # A JPEG XL codestream signature: its header is not parsed.
    height, width = images.header_image_size(tf.constant(b"\xff\x0a" + bytes(30)))

    assert (int(height), int(width)) == (-1, -1)


def test_header_image_size_rejects_webp_signature_alone():
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid WebP header"):
        images.header_image_size(tf.constant(b"RIFF\x00\x00\x00\x00WEBP"))


@pytest.mark.parametrize(
    "mode, options",
    [
        ("RGB", {}),
        ("RGB", {"subsampling": 0}),
        ("RGB", {"progressive": True}),
        ("L", {}),
        ("CMYK", {}),
    ],
)
def test_jpeg_loads_like_decode_image(tmp_path, mode, options):
    # load_images decodes JPEGs with decode_jpeg, the TFRecord pipelines with
    # decode_image; both must give the same pixels.
    array = np.random.default_rng(2).integers(0, 256, (19, 27, 3)).astype(np.uint8)
    path = str(tmp_path / "image.jpg")
    Image.fromarray(array).convert(mode).save(path, quality=90, **options)
    examples = tf.data.Dataset.from_tensor_slices({"path": [path]})

    loaded = next(iter(images.load_images(examples)))["image"].numpy()

    expected = images.decode_image(tf.io.read_file(path)).numpy()
    assert loaded.shape == (19, 27, 3)
    np.testing.assert_array_equal(loaded, expected)


def test_grayscale_png_becomes_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((6, 6), 255, np.uint8), mode="L").save(path)

    crops, _ = next(
        iter(pipeline.crop_dataset([str(path)], [[0, 0, 1, 1]], np.array([0]), 4, 1, training=False))
    )

    assert crops.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(crops.numpy(), 1.0, atol=1e-6)


def test_rgba_png_drops_alpha(tmp_path):
    path = tmp_path / "rgba.png"
    array = np.zeros((6, 6, 4), np.uint8)
    array[..., 0] = 255  # red
    array[..., 3] = 0  # fully transparent
    Image.fromarray(array, mode="RGBA").save(path)

    crops, _ = next(
        iter(pipeline.crop_dataset([str(path)], [[0, 0, 1, 1]], np.array([0]), 4, 1, training=False))
    )

    np.testing.assert_allclose(crops[0, ..., 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(crops[0, ..., 1:], -1.0, atol=1e-6)


# Argument checks.


def test_cache_with_training_rejected(tmp_path):
    table = make_table(write_gray_images(tmp_path, 2))

    with pytest.raises(ValueError, match="cache=True"):
        pipeline.whole_image_dataset(table, 8, 2, training=True, cache=True)


def test_cache_for_evaluation_repeats_elements(tmp_path):
    table = make_table(write_gray_images(tmp_path, 3))
    dataset = pipeline.whole_image_dataset(table, 8, 2, training=False, cache=True)

    first = [batch.numpy() for batch, _ in dataset]
    second = [batch.numpy() for batch, _ in dataset]

    for before, after in zip(first, second):
        np.testing.assert_array_equal(before, after)


def test_invalid_on_bad_example_rejected(tmp_path):
    table = make_table(write_gray_images(tmp_path, 2))

    with pytest.raises(ValueError, match="on_bad_example='ignore' is invalid"):
        pipeline.whole_image_dataset(table, 8, 2, training=False, on_bad_example="ignore")


def test_attributes_must_be_binary(tmp_path):
    paths = write_gray_images(tmp_path, 2)
    table = make_table(paths)
    table.attributes = table.attributes.astype(np.int8)
    table.attributes[1, 5] = -1

    with pytest.raises(ValueError, match=r"attributes\[1, 5\] = -1"):
        pipeline.whole_image_dataset(table, 8, 2, training=False)
