"""Use a prepared TFDS dataset as the training job's CelebA input.

The stages and pipelines read a `CelebATable` of image file paths. So that no
pipeline needs a second, TFDS-shaped input path, this module copies a TFDS dataset
once into a folder in CelebA's release layout (`Img/`, `Anno/`, `Eval/`) under the
cache directory. The job then reads that folder with `celeba.load_celeba`, as it
reads `--data_dir`. The trade-off:

- Everything downstream is unchanged and the TFDS copy gets the reader's checks.
- The copy costs disk space (about the size of the images: some 1.4 GB for the
  aligned crops, 10 GB for the in-the-wild photos) and one pass over the dataset,
  the first time only. Image bytes are copied as stored, never re-encoded.

Supported datasets:

- `celeb_a_in_the_wild` (this project's builder): every part of CelebA, so every
  stage can run. Its `with_aligned` config is used when prepared, else `wild_only`.
- `celeb_a` (TFDS's own, version 2.1.0): aligned crops, attributes, aligned
  landmarks and identities only. Its examples carry no file name, so images are
  named 000001.jpg, ... in train, validation, test order, names that do not match
  the release. Only `pretrain_lnet` (which reads `--object_data`) and
  `pretrain_anet` (identities on aligned faces) can run on it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator, Optional

from absl import logging
import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf.data.synthetic import atomic

CELEB_A_IN_THE_WILD = "celeb_a_in_the_wild"
CELEB_A = "celeb_a"
TFDS_NAMES = (CELEB_A_IN_THE_WILD, CELEB_A)

# Stages that TFDS's celeb_a can feed. The other stages need the in-the-wild photos
# (and evaluation the face boxes), which celeb_a does not have.
CELEB_A_STAGES = ("pretrain_lnet", "pretrain_anet")

# Configs of celeb_a_in_the_wild in order of preference.
_IN_THE_WILD_CONFIGS = ("with_aligned", "wild_only")

# Written last into a copied folder: where the copy came from.
SOURCE_FILENAME = "tfds_source.json"

_WILD_DIR = os.path.join("Img", "img_celeba")
_ALIGNED_DIRS = {
    "jpeg": (os.path.join("Img", "img_align_celeba"), ".jpg"),
    "png": (os.path.join("Img", "img_align_celeba_png"), ".png"),
}
_LOG_EVERY = 10_000


def check_stages(name: str, stages) -> None:
    """Raise ValueError when TFDS dataset `name` cannot feed one of `stages`."""
    if name not in TFDS_NAMES:
        raise ValueError(f"Unknown TFDS dataset {name!r}; expected one of {TFDS_NAMES}.")
    if name != CELEB_A:
        return
    unsupported = [stage for stage in stages if stage not in CELEB_A_STAGES]
    if unsupported:
        raise ValueError(
            f"TFDS's celeb_a has only the aligned crops, without the in-the-wild photos "
            f"and face boxes, so it cannot feed stage(s) {', '.join(unsupported)}. Run "
            f"--stages={','.join(CELEB_A_STAGES)} with it, or use "
            f"--tfds_name={CELEB_A_IN_THE_WILD} or --data_dir for all stages."
        )


def load_builder(name: str, data_dir: Optional[str]):
    """Return the prepared TFDS builder of `name` in `data_dir` (TFDS's default if None).

    Raises FileNotFoundError, with the command that prepares it, when the dataset
    is not prepared there.
    """
    import tensorflow_datasets as tfds  # imported here: it is slow to import

    if name == CELEB_A_IN_THE_WILD:
        # Importing the module registers the builder with TFDS.
        from lnet_anet_tf.data.celeb_a_in_the_wild import celeb_a_in_the_wild_dataset_builder  # noqa: F401

        candidates = [f"{name}/{config}" for config in _IN_THE_WILD_CONFIGS]
        command = (
            "tfds build lnet_anet_tf/data/celeb_a_in_the_wild --manual_dir=CELEBA_DIR "
            f"--data_dir={data_dir or '~/tensorflow_datasets'}"
        )
    elif name == CELEB_A:
        candidates = [name]
        command = f"tfds build celeb_a --data_dir={data_dir or '~/tensorflow_datasets'}"
    else:
        raise ValueError(f"Unknown TFDS dataset {name!r}; expected one of {TFDS_NAMES}.")

    for candidate in candidates:
        builder = tfds.builder(candidate, data_dir=data_dir)
        if builder.is_prepared():
            return builder
    raise FileNotFoundError(
        f"TFDS dataset {name} is not prepared in {builder.data_dir_root}. Prepare it with "
        f"`{command}` and pass that --data_dir as --tfds_data_dir."
    )


def prepare_data_dir(name: str, tfds_data_dir: Optional[str], cache_dir: str, stages) -> str:
    """Copy TFDS dataset `name` into a CelebA folder under `cache_dir`; return the folder.

    A folder copied before from the same prepared dataset is reused. Raises
    ValueError when the dataset cannot feed one of `stages`.
    """
    check_stages(name, stages)
    builder = load_builder(name, tfds_data_dir)
    split_counts = {
        split: builder.info.splits[split].num_examples
        for split in attributes.PARTITIONS
        if split in builder.info.splits
    }
    output_dir = os.path.join(cache_dir, "tfds", _cache_key(builder, split_counts))
    if os.path.isfile(os.path.join(output_dir, SOURCE_FILENAME)):
        logging.info("Reusing the CelebA copy of %s in %s.", builder.info.full_name, output_dir)
        return output_dir
    return materialize(builder, output_dir, splits=tuple(split_counts))


def _cache_key(builder, split_counts: dict) -> str:
    # A rebuilt dataset gets a new folder: the key covers where it is and its sizes.
    source = json.dumps(
        {"data_path": os.fspath(builder.data_path), "splits": split_counts}, sort_keys=True
    )
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return f"{builder.info.full_name.replace('/', '-')}-{digest}"


def materialize(builder, output_dir: str, splits=tuple(attributes.PARTITIONS)) -> str:
    """Write the examples of `splits` of a TFDS CelebA builder as a CelebA release folder.

    `builder` is a `celeb_a_in_the_wild` or `celeb_a` builder; `splits` are
    partition names ("train", "validation", "test"). The folder is written under a
    temporary name and renamed when complete; `output_dir` must not exist or be
    empty. Returns `output_dir`.
    """
    convert = _converter(builder)
    output_dir = os.path.abspath(output_dir)
    counts = {}
    with atomic.atomic_directory(output_dir) as root:
        writer = _ReleaseWriter(root)
        for split in splits:
            counts[split] = 0
            for example in _examples(builder, split):
                writer.add(convert(example, len(writer.rows) + 1), attributes.PARTITIONS[split])
                counts[split] += 1
                if len(writer.rows) % _LOG_EVERY == 0:
                    logging.info("Copied %d images of %s.", len(writer.rows), builder.info.full_name)
        if not writer.rows:
            raise ValueError(
                f"TFDS dataset {builder.info.full_name} has no examples in splits {splits}."
            )
        writer.finish()
        source = {"builder": builder.info.full_name, "data_path": os.fspath(builder.data_path),
                  "splits": counts}
        with open(os.path.join(root, SOURCE_FILENAME), "w", encoding="utf-8") as file:
            json.dump(source, file, indent=2, sort_keys=True)
    logging.info("Copied %s (%s) into %s.", builder.info.full_name, counts, output_dir)
    return output_dir


def _examples(builder, split: str) -> Iterator[dict]:
    import tensorflow_datasets as tfds

    image_keys = [key for key in ("image", "aligned_image") if key in builder.info.features]
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=False,
        # The encoded bytes are copied as they are; decoding would only cost time.
        decoders={key: tfds.decode.SkipDecoding() for key in image_keys},
    )
    return tfds.as_numpy(dataset)


def _converter(builder):
    """Return the function that maps one example of `builder` to a row dict for `_ReleaseWriter`."""
    name = builder.info.name
    if name == CELEB_A_IN_THE_WILD:
        return _in_the_wild_row
    if name == CELEB_A:
        has_identity = "identity" in builder.info.features
        return lambda example, number: _celeb_a_row(example, number, has_identity)
    raise ValueError(f"TFDS dataset {name} is not supported; expected one of {TFDS_NAMES}.")


def _in_the_wild_row(example: dict, number: int) -> dict:
    del number  # The examples carry their released file name.
    row = {
        "name": example["image_id"].decode("utf-8"),
        "wild_image": example["image"],
        "attributes": np.asarray(example["attributes"], np.uint8),
        "boxes": np.asarray(example["bbox_pixels"], np.int64),
        "wild_landmarks": np.asarray(example["landmarks"], np.int64).reshape(-1),
        "identities": np.asarray([example["identity"]], np.int64),
    }
    if "aligned_image" in example:
        row["aligned_image"] = example["aligned_image"]
        row["aligned_landmarks"] = np.asarray(example["aligned_landmarks"], np.int64).reshape(-1)
    return row


def _celeb_a_row(example: dict, number: int, has_identity: bool) -> dict:
    row = {
        "name": f"{number:06d}.jpg",
        "aligned_image": example["image"],
        "attributes": np.asarray(
            [example["attributes"][name] for name in attributes.ATTRIBUTE_NAMES], np.uint8
        ),
        "aligned_landmarks": np.asarray(
            [example["landmarks"][name] for name in attributes.LANDMARK_COLUMNS], np.int64
        ),
    }
    # Versions of celeb_a before 2.1.0 have no identity feature.
    if has_identity:
        row["identities"] = np.asarray([example["identity"]["Identity_No"]], np.int64)
    return row


class _ReleaseWriter:
    """Writes image files as they come and the annotation files at the end."""

    # Annotation file of each column, and its header line (None: no count or header).
    _FILES = {
        "attributes": ("Anno/list_attr_celeba.txt", " ".join(attributes.ATTRIBUTE_NAMES)),
        "boxes": ("Anno/list_bbox_celeba.txt", "image_id " + " ".join(attributes.BOX_COLUMNS)),
        "wild_landmarks": ("Anno/list_landmarks_celeba.txt", " ".join(attributes.LANDMARK_COLUMNS)),
        "aligned_landmarks": (
            "Anno/list_landmarks_align_celeba.txt", " ".join(attributes.LANDMARK_COLUMNS)
        ),
        "identities": ("Anno/identity_CelebA.txt", None),
        "partitions": ("Eval/list_eval_partition.txt", None),
    }

    def __init__(self, root: str):
        self.root = root
        self.rows = []
        self.aligned_format = None
        for folder in ("Anno", "Eval"):
            os.makedirs(os.path.join(root, folder), exist_ok=True)

    def add(self, row: dict, partition: int) -> None:
        name = row["name"]
        if "wild_image" in row:
            self._write(os.path.join(_WILD_DIR, name), row.pop("wild_image"))
        if "aligned_image" in row:
            folder, extension = self._aligned_folder(name, row["aligned_image"])
            stem = os.path.splitext(name)[0]
            self._write(os.path.join(folder, stem + extension), row.pop("aligned_image"))
        row["partitions"] = np.asarray([partition], np.int64)
        self.rows.append(row)

    def _aligned_folder(self, name: str, contents: bytes) -> tuple[str, str]:
        # The reader takes the aligned crops from one folder, JPEG or PNG, so every
        # crop must have the format of the first.
        image_format = "png" if contents.startswith(b"\x89PNG") else "jpeg"
        if self.aligned_format is None:
            self.aligned_format = image_format
        elif image_format != self.aligned_format:
            raise ValueError(
                f"Aligned image {name} is {image_format.upper()} but the earlier aligned "
                f"images are {self.aligned_format.upper()}; the CelebA layout keeps one "
                "format per folder. Rebuild the TFDS dataset from one aligned folder."
            )
        return _ALIGNED_DIRS[image_format]

    def _write(self, relative_path: str, contents: bytes) -> None:
        # Image folders are created on first use: the reader takes an existing but
        # empty folder for a copy with every image missing.
        os.makedirs(os.path.join(self.root, os.path.dirname(relative_path)), exist_ok=True)
        with open(os.path.join(self.root, relative_path), "wb") as file:
            file.write(contents)

    def finish(self) -> None:
        """Write one annotation file per column that every row has."""
        names = [row["name"] for row in self.rows]
        for column, (relative_path, header) in self._FILES.items():
            if not all(column in row for row in self.rows):
                continue
            values = np.stack([row[column] for row in self.rows])
            if column == "attributes":
                values = np.where(values == 1, 1, -1)
            lines = [f"{name} " + " ".join(str(int(v)) for v in row) for name, row in zip(names, values)]
            if header is not None:
                lines = [str(len(lines)), header] + lines
            with open(os.path.join(self.root, relative_path), "w", encoding="ascii") as file:
                file.write("\n".join(lines) + "\n")
