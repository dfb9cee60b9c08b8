"""Export a trained run: a SavedModel for TF Serving and TFLite models for phones.

    python -m lnet_anet_tf.export --model_dir=runs/demo --export_dir=export/demo

writes

    <export_dir>/saved_model/lnet_anet/<version>/   SavedModel, signatures in `serving`
    <export_dir>/tflite/cascade_<variant>.tflite    whole cascade, see `tflite_export`
    <export_dir>/tflite/anet_<variant>.tflite       ANet + SVMs on a face crop
    <export_dir>/tflite/labels.txt                  the 40 attribute names, in output order
    <export_dir>/tflite/manifest.json               input sizes and variants

SavedModel versions are integers, as TF Serving requires: `--version` sets one,
and by default the export takes 1 + the highest version already in the folder
(1 in an empty one). An existing version is never overwritten. Each version is
written into a temporary folder beside it (named `.tmp-...`, which TF Serving
does not load) and renamed when complete, so a crash leaves no half-written
version. The `tflite` folder is replaced as a whole in the same way. Each export
first deletes the temporary folders that killed exports left in the folder it
writes to (see `export_staging`).

The int8 variants and quantization-aware training read training images: the CLI
reads the table from `--data_dir`, or from the data directory recorded in the
run's `run_info.json`.
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from lnet_anet_tf import attributes
from lnet_anet_tf import export_data
from lnet_anet_tf import export_staging
from lnet_anet_tf import serving
from lnet_anet_tf import tflite_export
from lnet_anet_tf import trained
from lnet_anet_tf.cascade import Cascade
from lnet_anet_tf.data.table import CelebATable

MODEL_NAME = "lnet_anet"
SAVED_MODEL_DIR = "saved_model"
TFLITE_DIR = "tflite"
MANIFEST_FILENAME = "manifest.json"
ATTRIBUTE_NAMES_FILENAME = "attribute_names.txt"
DEFAULT_CALIBRATION_IMAGES = 200
# 1,000 faces gave the demo run's qat_int8 cascade the parity that 2,000 gave
# (docs/benchmarks.md, "Export parity") and take half the time to cut and train on.
DEFAULT_QAT_IMAGES = 1000
DEFAULT_QAT_EPOCHS = 2

_VERSION_PATTERN = re.compile(r"^[0-9]+$")

# Tags of the staging folders (`.tmp-<tag>-<random>`) in the SavedModel base folder
# (the version being written) and in the export folder. `old` folders held the
# replaced `tflite` folder in earlier versions of this module.
_SAVED_MODEL_STAGING_TAGS = "[0-9]+"
_TFLITE_STAGING_TAG = "tflite"
_TFLITE_STAGING_TAGS = "tflite|old"


def saved_model_base(export_dir: str) -> str:
    """Return `<export_dir>/saved_model/lnet_anet`, the folder TF Serving watches."""
    return os.path.join(export_dir, SAVED_MODEL_DIR, MODEL_NAME)


def existing_versions(base_dir: str) -> list[int]:
    """Return the SavedModel versions in `base_dir`, ascending."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(base_dir)
        if _VERSION_PATTERN.match(name) and os.path.isdir(os.path.join(base_dir, name))
    )


def next_version(base_dir: str) -> int:
    """Return 1 + the highest version in `base_dir`, or 1 when it has none."""
    versions = existing_versions(base_dir)
    return versions[-1] + 1 if versions else 1


