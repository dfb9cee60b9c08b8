"""Time the CelebA reader on full-size generated annotation files.

Writes a flat CelebA copy with --rows rows (202,599 as in the release) to a temporary
folder and times `load_celeba` on it --repeats times. It prints the median wall-clock
time and the median CPU time of the process, which other processes on the machine
disturb less. The first
measurement reads the attribute file alone, the second all six annotation files, and
the third the attribute file with one malformed row under on_bad_example="skip",
which makes the reader parse that file row by row. No images are written, so the
image check does not run. The process is pinned to one
CPU core.

    python scripts/bench_parse.py --rows=202599 --repeats=5
"""

import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf.data import celeba

_ROWS = flags.DEFINE_integer("rows", 202599, "Number of image rows in each generated file.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Number of timed reads; the median is printed.")


def _write(path, lines):
    with open(path, "w") as file:
        file.write("\n".join(lines) + "\n")


def _rows(names, values, width):
    # Rows are joined from a table of padded number strings, so that 8 million values
    # are not formatted one by one.
    low = int(values.min())
    texts = [f"{value:{width}d}" for value in range(low, int(values.max()) + 1)]
    return [
        name + " " + " ".join(texts[value - low] for value in row)
        for name, row in zip(names, values.tolist())
    ]


def write_annotations(folder, num_rows, all_parts, damaged=False):
    """Write a flat CelebA copy's annotation files with random values.

    `damaged` replaces the last value of the last attribute row with "x".
    """
    rng = np.random.default_rng(0)
    names = [f"{index:06d}.jpg" for index in range(1, num_rows + 1)]
    count = str(num_rows)
    attribute_rows = _rows(names, rng.choice([-1, 1], (num_rows, attributes.NUM_ATTRIBUTES)), 2)
    if damaged:
        attribute_rows[-1] = attribute_rows[-1][:-2] + " x"
    _write(
        os.path.join(folder, "list_attr_celeba.txt"),
        [count, " ".join(attributes.ATTRIBUTE_NAMES)] + attribute_rows,
    )
    if not all_parts:
        return
    _write(
        os.path.join(folder, "list_bbox_celeba.txt"),
        [count, "image_id x_1 y_1 width height"]
        + _rows(names, rng.integers(1, 500, (num_rows, 4)), 4),
    )
    for name in ("list_landmarks_celeba.txt", "list_landmarks_align_celeba.txt"):
        _write(
            os.path.join(folder, name),
            [count, " ".join(attributes.LANDMARK_COLUMNS)]
            + _rows(names, rng.integers(0, 500, (num_rows, 10)), 4),
        )
    _write(
        os.path.join(folder, "identity_CelebA.txt"),
        _rows(names, rng.integers(1, 10178, (num_rows, 1)), 1),
    )
    _write(
        os.path.join(folder, "list_eval_partition.txt"),
        _rows(names, rng.integers(0, 3, (num_rows, 1)), 1),
    )


def time_reads(folder, repeats, on_bad_example):
    """Return the row count and the wall-clock and CPU seconds of each read."""
    wall_seconds, cpu_seconds = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        table = celeba.load_celeba(folder, on_bad_example=on_bad_example)
        wall_seconds.append(time.perf_counter() - wall_start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return len(table), wall_seconds, cpu_seconds


def main(argv):
    del argv
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    cases = (
        ("list_attr_celeba.txt alone", False, False),
        ("all six annotation files", True, False),
        ("list_attr_celeba.txt with one malformed row, skipped", False, True),
    )
    for description, all_parts, damaged in cases:
        with tempfile.TemporaryDirectory() as folder:
            write_annotations(folder, _ROWS.value, all_parts, damaged)
            on_bad_example = "skip" if damaged else "error"
            rows, wall_seconds, cpu_seconds = time_reads(folder, _REPEATS.value, on_bad_example)
        print(
            f"{description}: {rows} rows, {len(wall_seconds)} reads, median wall "
            f"{statistics.median(wall_seconds):.3f} s (min {min(wall_seconds):.3f} s, max "
            f"{max(wall_seconds):.3f} s), median CPU {statistics.median(cpu_seconds):.3f} s"
        )


if __name__ == "__main__":
    app.run(main)
