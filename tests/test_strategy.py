"""Tests of strategy selection, precision, determinism and multi-replica training.

Tests that need several logical CPU devices or several workers start their own
Python processes, because devices and MultiWorkerMirroredStrategy must be set up
before TensorFlow initialises.
"""

import csv
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from lnet_anet_tf import training
from lnet_anet_tf.training import strategy as strategy_lib

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
STAGE_MAIN = os.path.join(TESTS_DIR, "training_stage_main.py")


def _run_python(args, env=None, timeout=180):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_CONFIG", None)
    environment.update(env or {})
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=TESTS_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def _run_stage(tmp_path, name, *flags):
    result_path = tmp_path / f"{name}.json"
    _run_python(
        [
            STAGE_MAIN,
            f"--model_dir={tmp_path / name}",
            f"--result_path={result_path}",
            *flags,
        ]
    )
    return json.loads(result_path.read_text())


def _read_csv(path):
    with open(path, encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_invalid_strategy_name_rejected():
    with pytest.raises(ValueError, match="Invalid distribution strategy 'tpu'"):
        training.make_strategy("tpu")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "no 'cluster' object"),
        ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}',
         "must be a list of 'host:port' strings"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
         "must name one of the cluster's task types"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
         "task index 3 is out of range"),
    ],
)
def test_malformed_tf_config_rejected(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)

    with pytest.raises(ValueError, match=message):
        training.make_strategy("auto")


def test_multi_worker_without_tf_config_rejected(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)

    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        training.make_strategy("multi_worker")


def test_single_worker_tf_config_parsed(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}'
    )

    tf_config = strategy_lib.read_tf_config()

    assert tf_config["task"] == {"type": "worker", "index": 0}


def test_default_strategy_is_chief():
    strategy = tf.distribute.get_strategy()

    assert training.is_chief(strategy)
    assert strategy_lib.num_workers(strategy) == 1
    assert strategy_lib.worker_name(strategy) == "local"


def test_logical_cpus_after_initialisation_rejected():
    tf.config.list_logical_devices()

    with pytest.raises(RuntimeError, match="before any TensorFlow op runs"):
        training.configure_logical_cpus(3)


def test_logical_cpu_count_validated():
    with pytest.raises(ValueError, match="at least 1"):
        training.configure_logical_cpus(0)


def test_determinism_repeats_random_numbers():
    training.enable_determinism(7)
    first = keras.random.normal((4,)).numpy(), np.random.rand(), tf.random.uniform((3,)).numpy()
    training.enable_determinism(7)
    second = keras.random.normal((4,)).numpy(), np.random.rand(), tf.random.uniform((3,)).numpy()

    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]
    np.testing.assert_array_equal(first[2], second[2])


def test_precision_policy_set_and_reset():
    try:
        assert training.configure_precision(True) == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        assert training.configure_precision(False) == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_strategy_choice_with_logical_cpus():
    code = (
        "import json\n"
        "from lnet_anet_tf import training\n"
        "training.configure_logical_cpus(2)\n"
        "auto = training.make_strategy('auto')\n"
        "mirrored = training.make_strategy('mirrored')\n"
        "one = training.make_strategy('one_device')\n"
        "print(json.dumps([type(s).__name__ + ':' + str(s.num_replicas_in_sync)"
        " for s in (auto, mirrored, one)]))\n"
    )

    completed = _run_python(["-c", code])

    assert json.loads(completed.stdout.strip().splitlines()[-1]) == [
        "MirroredStrategy:2",
        "MirroredStrategy:2",
        "OneDeviceStrategy:1",
    ]


def test_mirrored_losses_match_one_device(tmp_path):
    # Without batch normalization and dropout the two replicas' halves of each
    # global batch give exactly the single-device gradient, up to float rounding.
    flags = ["--batch_norm=false", "--dropout=0", "--checkpoint_every_steps=2"]
    one = _run_stage(tmp_path, "one", "--logical_cpus=1", *flags)
    two = _run_stage(tmp_path, "two", "--logical_cpus=2", "--strategy=mirrored", *flags)

    assert one["replicas"] == 1
    assert two["replicas"] == 2
    one_rows = _read_csv(tmp_path / "one" / "tiny" / "log.csv")
    two_rows = _read_csv(tmp_path / "two" / "tiny" / "log.csv")
    assert [row["epoch"] for row in two_rows] == ["1", "2", "3"]
    for one_row, two_row in zip(one_rows, two_rows):
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(two_row[name]) == pytest.approx(float(one_row[name]), abs=1e-5)
    for one_weight, two_weight in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(two_weight, one_weight, atol=1e-5)


def test_mirrored_replicas_share_batch_norm_state(tmp_path):
    result = _run_stage(tmp_path, "bn", "--logical_cpus=2", "--strategy=mirrored")

    assert result["replicas"] == 2
    spread = {path: value for path, value in result["replica_spread"].items() if "moving" in path}
    assert len(spread) == 2
    assert all(value == 0.0 for value in spread.values()), spread


def test_predict_and_evaluate_on_two_replicas():
    completed = _run_python([os.path.join(TESTS_DIR, "training_replicas_main.py")])
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["replicas"] == 2
    assert result["predict_shape"] == [11, 3]
    assert result["predict_max_error"] < 1e-6
    assert result["loss"] == pytest.approx(result["expected_loss"], abs=1e-6)
    assert result["accuracy"] == pytest.approx(result["expected_accuracy"], abs=1e-6)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_stage_finishes(tmp_path):
    addresses = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    STAGE_MAIN,
                    f"--model_dir={tmp_path / 'out'}",
                    f"--result_path={tmp_path / f'worker{index}.json'}",
                    "--strategy=multi_worker",
                    "--checkpoint_every_steps=3",
                ],
                cwd=TESTS_DIR,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        errors = [process.communicate(timeout=180)[1] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    for process, error in zip(processes, errors):
        assert process.returncode == 0, error[-4000:]
    chief = json.loads((tmp_path / "worker0.json").read_text())
    other = json.loads((tmp_path / "worker1.json").read_text())
    assert chief["replicas"] == 2
    assert chief["result"]["metrics"] == other["result"]["metrics"]
    assert chief["weights"] == other["weights"]
    stage_dir = tmp_path / "out" / "tiny"
    done = json.loads((stage_dir / "DONE.json").read_text())
    assert done["metrics"] == chief["result"]["metrics"]
    assert [row["epoch"] for row in _read_csv(stage_dir / "log.csv")] == ["1", "2", "3"]
    # The non-chief worker deleted its scratch checkpoints, so only the chief's remain.
    assert not [name for name in os.listdir(stage_dir / "checkpoints") if name.startswith(".scratch")]