def export_saved_model(cascade: Cascade, export_dir: str, version: Optional[int] = None) -> str:
    """Save the serving module as version `version` (default: the next one); return its path."""
    base_dir = saved_model_base(export_dir)
    version = next_version(base_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"--version must be a positive integer, got {version}.")
    version_dir = os.path.join(base_dir, str(version))
    if os.path.exists(version_dir):
        raise FileExistsError(
            f"{version_dir} already exists. Pass another --version, or leave it unset "
            f"to write version {next_version(base_dir)}."
        )

    export_staging.remove_stale(base_dir, _SAVED_MODEL_STAGING_TAGS)
    with export_staging.staging_folder(base_dir, str(version)) as temporary:
        names_dir = os.path.join(temporary, "source")
        os.makedirs(names_dir)
        names_path = os.path.join(names_dir, ATTRIBUTE_NAMES_FILENAME)
        with open(names_path, "w", encoding="utf-8") as file:
            file.write("\n".join(attributes.ATTRIBUTE_NAMES) + "\n")

        module = serving.ServingModule(cascade, names_path)
        model_dir = os.path.join(temporary, "model")
        logging.info("Saving the SavedModel (version %d) into %s.", version, temporary)
        try:
            tf.saved_model.save(module.saveable(), model_dir, signatures=module.signatures())
        except (tf.errors.OpError, OSError) as error:
            raise OSError(
                f"Writing SavedModel version {version} for {version_dir} failed: "
                f"{_write_error_reason(error)}. Nothing was written to {version_dir}, and "
                f"the existing versions {existing_versions(base_dir) or '(none)'} are "
                "unchanged. Check the free disk space and the folder's permissions, then "
                "export again."
            ) from error
        os.rename(model_dir, version_dir)
    logging.info("Wrote SavedModel version %d to %s.", version, version_dir)
    return version_dir


def load_table(model_dir: str, data_dir: Optional[str] = None) -> CelebATable:
    """Read the dataset of `data_dir`, or the one recorded in `<model_dir>/run_info.json`."""
    from lnet_anet_tf.data import celeba

    if data_dir is None:
        data_dir = trained.recorded_data_dir(model_dir)
        if data_dir is None:
            raise FileNotFoundError(
                f"{os.path.join(model_dir, trained.RUN_INFO_FILENAME)} not found or "
                "without a data_dir, so the training data is unknown. Pass "
                "--data_dir, or leave the int8 and qat_int8 variants out of --variants."
            )
    logging.info("Reading the dataset in %s for calibration and QAT.", data_dir)
    return celeba.load_celeba(data_dir)


def export_tflite(
    cascade: Cascade,
    model_dir: str,
    export_dir: str,
    table: Optional[CelebATable],
    *,
    variants: Sequence[str] = tflite_export.VARIANTS,
    canvas_side: int = tflite_export.DEFAULT_CANVAS_SIDE,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    qat_images: int = DEFAULT_QAT_IMAGES,
    qat_epochs: int = DEFAULT_QAT_EPOCHS,
    seed: int = 0,
) -> dict:
    """Write every TFLite model of `variants` into `<export_dir>/tflite`; return the paths.

    The int8 variants calibrate on `calibration_images` training images (their
    canvases for `cascade`, their face crops for `anet`). `qat_int8` fine-tunes
    ANet on the face crops of `qat_images` training images for `qat_epochs`.
    """
    variants = list(variants)
    needs_data = any(variant in tflite_export.QUANTIZED_VARIANTS for variant in variants)
    if needs_data and table is None:
        raise ValueError(
            f"The variants {tflite_export.QUANTIZED_VARIANTS} need the training images; "
            "pass table, or leave them out of variants."
        )

    side = tflite_export.face_side(cascade)
    calibration_canvases = calibration_faces = qat_cascade = None
    if needs_data:
        rows = export_data.spread_rows(table, "train", calibration_images)
        paths = rows.require("wild_paths", "Calibrating the int8 TFLite models")
        logging.info("Calibrating on %d training images.", len(paths))
        calibration_canvases = [canvas for canvas, _ in export_data.canvases(paths, canvas_side)]
        calibration_faces = list(
            export_data.face_crops(cascade, paths, side)["crops"].astype(np.float32)
        )
    if "qat_int8" in variants:
        qat_cascade = quantization_aware_cascade(
            cascade, model_dir, table, qat_images, qat_epochs, seed
        )

    target = os.path.join(export_dir, TFLITE_DIR)
    export_staging.remove_stale(export_dir, _TFLITE_STAGING_TAGS)
    with export_staging.staging_folder(export_dir, _TFLITE_STAGING_TAG) as staging:
        models_dir = os.path.join(staging, TFLITE_DIR)
        os.makedirs(models_dir)
        try:
            written = tflite_export.write_tflite_models(
                models_dir, cascade, variants, canvas_side,
                calibration_canvases, calibration_faces, qat_cascade,
            )
        except OSError as error:
            existing = "is unchanged" if os.path.exists(target) else "was not created"
            raise OSError(
                f"Writing the TFLite models for {target} failed: {_write_error_reason(error)}. "
                f"{target} {existing}. Check the free disk space and the folder's "
                "permissions, then export again."
            ) from error
        manifest = {
            "canvas_side": canvas_side,
            "face_side": side,
            "pad_value": tflite_export.PAD_VALUE,
            "variants": variants,
            "calibration_images": len(calibration_canvases or []),
            "qat": {"images": qat_images, "epochs": qat_epochs} if qat_cascade else None,
            "files": sorted(os.path.basename(path) for path in written.values()),
        }
        with open(os.path.join(models_dir, MANIFEST_FILENAME), "w", encoding="utf-8") as file:
            json.dump(manifest, file, indent=2, sort_keys=True)
            file.write("\n")
        _replace_directory(models_dir, target, backup=os.path.join(staging, "old"))

    paths = {name: os.path.join(target, os.path.basename(path)) for name, path in written.items()}
    paths["manifest"] = os.path.join(target, MANIFEST_FILENAME)
    return paths


