"""Tests for LocallyConnected2D: shapes, parity with references, saving, TFLite."""

import json
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from ai_edge_litert import schema_py_generated as tflite_schema
from ai_edge_litert.interpreter import Interpreter

from lnet_anet_tf.layers import LocallyConnected2D
from lnet_anet_tf.layers import per_region_matmuls

_BUILTIN_NAMES = {
    code: name
    for name, code in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")
}


def tflite_operators(model_content: bytes) -> list[str]:
    """Return the operator names of a TFLite flatbuffer; custom ops as 'CUSTOM:<code>'."""
    model = tflite_schema.Model.GetRootAs(model_content, 0)
    names = []
    for index in range(model.OperatorCodesLength()):
        operator_code = model.OperatorCodes(index)
        # Codes above 127 live in BuiltinCode; DeprecatedBuiltinCode is capped at 127.
        code = max(operator_code.BuiltinCode(), operator_code.DeprecatedBuiltinCode())
        if code == tflite_schema.BuiltinOperator.CUSTOM:
            names.append("CUSTOM:" + operator_code.CustomCode().decode())
        else:
            names.append(_BUILTIN_NAMES[code])
    return names


def run_tflite(model_content: bytes, images: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output TFLite model on `images`, one per invoke.

    Quantizes float inputs and dequantizes int8 outputs with the model's own
    scale and zero point when its interface is int8.
    """
    interpreter = Interpreter(model_content=model_content)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        value = image[np.newaxis]
        if input_detail["dtype"] == np.int8:
            scale, zero_point = input_detail["quantization"]
            value = np.clip(np.round(value / scale + zero_point), -128, 127).astype(np.int8)
        interpreter.set_tensor(input_detail["index"], value)
        interpreter.invoke()
        result = interpreter.get_tensor(output_detail["index"])
        if output_detail["dtype"] == np.int8:
            scale, zero_point = output_detail["quantization"]
            result = (result.astype(np.float32) - zero_point) * scale
        outputs.append(result[0])
    return np.stack(outputs)


def convert_to_tflite(model, representative_images=None) -> bytes:
    """Convert `model` with builtin ops only; full int8 when images are given."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative_images is None:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: (
            [image[np.newaxis]] for image in representative_images
        )
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _built_layer(input_shape, seed=1, **kwargs):
    """Return a built layer with random kernel and bias (zero bias would hide bugs)."""
    layer = LocallyConnected2D(**kwargs)
    layer.build(input_shape)
    layer.kernel.assign(_random(layer.kernel.shape, seed))
    if layer.bias is not None:
        layer.bias.assign(_random(layer.bias.shape, seed + 1))
    return layer


def _region_reference(layer, inputs, kernel, bias):
    """Compute the layer with one tf.nn.conv2d per region, keeping each region's outputs.

    Differentiable in `inputs`, `kernel` and `bias`, so it also gives reference
    gradients.
    """
    rows, cols = layer.regions
    share_rows, share_cols = layer.effective_share_size
    kernel_rows, kernel_cols = layer.kernel_size
    channels = inputs.shape[-1]
    out_shape = layer.compute_output_shape(inputs.shape)
    output = tf.zeros((inputs.shape[0],) + tuple(out_shape[1:]))
    for region_row in range(rows):
        for region_col in range(cols):
            index = region_row * cols + region_col
            filters = tf.reshape(kernel[index], (kernel_rows, kernel_cols, channels, -1))
            conv = tf.nn.conv2d(
                inputs, filters, strides=layer.strides, padding=layer.padding.upper()
            ) + bias[index]
            mask = np.zeros(out_shape[1:3] + (1,), np.float32)
            mask[
                region_row * share_rows : (region_row + 1) * share_rows,
                region_col * share_cols : (region_col + 1) * share_cols,
            ] = 1.0
            output += conv * mask
    return output


