"""Sharded TFRecords of a CelebA table, and the tf.data pipeline that reads them.

The per-file pipelines open one file per image. On network file systems and
object stores every open has latency, so a few hundred large files read in
parallel are the usual input for many workers. `write_tfrecords` converts a
`CelebATable` once, and `tfrecord_dataset` reads the result with the element
structure of `pipeline.whole_image_dataset`. docs/benchmarks.md compares the two
on a local disk.

An output folder holds, per partition, `<split>-<i>-of-<n>.tfrecord` files and
`manifest.json`, which lists the conversion's settings and, for every finished
shard, its example count, byte size and SHA-256. Rows are assigned to shards by a
permutation seeded with `seed`, so every shard is a uniform sample of its partition
and a rerun with the same settings assigns the same rows to the same shards.

Each record is a `tf.train.Example` with the features of `FEATURE_SPEC`, plus those
of `OPTIONAL_FEATURE_SPEC` that the table has (the manifest lists them):

| feature | type | content |
| --- | --- | --- |
| `image/encoded` | bytes | the image file's bytes, as on disk |
| `image/format` | bytes | "jpeg" or "png" |
| `image/height`, `image/width` | int64 | pixels |
| `image/name` | bytes | file name in the annotation files, e.g. "000001.jpg" |
| `row` | int64 | row of the converted table |
| `attributes` | int64 [40] | 0 or 1, in `attributes.ATTRIBUTE_NAMES` order |
| `partition` | int64 | 0 train, 1 validation, 2 test |
| `box` | int64 [4] | face box x_1, y_1, width, height in pixels |
| `landmarks` | int64 [10] | x, y pairs in `attributes.LANDMARK_COLUMNS` order |
| `identity` | int64 | identity id as released |
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import os
from typing import Callable, Optional

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from lnet_anet_tf import attributes as attribute_names
from lnet_anet_tf.data import images
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data.table import CelebATable

MANIFEST_FILENAME = "manifest.json"
MANIFEST_VERSION = 1
IMAGE_KINDS = ("wild", "aligned")
SHARD_SUFFIX = ".tfrecord"
# Prefix of the temporary file of a shard being written; a rerun deletes leftovers.
TEMPORARY_PREFIX = ".tmp-"

FEATURE_SPEC = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/name": tf.io.FixedLenFeature([], tf.string),
    "row": tf.io.FixedLenFeature([], tf.int64),
    "attributes": tf.io.FixedLenFeature([attribute_names.NUM_ATTRIBUTES], tf.int64),
    "partition": tf.io.FixedLenFeature([], tf.int64),
}
OPTIONAL_FEATURE_SPEC = {
    "box": tf.io.FixedLenFeature([4], tf.int64),
    "landmarks": tf.io.FixedLenFeature([10], tf.int64),
    "identity": tf.io.FixedLenFeature([], tf.int64),
}
# Table column behind each optional feature; landmarks follow the image kind.
_OPTIONAL_COLUMNS = {"box": "boxes", "identity": "identities"}
_LANDMARK_COLUMNS = {"wild": "wild_landmarks", "aligned": "aligned_landmarks"}
_PATH_COLUMNS = {"wild": "wild_paths", "aligned": "aligned_paths"}

DEFAULT_CYCLE_LENGTH = 8
DEFAULT_SHUFFLE_BUFFER_SIZE = 1024


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def split_pattern(output_dir: str, split: str) -> str:
    """Return the glob pattern of the shards of `split` ("train", ...) in `output_dir`."""
    return os.path.join(output_dir, f"{split}-*-of-*{SHARD_SUFFIX}")


# ---------------------------------------------------------------------------
# Planning: which rows go into which shard.


@dataclasses.dataclass(frozen=True)
class Shard:
    """One output file and the table rows it holds, in writing order."""

    split: str
    name: str
    rows: np.ndarray


def plan_shards(table: CelebATable, num_shards: int, seed: int) -> list:
    """Assign the rows of each partition to `num_shards` shards (fewer for tiny partitions).

    A partition with fewer rows than `num_shards` gets one shard per row, so no
    shard is empty.
    """
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}.")
    partitions = table.require("partitions", "Converting to TFRecords")
    shards = []
    for split, code in attribute_names.PARTITIONS.items():
        rows = np.flatnonzero(partitions == code)
        if not len(rows):
            continue
        rows = np.random.default_rng([seed, code]).permutation(rows)
        count = min(num_shards, len(rows))
        for index, shard_rows in enumerate(np.array_split(rows, count)):
            shards.append(Shard(split, shard_name(split, index, count), shard_rows))
    return shards


def rows_sha256(table: CelebATable) -> str:
    """Return the SHA-256 of the table's image names and partitions, in row order.

    The manifest stores it, so a table read with other skips or from another copy
    is never mixed into, or trained against, the shards of an earlier conversion.
    """
    digest = hashlib.sha256()
    digest.update("\n".join(table.image_names.tolist()).encode("utf-8"))
    digest.update(np.asarray(table.partitions, np.int64).tobytes())
    return digest.hexdigest()


def _conversion_settings(table: CelebATable, image_kind: str, num_shards: int, seed: int, fields) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "image": image_kind,
        "num_shards": num_shards,
        "seed": seed,
        "num_rows": len(table),
        "rows_sha256": rows_sha256(table),
        "fields": list(fields),
    }


# ---------------------------------------------------------------------------
# Writing.


def write_tfrecords(
    table: CelebATable,
    output_dir: str,
    *,
    num_shards: int,
    image: str = "wild",
    seed: int = 0,
    verify_images: bool = True,
    progress: Optional[bool] = None,
) -> dict:
    """Convert `table` into sharded TFRecords in `output_dir`; return the manifest.

    `image` picks the in-the-wild photos ("wild") or the aligned crops ("aligned").
    Resumable: each shard is written to a temporary file and renamed when complete,
    and the manifest is updated after each one. A rerun with the same table and
    settings keeps every shard whose size and SHA-256 match the manifest, deletes
    leftover temporary files and writes the rest. At the end every shard's count
    and size are checked against the plan. `verify_images` decodes each image
    before writing it, so that a damaged file fails here, with its path, rather
    than during training. `progress=None` shows a progress bar on a terminal.
    """
    if image not in IMAGE_KINDS:
        raise ValueError(f"image={image!r} is invalid; expected one of {IMAGE_KINDS}.")
    paths = table.require(_PATH_COLUMNS[image], f"Converting the {image} images to TFRecords")
    columns = _optional_columns(table, image)
    shards = plan_shards(table, num_shards, seed)
    settings = _conversion_settings(table, image, num_shards, seed, columns)

    os.makedirs(output_dir, exist_ok=True)
    manifest = _start_manifest(output_dir, settings, shards)
    _delete_temporary_files(output_dir)
    pending = [shard for shard in shards if not _is_finished(output_dir, shard, manifest)]
    logging.info(
        "Converting %d rows into %d shards in %s: %d finished before, %d to write.",
        len(table), len(shards), output_dir, len(shards) - len(pending), len(pending),
    )

    with _progress_bar(sum(len(shard.rows) for shard in pending), progress) as bar:
        for shard in pending:
            manifest["shards"][shard.name] = _write_shard(
                output_dir, shard, table, paths, columns, verify_images, bar.update
            )
            _write_manifest(output_dir, manifest)

    _verify_outputs(output_dir, shards, manifest)
    manifest["complete"] = True
    _write_manifest(output_dir, manifest)
    return manifest


def _optional_columns(table: CelebATable, image_kind: str) -> dict:
    """Return optional feature name -> table column, for the columns the table has."""
    columns = dict(_OPTIONAL_COLUMNS, landmarks=_LANDMARK_COLUMNS[image_kind])
    return {feature: column for feature, column in columns.items() if table.has(column)}


def _start_manifest(output_dir: str, settings: dict, shards: list) -> dict:
    """Load the manifest of an earlier run with the same settings, or start a new one."""
    manifest = read_manifest(output_dir, require_complete=False)
    if manifest is not None:
        saved = {key: manifest.get(key) for key in settings}
        if saved != settings:
            changed = sorted(key for key in settings if saved[key] != settings[key])
            raise ValueError(
                f"{output_dir} contains TFRecords of a different conversion (differs in: "
                f"{', '.join(changed)}). Use a new --output_dir, or the same data and flags "
                "as that conversion to resume it."
            )
        manifest["complete"] = False
        return manifest
    splits = {}
    for shard in shards:
        entry = splits.setdefault(shard.split, {"num_examples": 0, "shards": []})
        entry["num_examples"] += len(shard.rows)
        entry["shards"].append(shard.name)
    return {**settings, "complete": False, "splits": splits, "shards": {}}


def _delete_temporary_files(output_dir: str) -> None:
    for path in glob.glob(os.path.join(output_dir, TEMPORARY_PREFIX + "*")):
        logging.info("Deleting %s, left by an interrupted conversion.", path)
        os.remove(path)


def _is_finished(output_dir: str, shard: Shard, manifest: dict) -> bool:
    entry = manifest["shards"].get(shard.name)
    path = os.path.join(output_dir, shard.name)
    if entry is None or not os.path.isfile(path):
        return False
    if os.path.getsize(path) == entry["num_bytes"] and file_sha256(path) == entry["sha256"]:
        return True
    logging.warning("Shard %s differs from the manifest; writing it again.", path)
    del manifest["shards"][shard.name]
    return False


def _write_shard(output_dir, shard, table, paths, columns, verify_images, advance) -> dict:
    path = os.path.join(output_dir, shard.name)
    temporary = os.path.join(output_dir, f"{TEMPORARY_PREFIX}{os.getpid()}-{shard.name}")
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for row in shard.rows:
                writer.write(_encode_row(table, int(row), paths[row], columns, verify_images))
                advance(1)
        entry = {
            "num_examples": len(shard.rows),
            "num_bytes": os.path.getsize(temporary),
            "sha256": file_sha256(temporary),
        }
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return entry


def _encode_row(table: CelebATable, row: int, path: str, columns: dict, verify_images: bool) -> bytes:
    with open(path, "rb") as file:
        contents = file.read()
    image_format, height, width = _inspect_image(path, contents, verify_images)
    features = {
        "image/encoded": _bytes_feature(contents),
        "image/format": _bytes_feature(image_format.encode("ascii")),
        "image/height": _int_feature([height]),
        "image/width": _int_feature([width]),
        "image/name": _bytes_feature(str(table.image_names[row]).encode("utf-8")),
        "row": _int_feature([row]),
        "attributes": _int_feature(table.attributes[row]),
        "partition": _int_feature([table.partitions[row]]),
    }
    for feature, column in columns.items():
        features[feature] = _int_feature(np.atleast_1d(getattr(table, column)[row]))
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()


def _inspect_image(path: str, contents: bytes, verify: bool) -> tuple[str, int, int]:
    """Return (format, height, width) of an encoded image; raise naming `path` if invalid."""
    try:
        with Image.open(io.BytesIO(contents)) as image:
            image_format = (image.format or "").lower()
            width, height = image.size
            if verify:
                image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise images.InvalidImageError(
            f"Invalid image file {path}: {error}. Replace the file with a good copy, or "
            "drop its row from the annotation files."
        ) from error
    if image_format not in ("jpeg", "png"):
        raise images.InvalidImageError(
            f"Image file {path} is {image_format.upper() or 'of an unknown format'}; the "
            "TFRecords hold JPEG or PNG images. Convert the file to JPEG."
        )
    return image_format, height, width


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(output_dir: str, manifest: dict) -> None:
    path = os.path.join(output_dir, MANIFEST_FILENAME)
    temporary = os.path.join(output_dir, f"{TEMPORARY_PREFIX}{os.getpid()}-{MANIFEST_FILENAME}")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(temporary, path)


def _verify_outputs(output_dir: str, shards: list, manifest: dict) -> None:
    """Check that every planned shard exists with the manifest's size and the planned count."""
    for shard in shards:
        path = os.path.join(output_dir, shard.name)
        entry = manifest["shards"].get(shard.name)
        if entry is None or not os.path.isfile(path):
            raise RuntimeError(f"Shard {path} is missing after the conversion. Run it again.")
        if entry["num_examples"] != len(shard.rows) or os.path.getsize(path) != entry["num_bytes"]:
            raise RuntimeError(
                f"Shard {path} has {os.path.getsize(path)} bytes and {entry['num_examples']} "
                f"examples; expected {entry['num_bytes']} bytes and {len(shard.rows)} examples. "
                "Delete it and run the conversion again."
            )
    for split, entry in manifest["splits"].items():
        total = sum(manifest["shards"][name]["num_examples"] for name in entry["shards"])
        if total != entry["num_examples"]:
            raise RuntimeError(
                f"The {split} shards in {output_dir} hold {total} examples; expected "
                f"{entry['num_examples']}. Delete the folder and convert again."
            )


