"""Tests for the TFLite export: builtin ops, names, parity, quantization and the tf_keras twin."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from ai_edge_litert.interpreter import Interpreter
from PIL import Image
from tensorflow.lite.python import schema_py_generated as tflite_schema

import export_fixtures
from lnet_anet_tf import attributes
from lnet_anet_tf import config as config_lib
from lnet_anet_tf import export
from lnet_anet_tf import localization
from lnet_anet_tf import patches
from lnet_anet_tf import preprocessing
from lnet_anet_tf import quantize
from lnet_anet_tf import tflite_export
from lnet_anet_tf import trained
from lnet_anet_tf.data.table import CelebATable
from lnet_anet_tf.models import build_anet, build_lnet

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASCADE_OUTPUTS = set(tflite_export.CASCADE_OUTPUTS)
ANET_OUTPUTS = set(tflite_export.ANET_OUTPUTS)


def operator_codes(model_content: bytes) -> list:
    """Return (builtin name, custom code) of each operator code in a .tflite flatbuffer."""
    model = tflite_schema.Model.GetRootAsModel(model_content, 0)
    names = {
        code: name for name, code in vars(tflite_schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    codes = []
    for index in range(model.OperatorCodesLength()):
        operator_code = model.OperatorCodes(index)
        code = max(operator_code.BuiltinCode(), operator_code.DeprecatedBuiltinCode())
        custom = operator_code.CustomCode()
        codes.append((names[code], custom.decode() if custom else None))
    return codes


def ops_by_input_type(path: str) -> dict:
    """Map each op name of a model to the set of its first input's dtypes."""
    interpreter = Interpreter(model_path=path)
    types = {}
    for op in interpreter._get_ops_details():
        inputs = [index for index in op["inputs"] if index >= 0]
        if not inputs:
            continue
        dtype = interpreter._get_tensor_details(inputs[0], 0)["dtype"]
        types.setdefault(op["op_name"], set()).add(np.dtype(dtype).name)
    return types


def photo_files(folder) -> list:
    """Write real photos as JPEG files: skimage's astronaut, cat, coffee and LFW faces."""
    os.makedirs(folder, exist_ok=True)
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    faces = skimage.data.lfw_subset()[:9]
    for face in faces:
        upsampled = Image.fromarray((face * 255).astype(np.uint8)).resize((120, 150), Image.BICUBIC)
        photos.append(np.array(upsampled.convert("RGB")))
    paths = []
    for index, photo in enumerate(photos):
        path = os.path.join(folder, f"{index:06d}.jpg")
        Image.fromarray(photo).save(path, quality=92)
        paths.append(path)
    return paths


