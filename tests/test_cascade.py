"""Tests for the face-patch layout and the LNet + ANet cascade, including TFLite parity."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.python import schema_py_generated as tflite_schema

from lnet_anet_tf import attributes
from lnet_anet_tf import evaluate
from lnet_anet_tf import layers
from lnet_anet_tf import localization
from lnet_anet_tf import patches
from lnet_anet_tf import preprocessing
from lnet_anet_tf.cascade import Cascade
from lnet_anet_tf.config import get_config
from lnet_anet_tf.stages import boxes as boxes_lib

NUM_FEATURES = 16


def random_images(batch, height, width, low=-1.0, high=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, (batch, height, width, 3)).astype(np.float32)


def stand_in_lnet(input_size, name):
    """A small conv net with an LNet's outputs: "logits" and "feature_map"."""
    images = keras.Input((input_size, input_size, 3))
    x = keras.layers.Conv2D(8, 5, strides=4, padding="same", activation="relu")(images)
    feature_map = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(feature_map)
    logits = keras.layers.Dense(attributes.NUM_ATTRIBUTES)(pooled)
    return keras.Model(images, {"logits": logits, "feature_map": feature_map}, name=name)


def stand_in_anet(input_size):
    """A small conv net with ANet's outputs: "logits", "feature_map" and "features"."""
    images = keras.Input((input_size, input_size, 3))
    feature_map = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(images)
    features = keras.layers.Dense(NUM_FEATURES, activation="relu")(
        keras.layers.Flatten()(feature_map)
    )
    logits = keras.layers.Dense(10)(features)
    outputs = {"logits": logits, "feature_map": feature_map, "features": features}
    return keras.Model(images, outputs, name="anet")


def svm_parameters(num_features, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "svm_weights": rng.normal(0.0, 0.3, (num_features, attributes.NUM_ATTRIBUTES)),
        "svm_bias": rng.normal(0.0, 0.1, attributes.NUM_ATTRIBUTES),
        "platt_scale": rng.uniform(0.5, 2.0, attributes.NUM_ATTRIBUTES),
        "platt_offset": rng.normal(0.0, 0.5, attributes.NUM_ATTRIBUTES),
    }


@pytest.fixture(scope="module")
def config():
    return get_config("demo")


def with_recrop(config, factor, scales=(1.0,)):
    return dataclasses.replace(
        config,
        localization=dataclasses.replace(
            config.localization, lnet_s_recrop_context=factor, lnet_s_recrop_scales=scales
        ),
    )


@pytest.fixture(scope="module")
def cascade(config):
    """The demo cascade with one LNet_s pass; `recrop_cascade` has two."""
    keras.utils.set_random_seed(0)
    return Cascade(
        stand_in_lnet(config.lnet_o.input_size, "lnet_o"),
        stand_in_lnet(config.lnet_s.input_size, "lnet_s"),
        stand_in_anet(config.anet.input_size),
        config=with_recrop(config, None),
        **svm_parameters(NUM_FEATURES),
    )


# Patch layout.


def test_patch_layout_is_consistent():
    assert patches.PATCH_BOXES.shape == (patches.NUM_PATCHES, 4)
    assert len(patches.PATCH_NAMES) == patches.NUM_PATCHES
    assert np.all((patches.PATCH_BOXES >= 0.0) & (patches.PATCH_BOXES <= 1.0))


def test_extract_patches_shape_and_order():
    faces = random_images(3, 40, 40)

    extracted = patches.extract_patches(faces, 20)

    assert extracted.shape == (3 * patches.NUM_PATCHES, 20, 20, 3)
    for image in range(3):
        for patch, box in enumerate(patches.PATCH_BOXES):
            expected = localization.crop_and_resize(faces[image : image + 1], box[None], 20)
            np.testing.assert_allclose(
                extracted[image * patches.NUM_PATCHES + patch], expected[0], atol=1e-6
            )


