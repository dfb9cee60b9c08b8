"""The serving module that the SavedModel export saves: encoded images in, attributes out.

Signatures (all outputs are per batch item):

| signature | input | outputs |
| --- | --- | --- |
| `serving_default` | `image_bytes` string [batch]: JPEG, PNG, GIF, BMP or WebP files of any size | `attribute_probabilities` [batch, 40], `face_box` [batch, 4], `localization_score` [batch], `valid` bool [batch] |
| `predict_images` | `images` float32 [batch, H, W, 3], RGB in [0, 255] | the same four |
| `predict_details` | `image_bytes` as in `serving_default` | the four, plus `head_box`, `head_score`, `attribute_scores`, `lnet_o_response`, `lnet_s_response` and `image_size` (int32 [batch, 2], height and width) |
| `attribute_names` | none | `attribute_names` string [40], read from the asset file |

Boxes are normalized [ymin, xmin, ymax, xmax] of the input image.

An item whose bytes cannot be decoded (empty, not an image, truncated, or larger
than `max_pixels` according to its header) gets `valid` false and zeros in every
other output, and the rest of the batch is still processed. TensorFlow cannot catch an
op error inside a graph, so the check runs in a `tf.data` pipeline that decodes
each item and drops the items whose decode raised (`ignore_errors`). The items
that survive are decoded a second time inside `tf.map_fn`, and the cascade runs on
each at its own size, exactly as `Cascade.__call__` runs on one image. That costs
a second decode per image; the cascade's convolutions cost far more.
"""

from __future__ import annotations

import tensorflow as tf

from lnet_anet_tf import attributes
from lnet_anet_tf.cascade import Cascade
from lnet_anet_tf.data import images as images_lib

SERVING_OUTPUTS = ("attribute_probabilities", "face_box", "localization_score")
DETAIL_OUTPUTS = SERVING_OUTPUTS + (
    "head_box",
    "head_score",
    "attribute_scores",
    "lnet_o_response",
    "lnet_s_response",
)


class ServingModule:
    """Wrap a `Cascade` with the signatures above and the attribute names as an asset.

    Save `saveable()`, not this object: see its docstring.
    """

    def __init__(
        self,
        cascade: Cascade,
        attribute_names_path: str,
        max_pixels: int = images_lib.DEFAULT_MAX_PIXELS,
    ):
        self.cascade = cascade
        self.attribute_names_file = tf.saved_model.Asset(attribute_names_path)
        self.max_pixels = int(max_pixels)
        self._output_specs = _cascade_output_specs(cascade)

    def signatures(self) -> dict:
        """Return the concrete functions to pass to `tf.saved_model.save`."""
        return {
            "serving_default": self.serve_image_bytes.get_concrete_function(),
            "predict_images": self.serve_images.get_concrete_function(),
            "predict_details": self.serve_details.get_concrete_function(),
            "attribute_names": self.read_attribute_names.get_concrete_function(),
        }

    def saveable(self) -> tf.Module:
        """Return the object to save: the functions, the asset and the variables they read.

        Saving a module that contains the Keras 3 models themselves gives a
        SavedModel that `tf.saved_model.load` reads but a TF1 session loader
        (TF Serving, `saved_model_cli run`) cannot. Every Keras variable is saved
        a second time as a variable that only its initializer fills, and those
        loaders restore the checkpoint without running that initializer. They
        fail with "Could not find variable" (TensorFlow 2.21, Keras 3.15).
        Tracking only the tf.Variables that the functions capture, as
        `keras.export.ExportArchive` does, saves each variable once.
        """
        signatures = self.signatures()
        root = tf.Module(name="lnet_anet")
        root.attribute_names_file = self.attribute_names_file
        root.model_variables = _captured_variables(signatures.values())
        root.serve_image_bytes = self.serve_image_bytes
        root.serve_images = self.serve_images
        root.serve_details = self.serve_details
        root.read_attribute_names = self.read_attribute_names
        return root

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_image_bytes(self, image_bytes):
        outputs = self._run_on_encoded(image_bytes)
        return {key: outputs[key] for key in SERVING_OUTPUTS + ("valid",)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_details(self, image_bytes):
        return self._run_on_encoded(image_bytes)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]
    )
    def serve_images(self, images):
        outputs = self.cascade(images)
        result = {key: outputs[key] for key in SERVING_OUTPUTS}
        result["valid"] = tf.ones(tf.shape(images)[:1], tf.bool)
        return result

    @tf.function(input_signature=[])
    def read_attribute_names(self):
        text = tf.strings.strip(tf.io.read_file(self.attribute_names_file))
        names = tf.strings.split(text, "\n")
        return {"attribute_names": tf.ensure_shape(names, [attributes.NUM_ATTRIBUTES])}

    def _run_on_encoded(self, image_bytes: tf.Tensor) -> dict:
        valid = decodable(image_bytes, self.max_pixels)
        specs = self._output_specs

        def run_one(item):
            contents, is_valid = item
            return tf.cond(
                is_valid,
                lambda: self._run_on_one(contents),
                lambda: {key: tf.zeros(spec.shape, spec.dtype) for key, spec in specs.items()},
            )

        outputs = tf.map_fn(run_one, (image_bytes, valid), fn_output_signature=specs)
        outputs["valid"] = valid
        return outputs

    def _run_on_one(self, contents: tf.Tensor) -> dict:
        image = images_lib.decode_image(contents)
        outputs = self.cascade(tf.cast(image, tf.float32)[tf.newaxis])
        result = {key: outputs[key][0] for key in DETAIL_OUTPUTS}
        result["image_size"] = tf.shape(image, out_type=tf.int32)[:2]
        return result