def _tf_keras_layer(layer, input_shape, implementation):
    """Return a tf_keras LocallyConnected2D holding `layer`'s unshared weights."""
    reference = tf_keras.layers.LocallyConnected2D(
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        implementation=implementation,
    )
    reference.build(input_shape)
    out_rows, out_cols = layer.compute_output_shape(input_shape)[1:3]
    kernel = layer.kernel.numpy()
    if implementation == 2:
        kernel = _dense_kernel(layer, input_shape, kernel)
    reference.kernel.assign(kernel)
    reference.bias.assign(layer.bias.numpy().reshape(out_rows, out_cols, layer.filters))
    return reference


def _dense_kernel(layer, input_shape, kernel):
    """Scatter [positions, patch, filters] weights into tf_keras implementation=2's
    [in_rows, in_cols, in_channels, out_rows, out_cols, filters] layout."""
    _, in_rows, in_cols, channels = input_shape
    out_rows, out_cols = layer.compute_output_shape(input_shape)[1:3]
    kernel_rows, kernel_cols = layer.kernel_size
    pad_top, pad_left = layer._geometry.input_paddings[1][0], layer._geometry.input_paddings[2][0]
    dense = np.zeros((in_rows, in_cols, channels, out_rows, out_cols, layer.filters), np.float32)
    patches = kernel.reshape(out_rows, out_cols, kernel_rows, kernel_cols, channels, -1)
    for out_row in range(out_rows):
        for out_col in range(out_cols):
            for i in range(kernel_rows):
                for j in range(kernel_cols):
                    row = out_row * layer.strides[0] + i - pad_top
                    col = out_col * layer.strides[1] + j - pad_left
                    if 0 <= row < in_rows and 0 <= col < in_cols:
                        dense[row, col, :, out_row, out_col] = patches[out_row, out_col, i, j]
    return dense


def _gradients(function, inputs, variables):
    inputs = tf.convert_to_tensor(inputs)
    upstream = None
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = function(inputs)
        upstream = tf.constant(_random(outputs.shape, seed=7))
        loss = tf.reduce_sum(outputs * upstream)
    return outputs.numpy(), [g.numpy() for g in tape.gradient(loss, [inputs] + variables)]


@pytest.mark.parametrize(
    "input_size, kernel_size, strides, padding, share_size, expected",
    [
        # (output rows, output cols), (region rows, region cols)
        ((11, 10), 3, 1, "valid", (1, 1), ((9, 8), (9, 8))),
        ((11, 10), 3, 1, "valid", (2, 3), ((9, 8), (5, 3))),
        ((11, 10), 3, 2, "same", (2, 2), ((6, 5), (3, 3))),
        ((11, 10), (3, 2), (2, 1), "valid", None, ((5, 9), (1, 1))),
        ((11, 10), 3, 1, "valid", (50, 4), ((9, 8), (1, 2))),
    ],
)
def test_layer_shapes_and_regions(input_size, kernel_size, strides, padding, share_size, expected):
    input_shape = (2,) + input_size + (3,)
    layer = LocallyConnected2D(
        5, kernel_size, strides=strides, padding=padding, share_size=share_size
    )
    outputs = layer(_random(input_shape))
    (out_rows, out_cols), (region_rows, region_cols) = expected
    kernel_rows, kernel_cols = layer.kernel_size

    assert outputs.shape == (2, out_rows, out_cols, 5)
    assert layer.compute_output_shape(input_shape) == (2, out_rows, out_cols, 5)
    assert layer.regions == (region_rows, region_cols)
    assert layer.kernel.shape == (region_rows * region_cols, kernel_rows * kernel_cols * 3, 5)
    assert layer.bias.shape == (region_rows * region_cols, 5)


