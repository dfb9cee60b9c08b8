"""Machine facts, library versions, timing and child processes shared by the groups."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence

SCRIPTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)

# Distribution names whose versions the report lists, in this order.
LIBRARIES = ("tensorflow", "keras", "tf_keras", "ai-edge-litert", "numpy")


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, else from lscpu, else platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    """Return the machine's total memory in GiB from /proc/meminfo, or None."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_info() -> dict:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib(),
        "system": f"{platform.system()} {platform.release()}",
    }


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def time_runs(
    run: Callable[[], int], runs: int, warmup: int = 1, budget_s: float | None = None
) -> dict:
    """Call `run` `warmup` times untimed, then `runs` times; return rates in items per second.

    With `budget_s`, the timed calls stop early once they have taken that many
    seconds together, after at least one call. "runs" in the result is the count
    that ran. The budget keeps a very slow option, such as float16 on a CPU
    without float16 kernels, from taking minutes.

    `run` does one measured unit of work and returns how many items (examples,
    images) it processed. The result has the median, minimum and maximum rate in
    wall-clock time, the median wall-clock seconds of one call, and the median CPU
    seconds per item. CPU time is that of the whole process, all threads included,
    so it counts core-seconds and grows less than wall-clock time when other
    processes share the cores.
    """
    for _ in range(warmup):
        run()
    rates, seconds, cpu_per_item = [], [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        items = run()
        elapsed = time.perf_counter() - start
        rates.append(items / elapsed)
        seconds.append(elapsed)
        cpu_per_item.append((time.process_time() - cpu_start) / items)
        if budget_s is not None and sum(seconds) >= budget_s:
            break
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "median_seconds": statistics.median(seconds),
        "cpu_seconds_per_item": statistics.median(cpu_per_item),
        "runs": len(rates),
    }


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (VmHWM, Linux only).

    VmHWM belongs to the address space, so a child started with exec reports only
    its own peak, unlike ru_maxrss, which Linux carries over from the parent.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM is missing from /proc/self/status; peak RSS needs Linux.")


def run_child(module: str, spec: dict, timeout_s: float = 900) -> dict:
    """Run `python -m benchmarks.<module> <spec as JSON>` and return the JSON it prints last.

    Measurements run in a child process when they need a fresh TensorFlow (device
    setup happens once per process) or their own peak memory.
    """
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [SCRIPTS_DIR, REPO_ROOT] + [p for p in [environment.get("PYTHONPATH")] if p]
    )
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, "-m", f"benchmarks.{module}", json.dumps(spec)]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"Child benchmark {module} timed out after {timeout_s:.0f} s with spec {spec}."
        ) from None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"Child benchmark {module} failed with exit code {result.returncode} for spec "
            f"{spec}. Its last output:\n{result.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def run_script(arguments: Sequence[str], timeout_s: float = 1800) -> str:
    """Run a Python script of the repository with `arguments`; return its standard output."""
    command = [sys.executable] + list(arguments)
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO_ROOT, env=environment,
            timeout=timeout_s, check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(command)} timed out after {timeout_s:.0f} s.") from None
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed with exit code {result.returncode}:\n"
            f"{result.stderr[-3000:]}"
        )
    return result.stdout


# --quick: narrow layers at the demo input sizes, so every model builds, traces and
# converts in seconds.
QUICK_OVERRIDES = (
    "lnet_o.conv_filters=(8, 8, 8, 8, 8)",
    "lnet_o.fc_units=(16, 16)",
    "lnet_s.conv_filters=(8, 8, 8, 8, 8)",
    "lnet_s.fc_units=(16, 16)",
    "anet.conv_filters=(8, 8, 8, 8)",
    "anet.feature_units=16",
)
QUICK_BATCH_SIZE = 8


def benchmark_config(preset: str, quick: bool):
    """Return the config of `preset`, shrunk by `QUICK_OVERRIDES` and smaller batches when quick."""
    import dataclasses

    from lnet_anet_tf import config as config_lib

    config = config_lib.get_config(preset)
    if not quick:
        return config
    for assignment in QUICK_OVERRIDES:
        config = config_lib.override(config, assignment)
    stages = {
        name: dataclasses.replace(stage, batch_size=min(stage.batch_size, QUICK_BATCH_SIZE), epochs=1)
        for name, stage in config.stages.items()
    }
    return dataclasses.replace(config, stages=stages)
