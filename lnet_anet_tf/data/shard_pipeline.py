"""tf.data pipelines that read TFRecord shards and give the per-file pipelines' elements.

In `pipeline.whole_image_dataset` and `pipeline.crop_dataset` example i reads one
image file. Here example i names a table row, `rows[i]`, and its image comes from
the record with that `row` (see `shard_source`). Each record is decoded once and
gives all of its examples; ANet's patches of one face, for example, are several
examples of one row. Boxes and labels come from the input arrays, and the map
functions of the per-file pipelines (`pipeline.whole_image_fn`,
`pipeline.crop_fn`) prepare each example. Example i therefore gives the same
element under both inputs, with the same augmentation. The inputs differ in:

- Order. Files, not rows, are permuted by (seed, epoch) in training. The records
  of `cycle_length` files are interleaved and shuffled in a buffer of
  `shuffle_buffer_size` records. When records give several examples, a second
  buffer mixes the examples of about `EXAMPLE_SHUFFLE_RECORDS` records. With
  `training=False` the files keep their order; use `with_index` to place results.
- Sharding. With a `tf.distribute.InputContext`, the files that contain examples
  are split among the input pipelines (`assign_files`). Taken in the epoch's order,
  each file goes to the pipeline with the fewest examples so far, so the pipelines
  read disjoint files of nearly equal example counts. In training every pipeline stops
  after the smallest pipeline's number of full batches, so all replicas run the
  same number of steps. `min_examples_per_pipeline` returns the smallest pipeline's
  size over a run's epochs.
- Invalid data. The images were checked when converted, and a record that does
  not decode raises. A record whose row is not one that the conversion plan puts
  in its file, or whose partition or attributes differ from the table's, raises
  InvalidArgumentError naming the shard.

NOTE: tf.data's shuffle combines its seed with TensorFlow's global seed, so the
order repeats for the same (seed, epoch) only under the same global seed. The
training job sets that seed in every stage.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from lnet_anet_tf.data import images
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data import tfrecords
from lnet_anet_tf.data.shard_source import ShardSource

# Records whose examples the second shuffle buffer holds, when a record gives several.
EXAMPLE_SHUFFLE_RECORDS = 16

# The record features that locating and checking a record need; the rest are skipped.
_LOCATE_SPEC = {
    name: tfrecords.FEATURE_SPEC[name] for name in ("image/encoded", "row", "partition", "attributes")
}


@dataclasses.dataclass(frozen=True)
class _Join:
    """The example positions of each key (part * num_rows + row), and the files to read."""

    num_rows: int
    partitions: np.ndarray  # [num_rows] int8 partition code of every table row
    attributes: np.ndarray  # [num_rows, 40] int8 0/1 attributes of every table row
    example_order: np.ndarray  # [M] int64 example ids, sorted by key
    starts: np.ndarray  # [num_keys] first position of the key in example_order
    counts: np.ndarray  # [num_keys] examples of the key
    file_of_key: np.ndarray  # [num_keys] index of the file that contains the key's row, or -1
    paths: np.ndarray  # [F] files that contain at least one example
    file_parts: np.ndarray  # [F] part of each file
    file_records: np.ndarray  # [F] records of each file
    file_examples: np.ndarray  # [F] examples that each file gives


def whole_image_shard_dataset(
    source: ShardSource,
    rows: np.ndarray,
    labels: np.ndarray,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = False,
    input_context: Optional[tf.distribute.InputContext] = None,
    with_index: bool = False,
    cycle_length: int = tfrecords.DEFAULT_CYCLE_LENGTH,
    shuffle_buffer_size: int = tfrecords.DEFAULT_SHUFFLE_BUFFER_SIZE,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Build letterboxed images of the table rows `rows` with `labels`, from shards.

    Elements are those of `pipeline.whole_image_dataset` over the same rows;
    "index" is the position in `rows`.
    """
    prepare = pipeline.whole_image_fn(
        image_size, seed=seed, epoch=epoch, augment=augment, with_index=with_index
    )
    rows = np.asarray(rows)
    columns = {"label": pipeline.check_labels(labels, len(rows))}
    return _joined_dataset(
        [(source, rows)], columns, prepare, batch_size=batch_size, training=training,
        seed=seed, epoch=epoch, input_context=input_context, cycle_length=cycle_length,
        shuffle_buffer_size=shuffle_buffer_size, deterministic=deterministic,
    )


