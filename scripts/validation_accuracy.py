"""Compare finished training runs on the validation partition, never the test one.

A setting of the method, such as `localization.lnet_s_context`, is chosen by
training one run per value and comparing the runs. This script runs each run's
cascade on the validation images, as `evaluate` runs it on the test images, and
prints one Markdown row per run: the mean accuracy and mean balanced accuracy
over the 40 attributes. It reads attribute labels only, no face box.

The runs' Platt scaling was fitted on these validation faces, so the numbers
are optimistic. They serve to rank runs of the same data. Report the chosen run's
accuracy from `evaluate` on the test partition.

    python scripts/validation_accuracy.py --model_dirs=/tmp/run_a,/tmp/run_b
    python scripts/validation_accuracy.py --model_dirs=runs/celeba --data_dir=/data/celeba
"""

from __future__ import annotations

from absl import app
from absl import flags

import localization_bands
from lnet_anet_tf import evaluate
from lnet_anet_tf import metrics
from lnet_anet_tf import trained

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command-line flags (only when the script runs, as in localization_bands.py)."""
    flags.DEFINE_list(
        "model_dirs", None, "Finished training runs' model directories, comma-separated.", required=True
    )
    flags.DEFINE_string("data_dir", None, "CelebA folder; default: each run's, from its run_info.json.")
    flags.DEFINE_string("cache_dir", None, "Synthetic dataset cache, read instead of run_info.json's data_dir.")


def validation_metrics(model_dir: str, data_dir: str | None, cache_dir: str | None) -> dict:
    """Return `metrics.attribute_metrics` of the run's cascade on the validation images."""
    config = trained.load_config(model_dir)
    data_dir, table = localization_bands.load_dataset(model_dir, config, data_dir, cache_dir)
    validation = table.partition("validation")
    if len(validation) == 0:
        raise app.UsageError(f"{data_dir} has no validation images to compare runs on.")
    paths = validation.require("wild_paths", "Comparing runs on the validation partition")

    cascade = trained.load_cascade(model_dir, config)
    predictions = evaluate.predict_files(cascade, paths)
    return metrics.attribute_metrics(predictions["attribute_probabilities"], validation.attributes)


def result_row(model_dir: str, result: dict) -> str:
    return (
        f"| {model_dir} | {result['num_examples']} | {100.0 * result['mean_accuracy']:.2f} "
        f"| {100.0 * result['mean_balanced_accuracy']:.2f} |"
    )


def main(argv):
    del argv
    rows = [
        "| run | validation images | mean accuracy (%) | mean balanced accuracy (%) |",
        "| --- | --- | --- | --- |",
    ]
    for model_dir in FLAGS.model_dirs:
        result = validation_metrics(model_dir, FLAGS.data_dir, FLAGS.cache_dir)
        rows.append(result_row(model_dir, result))
    print("\n".join(rows))


if __name__ == "__main__":
    define_flags()
    app.run(main)
