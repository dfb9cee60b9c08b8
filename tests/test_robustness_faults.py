"""Training and export under faults: SIGKILL at chosen moments, and a full disk.

Kills: the training job (`python -m lnet_anet_tf.train`, a tiny synthetic config) is
killed with SIGKILL at one moment, then the same command runs again. The rerun must
finish. It must resume only from checkpoints that the `checkpoint` state file named
at the moment of the kill, never from a torn one. It must end with the same
`evaluate/metrics.json` and per-stage metrics as one uninterrupted run, which all
kill tests share. Moments that last milliseconds (inside a checkpoint save, between
the final weights and `DONE.json`) are held open by `robustness_train_main.py`.

Full disk: a process whose file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so
that writes fail with EFBIG) is below the size of a checkpoint or of an exported
model must stop with an error that names what it failed to write. The previous
checkpoint must still restore, and the previous export must be unchanged and load.
"""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

from ai_edge_litert.interpreter import Interpreter
import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

import export_fixtures
import training_fixtures as fixtures
from lnet_anet_tf import export
from lnet_anet_tf import trained
from lnet_anet_tf.training import checkpointing
from test_train import TINY_OVERRIDES

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
STAGE_MAIN = os.path.join(TESTS_DIR, "training_stage_main.py")
PAUSING_MAIN = os.path.join(TESTS_DIR, "robustness_train_main.py")

# The tiny end-to-end config with fewer epochs: 40 to 80 s per run on the 2-core
# development machine, depending on its load.
FAULT_OVERRIDES = TINY_OVERRIDES + (
    "stages.pretrain_anet.epochs=1",
    "stages.finetune_lnet_o.epochs=2",
    "stages.finetune_lnet_s.epochs=1",
    "stages.finetune_anet.epochs=2",
    "svm.epochs=5",
)
STAGES = "pretrain_lnet,pretrain_anet,finetune_lnet_o,finetune_lnet_s,finetune_anet,fit_svm,evaluate"
CHECKPOINT_EVERY_STEPS = 5
# Stages whose DONE.json carries training metrics.
TRAINED_STAGES = ("pretrain_lnet", "pretrain_anet", "finetune_lnet_o", "finetune_lnet_s", "finetune_anet")
# Wall-clock fields, which differ between any two runs.
TIMING_KEYS = ("seconds_per_image",)
_RESUME_LINE = re.compile(r"Stage (\w+): resuming from (\S+) \(epoch (\d+), step (\d+)\)")


def _environment():
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
    environment.pop("TF_CONFIG", None)
    environment.pop("ROBUSTNESS_PAUSE", None)
    return environment


def _train_command(model_dir, cache_dir, main=None, stages=STAGES):
    """The job's command line; `main` replaces `-m lnet_anet_tf.train` with a script."""
    entry = [main] if main else ["-m", "lnet_anet_tf.train"]
    command = [
        sys.executable, *entry,
        f"--model_dir={model_dir}", f"--cache_dir={cache_dir}", "--progress=off",
        f"--stages={stages}", f"--checkpoint_every_steps={CHECKPOINT_EVERY_STEPS}",
    ]
    return command + [f"--config_override={override}" for override in FAULT_OVERRIDES]


def _run_to_end(command, log_path, cwd):
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(
            command, cwd=cwd, env=_environment(), stdout=log, stderr=subprocess.STDOUT, timeout=900
        )
    with open(log_path, encoding="utf-8") as log:
        output = log.read()
    assert result.returncode == 0, output[-4000:]
    return output


def _latest_complete(model_dir) -> dict:
    """Return stage -> the checkpoint that its state file names as the latest."""
    latest = {}
    for stage in sorted(os.listdir(model_dir)):
        checkpoint_dir = os.path.join(model_dir, stage, "checkpoints")
        if os.path.isdir(checkpoint_dir):
            latest[stage] = tf.train.latest_checkpoint(checkpoint_dir)
    return latest


def _kill_when(command, condition, log_path, cwd, model_dir, environment=None, timeout_s=600):
    """Start `command`, SIGKILL its process group once `condition()` holds.

    Returns the latest complete checkpoint of each stage in `model_dir`, read right
    after the kill.
    """
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=environment or _environment(), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not condition():
                assert process.poll() is None, f"the job ended before the kill moment; see {log_path}"
                assert time.monotonic() < deadline, f"the kill moment did not come; see {log_path}"
                time.sleep(0.01)
            os.killpg(process.pid, signal.SIGKILL)
        finally:
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return _latest_complete(model_dir)


