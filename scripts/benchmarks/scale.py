"""An estimate, not a measurement: one epoch of full CelebA at the paper preset on 1 to 64 GPUs.

Inputs measured by the training group on this CPU, per fine-tuning stage of the
paper preset: the train step's CPU seconds per example (core-seconds, so load
from other processes affects it less than wall-clock time), the input
pipeline's CPU seconds per example, and the number of parameters. Everything
about GPUs and networks is an assumption, listed in `ASSUMPTIONS`.

For G GPUs, N examples per epoch and a global batch of B examples:

    compute per step    = (B / G) * step_core_seconds / GPU_SPEEDUP_PER_CORE
    all-reduce per step = 2 * (G - 1) / G * 4 * parameters / bandwidth(G)   (ring)
    model time          = N / B * (compute + all-reduce)
    input time          = N * pipeline_core_seconds / (DECODE_CORES_PER_GPU * G)
    epoch               = max(model time, input time)

The step computes the gradients and then all-reduces them (tf.distribute does
not overlap the two in this loop), so their times add; the input pipeline runs
ahead in tf.data threads, so it overlaps and the slower side bounds the epoch.
"""

from __future__ import annotations

# CelebA's size as released; the training partition alone has 162,770 images.
CELEBA_IMAGES = 202_599
GPU_COUNTS = (1, 8, 64)
FINETUNE_STAGES = ("finetune_lnet_o", "finetune_lnet_s", "finetune_anet")
# ANet trains on each image's face crop and on its aligned face (--add_aligned,
# on by default when the data has aligned images, as CelebA does).
EXAMPLES_PER_IMAGE = {"finetune_lnet_o": 1, "finetune_lnet_s": 1, "finetune_anet": 2}

ASSUMPTIONS = {
    # How many cores of this CPU one GPU replaces on the train step. An
    # assumption, not a measurement: set it to your GPU's ratio.
    "gpu_speedup_per_core": 500.0,
    # CPU cores that decode input for each GPU (a host with 8 GPUs and 64 cores).
    "decode_cores_per_gpu": 8,
    # All-reduce bandwidth per GPU in bytes per second: NVLink inside one host of
    # up to 8 GPUs, a 200 Gb/s network between hosts.
    "intra_host_bandwidth": 100e9,
    "inter_host_bandwidth": 25e9,
    "gpus_per_host": 8,
}


def allreduce_seconds(parameters: int, gpus: int, assumptions: dict) -> float:
    if gpus == 1:
        return 0.0
    bandwidth = (
        assumptions["intra_host_bandwidth"]
        if gpus <= assumptions["gpus_per_host"]
        else assumptions["inter_host_bandwidth"]
    )
    return 2 * (gpus - 1) / gpus * 4 * parameters / bandwidth


def estimate_stage(stage: dict, global_batch: int, gpus: int, assumptions: dict) -> dict:
    """Return the terms of the formula for one stage, `gpus` GPUs and `global_batch`."""
    examples = CELEBA_IMAGES * EXAMPLES_PER_IMAGE[stage["stage"]]
    steps = examples / global_batch
    step_core_seconds = stage["step"]["cpu_seconds_per_item"]
    compute = (global_batch / gpus) * step_core_seconds / assumptions["gpu_speedup_per_core"]
    allreduce = allreduce_seconds(stage["parameters"], gpus, assumptions)
    model_seconds = steps * (compute + allreduce)
    input_seconds = (
        examples * stage["pipeline"]["cpu_seconds_per_item"]
        / (assumptions["decode_cores_per_gpu"] * gpus)
    )
    if input_seconds > model_seconds:
        bound = "input decode"
    elif allreduce > compute:
        bound = "all-reduce"
    else:
        bound = "GPU compute"
    return {
        "stage": stage["stage"],
        "gpus": gpus,
        "global_batch": global_batch,
        "examples": examples,
        "compute_seconds": steps * compute,
        "allreduce_seconds": steps * allreduce,
        "input_seconds": input_seconds,
        "epoch_seconds": max(model_seconds, input_seconds),
        "bound": bound,
    }


