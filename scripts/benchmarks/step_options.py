"""The train step with XLA and mixed precision on and off, and on one or two CPU replicas.

Each option is timed on the same cached batch as the plain step, in the same
process, so the ratios compare like with like. Logical CPU devices must be
configured before TensorFlow initialises its devices, so the replica comparison
runs in a child process (`benchmarks.replicas_child`).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from absl import logging

from benchmarks import common
from benchmarks import training
from lnet_anet_tf.config import Config

# The stages whose steps are timed: an AlexNet-like LNet and ANet, whose upper
# layers are LocallyConnected2D.
STAGES = ("finetune_lnet_o", "finetune_anet")
# (dtype policy, jit_compile). mixed_float16 is what `--mixed_precision` of the
# training job sets; the optimizer then needs loss scaling. mixed_bfloat16 needs
# none; it is timed too, without XLA only to save time, because CPUs with
# AVX512_BF16 or AMX have bfloat16 kernels.
COMBINATIONS = (
    ("float32", False),
    ("float32", True),
    ("mixed_float16", False),
    ("mixed_float16", True),
    ("mixed_bfloat16", False),
)


def measure_options(
    stage: str, config: Config, data, sizes: training.Sizes, batch_size: int
) -> list[dict]:
    """Time `stage`'s step for every XLA and precision combination; ratios to the plain step."""
    batch = training.first_batch(training.stage_setup(stage, config, data, batch_size).dataset_fn())
    rows = []
    for policy, jit_compile in COMBINATIONS:
        logging.info("Timing %s with policy %s, jit_compile=%s.", stage, policy, jit_compile)
        keras.mixed_precision.set_global_policy(policy)
        try:
            setup = training.stage_setup(stage, config, data, batch_size)
            optimizer = keras.optimizers.Adam(1e-3)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            step = training.build_step(setup, jit_compile=jit_compile, optimizer=optimizer)
            rate = training.time_steps(step, training.cached_iterator(batch), batch_size, sizes)
            rows.append({"stage": stage, "policy": policy, "jit_compile": jit_compile, "rate": rate})
        except (tf.errors.OpError, ValueError, TypeError, NotImplementedError) as error:
            # An option that this TensorFlow build cannot run is a result to report.
            logging.warning("%s with %s, jit_compile=%s failed: %s", stage, policy, jit_compile, error)
            rows.append(
                {"stage": stage, "policy": policy, "jit_compile": jit_compile,
                 "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
            )
        finally:
            keras.mixed_precision.set_global_policy("float32")
            keras.backend.clear_session()

    baseline, baseline_cpu = rows[0]["rate"]["median"], rows[0]["rate"]["cpu_seconds_per_item"]
    for row in rows:
        if "rate" in row:
            row["speedup"] = row["rate"]["median"] / baseline
            row["cpu_speedup"] = baseline_cpu / row["rate"]["cpu_seconds_per_item"]
    return rows


def run(config: Config, data, sizes: training.Sizes, cache_dir: str, quick: bool,
        stages: tuple = STAGES, batch_size: int | None = None) -> dict:
    """Time the options of `stages` at `batch_size` (default: each stage's configured one)."""
    options = []
    for stage in stages:
        options.extend(measure_options(
            stage, config, data, sizes, batch_size or config.stages[stage].batch_size
        ))
    spec = {
        "preset": config.preset,
        "quick": quick,
        "cache_dir": cache_dir,
        "stages": list(stages),
        "sizes": dataclasses.asdict(sizes),
    }
    replicas = common.run_child("replicas_child", spec)
    return {"preset": config.preset, "options": options, "replicas": replicas["stages"],
            "budget_s": sizes.budget_s, "batch_size": batch_size}


def render(results: dict) -> str:
    from benchmarks.markdown import table

    rows = []
    for row in results["options"]:
        if "rate" in row:
            rows.append([row["stage"], row["policy"], row["jit_compile"], row["rate"]["median"],
                         row["speedup"], row["rate"]["cpu_seconds_per_item"] * 1000,
                         row["cpu_speedup"], row["rate"]["runs"]])
        else:
            rows.append([row["stage"], row["policy"], row["jit_compile"], "failed: " + row["error"],
                         "", "", "", ""])
    replica_rows = [
        [row["stage"], row["batch_size"], row["one_replica"]["median"], row["two_replicas"]["median"],
         row["two_to_one"]]
        for row in results["replicas"]
    ]
    batch = (f"batch {results['batch_size']}" if results["batch_size"]
             else "configured batch sizes")
    return "\n".join([
        f"The train step on one cached batch ({results['preset']} preset, {batch}), "
        "examples per second (wall clock, median). `speedup` is against float32 "
        "without XLA, measured in the same process; `CPU speedup` is the same ratio of "
        "CPU time per example, which load from other processes affects less. With "
        "`mixed_float16` the optimizer is wrapped in a `LossScaleOptimizer`, as the "
        "training job does."
        + (f" A measurement stops after {results['budget_s']:g} s of timed runs, so very "
           "slow options have fewer runs." if results["budget_s"] else ""),
        "",
        table(["stage", "dtype policy", "jit_compile (XLA)", "step ex/s", "speedup", "CPU ms/ex",
               "CPU speedup", "timed runs"], rows),
        "",
        "One replica (`OneDeviceStrategy`) against two (`MirroredStrategy`) on two logical "
        "CPU devices, which share the same cores, in one child process, at each stage's "
        "configured batch; the global batch "
        "is the same, split in halves between the two replicas.",
        "",
        table(["stage", "global batch", "1 replica ex/s", "2 replicas ex/s", "2 / 1"], replica_rows),
    ])
