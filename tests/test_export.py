"""Tests for the SavedModel export: signatures, bad inputs, versions, atomic writes."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

import export_fixtures
import robustness_image_rss
from lnet_anet_tf import attributes
from lnet_anet_tf import export
from lnet_anet_tf import trained

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
SERVING_OUTPUTS = {"attribute_probabilities", "face_box", "localization_score", "valid"}


def encode(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()


def run_python(script: str, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_fixtures.write_model_dir(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def cascade(model_dir):
    return trained.load_cascade(model_dir)


@pytest.fixture(scope="module")
def version_dir(cascade, tmp_path_factory):
    return export.export_saved_model(cascade, str(tmp_path_factory.mktemp("export")))


@pytest.fixture(scope="module")
def loaded(version_dir):
    return tf.saved_model.load(version_dir)


@pytest.fixture(scope="module")
def astronaut_jpeg():
    return encode(skimage.data.astronaut(), "JPEG")


def reference(cascade, contents: bytes) -> dict:
    """The cascade's outputs on one encoded image, decoded as the SavedModel decodes it."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    outputs = cascade(tf.cast(image, tf.float32)[tf.newaxis])
    return {key: value.numpy()[0] for key, value in outputs.items()}


# Layout and signatures.


def test_export_writes_first_version(version_dir):
    assert os.path.basename(version_dir) == "1"
    assert os.path.exists(os.path.join(version_dir, "saved_model.pb"))
    names_path = os.path.join(version_dir, "assets", export.ATTRIBUTE_NAMES_FILENAME)
    with open(names_path, encoding="utf-8") as file:
        assert tuple(file.read().split()) == attributes.ATTRIBUTE_NAMES
    leftovers = [name for name in os.listdir(os.path.dirname(version_dir)) if name != "1"]
    assert leftovers == []


def test_saved_model_cli_show_lists_signatures(version_dir):
    result = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", version_dir, "--all"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    sections = {
        name: text.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
        for name in ("serving_default", "predict_images", "predict_details", "attribute_names")
    }

    serving = sections["serving_default"]
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in serving
    expected_outputs = {
        "attribute_probabilities": ("DT_FLOAT", "(-1, 40)"),
        "face_box": ("DT_FLOAT", "(-1, 4)"),
        "localization_score": ("DT_FLOAT", "(-1)"),
        "valid": ("DT_BOOL", "(-1)"),
    }
    for section in ("serving_default", "predict_images"):
        for name, (dtype, shape) in expected_outputs.items():
            block = f"outputs['{name}'] tensor_info:\n        dtype: {dtype}\n        shape: {shape}"
            assert block in sections[section], (section, name)

    images_input = "inputs['images'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, -1, -1, 3)"
    assert images_input in sections["predict_images"]
    assert "outputs['lnet_o_response']" in sections["predict_details"]
    assert "outputs['attribute_names'] tensor_info:\n        dtype: DT_STRING\n        shape: (40)" in sections["attribute_names"]