@pytest.mark.parametrize(
    "input_size, strides, padding, implementation",
    [
        ((9, 8), 1, "valid", 1),
        ((9, 8), 2, "valid", 1),
        ((9, 8), (2, 1), "valid", 1),
        ((9, 8), 1, "same", 2),
        ((9, 9), 2, "same", 2),
    ],
)
def test_unshared_matches_tf_keras(input_size, strides, padding, implementation):
    # tf_keras 2.21 accepts only padding="valid" with implementation=1, so "same"
    # is checked against implementation=2 with the kernel scattered into its
    # layout. tf_keras's "same" always pads kernel_size // 2 before the input,
    # which is Conv2D's padding only when the total padding is kernel_size - 1:
    # with stride 2 that holds for 9 columns but not for 8.
    input_shape = (3,) + input_size + (4,)
    inputs = _random(input_shape)
    layer = _built_layer(input_shape, filters=5, kernel_size=3, strides=strides, padding=padding)
    reference = _tf_keras_layer(layer, input_shape, implementation)

    outputs, (input_grad, kernel_grad, bias_grad) = _gradients(
        layer, inputs, [layer.kernel, layer.bias]
    )
    expected, (ref_input_grad, ref_kernel_grad, ref_bias_grad) = _gradients(
        reference, inputs, [reference.kernel, reference.bias]
    )
    if implementation == 2:
        ref_kernel_grad = None  # a dense gradient; compared through the input gradient

    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(input_grad, ref_input_grad, rtol=0, atol=1e-5)
    np.testing.assert_allclose(bias_grad.reshape(ref_bias_grad.shape), ref_bias_grad, atol=1e-5)
    if ref_kernel_grad is not None:
        np.testing.assert_allclose(kernel_grad, ref_kernel_grad, rtol=1e-6, atol=1e-5)