def _state_names(stage_dir, name: str) -> bool:
    state_path = os.path.join(stage_dir, "checkpoints", "checkpoint")
    if not os.path.exists(state_path):
        return False
    with open(state_path, encoding="utf-8") as file:
        return f'model_checkpoint_path: "{name}"' in file.read()


def _without_timing(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in TIMING_KEYS}


def _stage_metrics(model_dir) -> dict:
    metrics = {}
    for stage in TRAINED_STAGES:
        with open(os.path.join(model_dir, stage, "DONE.json"), encoding="utf-8") as file:
            done = json.load(file)
        metrics[stage] = (done["metrics"], done["steps"])
    return metrics


def _evaluation_metrics(model_dir) -> dict:
    with open(os.path.join(model_dir, "evaluate", "metrics.json"), encoding="utf-8") as file:
        return _without_timing(json.load(file))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run; its synthetic dataset cache is shared with the kill tests."""
    root = tmp_path_factory.mktemp("faults")
    model_dir, cache_dir = root / "reference", root / "cache"
    _run_to_end(_train_command(model_dir, cache_dir), root / "reference.log", cwd=root)
    return {
        "root": root,
        "cache_dir": cache_dir,
        "metrics": _evaluation_metrics(model_dir),
        "stage_metrics": _stage_metrics(model_dir),
    }


def _rerun_and_compare(reference, model_dir, at_kill: dict, name: str) -> str:
    """Rerun the same command; check what it restored and its final metrics. Return its log."""
    root = reference["root"]
    output = _run_to_end(
        _train_command(model_dir, reference["cache_dir"]), root / f"{name}-rerun.log", cwd=root
    )

    for stage, path, _, _ in _RESUME_LINE.findall(output):
        assert path == at_kill.get(stage), (
            f"stage {stage} resumed from {path}, but the last complete checkpoint at the kill "
            f"was {at_kill.get(stage)}"
        )
    assert _stage_metrics(model_dir) == reference["stage_metrics"]
    assert _evaluation_metrics(model_dir) == reference["metrics"]
    return output


@pytest.mark.slow
def test_kill_mid_epoch_resumes_exactly(reference):
    model_dir = reference["root"] / "mid_epoch"
    stage_dir = model_dir / "finetune_anet"

    at_kill = _kill_when(
        _train_command(model_dir, reference["cache_dir"]),
        lambda: _state_names(stage_dir, f"ckpt-{CHECKPOINT_EVERY_STEPS}"),
        reference["root"] / "mid_epoch.log",
        cwd=reference["root"],
        model_dir=model_dir,
    )
    assert not (stage_dir / "DONE.json").exists()

    output = _rerun_and_compare(reference, model_dir, at_kill, "mid_epoch")

    [(stage, _, epoch, step)] = [line for line in _RESUME_LINE.findall(output) if line[0] == "finetune_anet"]
    done = json.loads((stage_dir / "DONE.json").read_text())
    assert int(epoch) == 0
    assert 0 < int(step) < done["steps_per_epoch"]


@pytest.mark.slow
def test_kill_during_checkpoint_save_never_restores_it(reference):
    root = reference["root"]
    model_dir = root / "during_save"
    stage_dir = model_dir / "finetune_anet"
    ready = root / "during_save.ready"
    environment = dict(_environment(), ROBUSTNESS_PAUSE=f"save:finetune_anet:2:{ready}")

    at_kill = _kill_when(
        _train_command(model_dir, reference["cache_dir"], main=PAUSING_MAIN),
        ready.exists,
        root / "during_save.log",
        cwd=root,
        model_dir=model_dir,
        environment=environment,
    )

    # The second save wrote ckpt-10, but the state file still names ckpt-5.
    torn = f"ckpt-{2 * CHECKPOINT_EVERY_STEPS}"
    assert at_kill["finetune_anet"] == str(stage_dir / "checkpoints" / f"ckpt-{CHECKPOINT_EVERY_STEPS}")
    assert (stage_dir / "checkpoints" / f"{torn}.index").exists()

    output = _rerun_and_compare(reference, model_dir, at_kill, "during_save")

    assert "of an incomplete checkpoint save" in output
    assert f"resuming from {at_kill['finetune_anet']} " in output


@pytest.mark.slow
def test_kill_between_stages_skips_finished(reference):
    model_dir = reference["root"] / "between_stages"

    at_kill = _kill_when(
        _train_command(model_dir, reference["cache_dir"]),
        (model_dir / "finetune_lnet_s" / "DONE.json").exists,
        reference["root"] / "between_stages.log",
        cwd=reference["root"],
        model_dir=model_dir,
    )

    output = _rerun_and_compare(reference, model_dir, at_kill, "between_stages")

    for stage in ("pretrain_lnet", "pretrain_anet", "finetune_lnet_o", "finetune_lnet_s"):
        assert f"Stage {stage}: skipped (already finished" in output
    assert "Stage finetune_lnet_s: resuming" not in output


@pytest.mark.slow
def test_kill_before_done_marker_finishes_stage(reference):
    root = reference["root"]
    model_dir = root / "before_done"
    stage_dir = model_dir / "finetune_lnet_o"
    ready = root / "before_done.ready"
    environment = dict(_environment(), ROBUSTNESS_PAUSE=f"done_marker:finetune_lnet_o:{ready}")

    at_kill = _kill_when(
        _train_command(model_dir, reference["cache_dir"], main=PAUSING_MAIN),
        ready.exists,
        root / "before_done.log",
        cwd=root,
        model_dir=model_dir,
        environment=environment,
    )
    assert (stage_dir / checkpointing.WEIGHTS_FILENAME).exists()
    assert not (stage_dir / "DONE.json").exists()

    output = _rerun_and_compare(reference, model_dir, at_kill, "before_done")

    # The final checkpoint is restored and the stage ends without another step.
    [(_, path, epoch, step)] = [line for line in _RESUME_LINE.findall(output) if line[0] == "finetune_lnet_o"]
    done = json.loads((stage_dir / "DONE.json").read_text())
    assert int(epoch) == done["epochs"]
    assert int(step) == done["steps"]


@pytest.mark.slow
def test_kill_during_export_reruns_export(reference):
    root = reference["root"]
    model_dir = root / "during_export"
    shutil.copytree(root / "reference", model_dir)
    base_dir = model_dir / "export" / export.SAVED_MODEL_DIR / export.MODEL_NAME
    command = _train_command(model_dir, reference["cache_dir"], stages=f"{STAGES},export")

    def saving_saved_model():
        # tf.saved_model.save has started writing into the temporary version folder.
        return base_dir.is_dir() and any(
            (base_dir / name / "model").exists() for name in os.listdir(base_dir) if name.startswith(".tmp-")
        )

    at_kill = _kill_when(command, saving_saved_model, root / "during_export.log", cwd=root, model_dir=model_dir)
    assert export.existing_versions(str(base_dir)) == []

    output = _run_to_end(command, root / "during_export-rerun.log", cwd=root)

    assert not _RESUME_LINE.findall(output), at_kill
    assert (model_dir / "export" / "DONE.json").exists()
    assert export.existing_versions(str(base_dir)) == [1]
    # The rerun removed the temporary folder that the killed export left.
    assert os.listdir(base_dir) == ["1"]
    version_dir = base_dir / "1"
    assert (version_dir / "saved_model.pb").exists()
    manifest = json.loads((model_dir / "export" / export.TFLITE_DIR / export.MANIFEST_FILENAME).read_text())
    for name in manifest["files"]:
        assert (model_dir / "export" / export.TFLITE_DIR / name).stat().st_size > 0, name
    _check_serves_like_cascade(str(version_dir), str(model_dir))
    assert _evaluation_metrics(model_dir) == reference["metrics"]


def _check_serves_like_cascade(version_dir: str, model_dir: str) -> None:
    """Check that the SavedModel returns for a photo what the model directory's cascade returns."""
    contents = tf.io.encode_jpeg(skimage.data.astronaut()).numpy()
    outputs = tf.saved_model.load(version_dir).signatures["serving_default"](
        image_bytes=tf.constant([contents])
    )
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    expected = trained.load_cascade(model_dir)(tf.cast(image, tf.float32)[tf.newaxis])

    assert outputs["valid"].numpy().tolist() == [True]
    for key in ("attribute_probabilities", "face_box", "localization_score"):
        np.testing.assert_allclose(outputs[key].numpy(), expected[key].numpy(), atol=1e-5, err_msg=key)