def test_extract_patches_equal_expected_crops():
    faces = random_images(2, 40, 40)
    name_to_index = {name: index for index, name in enumerate(patches.PATCH_NAMES)}

    extracted = patches.extract_patches(faces, 24).numpy()
    extracted = extracted.reshape(2, patches.NUM_PATCHES, 24, 24, 3)

    # On a 40x40 crop the patch boxes fall on whole pixels, so each patch is a
    # plain resize of a pixel slice. Upsampled slices differ in the outer rows and
    # columns: there the crop reads the pixels next to the slice, where a resize
    # repeats the slice's edge pixels.
    expected = {
        "face": faces,
        "upper": faces[:, 0:22],
        "lower": faces[:, 18:40],
        "central": faces[:, 8:32, 6:34],
        "face_mirrored": faces[:, :, ::-1],
    }
    for name, region in expected.items():
        resized = tf.image.resize(region, [24, 24], "bilinear").numpy()
        np.testing.assert_allclose(
            extracted[:, name_to_index[name], 1:-1, 1:-1],
            resized[:, 1:-1, 1:-1],
            atol=1e-5,
            err_msg=name,
        )
    np.testing.assert_allclose(extracted[:, 0], tf.image.resize(faces, [24, 24]), atol=1e-5)


def test_extract_patches_from_images_matches_face_crops():
    images = random_images(2, 80, 80)
    face_boxes = np.array([[0.25, 0.25, 0.75, 0.75], [0.0, 0.5, 0.5, 1.0]], np.float32)
    faces = np.stack([images[0, 20:60, 20:60], images[1, 0:40, 40:80]])

    from_images = patches.extract_patches_from_images(images, face_boxes, 24)

    # Only the outer rows and columns of upsampled patches may differ: there the
    # whole image has pixels beyond the face box, and the face crop does not.
    from_faces = patches.extract_patches(faces, 24)
    np.testing.assert_allclose(from_images[:, 1:-1, 1:-1], from_faces[:, 1:-1, 1:-1], atol=1e-4)


def test_average_over_patches():
    scores = np.arange(2 * patches.NUM_PATCHES * 3, dtype=np.float32).reshape(-1, 3)

    averaged = patches.average_over_patches(scores)

    expected = scores.reshape(2, patches.NUM_PATCHES, 3).mean(axis=1)
    np.testing.assert_allclose(averaged, expected, rtol=1e-6)


# Cascade.


def test_cascade_output_shapes_and_ranges(cascade, config):
    images = random_images(2, 100, 150, 0.0, 255.0)

    outputs = cascade(images)

    lnet_o_map = stand_in_map_side(config.lnet_o.input_size)
    lnet_s_map = stand_in_map_side(config.lnet_s.input_size)
    expected_shapes = {
        "face_box": (2, 4),
        "localization_score": (2,),
        "head_box": (2, 4),
        "head_score": (2,),
        "attribute_scores": (2, attributes.NUM_ATTRIBUTES),
        "attribute_probabilities": (2, attributes.NUM_ATTRIBUTES),
        "lnet_o_response": (2, lnet_o_map, lnet_o_map),
        "lnet_s_response": (2, lnet_s_map, lnet_s_map),
    }
    assert {name: tuple(value.shape) for name, value in outputs.items()} == expected_shapes
    for name in ("face_box", "head_box", "localization_score", "head_score", "attribute_probabilities"):
        values = outputs[name].numpy()
        assert np.all((values >= 0.0) & (values <= 1.0)), name
    for name in ("face_box", "head_box"):
        boxes = outputs[name].numpy()
        assert np.all(boxes[:, 2] >= boxes[:, 0]), name
        assert np.all(boxes[:, 3] >= boxes[:, 1]), name