def test_unshared_same_kernel_gradient_matches_regions():
    # The kernel gradient for padding="same" is checked against the per-position
    # conv reference, since tf_keras implementation=2 has a dense kernel.
    input_shape = (2, 7, 6, 3)
    inputs = _random(input_shape)
    layer = _built_layer(input_shape, filters=4, kernel_size=3, strides=2, padding="same")
    kernel = tf.Variable(layer.kernel.numpy())
    bias = tf.Variable(layer.bias.numpy())

    _, (_, kernel_grad) = _gradients(layer, inputs, [layer.kernel])
    _, (_, ref_kernel_grad) = _gradients(
        lambda x: _region_reference(layer, x, kernel, bias), inputs, [kernel]
    )

    np.testing.assert_allclose(kernel_grad, ref_kernel_grad, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "share_size, strides, padding",
    [
        ((2, 2), 1, "valid"),
        ((3, 2), 2, "same"),  # 6x5 output: the last region row and col are partial
        ((4, 3), 1, "valid"),  # 9x8 output: partial regions on both axes
        ((1, 8), 1, "valid"),  # one region per output row
        ((9, 1), 1, "same"),
    ],
)
def test_shared_matches_region_convolutions(share_size, strides, padding):
    input_shape = (2, 11, 10, 3)
    inputs = _random(input_shape)
    layer = _built_layer(
        input_shape,
        filters=4,
        kernel_size=3,
        strides=strides,
        padding=padding,
        share_size=share_size,
    )
    kernel = tf.Variable(layer.kernel.numpy())
    bias = tf.Variable(layer.bias.numpy())

    outputs, (input_grad, kernel_grad, bias_grad) = _gradients(
        layer, inputs, [layer.kernel, layer.bias]
    )
    expected, (ref_input_grad, ref_kernel_grad, ref_bias_grad) = _gradients(
        lambda x: _region_reference(layer, x, kernel, bias), inputs, [kernel, bias]
    )

    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(input_grad, ref_input_grad, rtol=0, atol=1e-5)
    np.testing.assert_allclose(kernel_grad, ref_kernel_grad, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(bias_grad, ref_bias_grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "share_size, strides, padding",
    [
        (None, 1, "valid"),
        (None, 2, "same"),
        ((9, 8), 1, "valid"),  # exactly the 9x8 output
        ((100, 100), 1, "valid"),
        ((100, 100), 2, "same"),
    ],
)
def test_whole_map_region_matches_conv2d(share_size, strides, padding):
    input_shape = (2, 11, 10, 3)
    inputs = _random(input_shape)
    layer = _built_layer(
        input_shape,
        filters=4,
        kernel_size=3,
        strides=strides,
        padding=padding,
        share_size=share_size,
    )
    conv = keras.layers.Conv2D(4, 3, strides=strides, padding=padding)
    conv.build(input_shape)
    conv.kernel.assign(layer.kernel.numpy().reshape(3, 3, 3, 4))
    conv.bias.assign(layer.bias.numpy()[0])

    outputs, (input_grad, kernel_grad) = _gradients(layer, inputs, [layer.kernel])
    expected, (ref_input_grad, ref_kernel_grad) = _gradients(conv, inputs, [conv.kernel])

    assert layer.regions == (1, 1)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(input_grad, ref_input_grad, rtol=0, atol=1e-5)
    # Each kernel gradient sums over every output position and reaches tens here;
    # rtol covers float32 rounding of sums that large.
    np.testing.assert_allclose(
        kernel_grad.reshape(ref_kernel_grad.shape), ref_kernel_grad, rtol=1e-6, atol=1e-5
    )


def test_layer_without_bias():
    input_shape = (2, 6, 6, 2)
    inputs = _random(input_shape)
    layer = _built_layer(input_shape, filters=3, kernel_size=2, use_bias=False)
    kernel = tf.Variable(layer.kernel.numpy())
    zero_bias = tf.zeros(layer.kernel.shape[:1] + (3,))

    outputs = layer(inputs)
    expected = _region_reference(layer, inputs, kernel, zero_bias)

    assert layer.bias is None
    assert len(layer.trainable_weights) == 1
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


def test_glorot_scale_matches_conv2d():
    # Keras would count fans over all 64 positions and draw weights 8x too small.
    layer = LocallyConnected2D(64, 3, share_size=(1, 1))
    layer.build((None, 10, 10, 64))
    fan_in = 3 * 3 * 64
    fan_out = 3 * 3 * 64
    expected_std = np.sqrt(2.0 / (fan_in + fan_out))

    std = float(np.std(layer.kernel.numpy()))

    assert layer.kernel.shape[0] == 64
    assert abs(std - expected_std) < 0.02 * expected_std


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"padding": "causal"}, "padding"),
        ({"share_size": (0, 2)}, "share_size"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"filters": 0}, "filters"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    arguments = {"filters": 4, "kernel_size": 3}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        LocallyConnected2D(**arguments)


def test_input_smaller_than_kernel_raises():
    layer = LocallyConnected2D(4, 5, name="too_small")
    with pytest.raises(ValueError, match="too_small: input 3x3 is smaller than kernel"):
        layer.build((None, 3, 3, 2))


def test_unknown_spatial_size_raises():
    layer = LocallyConnected2D(4, 3)
    with pytest.raises(ValueError, match="fixed spatial size"):
        layer.build((None, None, None, 2))


