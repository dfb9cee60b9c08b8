"""Training throughput: the input pipeline alone, the model step alone, and both together.

Every stage of `lnet_anet_tf.train` is measured with its own model, loss and input
pipeline, and the real train step (`training.steps.build_train_step`) on the
default strategy (one CPU device):

- pipeline: batches pulled from the stage's tf.data pipeline, nothing else;
- step: the train step on one batch that is already in memory, repeated, so no
  file is read or decoded;
- together: the train step reading the pipeline, as training does.

Crop pipelines read one fixed box per image instead of the boxes that the
previous net predicts: the decode and `crop_and_resize` cost the same wherever
the box lies.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from benchmarks import common
from lnet_anet_tf import attributes
from lnet_anet_tf.config import Config
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.models import build_anet, build_lnet
from lnet_anet_tf.stages import fitting
from lnet_anet_tf.stages import pretraining
from lnet_anet_tf.training import steps as steps_lib

STAGES = ("pretrain_lnet", "pretrain_anet", "finetune_lnet_o", "finetune_lnet_s", "finetune_anet")
# Head sizes of the pre-training stages on the real data of the paper preset:
# ImageNet's 1,000 classes and CelebA's 10,177 identities.
PAPER_OBJECT_CLASSES = 1000
PAPER_IDENTITIES = 10177
# The fixed crop boxes, normalized [ymin, xmin, ymax, xmax]: a head box for LNet_s
# and a face box for ANet.
HEAD_BOX = (0.05, 0.15, 0.95, 0.85)
FACE_BOX = (0.25, 0.3, 0.75, 0.7)


@dataclasses.dataclass
class StageSetup:
    """One stage's model, loss and training pipeline, ready to time."""

    stage: str
    model: keras.Model
    loss_fn: Callable
    metrics_fn: Callable
    dataset_fn: Callable[[], tf.data.Dataset]
    batch_size: int
    pipeline: str  # a short description of the input pipeline


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    runs: int  # timed runs; the median is reported
    steps_per_run: int  # train steps in one timed run
    pipeline_batches_per_run: int  # batches pulled in one timed pipeline run
    # Timed runs of one measurement stop after this many seconds (at least one run).
    budget_s: float | None = None


def _crop_inputs(table, box):
    paths = table.require("wild_paths", "the crop pipeline benchmark")
    labels = table.attributes.astype(np.float32)
    boxes = np.tile(np.asarray(box, np.float32), (len(table), 1))
    return paths, boxes, labels


def stage_setup(stage: str, config: Config, data, batch_size: int) -> StageSetup:
    """Build the model, loss and training pipeline of `stage` at `batch_size`."""
    train = data.train
    seed = config.seed
    lnet_size, anet_size = config.lnet_o.input_size, config.anet.input_size
    paper = config.preset == "paper"
    num_attributes = attributes.NUM_ATTRIBUTES

    if stage == "pretrain_lnet":
        def dataset_fn():
            dataset, _ = pipeline.object_class_dataset(
                data.objects_dir, lnet_size, batch_size, training=True, augment=True, seed=seed
            )
            return dataset

        num_classes = PAPER_OBJECT_CLASSES if paper else data.synthetic_config.object_classes
        model = build_lnet(config.lnet_o, num_classes, pretraining.OBJECT_HEAD, name="lnet")
        return StageSetup(
            stage, model, fitting.softmax_loss, fitting.softmax_metrics, dataset_fn, batch_size,
            f"object_class_dataset, {lnet_size} px letterbox",
        )

    if stage == "pretrain_anet":
        _, _, classes = pretraining.identity_split(train)
        paths = train.require("aligned_paths", "the pretrain_anet benchmark")
        boxes = np.tile(np.asarray(pipeline.ALIGNED_FACE_BOX, np.float32), (len(train), 1))

        def dataset_fn():
            return pipeline.crop_dataset(
                paths, boxes, classes, anet_size, batch_size, training=True, augment=True, seed=seed
            )

        num_classes = PAPER_IDENTITIES if paper else int(classes.max()) + 1
        model = build_anet(config.anet, num_classes, pretraining.IDENTITY_HEAD, name="anet")
        return StageSetup(
            stage, model, fitting.softmax_loss, fitting.softmax_metrics, dataset_fn, batch_size,
            f"crop_dataset, aligned faces, {anet_size} px",
        )

    if stage == "finetune_lnet_o":
        def dataset_fn():
            return pipeline.whole_image_dataset(
                train, lnet_size, batch_size, training=True, augment=True, seed=seed
            )

        model = build_lnet(config.lnet_o, num_attributes, "attributes", name="lnet_o")
        return StageSetup(
            stage, model, fitting.sigmoid_loss, fitting.attribute_metrics, dataset_fn, batch_size,
            f"whole_image_dataset, {lnet_size} px letterbox",
        )

    if stage in ("finetune_lnet_s", "finetune_anet"):
        is_anet = stage == "finetune_anet"
        paths, boxes, labels = _crop_inputs(train, FACE_BOX if is_anet else HEAD_BOX)
        size = anet_size if is_anet else config.lnet_s.input_size

        def dataset_fn():
            return pipeline.crop_dataset(
                paths, boxes, labels, size, batch_size, training=True, augment=True, seed=seed
            )

        if is_anet:
            model = build_anet(config.anet, num_attributes, "attributes", name="anet")
            description = f"crop_dataset, face crops, {size} px"
        else:
            model = build_lnet(config.lnet_s, num_attributes, "attributes", name="lnet_s")
            description = f"crop_dataset, head crops, {size} px"
        return StageSetup(
            stage, model, fitting.sigmoid_loss, fitting.attribute_metrics, dataset_fn, batch_size,
            description,
        )

    raise ValueError(f"Unknown stage {stage!r}; expected one of {STAGES}.")


