"""The LNet + ANet cascade as one `tf.Module`: raw image in, face box and 40 attributes out.

    image -> normalize -> letterbox -> LNet_o -> head box -> enlarge, crop ->
    LNet_s -> face box [-> enlarge, crop -> LNet_s -> face box] -> enlarge ->
    patches -> ANet features -> linear SVMs -> average over patches -> Platt sigmoid

The bracketed second LNet_s pass runs when `lnet_s_recrop_context` is set.

Every op in the graph is a TFLite builtin, so the module converts with
`TFLITE_BUILTINS` alone. The stages are public methods too, so training computes
LNet_o boxes, LNet_s boxes and ANet patch features with the same ops as prediction.
The stage methods take images already normalized with `preprocessing.normalize`,
of any size; `__call__` takes pixel values in [0, 255].

Boxes are normalized [ymin, xmin, ymax, xmax] of the input image.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from lnet_anet_tf import attributes
from lnet_anet_tf import localization
from lnet_anet_tf import patches
from lnet_anet_tf import preprocessing
from lnet_anet_tf.config import Config

_LNET_OUTPUTS = ("feature_map",)
_ANET_OUTPUTS = ("features",)


class Cascade(tf.Module):
    """LNet_o, LNet_s, ANet and the attribute SVMs with their Platt scaling.

    `svm_weights` is [features, 40] and `svm_bias` [40]: a patch's score for
    attribute k is features @ svm_weights[:, k] + svm_bias[k]. The probability is
    sigmoid(platt_scale * score + platt_offset), with the score averaged over the
    patches. Attributes are in `attributes.ATTRIBUTE_NAMES` order.
    """

    def __init__(
        self,
        lnet_o: keras.Model,
        lnet_s: keras.Model,
        anet: keras.Model,
        svm_weights,
        svm_bias,
        platt_scale,
        platt_offset,
        config: Config,
        name: str | None = "cascade",
    ):
        super().__init__(name=name)
        self.lnet_o_size = _square_input_side(lnet_o, "lnet_o", config.lnet_o.input_size)
        self.lnet_s_size = _square_input_side(lnet_s, "lnet_s", config.lnet_s.input_size)
        self.anet_size = _square_input_side(anet, "anet", config.anet.input_size)
        _require_outputs(lnet_o, "lnet_o", _LNET_OUTPUTS)
        _require_outputs(lnet_s, "lnet_s", _LNET_OUTPUTS)
        _require_outputs(anet, "anet", _ANET_OUTPUTS)

        num_features = int(anet.output["features"].shape[-1])
        num_attributes = attributes.NUM_ATTRIBUTES
        arrays = {
            "svm_weights": (svm_weights, (num_features, num_attributes)),
            "svm_bias": (svm_bias, (num_attributes,)),
            "platt_scale": (platt_scale, (num_attributes,)),
            "platt_offset": (platt_offset, (num_attributes,)),
        }
        for label, (value, expected_shape) in arrays.items():
            value = np.asarray(value, dtype=np.float32)
            if value.shape != expected_shape:
                raise ValueError(
                    f"{label} has shape {value.shape}, but this ANet gives "
                    f"{num_features} features for {num_attributes} attributes, so "
                    f"{label} must have shape {expected_shape}. Train the SVMs on "
                    f"this ANet's features."
                )
            setattr(self, label, tf.Variable(value, trainable=False, name=label))

        self.lnet_o = lnet_o
        self.lnet_s = lnet_s
        # Constants: each LNet's response to a blank image, subtracted from its maps.
        self.lnet_o_blank = tf.constant(localization.blank_response(lnet_o))
        self.lnet_s_blank = tf.constant(localization.blank_response(lnet_s))
        # The positions of each LNet's map cells in its input, as Python numbers.
        self.lnet_o_geometry = localization.map_geometry(lnet_o)
        self.lnet_s_geometry = localization.map_geometry(lnet_s)
        self.anet = anet
        self.localization_config = config.localization

    # reduce_retracing: after a few image sizes, one trace with unknown height and
    # width serves them all.
    @tf.function(reduce_retracing=True)
    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Run the whole cascade on float32 pixel values in [0, 255], [batch, H, W, 3].

        Returns "face_box" [batch, 4], "localization_score" [batch] (LNet_s's, see
        `localization.locate`), "head_box" [batch, 4], "head_score" [batch],
        "attribute_scores" [batch, 40] (SVM scores averaged over patches),
        "attribute_probabilities" [batch, 40], and the response maps
        "lnet_o_response" [batch, h, w] and "lnet_s_response" [batch, h', w'].
        """
        _check_images(images)
        normalized = preprocessing.normalize(images)
        head = self.localize_head(normalized)
        face = self.localize_face(normalized, head["head_box"])
        attribute_outputs = self.attribute_scores_from_images(normalized, face["face_box"])
        return {
            "face_box": face["face_box"],
            "localization_score": face["face_score"],
            "head_box": head["head_box"],
            "head_score": head["head_score"],
            "attribute_scores": attribute_outputs["attribute_scores"],
            "attribute_probabilities": attribute_outputs["attribute_probabilities"],
            "lnet_o_response": head["lnet_o_response"],
            "lnet_s_response": face["lnet_s_response"],
        }

    def frozen_call(
        self, batch_size: int, height: int, width: int
    ) -> tuple[tf.types.experimental.ConcreteFunction, tf.Module]:
        """Trace `__call__` for one input shape with every variable as a constant.

        Returns the concrete function, with input "images" and the same output
        dict, and the module that contains it; pass both to
        `tf.lite.TFLiteConverter.from_concrete_functions`. Converting `__call__`
        directly keeps the variables: Keras 3 exports each of its variables to a
        SavedModel through a second variable initialized from the first, so the
        converter treats them as mutable and emits VAR_HANDLE and READ_VARIABLE
        ops. With TensorFlow 2.21, Keras 3.15 and ai-edge-litert 2.3 those
        variables came out uninitialized and every output was NaN.

        Each call traces anew instead of reusing a trace of `__call__`, so the
        graph follows the tracing context of this call, such as
        `layers.per_region_matmuls`.
        """
        spec = tf.TensorSpec([batch_size, height, width, 3], tf.float32, name="images")
        call = type(self).__call__.python_function
        traced = tf.function(lambda images: call(self, images)).get_concrete_function(spec)
        frozen = convert_variables_to_constants_v2(traced)
        output_structure = traced.structured_outputs

        module = tf.Module(name="frozen_cascade")

        @tf.function(input_signature=[spec])
        def serve(images):
            return tf.nest.pack_sequence_as(output_structure, frozen(images))

        module.serve = serve
        return serve.get_concrete_function(), module

    def localize_head(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Find head and shoulders with LNet_o in normalized images [batch, H, W, 3].

        Returns "head_box" [batch, 4] in image coordinates, "head_score" [batch] and
        "lnet_o_response" [batch, h, w]. The response map covers the letterboxed
        input, padding included.
        """
        letterboxed, window = preprocessing.letterbox(images, self.lnet_o_size)
        response = localization.response_map(
            self.lnet_o(letterboxed, training=False)["feature_map"], self.lnet_o_blank
        )
        boxes, scores = localization.locate(
            response, self.localization_config, self.lnet_o_geometry
        )
        head_boxes = localization.ensure_min_size(
            preprocessing.window_to_image(boxes, window), self.localization_config.min_box_side
        )
        return {
            "head_box": head_boxes,
            "head_score": scores,
            "lnet_o_response": response,
        }

    def head_crop_boxes(self, head_boxes: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
        """Return the square crops about LNet_o's head boxes that LNet_s reads.

        The side is `lnet_o_context` times the box's (see
        `localization.square_context_box`). The image's aspect ratio comes from
        its letterbox window, as in training, where the boxes are computed from
        letterboxed images.
        """
        return self._square_crops(head_boxes, images, self.localization_config.lnet_o_context)

    def face_recrop_boxes(
        self, face_boxes: tf.Tensor, images: tf.Tensor, scale: float = 1.0
    ) -> tf.Tensor:
        """Return the square crops about LNet_s's first boxes that its second pass reads.

        The side is `lnet_s_recrop_context` times `scale` times the box's, where
        `scale` is one of `lnet_s_recrop_scales`; the pass runs only when that
        factor is set.
        """
        return self._square_crops(
            face_boxes, images, self.localization_config.lnet_s_recrop_context * scale
        )

    def _square_crops(self, boxes: tf.Tensor, images: tf.Tensor, factor: float) -> tf.Tensor:
        shape = tf.shape(images)
        window = preprocessing.letterbox_window(shape[1], shape[2], self.lnet_o_size)
        return localization.square_context_box(
            boxes, factor, preprocessing.window_aspect(window)
        )

    def head_crops(self, images: tf.Tensor, head_boxes: tf.Tensor) -> tf.Tensor:
        """Cut LNet_s's inputs [batch, side, side, 3] from normalized images.

        The part of a crop outside the image is mid-gray (0.0), as in training.
        """
        return self._crop_for_lnet_s(images, self.head_crop_boxes(head_boxes, images))

    def _crop_for_lnet_s(
        self, images: tf.Tensor, crop_boxes: tf.Tensor, image_indices: tf.Tensor | None = None
    ) -> tf.Tensor:
        return localization.crop_and_resize(
            images, crop_boxes, self.lnet_s_size, box_indices=image_indices, extrapolation_value=0.0
        )

    def localize_face(self, images: tf.Tensor, head_boxes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Find the face with LNet_s in the square crop about each head box.

        With `lnet_s_recrop_context` set, LNet_s runs again on one square crop about
        its first box per factor of `lnet_s_recrop_scales` (`face_recrop_boxes`),
        and the outputs are the second pass's: the mean of its boxes and of its
        scores. Returns "face_box" [batch, 4] in image coordinates, "face_score"
        [batch] and "lnet_s_response" [batch, h', w'] over the crop that LNet_s read
        last (with a second pass, the first factor's crop).
        """
        face = self.localize_face_in_crops(images, self.head_crop_boxes(head_boxes, images))
        if self.localization_config.lnet_s_recrop_context is None:
            return face

        # LNet_s reads the crops of every scale in one call (scale-major), so the
        # traced graph and the TFLite model contain LNet_s's ops once.
        scales = self.localization_config.lnet_s_recrop_scales
        crop_boxes = tf.concat(
            [self.face_recrop_boxes(face["face_box"], images, scale) for scale in scales], axis=0
        )
        batch = tf.shape(images)[0]
        image_indices = tf.tile(tf.range(batch), [len(scales)])
        found = self.localize_face_in_crops(images, crop_boxes, image_indices)
        return {
            "face_box": tf.reduce_mean(tf.reshape(found["face_box"], [len(scales), -1, 4]), axis=0),
            "face_score": tf.reduce_mean(tf.reshape(found["face_score"], [len(scales), -1]), axis=0),
            "lnet_s_response": found["lnet_s_response"][:batch],
        }

    def localize_face_in_crops(
        self, images: tf.Tensor, crop_boxes: tf.Tensor, image_indices: tf.Tensor | None = None
    ) -> dict[str, tf.Tensor]:
        """Find the face with LNet_s in given crops [num_crops, 4] of normalized images.

        `localize_face` with the crops chosen by the caller instead of about LNet_o's
        boxes. The outputs are the same, one per crop, with "lnet_s_response" over
        these crops. Crop i is cut from image `image_indices[i]`, or from image i
        when `image_indices` is None.
        """
        crops = self._crop_for_lnet_s(images, crop_boxes, image_indices)
        response = localization.response_map(
            self.lnet_s(crops, training=False)["feature_map"], self.lnet_s_blank
        )
        boxes_in_crop, scores = localization.locate(
            response, self.localization_config, self.lnet_s_geometry
        )
        return {
            "face_box": localization.crop_box_to_image(
                boxes_in_crop, crop_boxes, self.localization_config.min_box_side
            ),
            "face_score": scores,
            "lnet_s_response": response,
        }

    def face_crop_boxes(self, face_boxes: tf.Tensor) -> tf.Tensor:
        """Enlarge LNet_s face boxes by `lnet_s_context`: the crops ANet's patches tile."""
        return localization.expand_box(face_boxes, self.localization_config.lnet_s_context)

    def patch_features_from_images(
        self, images: tf.Tensor, face_boxes: tf.Tensor
    ) -> tf.Tensor:
        """Return ANet features [batch, NUM_PATCHES, features] of the faces' patches.

        Patches are cut straight from the images (see
        `patches.extract_patches_from_images`) at ANet's input side.
        """
        patch_images = patches.extract_patches_from_images(
            images, self.face_crop_boxes(face_boxes), self.anet_size
        )
        return self._patch_features(patch_images)

    def patch_features_from_faces(self, face_crops: tf.Tensor) -> tf.Tensor:
        """Return ANet features [batch, NUM_PATCHES, features] of normalized face crops."""
        return self._patch_features(patches.extract_patches(face_crops, self.anet_size))

    def _patch_features(self, patch_images: tf.Tensor) -> tf.Tensor:
        features = self.anet(patch_images, training=False)["features"]
        return tf.reshape(features, [-1, patches.NUM_PATCHES, features.shape[-1]])

    def attribute_scores_from_features(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """Score [batch, NUM_PATCHES, features] patch features with the SVMs.

        Returns "attribute_scores" [batch, 40], the SVM scores averaged over patches,
        and "attribute_probabilities" [batch, 40], their Platt sigmoids.
        """
        flat = tf.reshape(features, [-1, features.shape[-1]])
        patch_scores = tf.matmul(flat, self.svm_weights) + self.svm_bias
        scores = patches.average_over_patches(patch_scores)
        probabilities = tf.sigmoid(self.platt_scale * scores + self.platt_offset)
        return {"attribute_scores": scores, "attribute_probabilities": probabilities}

    def attribute_scores_from_faces(self, face_crops: tf.Tensor) -> dict[str, tf.Tensor]:
        """Score normalized face crops [batch, h, w, 3]; see `attribute_scores_from_features`."""
        return self.attribute_scores_from_features(self.patch_features_from_faces(face_crops))

    def attribute_scores_from_images(
        self, images: tf.Tensor, face_boxes: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """Score the faces at `face_boxes` in normalized images; see `attribute_scores_from_features`."""
        features = self.patch_features_from_images(images, face_boxes)
        return self.attribute_scores_from_features(features)


def _square_input_side(model: keras.Model, label: str, configured: int) -> int:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None or shape[3] != 3:
        raise ValueError(
            f"{label} must take square RGB images [batch, side, side, 3], but its "
            f"input shape is {shape}."
        )
    if shape[1] != configured:
        raise ValueError(
            f"{label} takes {shape[1]}x{shape[1]} inputs, but the config sets "
            f"input_size={configured}. Build the model from the same config."
        )
    return int(shape[1])


def _require_outputs(model: keras.Model, label: str, names: tuple) -> None:
    outputs = model.output
    missing = [name for name in names if not isinstance(outputs, dict) or name not in outputs]
    if missing:
        found = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ValueError(
            f"{label} must return a dict with outputs {list(names)}; {missing} are "
            f"missing (it returns {found}). Build it with lnet_anet_tf.models."
        )


def _check_images(images: tf.Tensor) -> None:
    if images.shape.rank != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"The cascade expects float32 RGB images [batch, height, width, 3] with "
            f"values in [0, 255], got shape {images.shape}."
        )
