"""The `fit_svm` stage: one linear SVM per attribute on ANet patch features.

Every face (LNet_s's box, enlarged) gives `patches.NUM_PATCHES` patches; each patch
is one SVM training example with its face's 40 labels. At prediction time the
scores of a face's patches are averaged, and Platt scaling, fitted on the
validation faces' averaged scores, turns them into probabilities.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from absl import logging

from lnet_anet_tf import patches
from lnet_anet_tf import trained
from lnet_anet_tf.stages import finetuning
from lnet_anet_tf.stages.context import RunContext, save_arrays_atomic
from lnet_anet_tf.stages.inputs import WILD
from lnet_anet_tf.training import evaluation
from lnet_anet_tf.training import svm as svm_lib

FIT_SVM = trained.SVM_STAGE
FEATURE_BATCH_SIZE = 128


def patch_features(context: RunContext, anet, rows: np.ndarray, patch_boxes: np.ndarray) -> np.ndarray:
    """Return ANet features [len(rows) * NUM_PATCHES, F] of the rows' patches, in row order."""
    patch_rows = (rows[:, None] * patches.NUM_PATCHES + np.arange(patches.NUM_PATCHES)).reshape(-1)
    image_rows = np.repeat(rows, patches.NUM_PATCHES)
    inputs = context.inputs()

    def dataset_fn(input_context):
        dataset = inputs.crops(
            [(WILD, image_rows)], patch_boxes[patch_rows], np.zeros(len(image_rows), np.int32),
            context.config.anet.input_size, FEATURE_BATCH_SIZE, training=False,
            input_context=input_context, with_index=True,
        )
        return dataset.map(lambda features, labels: features)

    # TFRecord shards give the patches in file order, and several workers' results
    # interleave, so each feature vector comes back with its index and is put in place.
    outputs = evaluation.predict(_indexed_feature_model(anet), dataset_fn, strategy=context.strategy)
    index = outputs["index"]
    if len(index) != len(image_rows) or len(np.unique(index)) != len(image_rows):
        raise RuntimeError(
            f"ANet features came back for {len(np.unique(index))} of {len(image_rows)} "
            "patches: an image that loaded for the localization nets did not load now. "
            "Check the images named in the log above, or delete the cached boxes "
            f"in {context.stage_dir(finetuning.FINETUNE_ANET)} and run again."
        )
    features = np.empty_like(outputs["features"])
    features[index] = outputs["features"]
    return features


def _indexed_feature_model(anet) -> keras.Model:
    """ANet's feature layer as a model that also returns each input's "index"."""
    image = keras.Input(anet.input_shape[1:], name="image")
    index = keras.Input((), dtype="int64", name="index")
    features = keras.Model(anet.input, anet.output["features"])(image)
    return keras.Model(
        {"image": image, "index": index},
        {"features": features, "index": keras.layers.Identity()(index)},
    )


def fit_svm(context: RunContext) -> dict:
    """Train the SVMs and the Platt scaling; save them to `fit_svm/svm.npz`."""
    faces = finetuning.face_boxes(context)
    boxes = finetuning.patch_boxes(context, faces)
    anet = finetuning.load_finetuned(context, "anet")
    partitions = context.table.require("partitions", FIT_SVM)

    train_rows = np.flatnonzero(faces["valid"] & (partitions == 0))
    train_features = patch_features(context, anet, train_rows, boxes)
    train_labels = np.repeat(context.table.attributes[train_rows], patches.NUM_PATCHES, axis=0)
    logging.info("Training 40 linear SVMs on %d patch feature vectors.", len(train_features))
    svm, result = svm_lib.train_svm(
        train_features, train_labels, context.config.svm,
        model_dir=context.stage_dir(FIT_SVM), stage_name="svm", strategy=context.strategy,
        seed=context.config.seed, progress=context.progress,
    )

    # Platt scaling needs held-out scores; without a validation partition the
    # training faces are used, which makes the probabilities overconfident.
    calibration_rows = np.flatnonzero(faces["valid"] & (partitions == 1))
    if len(calibration_rows) == 0:
        logging.warning("No validation images: Platt scaling is fitted on training faces.")
        calibration_rows = train_rows
    calibration_features = patch_features(context, anet, calibration_rows, boxes)
    scores = svm.decision_function(calibration_features).reshape(
        len(calibration_rows), patches.NUM_PATCHES, -1
    ).mean(axis=1)
    platt_scale, platt_offset = svm_lib.fit_platt(scores, context.table.attributes[calibration_rows])

    path = os.path.join(context.stage_dir(FIT_SVM), trained.SVM_FILENAME)
    save_arrays_atomic(
        path, weights=svm.weights, bias=svm.bias,
        platt_scale=np.asarray(platt_scale, np.float32), platt_offset=np.asarray(platt_offset, np.float32),
    )
    summary = {"svm_metrics": result.metrics, "num_patch_examples": int(len(train_features)), "path": path}
    context.mark_done(FIT_SVM, summary)
    return summary