def test_config_round_trip():
    layer = LocallyConnected2D(
        6,
        (3, 2),
        strides=(2, 1),
        padding="same",
        share_size=(2, 3),
        activation="relu",
        use_bias=False,
        kernel_regularizer=keras.regularizers.L2(1e-3),
        activity_regularizer=keras.regularizers.L1(1e-4),
        kernel_constraint=keras.constraints.MaxNorm(2.0),
        name="shared",
    )
    config = layer.get_config()
    restored = LocallyConnected2D.from_config(config)

    assert restored.get_config() == config
    assert json.loads(json.dumps(config))["share_size"] == [2, 3]
    assert LocallyConnected2D.from_config(
        LocallyConnected2D(4, 3, share_size=None).get_config()
    ).share_size is None


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((9, 9, 3))
    x = LocallyConnected2D(4, 3, share_size=(2, 2), activation="relu")(inputs)
    outputs = LocallyConnected2D(5, 3, strides=2, padding="same")(x)
    model = keras.Model(inputs, outputs)
    images = _random((2, 9, 9, 3))
    model.layers[1].bias.assign(_random(model.layers[1].bias.shape, 3))
    path = tmp_path / "locally_connected.keras"

    model.save(path)
    restored = keras.saving.load_model(path)

    assert isinstance(restored.layers[1], LocallyConnected2D)
    np.testing.assert_array_equal(restored(images), model(images))


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def test_mixed_float16_policy(mixed_precision):
    input_shape = (2, 10, 10, 8)
    inputs = _random(input_shape)
    layer = LocallyConnected2D(6, 3, share_size=(2, 2), bias_initializer="random_normal")
    outputs = layer(inputs)
    reference = _region_reference(layer, inputs, layer.kernel.numpy(), layer.bias.numpy())

    assert layer.compute_dtype == "float16"
    assert layer.kernel.dtype == "float32"
    assert outputs.dtype == "float16"
    np.testing.assert_allclose(np.asarray(outputs, np.float32), reference, rtol=0, atol=2e-2)


def test_mixed_float16_gradients(mixed_precision):
    layer = LocallyConnected2D(4, 3)
    inputs = tf.constant(_random((2, 6, 6, 3)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(inputs), tf.float32))
    kernel_grad = tape.gradient(loss, layer.kernel.value)

    assert kernel_grad.dtype == tf.float32
    assert np.all(np.isfinite(kernel_grad.numpy()))
    assert np.any(kernel_grad.numpy() != 0)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    # Two logical CPU devices must be configured before TensorFlow initializes.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from lnet_anet_tf.layers import LocallyConnected2D

    def build():
        inputs = keras.Input((8, 8, 3))
        x = LocallyConnected2D(4, 3, share_size=(2, 3), activation="relu")(inputs)
        x = LocallyConnected2D(2, 3)(x)
        outputs = keras.layers.Flatten()(x)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    targets = rng.standard_normal((8, 32)).astype("float32")

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build()
    single = build()
    initial = mirrored.get_weights()
    single.set_weights(initial)

    mirrored.fit(images, targets, batch_size=8, epochs=1, shuffle=False, verbose=0)
    single.fit(images, targets, batch_size=8, epochs=1, shuffle=False, verbose=0)

    difference = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(mirrored.get_weights(), single.get_weights())
    )
    change = max(
        float(np.max(np.abs(a - b))) for a, b in zip(mirrored.get_weights(), initial)
    )
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "weight_difference": difference,
        "weight_change": change,
    }))
    """
)


def test_mirrored_strategy_two_replicas():
    # A subprocess, because logical devices cannot be changed once TensorFlow in
    # this process has initialized them.
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["replicas"] == 2
    assert report["weight_change"] > 1e-3
    assert report["weight_difference"] < 1e-5


def test_tflite_float32_builtins_only():
    inputs = keras.Input((11, 10, 3))
    x = LocallyConnected2D(6, 3, strides=2, padding="same", activation="relu")(inputs)
    outputs = LocallyConnected2D(8, 3, share_size=(2, 3))(x)
    model = keras.Model(inputs, outputs)
    model.layers[2].bias.assign(_random(model.layers[2].bias.shape, 4))
    images = _random((3, 11, 10, 3))

    content = convert_to_tflite(model)
    operators = tflite_operators(content)

    assert not [name for name in operators if name.startswith("CUSTOM")]
    assert "BATCH_MATMUL" in operators
    np.testing.assert_allclose(run_tflite(content, images), model(images), rtol=0, atol=1e-5)


def test_tflite_full_int8():
    inputs = keras.Input((11, 10, 3))
    x = LocallyConnected2D(6, 3, strides=2, padding="same", activation="relu")(inputs)
    outputs = LocallyConnected2D(8, 3, share_size=(2, 3))(x)
    model = keras.Model(inputs, outputs)
    model.layers[2].bias.assign(_random(model.layers[2].bias.shape, 4))
    images = _random((16, 11, 10, 3))

    content = convert_to_tflite(model, representative_images=images)
    operators = tflite_operators(content)
    interpreter = Interpreter(model_content=content)
    tensor_types = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    expected = model(images[:4]).numpy()
    error = np.max(np.abs(run_tflite(content, images[:4]) - expected))

    assert not [name for name in operators if name.startswith("CUSTOM")]
    assert "BATCH_MATMUL" in operators
    assert "DEQUANTIZE" not in operators
    assert np.float32 not in tensor_types
    # int8 steps of the output are about range / 255; a few steps of error.
    assert error < 0.05 * np.max(np.abs(expected))


# One matmul per region, as the int8 TFLite export traces the layer.


def _two_layer_model():
    """A strided unshared layer and a shared one with a partial last region, both with bias."""
    inputs = keras.Input((11, 10, 3))
    x = LocallyConnected2D(6, 3, strides=2, padding="same", activation="relu")(inputs)
    outputs = LocallyConnected2D(8, 3, share_size=(2, 3))(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers[1:]:
        layer.bias.assign(_random(layer.bias.shape, 4))
    return model


def _graph_op_types(function) -> set:
    """Return the op types of a concrete function's graph, nested functions included."""
    graph_def = function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        types.update(node.op for node in library_function.node_def)
    return types