def crop_shard_dataset(
    parts: Sequence[tuple],
    boxes: np.ndarray,
    labels: np.ndarray,
    crop_size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = False,
    box_jitter: float = pipeline.DEFAULT_BOX_JITTER,
    scale_jitter: float = 1.0,
    input_context: Optional[tf.distribute.InputContext] = None,
    with_index: bool = False,
    cycle_length: int = tfrecords.DEFAULT_CYCLE_LENGTH,
    shuffle_buffer_size: int = tfrecords.DEFAULT_SHUFFLE_BUFFER_SIZE,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Build crops of `boxes` from the images of table rows, read from shards.

    `parts` is a sequence of (ShardSource, rows): the examples are the rows of
    every part, in order, so that `boxes` [M, 4] and `labels` [M] or [M, K] have
    one entry per row of all parts together. Two parts can read two conversions of
    the same table, for example in-the-wild and aligned images. Elements are those
    of `pipeline.crop_dataset` over the same examples; "index" is the position in
    the concatenated rows.
    """
    prepare = pipeline.crop_fn(
        crop_size, seed=seed, epoch=epoch, augment=augment, box_jitter=box_jitter,
        scale_jitter=scale_jitter, with_index=with_index,
    )
    num_examples = sum(len(rows) for _, rows in parts)
    columns = {
        "box": pipeline.check_boxes(boxes, num_examples),
        "label": pipeline.check_labels(labels, num_examples),
    }
    return _joined_dataset(
        parts, columns, prepare, batch_size=batch_size, training=training, seed=seed,
        epoch=epoch, input_context=input_context, cycle_length=cycle_length,
        shuffle_buffer_size=shuffle_buffer_size, deterministic=deterministic,
    )


def min_examples_per_pipeline(parts: Sequence[tuple], num_pipelines: int, *, seed: int, epochs: int) -> int:
    """Return the fewest training examples that one of `num_pipelines` pipelines reads.

    The minimum is over the epochs 0 .. epochs - 1, whose file orders differ, so a
    training loop can fix its steps per epoch before the first epoch.
    """
    join = _join(parts)
    totals = []
    for epoch in range(max(epochs, 1)):
        order = tfrecords.file_order(len(join.paths), training=True, seed=seed, epoch=epoch)
        for files in assign_files(order, join.file_examples, num_pipelines):
            totals.append(int(join.file_examples[files].sum()))
    return min(totals)


def assign_files(order: np.ndarray, file_examples: np.ndarray, num_pipelines: int) -> list:
    """Split files among `num_pipelines` input pipelines; return each one's file indices.

    Taken in `order`, each file goes to the pipeline with the fewest examples so far
    (the lowest id on ties), so the counts differ by at most one file's examples.
    Raises ValueError when there are fewer files than pipelines.
    """
    if len(order) < num_pipelines:
        raise ValueError(
            f"{len(order)} TFRecord files contain the examples, too few to split among "
            f"{num_pipelines} input pipelines; convert with --num_shards of at least "
            f"{num_pipelines}."
        )
    totals = np.zeros(num_pipelines, np.int64)
    assigned = [[] for _ in range(num_pipelines)]
    for file_index in order:
        pipeline_id = int(np.argmin(totals))
        assigned[pipeline_id].append(file_index)
        totals[pipeline_id] += file_examples[file_index]
    return [np.asarray(files, np.int64) for files in assigned]


def _join(parts: Sequence[tuple]) -> _Join:
    if not parts:
        raise ValueError("parts is empty; pass at least one (ShardSource, rows) pair.")
    first = parts[0][0]
    keys = []
    for part, (source, rows) in enumerate(parts):
        same_table = np.array_equal(source.partitions, first.partitions) and np.array_equal(
            source.attributes, first.attributes
        )
        if not same_table:
            raise ValueError(
                f"The TFRecords in {source.directory} and {first.directory} were checked "
                "against different tables; open every part against the same table."
            )
        keys.append(part * first.num_rows + _check_rows(rows, first.num_rows, part))
    keys = np.concatenate(keys)
    if len(keys) == 0:
        raise ValueError("The pipeline has no examples: every part has empty rows.")

    counts = np.bincount(keys, minlength=len(parts) * first.num_rows)
    file_of_key = np.full(len(counts), -1, np.int64)
    files = {"paths": [], "parts": [], "records": [], "examples": []}
    for part, (source, _) in enumerate(parts):
        for path, shard_rows in zip(source.paths, source.rows):
            shard_keys = part * first.num_rows + shard_rows
            num_examples = int(counts[shard_keys].sum())
            if num_examples == 0:
                continue
            file_of_key[shard_keys] = len(files["paths"])
            for name, value in zip(files, (path, part, len(shard_rows), num_examples)):
                files[name].append(value)
    return _Join(
        num_rows=first.num_rows,
        partitions=np.asarray(first.partitions, np.int8),
        attributes=np.asarray(first.attributes, np.int8),
        example_order=np.argsort(keys, kind="stable").astype(np.int64),
        starts=(np.cumsum(counts) - counts).astype(np.int64),
        counts=counts.astype(np.int64),
        file_of_key=file_of_key,
        paths=np.asarray(files["paths"], dtype=str),
        file_parts=np.asarray(files["parts"], np.int64),
        file_records=np.asarray(files["records"], np.int64),
        file_examples=np.asarray(files["examples"], np.int64),
    )


def _check_rows(rows, num_rows: int, part: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
        raise ValueError(f"rows of part {part} must be a 1-D integer array, got shape {rows.shape}.")
    invalid = (rows < 0) | (rows >= num_rows)
    if invalid.any():
        position = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"rows[{position}] of part {part} is {rows[position]}; table rows are 0 to "
            f"{num_rows - 1}."
        )
    return rows.astype(np.int64)


def _joined_dataset(
    parts, columns: dict, prepare, *, batch_size: int, training: bool, seed: int, epoch: int,
    input_context, cycle_length: int, shuffle_buffer_size: int, deterministic: bool,
) -> tf.data.Dataset:
    """Read this pipeline's files, join each record to its examples and batch them."""
    for name, value in (("batch_size", batch_size), ("cycle_length", cycle_length),
                        ("shuffle_buffer_size", shuffle_buffer_size)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    join = _join(parts)
    order = tfrecords.file_order(len(join.paths), training=training, seed=seed, epoch=epoch)
    num_pipelines, pipeline_id, per_replica_batch_size = 1, 0, batch_size
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        per_replica_batch_size = input_context.get_per_replica_batch_size(batch_size)
    assigned = assign_files(order, join.file_examples, num_pipelines)
    own = assigned[pipeline_id]
    if training:
        num_batches = min(int(join.file_examples[files].sum()) for files in assigned) // per_replica_batch_size
    else:
        num_batches = -(-int(join.file_examples[own].sum()) // per_replica_batch_size)

    records = _read_files(join, own, cycle_length, deterministic)
    records = records.map(_locate_fn(join), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
    counts = tf.constant(join.counts)
    records = records.filter(lambda record: tf.gather(counts, record["key"]) > 0)
    order_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    if training:
        records = records.shuffle(shuffle_buffer_size, seed=order_seed, reshuffle_each_iteration=False)
    decoded = records.map(
        lambda record: {"image": images.decode_image(record["contents"]), "key": record["key"]},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
    )
    examples = decoded.flat_map(_expand_fn(join, columns))
    examples = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    max_examples_per_record = int(join.counts.max())
    if training and max_examples_per_record > 1:
        # Consecutive examples come from one record; mix them across records.
        examples = examples.shuffle(
            EXAMPLE_SHUFFLE_RECORDS * max_examples_per_record, seed=order_seed + 1,
            reshuffle_each_iteration=False,
        )
    batches = examples.batch(
        per_replica_batch_size, drop_remainder=training,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
    )
    batches = batches.take(num_batches).apply(tf.data.experimental.assert_cardinality(num_batches))
    options = tf.data.Options()
    options.deterministic = deterministic
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


def _read_files(join: _Join, own: np.ndarray, cycle_length: int, deterministic: bool) -> tf.data.Dataset:
    """Interleave the records of this pipeline's files, each with its file's path, part and index."""
    files = tf.data.Dataset.from_tensor_slices(
        (join.paths[own], join.file_records[own], join.file_parts[own], own)
    )

    def read(path, expected, part, file_index):
        records = tfrecords.read_checked_shard(path, expected)
        return records.map(lambda record: (record, path, part, file_index))

    return files.interleave(
        read, cycle_length=min(cycle_length, len(own)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
    )


def _locate_fn(join: _Join):
    """Return the map from a record to its image bytes and key, checking it against the table."""
    file_of_key = tf.constant(join.file_of_key)
    partitions = tf.constant(join.partitions)
    attributes = tf.constant(join.attributes)
    num_rows = join.num_rows

    def locate(record, path, part, file_index):
        example = tf.io.parse_single_example(record, _LOCATE_SPEC)
        row = example["row"]
        clipped = tf.clip_by_value(row, 0, num_rows - 1)
        key = part * num_rows + clipped
        planned = (row == clipped) & (tf.gather(file_of_key, key) == file_index)
        same_labels = (tf.cast(tf.gather(partitions, clipped), tf.int64) == example["partition"]) & (
            tf.reduce_all(tf.cast(tf.gather(attributes, clipped), tf.int64) == example["attributes"])
        )
        message = tf.strings.join([
            "TFRecord shard ", path, " contains a record of row ", tf.strings.as_string(row),
            " whose shard, partition or attributes differ from the annotation table's: "
            "the shards do not match the data. Convert the copy that training reads into "
            "a new folder with scripts/convert_to_tfrecords.py.",
        ])
        valid = planned & same_labels
        with tf.control_dependencies([tf.debugging.Assert(valid, [message])]):
            return {"contents": tf.identity(example["image/encoded"]), "key": key}

    return locate


def _expand_fn(join: _Join, columns: dict):
    """Return the map from a decoded record to the dataset of its examples."""
    example_order = tf.constant(join.example_order)
    starts = tf.constant(join.starts)
    counts = tf.constant(join.counts)
    column_tensors = {name: tf.constant(values) for name, values in columns.items()}

    def expand(record):
        start = tf.gather(starts, record["key"])
        example_ids = example_order[start : start + tf.gather(counts, record["key"])]

        def example(index):
            values = {name: tf.gather(tensor, index) for name, tensor in column_tensors.items()}
            return {"image": record["image"], "index": index, **values}

        return tf.data.Dataset.from_tensor_slices(example_ids).map(example)

    return expand
