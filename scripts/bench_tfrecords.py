"""Compare the read rate of sharded TFRecords with that of one JPEG file per image.

    python scripts/bench_tfrecords.py --num_identities=250 --images_per_identity=12

Generates a synthetic CelebA (or reuses --work_dir from an earlier run), converts it
with `tfrecords.write_tfrecords`, then times, in one process and alternating the
two, full passes over every image:

- "decode": `pipeline.whole_image_dataset` against `tfrecords.tfrecord_dataset` and
  `shard_pipeline.whole_image_shard_dataset` (the training job's reader with
  `--tfrecord_dir`, which joins each record to the table by row), all decoding,
  letterboxing to --image_size and batching;
- "read": the encoded bytes only, `tf.io.read_file` per path against the records
  of the shards, to show the file-access cost without the decoding.

Prints the median, minimum and maximum images per second of --repeats passes, the
load average before and after, and the CPU model. The files sit in the page cache
after the first pass, so this measures the pipelines, not a cold disk.
"""

import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from lnet_anet_tf.data import celeba
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data import shard_pipeline
from lnet_anet_tf.data import shard_source
from lnet_anet_tf.data import tfrecords
from lnet_anet_tf.data.synthetic import generate_celeba

_WORK_DIR = flags.DEFINE_string(
    "work_dir", None,
    "Folder for the synthetic copy and its shards, reused when it has them. Default: a "
    "temporary folder, deleted at the end.",
)
_NUM_IDENTITIES = flags.DEFINE_integer("num_identities", 250, "Synthetic identities.")
_IMAGES_PER_IDENTITY = flags.DEFINE_integer("images_per_identity", 12, "Images per identity.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 16, "Shards per partition.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 227, "Letterboxed side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per batch.")
_CYCLE_LENGTH = flags.DEFINE_integer("cycle_length", tfrecords.DEFAULT_CYCLE_LENGTH,
                                     "Shards read at once.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed passes per pipeline; the median is printed.")


def _prepare_data(work_dir: str):
    data_dir = os.path.join(work_dir, "celeba")
    shard_dir = os.path.join(work_dir, "tfrecords")
    if not os.path.isdir(data_dir):
        generate_celeba(data_dir, _NUM_IDENTITIES.value, _IMAGES_PER_IDENTITY.value, seed=0)
    table = celeba.load_celeba(data_dir)
    tfrecords.write_tfrecords(table, shard_dir, num_shards=_NUM_SHARDS.value, progress=False)
    return table, shard_dir


def _pipelines(table, shard_dir: str) -> dict:
    size, batch_size = _IMAGE_SIZE.value, _BATCH_SIZE.value
    pattern = os.path.join(shard_dir, "*" + tfrecords.SHARD_SUFFIX)
    paths, _ = tfrecords.list_shards(pattern)
    source = shard_source.open_shards(shard_dir, table)
    rows = np.arange(len(table))
    labels = table.attributes.astype(np.float32)

    def files_decode():
        return pipeline.whole_image_dataset(table, size, batch_size, training=False)

    def records_decode():
        return tfrecords.tfrecord_dataset(
            pattern, size, batch_size, training=False, cycle_length=_CYCLE_LENGTH.value
        )

    def joined_decode():
        return shard_pipeline.whole_image_shard_dataset(
            source, rows, labels, size, batch_size, training=False, cycle_length=_CYCLE_LENGTH.value
        )

    def files_read():
        dataset = tf.data.Dataset.from_tensor_slices(table.wild_paths)
        dataset = dataset.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def records_read():
        dataset = tf.data.Dataset.from_tensor_slices(paths).interleave(
            tf.data.TFRecordDataset, cycle_length=_CYCLE_LENGTH.value,
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return {
        ("decode", "JPEG files"): files_decode,
        ("decode", "TFRecord shards"): records_decode,
        ("decode", "TFRecord shards, joined by row"): joined_decode,
        ("read", "JPEG files"): files_read,
        ("read", "TFRecord shards"): records_read,
    }


def _images_per_second(make_dataset, expected: int) -> float:
    start = time.perf_counter()
    count = 0
    for batch in make_dataset():
        count += int(tf.shape(tf.nest.flatten(batch)[0])[0])
    elapsed = time.perf_counter() - start
    if count != expected:
        raise RuntimeError(f"A pass read {count} images; expected {expected}.")
    return count / elapsed


def _cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as file:
        for line in file:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _run(work_dir: str) -> None:
    table, shard_dir = _prepare_data(work_dir)
    pipelines = _pipelines(table, shard_dir)
    load_before = os.getloadavg()[0]

    # One untimed pass each fills the page cache and builds the tf.data functions.
    for make_dataset in pipelines.values():
        _images_per_second(make_dataset, len(table))
    rates = {key: [] for key in pipelines}
    for _ in range(_REPEATS.value):
        for key, make_dataset in pipelines.items():
            rates[key].append(_images_per_second(make_dataset, len(table)))

    print(f"{len(table)} synthetic images, {_NUM_SHARDS.value} shards per partition, "
          f"image_size {_IMAGE_SIZE.value}, batch_size {_BATCH_SIZE.value}, "
          f"cycle_length {_CYCLE_LENGTH.value}, {_REPEATS.value} passes each.")
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores; load average {load_before:.2f} "
          f"before, {os.getloadavg()[0]:.2f} after.")
    print("| work | input | median images/s | min | max |")
    print("| --- | --- | --- | --- | --- |")
    for (work, source), values in rates.items():
        print(f"| {work} | {source} | {statistics.median(values):.0f} | {min(values):.0f} | "
              f"{max(values):.0f} |")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    if _WORK_DIR.value:
        _run(_WORK_DIR.value)
        return
    with tempfile.TemporaryDirectory(prefix="bench_tfrecords_") as work_dir:
        _run(work_dir)


if __name__ == "__main__":
    app.run(main)
