"""The stages' image datasets, read from the image files or from TFRecord shards.

Every stage names its examples by table row: the whole image of a row, or a crop
of a box in the in-the-wild or aligned image of a row. `StageInputs` turns them
into the per-file pipelines of `data.pipeline`, or, when the job got
`--tfrecord_dir`, into the shard pipelines of `data.shard_pipeline`. Both give the
same element for the same example, so the stages do not depend on the choice.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from lnet_anet_tf import attributes
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data import shard_pipeline
from lnet_anet_tf.data import shard_source
from lnet_anet_tf.data.table import CelebATable

WILD = "wild"
ALIGNED = "aligned"
_PATH_COLUMNS = {WILD: "wild_paths", ALIGNED: "aligned_paths"}

# The images that each stage reads through `StageInputs`. `evaluate` and `export`
# read image files one at a time (see `evaluate.predict_files`), never shards.
STAGE_IMAGES = {
    "pretrain_anet": (ALIGNED,),
    "finetune_lnet_o": (WILD,),
    "finetune_lnet_s": (WILD,),
    "finetune_anet": (WILD,),
    "fit_svm": (WILD,),
}


def required_images(stage_names: Sequence[str], add_aligned: bool) -> dict:
    """Return image kind -> the stages among `stage_names` that read it."""
    required = {}
    for stage in stage_names:
        kinds = STAGE_IMAGES.get(stage, ())
        if stage == "finetune_anet" and add_aligned:
            kinds = kinds + (ALIGNED,)
        for kind in kinds:
            required.setdefault(kind, []).append(stage)
    return required


def open_tfrecord_dirs(
    directories: Sequence[str], table: CelebATable, stage_names: Sequence[str], add_aligned: bool
) -> dict:
    """Check the TFRecord folders against `table`; return image kind -> ShardSource.

    Raises ValueError (or FileNotFoundError from `shard_source.open_shards`) when a
    folder does not match the table, when two folders contain the same image kind, or
    when a stage in `stage_names` reads an image kind that no folder contains.
    """
    sources = {}
    for directory in directories:
        source = shard_source.open_shards(directory, table)
        if source.image in sources:
            raise ValueError(
                f"{sources[source.image].directory} and {source.directory} both contain "
                f"{source.image} images; pass one folder per image kind."
            )
        sources[source.image] = source
    for kind, stages in required_images(stage_names, add_aligned).items():
        if kind not in sources:
            alternative = "leave those stages out of --stages"
            if kind == ALIGNED and "finetune_anet" in stages:
                alternative += " (finetune_anet reads them because of --add_aligned; pass --noadd_aligned to turn it off)"
            raise ValueError(
                f"Stage(s) {', '.join(stages)} read {kind} images, but no folder in "
                f"--tfrecord_dir contains them (it has: {', '.join(sorted(sources))}). Convert "
                f"them with scripts/convert_to_tfrecords.py --image={kind} and add the "
                f"folder to --tfrecord_dir, or {alternative}."
            )
    return sources


def partition_rows(table: CelebATable, name: str) -> np.ndarray:
    """Return the table rows of partition `name` ("train", "validation" or "test")."""
    codes = table.require("partitions", f"Selecting the {name} partition")
    return np.flatnonzero(codes == attributes.PARTITIONS[name])


@dataclasses.dataclass
class StageInputs:
    """Dataset builders over one table; `shards` maps "wild"/"aligned" to TFRecords."""

    table: CelebATable
    seed: int
    on_bad_example: str = "error"
    shards: dict = dataclasses.field(default_factory=dict)

    def whole_images(
        self,
        rows: np.ndarray,
        image_size: int,
        batch_size: int,
        *,
        training: bool,
        epoch: int = 0,
        augment: bool = False,
        input_context: Optional[tf.distribute.InputContext] = None,
        with_index: bool = False,
    ) -> tf.data.Dataset:
        """Build `pipeline.whole_image_dataset` of the table rows `rows`; "index" is the position in `rows`."""
        options = dict(training=training, seed=self.seed, epoch=epoch, augment=augment,
                       input_context=input_context, with_index=with_index)
        if WILD in self.shards:
            labels = self.table.attributes[rows].astype(np.float32)
            return shard_pipeline.whole_image_shard_dataset(
                self.shards[WILD], rows, labels, image_size, batch_size, **options
            )
        return pipeline.whole_image_dataset(
            self.table.select(rows), image_size, batch_size, on_bad_example=self.on_bad_example,
            **options,
        )

    def crops(
        self,
        parts: Sequence[tuple],
        boxes: np.ndarray,
        labels: np.ndarray,
        crop_size: int,
        batch_size: int,
        *,
        training: bool,
        epoch: int = 0,
        augment: bool = False,
        scale_jitter: float = 1.0,
        input_context: Optional[tf.distribute.InputContext] = None,
        with_index: bool = False,
    ) -> tf.data.Dataset:
        """Build `pipeline.crop_dataset` of the examples in `parts`.

        `parts` is a sequence of (image kind, table rows). `boxes` and `labels`
        have one entry per row of all parts together. "index" is the position in
        those rows.
        """
        options = dict(training=training, seed=self.seed, epoch=epoch, augment=augment,
                       scale_jitter=scale_jitter, input_context=input_context,
                       with_index=with_index)
        if self.reads_shards(kind for kind, _ in parts):
            sources = [(self.shards[kind], rows) for kind, rows in parts]
            return shard_pipeline.crop_shard_dataset(
                sources, boxes, labels, crop_size, batch_size, **options
            )
        paths = np.concatenate([
            self.table.require(_PATH_COLUMNS[kind], f"Reading the {kind} images")[rows]
            for kind, rows in parts
        ])
        return pipeline.crop_dataset(
            paths, boxes, labels, crop_size, batch_size, on_bad_example=self.on_bad_example,
            **options,
        )

    def reads_shards(self, kinds) -> bool:
        """Return whether examples of these image kinds come from shards.

        The job checks at start-up that every kind a stage reads has shards, or
        none has. A mix means that check was bypassed, so it raises ValueError.
        """
        kinds = set(kinds)
        with_shards = kinds & set(self.shards)
        if with_shards and with_shards != kinds:
            raise ValueError(
                f"The examples read {sorted(kinds)} images, but only {sorted(with_shards)} "
                "have TFRecords; pass the TFRecords of every kind in --tfrecord_dir."
            )
        return bool(with_shards)

    def examples_per_pipeline(self, parts: Sequence[tuple], epochs: int):
        """Return `fitting.fit_stage`'s `examples_per_pipeline` for training on `parts`.

        With shards, pipelines read whole files, so the smallest pipeline decides
        the steps per epoch. With image files every pipeline gets an equal share
        of the rows, and this returns None.
        """
        kinds = [kind for kind, _ in parts]
        if not self.reads_shards(kinds):
            return None
        sources = [(self.shards[kind], rows) for kind, rows in parts]

        def smallest(num_pipelines: int) -> int:
            return shard_pipeline.min_examples_per_pipeline(
                sources, num_pipelines, seed=self.seed, epochs=epochs
            )

        return smallest
