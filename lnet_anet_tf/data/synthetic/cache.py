"""Generate the default synthetic datasets once and reuse them from a cache directory."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional

from absl import logging

from lnet_anet_tf.config import SyntheticConfig
from lnet_anet_tf.data.synthetic import objects, traits, writer

# Raise this whenever a change to the generator changes the images or labels it
# writes, so that caches made by older code are not reused.
GENERATOR_VERSION = 1
MARKER_FILE = "COMPLETE.json"
# The training job's cache folder for the synthetic datasets when --cache_dir is not given.
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "lnet_anet_tf")
OBJECT_IMAGE_SIZE = 128


def _parameters(config: SyntheticConfig) -> dict:
    parameters = {
        "generator_version": GENERATOR_VERSION,
        "synthetic_config": dataclasses.asdict(config),
        "image_size_range": [160, 256],
        "object_image_size": OBJECT_IMAGE_SIZE,
    }
    # Return the JSON form, in which tuples are lists, so that it equals the marker file's contents.
    return json.loads(json.dumps(parameters))


def _read_marker(directory: str) -> Optional[dict]:
    try:
        with open(os.path.join(directory, MARKER_FILE), encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def variation(config: SyntheticConfig) -> traits.Variation:
    """Return the light and head-turn ranges that `config` sets.

    Raises ValueError naming the `synthetic.` setting when a range is invalid.
    """
    names = [field.name for field in dataclasses.fields(traits.Variation)]
    try:
        return traits.Variation(**{name: getattr(config, name) for name in names})
    except ValueError as error:
        raise ValueError(f"The config setting synthetic.{error}") from None


def _generate(directory: str, config: SyntheticConfig, ranges, parameters: dict, num_workers) -> None:
    writer.generate_celeba(
        os.path.join(directory, "celeba"),
        num_identities=config.num_identities,
        images_per_identity=config.images_per_identity,
        seed=config.seed,
        num_workers=num_workers,
        variation=ranges,
    )
    objects.generate_object_classes(
        os.path.join(directory, "objects"),
        num_classes=config.object_classes,
        images_per_class=config.object_images_per_class,
        seed=config.seed,
        image_size=OBJECT_IMAGE_SIZE,
        num_workers=num_workers,
    )
    with open(os.path.join(directory, MARKER_FILE), "w", encoding="utf-8") as file:
        json.dump(parameters, file, indent=2, sort_keys=True)


def ensure_default_dataset(
    cache_dir: str, synthetic_config: SyntheticConfig, num_workers: Optional[int] = None
) -> tuple[str, str]:
    """Return (celeba_dir, objects_dir), generating both into `cache_dir` if needed.

    The datasets live in `cache_dir/synthetic-<hash of the parameters>/`, next to a
    marker file written last. A directory whose marker matches the parameters is
    reused as is; one without it (left by a process that was killed) is replaced.
    Generation happens in a temporary directory that is renamed into place, so
    concurrent callers never see a partial dataset: if another process finishes
    first, its copy is kept and this one is discarded.
    """
    ranges = variation(synthetic_config)
    parameters = _parameters(synthetic_config)
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]
    final = os.path.join(os.path.abspath(cache_dir), f"synthetic-{key}")
    result = (os.path.join(final, "celeba"), os.path.join(final, "objects"))
    if _read_marker(final) == parameters:
        logging.info("Reusing the synthetic datasets in %s.", final)
        return result

    if os.path.exists(final):
        logging.warning("Removing %s: its completion marker is missing or does not match.", final)
        shutil.rmtree(final)
    os.makedirs(cache_dir, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".synthetic-tmp-", dir=cache_dir)
    try:
        _generate(temporary, synthetic_config, ranges, parameters, num_workers)
        os.chmod(temporary, 0o755)
        os.rename(temporary, final)
    except OSError:
        if _read_marker(final) != parameters:
            raise
        logging.info("Another process finished %s first, so its copy is used.", final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return result
