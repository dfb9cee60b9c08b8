"""A TFRecord folder checked against the annotation table that training reads.

The training job joins each record to the table by its `row` feature: the labels,
partitions and predicted boxes come from the table, the image from the record.
That join is right only when the folder was converted from the same rows in the
same order, so `open_shards` checks the manifest against the table before any
record is read:

- the conversion finished (`manifest.json` says complete);
- per partition, the manifest's image count equals the table's;
- the SHA-256 of the table's image names and partitions equals the manifest's;
- re-planning the shards from the table, with the manifest's shard count and seed,
  gives every shard the count the manifest lists, and each file exists with the
  listed byte size.

The plan also gives the table rows of each shard, so a pipeline can count the
examples of each input pipeline without reading a record.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from lnet_anet_tf import attributes as attribute_names
from lnet_anet_tf.data import tfrecords
from lnet_anet_tf.data.table import CelebATable

_CONVERT_HINT = (
    "Convert the copy that training reads (same --data_dir and --on_bad_example) "
    "with scripts/convert_to_tfrecords.py into a new --output_dir."
)


@dataclasses.dataclass(frozen=True)
class ShardSource:
    """The shards of one conversion and the table rows of each shard."""

    directory: str
    # "wild" or "aligned": the images in the records.
    image: str
    # Partition codes [N] and attributes [N, 40] of the table's rows, indexed by the
    # records' `row`; the pipelines check each record against them.
    partitions: np.ndarray
    attributes: np.ndarray
    # Shard paths, and the table rows of each shard in writing order.
    paths: tuple
    rows: tuple

    @property
    def num_rows(self) -> int:
        return len(self.partitions)


def open_shards(directory: str, table: CelebATable) -> ShardSource:
    """Check the TFRecord folder `directory` against `table`; return its shards.

    Raises FileNotFoundError when the folder has no finished conversion or a
    shard is missing, and ValueError when the shards were written from other data
    or differ from the manifest. Each message names the folder and what to do.
    """
    directory = os.path.abspath(directory)
    manifest = tfrecords.read_manifest(directory)
    if manifest.get("manifest_version") != tfrecords.MANIFEST_VERSION:
        raise ValueError(
            f"{os.path.join(directory, tfrecords.MANIFEST_FILENAME)} has manifest_version "
            f"{manifest.get('manifest_version')!r}; this version reads "
            f"{tfrecords.MANIFEST_VERSION}. {_CONVERT_HINT}"
        )
    partitions = table.require("partitions", f"Reading the TFRecords in {directory}")
    _check_partition_counts(directory, manifest, partitions)
    if manifest["num_rows"] != len(table) or manifest["rows_sha256"] != tfrecords.rows_sha256(table):
        raise ValueError(
            f"The TFRecords in {directory} were converted from other data: the image "
            "names or partitions of its rows differ from those of the annotation files "
            f"({manifest['num_rows']} rows in the manifest, {len(table)} in the table). "
            f"{_CONVERT_HINT}"
        )

    paths, rows = [], []
    for shard in tfrecords.plan_shards(table, manifest["num_shards"], manifest["seed"]):
        paths.append(_check_shard(directory, manifest, shard))
        rows.append(shard.rows)
    return ShardSource(
        directory, manifest["image"], np.asarray(partitions), np.asarray(table.attributes),
        tuple(paths), tuple(rows),
    )


def _check_partition_counts(directory: str, manifest: dict, partitions: np.ndarray) -> None:
    for split, code in attribute_names.PARTITIONS.items():
        expected = int(np.sum(partitions == code))
        listed = manifest["splits"].get(split, {}).get("num_examples", 0)
        if listed != expected:
            raise ValueError(
                f"The TFRecords in {directory} do not match the annotation files: the "
                f"manifest lists {listed} {split} images, the partition file has "
                f"{expected}. {_CONVERT_HINT}"
            )


def _check_shard(directory: str, manifest: dict, shard: tfrecords.Shard) -> str:
    """Return the path of a planned shard after checking it against the manifest."""
    path = os.path.join(directory, shard.name)
    entry = manifest["shards"].get(shard.name)
    if entry is None or entry["num_examples"] != len(shard.rows):
        listed = "not listed" if entry is None else f"listed with {entry['num_examples']} records"
        raise ValueError(
            f"Shard {shard.name} is {listed} in the manifest of {directory}, but the "
            f"conversion plan gives it {len(shard.rows)} rows of the table. "
            f"{_CONVERT_HINT}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Shard {path} is missing. Rerun scripts/convert_to_tfrecords.py with the "
            "flags of that conversion; it writes the missing shards again."
        )
    size = os.path.getsize(path)
    if size != entry["num_bytes"]:
        raise ValueError(
            f"Shard {path} has {size} bytes; its manifest lists {entry['num_bytes']}. "
            "Rerun scripts/convert_to_tfrecords.py with the flags of that conversion; it "
            "rewrites shards that differ from the manifest."
        )
    return path