class _progress_bar:
    """A tqdm progress bar that is shown on a terminal (or when `enabled` is True)."""

    def __init__(self, total: int, enabled: Optional[bool]):
        import sys

        from tqdm import tqdm  # a dependency of tensorflow-datasets

        show = sys.stderr.isatty() if enabled is None else enabled
        self._bar = tqdm(total=total, unit="image", disable=not show)
        self.update = self._bar.update

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._bar.close()


def read_manifest(output_dir: str, require_complete: bool = True) -> Optional[dict]:
    """Return the manifest of a TFRecord folder, or None when it has none.

    With `require_complete`, a missing or unfinished manifest raises
    FileNotFoundError saying how to finish the conversion.
    """
    path = os.path.join(output_dir, MANIFEST_FILENAME)
    if not os.path.isfile(path):
        if require_complete:
            raise FileNotFoundError(
                f"{path} does not exist: {output_dir} is not a TFRecord folder written by "
                "scripts/convert_to_tfrecords.py. Convert the CelebA copy first."
            )
        return None
    with open(path, encoding="utf-8") as file:
        manifest = json.load(file)
    if require_complete and not manifest.get("complete"):
        raise FileNotFoundError(
            f"The conversion into {output_dir} did not finish ({len(manifest['shards'])} "
            "shards written). Rerun scripts/convert_to_tfrecords.py with the same flags "
            "to complete it."
        )
    return manifest


