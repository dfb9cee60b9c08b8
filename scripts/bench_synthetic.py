"""Measure how many in-the-wild + aligned image pairs the synthetic generator writes per second per core.

Each run generates a complete synthetic CelebA (images, annotation files) into a
temporary directory, in this process, pinned to one CPU core. The script prints the
median, min and max over the runs of two rates: pairs per second of wall-clock time
and pairs per second of CPU time used by the process. When other processes share
the core, the wall-clock rate drops and the CPU-time rate does not.

    python scripts/bench_synthetic.py --num_identities=50 --images_per_identity=10 --repeats=5
"""

import os
import platform
import statistics
import subprocess
import tempfile
import time

from absl import app, flags, logging

from lnet_anet_tf.data import synthetic

_NUM_IDENTITIES = flags.DEFINE_integer("num_identities", 50, "Identities per run.")
_IMAGES_PER_IDENTITY = flags.DEFINE_integer("images_per_identity", 10, "Images per identity.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Number of timed runs.")
_SEED = flags.DEFINE_integer("seed", 0, "Dataset seed of the first run; run i uses seed + i.")
_CORE = flags.DEFINE_integer("core", 0, "CPU core to pin the process to.")


def _cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main(argv):
    del argv
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {_CORE.value})
    pairs = _NUM_IDENTITIES.value * _IMAGES_PER_IDENTITY.value
    wall_rates, cpu_rates = [], []
    for run in range(_REPEATS.value):
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            cpu_started = time.process_time()
            synthetic.generate_celeba(
                os.path.join(directory, "celeba"),
                num_identities=_NUM_IDENTITIES.value,
                images_per_identity=_IMAGES_PER_IDENTITY.value,
                seed=_SEED.value + run,
                num_workers=1,
            )
            elapsed = time.perf_counter() - started
            cpu_elapsed = time.process_time() - cpu_started
        wall_rates.append(pairs / elapsed)
        cpu_rates.append(pairs / cpu_elapsed)
        logging.info("Run %d: %d pairs in %.2f s (%.2f s CPU).", run + 1, pairs, elapsed, cpu_elapsed)

    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"pairs per run: {pairs}, image sides 160 to 256 px, aligned 178x218, JPEG quality 90")
    for label, values in (("wall-clock", wall_rates), ("CPU-time", cpu_rates)):
        print(
            f"pairs/s/core, {label}, over {len(values)} runs: median {statistics.median(values):.1f}, "
            f"min {min(values):.1f}, max {max(values):.1f}"
        )


if __name__ == "__main__":
    app.run(main)