def photo_table(paths) -> CelebATable:
    rng = np.random.default_rng(0)
    count = len(paths)
    partitions = np.zeros(count, np.int8)
    partitions[-2:] = 2
    return CelebATable(
        image_names=np.array([os.path.basename(path) for path in paths]),
        attributes=rng.integers(0, 2, (count, attributes.NUM_ATTRIBUTES)).astype(np.uint8),
        wild_paths=np.array(paths),
        partitions=partitions,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_fixtures.write_model_dir(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def cascade(model_dir):
    return trained.load_cascade(model_dir)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_files(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def exported(cascade, model_dir, photos, tmp_path_factory):
    """Every model in every variant, calibrated and QAT-trained on the photos."""
    export_dir = str(tmp_path_factory.mktemp("export"))
    return export.export_tflite(
        cascade, model_dir, export_dir, photo_table(photos),
        calibration_images=8, qat_images=8, qat_epochs=1,
    )


@pytest.fixture(scope="module")
def astronaut_canvas():
    return tflite_export.letterbox_canvas(skimage.data.astronaut()[:, 60:], 256)


def run_model(path: str, image: np.ndarray) -> dict:
    runner = Interpreter(model_path=path).get_signature_runner(tflite_export.SIGNATURE_KEY)
    return runner(image=image[np.newaxis].astype(np.float32))


# Files, ops and names.


def test_export_writes_every_model(exported):
    expected = {f"{model}_{variant}" for model in ("cascade", "anet") for variant in tflite_export.VARIANTS}
    assert expected <= set(exported)
    folders = {os.path.dirname(path) for path in exported.values()}
    assert len(folders) == 1
    folder = folders.pop()
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(path) for path in exported.values())
    leftovers = [name for name in os.listdir(os.path.dirname(folder)) if name.startswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("variant", tflite_export.VARIANTS)
@pytest.mark.parametrize("model", ["cascade", "anet"])
def test_model_uses_builtin_ops_only(exported, model, variant):
    with open(exported[f"{model}_{variant}"], "rb") as file:
        codes = operator_codes(file.read())
    custom = [code for code in codes if code[0] == "CUSTOM" or code[1]]
    assert custom == [], custom
    names = {name for name, _ in codes}
    assert not names & {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}, names


@pytest.mark.parametrize("variant", tflite_export.VARIANTS)
def test_models_have_readable_names(exported, variant):
    for model, outputs in (("cascade", CASCADE_OUTPUTS), ("anet", ANET_OUTPUTS)):
        signatures = Interpreter(model_path=exported[f"{model}_{variant}"]).get_signature_list()
        assert list(signatures) == ["serving_default"]
        assert signatures["serving_default"]["inputs"] == ["image"]
        assert set(signatures["serving_default"]["outputs"]) == outputs


def test_labels_and_manifest(exported, cascade):
    with open(exported["labels"], encoding="utf-8") as file:
        assert tuple(file.read().split("\n")[:-1]) == attributes.ATTRIBUTE_NAMES
    with open(exported["manifest"], encoding="utf-8") as file:
        manifest = json.load(file)
    assert manifest["canvas_side"] == tflite_export.DEFAULT_CANVAS_SIDE
    assert manifest["face_side"] == 2 * cascade.anet_size
    assert manifest["variants"] == list(tflite_export.VARIANTS)
    assert manifest["pad_value"] == 127.5


def test_input_shapes(exported, cascade):
    side = tflite_export.DEFAULT_CANVAS_SIDE
    face = tflite_export.face_side(cascade)
    for name, shape in (("cascade_int8", [1, side, side, 3]), ("anet_int8", [1, face, face, 3])):
        details = Interpreter(model_path=exported[name]).get_input_details()
        assert details[0]["shape"].tolist() == shape
        assert details[0]["dtype"] == np.float32


# Parity and quantization.


def test_float32_cascade_matches_cascade(exported, cascade, astronaut_canvas):
    canvas, _ = astronaut_canvas
    lite = run_model(exported["cascade_float32"], canvas)
    expected = cascade(canvas[np.newaxis])
    for name in ("attribute_probabilities", "face_box", "head_box", "localization_score"):
        np.testing.assert_allclose(lite[name], expected[name], atol=1e-4, err_msg=name)


def test_float32_anet_matches_cascade(exported, cascade):
    side = tflite_export.face_side(cascade)
    face = np.array(Image.fromarray(skimage.data.astronaut()[40:260, 140:340]).resize((side, side)))
    face = face.astype(np.float32)
    lite = run_model(exported["anet_float32"], face)
    expected = cascade.attribute_scores_from_faces(preprocessing.normalize(face[np.newaxis]))
    np.testing.assert_allclose(
        lite["attribute_probabilities"], expected["attribute_probabilities"], atol=1e-4
    )


@pytest.mark.parametrize("variant", tflite_export.VARIANTS)
def test_every_variant_gives_valid_outputs(exported, cascade, astronaut_canvas, variant):
    canvas, _ = astronaut_canvas
    outputs = run_model(exported[f"cascade_{variant}"], canvas)
    probabilities = outputs["attribute_probabilities"]
    assert probabilities.shape == (1, 40)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    box = outputs["face_box"][0]
    assert np.all((box >= 0) & (box <= 1))
    assert box[2] > box[0]
    assert box[3] > box[1]

    side = tflite_export.face_side(cascade)
    face = tf.image.resize(canvas[np.newaxis, 40:200, 60:220], [side, side])[0].numpy()
    anet_probabilities = run_model(exported[f"anet_{variant}"], face)["attribute_probabilities"]
    assert anet_probabilities.shape == (1, 40)
    assert np.all((anet_probabilities >= 0) & (anet_probabilities <= 1))


@pytest.mark.parametrize("variant", tflite_export.QUANTIZED_VARIANTS)
def test_int8_cascade_quantizes_only_the_nets(exported, variant):
    types = ops_by_input_type(exported[f"cascade_{variant}"])
    for op in ("CONV_2D", "MAX_POOL_2D"):
        assert types[op] == {"int8"}, (op, types[op])
    # The locally connected layers run as int8 FULLY_CONNECTED ops, one per
    # region, and the SVMs as one float32 FULLY_CONNECTED.
    assert "BATCH_MATMUL" not in types, types.get("BATCH_MATMUL")
    assert types["FULLY_CONNECTED"] == {"int8", "float32"}, types["FULLY_CONNECTED"]
    for op in ("CUMSUM", "ARG_MAX", "ARG_MIN", "TOPK_V2", "ONE_HOT", "DIV", "GATHER"):
        assert "int8" not in types.get(op, set()), (op, types.get(op))


@pytest.mark.parametrize("variant", tflite_export.QUANTIZED_VARIANTS)
def test_int8_anet_quantizes_only_anet(exported, variant):
    types = ops_by_input_type(exported[f"anet_{variant}"])
    for op in ("CONV_2D", "MAX_POOL_2D"):
        assert types[op] == {"int8"}, (op, types[op])
    assert "BATCH_MATMUL" not in types, types.get("BATCH_MATMUL")
    assert types["FULLY_CONNECTED"] == {"int8", "float32"}, types["FULLY_CONNECTED"]
    # The patch crops (GATHER) and the Platt sigmoid (LOGISTIC) stay float32.
    for op in ("GATHER", "LOGISTIC"):
        assert types[op] == {"float32"}, (op, types[op])


def test_float32_cascade_keeps_batch_matmul(exported):
    # XNNPACK runs the float32 BATCH_MATMUL faster than one FULLY_CONNECTED
    # per region, so only the int8 variants trace the regions apart.
    types = ops_by_input_type(exported["cascade_float32"])
    assert types["BATCH_MATMUL"] == {"float32"}, types.get("BATCH_MATMUL")


def test_int8_cascade_has_no_requantized_float_tensors(exported):
    interpreter = Interpreter(model_path=exported["cascade_int8"])
    ops = interpreter._get_ops_details()
    producers = {op["outputs"][0]: op for op in ops if len(op["outputs"]) == 1}
    for op in ops:
        if op["op_name"] != "DEQUANTIZE":
            continue
        producer = producers.get(op["inputs"][0])
        assert producer is None or producer["op_name"] != "QUANTIZE", op


def test_int8_boxes_stay_near_float32(exported, photos):
    ious = []
    for path in photos:
        image = np.array(Image.open(path).convert("RGB"))
        canvas, _ = tflite_export.letterbox_canvas(image, tflite_export.DEFAULT_CANVAS_SIDE)
        boxes = [run_model(exported[f"cascade_{v}"], canvas)["face_box"] for v in ("float32", "int8")]
        ious.append(float(localization.iou(boxes[0], boxes[1]).numpy()[0]))
    # Random weights give flat response maps, where small errors move boxes
    # more than trained nets do, so the bound here is loose.
    assert np.mean(ious) >= 0.6, ious


def test_letterbox_canvas_maps_boxes_back():
    image = np.zeros((100, 300, 3), np.uint8)
    canvas, window = tflite_export.letterbox_canvas(image, 120)
    assert canvas.shape == (120, 120, 3)
    np.testing.assert_allclose(window, [40 / 120, 0.0, 80 / 120, 1.0], atol=1e-6)
    assert np.all(canvas[:40] == 127.5)
    assert np.all(canvas[80:] == 127.5)
    np.testing.assert_allclose(canvas[40:80], 0.0, atol=1e-4)
    mapped = tflite_export.canvas_box_to_image(np.array([[40 / 120, 0.25, 60 / 120, 0.5]]), window)
    np.testing.assert_allclose(mapped, [[0.0, 0.25, 0.5, 0.5]], atol=1e-6)


# Export folder.


def test_export_replaces_tflite_folder(cascade, model_dir, tmp_path):
    first = export.export_tflite(cascade, model_dir, str(tmp_path), None, variants=["float32"])
    second = export.export_tflite(cascade, model_dir, str(tmp_path), None, variants=["dynamic_range"])
    folder = os.path.dirname(second["labels"])
    assert sorted(os.listdir(folder)) == [
        "anet_dynamic_range.tflite", "cascade_dynamic_range.tflite", "labels.txt", "manifest.json",
    ]
    assert not os.path.exists(first["cascade_float32"])
    assert sorted(os.listdir(tmp_path)) == ["tflite"]


def test_quantized_variants_need_table(cascade, model_dir, tmp_path):
    with pytest.raises(ValueError, match="training images"):
        export.export_tflite(cascade, model_dir, str(tmp_path), None, variants=["int8"])
    assert not os.path.exists(tmp_path / "tflite")


def test_unknown_variant_is_rejected(cascade):
    function, module = tflite_export.anet_function(cascade)
    with pytest.raises(ValueError, match="int4"):
        tflite_export.convert(function, module, "int4")


# The tf_keras twin and QAT.


def test_twin_matches_anet_with_share_regions():
    config = config_lib.override(config_lib.get_config("demo"), "anet.share_sizes=(None, (3, 2), (2, 2), (1, 1))").anet
    keras.utils.set_random_seed(1)
    anet = build_anet(config, attributes.NUM_ATTRIBUTES, "attributes")
    export_fixtures._randomize_batch_norm(anet, np.random.default_rng(1))
    images = np.random.default_rng(2).uniform(-1, 1, (3, 48, 48, 3)).astype(np.float32)

    twin = quantize.twin_model(anet)

    expected = anet(images, training=False)
    outputs = twin(images, training=False)
    assert set(outputs) == set(expected)
    for name in expected:
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5, err_msg=name)


def test_twin_matches_lnet_with_lrn():
    config = config_lib.override(
        export_fixtures.tiny_config(), "lnet_o.normalization='lrn'"
    ).lnet_o
    keras.utils.set_random_seed(3)
    lnet = build_lnet(config, attributes.NUM_ATTRIBUTES, "attributes")
    images = np.random.default_rng(4).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    twin = quantize.twin_model(lnet)
    np.testing.assert_allclose(
        twin(images)["feature_map"], lnet(images)["feature_map"], atol=1e-5
    )


def test_twin_rejects_unknown_layer():
    inputs = keras.Input((8, 8, 3))
    outputs = {"features": keras.layers.GaussianNoise(0.1, name="noise")(inputs)}
    with pytest.raises(ValueError, match="'noise' of type GaussianNoise"):
        quantize.twin_model(keras.Model(inputs, outputs))


def test_quantize_model_covers_locally_connected_layers(cascade):
    qat_model = quantize.quantize_model(quantize.twin_model(cascade.anet))
    wrappers = {
        layer.layer.name: layer for layer in qat_model.layers
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)
    }
    for name in ("conv3", "conv4"):
        assert isinstance(wrappers[name].layer, quantize.TwinLocallyConnected2D), name
        variables = [variable.name.split("/")[-1] for variable in wrappers[name].weights]
        assert "kernel_min:0" in variables, variables
        assert "output_max:0" in variables, variables


def test_calibrate_ranges_sets_ranges_from_data(cascade):
    twin = quantize.twin_model(cascade.anet)
    qat_model = quantize.quantize_model(twin)
    batch = np.random.default_rng(5).uniform(-1, 1, (6, 48, 48, 3)).astype(np.float32)

    quantize.calibrate_ranges(qat_model, twin, [batch])

    def range_maximum(layer):
        (variable,) = [v for v in layer.non_trainable_weights if v.name.endswith("_max:0")]
        return float(variable.numpy())

    probe = tf_keras.Model(twin.inputs, twin.get_layer("conv2_relu").output)
    relu_wrapper = [
        layer for layer in qat_model.layers
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)
        and layer.layer.name == "conv2_relu"
    ][0]
    assert range_maximum(relu_wrapper) == pytest.approx(float(tf.reduce_max(probe(batch))), rel=1e-5)
    input_layer = [layer for layer in qat_model.layers if hasattr(layer, "quantizer")][0]
    assert range_maximum(input_layer) == pytest.approx(float(batch.max()))
    # The quantized model now tracks the float twin closely.
    np.testing.assert_allclose(
        qat_model(batch)["features"], twin(batch)["features"],
        atol=0.05 * float(tf.reduce_max(twin(batch)["features"])),
    )


