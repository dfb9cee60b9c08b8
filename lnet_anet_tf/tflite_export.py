"""TFLite models of the cascade and of ANet alone, in five numeric variants.

Two models:

| model | input `image` (float32, RGB, values in [0, 255]) | outputs |
| --- | --- | --- |
| `cascade` | [1, S, S, 3]: the photo letterboxed into an S x S canvas (`canvas_side`, 256 by default) | `face_box`, `localization_score`, `head_box`, `head_score`, `attribute_probabilities`, `attribute_scores`, `lnet_o_response`, `lnet_s_response` |
| `anet` | [1, F, F, 3]: a face crop, F = 2 x ANet's input side | `attribute_probabilities` [1, 40], `attribute_scores` [1, 40] |

What the client does for `cascade`: resize the photo so that its longer side is
S, keeping the aspect ratio (bilinear, half-pixel centres). Then pad it to S x S
with the value 127.5, the same amount on both sides. `letterbox_canvas` does
both. Boxes come back normalized [ymin, xmin, ymax, xmax] of the canvas;
`canvas_box_to_image` maps them to the photo. The SavedModel runs the cascade on
the photo at its own size instead; on the same canvas both give the same output.

What the client does for `anet`: cut the face crop and resize it to F x F without
keeping the aspect ratio. The face crop is the face box enlarged by
`LocalizationConfig.lnet_s_context` about its centre. For CelebA's aligned
images it is the centre square `pipeline.ALIGNED_FACE_BOX`. The model cuts ANet's patches from it,
runs ANet, the 40 linear SVMs and Platt scaling, and averages over the patches.
F is twice ANet's input side so that every patch, the smallest being 55% of the
crop, is cut at ANet's resolution or finer.

Variants (`VARIANTS`), all with float32 inputs and outputs so that a client
treats them alike:

- `float32`: no quantization.
- `float16`: weights stored as float16, computed in float32.
- `dynamic_range`: int8 weights, activations quantized on the fly.
  NOTE: this includes the SVMs' input features, and SVMs with large weights
  amplify that rounding. On a synthetic run trained for one epoch (SVM weights
  up to about 2,000) mean accuracy fell by 7.5 points. On runs trained for 3 to
  6 epochs it moved by less than 0.25 point.
- `int8`: int8 weights and activations of the nets, ranges calibrated on a
  representative dataset of training images. Only the nets are int8. The ops
  around them (normalization, cropping, the localization on response maps, the
  SVMs and Platt scaling) stay float32 (see `_selectively_quantize`), because
  int8 rounding there moved the boxes, and int8 SVMs with large weights lost
  7.7 points of mean accuracy on a synthetic run trained for one epoch. The
  locally connected layers run as one int8 FULLY_CONNECTED per region (see
  `_tracing_context`).
- `qat_int8`: as `int8`, but ANet comes from quantization-aware training
  (`lnet_anet_tf.quantize`); the LNets are calibrated as in `int8`.

Every model uses TFLite builtin ops only: no Flex (SELECT_TF_OPS) and no custom
ops.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable, Optional

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from lnet_anet_tf import attributes
from lnet_anet_tf import layers
from lnet_anet_tf import preprocessing
from lnet_anet_tf.cascade import Cascade

VARIANTS = ("float32", "float16", "dynamic_range", "int8", "qat_int8")
# The variants that read training images: int8 to calibrate, qat_int8 to
# calibrate and fine-tune.
QUANTIZED_VARIANTS = ("int8", "qat_int8")
DEFAULT_CANVAS_SIDE = 256
# The value a letterboxed canvas is padded with: mid-gray, which the cascade's
# normalization maps to 0, as its own letterbox pads.
PAD_VALUE = 127.5
SIGNATURE_KEY = "serving_default"
LABELS_FILENAME = "labels.txt"
INPUT_NAME = "image"
CASCADE_OUTPUTS = (
    "face_box",
    "localization_score",
    "head_box",
    "head_score",
    "attribute_probabilities",
    "attribute_scores",
    "lnet_o_response",
    "lnet_s_response",
)
ANET_OUTPUTS = ("attribute_probabilities", "attribute_scores")

RepresentativeData = Callable[[], Iterable[np.ndarray]]


def face_side(cascade: Cascade) -> int:
    """Return F, the side of the `anet` model's face-crop input."""
    return 2 * cascade.anet_size