# ---------------------------------------------------------------------------
# Reading.


def list_shards(pattern: str) -> tuple[list, list]:
    """Return the sorted shard paths matching `pattern` and their example counts.

    The counts come from the manifest in the pattern's folder; a matched file that
    the manifest does not list raises ValueError.
    """
    paths = sorted(tf.io.gfile.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"No TFRecord files match {pattern}.")
    directory = os.path.dirname(pattern)
    manifest = read_manifest(directory)
    counts = []
    for path in paths:
        entry = manifest["shards"].get(os.path.basename(path))
        if entry is None:
            raise ValueError(
                f"{path} matches {pattern} but is not listed in "
                f"{os.path.join(directory, MANIFEST_FILENAME)}; pass a pattern that matches "
                "the converted shards only."
            )
        counts.append(entry["num_examples"])
    return paths, counts


def shard_files(files, input_context: Optional[tf.distribute.InputContext]) -> list:
    """Return the files (paths or indices) of input pipeline `input_context.input_pipeline_id`.

    Pipeline i of k reads files i, i + k, i + 2k, ..., so the pipelines read
    disjoint files that together are all of them. Raises ValueError when there are
    fewer files than pipelines.
    """
    files = list(files)
    if input_context is None or input_context.num_input_pipelines == 1:
        return files
    num_pipelines = input_context.num_input_pipelines
    if len(files) < num_pipelines:
        raise ValueError(
            f"{len(files)} TFRecord files cannot be split among {num_pipelines} input "
            f"pipelines; convert with --num_shards of at least {num_pipelines}."
        )
    return files[input_context.input_pipeline_id :: num_pipelines]