def test_quantization_aware_anet_trains(cascade, model_dir):
    rng = np.random.default_rng(6)
    side = tflite_export.face_side(cascade)
    faces = rng.integers(0, 256, (6, side, side, 3)).astype(np.uint8)
    before = quantize.twin_model(cascade.anet).get_layer("fc5").get_weights()[0]

    qat_model = quantize.quantization_aware_anet(
        cascade.anet, trained.load_svm(model_dir), faces,
        epochs=1, batch_size=8, learning_rate=1e-3,
    )

    after = qat_model.get_layer("quant_fc5").get_weights()[0]
    assert not np.allclose(before, after)
    outputs = qat_model(np.zeros((1, cascade.anet_size, cascade.anet_size, 3), np.float32))
    assert set(outputs) == {"logits", "feature_map", "features"}


def test_quantization_aware_anet_rejects_empty_data(cascade, model_dir):
    with pytest.raises(ValueError, match="needs training faces"):
        quantize.quantization_aware_anet(
            cascade.anet, trained.load_svm(model_dir), np.zeros((0, 96, 96, 3), np.uint8)
        )


def test_qat_targets_are_float_cascade_probabilities(cascade, model_dir):
    rng = np.random.default_rng(7)
    side = tflite_export.face_side(cascade)
    faces = rng.integers(0, 256, (5, side, side, 3)).astype(np.uint8)
    twin = quantize.twin_model(cascade.anet)

    targets = quantize.float_patch_probabilities(twin, trained.load_svm(model_dir), faces, batch_size=2)

    assert targets.shape == (5, patches.NUM_PATCHES, attributes.NUM_ATTRIBUTES)
    # The cascade applies Platt scaling to the patches' mean SVM score, which is
    # the mean of the patches' Platt logits, because Platt scaling is affine.
    logits = np.log(targets) - np.log1p(-targets)
    averaged = 1.0 / (1.0 + np.exp(-logits.mean(axis=1)))
    normalized = faces.astype(np.float32) / 127.5 - 1.0
    expected = cascade.attribute_scores_from_faces(normalized)["attribute_probabilities"].numpy()
    np.testing.assert_allclose(averaged, expected, atol=1e-4)