# ---------------------------------------------------------------------------
# A full disk during a checkpoint save and during export.


def _limit_file_size(limit_bytes: int):
    def limit():
        # Ignoring SIGXFSZ makes an oversized write fail with EFBIG instead of
        # killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return limit


def test_checkpoint_save_on_full_disk(tmp_path):
    model_dir = tmp_path / "run"
    checkpoint_dir = model_dir / "tiny" / "checkpoints"
    command = [
        sys.executable, STAGE_MAIN, f"--model_dir={model_dir}", f"--result_path={tmp_path}/result.json",
        "--checkpoint_every_steps=3", "--epochs=3", "--steps_per_epoch=4",
    ]

    # A first run stops right after its first checkpoint, at step 3.
    _kill_when(
        command + ["--delay_s=0.2"],
        lambda: _state_names(model_dir / "tiny", "ckpt-3"),
        tmp_path / "first.log",
        cwd=TESTS_DIR,
        model_dir=model_dir,
    )

    # The tiny model's checkpoint data file takes about 6.5 KB, its TensorBoard
    # events file under 3 KB; so the next checkpoint save is the first write to fail.
    result = subprocess.run(
        command, cwd=TESTS_DIR, env=_environment(), preexec_fn=_limit_file_size(4096),
        capture_output=True, text=True, timeout=300,
    )

    assert result.returncode != 0
    assert (
        f"OSError: Saving checkpoint ckpt-4 into {checkpoint_dir} failed: " in result.stderr
    ), result.stderr[-3000:]
    assert "File too large" in result.stderr
    assert f"The last complete checkpoint, {checkpoint_dir}/ckpt-3, is unchanged" in result.stderr
    assert tf.train.latest_checkpoint(str(checkpoint_dir)) == str(checkpoint_dir / "ckpt-3")
    assert not (checkpoint_dir / "ckpt-4.index").exists()
    assert not (model_dir / "tiny" / "DONE.json").exists()

    # The previous checkpoint restores into a fresh model, as a rerun would.
    model = fixtures.make_model()
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(model.trainable_variables)
    state = checkpointing.LoopState(4, 8, 3)
    checkpoint = checkpointing.StageCheckpoint(
        str(model_dir / "tiny"), model, optimizer, state, tf.distribute.get_strategy()
    )
    assert checkpoint.restore_latest() == str(checkpoint_dir / "ckpt-3")
    assert state.step == 3
    assert not (checkpoint_dir / "ckpt-4_temp").exists()


