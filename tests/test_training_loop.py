"""Tests of the training loop: results, files, resume, NaN handling and skipping.

Most tests train the tiny fixture model in this process on the default strategy.
The SIGKILL test runs the stage in a subprocess and kills it.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

import training_fixtures as fixtures
from lnet_anet_tf import training
from lnet_anet_tf.training import checkpointing, steps

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
STAGE_MAIN = os.path.join(TESTS_DIR, "training_stage_main.py")


@pytest.fixture(autouse=True)
def deterministic_ops():
    training.enable_determinism(0)
    yield
    # TensorFlow has no public switch back, and other test files expect the default.
    tf_config.disable_op_determinism()


def _fit(model_dir, *, dataset_fn=None, model=None, epochs=3, steps_per_epoch=4, **kwargs):
    """Train the fixture stage `tiny` in `model_dir`; return (result, model)."""
    if model is None:
        keras.utils.set_random_seed(0)
        model = fixtures.make_model()
    features, labels = fixtures.make_data(64)
    val_features, val_labels = fixtures.make_data(24, seed=1)
    arguments = dict(
        stage_name="tiny",
        model=model,
        loss_fn=fixtures.loss_fn,
        metrics_fn=fixtures.metrics_fn,
        dataset_fn=dataset_fn or fixtures.make_dataset_fn(features, labels, 8),
        global_batch_size=8,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        optimizer=keras.optimizers.Adam(0.05),
        model_dir=str(model_dir),
        validation_dataset_fn=fixtures.make_validation_dataset_fn(val_features, val_labels, 5),
        checkpoint_every_steps=2,
        progress=False,
    )
    arguments.update(kwargs)
    return training.fit(**arguments), model


def _failing_dataset_fn(fail_epoch, fail_batch):
    """The fixture data, with an input error when batch `fail_batch` of `fail_epoch` is read."""
    features, labels = fixtures.make_data(64)
    base = fixtures.make_dataset_fn(features, labels, 8)

    def dataset_fn(input_context, epoch):
        dataset = base(input_context, epoch)
        if epoch != fail_epoch:
            return dataset

        def check(index, batch):
            tf.debugging.assert_none_equal(
                index, tf.constant(fail_batch, tf.int64), message="simulated input failure"
            )
            return batch

        return dataset.enumerate().map(check)

    return dataset_fn


def _read_csv(path):
    with open(path, encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _assert_same_weights(first, second):
    for first_weight, second_weight in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(first_weight, second_weight)


def test_fit_writes_stage_outputs(tmp_path):
    result, model = _fit(tmp_path)

    stage_dir = tmp_path / "tiny"
    assert result.steps == 12
    assert result.epochs == 3
    assert result.resumed_from_step == 0
    assert not result.skipped
    assert sorted(result.metrics) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert result.examples_per_second > 0
    done = json.loads((stage_dir / "DONE.json").read_text())
    assert done["metrics"] == result.metrics
    assert done["steps"] == 12
    rows = _read_csv(stage_dir / "log.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert float(rows[-1]["loss"]) == result.metrics["loss"]

    keras.utils.set_random_seed(1)
    reloaded = fixtures.make_model()
    reloaded.load_weights(result.weights_path)
    _assert_same_weights(model, reloaded)


def test_fit_reduces_loss(tmp_path):
    result, _ = _fit(tmp_path, epochs=6)

    rows = _read_csv(tmp_path / "tiny" / "log.csv")
    assert float(rows[-1]["loss"]) < 0.6 * float(rows[0]["loss"])
    assert result.metrics["accuracy"] > 0.8


def test_validation_set_distributed_once(tmp_path):
    val_features, val_labels = fixtures.make_data(24, seed=1)
    base = fixtures.make_validation_dataset_fn(val_features, val_labels, 5)
    calls = []

    def validation_dataset_fn(input_context):
        calls.append(input_context)
        return base(input_context).cache()

    result, model = _fit(tmp_path, validation_dataset_fn=validation_dataset_fn)

    assert len(calls) == 1
    rows = _read_csv(tmp_path / "tiny" / "log.csv")
    # The cache keeps the inputs, not the scores: each epoch scores its own weights.
    assert len({row["val_loss"] for row in rows}) == 3
    final = training.evaluate(model, fixtures.loss_fn, base, metrics_fn=fixtures.metrics_fn)
    assert result.metrics["val_loss"] == pytest.approx(final["loss"], abs=1e-6)


def test_fit_writes_tensorboard_scalars(tmp_path):
    _fit(tmp_path, epochs=2)

    tags = {}
    log_dir = tmp_path / "tiny" / "logs"
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(str(log_dir / name)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    assert tags["train_step/loss"] == list(range(1, 9))
    assert tags["epoch/loss"] == [4, 8]
    assert tags["epoch/val_accuracy"] == [4, 8]


def test_resume_mid_epoch_matches_uninterrupted(tmp_path):
    uninterrupted, uninterrupted_model = _fit(tmp_path / "uninterrupted")

    # Batch 2 of epoch 1 is step 7; the last checkpoint before it is step 6.
    with pytest.raises(tf.errors.OpError, match="simulated input failure"):
        _fit(tmp_path / "resumed", dataset_fn=_failing_dataset_fn(1, 2))
    assert tf.train.latest_checkpoint(str(tmp_path / "resumed" / "tiny" / "checkpoints")).endswith(
        "ckpt-6"
    )
    resumed, resumed_model = _fit(tmp_path / "resumed")

    assert resumed.resumed_from_step == 6
    assert resumed.metrics == uninterrupted.metrics
    _assert_same_weights(resumed_model, uninterrupted_model)
    assert (tmp_path / "resumed" / "tiny" / "log.csv").read_text() == (
        tmp_path / "uninterrupted" / "tiny" / "log.csv"
    ).read_text()


def test_resume_at_epoch_boundary_keeps_csv(tmp_path):
    with pytest.raises(tf.errors.OpError, match="simulated input failure"):
        _fit(tmp_path, dataset_fn=_failing_dataset_fn(2, 0))
    assert [row["epoch"] for row in _read_csv(tmp_path / "tiny" / "log.csv")] == ["1", "2"]

    resumed, _ = _fit(tmp_path)

    assert resumed.resumed_from_step == 8
    assert [row["epoch"] for row in _read_csv(tmp_path / "tiny" / "log.csv")] == ["1", "2", "3"]


def test_torn_checkpoint_never_restored(tmp_path):
    uninterrupted, _ = _fit(tmp_path / "uninterrupted")
    with pytest.raises(tf.errors.OpError):
        _fit(tmp_path / "torn", dataset_fn=_failing_dataset_fn(1, 0))
    checkpoint_dir = tmp_path / "torn" / "tiny" / "checkpoints"
    # What a save killed before its state update leaves: files the state does not name.
    (checkpoint_dir / "ckpt-6.index").write_bytes(b"\x00truncated")
    (checkpoint_dir / "ckpt-6.data-00000-of-00001").write_bytes(b"\x00" * 10)
    (checkpoint_dir / "ckpt-6_temp").mkdir()
    (checkpoint_dir / "ckpt-6_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"")

    resumed, _ = _fit(tmp_path / "torn")

    assert resumed.resumed_from_step == 4
    assert resumed.metrics == uninterrupted.metrics
    assert not (checkpoint_dir / "ckpt-6_temp").exists()


def test_finished_stage_skipped(tmp_path):
    first, first_model = _fit(tmp_path)
    csv_before = (tmp_path / "tiny" / "log.csv").read_text()

    def dataset_fn_never_called(input_context, epoch):
        raise AssertionError("a finished stage must not read training data")

    keras.utils.set_random_seed(5)
    fresh_model = fixtures.make_model()
    second, second_model = _fit(tmp_path, model=fresh_model, dataset_fn=dataset_fn_never_called)

    assert second.skipped
    assert second.metrics == first.metrics
    assert second.steps == first.steps
    _assert_same_weights(second_model, first_model)
    assert (tmp_path / "tiny" / "log.csv").read_text() == csv_before


def test_finished_stage_with_other_epochs_rejected(tmp_path):
    _fit(tmp_path, epochs=1)

    with pytest.raises(ValueError, match="already finished with steps_per_epoch"):
        _fit(tmp_path, epochs=2)


def test_checkpoint_with_other_steps_rejected(tmp_path):
    with pytest.raises(tf.errors.OpError):
        _fit(tmp_path, dataset_fn=_failing_dataset_fn(1, 0))

    with pytest.raises(ValueError, match="was written with steps_per_epoch"):
        _fit(tmp_path, steps_per_epoch=3)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    features, labels = fixtures.make_data(64)
    # Batch 2 of epoch 1 is step 7; step checkpoints come every 2 steps.
    dataset_fn = fixtures.make_dataset_fn(features, labels, 8, nan_at=(1, 2))

    with pytest.raises(training.NonFiniteLossError) as raised:
        _fit(tmp_path, dataset_fn=dataset_fn)

    message = str(raised.value)
    assert "Stage tiny stopped: the loss at step 7 (epoch 2) is nan" in message
    assert "ckpt-6" in message
    assert "lower learning rate" in message
    assert "disable mixed precision" in message
    checkpoint_dir = tmp_path / "tiny" / "checkpoints"
    assert tf.train.latest_checkpoint(str(checkpoint_dir)).endswith("ckpt-6")
    assert not [name for name in os.listdir(checkpoint_dir) if name.startswith("ckpt-7")]
    assert not (tmp_path / "tiny" / "DONE.json").exists()

    # The checkpoint restores into a fresh model and optimizer, with finite weights.
    model = fixtures.make_model()
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(model.trainable_variables)
    state = checkpointing.LoopState(4, 8, 3)
    checkpoint = checkpointing.StageCheckpoint(
        str(tmp_path / "tiny"), model, optimizer, state, tf.distribute.get_strategy()
    )
    assert checkpoint.restore_latest().endswith("ckpt-6")
    assert state.step == 6
    assert state.epoch == 1
    assert all(np.all(np.isfinite(weight)) for weight in model.get_weights())


def test_inf_loss_stops(tmp_path):
    def infinite_loss(labels, logits):
        return fixtures.loss_fn(labels, logits) + float("inf")

    with pytest.raises(training.NonFiniteLossError, match="at step 1 .* is inf"):
        _fit(tmp_path, loss_fn=infinite_loss)
    assert not os.path.exists(tmp_path / "tiny" / "checkpoints" / "checkpoint")


@pytest.mark.slow
def test_sigkill_resume_matches_uninterrupted(tmp_path):
    common = ["--checkpoint_every_steps=3", "--epochs=3", "--steps_per_epoch=4"]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_CONFIG", None)

    def command(name, *extra):
        return [
            sys.executable,
            STAGE_MAIN,
            f"--model_dir={tmp_path / name}",
            f"--result_path={tmp_path / name}.json",
            *common,
            *extra,
        ]

    subprocess.run(command("uninterrupted"), cwd=TESTS_DIR, env=environment, check=True, timeout=180)

    # Slow batches leave time to kill the process right after its first step checkpoint.
    state_file = tmp_path / "killed" / "tiny" / "checkpoints" / "checkpoint"
    process = subprocess.Popen(command("killed", "--delay_s=0.2"), cwd=TESTS_DIR, env=environment)
    try:
        deadline = time.monotonic() + 120
        while not (state_file.exists() and "ckpt-3" in state_file.read_text()):
            assert process.poll() is None, "the stage ended before it could be killed"
            assert time.monotonic() < deadline, "no step checkpoint appeared"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "tiny" / "DONE.json").exists()

    subprocess.run(command("killed"), cwd=TESTS_DIR, env=environment, check=True, timeout=180)

    uninterrupted = json.loads((tmp_path / "uninterrupted.json").read_text())
    resumed = json.loads((tmp_path / "killed.json").read_text())
    assert resumed["result"]["resumed_from_step"] >= 3
    assert resumed["result"]["metrics"] == uninterrupted["result"]["metrics"]
    assert resumed["weights"] == uninterrupted["weights"]
    rows = _read_csv(tmp_path / "killed" / "tiny" / "log.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]


def test_mixed_precision_adds_loss_scaling(tmp_path):
    training.configure_precision(True)
    try:
        keras.utils.set_random_seed(0)
        model = fixtures.make_model()
        result, _ = _fit(tmp_path, model=model, epochs=1)
    finally:
        training.configure_precision(False)

    assert np.isfinite(result.metrics["loss"])
    latest = tf.train.latest_checkpoint(str(tmp_path / "tiny" / "checkpoints"))
    names = [name for name, _ in tf.train.list_variables(latest)]
    assert any("dynamic_scale" in name for name in names)


def test_jit_compile_matches_graph_mode(tmp_path):
    def run(name, jit_compile):
        keras.utils.set_random_seed(0)
        model = fixtures.make_model(dropout=0)
        return _fit(tmp_path / name, model=model, epochs=2, jit_compile=jit_compile)[0]

    graph = run("graph", False)
    compiled = run("xla", True)

    for name, value in graph.metrics.items():
        assert compiled.metrics[name] == pytest.approx(value, abs=1e-4)


def test_learning_rate_of_rerun_wins(tmp_path):
    with pytest.raises(tf.errors.OpError):
        _fit(tmp_path, dataset_fn=_failing_dataset_fn(1, 0))

    optimizer = keras.optimizers.Adam(0.001)
    _fit(tmp_path, optimizer=optimizer)

    assert float(optimizer.learning_rate) == pytest.approx(0.001)


def test_short_dataset_rejected(tmp_path):
    with pytest.raises(ValueError, match="ended after 8 of 9 steps"):
        _fit(tmp_path, steps_per_epoch=9)


def test_partial_batches_rejected(tmp_path):
    features, labels = fixtures.make_data(64)

    def dataset_fn(input_context, epoch):
        return tf.data.Dataset.from_tensor_slices((features, labels)).batch(6)

    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly 8 examples"):
        _fit(tmp_path, dataset_fn=dataset_fn)


def test_loss_without_batch_axis_rejected(tmp_path):
    def mean_loss(labels, logits):
        return tf.reduce_mean(fixtures.loss_fn(labels, logits))

    with pytest.raises(ValueError, match=r"loss_fn must return one value per example"):
        _fit(tmp_path, loss_fn=mean_loss)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"stage_name": "a/b"}, "Invalid stage name 'a/b'"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"checkpoint_every_steps": 0}, "checkpoint_every_steps must be a positive integer"),
    ],
)
def test_invalid_arguments_rejected(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _fit(tmp_path, **overrides)


def test_model_outside_strategy_scope_rejected(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    with pytest.raises(ValueError, match="not created in the distribution strategy's scope"):
        _fit(tmp_path, strategy=strategy)


def test_progress_bar_shown_on_request(tmp_path, capsys):
    _fit(tmp_path, epochs=1, progress=True)

    output = capsys.readouterr().out
    assert "Stage tiny, epoch 1/1" in output
    assert "4/4" in output


def test_progress_bar_hidden_without_terminal(tmp_path, capsys):
    _fit(tmp_path, epochs=1, progress=None)

    assert capsys.readouterr().out == ""


def test_evaluate_matches_numpy(tmp_path):
    keras.utils.set_random_seed(0)
    model = fixtures.make_model()
    features, labels = fixtures.make_data(13, seed=2)

    def dataset_fn(input_context):
        return tf.data.Dataset.from_tensor_slices((features, labels)).batch(4)

    metrics = training.evaluate(model, fixtures.loss_fn, dataset_fn, metrics_fn=fixtures.metrics_fn)

    logits = model(features, training=False)
    assert metrics["loss"] == pytest.approx(float(tf.reduce_mean(fixtures.loss_fn(labels, logits))), abs=1e-6)
    accuracy = float(tf.reduce_mean(fixtures.metrics_fn(labels, logits)["accuracy"]))
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_predict_keeps_order(tmp_path):
    keras.utils.set_random_seed(0)
    model = fixtures.make_model()
    features, _ = fixtures.make_data(13, seed=2)

    def dataset_fn(input_context):
        return tf.data.Dataset.from_tensor_slices(features).batch(4)

    outputs = training.predict(model, dataset_fn)

    np.testing.assert_allclose(outputs, model(features, training=False).numpy(), atol=1e-6)


def test_predict_empty_dataset_rejected():
    model = fixtures.make_model()

    def dataset_fn(input_context):
        return tf.data.Dataset.from_tensor_slices(np.zeros((0, 6), np.float32)).batch(4)

    with pytest.raises(ValueError, match="produced no examples"):
        training.predict(model, dataset_fn)


def test_replica_sync_absent_for_one_replica():
    model = fixtures.make_model()

    assert steps.build_replica_sync(model, tf.distribute.get_strategy()) is None