def test_patch_dataset_takes_per_patch_targets():
    rng = np.random.default_rng(8)
    faces = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    targets = rng.uniform(size=(3, patches.NUM_PATCHES, 2)).astype(np.float32)

    batches = list(quantize.patch_dataset(faces, targets, 8, batch_size=100, seed=0))

    assert len(batches) == 1
    images, batch_targets = batches[0]
    assert images.shape == (3 * patches.NUM_PATCHES, 8, 8, 3)
    # Faces come shuffled, but each face's patches stay together and in order.
    rows = batch_targets["logits"].numpy().reshape(3, patches.NUM_PATCHES, 2)
    order = [int(np.argmin(np.abs(targets[:, 0, 0] - row[0, 0]))) for row in rows]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(rows, targets[order])


# Parity on a trained run: trains a small synthetic run, export stage included,
# so it is slow.

# A small synthetic run: 320 images, 32 of them in the test partition, so that one
# wrong attribute decision moves the mean accuracy by 1/12.8 point. On the
# 120-image run of 12 test images one decision moves it by 0.21 point, which is
# too coarse for the 0.5-point QAT margin.
SMALL_RUN_OVERRIDES = [
    "synthetic.num_identities=40",
    "synthetic.images_per_identity=8",
    "synthetic.object_classes=4",
    "synthetic.object_images_per_class=40",
    "stages.pretrain_lnet.epochs=2",
    "stages.pretrain_anet.epochs=3",
    "stages.finetune_lnet_o.epochs=3",
    "stages.finetune_lnet_s.epochs=3",
    "stages.finetune_anet.epochs=3",
    "svm.epochs=10",
]


