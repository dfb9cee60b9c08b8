"""Benchmark LocallyConnected2D against tf_keras.layers.LocallyConnected2D.

For each locally shared or locally connected layer of ANet in the chosen presets,
times one forward + backward step (gradients with respect to the input and every
weight, inside a tf.function) of:

- `ours`: lnet_anet_tf.layers.LocallyConnected2D with ANet's share size;
- `ours_unshared`: the same with share_size=(1, 1), when ANet's is larger, so it
  has as many weights as the tf_keras layers;
- `tf_keras_1`, `tf_keras_2`, `tf_keras_3`: tf_keras's three implementations,
  which only exist unshared.

Timing runs every implementation in this process, interleaved round by round so
that load from other processes affects all of them alike, and reports the median.
Peak memory runs each implementation again in its own subprocess and reports the
subprocess's peak resident set size (VmHWM in /proc/self/status, Linux only)
before the layer is built and after the timed steps. The difference is the
memory that the layer's weights, activations and gradients added. Implementations whose weights would not fit the limits set
by --max_dense_gib and --max_sparse_entries are skipped and reported as such.

    python scripts/bench_locally_connected.py --presets=paper,demo --batch_size=32
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

IMPLEMENTATIONS = ("ours", "ours_unshared", "tf_keras_1", "tf_keras_2", "tf_keras_3")
# Not a layer: only the batched matmul of `ours` and its two gradient matmuls, on
# patches that are already extracted. A lower bound for any implementation that
# multiplies per-region weight matrices, timed but not measured for memory.
MATMUL_ONLY = "matmul_only"

flags.DEFINE_list("presets", ["paper", "demo"], "Config presets whose ANet layers are timed.")
flags.DEFINE_integer("batch_size", 32, "Batch size of the timed steps.")
flags.DEFINE_integer("repeats", 10, "Timed steps per implementation; the median is reported.")
flags.DEFINE_integer("warmup", 2, "Untimed steps per implementation before timing.")
flags.DEFINE_float(
    "max_dense_gib", 4.0, "Skip tf_keras implementation=2 when its dense kernel exceeds this (GiB)."
)
flags.DEFINE_integer(
    "max_sparse_entries",
    12_000_000,
    "Skip tf_keras implementation=3 when its sparse kernel has more entries than this; "
    "it builds a Python list of every index.",
)
flags.DEFINE_list(
    "implementations",
    list(IMPLEMENTATIONS),
    f"Implementations to run, from {', '.join(IMPLEMENTATIONS)}; {MATMUL_ONLY} always runs.",
)
flags.DEFINE_bool("measure_memory", True, "Also measure peak RSS, one subprocess each.")
flags.DEFINE_string("output_json", None, "Also write the results to this JSON file.")
flags.DEFINE_string("child", None, "Internal: JSON case and implementation to measure memory of.")


def anet_cases(preset: str, batch_size: int) -> list[dict]:
    """Return the LocallyConnected2D layers of `preset`'s ANet as benchmark cases."""
    from lnet_anet_tf.config import get_config
    from lnet_anet_tf.layers import LocallyConnected2D
    from lnet_anet_tf.models import build_anet

    model = build_anet(get_config(preset).anet, num_outputs=2)
    cases = []
    for layer in model.layers:
        if not isinstance(layer, LocallyConnected2D):
            continue
        cases.append(
            {
                "preset": preset,
                "layer": layer.name,
                "input_shape": [batch_size] + list(layer.input.shape[1:]),
                "output_shape": list(layer.output.shape[1:]),
                "filters": layer.filters,
                "kernel_size": list(layer.kernel_size),
                "strides": list(layer.strides),
                "padding": layer.padding,
                "share_size": list(layer.effective_share_size),
            }
        )
    return cases


def skip_reason(case: dict, implementation: str) -> str | None:
    """Return why `implementation` is not run for `case`, or None to run it."""
    _, rows, cols, channels = case["input_shape"]
    out_rows, out_cols, filters = case["output_shape"]
    if implementation == "ours_unshared" and case["share_size"] == [1, 1]:
        return "same as ours"
    if implementation == "tf_keras_2":
        gib = rows * cols * channels * out_rows * out_cols * filters * 4 / 2**30
        if gib > FLAGS.max_dense_gib:
            return f"dense kernel needs {gib:.1f} GiB (> --max_dense_gib)"
    if implementation == "tf_keras_3":
        kernel_rows, kernel_cols = case["kernel_size"]
        entries = out_rows * out_cols * filters * kernel_rows * kernel_cols * channels
        if entries > FLAGS.max_sparse_entries:
            return f"sparse kernel has {entries:,} entries (> --max_sparse_entries)"
    return None