def stand_in_map_side(input_size):
    # The stand-in LNet's first conv has stride 4 and "same" padding.
    return -(-input_size // 4)


def test_cascade_face_box_lies_in_head_crop(cascade, config):
    images = random_images(3, 120, 90, 0.0, 255.0, seed=2)
    outputs = cascade(images)

    crop_boxes = cascade.head_crop_boxes(outputs["head_box"], images)
    face_in_crop = localization.box_to_crop(outputs["face_box"], crop_boxes).numpy()
    assert np.all(face_in_crop > -1e-5)
    assert np.all(face_in_crop < 1.0 + 1e-5)


def test_face_in_crops_lies_in_given_crop(cascade):
    # The crops lie inside the image, so clipping the box to the image cannot
    # hide a box that leaves the crop.
    images = preprocessing.normalize(random_images(2, 100, 80, 0.0, 255.0, seed=5))
    crop_boxes = tf.constant([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.9]])

    face = cascade.localize_face_in_crops(images, crop_boxes)

    face_in_crop = localization.box_to_crop(face["face_box"], crop_boxes).numpy()
    assert np.all(face_in_crop > -1e-5)
    assert np.all(face_in_crop < 1.0 + 1e-5)
    assert face["lnet_s_response"].shape[0] == 2


def with_config(cascade, config):
    """Return a cascade with `cascade`'s nets and SVMs and the settings of `config`."""
    return Cascade(
        cascade.lnet_o, cascade.lnet_s, cascade.anet, config=config,
        svm_weights=cascade.svm_weights.numpy(), svm_bias=cascade.svm_bias.numpy(),
        platt_scale=cascade.platt_scale.numpy(), platt_offset=cascade.platt_offset.numpy(),
    )


@pytest.fixture(scope="module")
def recrop_cascade(cascade, config):
    return with_config(cascade, with_recrop(config, 2.0))


def test_second_pass_reads_crop_about_first_box(cascade, recrop_cascade):
    images = random_images(2, 90, 120, 0.0, 255.0, seed=6)
    normalized = preprocessing.normalize(images)

    outputs = recrop_cascade(images)

    head = cascade.localize_head(normalized)
    first = cascade.localize_face(normalized, head["head_box"])
    recrops = recrop_cascade.face_recrop_boxes(first["face_box"], normalized)
    second = cascade.localize_face_in_crops(normalized, recrops)
    np.testing.assert_allclose(outputs["face_box"], second["face_box"], atol=1e-5)
    np.testing.assert_allclose(outputs["localization_score"], second["face_score"], atol=1e-5)
    side = np.sqrt((recrops[:, 2] - recrops[:, 0]) * (recrops[:, 3] - recrops[:, 1]) * 90 / 120)
    first_side = np.sqrt(
        (first["face_box"][:, 2] - first["face_box"][:, 0])
        * (first["face_box"][:, 3] - first["face_box"][:, 1]) * 90 / 120
    )
    np.testing.assert_allclose(side, 2.0 * first_side, rtol=1e-4)


def test_second_pass_averages_its_scales(cascade, recrop_cascade, config):
    images = random_images(2, 90, 120, 0.0, 255.0, seed=8)
    multi_scale = with_config(cascade, with_recrop(config, 2.0, (1.0, 0.5, 1.5)))

    outputs = multi_scale(images)

    normalized = preprocessing.normalize(images)
    head = cascade.localize_head(normalized)
    first = cascade.localize_face(normalized, head["head_box"])
    passes = [
        cascade.localize_face_in_crops(
            normalized, recrop_cascade.face_recrop_boxes(first["face_box"], normalized, scale)
        )
        for scale in (1.0, 0.5, 1.5)
    ]
    expected_box = np.mean([found["face_box"] for found in passes], axis=0)
    assert not np.allclose(passes[1]["face_box"], passes[2]["face_box"], atol=1e-3)
    np.testing.assert_allclose(outputs["face_box"], expected_box, atol=1e-5)
    expected_score = np.mean([found["face_score"] for found in passes], axis=0)
    np.testing.assert_allclose(outputs["localization_score"], expected_score, atol=1e-5)
    np.testing.assert_allclose(outputs["lnet_s_response"], passes[0]["lnet_s_response"], atol=1e-5)


