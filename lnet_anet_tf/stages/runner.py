"""Run one named stage, or skip it when its DONE.json exists."""

from __future__ import annotations

import keras
from absl import logging

from lnet_anet_tf import evaluate
from lnet_anet_tf import trained
from lnet_anet_tf.stages import finetuning
from lnet_anet_tf.stages import pretraining
from lnet_anet_tf.stages import svm_fitting
from lnet_anet_tf.stages import STAGE_NAMES
from lnet_anet_tf.stages import stage_seed
from lnet_anet_tf.stages.context import RunContext


def _fit_summary(result) -> dict:
    _, stage_result = result
    return {
        "status": "trained",
        "metrics": stage_result.metrics,
        "examples_per_second": stage_result.examples_per_second,
    }


def _evaluate(context: RunContext) -> dict:
    cascade = trained.load_cascade(context.model_dir, context.config)
    results = evaluate.evaluate_cascade(
        cascade, context.table.partition("test"), context.table.partition("train")
    )
    paths = evaluate.write_results(
        results, context.stage_dir("evaluate"),
        dataset_kind=context.dataset_kind, preset=context.config.preset,
    )
    logging.info("Evaluation (%s data): %s", context.dataset_kind, evaluate.summary_line(results))
    summary = {"summary": evaluate.summary_line(results), **paths}
    context.mark_done("evaluate", summary)
    return summary


def _export(context: RunContext) -> dict:
    from lnet_anet_tf import export

    paths = export.export_all(context.model_dir, context.export_dir, table=context.table)
    context.mark_done("export", {"paths": paths})
    return {"paths": paths}


_TRAINING_STAGES = {
    "pretrain_lnet": pretraining.pretrain_lnet,
    "pretrain_anet": pretraining.pretrain_anet,
    "finetune_lnet_o": finetuning.finetune_lnet_o,
    "finetune_lnet_s": finetuning.finetune_lnet_s,
    "finetune_anet": finetuning.finetune_anet,
}
_OTHER_STAGES = {
    "fit_svm": svm_fitting.fit_svm,
    "evaluate": _evaluate,
    "export": _export,
}


def run_stage(context: RunContext, name: str) -> dict:
    """Run stage `name` unless its DONE.json exists; later stages read its outputs from disk."""
    if context.is_done(name):
        return {"status": f"skipped (already finished in {context.stage_dir(name)})", **context.read_done(name)}
    # Weight initialisation and dropout seeds draw from the global generators. Seeding
    # them per stage makes a stage's start independent of which earlier stages ran in
    # this process, so a rerun that skips finished stages trains the rest as an
    # uninterrupted run does.
    keras.utils.set_random_seed(stage_seed(context.config.seed, name))
    if name in _TRAINING_STAGES:
        return _fit_summary(_TRAINING_STAGES[name](context))
    return {"status": "done", **_OTHER_STAGES[name](context)}
