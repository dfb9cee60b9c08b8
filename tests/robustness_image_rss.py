"""Measure the peak RSS growth of loading WebP decompression bombs with `load_images`.

    python tests/robustness_image_rss.py          # every case, as a Markdown table
    python tests/robustness_image_rss.py FILE     # one load, as one JSON line

A solid-color lossless WebP stores its size in 4 header bytes, and its pixel data
stays 34 bytes long whatever that size is. Writing 16383x16383 into the header of
a small one gives a valid file that decodes to 268 megapixels (805 MB as RGB), a
real decompression bomb. A child process loads one file with
`on_bad_example="skip"` and reports the growth of its peak resident set size
(`ru_maxrss`) from just before the load to just after it. It first loads a small
valid WebP the same way, so that building the pipeline is not counted.
"""

import io
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile

from PIL import Image

# The largest side that a 'VP8L' header can store (14 bits of side - 1).
MAX_LOSSLESS_SIDE = 16384
BOMB_SIDE = 16383


def solid_lossless_webp(side: int = 16) -> bytes:
    """Return a black lossless WebP of side x side pixels, encoded by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def with_lossless_size(contents: bytes, width: int, height: int) -> bytes:
    """Rewrite the size in the header of a simple lossless WebP, keeping the other bits.

    The 32 bits after the 'VP8L' signature byte (file offset 20) hold width - 1 and
    height - 1 in 14 bits each, then the alpha bit and the 3-bit version.
    """
    bits = int.from_bytes(contents[21:25], "little")
    size_mask = (1 << 28) - 1
    bits = (bits & ~size_mask) | (width - 1) | ((height - 1) << 14)
    return contents[:21] + bits.to_bytes(4, "little") + contents[25:]


def lossless_bomb(side: int = BOMB_SIDE) -> bytes:
    """Return a valid lossless WebP of side x side black pixels in 34 bytes."""
    return with_lossless_size(solid_lossless_webp(), side, side)


def measure(path: str) -> dict:
    """Load the file at `path` in a child process; return what `_measure_here` printed."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), path],
        capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.abspath(__file__)),
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    if result.returncode != 0:
        raise RuntimeError(f"The measuring process failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _load(path: str) -> tuple[int, list]:
    """Load one file with on_bad_example="skip"; return the example count and the warnings."""
    import tensorflow as tf

    from lnet_anet_tf.data import images

    handler = _RecordingHandler()
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(handler)
    try:
        dataset = images.load_images(
            tf.data.Dataset.from_tensor_slices({"path": [path]}), on_bad_example="skip"
        )
        count = sum(1 for _ in dataset)
    finally:
        absl_logger.removeHandler(handler)
    return count, handler.messages


class _RecordingHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _measure_here(path: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        warm_up = os.path.join(directory, "small.webp")
        with open(warm_up, "wb") as file:
            file.write(solid_lossless_webp())
        _load(warm_up)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count, warnings = _load(path)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # ru_maxrss is in kilobytes on Linux.
    print(json.dumps({
        "examples": count,
        "warnings": warnings,
        "rss_growth_bytes": (after - before) * 1024,
    }))


def _print_table() -> None:
    print("| file | bytes | header size | examples | peak RSS growth |")
    print("| --- | --- | --- | --- | --- |")
    cases = [
        ("lossless WebP, 16x16", solid_lossless_webp(), "16x16"),
        (f"lossless WebP bomb, {BOMB_SIDE}x{BOMB_SIDE}", lossless_bomb(), f"{BOMB_SIDE}x{BOMB_SIDE}"),
    ]
    for name, contents, size in cases:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "image.webp")
            with open(path, "wb") as file:
                file.write(contents)
            measured = measure(path)
        print(
            f"| {name} | {len(contents)} | {size} | {measured['examples']} "
            f"| {measured['rss_growth_bytes'] / 2**20:.1f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _measure_here(sys.argv[1])
    else:
        _print_table()
