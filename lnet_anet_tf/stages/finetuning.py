"""Fine-tuning with the 40 attribute tags: LNet_o, then LNet_s, then ANet.

Each net's inputs come from the previous net's boxes, never from annotated ones:
LNet_o reads whole images; LNet_s reads square crops about LNet_o's head boxes;
ANet reads LNet_s's face boxes, enlarged (the face crops). The SVMs later read
ANet's features of several patches of each face crop (`svm_fitting`).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from lnet_anet_tf import attributes
from lnet_anet_tf import localization
from lnet_anet_tf import patches
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.models import build_anet, build_lnet, copy_trunk_weights
from lnet_anet_tf.stages import boxes as boxes_lib
from lnet_anet_tf.stages import fitting
from lnet_anet_tf.stages import inputs as inputs_lib
from lnet_anet_tf.stages import pretraining
from lnet_anet_tf.stages.context import RunContext

FINETUNE_LNET_O = "finetune_lnet_o"
FINETUNE_LNET_S = "finetune_lnet_s"
FINETUNE_ANET = "finetune_anet"
ATTRIBUTE_HEAD = "attributes"
NUM_ATTRIBUTES = attributes.NUM_ATTRIBUTES


def build_attribute_lnet(context: RunContext, which: str):
    config = context.config.lnet_o if which == "lnet_o" else context.config.lnet_s
    return build_lnet(config, NUM_ATTRIBUTES, ATTRIBUTE_HEAD, name=which)


def build_attribute_anet(context: RunContext):
    return build_anet(context.config.anet, NUM_ATTRIBUTES, ATTRIBUTE_HEAD, name="anet")


def load_finetuned(context: RunContext, which: str):
    """Build LNet_o, LNet_s or ANet with its attribute head and load its final weights."""
    model = build_attribute_anet(context) if which == "anet" else build_attribute_lnet(context, which)
    model.load_weights(context.require_weights(f"finetune_{which}", "the next stage"))
    return model


def _initialize_from(model, source, description: str) -> None:
    copied, kept = copy_trunk_weights(source, model)
    logging.info(
        "%s: copied %d trunk layers from %s; %d layers keep their initialisation (%s).",
        model.name, len(copied), description, len(kept), ", ".join(kept) or "none",
    )


def finetune_lnet_o(context: RunContext):
    """Fine-tune LNet_o on whole in-the-wild images, starting from the object-class trunk."""
    pretrained = None
    if os.path.exists(context.weights_path(pretraining.PRETRAIN_LNET)):
        num_classes, _ = pretraining.count_object_classes(context)
        pretrained = build_lnet(context.config.lnet_o, num_classes, pretraining.OBJECT_HEAD, name="lnet")
        pretrained.load_weights(context.weights_path(pretraining.PRETRAIN_LNET))
    else:
        logging.warning("No pre-trained LNet in %s: LNet_o starts from scratch.", context.model_dir)

    def build():
        model = build_attribute_lnet(context, "lnet_o")
        if pretrained is not None:
            _initialize_from(model, pretrained, "the object-class LNet")
        return model

    inputs = context.inputs()
    train_rows = inputs_lib.partition_rows(context.table, "train")
    validation_rows = inputs_lib.partition_rows(context.table, "validation")
    size = context.config.lnet_o.input_size
    return fitting.fit_stage(
        context,
        FINETUNE_LNET_O,
        build_model=build,
        loss_fn=fitting.sigmoid_loss,
        metrics_fn=fitting.attribute_metrics,
        train_dataset=lambda batch_size, epoch, input_context: inputs.whole_images(
            train_rows, size, batch_size, training=True, epoch=epoch, augment=True,
            input_context=input_context,
        ),
        num_examples=len(train_rows),
        validation_dataset=_optional(validation_rows, lambda batch_size, input_context: inputs.whole_images(
            validation_rows, size, batch_size, training=False, input_context=input_context,
        )),
        examples_per_pipeline=inputs.examples_per_pipeline(
            [(inputs_lib.WILD, train_rows)], context.config.stages[FINETUNE_LNET_O].epochs
        ),
    )


def _optional(rows, dataset_fn):
    return dataset_fn if len(rows) else None


def head_boxes(context: RunContext) -> dict:
    """LNet_o's head boxes for every row of the table (cached in LNet_s's stage)."""
    path = os.path.join(context.stage_dir(FINETUNE_LNET_S), "lnet_o_boxes.npz")

    def compute():
        lnet_o = load_finetuned(context, "lnet_o")
        return boxes_lib.predict_head_boxes(
            lnet_o, context.inputs(), len(context.table), context.config.localization
        )

    return boxes_lib.cached(path, compute, required=("boxes", "crop_boxes", "scores", "valid"))


def head_crop_boxes(context: RunContext, head: dict) -> np.ndarray:
    """Return the square crops about LNet_o's head boxes that LNet_s reads, [N, 4]."""
    return head["crop_boxes"]


def finetune_lnet_s(context: RunContext):
    """Fine-tune LNet_s on square crops about LNet_o's head boxes, from LNet_o's weights."""
    head = head_boxes(context)
    crop_boxes = head_crop_boxes(context, head)
    lnet_o = load_finetuned(context, "lnet_o")

    def build():
        model = build_attribute_lnet(context, "lnet_s")
        _initialize_from(model, lnet_o, "LNet_o")
        return model

    return _fit_on_crops(
        context, FINETUNE_LNET_S, build, crop_boxes, head["valid"], context.config.lnet_s.input_size
    )


