"""Tests for the LNet and ANet builders and the head utilities."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from test_layers import tflite_operators

from lnet_anet_tf.config import get_config
from lnet_anet_tf.layers import LocallyConnected2D
from lnet_anet_tf.models import LocalResponseNormalization
from lnet_anet_tf.models import build_anet
from lnet_anet_tf.models import build_lnet
from lnet_anet_tf.models import copy_trunk_weights
from lnet_anet_tf.models import find_head
from lnet_anet_tf.models import replace_head
from lnet_anet_tf.models import trunk

CELEBA_IDENTITIES = 10177


def _images(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def _tiny_lnet(input_size=64, **changes):
    """A demo LNet narrowed further, for tests that only need the structure."""
    config = dataclasses.replace(
        get_config("demo").lnet_o,
        input_size=input_size,
        conv_filters=(8, 8, 8, 8, 8),
        fc_units=(16, 16),
    )
    return dataclasses.replace(config, **changes)


def _tiny_anet(**changes):
    config = dataclasses.replace(
        get_config("demo").anet, conv_filters=(8, 8, 8, 8), feature_units=16
    )
    return dataclasses.replace(config, **changes)


def _weights_by_layer(model):
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}


def _assert_same_weights(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def paper_models():
    # Built once per module, because the paper LNet has 58 million parameters.
    config = get_config("paper")
    return {
        "lnet_o": build_lnet(config.lnet_o, 40, "attributes", name="lnet_o"),
        "anet": build_anet(config.anet, CELEBA_IDENTITIES),
    }


def test_paper_lnet_shapes_and_parameters(paper_models):
    model = paper_models["lnet_o"]

    assert model.input.shape == (None, 227, 227, 3)
    assert model.output["logits"].shape == (None, 40)
    assert model.output["feature_map"].shape == (None, 13, 13, 256)
    assert model.count_params() == 58_445_224
    assert model.get_layer("fc6").count_params() == 37_752_832
    assert trunk(model).count_params() == 3_747_200
    assert isinstance(model.get_layer("conv1_lrn"), LocalResponseNormalization)


def test_paper_lnet_s_matches_lnet_o_size():
    config = get_config("paper")
    assert config.lnet_s.input_size == 227
    assert config.lnet_s == config.lnet_o


def test_paper_anet_shapes_and_parameters(paper_models):
    model = paper_models["anet"]
    conv3 = model.get_layer("conv3")
    conv4 = model.get_layer("conv4")

    assert model.input.shape == (None, 96, 96, 3)
    assert model.output["logits"].shape == (None, CELEBA_IDENTITIES)
    assert model.output["feature_map"].shape == (None, 8, 8, 160)
    assert model.output["features"].shape == (None, 512)
    assert model.count_params() == 33_381_761
    assert trunk(model).count_params() == 28_160_960
    assert isinstance(conv3, LocallyConnected2D)
    assert conv3.regions == (10, 10)
    assert conv3.count_params() == 11_059_200
    assert isinstance(conv4, LocallyConnected2D)
    assert conv4.regions == (8, 8)
    assert conv4.count_params() == 11_796_480
    assert isinstance(model.get_layer("conv2"), keras.layers.Conv2D)


@pytest.mark.parametrize("net", ["lnet_o", "lnet_s"])
def test_demo_lnet_outputs(net):
    config = getattr(get_config("demo"), net)
    model = build_lnet(config, 40, name=net)
    outputs = model(_images(config.input_size), training=False)

    assert set(outputs) == {"logits", "feature_map"}
    assert outputs["logits"].shape == (2, 40)
    # The localization reads the feature map; it must stay about 10x10 or finer.
    assert outputs["feature_map"].shape[1] >= 10
    assert outputs["feature_map"].shape[2] >= 10
    assert outputs["feature_map"].shape[3] == config.conv_filters[-1]
    assert np.all(outputs["feature_map"].numpy() >= 0)
    assert model.count_params() == 1_963_272


def test_demo_anet_outputs():
    config = get_config("demo").anet
    model = build_anet(config, 200)
    outputs = model(_images(config.input_size), training=False)

    assert set(outputs) == {"logits", "feature_map", "features"}
    assert outputs["logits"].shape == (2, 200)
    assert outputs["feature_map"].shape == (2, 6, 6, 64)
    assert outputs["features"].shape == (2, config.feature_units)
    assert model.get_layer("conv3").regions == (4, 4)
    assert model.get_layer("conv4").regions == (6, 6)
    assert model.count_params() == 2_107_368


@pytest.mark.parametrize(
    "normalization, present, absent",
    [
        ("lrn", ["conv1_lrn", "conv2_lrn"], ["conv3_lrn", "conv1_bn"]),
        ("batch_norm", ["conv1_bn", "conv5_bn"], ["conv1_lrn"]),
        ("none", [], ["conv1_lrn", "conv1_bn"]),
    ],
)
def test_lnet_normalization_options(normalization, present, absent):
    model = build_lnet(_tiny_lnet(normalization=normalization), 3)
    names = {layer.name for layer in model.layers}

    for name in present:
        assert name in names
    for name in absent:
        assert name not in names
    assert (model.get_layer("conv1").bias is None) == (normalization == "batch_norm")


def test_anet_lrn_option():
    model = build_anet(_tiny_anet(normalization="lrn"), 3)
    names = {layer.name for layer in model.layers}

    assert {"conv1_lrn", "conv2_lrn"} <= names
    assert model.get_layer("conv3").bias is not None


@pytest.mark.parametrize(
    "builder, config",
    [
        (build_lnet, _tiny_lnet(normalization="layer_norm")),
        (build_anet, _tiny_anet(normalization="lrm")),
    ],
)
def test_invalid_normalization_raises(builder, config):
    with pytest.raises(ValueError, match="Invalid normalization"):
        builder(config, 3)


def test_mismatched_layer_lists_raise():
    with pytest.raises(ValueError, match="one entry per conv layer"):
        build_lnet(_tiny_lnet(conv_strides=(2, 1, 1)), 3)
    with pytest.raises(ValueError, match="one entry per conv layer"):
        build_anet(_tiny_anet(share_sizes=(None, None, (2, 2))), 3)


def test_weight_decay_adds_l2_losses():
    weight_decay = 1e-3
    model = build_anet(_tiny_anet(weight_decay=weight_decay), 3)
    kernels = [
        layer.kernel
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, LocallyConnected2D))
    ]
    expected = sum(weight_decay / 2 * float(np.sum(np.square(k.numpy()))) for k in kernels)

    assert len(model.losses) == len(kernels) == 6
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
    assert build_anet(_tiny_anet(weight_decay=0.0), 3).losses == []


def test_dropout_rate_is_used():
    model = build_lnet(_tiny_lnet(dropout_rate=0.25), 3)
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]

    assert rates == [0.25, 0.25]


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def test_mixed_float16_outputs_float32(mixed_precision):
    anet = build_anet(_tiny_anet(), 3)
    lnet = build_lnet(_tiny_lnet(normalization="lrn"), 3)

    anet_outputs = anet(_images(48), training=False)
    lnet_outputs = lnet(_images(64), training=False)

    assert anet.get_layer("conv4").compute_dtype == "float16"
    assert anet.get_layer("conv4").kernel.dtype == "float32"
    assert lnet.get_layer("conv1_lrn").compute_dtype == "float16"
    for outputs in (anet_outputs, lnet_outputs):
        for name, value in outputs.items():
            assert value.dtype == "float32", name
            assert np.all(np.isfinite(value.numpy())), name


def test_mixed_float16_train_step(mixed_precision):
    model = build_anet(_tiny_anet(), 3)
    model.compile(
        optimizer="sgd",
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    labels = np.array([0, 2])
    before = model.get_layer("conv4").kernel.numpy().copy()

    # Dynamic loss scaling skips every step whose float16 gradients overflow and
    # halves the scale, so one step alone may leave the weights unchanged.
    history = model.fit(_images(48), {"logits": labels}, epochs=8, verbose=0)

    assert np.isfinite(history.history["loss"][0])
    assert np.any(model.get_layer("conv4").kernel.numpy() != before)


@pytest.mark.parametrize("net", ["lnet_lrn", "anet"])
def test_keras_file_round_trip(net, tmp_path):
    if net == "anet":
        model, size = build_anet(_tiny_anet(), 5), 48
    else:
        model, size = build_lnet(_tiny_lnet(normalization="lrn"), 5), 64
    images = _images(size)
    path = tmp_path / f"{net}.keras"

    model.save(path)
    restored = keras.saving.load_model(path)
    expected = model(images, training=False)
    actual = restored(images, training=False)

    assert set(actual) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name])


def _convert_builtins(model, representative_images=None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative_images is None:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: (
            [image[np.newaxis]] for image in representative_images
        )
    return converter.convert()


def _run_signature(content, image):
    interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner()
    return runner(images=image[np.newaxis])


@pytest.mark.parametrize(
    "net, expected_operator",
    [
        ("lnet_lrn", "LOCAL_RESPONSE_NORMALIZATION"),
        ("lnet_batch_norm", "CONV_2D"),
        ("anet", "BATCH_MATMUL"),
    ],
)
def test_tflite_builtins_only(net, expected_operator):
    if net == "anet":
        model, size = build_anet(_tiny_anet(), 5), 48
    else:
        normalization = net.split("_", 1)[1]
        model, size = build_lnet(_tiny_lnet(normalization=normalization), 5), 64
    image = _images(size, batch=1)[0]

    content = _convert_builtins(model)
    operators = tflite_operators(content)
    outputs = _run_signature(content, image)
    expected = model(image[np.newaxis], training=False)

    assert not [name for name in operators if name.startswith("CUSTOM")]
    assert expected_operator in operators
    assert set(outputs) == set(expected)
    for name in expected:
        np.testing.assert_allclose(outputs[name], expected[name], rtol=0, atol=1e-4)


def test_tflite_anet_int8():
    model = build_anet(_tiny_anet(), 5)
    images = _images(48, batch=16)

    content = _convert_builtins(model, representative_images=images)
    operators = tflite_operators(content)
    outputs = _run_signature(content, images[0])
    expected = model(images[:1], training=False)["features"].numpy()

    assert not [name for name in operators if name.startswith("CUSTOM")]
    assert "BATCH_MATMUL" in operators
    assert "QUANTIZE" in operators  # float input quantized once, int8 inside
    error = np.max(np.abs(outputs["features"] - expected))
    assert error < 0.1 * max(np.max(np.abs(expected)), 1e-3)


def test_replace_head_keeps_trunk():
    model = build_anet(_tiny_anet(), 7, head_name="identities")
    before = _weights_by_layer(model)
    images = _images(48)
    features_before = model(images, training=False)["features"].numpy()

    swapped = replace_head(model, 40, "attributes")
    outputs = swapped(images, training=False)

    assert find_head(swapped).name == "attributes"
    assert outputs["logits"].shape == (2, 40)
    assert "identities" not in {layer.name for layer in swapped.layers}
    assert swapped.get_layer("conv4") is model.get_layer("conv4")
    np.testing.assert_array_equal(outputs["features"], features_before)
    for layer in swapped.layers:
        if layer.name != "attributes":
            _assert_same_weights(layer.get_weights(), before[layer.name])


def test_replace_head_keeps_regularizer():
    model = build_lnet(_tiny_lnet(weight_decay=1e-3), 3, head_name="objects")
    swapped = replace_head(model, 40, "attributes")

    assert swapped.get_layer("attributes").kernel_regularizer is not None
    assert len(swapped.losses) == len(model.losses)


def test_replace_head_name_clash_raises():
    model = build_lnet(_tiny_lnet(), 3)
    with pytest.raises(ValueError, match="already the name of a trunk layer"):
        replace_head(model, 4, "conv1")


def test_find_head_without_logits_raises():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no 'logits' output"):
        find_head(model)


def test_copy_trunk_weights_across_input_sizes():
    lnet_o = build_lnet(_tiny_lnet(input_size=96), 10, head_name="objects", name="lnet_o")
    lnet_s = build_lnet(_tiny_lnet(input_size=64), 40, head_name="attributes", name="lnet_s")
    fc6_before = lnet_s.get_layer("fc6").get_weights()
    head_before = lnet_s.get_layer("attributes").get_weights()

    copied, skipped = copy_trunk_weights(lnet_o, lnet_s)

    assert skipped == ["fc6"]
    assert {"conv1", "conv5", "conv1_bn", "conv5_bn", "fc7"} <= set(copied)
    for name in copied:
        _assert_same_weights(lnet_s.get_layer(name).get_weights(), lnet_o.get_layer(name).get_weights())
    _assert_same_weights(lnet_s.get_layer("fc6").get_weights(), fc6_before)
    _assert_same_weights(lnet_s.get_layer("attributes").get_weights(), head_before)


def test_copy_trunk_weights_same_size_copies_all():
    config = _tiny_lnet()
    source = build_lnet(config, 10, head_name="objects")
    target = build_lnet(config, 40, head_name="attributes")
    images = _images(64)

    copied, skipped = copy_trunk_weights(source, target)

    assert skipped == []
    assert "fc6" in copied
    np.testing.assert_array_equal(
        target(images, training=False)["feature_map"], source(images, training=False)["feature_map"]
    )


def test_trunk_outputs():
    lnet = build_lnet(_tiny_lnet(), 3)
    anet = build_anet(_tiny_anet(), 3)
    lnet_trunk = trunk(lnet)
    anet_trunk = trunk(anet)
    images = _images(48)

    assert set(lnet_trunk.output) == {"feature_map"}
    assert not [layer for layer in lnet_trunk.layers if isinstance(layer, keras.layers.Dense)]
    assert set(anet_trunk.output) == {"feature_map", "features"}
    np.testing.assert_array_equal(
        anet_trunk(images, training=False)["features"],
        anet(images, training=False)["features"],
    )
