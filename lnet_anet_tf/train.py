"""The main job: every stage of LNet + ANet training, evaluation and export.

    python -m lnet_anet_tf.train                      # synthetic data, demo preset
    python -m lnet_anet_tf.train --data_dir=CELEBA    # real CelebA, paper preset
    python -m lnet_anet_tf.train --data_dir=CELEBA --tfrecord_dir=SHARDS/wild,SHARDS/aligned

Stages run in this order; `--stages` picks a subset, and a stage that finished in
`--model_dir` is skipped when the same command runs again:

1. pretrain_lnet    LNet on general object classes (softmax)
2. pretrain_anet    ANet on face identities (softmax), aligned faces
3. finetune_lnet_o  LNet_o on whole images, 40 attribute tags
4. finetune_lnet_s  LNet_s on LNet_o's head boxes, starting from LNet_o
5. finetune_anet    ANet on LNet_s's face crops
6. fit_svm          one linear SVM per attribute on ANet patch features
7. evaluate         the cascade on the test partition: metrics.json, report.md
8. export           SavedModel for TF Serving and TFLite models

Box labels are read by `evaluate` only. A killed run resumes from its last
checkpoint when the same command runs again. With `--tfrecord_dir`, stages 2 to 6
read images from the shards of scripts/convert_to_tfrecords.py (`stages.inputs`).
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
from absl import logging

from lnet_anet_tf import config as config_lib
from lnet_anet_tf import localization
from lnet_anet_tf import stages as stages_lib
from lnet_anet_tf.data import synthetic
from lnet_anet_tf.training import strategy as strategy_lib

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "data_dir", None,
    "CelebA directory (release layout or the CSV copy). Unset: generate the embedded "
    "synthetic dataset into --cache_dir and use it.",
)
flags.DEFINE_string(
    "model_dir", None,
    "Directory for checkpoints, logs, weights and reports. Default: runs/<preset>.",
)
flags.DEFINE_enum(
    "preset", None, sorted(config_lib.PRESETS),
    "Model and training sizes. Default: demo without --data_dir, paper with it.",
)
flags.DEFINE_list("stages", list(stages_lib.STAGE_NAMES), "Stages to run, comma-separated, in any subset.")
flags.DEFINE_multi_string(
    "config_override", [],
    "Change one config field, as dotted.path=python_literal, e.g. "
    "stages.finetune_anet.epochs=2. Repeat the flag for several fields. The seed is "
    "set with --seed.",
)
flags.DEFINE_enum("strategy", "auto", list(strategy_lib.STRATEGY_NAMES), "tf.distribute strategy.")
flags.DEFINE_bool("mixed_precision", False, "Train with the mixed_float16 Keras policy.")
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer(
    "checkpoint_every_steps", 0,
    "Save a checkpoint every this many steps, besides every epoch; 0 saves per epoch only.",
)
flags.DEFINE_enum(
    "on_bad_example", "error", ["error", "skip"],
    "What to do with an invalid annotation row or image: stop with an error naming "
    "it, or skip it and count it.",
)
flags.DEFINE_string(
    "cache_dir", synthetic.DEFAULT_CACHE_DIR,
    "Where the synthetic dataset is generated once and reused.",
)
flags.DEFINE_string(
    "object_data", None,
    "Object-class data for pretrain_lnet: a folder of class subfolders, or "
    "tfds:<name> (e.g. tfds:imagenet2012 prepared in --tfds_data_dir). Default: the "
    "synthetic object classes generated with the synthetic dataset.",
)
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory for tfds: object data and --tfds_name.")
flags.DEFINE_enum(
    "tfds_name", None, ["celeb_a_in_the_wild", "celeb_a"],
    "Read CelebA from this prepared TFDS dataset in --tfds_data_dir instead of --data_dir. "
    "It is copied once into a CelebA folder under --cache_dir. celeb_a (aligned crops "
    "only) feeds pretrain_lnet and pretrain_anet only.",
)
flags.DEFINE_list(
    "tfrecord_dir", [],
    "TFRecord folders written by scripts/convert_to_tfrecords.py from the same data, "
    "comma-separated, one per image kind (--image=wild, --image=aligned). The training "
    "stages and fit_svm then read images from the shards instead of the image files; "
    "evaluate and export still read image files.",
)
flags.DEFINE_bool(
    "add_aligned", None,
    "Also fine-tune ANet on the aligned training faces. Default: on "
    "when the data has aligned images. The test images are still cropped by LNet_s.",
)
flags.DEFINE_string("export_dir", None, "Where the export stage writes. Default: <model_dir>/export.")
flags.DEFINE_enum("progress", "auto", ["auto", "on", "off"], "Progress bars: auto shows them on a terminal.")
flags.DEFINE_integer("seed", 0, "Seed of every random choice, so reruns are identical on the CPU.")
flags.DEFINE_bool(
    "deterministic", True,
    "Use deterministic TensorFlow ops (needed for exact resume after a kill; slower on GPUs).",
)


def resolve_config(preset: str, overrides: list, seed: int) -> config_lib.Config:
    # --seed also seeds TensorFlow's ops, so it alone sets the config's seed. An
    # override of it would be replaced below without a word.
    for assignment in overrides:
        if assignment.partition("=")[0].strip() == "seed":
            raise app.UsageError(
                f"--config_override={assignment} would be ignored: set the seed with "
                "--seed, which also seeds TensorFlow's ops."
            )
    config = config_lib.get_config(preset)
    try:
        for assignment in overrides:
            config = config_lib.override(config, assignment)
        # Check the synthetic images' ranges and the localization settings now,
        # not after the job has started.
        synthetic.variation(config.synthetic)
        localization.validate_config(config.localization)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    return config_lib.override(config, f"seed={seed}")


def prepare_model_dir(model_dir: str, config: config_lib.Config, run_info: dict) -> None:
    """Save the resolved config and data location; refuse to mix two configs in one directory."""
    from lnet_anet_tf import trained
    from lnet_anet_tf.training import checkpointing

    os.makedirs(model_dir, exist_ok=True)
    config_path = os.path.join(model_dir, trained.CONFIG_FILENAME)
    resolved = config_lib.to_dict(config)
    if os.path.exists(config_path):
        saved = config_lib.to_dict(trained.load_config(model_dir))
        if saved != resolved:
            changed = sorted(key for key in resolved if resolved[key] != saved.get(key))
            raise ValueError(
                f"{model_dir} contains a run with a different config (differs in: "
                f"{', '.join(changed)}). Use a new --model_dir, or the same flags as "
                f"that run (its config is {config_path})."
            )
    checkpointing.write_text_atomic(config_path, json.dumps(resolved, indent=2, sort_keys=True) + "\n")
    checkpointing.write_text_atomic(
        os.path.join(model_dir, trained.RUN_INFO_FILENAME), json.dumps(run_info, indent=2, sort_keys=True) + "\n"
    )


def load_data(config: config_lib.Config) -> tuple:
    """Return (table, object source, dataset kind, data_dir) for the flags given."""
    from lnet_anet_tf.data import celeba

    data_dir = FLAGS.data_dir
    if FLAGS.tfds_name:
        # A TFDS dataset becomes a CelebA folder, read below as --data_dir is.
        from lnet_anet_tf.data import tfds_source

        if FLAGS.data_dir:
            raise app.UsageError("Pass either --data_dir or --tfds_name, not both.")
        try:
            data_dir = tfds_source.prepare_data_dir(
                FLAGS.tfds_name, FLAGS.tfds_data_dir, FLAGS.cache_dir, FLAGS.stages
            )
        except ValueError as error:
            raise app.UsageError(str(error)) from error

    if data_dir:
        kind = "celeba"
        object_source = FLAGS.object_data
        if object_source is None and "pretrain_lnet" in FLAGS.stages:
            raise app.UsageError(
                "--data_dir and --tfds_name need --object_data for pretrain_lnet: a folder of class "
                "subfolders or tfds:imagenet2012. Or leave pretrain_lnet out of --stages."
            )
    else:
        data_dir, objects_dir = synthetic.ensure_default_dataset(FLAGS.cache_dir, config.synthetic)
        kind = "synthetic"
        object_source = FLAGS.object_data or objects_dir

    table = celeba.load_celeba(data_dir, on_bad_example=FLAGS.on_bad_example)
    logging.info("Loaded %d images from %s (%s).", len(table), data_dir, kind)
    for part, reason in table.missing_parts.items():
        logging.warning("Missing %s: %s", part, reason)
    return table, object_source or "", kind, data_dir


def resolve_add_aligned(table) -> bool:
    """Return --add_aligned, or whether `table` has aligned images when it is unset."""
    if FLAGS.add_aligned is not None:
        return FLAGS.add_aligned
    return table.has("aligned_paths")


def log_add_aligned(add_aligned: bool) -> None:
    """Log whether finetune_anet adds the aligned images, and whether by default."""
    action, flag = "adds", "--add_aligned"
    if not add_aligned:
        action, flag = "does not add", "--noadd_aligned"
    source = ", the default for this data" if FLAGS.add_aligned is None else ""
    logging.info("finetune_anet %s the aligned training images (%s%s).", action, flag, source)


def open_tfrecords(table, add_aligned: bool) -> dict:
    """Return image kind -> the checked shards of --tfrecord_dir (empty without the flag)."""
    if not FLAGS.tfrecord_dir:
        return {}
    from lnet_anet_tf.stages import inputs

    try:
        shards = inputs.open_tfrecord_dirs(FLAGS.tfrecord_dir, table, FLAGS.stages, add_aligned)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    for kind, source in sorted(shards.items()):
        logging.info("Reading %s images from %d TFRecord files in %s.", kind, len(source.paths), source.directory)
    return shards


def run_stages(context, stage_names: list) -> dict:
    """Run the requested stages in the job's order; return each stage's summary."""
    from lnet_anet_tf.stages import runner

    summaries = {}
    for name in stages_lib.STAGE_NAMES:
        if name not in stage_names:
            continue
        start = time.perf_counter()
        summaries[name] = runner.run_stage(context, name)
        logging.info("Stage %s: %s (%.1f s).", name, summaries[name].get("status", "done"),
                     time.perf_counter() - start)
    return summaries


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    unknown = [name for name in FLAGS.stages if name not in stages_lib.STAGE_NAMES]
    if unknown:
        raise app.UsageError(
            f"Unknown stage(s) {', '.join(unknown)}; choose from {', '.join(stages_lib.STAGE_NAMES)}."
        )

    preset = FLAGS.preset or ("paper" if FLAGS.data_dir or FLAGS.tfds_name else "demo")
    config = resolve_config(preset, FLAGS.config_override, FLAGS.seed)
    model_dir = os.path.abspath(FLAGS.model_dir or os.path.join("runs", preset))

    # Devices, precision and determinism must be set before any model exists.
    strategy = strategy_lib.make_strategy(FLAGS.strategy)
    strategy_lib.configure_precision(FLAGS.mixed_precision)
    if FLAGS.deterministic:
        strategy_lib.enable_determinism(FLAGS.seed)
    logging.info("Strategy %s with %d replica(s).", type(strategy).__name__, strategy.num_replicas_in_sync)

    table, object_source, kind, data_dir = load_data(config)
    add_aligned = resolve_add_aligned(table)
    if "finetune_anet" in FLAGS.stages:
        log_add_aligned(add_aligned)
    shards = open_tfrecords(table, add_aligned)
    run_info = {"data_dir": os.path.abspath(data_dir), "dataset_kind": kind}
    if shards:
        run_info["tfrecord_dirs"] = {image: source.directory for image, source in shards.items()}
    prepare_model_dir(model_dir, config, run_info)

    from lnet_anet_tf.stages.context import RunContext

    context = RunContext(
        config=config,
        table=table,
        object_source=object_source,
        model_dir=model_dir,
        strategy=strategy,
        tfds_data_dir=FLAGS.tfds_data_dir,
        jit_compile=FLAGS.jit_compile,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps or None,
        progress={"auto": None, "on": True, "off": False}[FLAGS.progress],
        on_bad_example=FLAGS.on_bad_example,
        add_aligned=add_aligned,
        export_dir=os.path.abspath(FLAGS.export_dir or os.path.join(model_dir, "export")),
        dataset_kind=kind,
        shards=shards,
    )
    run_stages(context, FLAGS.stages)

    report_path = os.path.join(model_dir, "evaluate", "report.md")
    if "evaluate" in FLAGS.stages and os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as file:
            print(file.read())


if __name__ == "__main__":
    app.run(main)