def test_training_recrops_match_cascade(recrop_cascade):
    images = preprocessing.normalize(random_images(3, 70, 110, 0.0, 255.0, seed=7))
    head_boxes = tf.constant([[0.1, 0.2, 0.6, 0.5], [0.3, 0.1, 0.9, 0.4], [0.0, 0.5, 0.5, 1.0]])
    face_boxes = tf.constant([[0.2, 0.3, 0.4, 0.4], [0.5, 0.2, 0.7, 0.3], [0.1, 0.6, 0.3, 0.8]])

    head_crops = recrop_cascade.head_crop_boxes(head_boxes, images).numpy()
    recrops = boxes_lib.recrop_boxes(face_boxes.numpy(), head_crops, 2.0)

    expected = recrop_cascade.face_recrop_boxes(face_boxes, images).numpy()
    np.testing.assert_allclose(recrops, expected, atol=1e-5)


def test_recrop_boxes_tolerate_skipped_rows():
    recrops = boxes_lib.recrop_boxes(np.zeros([2, 4], np.float32), np.zeros([2, 4], np.float32), 2.0)

    assert np.all(np.isfinite(recrops))


def test_cascade_matches_its_stages(cascade):
    images = random_images(2, 96, 128, 0.0, 255.0, seed=3)

    outputs = cascade(images)

    normalized = preprocessing.normalize(images)
    head = cascade.localize_head(normalized)
    face = cascade.localize_face(normalized, head["head_box"])
    scored = cascade.attribute_scores_from_images(normalized, face["face_box"])
    np.testing.assert_allclose(outputs["head_box"], head["head_box"], atol=1e-6)
    np.testing.assert_allclose(outputs["face_box"], face["face_box"], atol=1e-6)
    np.testing.assert_allclose(outputs["attribute_scores"], scored["attribute_scores"], atol=1e-5)


def test_cascade_scores_average_svm_over_patches(cascade):
    images = preprocessing.normalize(random_images(2, 64, 64, 0.0, 255.0, seed=4))
    face_boxes = tf.constant([[0.1, 0.2, 0.7, 0.8], [0.3, 0.3, 0.9, 0.6]])

    scored = cascade.attribute_scores_from_images(images, face_boxes)

    patch_images = patches.extract_patches_from_images(
        images, cascade.face_crop_boxes(face_boxes), cascade.anet_size
    )
    features = cascade.anet(patch_images, training=False)["features"].numpy()
    patch_scores = features @ cascade.svm_weights.numpy() + cascade.svm_bias.numpy()
    expected_scores = patch_scores.reshape(2, patches.NUM_PATCHES, -1).mean(axis=1)
    logits = cascade.platt_scale.numpy() * expected_scores + cascade.platt_offset.numpy()
    np.testing.assert_allclose(scored["attribute_scores"], expected_scores, atol=1e-4)
    np.testing.assert_allclose(scored["attribute_probabilities"], 1 / (1 + np.exp(-logits)), atol=1e-5)


def test_cascade_scores_face_crops(cascade):
    faces = preprocessing.normalize(random_images(2, 48, 48, 0.0, 255.0, seed=5))

    from_faces = cascade.attribute_scores_from_faces(faces)
    features = cascade.patch_features_from_faces(faces)

    assert features.shape == (2, patches.NUM_PATCHES, NUM_FEATURES)
    np.testing.assert_allclose(
        from_faces["attribute_scores"],
        cascade.attribute_scores_from_features(features)["attribute_scores"],
        atol=1e-6,
    )


def write_images(directory, images):
    """Write uint8 images [N, H, W, 3] as PNG files and return their paths."""
    paths = []
    for index, image in enumerate(images):
        path = str(directory / f"{index:06d}.png")
        tf.io.write_file(path, tf.io.encode_png(image))
        paths.append(path)
    return paths


def test_scores_at_boxes_match_cascade(cascade, tmp_path):
    # evaluate scores ANet on the annotated boxes with this function. Given
    # LNet_s's own boxes, it must reproduce the cascade's probabilities.
    images = random_images(3, 90, 120, 0.0, 255.0, seed=6).round().astype(np.uint8)
    paths = write_images(tmp_path, images)
    predictions = evaluate.predict_files(cascade, paths)

    at_own_boxes = evaluate.predict_attributes_at_boxes(cascade, paths, predictions["face_box"])
    moved = predictions["face_box"] * 0.5
    at_moved_boxes = evaluate.predict_attributes_at_boxes(cascade, paths, moved)

    np.testing.assert_allclose(at_own_boxes, predictions["attribute_probabilities"], atol=1e-5)
    assert np.abs(at_moved_boxes - at_own_boxes).max() > 1e-3


