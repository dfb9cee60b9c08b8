"""Repeat the training job with and without each pre-training stage.

The publication reports two findings: pre-training LNet on object classes improves
face localization, and pre-training ANet on identities improves attribute
prediction. This script checks both on the data given (by default the embedded
synthetic dataset) by running the job four times:

| variant | pretrain_lnet | pretrain_anet |
| --- | --- | --- |
| both | yes | yes |
| no_lnet_pretraining | no | yes |
| no_anet_pretraining | yes | no |
| neither | no | no |

and writes LNet_o and LNet_s recall at IoU >= 0.5 and the mean (balanced)
accuracy of each variant to a Markdown file. Each stage seeds itself from the
run's seed and its name, and ops are deterministic on the CPU, so the LNet stages
depend only on whether pretrain_lnet ran. A variant whose LNet pre-training
matches an earlier variant's therefore starts from a copy of that variant's LNet
stage folders (`--reuse_lnet_stages`, on by default) and trains ANet only; this
saves two of the four LNet trainings.

    python scripts/pretraining_ablation.py --output=docs/pretraining_ablation.md
    python scripts/pretraining_ablation.py --quick   # tiny config, for a smoke run
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "runs/ablation", "Where each variant's model directory goes.")
flags.DEFINE_string("cache_dir", None, "Synthetic dataset cache; default: the training job's.")
flags.DEFINE_string("output", "docs/pretraining_ablation.md", "Markdown file to write.")
flags.DEFINE_bool("quick", False, "Use the tiny test config of tests/test_train.py.")
flags.DEFINE_multi_string("config_override", [], "Passed to every training run.")
flags.DEFINE_bool(
    "reuse_lnet_stages", True,
    "Copy the LNet stages of an earlier variant with the same LNet pre-training "
    "instead of training them again.",
)

FINETUNE_STAGES = ("finetune_lnet_o", "finetune_lnet_s", "finetune_anet", "fit_svm", "evaluate")
# The stages whose outputs depend on pretrain_lnet and not on pretrain_anet, and
# the files that let the training job accept a copied model directory.
LNET_STAGES = ("pretrain_lnet", "finetune_lnet_o", "finetune_lnet_s")
RUN_FILES = ("config.json", "run_info.json")
VARIANTS = {
    "both": ("pretrain_lnet", "pretrain_anet"),
    "no_lnet_pretraining": ("pretrain_anet",),
    "no_anet_pretraining": ("pretrain_lnet",),
    "neither": (),
}


def quick_overrides() -> list:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from test_train import TINY_OVERRIDES  # pylint: disable=import-outside-toplevel

    return list(TINY_OVERRIDES)


def copy_lnet_stages(source_dir: str, model_dir: str) -> list:
    """Copy the LNet stage folders of `source_dir` that `model_dir` lacks; return their names.

    Each copy goes to a temporary name first, so an interrupted copy never looks
    like a finished stage.
    """
    os.makedirs(model_dir, exist_ok=True)
    copied = []
    for name in LNET_STAGES + RUN_FILES:
        source, target = os.path.join(source_dir, name), os.path.join(model_dir, name)
        if not os.path.exists(source) or os.path.exists(target):
            continue
        staging = target + ".copying"
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.isdir(source):
            shutil.copytree(source, staging)
        else:
            shutil.copy2(source, staging)
        os.replace(staging, target)
        if name in LNET_STAGES:
            copied.append(name)
    return copied


def run_variant(name: str, pretraining: tuple, overrides: list, reuse_from: str | None) -> dict:
    model_dir = os.path.join(FLAGS.work_dir, name)
    reused = copy_lnet_stages(reuse_from, model_dir) if reuse_from else []
    command = [
        sys.executable, "-m", "lnet_anet_tf.train", f"--model_dir={model_dir}",
        "--progress=off", "--stages=" + ",".join(pretraining + FINETUNE_STAGES),
    ]
    if FLAGS.cache_dir:
        command.append(f"--cache_dir={FLAGS.cache_dir}")
    command += [f"--config_override={override}" for override in overrides]

    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(model_dir, "evaluate", "metrics.json"), encoding="utf-8") as file:
        metrics = json.load(file)
    return {
        "metrics": metrics, "seconds": seconds, "command": " ".join(command),
        "reused": f"{', '.join(reused)} of {os.path.basename(reuse_from)}" if reused else "",
    }


def render(results: dict, overrides: list) -> str:
    dataset = next(iter(results.values()))["metrics"]["dataset"]
    label = "synthetic data (the embedded generated dataset, not CelebA)" if dataset == "synthetic" else dataset
    lines = [
        "# Pre-training ablation",
        "",
        f"Produced by `python scripts/pretraining_ablation.py{' --quick' if FLAGS.quick else ''}` on "
        f"{label}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
        "Each variant is one run of the training job with the same seed, from its first stage",
        "to evaluate (no export). The wall time leaves out the stages a variant copied from",
        "another (see scripts/pretraining_ablation.py).",
        "",
        "| variant | LNet_o recall@0.5 (%) | LNet_s recall@0.5 (%) | mean accuracy (%) | mean balanced accuracy (%) | wall time (s) | stages copied |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in results.items():
        metrics = result["metrics"]
        localization = metrics["localization"]
        lines.append(
            f"| {name} | {100 * localization['lnet_o']['recall']:.2f} | "
            f"{100 * localization['lnet_s']['recall']:.2f} | "
            f"{100 * metrics['attributes']['mean_accuracy']:.2f} | "
            f"{100 * metrics['attributes']['mean_balanced_accuracy']:.2f} | {result['seconds']:.0f} | "
            f"{result['reused'] or 'none'} |"
        )
    if overrides:
        lines += ["", "Config overrides: " + ", ".join(f"`{item}`" for item in overrides)]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    overrides = (quick_overrides() if FLAGS.quick else []) + FLAGS.config_override
    results, lnet_source = {}, {}
    for name, stages in VARIANTS.items():
        lnet_pretrained = "pretrain_lnet" in stages
        reuse_from = lnet_source.get(lnet_pretrained) if FLAGS.reuse_lnet_stages else None
        results[name] = run_variant(name, stages, overrides, reuse_from)
        lnet_source.setdefault(lnet_pretrained, os.path.join(FLAGS.work_dir, name))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as file:
        file.write(render(results, overrides))
    print(open(FLAGS.output, encoding="utf-8").read())


if __name__ == "__main__":
    app.run(main)