def test_saved_model_cli_run_on_photo(version_dir, cascade, astronaut_jpeg, tmp_path):
    inputs_path = tmp_path / "image_bytes.npy"
    np.save(inputs_path, np.array([astronaut_jpeg], dtype=np.bytes_))
    out_dir = tmp_path / "outputs"

    result = subprocess.run(
        [
            SAVED_MODEL_CLI, "run", "--dir", version_dir, "--tag_set", "serve",
            "--signature_def", "serving_default",
            "--inputs", f"image_bytes={inputs_path}", "--outdir", str(out_dir),
        ],
        capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {name: np.load(out_dir / f"{name}.npy") for name in SERVING_OUTPUTS}
    expected = reference(cascade, astronaut_jpeg)
    assert outputs["valid"].tolist() == [True]
    np.testing.assert_allclose(
        outputs["attribute_probabilities"][0], expected["attribute_probabilities"], atol=1e-5
    )
    np.testing.assert_allclose(outputs["face_box"][0], expected["face_box"], atol=1e-5)


# A client that does not import lnet_anet_tf loads the export in a fresh process.
_FRESH_CLIENT = """
import sys
import numpy as np
import tensorflow as tf

version_dir, image_path, output_path = sys.argv[1:]
model = tf.saved_model.load(version_dir)
with open(image_path, "rb") as file:
    contents = file.read()
serving = model.signatures["serving_default"](image_bytes=tf.constant([contents]))
image = tf.io.decode_image(contents, channels=3, expand_animations=False)
images = model.signatures["predict_images"](images=tf.cast(image, tf.float32)[tf.newaxis])
names = model.signatures["attribute_names"]()["attribute_names"].numpy()
arrays = {f"serving_{key}": value.numpy() for key, value in serving.items()}
arrays.update({f"images_{key}": value.numpy() for key, value in images.items()})
arrays["names"] = np.array([name.decode() for name in names])
np.savez(output_path, **arrays)
assert not any(name.startswith("lnet_anet_tf") for name in sys.modules), "imported lnet_anet_tf"
"""


def test_fresh_process_matches_cascade(version_dir, cascade, astronaut_jpeg, tmp_path):
    image_path = tmp_path / "astronaut.jpg"
    image_path.write_bytes(astronaut_jpeg)
    output_path = tmp_path / "outputs.npz"

    result = run_python(_FRESH_CLIENT, version_dir, str(image_path), str(output_path))

    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(output_path)
    expected = reference(cascade, astronaut_jpeg)
    assert tuple(outputs["names"]) == attributes.ATTRIBUTE_NAMES
    for prefix in ("serving", "images"):
        assert outputs[f"{prefix}_valid"].tolist() == [True]
        for name in ("attribute_probabilities", "face_box", "localization_score"):
            np.testing.assert_allclose(
                outputs[f"{prefix}_{name}"][0], expected[name], atol=1e-5, err_msg=f"{prefix} {name}"
            )


# Bad and mixed inputs.


def test_bad_items_do_not_fail_batch(loaded, cascade, astronaut_jpeg):
    photo = skimage.data.astronaut()
    png = encode(photo[:200, 100:400], "PNG")
    gray = encode(skimage.data.camera()[::4, ::4], "PNG")
    batch = [
        astronaut_jpeg,
        b"",
        b"this is not an image",
        astronaut_jpeg[: len(astronaut_jpeg) // 2],
        png,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        gray,
    ]

    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(batch))

    valid = outputs["valid"].numpy().tolist()
    assert valid == [True, False, False, False, True, False, True]
    for index, contents in enumerate(batch):
        probabilities = outputs["attribute_probabilities"][index].numpy()
        box = outputs["face_box"][index].numpy()
        if not valid[index]:
            assert not probabilities.any(), index
            assert not box.any(), index
            continue
        expected = reference(cascade, contents)
        np.testing.assert_allclose(probabilities, expected["attribute_probabilities"], atol=1e-5)
        np.testing.assert_allclose(box, expected["face_box"], atol=1e-5)


def test_oversized_header_is_invalid(cascade, tmp_path):
    png = encode(skimage.data.astronaut()[:64, :64], "PNG")
    webp_bomb = robustness_image_rss.lossless_bomb()  # 34 bytes, 16383x16383 pixels
    module = export.serving.ServingModule(cascade, str(tmp_path / "names.txt"), max_pixels=32 * 32)
    outputs = module.serve_image_bytes(
        tf.constant([png, webp_bomb, encode(np.zeros((8, 8, 3), np.uint8), "PNG")])
    )
    assert outputs["valid"].numpy().tolist() == [False, False, True]


def test_empty_batch(loaded):
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    assert outputs["attribute_probabilities"].shape == (0, 40)
    assert outputs["valid"].shape == (0,)


def test_predict_images_matches_cascade(loaded, cascade):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 70, 110, 3)).astype(np.float32)
    outputs = loaded.signatures["predict_images"](images=tf.constant(images))
    expected = cascade(images)
    assert outputs["valid"].numpy().tolist() == [True, True]
    for name in ("attribute_probabilities", "face_box", "localization_score"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5, err_msg=name)