def test_per_region_matmuls_match_batched():
    model = _two_layer_model()
    images = _random((3, 11, 10, 3))
    expected = model(images)

    with per_region_matmuls():
        outputs = model(images)

    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


def test_per_region_trace_has_no_batch_matmul():
    model = _two_layer_model()
    spec = tf.TensorSpec((2, 11, 10, 3), tf.float32)
    batched = tf.function(model).get_concrete_function(spec)
    with per_region_matmuls():
        per_region = tf.function(model).get_concrete_function(spec)

    assert "BatchMatMulV2" in _graph_op_types(batched)
    assert "BatchMatMulV2" not in _graph_op_types(per_region)
    assert "MatMul" in _graph_op_types(per_region)


def test_per_region_context_restores_on_exit():
    model = _two_layer_model()
    spec = tf.TensorSpec((1, 11, 10, 3), tf.float32)

    with pytest.raises(RuntimeError, match="inside"):
        with per_region_matmuls():
            with per_region_matmuls():
                pass
            nested_exit = tf.function(model).get_concrete_function(spec)
            raise RuntimeError("raised inside the context")
    after_exit = tf.function(model).get_concrete_function(spec)

    assert "BatchMatMulV2" not in _graph_op_types(nested_exit)
    assert "BatchMatMulV2" in _graph_op_types(after_exit)


def test_per_region_context_is_thread_local():
    model = _two_layer_model()
    spec = tf.TensorSpec((1, 11, 10, 3), tf.float32)
    traced = {}

    def trace():
        traced["other_thread"] = tf.function(model).get_concrete_function(spec)

    with per_region_matmuls():
        thread = threading.Thread(target=trace)
        thread.start()
        thread.join()

    assert "BatchMatMulV2" in _graph_op_types(traced["other_thread"])


def test_per_region_tflite_float32_and_int8():
    model = _two_layer_model()
    images = _random((16, 11, 10, 3))
    expected = model(images[:4]).numpy()

    with per_region_matmuls():
        float_content = convert_to_tflite(model)
        int8_content = convert_to_tflite(model, representative_images=images)
    int8_error = np.max(np.abs(run_tflite(int8_content, images[:4]) - expected))

    for content in (float_content, int8_content):
        operators = tflite_operators(content)
        assert "BATCH_MATMUL" not in operators
        assert "FULLY_CONNECTED" in operators
        assert not [name for name in operators if name.startswith("CUSTOM")]
    np.testing.assert_allclose(run_tflite(float_content, images[:4]), expected, rtol=0, atol=1e-5)
    assert int8_error < 0.05 * np.max(np.abs(expected))
