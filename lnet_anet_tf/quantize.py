"""Quantization-aware training (QAT) of ANet through a tf_keras twin.

TensorFlow Model Optimization 0.8 rejects Keras 3 models: `quantize_model` raises
ValueError on a `keras.Model`. It accepts tf_keras (Keras 2) models. This module
therefore rebuilds a trained Keras 3 net layer by layer in tf_keras (`twin_model`),
copies its weights and wraps it with tfmot's 8-bit scheme (`quantize_model`).
`quantization_aware_anet` then sets the 8-bit ranges from data and fine-tunes
ANet for a few epochs on the training faces, towards the float model's attribute
probabilities (distillation).

What QAT covers: ANet only. The cascade's `qat_int8` TFLite export takes ANet
from QAT and the LNets through post-training int8 quantization, calibrated on a
representative dataset exactly as in the `int8` export.

The SVMs and their Platt scaling are not refitted after QAT. The fine-tuning
therefore scores each patch through them (fixed) and keeps batch normalization
frozen, so that the features stay what the SVMs expect.

`LocallyConnected2D` has no tf_keras counterpart with share regions
(`tf_keras.layers.LocallyConnected2D` only covers the unshared case), so
`TwinLocallyConnected2D` repeats its computation op for op. It is annotated with
`LocallyConnectedQuantizeConfig`: its kernel gets per-tensor symmetric 8-bit
fake quantization, as a `Dense` kernel does, and its output gets a moving-average
8-bit range, so the converter emits an int8 BATCH_MATMUL for it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from absl import logging

from lnet_anet_tf import layers as layers_lib
from lnet_anet_tf import patches
from lnet_anet_tf import preprocessing
from lnet_anet_tf.models import normalization

_quantizers = tfmot.quantization.keras.quantizers


@tf_keras.utils.register_keras_serializable(package="lnet_anet_tf")
class TwinLocallyConnected2D(tf_keras.layers.Layer):
    """tf_keras copy of `layers.LocallyConnected2D`, with the same weights and ops.

    Only the forward pass is repeated (no regularizers or constraints): the twin
    exists to be fine-tuned briefly and converted.
    """

    def __init__(self, filters, kernel_size, strides, padding, share_size, use_bias, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(kernel_size)
        self.strides = tuple(strides)
        self.padding = padding
        self.share_size = None if share_size is None else tuple(share_size)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        rows, cols, channels = (int(side) for side in input_shape[1:])
        self.geometry = _geometry(
            (rows, cols), self.kernel_size, self.strides, self.padding, self.share_size
        )
        patch_size = self.kernel_size[0] * self.kernel_size[1] * channels
        self.kernel = self.add_weight(
            "kernel", shape=(self.geometry["regions"], patch_size, self.filters)
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                "bias", shape=(self.geometry["regions"], self.filters), initializer="zeros"
            )
        super().build(input_shape)

    def call(self, inputs):
        geometry = self.geometry
        padded = tf.pad(inputs, geometry["input_paddings"])
        spatial_first = tf.transpose(padded, (1, 2, 0, 3))

        row_stride, col_stride = self.strides
        row_span = (geometry["padded_out_rows"] - 1) * row_stride + 1
        col_span = (geometry["padded_out_cols"] - 1) * col_stride + 1
        slices = [
            spatial_first[row : row + row_span : row_stride, col : col + col_span : col_stride]
            for row in range(self.kernel_size[0])
            for col in range(self.kernel_size[1])
        ]
        patch_rows = slices[0] if len(slices) == 1 else tf.concat(slices, axis=-1)

        share_rows, share_cols = geometry["share_rows"], geometry["share_cols"]
        region_rows, region_cols = geometry["region_rows"], geometry["region_cols"]
        grouped = tf.reshape(patch_rows, (region_rows, share_rows, region_cols, -1))
        if share_rows > 1 and region_cols > 1:
            grouped = tf.transpose(grouped, (0, 2, 1, 3))
        grouped = tf.reshape(grouped, (geometry["regions"], -1, patch_rows.shape[-1]))

        outputs = layers_lib.region_matmul(grouped, self.kernel, self.bias)

        outputs = tf.reshape(outputs, (region_rows, region_cols, share_rows, -1))
        if share_rows > 1 and region_cols > 1:
            outputs = tf.transpose(outputs, (0, 2, 1, 3))
        outputs = tf.reshape(
            outputs,
            (geometry["padded_out_rows"], geometry["padded_out_cols"], -1, self.filters),
        )
        outputs = outputs[: geometry["out_rows"], : geometry["out_cols"]]
        return tf.transpose(outputs, (2, 0, 1, 3))

    def compute_output_shape(self, input_shape):
        geometry = _geometry(
            input_shape[1:3], self.kernel_size, self.strides, self.padding, self.share_size
        )
        return tf.TensorShape(
            [input_shape[0], geometry["out_rows"], geometry["out_cols"], self.filters]
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "share_size": self.share_size,
                "use_bias": self.use_bias,
            }
        )
        return config


def _geometry(input_size, kernel_size, strides, padding, share_size) -> dict:
    """Output size, share regions and input padding, as `LocallyConnected2D` computes them."""
    pads, out_sizes = [], []
    for size, kernel, stride in zip(input_size, kernel_size, strides):
        size = int(size)
        if padding == "same":
            out = -(-size // stride)
            total = max((out - 1) * stride + kernel - size, 0)
            pads.append([total // 2, total - total // 2])
        else:
            out = (size - kernel) // stride + 1
            pads.append([0, 0])
        out_sizes.append(out)

    if share_size is None:
        share_size = out_sizes
    shares = [max(1, min(share, out)) for share, out in zip(share_size, out_sizes)]
    regions = [-(-out // share) for out, share in zip(out_sizes, shares)]
    padded_outs = [count * share for count, share in zip(regions, shares)]

    # Zero rows and cols at the end give every position of a partial last region
    # an input window; their outputs are dropped after the matmul.
    for axis, (size, kernel, stride) in enumerate(zip(input_size, kernel_size, strides)):
        needed = (padded_outs[axis] - 1) * stride + kernel
        have = int(size) + sum(pads[axis])
        pads[axis][1] += max(needed - have, 0)

    return {
        "out_rows": out_sizes[0],
        "out_cols": out_sizes[1],
        "share_rows": shares[0],
        "share_cols": shares[1],
        "region_rows": regions[0],
        "region_cols": regions[1],
        "regions": regions[0] * regions[1],
        "padded_out_rows": padded_outs[0],
        "padded_out_cols": padded_outs[1],
        "input_paddings": ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)),
    }


class LocallyConnectedQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """8-bit QAT of `TwinLocallyConnected2D`: per-tensor symmetric kernel, output range."""

    def get_weights_and_quantizers(self, layer):
        kernel_quantizer = _quantizers.LastValueQuantizer(
            num_bits=8, per_axis=False, symmetric=True, narrow_range=True
        )
        return [(layer.kernel, kernel_quantizer)]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [
            _quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        ]

    def get_config(self):
        return {}


def _twin_layer(layer: keras.layers.Layer):
    """Return the tf_keras layer that computes what Keras 3 `layer` computes."""
    name = layer.name
    if isinstance(layer, layers_lib.LocallyConnected2D):
        return TwinLocallyConnected2D(
            layer.filters, layer.kernel_size, layer.strides, layer.padding,
            layer.share_size, layer.use_bias, name=name,
        )

    if isinstance(layer, keras.layers.Conv2D):
        return tf_keras.layers.Conv2D(
            layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
            use_bias=layer.use_bias, activation=keras.activations.serialize(layer.activation),
            name=name,
        )

    if isinstance(layer, keras.layers.Dense):
        return tf_keras.layers.Dense(
            layer.units, use_bias=layer.use_bias,
            activation=keras.activations.serialize(layer.activation), name=name,
        )

    if isinstance(layer, keras.layers.BatchNormalization):
        return tf_keras.layers.BatchNormalization(
            axis=layer.axis, momentum=layer.momentum, epsilon=layer.epsilon,
            center=layer.center, scale=layer.scale, name=name,
        )

    if isinstance(layer, keras.layers.ReLU):
        return tf_keras.layers.ReLU(name=name)

    if isinstance(layer, keras.layers.MaxPooling2D):
        return tf_keras.layers.MaxPooling2D(
            layer.pool_size, strides=layer.strides, padding=layer.padding, name=name
        )

    if isinstance(layer, keras.layers.Flatten):
        return tf_keras.layers.Flatten(name=name)

    if isinstance(layer, keras.layers.Dropout):
        return tf_keras.layers.Dropout(layer.rate, name=name)

    if isinstance(layer, keras.layers.Activation):
        return tf_keras.layers.Activation(
            keras.activations.serialize(layer.activation), name=name
        )

    if isinstance(layer, normalization.LocalResponseNormalization):
        return tf_keras.layers.Lambda(
            lambda x, config=layer.get_config(): tf.nn.local_response_normalization(
                x, depth_radius=config["depth_radius"], bias=config["bias"],
                alpha=config["alpha"], beta=config["beta"],
            ),
            name=name,
        )
    raise ValueError(
        f"Layer {name!r} of type {type(layer).__name__} has no tf_keras twin. "
        "Only the layers that lnet_anet_tf.models builds are supported."
    )


def twin_model(model: keras.Model) -> tf_keras.Model:
    """Rebuild a Keras 3 LNet or ANet in tf_keras, with the same layer names and weights.

    The model must be a chain of single-input layers, as `build_lnet` and
    `build_anet` make them; its dict outputs become the twin's dict outputs.
    """
    inputs = tf_keras.Input(tuple(model.inputs[0].shape[1:]), name=model.inputs[0].name)
    tensors = {id(model.inputs[0]): inputs}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if id(layer.input) not in tensors:
            raise ValueError(
                f"Layer {layer.name!r} of {model.name!r} does not read from a layer "
                "before it; twin_model only rebuilds chains of single-input layers."
            )
        twin = _twin_layer(layer)
        tensors[id(layer.output)] = twin(tensors[id(layer.input)])
        if layer.weights:
            twin.set_weights(layer.get_weights())

    outputs = {name: tensors[id(tensor)] for name, tensor in model.output.items()}
    return tf_keras.Model(inputs, outputs, name=model.name)


def quantize_model(twin: tf_keras.Model) -> tf_keras.Model:
    """Wrap a tf_keras twin for 8-bit QAT, with batch normalization frozen.

    Every layer goes through tfmot's default 8-bit scheme, except
    `TwinLocallyConnected2D`, which gets `LocallyConnectedQuantizeConfig`.
    Frozen batch normalization runs in inference mode in training too, so its
    moving statistics stay those of the trained float net.
    """
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def annotated(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            clone.trainable = False
        if isinstance(layer, TwinLocallyConnected2D):
            return annotate(clone, LocallyConnectedQuantizeConfig())
        return annotate(clone) if _has_default_quantize_config(layer) else clone

    annotated_model = tf_keras.models.clone_model(twin, clone_function=annotated)
    annotated_model.set_weights(twin.get_weights())
    with tfmot.quantization.keras.quantize_scope(
        {
            "TwinLocallyConnected2D": TwinLocallyConnected2D,
            "LocallyConnectedQuantizeConfig": LocallyConnectedQuantizeConfig,
        }
    ):
        return tfmot.quantization.keras.quantize_apply(annotated_model)


def _has_default_quantize_config(layer) -> bool:
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry().supports(layer)


def patch_dataset(
    face_crops: np.ndarray, labels: np.ndarray, patch_side: int, batch_size: int, seed: int
) -> tf.data.Dataset:
    """Return shuffled batches of ANet patches of face crops, with their targets.

    `face_crops` is [N, F, F, 3] in [0, 255]. `labels` is [N, 40], one row per
    face that all its patches share, or [N, NUM_PATCHES, 40], one row per patch.
    Each face gives `patches.NUM_PATCHES` patches, cut with
    `patches.extract_patches` as the cascade cuts them. Elements are
    (patches, {"logits": targets}).
    """
    labels = np.asarray(labels, np.float32)
    per_patch = labels.ndim == 3
    crops = tf.data.Dataset.from_tensor_slices((np.asarray(face_crops), labels))

    def to_patches(crop, label):
        normalized = preprocessing.normalize(crop)[tf.newaxis]
        patch_images = patches.extract_patches(normalized, patch_side)
        if not per_patch:
            label = tf.repeat(label[tf.newaxis], patches.NUM_PATCHES, axis=0)
        return tf.data.Dataset.from_tensor_slices((patch_images, label))

    return (
        crops.shuffle(len(face_crops), seed=seed, reshuffle_each_iteration=True)
        .flat_map(to_patches)
        .batch(batch_size)
        .map(lambda images, targets: (images, {"logits": targets}))
        .prefetch(tf.data.AUTOTUNE)
    )


def calibrate_ranges(qat_model: tf_keras.Model, twin: tf_keras.Model, batches) -> None:
    """Set every 8-bit range of `qat_model` from data, without changing a weight.

    tfmot 0.8 starts each activation range at [-6, 6] and moves it by an
    exponential moving average with decay 0.999, so a short fine-tuning leaves
    the ranges far too wide. Here one training-mode pass sets the weight ranges,
    because tfmot's weight quantizers keep the last value they see. Each
    activation range becomes the min and max of the matching layer's output in
    the float `twin` over `batches`, widened to include 0. The input range comes
    from the inputs themselves.
    """
    batches = [np.asarray(batch, np.float32) for batch in batches]
    qat_model(batches[0], training=True)

    layers = [layer for layer in twin.layers if not isinstance(layer, tf_keras.layers.InputLayer)]
    probe = tf_keras.Model(twin.inputs, [layer.output for layer in layers])
    low = {layer.name: 0.0 for layer in layers}
    high = {layer.name: 0.0 for layer in layers}
    input_low = input_high = 0.0
    for batch in batches:
        input_low, input_high = min(input_low, batch.min()), max(input_high, batch.max())
        for layer, output in zip(layers, probe(batch, training=False)):
            low[layer.name] = min(low[layer.name], float(tf.reduce_min(output)))
            high[layer.name] = max(high[layer.name], float(tf.reduce_max(output)))

    for layer in qat_model.layers:
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            source = layer.layer.name
            if source not in low:
                continue
            source_low, source_high = low[source], high[source]
        elif hasattr(layer, "quantizer"):
            # tfmot's QuantizeLayer, which quantizes the model input.
            source_low, source_high = input_low, input_high
        else:
            continue
        for variable in layer.non_trainable_weights:
            name = variable.name.split("/")[-1].split(":")[0]
            if name.startswith("kernel_") or name.startswith("depthwise_"):
                continue
            if name.endswith("_min"):
                variable.assign(tf.fill(variable.shape, float(source_low)))
            elif name.endswith("_max"):
                variable.assign(tf.fill(variable.shape, float(source_high)))


def quantization_aware_anet(
    anet: keras.Model,
    svm: dict,
    face_crops: np.ndarray,
    *,
    epochs: int = 2,
    batch_size: int = 64,
    learning_rate: float = 1e-5,
    calibration_faces: int = 200,
    seed: int = 0,
) -> tf_keras.Model:
    """Return ANet after quantization-aware fine-tuning, as a tf_keras model.

    `anet` is the trained Keras 3 ANet, and `svm` contains the attribute SVMs
    and their Platt scaling as `trained.load_svm` returns them. `face_crops` are
    training faces as `patch_dataset` takes them. The ranges start from the
    first `calibration_faces` faces (`calibrate_ranges`). Each patch is scored
    the way the cascade scores it: ANet features, the fixed SVMs, the fixed Platt
    scaling. The loss is the sigmoid cross-entropy between those scores and the
    float model's probabilities for the same patch, so QAT learns to undo the
    quantization error and nothing else. With the attribute labels as targets
    instead, QAT trained ANet further towards the frequent label of each
    attribute: on the synthetic demo run it cost 3.4 points of mean balanced
    accuracy against the float cascade. Training through ANet's own attribute
    head moved the features away from what the SVMs were fitted on (3 to 5
    points of mean accuracy). The returned model has ANet's dict outputs, with
    fake quantization ops that the TFLite converter turns into int8 kernels.
    """
    if len(face_crops) == 0:
        raise ValueError(
            "Quantization-aware training needs training faces, got none. Check that "
            "the table's train partition has readable in-the-wild images."
        )
    tf_keras.utils.set_random_seed(seed)
    patch_side = int(anet.inputs[0].shape[1])
    twin = twin_model(anet)
    targets = float_patch_probabilities(twin, svm, face_crops, batch_size)
    qat_model = quantize_model(twin)
    calibration = [
        images for images, _ in patch_dataset(
            face_crops[:calibration_faces], targets[:calibration_faces], patch_side, batch_size, seed
        )
    ]
    calibrate_ranges(qat_model, twin, calibration)

    trainer = _svm_scored(qat_model, svm)
    trainer.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.BinaryCrossentropy(from_logits=True),
    )
    dataset = patch_dataset(face_crops, targets, patch_side, batch_size, seed).map(
        lambda images, patch_targets: (images, patch_targets["logits"])
    )
    history = trainer.fit(dataset, epochs=epochs, verbose=0)
    for epoch, loss in enumerate(history.history["loss"], start=1):
        logging.info("QAT of ANet: epoch %d of %d, loss %.4f.", epoch, epochs, loss)
    return qat_model


def float_patch_probabilities(
    twin: tf_keras.Model, svm: dict, face_crops: np.ndarray, batch_size: int
) -> np.ndarray:
    """Return the float model's Platt probabilities [N, NUM_PATCHES, 40] of each face's patches."""
    teacher = _svm_scored(twin, svm)
    patch_side = int(twin.inputs[0].shape[1])
    outputs = []
    for start in range(0, len(face_crops), batch_size):
        crops = preprocessing.normalize(face_crops[start : start + batch_size])
        patch_images = patches.extract_patches(crops, patch_side)
        outputs.append(tf.sigmoid(teacher(patch_images, training=False)).numpy())
    return np.concatenate(outputs).reshape(len(face_crops), patches.NUM_PATCHES, -1)


def _svm_scored(qat_model: tf_keras.Model, svm: dict) -> tf_keras.Model:
    """Return a model of the same weights whose output is the per-patch Platt logits."""
    weights = tf.constant(np.asarray(svm["weights"], np.float32))
    bias = tf.constant(np.asarray(svm["bias"], np.float32))
    scale = tf.constant(np.asarray(svm["platt_scale"], np.float32))
    offset = tf.constant(np.asarray(svm["platt_offset"], np.float32))
    features = qat_model.output["features"]
    logits = tf_keras.layers.Lambda(
        lambda x: scale * (tf.matmul(x, weights) + bias) + offset, name="platt_logits"
    )(features)
    return tf_keras.Model(qat_model.input, logits)