def file_order(num_files: int, *, training: bool, seed: int, epoch: int) -> np.ndarray:
    """Return the order in which files are read: permuted by (seed, epoch) in training."""
    if not training:
        return np.arange(num_files)
    return np.random.default_rng([seed, epoch]).permutation(num_files)


def parse_example(serialized: tf.Tensor, optional_fields=()) -> dict:
    """Parse one serialized record: `FEATURE_SPEC` plus the named optional features."""
    spec = dict(FEATURE_SPEC)
    for field in optional_fields:
        spec[field] = OPTIONAL_FEATURE_SPEC[field]
    return tf.io.parse_single_example(serialized, spec)


def read_checked_shard(path: tf.Tensor, expected: tf.Tensor) -> tf.data.Dataset:
    """Read the records of one shard; raise InvalidArgumentError naming it if any is lost.

    TFRecordDataset's DataLossError does not name the file. The shard is therefore
    read with errors ignored, which ends it at the first bad record, and after its
    last record the number read is compared with `expected`, the manifest's count.
    """
    records = tf.data.TFRecordDataset(path).ignore_errors()
    records = records.map(lambda record: (record, False))
    end = tf.data.Dataset.from_tensors((tf.constant(b""), True))

    def count(number, item):
        record, is_end = item
        return number + tf.cast(~is_end, tf.int64), (record, is_end, number)

    def check(record, is_end, number):
        message = tf.strings.join([
            "TFRecord shard ", path, " is corrupt or truncated: ",
            tf.strings.as_string(number), " records could be read, the manifest lists ",
            tf.strings.as_string(expected), ". Rerun scripts/convert_to_tfrecords.py "
            "with the same flags; it rewrites shards that differ from the manifest.",
        ])
        valid = tf.logical_or(~is_end, tf.equal(number, expected))
        with tf.control_dependencies([tf.debugging.Assert(valid, [message])]):
            return tf.identity(record), is_end

    checked = records.concatenate(end).scan(tf.constant(0, tf.int64), count).map(check)
    return checked.filter(lambda record, is_end: ~is_end).map(lambda record, _: record)


