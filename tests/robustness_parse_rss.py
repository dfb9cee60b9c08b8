"""Measure the peak RSS growth of `load_celeba` on annotation files with one huge line.

    python tests/robustness_parse_rss.py            # every case, as a Markdown table
    python tests/robustness_parse_rss.py COPY_DIR   # one read, as one JSON line

Each case writes a valid tiny CelebA copy and replaces the data of one annotation
file with one line of 50 MB. Files with a header (the count and header lines of
the release's text files, the CSV header) keep it and get the huge line as their
only row; the other files consist of the huge line alone. A child process then
reads the copy and reports the growth of its peak resident set size (`ru_maxrss`)
from just before `load_celeba` to just after it. The child only reads, so writing
the file does not raise the peak that it measures.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile

from lnet_anet_tf.data import celeba

import data_helpers

HUGE_LINE_BYTES = 50_000_000
SHAPES = ("digits", "integers", "words", "letters")
FILES = ("Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt", "list_bbox_celeba.csv")
# First lines kept by the files that have a header.
_HEADER_LINES = {
    "list_attr_celeba.txt": 2,
    "list_bbox_celeba.txt": 2,
    "list_landmarks_celeba.txt": 2,
    "list_landmarks_align_celeba.txt": 2,
    "list_attr_celeba.csv": 1,
    "list_bbox_celeba.csv": 1,
    "list_landmarks_align_celeba.csv": 1,
    "list_eval_partition.csv": 1,
}


def _write_huge_line(file, shape: str, size: int) -> None:
    """Write one line of `size` bytes in 1 MB pieces, so the writer itself stays small.

    Shapes: one run of digits, an image name and many " 1", an image name and many
    " ab", or one run of letters.
    """
    if shape in ("digits", "letters"):
        name, unit = b"", b"7" if shape == "digits" else b"a"
    else:
        name, unit = b"000001.jpg", b" 1" if shape == "integers" else b" ab"
    file.write(name)
    remaining = (size - len(name)) // len(unit)
    piece = unit * (1_000_000 // len(unit))
    while remaining > 0:
        count = min(remaining, len(piece) // len(unit))
        file.write(piece[: count * len(unit)])
        remaining -= count


def write_copy(directory: str, relative: str, shape: str, size: int = HUGE_LINE_BYTES) -> str:
    """Write a tiny copy whose file `relative` has one huge line; return the copy's root."""
    annotations = data_helpers.make_annotations(6)
    if relative.endswith(".csv"):
        root = data_helpers.write_csv_copy(os.path.join(directory, "copy"), annotations)
    else:
        root = data_helpers.write_release(os.path.join(directory, "copy"), annotations)
    path = os.path.join(root, relative)
    with open(path, "rb") as file:
        header = file.read().split(b"\n")[: _HEADER_LINES.get(os.path.basename(path), 0)]
    with open(path, "wb") as file:
        file.write(b"".join(line + b"\n" for line in header))
        _write_huge_line(file, shape, size)
    return root


def measure(root: str) -> dict:
    """Read the copy at `root` in a child process; return what `_measure_here` printed."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), root],
        capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    if result.returncode != 0:
        raise RuntimeError(f"The measuring process failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure_here(root: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        celeba.load_celeba(root)
        outcome, message = "parsed", ""
    except Exception as error:  # the caller checks the type
        outcome, message = type(error).__name__, str(error)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # ru_maxrss is in kilobytes on Linux.
    print(json.dumps({
        "outcome": outcome,
        "message_length": len(message),
        "message_start": message[:200],
        "rss_growth_bytes": (after - before) * 1024,
    }))


def _print_table() -> None:
    print("| file | huge line | outcome | message length | peak RSS growth | growth / file size |")
    print("| --- | --- | --- | --- | --- | --- |")
    for relative in FILES:
        for shape in SHAPES:
            with tempfile.TemporaryDirectory() as directory:
                measured = measure(write_copy(directory, relative, shape))
            growth = measured["rss_growth_bytes"]
            print(
                f"| `{relative}` | {shape} | {measured['outcome']} | {measured['message_length']} "
                f"| {growth / 1e6:.0f} MB | {growth / HUGE_LINE_BYTES:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _measure_here(sys.argv[1])
    else:
        _print_table()
