"""Pre-training: LNet on general object classes, ANet on face identities."""

from __future__ import annotations

import numpy as np
from absl import logging

from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data.table import CelebATable
from lnet_anet_tf.models import build_anet, build_lnet
from lnet_anet_tf.stages import fitting
from lnet_anet_tf.stages import inputs as inputs_lib
from lnet_anet_tf.stages.context import RunContext

PRETRAIN_LNET = "pretrain_lnet"
PRETRAIN_ANET = "pretrain_anet"
# LNet's pre-training head: softmax over object classes.
OBJECT_HEAD = "objects"
IDENTITY_HEAD = "identities"


def _object_dataset(context: RunContext, batch_size: int, **options):
    return pipeline.object_class_dataset(
        context.object_source,
        context.config.lnet_o.input_size,
        batch_size,
        data_dir=context.tfds_data_dir,
        seed=context.config.seed,
        on_bad_example=context.on_bad_example,
        **options,
    )


def count_object_classes(context: RunContext) -> tuple[int, int]:
    """Return (number of classes, number of training images) of the object source."""
    dataset, num_classes = _object_dataset(context, 1, training=False)
    num_images = int(dataset.cardinality())
    if num_images < 0:
        num_images = sum(1 for _ in dataset)
    return num_classes, num_images


def pretrain_lnet(context: RunContext):
    """Train LNet with a softmax over object classes; LNet_o starts from its trunk."""
    num_classes, num_images = count_object_classes(context)
    logging.info(
        "Pre-training LNet on %d images of %d object classes from %s.",
        num_images, num_classes, context.object_source,
    )

    def train_dataset(batch_size, epoch, input_context):
        dataset, _ = _object_dataset(
            context, batch_size, training=True, epoch=epoch, augment=True,
            input_context=input_context,
        )
        return dataset

    return fitting.fit_stage(
        context,
        PRETRAIN_LNET,
        build_model=lambda: build_lnet(context.config.lnet_o, num_classes, OBJECT_HEAD, name="lnet"),
        loss_fn=fitting.softmax_loss,
        metrics_fn=fitting.softmax_metrics,
        train_dataset=train_dataset,
        num_examples=num_images,
    )


def identity_split(table: CelebATable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the training rows into identity-training and held-out rows.

    Identities are renumbered 0..K-1 for the softmax. The last image of each
    identity with at least two images is held out, so the monitor measures
    recognition of known identities on images the net has not seen. Returns
    (train row indices, held-out row indices, class of every row of `table`).
    """
    identities = table.require("identities", "Pre-training ANet on identities")
    unique, classes = np.unique(identities, return_inverse=True)
    held_out = np.zeros(len(table), dtype=bool)
    for class_id in range(len(unique)):
        rows = np.flatnonzero(classes == class_id)
        if len(rows) >= 2:
            held_out[rows[-1]] = True
    return np.flatnonzero(~held_out), np.flatnonzero(held_out), classes.astype(np.int32)


def pretrain_anet(context: RunContext):
    """Train ANet with a softmax over the training partition's identities.

    ANet reads the centre face of the aligned images here, as it would read faces
    of an identity dataset; the in-the-wild crops come in at fine-tuning.
    """
    train = context.table.partition("train")
    train_rows, held_out_rows, classes = identity_split(train)
    num_identities = int(classes.max()) + 1
    # Positions in `train` -> rows of the whole table, which the inputs read.
    table_rows = inputs_lib.partition_rows(context.table, "train")
    face_box = np.asarray(pipeline.ALIGNED_FACE_BOX, np.float32)
    boxes = np.tile(face_box, (len(train), 1))
    logging.info(
        "Pre-training ANet on %d identities: %d images, %d held out for monitoring.",
        num_identities, len(train_rows), len(held_out_rows),
    )
    size = context.config.anet.input_size
    inputs = context.inputs()

    def rows_dataset(rows, batch_size, *, training, epoch=0, input_context=None):
        return inputs.crops(
            [(inputs_lib.ALIGNED, table_rows[rows])], boxes[rows], classes[rows], size,
            batch_size, training=training, epoch=epoch, augment=training,
            input_context=input_context,
        )

    validation = None
    if len(held_out_rows):
        def validation(batch_size, input_context):
            return rows_dataset(held_out_rows, batch_size, training=False, input_context=input_context)

    return fitting.fit_stage(
        context,
        PRETRAIN_ANET,
        build_model=lambda: build_anet(context.config.anet, num_identities, IDENTITY_HEAD, name="anet"),
        loss_fn=fitting.softmax_loss,
        metrics_fn=fitting.softmax_metrics,
        train_dataset=lambda batch_size, epoch, input_context: rows_dataset(
            train_rows, batch_size, training=True, epoch=epoch, input_context=input_context
        ),
        num_examples=len(train_rows),
        validation_dataset=validation,
        examples_per_pipeline=inputs.examples_per_pipeline(
            [(inputs_lib.ALIGNED, table_rows[train_rows])], context.config.stages[PRETRAIN_ANET].epochs
        ),
    )