def cascade_function(cascade: Cascade, canvas_side: int):
    """Return (concrete function, module) of the canvas cascade, variables frozen."""
    frozen, module = cascade.frozen_call(1, canvas_side, canvas_side)
    spec = tf.TensorSpec([1, canvas_side, canvas_side, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def predict(image):
        outputs = frozen(image)
        return {key: outputs[key] for key in CASCADE_OUTPUTS}

    module.predict = predict
    return predict.get_concrete_function(), module


def anet_function(cascade: Cascade):
    """Return (concrete function, module) of face crop -> 40 probabilities, variables frozen.

    The variables are turned into constants for the reason `Cascade.frozen_call`
    gives: converting Keras 3 variables gave NaN outputs.
    """
    side = face_side(cascade)
    spec = tf.TensorSpec([1, side, side, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def score_faces(image):
        return cascade.attribute_scores_from_faces(preprocessing.normalize(image))

    traced = score_faces.get_concrete_function()
    frozen = convert_variables_to_constants_v2(traced)
    structure = traced.structured_outputs
    module = tf.Module(name="frozen_anet")

    @tf.function(input_signature=[spec])
    def predict(image):
        outputs = tf.nest.pack_sequence_as(structure, frozen(image))
        return {key: outputs[key] for key in ANET_OUTPUTS}

    module.predict = predict
    return predict.get_concrete_function(), module


def convert(
    function,
    module: tf.Module,
    variant: str,
    representative_data: Optional[RepresentativeData] = None,
    quantized_prefixes: Optional[tuple] = None,
) -> bytes:
    """Convert a frozen concrete function to a .tflite flatbuffer in `variant`.

    For `int8` and `qat_int8`, `representative_data` calibrates the activation
    ranges. `quantized_prefixes` then limits
    int8 to the ops whose output tensor names start with one of the prefixes
    (the nets' layers), and every other op stays float32 (see
    `_selectively_quantize`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown TFLite variant {variant!r}; expected one of {VARIANTS}.")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]

    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in QUANTIZED_VARIANTS:
        if representative_data is None:
            raise ValueError(
                f"The {variant} variant needs representative_data: a callable that "
                "yields input images for calibrating activation ranges."
            )

        def batches():
            for image in representative_data():
                yield [np.asarray(image, np.float32)[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = batches
        # int8 kernels where TFLite has them, float32 for the remaining ops.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        if quantized_prefixes:
            float_model = convert(function, module, "float32")
            return _selectively_quantize(converter, batches, float_model, quantized_prefixes)
    return converter.convert()


# Op types that only the cascade's localization and cropping use, never the
# nets. Their int8 versions are too coarse: an int8 DIV fails at run time when
# its divisor rounds to the zero point, and int8 window sums move the ARG_MAX.
_LOCALIZATION_OPS = (
    "ARG_MAX", "ARG_MIN", "CAST", "CUMSUM", "DIV", "FLOOR", "GATHER", "GREATER",
    "LESS", "MAXIMUM", "MINIMUM", "NEG", "ONE_HOT", "PACK", "REDUCE_MAX",
    "RESIZE_BILINEAR", "SELECT", "SELECT_V2", "SUM", "TOPK_V2", "UNPACK",
)


def _selectively_quantize(converter, batches, float_model: bytes, prefixes: tuple) -> bytes:
    """Quantize only the ops whose output names start with `prefixes`.

    Uses `tf.lite.experimental.QuantizationDebugger`, whose denylists keep nodes
    (by output tensor name) and op types in float32. The names come from the
    float32 conversion of the same function. Some fused ops get new names in the
    quantized graph, so the op types of `_LOCALIZATION_OPS` are denylisted too.
    """
    names = {name for name in operator_output_names(float_model) if not name.startswith(prefixes)}
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=sorted(names), denylisted_ops=list(_LOCALIZATION_OPS)
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=batches, debug_options=options
    )
    return remove_requantization(debugger.get_nondebug_quantized_model())


def remove_requantization(model_content: bytes) -> bytes:
    """Remove each chain of QUANTIZE ops and a DEQUANTIZE that takes a float32 tensor back to float32.

    The denylists above keep ops in float32, but the quantizer can still leave
    such a chain (float32 -> int8 -> int8 -> float32) between two float ops. It
    only rounds the tensor to the int8 grid of its calibrated range, and where
    that range includes the 1e30 masks of the localization's ARG_MIN and
    ARG_MAX, it rounds every value to 0. The consumers of the DEQUANTIZE output
    read the float32 tensor instead.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_content))
    graph = model.subgraphs[0]
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    quantize_code = tflite_schema.BuiltinOperator.QUANTIZE
    dequantize_code = tflite_schema.BuiltinOperator.DEQUANTIZE
    producers = {int(op.outputs[0]): op for op in graph.operators if len(op.outputs) == 1}
    float32 = tflite_schema.TensorType.FLOAT32

    replacements = {}
    for op in graph.operators:
        if codes[op.opcodeIndex] != dequantize_code:
            continue
        source = int(op.inputs[0])
        producer = producers.get(source)
        while producer is not None and codes[producer.opcodeIndex] == quantize_code:
            source = int(producer.inputs[0])
            if graph.tensors[source].type == float32:
                break
            producer = producers.get(source)
        if graph.tensors[source].type == float32 and source != int(op.inputs[0]):
            replacements[int(op.outputs[0])] = source

    def replace(indices):
        return [replacements.get(int(index), int(index)) for index in indices]

    for op in graph.operators:
        op.inputs = replace(op.inputs)
    graph.outputs = replace(graph.outputs)
    for signature in model.signatureDefs or []:
        for output in signature.outputs:
            output.tensorIndex = replacements.get(output.tensorIndex, output.tensorIndex)

    # Drop the QUANTIZE and DEQUANTIZE ops that nothing reads any more, from
    # the end of each chain backwards.
    while True:
        consumed = {int(index) for op in graph.operators for index in op.inputs}
        consumed.update(int(index) for index in graph.outputs)
        kept = [
            op for op in graph.operators
            if codes[op.opcodeIndex] not in (quantize_code, dequantize_code)
            or int(op.outputs[0]) in consumed
        ]
        if len(kept) == len(graph.operators):
            break
        graph.operators = kept
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def operator_output_names(model_content: bytes) -> list:
    """Return the output tensor names of every operator in a .tflite flatbuffer's main graph."""
    model = tflite_schema.Model.GetRootAsModel(model_content, 0)
    graph = model.Subgraphs(0)
    names = []
    for op_index in range(graph.OperatorsLength()):
        operator = graph.Operators(op_index)
        for position in range(operator.OutputsLength()):
            tensor = graph.Tensors(operator.Outputs(position))
            names.append(tensor.Name().decode("utf-8"))
    return names


def letterbox_canvas(image: np.ndarray, canvas_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox an RGB image [H, W, 3] into the `cascade` model's input canvas.

    Returns the float32 canvas [canvas_side, canvas_side, 3] in [0, 255] and the
    window [ymin, xmin, ymax, xmax] that the image occupies, normalized to the
    canvas. The resize is `preprocessing.letterbox`'s, so the canvas equals what
    the cascade itself would feed LNet_o at that side.
    """
    normalized = preprocessing.normalize(tf.convert_to_tensor(image)[tf.newaxis])
    letterboxed, window = preprocessing.letterbox(normalized, canvas_side)
    canvas = (letterboxed[0] + 1.0) * PAD_VALUE
    return canvas.numpy().astype(np.float32), window.numpy()


def canvas_box_to_image(boxes: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Map normalized canvas boxes [..., 4] to normalized boxes of the letterboxed image."""
    return preprocessing.window_to_image(boxes, window).numpy()


def write_labels(path: str) -> None:
    """Write the 40 attribute names, one per line, in output order."""
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(attributes.ATTRIBUTE_NAMES) + "\n")


def model_filename(model: str, variant: str) -> str:
    return f"{model}_{variant}.tflite"


def write_model(path: str, content: bytes) -> None:
    """Write a flatbuffer through a temporary file in the same folder, then rename it."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as file:
        file.write(content)
    os.replace(temporary, path)


def write_tflite_models(
    output_dir: str,
    cascade: Cascade,
    variants,
    canvas_side: int = DEFAULT_CANVAS_SIDE,
    calibration_canvases: Optional[list] = None,
    calibration_faces: Optional[list] = None,
    qat_cascade: Optional[Cascade] = None,
) -> dict:
    """Convert both models in each variant into `output_dir`; return {name: path}.

    `calibration_canvases` and `calibration_faces` are lists of float32 images in
    [0, 255] (canvases [S, S, 3] and face crops [F, F, 3]) that the int8
    variants need. `qat_cascade` is the cascade whose ANet came from
    quantization-aware training; the `qat_int8` variant needs it. The folder also
    receives `labels.txt`.
    """
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown TFLite variants {unknown}; expected some of {VARIANTS}.")
    if "qat_int8" in variants and qat_cascade is None:
        raise ValueError("The qat_int8 variant needs qat_cascade, the cascade with the QAT ANet.")

    paths = {}
    for variant in variants:
        source = qat_cascade if variant == "qat_int8" else cascade
        models = {
            "cascade": (
                lambda: cascade_function(source, canvas_side),
                calibration_canvases,
                _name_prefixes(source.lnet_o, source.lnet_s, source.anet),
            ),
            "anet": (lambda: anet_function(source), calibration_faces, _name_prefixes(source.anet)),
        }
        for model, (build, calibration, quantized_prefixes) in models.items():
            with _tracing_context(variant):
                function, module = build()
            data = _fixed_images(calibration)
            content = convert(function, module, variant, data, quantized_prefixes)
            name = f"{model}_{variant}"
            paths[name] = os.path.join(output_dir, model_filename(model, variant))
            write_model(paths[name], content)
            logging.info("Wrote %s (%d bytes).", paths[name], len(content))

    paths["labels"] = os.path.join(output_dir, LABELS_FILENAME)
    write_labels(paths["labels"])
    return paths


def _tracing_context(variant: str):
    """Return the context to trace the nets in for `variant`.

    The int8 variants trace the locally connected layers with one matmul per
    region (see `layers.per_region_matmuls`), because XNNPACK runs the
    resulting int8 FULLY_CONNECTED ops but rejects most int8 BATCH_MATMUL ops.
    """
    if variant in QUANTIZED_VARIANTS:
        return layers.per_region_matmuls()
    return contextlib.nullcontext()


def _name_prefixes(*nets) -> tuple:
    """Return the prefixes of the tensor names inside `nets` in a converted model.

    Tensors inside a Keras 3 model are named "<model>_1/<layer>...", and inside a
    tf_keras model "<model>/<layer>...".
    """
    return tuple(f"{net.name}{separator}" for net in nets for separator in ("_", "/"))


def _fixed_images(images: Optional[list]) -> Optional[RepresentativeData]:
    return None if images is None else (lambda: images)