@pytest.mark.slow
def test_parity_on_trained_run(tmp_path):
    model_dir = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable, "-m", "lnet_anet_tf.train", f"--model_dir={model_dir}",
            f"--cache_dir={tmp_path / 'cache'}", "--progress=off",
            "--stages=pretrain_lnet,pretrain_anet,finetune_lnet_o,finetune_lnet_s,"
            "finetune_anet,fit_svm,export",
            *[f"--config_override={override}" for override in SMALL_RUN_OVERRIDES],
        ],
        capture_output=True, text=True, timeout=1800,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    # The training job's export stage wrote the export and recorded its paths.
    done = json.loads((model_dir / "export" / "DONE.json").read_text())
    assert os.path.isdir(done["paths"]["saved_model"])
    assert os.path.isfile(done["paths"]["cascade_qat_int8"])
    output_json = tmp_path / "parity.json"

    bench = subprocess.run(
        [
            sys.executable, os.path.join(REPOSITORY, "scripts", "bench_parity.py"),
            f"--model_dir={model_dir}", f"--export_dir={model_dir / 'export'}",
            "--skip_export", f"--output_json={output_json}",
        ],
        capture_output=True, text=True, timeout=1800,
    )
    assert bench.returncode == 0, bench.stderr[-3000:]

    results = json.loads(output_json.read_text())
    cascade_results = results["cascade"]
    parity = cascade_results["saved_model_vs_float32"]["max_abs_probability_difference"]
    assert parity <= 1e-4
    assert results["anet"]["tensorflow_vs_float32"]["max_abs_probability_difference"] <= 1e-4
    for model in ("cascade", "anet"):
        variants = results[model]["variants"]
        assert variants["int8"]["accuracy_points_vs_float32"] >= -1.0, (model, variants["int8"])
        assert variants["qat_int8"]["accuracy_points_vs_float32"] >= -0.5, (model, variants["qat_int8"])
    assert cascade_results["variants"]["int8"]["face_box_mean_iou_vs_float32"] >= 0.9
