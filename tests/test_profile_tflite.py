"""Tests of scripts/profile_tflite.py: one-op models, stage grouping and the command line.

No test asserts a time: the numbers depend on the machine and its load.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS_DIR = os.path.join(REPO_ROOT, "scripts")
sys.path.insert(0, SCRIPTS_DIR)

import profile_tflite  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402


def _small_model():
    """A Keras model "net": [1, 16, 16, 3] pixels -> scaling, conv, dense."""
    keras.utils.set_random_seed(0)
    images = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(images / 255.0)
    x = keras.layers.Flatten()(x)
    return keras.Model(images, keras.layers.Dense(5, name="dense")(x), name="net")


def _convert(model, int8: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(1)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)] for _ in range(8)
        )
    return converter.convert()


@pytest.fixture(scope="module")
def float_model():
    return _convert(_small_model(), int8=False)


@pytest.fixture(scope="module")
def int8_model():
    return _convert(_small_model(), int8=True)


def _image():
    return np.random.default_rng(2).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)


@pytest.mark.parametrize("variant", ["float", "int8"])
def test_one_op_models_reproduce_whole_model(float_model, int8_model, variant):
    content = float_model if variant == "float" else int8_model
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    whole = profile_tflite.run_whole_model(content, _image())

    for op in model.subgraphs[0].operators:
        single, inputs = profile_tflite.one_op_model(model, op)
        # The same kernels as the whole run, so the outputs are bit-identical.
        interpreter = Interpreter(
            model_content=single,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
        for detail, original in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], whole.get_tensor(original))
        interpreter.invoke()
        output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_array_equal(output, whole.get_tensor(int(op.outputs[0])))


def test_profile_ops_rows(int8_model):
    rows = profile_tflite.profile_ops(int8_model, _image(), 1, ["net"], budget_s=0.001)

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(int8_model))
    assert len(rows) == len(model.subgraphs[0].operators)
    by_op = {row["op"]: row for row in rows}
    assert by_op["CONV_2D"]["input_type"] == "INT8"
    assert by_op["QUANTIZE"]["input_type"] == "FLOAT32"
    for row in rows:
        assert row["default_us"] > 0
        assert row["no_delegates_us"] > 0
    assert by_op["CONV_2D"]["xnnpack"]


def test_stage_of_matches_net_prefixes():
    stages = ["lnet_o", "lnet_s", "anet"]
    assert profile_tflite.stage_of("lnet_o_1/conv1/Relu", stages) == "lnet_o"
    assert profile_tflite.stage_of("anet/quant_conv3/MatMul", stages) == "anet"
    assert profile_tflite.stage_of("anet_crop/GatherV2", stages) == "other"
    assert profile_tflite.stage_of("GatherV2_3", stages) == "other"


def test_summary_table_totals():
    rows = [
        {"stage": "anet", "op": "CONV_2D", "input_type": "INT8", "default_us": 10.0,
         "no_delegates_us": 30.0, "xnnpack": True},
        {"stage": "anet", "op": "CONV_2D", "input_type": "INT8", "default_us": 5.0,
         "no_delegates_us": 20.0, "xnnpack": True},
        {"stage": "other", "op": "GATHER", "input_type": "FLOAT32", "default_us": 5.0,
         "no_delegates_us": 5.0, "xnnpack": False},
    ]

    table = profile_tflite.summary_table(rows)

    assert "| anet | 2 | 15 | 75% |" in table
    assert "| all | 3 | 20 | 100% |" in table
    assert "| anet | CONV_2D | INT8 | 2 | 15.0 | 50.0 | 2 |" in table
    assert "| other | GATHER | FLOAT32 | 1 | 5.0 | 5.0 | 0 |" in table


def test_command_line_writes_json(float_model, tmp_path):
    model_path = tmp_path / "model.tflite"
    model_path.write_bytes(float_model)
    json_path = tmp_path / "ops.json"
    environment = dict(os.environ, PYTHONPATH=REPO_ROOT)

    result = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS_DIR, "profile_tflite.py"),
         f"--model={model_path}", "--stages=net", "--budget_ms=1", f"--json={json_path}"],
        capture_output=True, text=True, env=environment, timeout=300, check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "| stage | op | input type |" in result.stdout
    assert "Whole model on 1 thread(s)" in result.stdout
    report = json.loads(json_path.read_text())
    assert report["whole_model"]["min_us"] > 0
    assert {row["op"] for row in report["ops"]} >= {"CONV_2D", "FULLY_CONNECTED"}


def test_image_needs_square_input(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 12, 3), batch_size=1)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    model_path = tmp_path / "model.tflite"
    model_path.write_bytes(_convert(model, int8=False))
    environment = dict(os.environ, PYTHONPATH=REPO_ROOT)

    result = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS_DIR, "profile_tflite.py"),
         f"--model={model_path}", f"--image={model_path}"],
        capture_output=True, text=True, env=environment, timeout=300, check=False,
    )

    assert result.returncode != 0
    assert "[1, S, S, 3]" in result.stderr
    assert "[1, 8, 12, 3]" in result.stderr