def _write_error_reason(error: Exception) -> str:
    """Return the reason of a failed write, without TensorFlow's function and op names."""
    if not isinstance(error, tf.errors.OpError):
        return str(error)
    # Op errors read "{{function_node ...}} message [Op:Name]".
    reason = re.sub(r"^\{\{[^}]*\}\}\s*", "", error.message)
    return re.sub(r"\s*\[Op:\w+\]$", "", reason)


def _replace_directory(source: str, target: str, backup: str) -> None:
    """Move `source` to `target`, moving an existing `target` to `backup` first.

    `backup` must not exist and must be on the same file system. When the second
    rename fails, the old `target` is moved back before the error propagates.
    """
    if not os.path.exists(target):
        os.rename(source, target)
        return
    os.rename(target, backup)
    try:
        os.rename(source, target)
    except OSError:
        os.rename(backup, target)
        raise


def quantization_aware_cascade(
    cascade: Cascade,
    model_dir: str,
    table: CelebATable,
    qat_images: int,
    qat_epochs: int,
    seed: int,
) -> Cascade:
    """Return the cascade with ANet replaced by its quantization-aware fine-tuned twin.

    ANet is fine-tuned on the face crops that the float cascade cuts from
    `qat_images` training images. The LNets stay float here; the converter
    calibrates them as in the int8 variant.
    """
    from lnet_anet_tf import quantize

    rows = export_data.spread_rows(table, "train", qat_images)
    paths = rows.require("wild_paths", "Quantization-aware training of ANet")
    logging.info("Quantization-aware training of ANet on %d training faces.", len(paths))
    faces = export_data.face_crops(cascade, paths, tflite_export.face_side(cascade))
    svm = trained.load_svm(model_dir)
    anet = quantize.quantization_aware_anet(
        cascade.anet, svm, faces["crops"], epochs=qat_epochs, seed=seed
    )
    return Cascade(
        cascade.lnet_o,
        cascade.lnet_s,
        anet,
        svm_weights=svm["weights"],
        svm_bias=svm["bias"],
        platt_scale=svm["platt_scale"],
        platt_offset=svm["platt_offset"],
        config=trained.load_config(model_dir),
        name="qat_cascade",
    )


