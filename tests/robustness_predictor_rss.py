"""Run the predictor on folders of small images with 5% invalid files, and measure its memory.

    python tests/robustness_predictor_rss.py --counts=100,1000

Builds a random-weight model directory (`export_fixtures`) and exports its
SavedModel. For each count it writes a folder of 64x64 JPEG and PNG files, every
20th one invalid, and runs `python -m lnet_anet_tf.predict FOLDER
--model=SAVED_MODEL` on it in a new process. It prints one Markdown table row per
folder: files, JSON lines, error lines, exit code and the process's peak resident
set size (`ru_maxrss` from `os.wait4`, so each run is measured alone).
"""

import io
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image

INVALID_EVERY = 20  # 5% of the files
SIDE = 64


def encode(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def photos(count: int, side: int, seed: int = 0) -> list:
    """Return `count` distinct smooth images, JPEG at even positions and PNG at odd ones."""
    rng = np.random.default_rng(seed)
    encoded = []
    for index in range(count):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        pixels = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BILINEAR))
        encoded.append(encode(pixels, "JPEG" if index % 2 == 0 else "PNG"))
    return encoded


def invalid_images(valid: bytes) -> list:
    """Return undecodable files: empty, text, truncated, and headers without image data."""
    return [
        b"",
        b"this is not an image",
        valid[: len(valid) // 2],
        b"\x89PNG\r\n\x1a\n" + bytes(40),
        b"\xff\xd8\xff" + bytes(100),
    ]


def write_folder(directory: str, count: int) -> tuple[list, list]:
    """Write `count` 64x64 images, every 20th one invalid; return (valid, invalid) paths."""
    os.makedirs(directory, exist_ok=True)
    valid_contents = photos(10, SIDE, seed=2)
    invalid_contents = invalid_images(valid_contents[0])
    valid, invalid = [], []
    for index in range(count):
        if index % INVALID_EVERY == INVALID_EVERY - 1:
            path = os.path.join(directory, f"{index:05d}.jpg")
            contents = invalid_contents[(index // INVALID_EVERY) % len(invalid_contents)]
            invalid.append(path)
        else:
            extension = ".jpg" if index % 2 == 0 else ".png"
            path = os.path.join(directory, f"{index:05d}{extension}")
            contents = valid_contents[(index % 5) * 2 + (0 if extension == ".jpg" else 1)]
            valid.append(path)
        with open(path, "wb") as file:
            file.write(contents)
    return valid, invalid


def run_predictor(paths, model_path: str, output_dir: str, *options: str) -> dict:
    """Run the predictor on `paths`; return its exit code, JSON lines, error lines and peak RSS."""
    os.makedirs(output_dir, exist_ok=True)
    stdout_path = os.path.join(output_dir, "stdout.txt")
    stderr_path = os.path.join(output_dir, "stderr.txt")
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "lnet_anet_tf.predict", *map(str, paths), f"--model={model_path}"]
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command + list(options), stdout=stdout, stderr=stderr, env=environment)
        # wait4 returns this child's own resource usage, unlike RUSAGE_CHILDREN.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    with open(stdout_path, encoding="utf-8") as file:
        records = [json.loads(line) for line in file if line.strip()]
    with open(stderr_path, encoding="utf-8") as file:
        errors = [line.rstrip("\n") for line in file if line.startswith("error: ")]
    return {
        "returncode": process.returncode,
        "records": records,
        "errors": errors,
        # ru_maxrss is in kilobytes on Linux.
        "peak_rss_bytes": usage.ru_maxrss * 1024,
    }


def export_random_model(directory: str) -> str:
    """Write a random-weight model directory and export it; return the SavedModel version folder."""
    import export_fixtures
    from lnet_anet_tf import export
    from lnet_anet_tf import trained

    model_dir = export_fixtures.write_model_dir(os.path.join(directory, "run"))
    cascade = trained.load_cascade(model_dir)
    return export.export_saved_model(cascade, os.path.join(directory, "export"))


FLAGS = flags.FLAGS
flags.DEFINE_list("counts", ["100", "1000"], "Folder sizes to run the predictor on.")


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as directory:
        version_dir = export_random_model(directory)
        print("| files | invalid | JSON lines | error lines | exit code | peak RSS |")
        print("| --- | --- | --- | --- | --- | --- |")
        for count in map(int, FLAGS.counts):
            folder = os.path.join(directory, f"photos_{count}")
            valid, invalid = write_folder(folder, count)
            result = run_predictor([folder], version_dir, os.path.join(directory, f"run_{count}"))
            print(
                f"| {count} | {len(invalid)} | {len(result['records'])} | {len(result['errors'])} "
                f"| {result['returncode']} | {result['peak_rss_bytes'] / 2**20:.1f} MiB |",
                flush=True,
            )


if __name__ == "__main__":
    app.run(main)
