"""The face patches that ANet reads: the one definition of the layout.

ANet reads several patches of each face crop, and the attribute SVMs' scores are
averaged over the patches. Training and the cascade both call these functions, so
the layout cannot drift between them.

Patch boxes are normalized [ymin, xmin, ymax, xmax] in the face crop, which is the
LNet_s face box enlarged by `LocalizationConfig.lnet_s_context`. Every patch is
resized to a square, so the half-face patches are stretched; training and
prediction share the stretch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lnet_anet_tf import localization

# Why these five: the whole face shows global attributes (Attractive, Young,
# Oval_Face, Chubby). The upper part shows the hair, forehead, eyebrows and eyes
# (Bangs, Bald, hair colours, Arched_Eyebrows, Eyeglasses, Bags_Under_Eyes). The
# lower part shows the mouth, lips and chin (Smiling, Mouth_Slightly_Open, Goatee,
# Mustache, Double_Chin, Wearing_Lipstick). The central part cuts hair and
# background away from the nose and cheeks (Big_Nose, Pointy_Nose,
# High_Cheekbones, Rosy_Cheeks). No CelebA attribute names a side, so the
# mirrored face is a second view of the same attributes that averages out
# left-right bias. The upper and lower parts overlap by a tenth of the face so
# that features at the seam appear in both.
PATCH_NAMES = ("face", "upper", "lower", "central", "face_mirrored")
PATCH_BOXES = np.array(
    [
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 0.55, 1.0],
        [0.45, 0.0, 1.0, 1.0],
        [0.2, 0.15, 0.8, 0.85],
        # xmin > xmax: the crop is sampled right to left, which mirrors it.
        [0.0, 1.0, 1.0, 0.0],
    ],
    dtype=np.float32,
)
NUM_PATCHES = len(PATCH_BOXES)


def _image_indices(batch_size: tf.Tensor) -> tf.Tensor:
    """Return [batch * NUM_PATCHES] image indices: 0 repeated NUM_PATCHES times, 1, ..."""
    return tf.range(batch_size * NUM_PATCHES) // NUM_PATCHES


def extract_patches(face_crops: tf.Tensor, size: int) -> tf.Tensor:
    """Cut the patches from face crops [batch, h, w, 3].

    Returns float32 [batch * NUM_PATCHES, size, size, 3], image-major: the patches
    of image b are rows b * NUM_PATCHES to (b + 1) * NUM_PATCHES - 1, in
    `PATCH_NAMES` order.
    """
    face_crops = tf.convert_to_tensor(face_crops, tf.float32)
    batch_size = tf.shape(face_crops)[0]
    boxes = tf.tile(tf.constant(PATCH_BOXES), [batch_size, 1])
    return localization.crop_and_resize(
        face_crops, boxes, size, box_indices=_image_indices(batch_size)
    )


def patch_boxes_in_images(face_boxes: tf.Tensor) -> tf.Tensor:
    """Map the patch layout into images: [batch, 4] face boxes -> [batch * NUM_PATCHES, 4]."""
    face_boxes = tf.convert_to_tensor(face_boxes, tf.float32)
    batch_size = tf.shape(face_boxes)[0]
    repeated_faces = tf.gather(face_boxes, _image_indices(batch_size))
    boxes = tf.tile(tf.constant(PATCH_BOXES), [batch_size, 1])
    return localization.box_to_parent(boxes, repeated_faces)


def extract_patches_from_images(
    images: tf.Tensor, face_boxes: tf.Tensor, size: int
) -> tf.Tensor:
    """Cut the patches of the face boxes straight from whole images.

    The patches cover the same regions as `extract_patches` on crops of the face
    boxes, but the image is resampled once instead of twice, so the patches stay
    as sharp as the image allows. When a face box falls on whole pixels, the
    result equals `extract_patches` on the face cropped at full resolution. The
    exception is the half pixel along a patch's border. There this function reads
    the image pixels beyond the face box, and the face crop repeats its edge pixels.
    Same output layout as `extract_patches`.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    batch_size = tf.shape(images)[0]
    return localization.crop_and_resize(
        images,
        patch_boxes_in_images(face_boxes),
        size,
        box_indices=_image_indices(batch_size),
    )


def average_over_patches(scores: tf.Tensor) -> tf.Tensor:
    """Average image-major [batch * NUM_PATCHES, k] scores to [batch, k]."""
    scores = tf.convert_to_tensor(scores)
    num_scores = scores.shape[-1] if scores.shape[-1] is not None else tf.shape(scores)[-1]
    grouped = tf.reshape(scores, [-1, NUM_PATCHES, num_scores])
    return tf.reduce_mean(grouped, axis=1)