def test_scores_at_boxes_reject_missing_box(cascade, tmp_path):
    paths = write_images(tmp_path, np.zeros([2, 32, 32, 3], np.uint8))

    with pytest.raises(ValueError, match=r"Invalid face_boxes shape \(1, 4\): expected \(2, 4\)"):
        evaluate.predict_attributes_at_boxes(cascade, paths, np.zeros([1, 4]))


def test_cascade_head_crops_have_lnet_s_size(cascade, config):
    images = preprocessing.normalize(random_images(2, 70, 50, 0.0, 255.0))

    crops = cascade.head_crops(images, tf.constant([[0.1, 0.1, 0.5, 0.5]] * 2))

    assert crops.shape == (2, config.lnet_s.input_size, config.lnet_s.input_size, 3)


def test_cascade_rejects_wrong_svm_shape(config):
    parameters = svm_parameters(NUM_FEATURES + 1)

    with pytest.raises(ValueError, match=r"svm_weights has shape \(17, 40\)"):
        Cascade(
            stand_in_lnet(config.lnet_o.input_size, "lnet_o"),
            stand_in_lnet(config.lnet_s.input_size, "lnet_s"),
            stand_in_anet(config.anet.input_size),
            config=config,
            **parameters,
        )


def test_cascade_rejects_input_size_mismatch(config):
    with pytest.raises(ValueError, match="lnet_s takes"):
        Cascade(
            stand_in_lnet(config.lnet_o.input_size, "lnet_o"),
            stand_in_lnet(config.lnet_s.input_size + 8, "lnet_s"),
            stand_in_anet(config.anet.input_size),
            config=config,
            **svm_parameters(NUM_FEATURES),
        )


def test_cascade_rejects_model_without_feature_map(config):
    images = keras.Input((config.lnet_o.input_size,) * 2 + (3,))
    logits = keras.layers.Dense(40)(keras.layers.GlobalAveragePooling2D()(images))
    plain = keras.Model(images, {"logits": logits})

    with pytest.raises(ValueError, match="feature_map"):
        Cascade(
            plain,
            stand_in_lnet(config.lnet_s.input_size, "lnet_s"),
            stand_in_anet(config.anet.input_size),
            config=config,
            **svm_parameters(NUM_FEATURES),
        )


def test_cascade_rejects_grayscale_images(cascade):
    with pytest.raises(ValueError, match=r"\[batch, height, width, 3\]"):
        cascade(np.zeros((1, 32, 32, 1), np.float32))


def test_cascade_saved_model_round_trip(cascade, tmp_path):
    signature = cascade.__call__.get_concrete_function(
        tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    )
    tf.saved_model.save(cascade, str(tmp_path), signatures={"serving_default": signature})
    images = random_images(2, 90, 120, 0.0, 255.0, seed=8)

    loaded = tf.saved_model.load(str(tmp_path))
    outputs = loaded.signatures["serving_default"](images=tf.constant(images))

    expected = cascade(images)
    assert set(outputs) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, atol=1e-5, err_msg=name)


# TFLite.