def decodable(image_bytes: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Return bool [batch]: whether each encoded image decodes and has at most `max_pixels`.

    The size is read from the header before decoding, so an oversized image
    (a decompression bomb, for example) is never decoded. JPEG XL, whose header is
    not parsed, is checked after decoding.
    """
    indices = tf.range(tf.size(image_bytes, out_type=tf.int64))

    def check(index, contents):
        height, width = images_lib.header_image_size(contents)
        header_check = tf.debugging.assert_less_equal(
            height * width, tf.constant(max_pixels, tf.int64),
            message="the image header gives more than max_pixels pixels",
        )
        with tf.control_dependencies([header_check]):
            image = images_lib.decode_image(contents)
        shape = tf.shape(image, out_type=tf.int64)
        decoded_check = tf.debugging.assert_less_equal(
            shape[0] * shape[1], tf.constant(max_pixels, tf.int64),
            message="the decoded image has more than max_pixels pixels",
        )
        with tf.control_dependencies([decoded_check]):
            return tf.identity(index)

    survivors = (
        tf.data.Dataset.from_tensor_slices((indices, image_bytes))
        .map(check)
        .ignore_errors()
    )
    initial = tf.zeros_like(indices, dtype=tf.bool)
    return survivors.reduce(
        initial,
        lambda mask, index: tf.tensor_scatter_nd_update(mask, [[index]], [True]),
    )


def _captured_variables(functions) -> list:
    """Return the tf.Variables that the concrete functions read, each once."""
    variables, seen = [], set()
    for function in functions:
        for variable in function.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


def _cascade_output_specs(cascade: Cascade) -> dict:
    """Return the per-image TensorSpecs of `ServingModule.predict_details`'s outputs."""
    lnet_o_map = cascade.lnet_o.output["feature_map"].shape[1:3]
    lnet_s_map = cascade.lnet_s.output["feature_map"].shape[1:3]
    num_attributes = attributes.NUM_ATTRIBUTES
    shapes = {
        "attribute_probabilities": [num_attributes],
        "face_box": [4],
        "localization_score": [],
        "head_box": [4],
        "head_score": [],
        "attribute_scores": [num_attributes],
        "lnet_o_response": list(lnet_o_map),
        "lnet_s_response": list(lnet_s_map),
    }
    specs = {key: tf.TensorSpec(shape, tf.float32) for key, shape in shapes.items()}
    specs["image_size"] = tf.TensorSpec([2], tf.int32)
    return specs