def build_step(case: dict, implementation: str):
    """Return (step, inputs): a tf.function computing the loss and all gradients of one step."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from lnet_anet_tf.layers import LocallyConnected2D

    if implementation == MATMUL_ONLY:
        return _build_matmul_step(case)
    common = dict(strides=case["strides"], padding=case["padding"])
    if implementation.startswith("ours"):
        share_size = case["share_size"] if implementation == "ours" else (1, 1)
        layer = LocallyConnected2D(
            case["filters"], case["kernel_size"], share_size=share_size, **common
        )
    else:
        layer = tf_keras.layers.LocallyConnected2D(
            case["filters"],
            case["kernel_size"],
            implementation=int(implementation[-1]),
            **common,
        )
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.standard_normal(case["input_shape"]).astype(np.float32))
    layer(inputs[:1])
    upstream = tf.constant(
        rng.standard_normal([case["input_shape"][0]] + case["output_shape"]).astype(np.float32)
    )

    # The step returns the loss as well as the gradients. Without it, TensorFlow
    # prunes the forward matmul, because the layer has no activation and the
    # gradients of this loss do not depend on its output. Only the backward pass
    # would be timed.
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * upstream)
        return loss, tape.gradient(loss, [x] + layer.trainable_variables)

    return step, inputs


def _build_matmul_step(case: dict):
    import tensorflow as tf

    from lnet_anet_tf.layers import LocallyConnected2D

    layer = LocallyConnected2D(case["filters"], case["kernel_size"], share_size=case["share_size"])
    layer.build(case["input_shape"])
    regions, patch_size, filters = layer.kernel.shape
    rows_per_region = case["input_shape"][0] * case["share_size"][0] * case["share_size"][1]
    patches = tf.random.normal((regions, rows_per_region, patch_size), seed=0)
    upstream = tf.random.normal((regions, rows_per_region, filters), seed=1)
    kernel = tf.Variable(tf.random.normal(layer.kernel.shape, stddev=0.01, seed=2))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.matmul(x, kernel) * upstream)
        # The loss keeps the forward matmul in the graph, as in build_step.
        return loss, tape.gradient(loss, [x, kernel])

    return step, patches


def time_case(case: dict, implementations: list[str]) -> tuple[dict, dict]:
    """Return the median wall-clock and CPU seconds of one step, per implementation.

    CPU time is that of the whole process, all TensorFlow threads included. It
    grows less than wall-clock time when other processes share the cores.
    """
    steps = {}
    for implementation in implementations:
        logging.info("Building %s for %s %s.", implementation, case["preset"], case["layer"])
        step, inputs = build_step(case, implementation)
        for _ in range(FLAGS.warmup):
            step(inputs)
        steps[implementation] = (step, inputs)

    wall = {implementation: [] for implementation in implementations}
    cpu = {implementation: [] for implementation in implementations}
    for _ in range(FLAGS.repeats):
        for implementation, (step, inputs) in steps.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            step(inputs)
            wall[implementation].append(time.perf_counter() - wall_start)
            cpu[implementation].append(time.process_time() - cpu_start)
    return (
        {name: statistics.median(values) for name, values in wall.items()},
        {name: statistics.median(values) for name, values in cpu.items()},
    )


def measure_memory(case: dict, implementation: str) -> dict:
    """Run one implementation in a subprocess and return its RSS high-water marks."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child=" + json.dumps({"case": case, "implementation": implementation}),
        f"--warmup={FLAGS.warmup}",
        "--repeats=3",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        logging.error("Memory run of %s failed: %s", implementation, result.stderr[-2000:])
        return {"error": f"exit code {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_child(spec: dict) -> None:
    """Build, warm up and run one implementation, then print peak RSS before and after."""
    import tensorflow as tf  # noqa: F401  (imported before the baseline is read)
    import tf_keras  # noqa: F401

    import lnet_anet_tf.layers  # noqa: F401

    baseline_kib = _peak_rss_kib()
    step, inputs = build_step(spec["case"], spec["implementation"])
    for _ in range(FLAGS.warmup + FLAGS.repeats):
        step(inputs)
    peak_kib = _peak_rss_kib()
    print(json.dumps({"baseline_mib": baseline_kib / 1024, "peak_mib": peak_kib / 1024}))


def _peak_rss_kib() -> int:
    # VmHWM belongs to the address space, which exec replaces. ru_maxrss does not
    # work here: Linux carries it over from the parent through fork and exec, so
    # a child of a large parent reports the parent's size.
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("VmHWM is missing from /proc/self/status; peak RSS needs Linux.")


def format_table(results: list[dict]) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| preset | layer | input -> output, share | implementation | wall ms | wall / ours "
        "| CPU ms | CPU / ours | peak RSS MiB | RSS added MiB |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        case = result["case"]
        shape = (
            f"{'x'.join(map(str, case['input_shape']))} -> "
            f"{'x'.join(map(str, case['output_shape']))}, "
            f"{case['share_size'][0]}x{case['share_size'][1]}"
        )
        ours = result["seconds"].get("ours")
        ours_cpu = result["cpu_seconds"].get("ours")
        for implementation in IMPLEMENTATIONS + (MATMUL_ONLY,):
            if implementation in result["skipped"]:
                row = [implementation, "skipped: " + result["skipped"][implementation]]
                row += [""] * 5
            else:
                seconds = result["seconds"][implementation]
                cpu_seconds = result["cpu_seconds"][implementation]
                memory = result["memory"].get(implementation, {})
                row = [
                    implementation,
                    f"{seconds * 1000:.1f}",
                    f"{seconds / ours:.2f}",
                    f"{cpu_seconds * 1000:.1f}",
                    f"{cpu_seconds / ours_cpu:.2f}",
                    _format_mib(memory.get("peak_mib")),
                    _format_mib(
                        memory["peak_mib"] - memory["baseline_mib"] if "peak_mib" in memory else None
                    ),
                ]
            lines.append(f"| {case['preset']} | {case['layer']} | {shape} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_summary(results: list[dict]) -> str:
    """Return one line per case: speed and memory of `ours` against the fastest tf_keras."""
    lines = []
    for result in results:
        case, seconds, memory = result["case"], result["seconds"], result["memory"]
        cpu_seconds = result["cpu_seconds"]
        timed = {name: value for name, value in seconds.items() if name.startswith("tf_keras")}
        if not timed or "ours" not in seconds:
            continue
        fastest = min(timed, key=timed.get)
        line = (
            f"{case['preset']} {case['layer']}: fastest tf_keras is {fastest}, "
            f"{timed[fastest] / seconds['ours']:.2f}x the wall-clock time of ours and "
            f"{cpu_seconds[fastest] / cpu_seconds['ours']:.2f}x its CPU time"
        )
        if "peak_mib" in memory.get("ours", {}) and "peak_mib" in memory.get(fastest, {}):
            ours_added = memory["ours"]["peak_mib"] - memory["ours"]["baseline_mib"]
            fastest_added = memory[fastest]["peak_mib"] - memory[fastest]["baseline_mib"]
            line += f"; RSS added: ours {ours_added:.0f} MiB, {fastest} {fastest_added:.0f} MiB"
        lines.append(line + ".")
    return "\n".join(lines)


def _format_mib(value) -> str:
    return "" if value is None else f"{value:.0f}"


def main(argv):
    del argv
    if FLAGS.child:
        run_child(json.loads(FLAGS.child))
        return

    unknown = sorted(set(FLAGS.implementations) - set(IMPLEMENTATIONS))
    if unknown:
        raise app.UsageError(
            f"Unknown --implementations {unknown}; choose from {', '.join(IMPLEMENTATIONS)}."
        )

    import tensorflow as tf

    logging.info(
        "TensorFlow %s, Python %s, %s, %d CPUs.",
        tf.__version__, platform.python_version(), platform.processor() or platform.machine(),
        os.cpu_count(),
    )
    results = []
    for preset in FLAGS.presets:
        for case in anet_cases(preset, FLAGS.batch_size):
            skipped = {
                name: "not requested" for name in IMPLEMENTATIONS if name not in FLAGS.implementations
            }
            for implementation in FLAGS.implementations:
                reason = skip_reason(case, implementation)
                if reason is not None:
                    skipped[implementation] = reason
            to_run = [name for name in IMPLEMENTATIONS if name not in skipped]
            # Memory first, so that no subprocess runs while this process still
            # keeps the timed layers in memory.
            memory = {}
            if FLAGS.measure_memory:
                for implementation in to_run:
                    memory[implementation] = measure_memory(case, implementation)
            seconds, cpu_seconds = time_case(case, to_run + [MATMUL_ONLY])
            result = {
                "case": case,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "memory": memory,
                "skipped": skipped,
            }
            logging.info("%s", json.dumps(result))
            results.append(result)

    print(format_table(results))
    print()
    print(format_summary(results))
    if FLAGS.output_json:
        temporary = FLAGS.output_json + ".tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
        os.replace(temporary, FLAGS.output_json)


if __name__ == "__main__":
    app.run(main)