def build_step(setup: StageSetup, *, jit_compile: bool = False, optimizer=None,
               strategy: tf.distribute.Strategy | None = None) -> Callable:
    """Return the real train step of `setup` with Adam, on `strategy` (default: one device)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        optimizer = optimizer or keras.optimizers.Adam(1e-3)
        # Creating the optimizer's slots here, not in the first call, spares
        # tf.function a second trace of the whole step.
        optimizer.build(setup.model.trainable_variables)
    return steps_lib.build_train_step(
        setup.model,
        setup.loss_fn,
        optimizer,
        strategy,
        global_batch_size=setup.batch_size,
        metrics_fn=setup.metrics_fn,
        jit_compile=jit_compile,
    )


def first_batch(dataset: tf.data.Dataset):
    return next(iter(dataset))


def cached_iterator(batch, strategy: tf.distribute.Strategy | None = None):
    """Return an endless iterator over `batch`, distributed by `strategy` when given."""
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    if strategy is not None:
        dataset = strategy.experimental_distribute_dataset(dataset)
    return iter(dataset)


def time_steps(train_step: Callable, iterator, batch_size: int, sizes: Sizes) -> dict:
    """Return the examples per second of `train_step` reading `iterator`, after one untimed step."""

    def run(steps=sizes.steps_per_run):
        for _ in range(steps):
            values = train_step(iterator)
        # Reading a value waits until the step has finished.
        float(values["loss"])
        return steps * batch_size

    # The first call traces and compiles the step.
    start = time.perf_counter()
    run(steps=1)
    steps = sizes.steps_per_run
    if sizes.budget_s is not None and time.perf_counter() - start > sizes.budget_s:
        # A step slower than the whole budget: one step per run is precise enough.
        steps = 1
    return common.time_runs(lambda: run(steps), sizes.runs, warmup=0, budget_s=sizes.budget_s)


def time_pipeline(dataset: tf.data.Dataset, batch_size: int, sizes: Sizes) -> dict:
    """Return the examples per second that `dataset` delivers, batches pulled and dropped.

    A crop pipeline whose rows share images prepares a whole mixing window of
    examples before it yields the first, so a run that ends inside a window would
    time examples prepared earlier. Each run therefore pulls at least two of the
    largest windows.
    """
    iterator = iter(dataset.repeat())
    min_batches = math.ceil(2 * pipeline.MAX_MIX_WINDOW_EXAMPLES / batch_size)
    batches = max(sizes.pipeline_batches_per_run, min_batches)

    def run():
        for _ in range(batches):
            next(iterator)
        return batches * batch_size

    return common.time_runs(run, sizes.runs, warmup=1, budget_s=sizes.budget_s)


def measure_stage(stage: str, config: Config, data, batch_size: int, sizes: Sizes) -> dict:
    """Measure pipeline, step and both together for one stage; return rates and their ratio."""
    setup = stage_setup(stage, config, data, batch_size)
    logging.info("Timing %s (%s preset, batch %d).", stage, config.preset, batch_size)
    train_step = build_step(setup)

    pipeline_rate = time_pipeline(setup.dataset_fn(), batch_size, sizes)
    batch = first_batch(setup.dataset_fn())
    step_rate = time_steps(train_step, cached_iterator(batch), batch_size, sizes)
    together_rate = time_steps(train_step, iter(setup.dataset_fn().repeat()), batch_size, sizes)
    result = {
        "stage": stage,
        "preset": config.preset,
        "batch_size": batch_size,
        "pipeline_description": setup.pipeline,
        "parameters": int(setup.model.count_params()),
        "pipeline": pipeline_rate,
        "step": step_rate,
        "together": together_rate,
        "pipeline_to_step": pipeline_rate["median"] / step_rate["median"],
        "together_to_step": together_rate["median"] / step_rate["median"],
    }
    keras.backend.clear_session()
    return result


def run(configs: list[Config], data, sizes_by_preset: dict, batch_caps: dict) -> dict:
    """Measure every stage of every config; `batch_caps[preset]` caps the configured batch."""
    results = []
    for config in configs:
        sizes = sizes_by_preset[config.preset]
        for stage in STAGES:
            configured = config.stages[stage].batch_size
            cap = batch_caps.get(config.preset)
            batch_size = min(configured, cap) if cap else configured
            result = measure_stage(stage, config, data, batch_size, sizes)
            result["configured_batch_size"] = configured
            results.append(result)
    return {"stages": results, "target_ratio": 3.0}


def render(results: dict) -> str:
    from benchmarks.markdown import table

    target = results["target_ratio"]
    rows = []
    for result in results["stages"]:
        batch = str(result["batch_size"])
        if result["batch_size"] != result["configured_batch_size"]:
            batch += f" (configured {result['configured_batch_size']})"
        rows.append([
            result["preset"],
            result["stage"],
            batch,
            result["pipeline_description"],
            result["pipeline"]["median"],
            result["step"]["median"],
            result["together"]["median"],
            result["pipeline_to_step"],
            "met" if result["pipeline_to_step"] >= target else "missed",
            result["step"]["cpu_seconds_per_item"] * 1000,
            result["pipeline"]["cpu_seconds_per_item"] * 1000,
        ])
    text = [
        "Examples per second (wall clock, median) of each stage's input pipeline alone, "
        "its train step alone on one cached batch, and both together, as training runs "
        "them, with the real train step (`training.steps.build_train_step`, Adam, one "
        "CPU device). The target is a pipeline that delivers at least "
        f"{target:g} times the rate the step consumes. CPU ms are process CPU "
        "milliseconds per example, all threads included.",
        "",
        "- Crop pipelines read one fixed box per image instead of the previous net's "
        "boxes; decoding and `crop_and_resize` cost the same wherever the box lies.",
        f"- Pre-training heads: the paper preset's are sized for ImageNet's "
        f"{PAPER_OBJECT_CLASSES:,} classes and CelebA's {PAPER_IDENTITIES:,} identities, "
        "the demo preset's for the synthetic data's classes and identities.",
        "- A smaller batch than configured (the paper preset, `--paper_batch_size`) "
        "keeps a step short on this CPU; the cost per example at the configured batch "
        "can differ somewhat.",
        "",
        table(
            ["preset", "stage", "batch", "input pipeline", "pipeline ex/s", "step ex/s",
             "together ex/s", "pipeline / step", f"target >= {target:g}x",
             "step CPU ms/ex", "pipeline CPU ms/ex"],
            rows,
        ),
    ]
    missed = [f"{r['preset']} {r['stage']}" for r in results["stages"] if r["pipeline_to_step"] < target]
    text.append("")
    if missed:
        text.append(f"Missed the {target:g}x target: {', '.join(missed)}.")
    else:
        text.append(f"Every stage met the {target:g}x target.")
    return "\n".join(text)