def run(training_results: dict, config, assumptions: dict = ASSUMPTIONS) -> dict:
    """Estimate from the training group's stages of `config`'s preset (the paper preset)."""
    stages = {
        result["stage"]: result
        for result in training_results["stages"]
        if result["preset"] == config.preset and result["stage"] in FINETUNE_STAGES
    }
    rows = []
    for name in FINETUNE_STAGES:
        if name not in stages:
            continue
        configured_batch = config.stages[name].batch_size
        for gpus in GPU_COUNTS:
            # As built: the configured global batch split over the replicas.
            rows.append(dict(estimate_stage(stages[name], configured_batch, gpus, assumptions),
                             scenario="as configured"))
            # The usual remedy: keep the configured batch per GPU.
            if gpus > 1:
                rows.append(dict(estimate_stage(stages[name], configured_batch * gpus, gpus, assumptions),
                                 scenario="batch per GPU kept"))
    measured = {
        name: {
            "step_core_seconds": stage["step"]["cpu_seconds_per_item"],
            "pipeline_core_seconds": stage["pipeline"]["cpu_seconds_per_item"],
            "parameters": stage["parameters"],
            "measured_batch_size": stage["batch_size"],
        }
        for name, stage in stages.items()
    }
    return {"preset": config.preset, "assumptions": assumptions, "measured": measured, "rows": rows}


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def render(results: dict) -> str:
    from benchmarks.markdown import table

    if not results["rows"]:
        return (f"No estimate: the training group did not measure the {results['preset']} "
                "preset's fine-tuning stages. Run with --presets including it.")
    assumptions = results["assumptions"]
    measured_rows = [
        [name, values["step_core_seconds"] * 1000, values["pipeline_core_seconds"] * 1000,
         values["parameters"], values["measured_batch_size"]]
        for name, values in results["measured"].items()
    ]
    rows = [
        [row["stage"], row["gpus"], row["scenario"], row["global_batch"], _duration(row["compute_seconds"]),
         _duration(row["allreduce_seconds"]), _duration(row["input_seconds"]),
         _duration(row["epoch_seconds"]), row["bound"]]
        for row in results["rows"]
    ]
    return "\n".join([
        f"**Estimate, not a measurement.** One epoch of full CelebA ({CELEBA_IMAGES:,} images; "
        "ANet reads the face crop and the aligned face of each) at the "
        f"{results['preset']} preset, per fine-tuning stage, with "
        "the pipeline as built (one tf.data pipeline per worker, the gradient all-reduce "
        "after the backward pass). For G GPUs, N examples and global batch B:",
        "",
        "```",
        "compute    = N / G * step_core_seconds / gpu_speedup_per_core",
        "all-reduce = N / B * 2 (G - 1) / G * 4 bytes * parameters / bandwidth",
        "input      = N * pipeline_core_seconds / (decode_cores_per_gpu * G)",
        "epoch      = max(compute + all-reduce, input)",
        "```",
        "",
        "Measured on this CPU by the training group (core-seconds: process CPU time per "
        "example, which other processes' load affects less than wall-clock time):",
        "",
        table(["stage", "step CPU ms/ex", "pipeline CPU ms/ex", "parameters", "measured at batch"],
              measured_rows),
        "",
        "Assumptions, not measurements: one GPU does the train step "
        f"{assumptions['gpu_speedup_per_core']:g} times faster than one core of this CPU; "
        f"{assumptions['decode_cores_per_gpu']} CPU cores decode input for each GPU; "
        f"all-reduce bandwidth {assumptions['intra_host_bandwidth'] / 1e9:g} GB/s per GPU inside "
        f"a host of {assumptions['gpus_per_host']} GPUs and "
        f"{assumptions['inter_host_bandwidth'] / 1e9:g} GB/s between hosts. The synthetic "
        "in-the-wild images are 160 to 256 px; CelebA's are larger, so real decoding costs "
        "more per image than the pipeline figure above. Per-step overheads (kernel launches, "
        "the Python loop) are left out, and they matter most when each GPU gets only a "
        "few examples per step.",
        "",
        table(["stage", "GPUs", "batch", "global batch", "compute", "all-reduce", "input",
               "epoch", "bound by"], rows),
    ])