def export_all(
    model_dir: str,
    export_dir: str,
    table: Optional[CelebATable] = None,
    *,
    version: Optional[int] = None,
    saved_model: bool = True,
    variants: Sequence[str] = tflite_export.VARIANTS,
    **tflite_options,
) -> dict:
    """Export the run in `model_dir` into `export_dir`; return the written paths.

    The result maps "saved_model" to the version folder and each TFLite model
    name (for example "cascade_int8"), "labels" and "manifest" to their files.
    When `table` is None and a variant needs training images, the table is read
    from the data directory in `run_info.json`. `tflite_options` are the keyword
    arguments of `export_tflite`. An empty `variants` skips TFLite.
    """
    config = trained.load_config(model_dir)
    tflite_options.setdefault("seed", config.seed)
    cascade = trained.load_cascade(model_dir, config)
    paths = {}
    if saved_model:
        paths["saved_model"] = export_saved_model(cascade, export_dir, version)
    variants = list(variants)
    if variants:
        if table is None and any(v in tflite_export.QUANTIZED_VARIANTS for v in variants):
            table = load_table(model_dir)
        paths.update(
            export_tflite(
                cascade, model_dir, export_dir, table, variants=variants, **tflite_options
            )
        )
    return paths


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command-line flags.

    Only the command line calls this, so that a program that imports this module
    and has flags of the same names (the training job) does not define them twice.
    """
    flags.DEFINE_string("model_dir", None, "Model directory of a finished training run.")
    flags.DEFINE_string("export_dir", None, "Where to write saved_model/ and tflite/.")
    flags.DEFINE_integer(
        "version", None,
        "SavedModel version number (a positive integer). Default: 1 + the highest existing.",
    )
    flags.DEFINE_string(
        "data_dir", None,
        "Dataset for int8 calibration and QAT. Default: the data_dir in <model_dir>/run_info.json.",
    )
    flags.DEFINE_bool("saved_model", True, "Write the SavedModel.")
    flags.DEFINE_list(
        "variants", list(tflite_export.VARIANTS),
        f"TFLite variants to write, comma-separated, from {', '.join(tflite_export.VARIANTS)}; "
        "empty for none.",
    )
    flags.DEFINE_integer(
        "canvas_side", tflite_export.DEFAULT_CANVAS_SIDE,
        "Side in pixels of the square canvas that the TFLite cascade takes.",
    )
    flags.DEFINE_integer(
        "calibration_images", DEFAULT_CALIBRATION_IMAGES,
        "Training images that calibrate the int8 variants.",
    )
    flags.DEFINE_integer(
        "qat_images", DEFAULT_QAT_IMAGES, "Training images whose faces fine-tune ANet in QAT."
    )
    flags.DEFINE_integer("qat_epochs", DEFAULT_QAT_EPOCHS, "Epochs of quantization-aware training.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    if not FLAGS.model_dir or not FLAGS.export_dir:
        raise app.UsageError("--model_dir and --export_dir are required.")
    unknown = [v for v in FLAGS.variants if v not in tflite_export.VARIANTS]
    if unknown:
        raise app.UsageError(
            f"Unknown --variants {', '.join(unknown)}; choose from "
            f"{', '.join(tflite_export.VARIANTS)}."
        )

    table = None
    if any(v in tflite_export.QUANTIZED_VARIANTS for v in FLAGS.variants):
        table = load_table(FLAGS.model_dir, FLAGS.data_dir)
    paths = export_all(
        FLAGS.model_dir,
        FLAGS.export_dir,
        table,
        version=FLAGS.version,
        saved_model=FLAGS.saved_model,
        variants=FLAGS.variants,
        canvas_side=FLAGS.canvas_side,
        calibration_images=FLAGS.calibration_images,
        qat_images=FLAGS.qat_images,
        qat_epochs=FLAGS.qat_epochs,
    )
    print(json.dumps(paths, indent=2, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(main)