def read_records(pattern: str, *, cycle_length: int = 1, deterministic: bool = True) -> tf.data.Dataset:
    """Return every record matching `pattern`, parsed with the manifest's fields, undecoded.

    With `cycle_length=1` the records come file by file in sorted file order.
    """
    paths, counts = list_shards(pattern)
    fields = read_manifest(os.path.dirname(pattern))["fields"]
    files = tf.data.Dataset.from_tensor_slices((paths, np.asarray(counts, np.int64)))
    records = files.interleave(
        read_checked_shard, cycle_length=cycle_length,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
    )
    return records.map(lambda record: parse_example(record, fields))


def tfrecord_dataset(
    pattern: str,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    augment: bool = False,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER_SIZE,
    deterministic: bool = True,
    input_context: Optional[tf.distribute.InputContext] = None,
    with_index: bool = False,
) -> tf.data.Dataset:
    """Build letterboxed images with their attributes from the shards matching `pattern`.

    Elements are those of `pipeline.whole_image_dataset`: (images [B, S, S, 3]
    float32 in [-1, 1], attributes [B, 40] float32), or with `with_index` a dict of
    "image", "index" (the row of the converted table) and "window".

    Files, not rows, are split among input pipelines (`shard_files`). With
    `training=True` the file order is permuted by (seed, epoch) before the split.
    Records of `cycle_length` files are interleaved and then shuffled in a buffer of
    `shuffle_buffer_size`. Every pipeline stops after the smallest pipeline's count
    of full batches, so all replicas run the same number of steps. With
    `training=False` every record is read once and the last batch may be partial.
    `batch_size` is global when `input_context` is given. `start_batch` skips that
    many batches of this pipeline, reading their records.
    """
    _check_reader_options(image_size=image_size, batch_size=batch_size,
                          cycle_length=cycle_length, shuffle_buffer_size=shuffle_buffer_size)
    paths, counts = list_shards(pattern)
    order = file_order(len(paths), training=training, seed=seed, epoch=epoch)
    own = shard_files(order, input_context)
    per_replica_batch_size = (
        batch_size if input_context is None else input_context.get_per_replica_batch_size(batch_size)
    )
    num_batches = _batches_per_pipeline(counts, order, own, input_context,
                                        per_replica_batch_size, training)

    files = tf.data.Dataset.from_tensor_slices(
        (np.asarray(paths)[own], np.asarray(counts, np.int64)[own])
    )
    records = files.interleave(
        read_checked_shard,
        cycle_length=min(cycle_length, len(own)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    order_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    if training:
        # NOTE: tf.data's shuffle combines this seed with TensorFlow's global seed, so
        # the order repeats for the same (seed, epoch) only under the same global seed.
        records = records.shuffle(shuffle_buffer_size, seed=order_seed, reshuffle_each_iteration=False)
    # The flip of each example is seeded with (seed, epoch) and its table row, as in
    # `pipeline.whole_image_dataset` over the same table.
    prepare = pipeline.whole_image_fn(
        image_size, seed=seed, epoch=epoch, augment=augment, with_index=with_index
    )
    examples = records.map(
        lambda record: prepare(_decode_record(record)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    batches = examples.batch(
        per_replica_batch_size,
        drop_remainder=training,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    batches = batches.take(num_batches).skip(start_batch)
    batches = batches.apply(tf.data.experimental.assert_cardinality(max(num_batches - start_batch, 0)))
    options = tf.data.Options()
    options.deterministic = deterministic
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


def _batches_per_pipeline(counts, order, own, input_context, batch_size: int, training: bool) -> int:
    counts = np.asarray(counts)
    if not training:
        return -(-int(counts[own].sum()) // batch_size)
    if input_context is None:
        return int(counts.sum()) // batch_size
    # Every pipeline computes the same split of the same file order, so they agree
    # on the smallest total.
    num_pipelines = input_context.num_input_pipelines
    totals = [int(counts[order[i::num_pipelines]].sum()) for i in range(num_pipelines)]
    return min(totals) // batch_size


def _decode_record(record: tf.Tensor) -> dict:
    """Parse a record into the example dict that `pipeline.whole_image_fn` maps."""
    example = parse_example(record)
    return {
        "image": images.decode_image(example["image/encoded"]),
        "index": example["row"],
        "label": tf.cast(example["attributes"], tf.float32),
    }


def _check_reader_options(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")
