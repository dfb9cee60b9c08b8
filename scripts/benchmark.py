"""Run every benchmark of the project and rewrite the generated section of docs/benchmarks.md.

    python scripts/benchmark.py                       # the full run
    python scripts/benchmark.py --quick --output=/tmp/benchmarks.md

Groups, in the order they run (one module each under scripts/benchmarks/):

- training: each stage's input pipeline alone, train step alone on a cached batch,
  and both together, for --preset and every preset of --training_presets;
- step_options: XLA and mixed precision on and off, one against two logical CPU
  replicas, on --preset;
- locally_connected: LocallyConnected2D against tf_keras's implementations, on
  --preset's ANet;
- inference: the exported SavedModel and TFLite models of --preset's cascade,
  latency, file sizes and peak memory;
- alternative: MobileNetV3Small with a 40-sigmoid head against ANet + SVMs;
- scale: an estimate of one CelebA epoch on 1 to 64 GPUs from the paper preset's
  measured costs (from --preset's when no paper preset was timed).

All data is synthetic, generated once into --cache_dir. The script rewrites only
the text between `<!-- benchmark.py:begin -->` and `<!-- benchmark.py:end -->` in
--output and leaves every other line of the file as it is. `--quick` shrinks
every model, dataset and repeat count so that the whole run takes a few minutes;
its numbers only show that the script works.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import markdown  # noqa: E402
from lnet_anet_tf import config as config_lib  # noqa: E402
from lnet_anet_tf.data import synthetic  # noqa: E402

GROUPS = ("training", "step_options", "locally_connected", "inference", "alternative", "scale")

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output", os.path.join(common.REPO_ROOT, "docs", "benchmarks.md"),
    "Markdown file whose generated section is rewritten; created if missing.",
)
flags.DEFINE_string(
    "preset", "demo",
    "Config preset of the step options, inference and alternative groups; its "
    "training stages are timed first.",
)
flags.DEFINE_list(
    "training_presets", ["demo", "paper"],
    "Config presets whose training stages are timed, besides --preset. The scale "
    "estimate reads the paper preset's stages.",
)
flags.DEFINE_bool("quick", False, "Tiny models, data and repeat counts, for the smoke test.")
flags.DEFINE_list("groups", list(GROUPS), f"Groups to run, from {', '.join(GROUPS)}.")
flags.DEFINE_string(
    "cache_dir", synthetic.DEFAULT_CACHE_DIR,
    "Where the synthetic datasets are generated once and reused (as in lnet_anet_tf.train).",
)
flags.DEFINE_string(
    "work_dir", None, "Folder for exports and other files; default: a temporary folder, removed."
)
flags.DEFINE_integer(
    "paper_batch_size", 32,
    "Cap on the paper preset's batch size in the training group. Its configured 128 "
    "and 256 make one step take tens of seconds on a small CPU.",
)
flags.DEFINE_string("results_json", None, "Also write the raw results to this JSON file.")


def sizes_for(quick: bool) -> dict:
    """Repeat counts and sample sizes of every group."""
    from benchmarks import training

    if quick:
        tiny = training.Sizes(runs=1, steps_per_run=1, pipeline_batches_per_run=1)
        return {
            "training": {"demo": tiny, "paper": tiny},
            "options": {"sizes": tiny, "stages": ("finetune_anet",), "batch_size": None},
            "locally_connected": {"batch_size": 2, "repeats": 1, "measure_memory": False},
            "inference": {"calibration_images": 4, "qat_images": 8, "qat_epochs": 1,
                          "runs": 1, "warmup": 1, "variants": ["float32", "int8"]},
            "alternative": {"calibration_images": 4, "runs": 1, "warmup": 1},
        }
    return {
        "training": {
            "demo": training.Sizes(runs=3, steps_per_run=2, pipeline_batches_per_run=4),
            "paper": training.Sizes(runs=3, steps_per_run=1, pipeline_batches_per_run=2),
        },
        "options": {
            # float16 steps run far slower on CPUs without float16 kernels.
            "sizes": training.Sizes(runs=3, steps_per_run=2, pipeline_batches_per_run=1,
                                    budget_s=10.0),
            "stages": ("finetune_lnet_o", "finetune_anet"),
            # Half the demo preset's 64: a float16 step of LNet_o without XLA takes
            # about half a minute of CPU time at 64.
            "batch_size": 32,
        },
        "locally_connected": {"batch_size": 32, "repeats": 5, "measure_memory": True},
        # Random weights: the calibration and QAT sizes change the int8 ranges only.
        "inference": {"calibration_images": 20, "qat_images": 100, "qat_epochs": 1,
                      "runs": 30, "warmup": 3, "variants": None},
        "alternative": {"calibration_images": 100, "runs": 30, "warmup": 3},
    }


def run_groups(groups: list[str], presets: list[str], quick: bool, work_dir: str) -> dict:
    from benchmarks import data as data_lib

    sizes = sizes_for(quick)
    configs = [common.benchmark_config(preset, quick) for preset in presets]
    main_config = configs[0]
    # The demo preset's synthetic set for every preset: the measurements need no
    # more images, and it is the set that the default training run caches.
    data = data_lib.prepare(FLAGS.cache_dir, config_lib.get_config("demo").synthetic, quick)
    results = {"data": data_lib.describe(data)}
    seconds = {}

    def timed(name, function):
        logging.info("Running the %s group.", name)
        start = time.perf_counter()
        results[name] = function()
        seconds[name] = time.perf_counter() - start
        logging.info("The %s group took %.0f s.", name, seconds[name])

    if "training" in groups:
        from benchmarks import training

        caps = {"paper": FLAGS.paper_batch_size}
        timed("training", lambda: training.run(configs, data, sizes["training"], caps))
    if "step_options" in groups:
        from benchmarks import step_options

        options = sizes["options"]
        timed("step_options", lambda: step_options.run(
            main_config, data, options["sizes"], FLAGS.cache_dir, quick, options["stages"],
            options["batch_size"]))
    if "locally_connected" in groups:
        from benchmarks import locally_connected

        # --preset only: the script builds tf_keras's dense and sparse kernels and
        # starts one process per implementation, minutes per preset on 2 cores.
        timed("locally_connected", lambda: locally_connected.run(
            [main_config.preset], **sizes["locally_connected"]))
    if "inference" in groups:
        from benchmarks import inference

        timed("inference", lambda: inference.run(
            main_config, data, os.path.join(work_dir, "inference"), sizes["inference"]))
    if "alternative" in groups:
        from benchmarks import alternative

        timed("alternative", lambda: alternative.run(
            main_config, data, os.path.join(work_dir, "alternative"), sizes["alternative"]))
    if "scale" in groups and "training" in results:
        from benchmarks import scale

        # The estimate is about the paper preset; without it (as with --quick) it
        # runs on the first preset, and says so.
        scale_config = configs[presets.index("paper")] if "paper" in presets else main_config
        timed("scale", lambda: scale.run(results["training"], scale_config))
    results["group_seconds"] = seconds
    return results


def command_line(argv: list[str]) -> str:
    arguments = " ".join(argv[1:])
    return "python scripts/benchmark.py" + (" " + arguments if arguments else "")


def render_header(context: dict) -> str:
    from benchmarks.markdown import table

    machine, versions, data = context["machine"], context["versions"], context["results"]["data"]
    memory = f", {machine['memory_gib']:.0f} GiB memory" if machine["memory_gib"] else ""
    quick = (
        "\n**Quick run (`--quick`): tiny models and data, one repeat. These numbers only "
        "show that the script works; do not compare them with anything.**\n"
        if context["quick"] else ""
    )
    version_rows = [[name, version] for name, version in versions.items()]
    total_minutes = context["seconds"] / 60
    group_times = ", ".join(
        f"{group} {seconds:.0f} s" for group, seconds in context["results"]["group_seconds"].items()
    )
    return "\n".join([
        "## Full benchmark run",
        "",
        "This section is generated by the command below; edit the script, not the text.",
        quick,
        "Command:",
        "",
        "```",
        context["command"],
        "```",
        "",
        f"Machine: `{machine['cpu_model']}` (from /proc/cpuinfo), {machine['cores']} cores "
        f"({machine['usable_cores']} usable by the process){memory}, no GPU, "
        f"{machine['system']}. Run on {context['date']}, {total_minutes:.1f} minutes in all "
        f"({group_times}). "
        "The load average (1, 5, 15 minutes) was "
        f"{', '.join(map(str, context['load_start']))} at the start and "
        f"{', '.join(map(str, context['load_end']))} at the end. The benchmark alone keeps "
        f"up to {machine['usable_cores']} cores busy, so a 1-minute load above 0.5 at the start, "
        f"or well above {machine['usable_cores']} at the end, means that other processes shared "
        "the cores. Wall-clock rates then fall and spread more than CPU-time figures.",
        "",
        f"Data: **synthetic** (the embedded generator): {data['images']:,} images of "
        f"{data['identities']:,} identities ({data['train_images']:,} train, "
        f"{data['test_images']:,} test) and {data['object_images']:,} object images of "
        f"{data['object_classes']} classes. "
        "Rates are medians over several timed runs after an untimed one; every ratio "
        "divides two numbers measured in the same process.",
        "",
        table(["library", "version"], version_rows),
    ])


SECTION_TITLES = {
    "training": "Training throughput",
    "step_options": "XLA, mixed precision and replicas",
    "locally_connected": "Locally connected layer against tf_keras",
    "inference": "Inference latency and size",
    "alternative": "The alternative: MobileNetV3Small",
    "scale": "Scale on paper (estimate)",
}


def render(context: dict) -> str:
    import importlib

    parts = [render_header(context)]
    for group in GROUPS:
        if group not in context["results"]:
            continue
        module = importlib.import_module(f"benchmarks.{group}")
        parts.append(f"### {SECTION_TITLES[group]}\n\n{module.render(context['results'][group])}")
    return "\n\n".join(parts)


def main(argv):
    unknown = [group for group in FLAGS.groups if group not in GROUPS]
    if unknown:
        raise app.UsageError(f"Unknown --groups {', '.join(unknown)}; choose from {', '.join(GROUPS)}.")
    known_presets = sorted(config_lib.PRESETS)
    unknown = [p for p in [FLAGS.preset] + FLAGS.training_presets if p not in known_presets]
    if unknown:
        raise app.UsageError(f"Unknown presets {', '.join(unknown)}; choose from {', '.join(known_presets)}.")
    presets = [FLAGS.preset] + [p for p in FLAGS.training_presets if p != FLAGS.preset]
    if FLAGS.quick:
        # The paper preset keeps its wide layers under --quick, and building and
        # tracing them takes minutes.
        presets = [preset for preset in presets if preset != "paper"] or ["demo"]

    load_start = common.load_average()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lnet-anet-bench-") as temporary:
        work_dir = FLAGS.work_dir or temporary
        results = run_groups(FLAGS.groups, presets, FLAGS.quick, work_dir)
    context = {
        "command": command_line(sys.argv),
        "machine": common.machine_info(),
        "versions": common.library_versions(),
        "load_start": load_start,
        "load_end": common.load_average(),
        "seconds": time.perf_counter() - start,
        "date": datetime.date.today().isoformat(),
        "quick": FLAGS.quick,
        "results": results,
    }
    if FLAGS.results_json:
        temporary_json = FLAGS.results_json + ".tmp"
        with open(temporary_json, "w", encoding="utf-8") as file:
            json.dump(context, file, indent=2, default=str)
        os.replace(temporary_json, FLAGS.results_json)
    markdown.replace_generated_section(FLAGS.output, render(context))
    logging.info("Rewrote the generated section of %s in %.0f s.", FLAGS.output, context["seconds"])


if __name__ == "__main__":
    app.run(main)