def test_rest_request_body_runs(loaded, cascade, astronaut_jpeg):
    lfw_face = (skimage.data.lfw_subset()[0] * 255).astype(np.uint8)
    lfw_face = np.array(Image.fromarray(lfw_face).resize((100, 100), Image.BICUBIC).convert("RGB"))
    images = [astronaut_jpeg, encode(lfw_face, "PNG")]
    body = json.dumps(
        {"instances": [{"image_bytes": {"b64": base64.b64encode(data).decode("ascii")}} for data in images]}
    )

    # TF Serving's row format: one dict per instance, {"b64": ...} decoded to
    # bytes, the instances stacked into one batch per input name.
    request = json.loads(body)
    batch = [base64.b64decode(instance["image_bytes"]["b64"]) for instance in request["instances"]]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(batch))
    predictions = [
        {name: outputs[name][index].numpy().tolist() for name in SERVING_OUTPUTS}
        for index in range(len(batch))
    ]
    response = json.loads(json.dumps({"predictions": predictions}))

    assert len(response["predictions"]) == 2
    for contents, prediction in zip(images, response["predictions"]):
        expected = reference(cascade, contents)
        assert prediction["valid"] is True
        np.testing.assert_allclose(
            prediction["attribute_probabilities"], expected["attribute_probabilities"], atol=1e-5
        )


def test_predict_details_reports_image_size(loaded, astronaut_jpeg):
    outputs = loaded.signatures["predict_details"](image_bytes=tf.constant([astronaut_jpeg, b""]))
    assert outputs["image_size"].numpy().tolist() == [[512, 512], [0, 0]]
    assert outputs["lnet_o_response"].shape[0] == 2


# Versions and atomic writes.


def test_versions_increment_and_never_overwrite(cascade, tmp_path):
    export_dir = str(tmp_path)
    first = export.export_saved_model(cascade, export_dir)
    second = export.export_saved_model(cascade, export_dir)
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    assert export.existing_versions(export.saved_model_base(export_dir)) == [1, 2]

    with pytest.raises(FileExistsError, match="already exists"):
        export.export_saved_model(cascade, export_dir, version=2)
    seventh = export.export_saved_model(cascade, export_dir, version=7)
    assert os.path.basename(seventh) == "7"
    assert export.next_version(export.saved_model_base(export_dir)) == 8


def test_export_rejects_nonpositive_version(cascade, tmp_path):
    with pytest.raises(ValueError, match="positive integer"):
        export.export_saved_model(cascade, str(tmp_path), version=0)


def test_failed_save_leaves_no_version(cascade, tmp_path, monkeypatch):
    def save_half_then_fail(obj, path, signatures=None):
        os.makedirs(os.path.join(path, "variables"))
        with open(os.path.join(path, "saved_model.pb"), "wb") as file:
            file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(cascade, str(tmp_path))

    base = export.saved_model_base(str(tmp_path))
    assert os.listdir(base) == []


# Keeps a staging folder locked, as an export does while it writes, until the process ends.
_HOLD_STAGING_FOLDER = """
import sys, time
from lnet_anet_tf import export_staging
with export_staging.staging_folder(sys.argv[1], sys.argv[2]) as folder:
    print(folder, flush=True)
    time.sleep(600)
"""