def operator_names(model_content):
    """Return the operator names of a .tflite flatbuffer, with "CUSTOM:" and the
    custom code for custom and Flex ops."""
    model = tflite_schema.Model.GetRootAsModel(model_content, 0)
    builtin_names = {
        code: name
        for name, code in vars(tflite_schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    names = []
    for index in range(model.OperatorCodesLength()):
        operator_code = model.OperatorCodes(index)
        code = max(operator_code.BuiltinCode(), operator_code.DeprecatedBuiltinCode())
        if code == tflite_schema.BuiltinOperator.CUSTOM:
            names.append("CUSTOM:" + operator_code.CustomCode().decode())
        else:
            names.append(builtin_names[code])
    return names


def convert_to_tflite(cascade, height, width):
    function, module = cascade.frozen_call(1, height, width)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


@pytest.mark.parametrize("passes", [1, 2])
def test_cascade_converts_to_tflite_builtins(cascade, recrop_cascade, passes):
    # Two passes: LNet_s runs a second time on a crop about its first box.
    cascade = recrop_cascade if passes == 2 else cascade
    images = random_images(1, 128, 128, 0.0, 255.0, seed=6)

    model_content = convert_to_tflite(cascade, 128, 128)

    names = operator_names(model_content)
    assert not [name for name in names if name.startswith("CUSTOM")], names
    assert "VAR_HANDLE" not in names, names
    assert "READ_VARIABLE" not in names, names

    interpreter = Interpreter(model_content=model_content)
    runner = interpreter.get_signature_runner()
    lite_outputs = runner(images=images)
    tf_outputs = cascade(images)
    assert set(lite_outputs) == set(tf_outputs)
    np.testing.assert_allclose(
        lite_outputs["attribute_probabilities"], tf_outputs["attribute_probabilities"], atol=1e-4
    )
    for name in ("face_box", "head_box", "localization_score", "head_score"):
        np.testing.assert_allclose(lite_outputs[name], tf_outputs[name], atol=1e-4, err_msg=name)


def graph_op_types(function) -> set:
    """Return the op types of a concrete function's graph, nested functions included."""
    graph_def = function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        types.update(node.op for node in library_function.node_def)
    return types


def test_frozen_call_follows_per_region_context(config):
    keras.utils.set_random_seed(0)
    images = keras.Input((config.anet.input_size,) * 2 + (3,))
    feature_map = layers.LocallyConnected2D(4, 3, strides=4, share_size=(2, 2))(images)
    features = keras.layers.Dense(NUM_FEATURES)(keras.layers.Flatten()(feature_map))
    anet = keras.Model(
        images, {"logits": features, "feature_map": feature_map, "features": features}, name="anet"
    )
    cascade = Cascade(
        stand_in_lnet(config.lnet_o.input_size, "lnet_o"),
        stand_in_lnet(config.lnet_s.input_size, "lnet_s"),
        anet,
        config=config,
        **svm_parameters(NUM_FEATURES),
    )
    canvas = random_images(1, 96, 96, 0.0, 255.0, seed=8)

    batched, _ = cascade.frozen_call(1, 96, 96)
    with layers.per_region_matmuls():
        per_region, _ = cascade.frozen_call(1, 96, 96)

    assert "BatchMatMulV2" in graph_op_types(batched)
    assert "BatchMatMulV2" not in graph_op_types(per_region)
    expected, outputs = batched(canvas), per_region(canvas)
    for name in ("attribute_probabilities", "face_box"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_real_models_run_in_cascade():
    models = pytest.importorskip("lnet_anet_tf.models")
    if not hasattr(models, "build_lnet"):
        pytest.skip("lnet_anet_tf.models has no model builders in this checkout.")
    config = get_config("demo")
    keras.utils.set_random_seed(0)
    anet = models.build_anet(config.anet, num_outputs=10)
    num_features = int(anet.output["features"].shape[-1])
    cascade = Cascade(
        models.build_lnet(config.lnet_o, attributes.NUM_ATTRIBUTES, name="lnet_o"),
        models.build_lnet(config.lnet_s, attributes.NUM_ATTRIBUTES, name="lnet_s"),
        anet,
        config=config,
        **svm_parameters(num_features),
    )
    images = random_images(1, 120, 160, 0.0, 255.0, seed=7)

    tf_outputs = cascade(images)
    lite_outputs = Interpreter(
        model_content=convert_to_tflite(cascade, 120, 160)
    ).get_signature_runner()(images=images)

    np.testing.assert_allclose(
        lite_outputs["attribute_probabilities"], tf_outputs["attribute_probabilities"], atol=1e-4
    )
    np.testing.assert_allclose(lite_outputs["face_box"], tf_outputs["face_box"], atol=1e-4)