def _fit_on_crops(context, stage_name, build, crop_boxes, valid, size, extra=None):
    """Train an attribute net on crops of `crop_boxes` ([N, 4], one per table row).

    `extra` adds training examples: a dict of "image" (the image kind), "rows",
    "boxes" and "labels".
    """
    table = context.table
    rows = np.arange(len(table))
    labels = table.attributes.astype(np.float32)
    partitions = table.require("partitions", stage_name)

    def examples(partition_code):
        return np.flatnonzero(valid & (partitions == partition_code))

    train, validation = examples(0), examples(1)
    train_parts = [(inputs_lib.WILD, rows[train])]
    train_boxes, train_labels = crop_boxes[train], labels[train]
    if extra is not None:
        train_parts.append((extra["image"], extra["rows"]))
        train_boxes = np.concatenate([train_boxes, extra["boxes"]])
        train_labels = np.concatenate([train_labels, extra["labels"]])
    inputs = context.inputs()

    def train_dataset(batch_size, epoch, input_context):
        return inputs.crops(
            train_parts, train_boxes, train_labels, size, batch_size, training=True,
            epoch=epoch, augment=True, scale_jitter=context.config.stages[stage_name].scale_jitter,
            input_context=input_context,
        )

    def validation_dataset(batch_size, input_context):
        return inputs.crops(
            [(inputs_lib.WILD, rows[validation])], crop_boxes[validation], labels[validation],
            size, batch_size, training=False, input_context=input_context,
        )

    return fitting.fit_stage(
        context,
        stage_name,
        build_model=build,
        loss_fn=fitting.sigmoid_loss,
        metrics_fn=fitting.attribute_metrics,
        train_dataset=train_dataset,
        num_examples=len(train_boxes),
        validation_dataset=validation_dataset if len(validation) else None,
        examples_per_pipeline=inputs.examples_per_pipeline(
            train_parts, context.config.stages[stage_name].epochs
        ),
    )


def face_boxes(context: RunContext) -> dict:
    """LNet_s's face boxes for every row of the table (cached in ANet's stage)."""
    path = os.path.join(context.stage_dir(FINETUNE_ANET), "lnet_s_boxes.npz")

    def compute():
        head = head_boxes(context)
        lnet_s = load_finetuned(context, "lnet_s")
        config = context.config.localization
        crops = head_crop_boxes(context, head)
        faces = boxes_lib.predict_face_boxes(lnet_s, context.inputs(), crops, head["valid"], config)
        if config.lnet_s_recrop_context is None:
            return faces

        # The cascade's second LNet_s pass, on crops about the first boxes at
        # each scale, averaged. NOTE: each scale decodes every image again,
        # because the crop pipeline cuts one crop per example.
        passes = []
        for scale in config.lnet_s_recrop_scales:
            recrops = boxes_lib.recrop_boxes(
                faces["boxes"], crops, config.lnet_s_recrop_context * scale
            )
            passes.append(
                boxes_lib.predict_face_boxes(lnet_s, context.inputs(), recrops, faces["valid"], config)
            )
        return boxes_lib.average_passes(passes)

    return boxes_lib.cached(path, compute)


def face_crop_boxes(context: RunContext, faces: dict) -> np.ndarray:
    """Return the face crops [N, 4] that ANet reads: LNet_s's boxes enlarged by `lnet_s_context`."""
    return localization.expand_box(faces["boxes"], context.config.localization.lnet_s_context).numpy()


def patch_boxes(context: RunContext, faces: dict) -> np.ndarray:
    """Return [N * NUM_PATCHES, 4] patch boxes in image coordinates, image-major."""
    return patches.patch_boxes_in_images(face_crop_boxes(context, faces)).numpy()


def aligned_face_examples(context: RunContext) -> dict:
    """Return the aligned training faces, for `--add_aligned`, as `_fit_on_crops`'s `extra`."""
    train = context.table.partition("train")
    return {
        "image": inputs_lib.ALIGNED,
        "rows": inputs_lib.partition_rows(context.table, "train"),
        "boxes": np.tile(np.asarray(pipeline.ALIGNED_FACE_BOX, np.float32), (len(train), 1)),
        "labels": train.attributes.astype(np.float32),
    }


def finetune_anet(context: RunContext):
    """Fine-tune ANet on LNet_s's face crops, from the identity-trained trunk.

    ANet trains on the whole face crop, flipped at random, not on the patches
    that the SVMs read. Its upper layers are locally connected: each position
    has filters of its own, which pays off when the same face part always falls
    on the same position. Five differently framed patches put five different
    parts there. docs/benchmarks.md compares the two on the demo preset.
    """
    faces = face_boxes(context)
    pretrained = None
    if os.path.exists(context.weights_path(pretraining.PRETRAIN_ANET)):
        train = context.table.partition("train")
        _, _, classes = pretraining.identity_split(train)
        pretrained = build_anet(
            context.config.anet, int(classes.max()) + 1, pretraining.IDENTITY_HEAD, name="anet"
        )
        pretrained.load_weights(context.weights_path(pretraining.PRETRAIN_ANET))
    else:
        logging.warning("No pre-trained ANet in %s: ANet starts from scratch.", context.model_dir)

    def build():
        model = build_attribute_anet(context)
        if pretrained is not None:
            _initialize_from(model, pretrained, "the identity-trained ANet")
        return model

    extra = aligned_face_examples(context) if context.add_aligned else None
    return _fit_on_crops(
        context, FINETUNE_ANET, build, face_crop_boxes(context, faces), faces["valid"],
        context.config.anet.input_size, extra=extra,
    )