def _start_writer(parent, tag: str):
    """Start a process that keeps a locked staging folder in `parent`; return it and the folder."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD_STAGING_FOLDER, str(parent), tag],
        stdout=subprocess.PIPE, text=True,
    )
    folder = process.stdout.readline().strip()
    assert os.path.isdir(folder), folder
    return process, folder


def test_export_removes_staging_of_killed_writer(cascade, tmp_path):
    export_dir = tmp_path / "export"
    base = export.saved_model_base(str(export_dir))
    killed, killed_folder = _start_writer(base, "1")
    os.makedirs(os.path.join(killed_folder, "model", "variables"))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    live, live_folder = _start_writer(base, "1")
    try:
        version_dir = export.export_saved_model(cascade, str(export_dir))

        assert version_dir == os.path.join(base, "1")
        assert not os.path.exists(killed_folder)
        assert os.path.exists(os.path.join(live_folder, export.export_staging.LOCK_FILENAME))
        assert sorted(os.listdir(base)) == sorted(["1", os.path.basename(live_folder)])
    finally:
        live.kill()
        live.wait()
    # Once its writer is gone, the folder that was kept is stale too.
    assert export.export_staging.remove_stale(base, "[0-9]+") == [live_folder]


def test_tflite_export_removes_stale_staging(cascade, model_dir, tmp_path):
    export_dir = tmp_path / "export"
    killed, killed_folder = _start_writer(export_dir, "tflite")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    first = export.export_tflite(cascade, model_dir, str(export_dir), None, variants=[])

    second = export.export_tflite(cascade, model_dir, str(export_dir), None, variants=[])

    assert not os.path.exists(killed_folder)
    assert second == first
    assert os.listdir(export_dir) == [export.TFLITE_DIR]
    assert sorted(os.listdir(export_dir / export.TFLITE_DIR)) == ["labels.txt", export.MANIFEST_FILENAME]


def _make_folder(parent, name: str, age_seconds: float = 0.0) -> str:
    path = os.path.join(str(parent), name)
    os.makedirs(path)
    if age_seconds:
        changed = time.time() - age_seconds
        os.utime(path, (changed, changed))
    return path


def test_remove_stale_keeps_what_it_does_not_own(tmp_path):
    staging = export.export_staging
    hour = 3600.0
    unlocked_old = _make_folder(tmp_path, ".tmp-tflite-abc123", age_seconds=hour)
    legacy_backup = _make_folder(tmp_path, ".tmp-old-zz_9", age_seconds=hour)
    kept = [
        _make_folder(tmp_path, ".tmp-tflite-new456"),  # no lock file yet, but just created
        _make_folder(tmp_path, ".tmp-other-abc123", age_seconds=hour),
        _make_folder(tmp_path, ".tmp-tflite-ABC123", age_seconds=hour),
        _make_folder(tmp_path, "tflite", age_seconds=hour),
        _make_folder(tmp_path, ".tmp-tflite-", age_seconds=hour),
    ]
    (tmp_path / ".tmp-tflite-file1").write_bytes(b"a file, not a folder")
    outside = _make_folder(tmp_path / "outside", "data", age_seconds=hour)
    os.symlink(outside, tmp_path / ".tmp-tflite-link1")

    removed = staging.remove_stale(str(tmp_path), "tflite|old")

    assert removed == [legacy_backup, unlocked_old]
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(path) for path in kept] + [".tmp-tflite-file1", ".tmp-tflite-link1", "outside"]
    )
    assert os.path.isdir(outside)
    assert staging.remove_stale(str(tmp_path / "missing"), "tflite") == []


EXPORT_COMMAND = [sys.executable, "-m", "lnet_anet_tf.export"]


@pytest.mark.slow
def test_killed_export_leaves_no_version(model_dir, tmp_path):
    export_dir = str(tmp_path / "export")
    base = export.saved_model_base(export_dir)
    process = subprocess.Popen(
        [*EXPORT_COMMAND, f"--model_dir={model_dir}",
         f"--export_dir={export_dir}", "--variants="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # Kill it once the SavedModel has started to appear in the temporary folder.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        partial = [
            os.path.join(base, name, "model")
            for name in (os.listdir(base) if os.path.isdir(base) else [])
            if name.startswith(".tmp-")
        ]
        if any(os.path.exists(path) for path in partial):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the export finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert export.existing_versions(base) == []


def test_cli_exports_saved_model_only(model_dir, tmp_path):
    export_dir = tmp_path / "export"
    result = subprocess.run(
        [*EXPORT_COMMAND, f"--model_dir={model_dir}", f"--export_dir={export_dir}", "--variants="],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paths = json.loads(result.stdout)
    assert paths == {"saved_model": str(export_dir / "saved_model" / "lnet_anet" / "1")}
    assert not (export_dir / "tflite").exists()


def test_cli_rejects_unknown_variant(model_dir, tmp_path):
    result = subprocess.run(
        [*EXPORT_COMMAND, f"--model_dir={model_dir}", f"--export_dir={tmp_path}", "--variants=int4"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "Unknown --variants int4" in result.stderr


def test_load_table_needs_run_info(model_dir):
    with pytest.raises(FileNotFoundError, match="--data_dir"):
        export.load_table(model_dir)