def _export_command(model_dir, export_dir, *flags):
    return [
        sys.executable, "-m", "lnet_anet_tf.export", f"--model_dir={model_dir}",
        f"--export_dir={export_dir}", *flags,
    ]


def _file_digests(directory) -> dict:
    digests = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as file:
                digests[os.path.relpath(path, directory)] = hashlib.sha256(file.read()).hexdigest()
    return digests


# The random-weight SavedModel's variables file takes about 300 KB and its TFLite
# models about 340 KB each, so both writes exceed this limit.
_EXPORT_FILE_SIZE_LIMIT = 200_000


@pytest.mark.slow
def test_saved_model_export_on_full_disk(tmp_path):
    model_dir = export_fixtures.write_model_dir(tmp_path / "run")
    export_dir = tmp_path / "export"
    first = export.export_saved_model(trained.load_cascade(model_dir), str(export_dir))
    base_dir = os.path.dirname(first)
    before = _file_digests(first)

    result = subprocess.run(
        _export_command(model_dir, export_dir, "--variants="), env=_environment(),
        preexec_fn=_limit_file_size(_EXPORT_FILE_SIZE_LIMIT), capture_output=True, text=True, timeout=300,
    )

    assert result.returncode != 0
    assert f"OSError: Writing SavedModel version 2 for {base_dir}/2 failed: " in result.stderr, result.stderr[-3000:]
    assert "File too large" in result.stderr
    assert "the existing versions [1] are unchanged" in result.stderr
    assert os.listdir(base_dir) == ["1"]
    assert _file_digests(first) == before
    _check_serves_like_cascade(first, model_dir)


@pytest.mark.slow
def test_tflite_export_on_full_disk(tmp_path):
    model_dir = export_fixtures.write_model_dir(tmp_path / "run")
    export_dir = tmp_path / "export"
    paths = export.export_all(model_dir, str(export_dir), saved_model=False, variants=("float32",))
    tflite_dir = os.path.dirname(paths["manifest"])
    before = _file_digests(tflite_dir)

    result = subprocess.run(
        _export_command(model_dir, export_dir, "--nosaved_model", "--variants=float32"),
        env=_environment(), preexec_fn=_limit_file_size(_EXPORT_FILE_SIZE_LIMIT),
        capture_output=True, text=True, timeout=300,
    )

    assert result.returncode != 0
    assert f"OSError: Writing the TFLite models for {tflite_dir} failed: " in result.stderr, result.stderr[-3000:]
    assert f"{tflite_dir} is unchanged" in result.stderr
    assert os.listdir(export_dir) == [export.TFLITE_DIR]
    assert _file_digests(tflite_dir) == before
    interpreter = Interpreter(model_path=paths["cascade_float32"])
    interpreter.allocate_tensors()
