"""Write a synthetic dataset in the directory layout and text formats of the CelebA release.

Layout:

    Anno/list_attr_celeba.txt            count, 40 names, rows of 1 / -1
    Anno/list_bbox_celeba.txt            count, header, x_1 y_1 width height
    Anno/list_landmarks_celeba.txt       count, header, 10 integers (in the wild)
    Anno/list_landmarks_align_celeba.txt count, header, 10 integers (aligned)
    Anno/identity_CelebA.txt             "000001.jpg 17", no header
    Eval/list_eval_partition.txt         "000001.jpg 0", no header
    Img/img_celeba/000001.jpg            in-the-wild images
    Img/img_align_celeba/000001.jpg      178 x 218 aligned crops

As in the release, the files list the training images first, then validation, then
test, and the three partitions hold disjoint identities (8:1:1 by identity).
"""

from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np
from absl import logging
from PIL import Image

from lnet_anet_tf import attributes
from lnet_anet_tf.data.synthetic import atomic, parallel, preview, render, traits

JPEG_QUALITY = 90
WILD_DIR = os.path.join("Img", "img_celeba")
ALIGNED_DIR = os.path.join("Img", "img_align_celeba")
_MIN_IMAGE_SIDE = 96


def validate_arguments(num_identities: int, images_per_identity: int, image_size_range) -> None:
    """Raise ValueError, saying which value to change, for sizes that cannot work."""
    if num_identities < 3:
        raise ValueError(
            f"num_identities is {num_identities}, but at least 3 are needed so that the "
            "train, validation and test partitions each get one identity."
        )
    if images_per_identity < 1:
        raise ValueError(f"images_per_identity is {images_per_identity}, but it must be at least 1.")
    low, high = image_size_range
    if not _MIN_IMAGE_SIDE <= low <= high:
        raise ValueError(
            f"image_size_range is {tuple(image_size_range)}, but it must be (low, high) "
            f"with {_MIN_IMAGE_SIDE} <= low <= high, in pixels."
        )


def partition_identities(num_identities: int, seed: int) -> dict:
    """Split identities 1..num_identities 8:1:1 into partition code -> sorted identity ids.

    Validation and test get 10% of the identities each, rounded half up, and at
    least one.
    """
    rng = np.random.default_rng(np.random.SeedSequence((seed, 0)))
    order = rng.permutation(num_identities) + 1
    held_out = max(1, (num_identities + 5) // 10)
    num_train = num_identities - 2 * held_out
    return {
        attributes.PARTITIONS["train"]: np.sort(order[:num_train]),
        attributes.PARTITIONS["validation"]: np.sort(order[num_train : num_train + held_out]),
        attributes.PARTITIONS["test"]: np.sort(order[num_train + held_out :]),
    }


def plan_images(num_identities: int, images_per_identity: int, seed: int) -> list:
    """Return one (file name, identity, image of that identity, partition) per image.

    The order is train, validation, test, shuffled inside each partition, so the
    images of one identity are spread out as in the release.
    """
    rng = np.random.default_rng(np.random.SeedSequence((seed, 0, 1)))
    plan = []
    for code, identities in sorted(partition_identities(num_identities, seed).items()):
        pairs = [(int(identity), image) for identity in identities for image in range(images_per_identity)]
        for position in rng.permutation(len(pairs)):
            identity, image = pairs[position]
            plan.append((f"{len(plan) + 1:06d}.jpg", identity, image, code))
    return plan


def _render_chunk(arguments) -> list:
    """Render and save a chunk of images, in a worker process, and return their annotations."""
    root, seed, image_size_range, variation, chunk = arguments
    rows = []
    for name, identity, image, _ in chunk:
        example = render.render_example(seed, identity, image, image_size_range, variation)
        example.wild.save(os.path.join(root, WILD_DIR, name), quality=JPEG_QUALITY)
        example.aligned.save(os.path.join(root, ALIGNED_DIR, name), quality=JPEG_QUALITY)
        rows.append((example.labels, example.box, example.wild_landmarks, example.aligned_landmarks))
    return rows


def _render_all(root: str, plan: list, seed: int, image_size_range, variation, num_workers: int) -> list:
    chunk_size = max(1, min(128, len(plan) // (8 * num_workers)))
    chunks = [
        (root, seed, tuple(image_size_range), variation, plan[i : i + chunk_size])
        for i in range(0, len(plan), chunk_size)
    ]
    rows = []
    started = time.monotonic()
    report_every = max(1, len(chunks) // 10)
    for done, chunk_rows in enumerate(parallel.ordered_map(_render_chunk, chunks, num_workers), start=1):
        rows.extend(chunk_rows)
        if done % report_every == 0 or done == len(chunks):
            elapsed = time.monotonic() - started
            logging.info("Rendered %d of %d images in %.1f s.", len(rows), len(plan), elapsed)
    return rows


def _write_table(path: str, header: Optional[str], rows: list) -> None:
    with open(path, "w", encoding="ascii") as file:
        if header is not None:
            file.write(f"{len(rows)}\n{header}\n")
        file.write("\n".join(rows) + "\n")


def _write_annotations(root: str, plan: list, rows: list) -> None:
    names = [entry[0] for entry in plan]
    anno = os.path.join(root, "Anno")
    _write_table(
        os.path.join(anno, "list_attr_celeba.txt"),
        " ".join(attributes.ATTRIBUTE_NAMES),
        [name + "".join(f" {int(v):2d}" for v in row[0]) for name, row in zip(names, rows)],
    )
    _write_table(
        os.path.join(anno, "list_bbox_celeba.txt"),
        "image_id " + " ".join(attributes.BOX_COLUMNS),
        [f"{name:<10}" + "".join(f" {v:5d}" for v in row[1]) for name, row in zip(names, rows)],
    )
    for file_name, column in (("list_landmarks_celeba.txt", 2), ("list_landmarks_align_celeba.txt", 3)):
        _write_table(
            os.path.join(anno, file_name),
            " ".join(attributes.LANDMARK_COLUMNS),
            [f"{name:<10}" + "".join(f" {int(v):5d}" for v in row[column]) for name, row in zip(names, rows)],
        )
    _write_table(os.path.join(anno, "identity_CelebA.txt"), None, [f"{e[0]} {e[1]}" for e in plan])
    _write_table(os.path.join(root, "Eval", "list_eval_partition.txt"), None, [f"{e[0]} {e[3]}" for e in plan])


def _write_preview(root: str, plan: list, rows: list, path: str, count: int) -> None:
    examples = []
    for entry, row in list(zip(plan, rows))[:count]:
        name = entry[0]
        wild = Image.open(os.path.join(root, WILD_DIR, name)).convert("RGB")
        aligned = Image.open(os.path.join(root, ALIGNED_DIR, name)).convert("RGB")
        examples.append((name, wild, aligned, row[0], row[1], row[2], row[3]))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}.png"
    preview.contact_sheet(examples).save(temporary)
    os.replace(temporary, path)
    logging.info("Wrote a contact sheet of %d images to %s.", len(examples), path)


def generate_celeba(
    output_dir: str,
    num_identities: int,
    images_per_identity: int,
    seed: int,
    num_workers: Optional[int] = None,
    image_size_range=(160, 256),
    preview_path: Optional[str] = None,
    preview_count: int = 16,
    variation: traits.Variation = traits.DEFAULT_VARIATION,
) -> str:
    """Generate a synthetic CelebA of `num_identities * images_per_identity` images.

    `output_dir` must not exist or be empty; the dataset is built in a temporary
    sibling directory and renamed into place when complete. The bytes written
    depend only on the arguments other than `num_workers` (which defaults to all
    available cores) and the preview arguments. In-the-wild image sides are drawn
    from `image_size_range` (inclusive, pixels), and light and head turn from
    the ranges of `variation`. With `preview_path`, a contact sheet of the first
    `preview_count` images is written there as PNG.
    Returns the absolute path of the dataset directory.
    """
    validate_arguments(num_identities, images_per_identity, image_size_range)
    num_workers = num_workers or parallel.default_num_workers()
    output_dir = os.path.abspath(output_dir)
    plan = plan_images(num_identities, images_per_identity, seed)
    logging.info(
        "Generating %d synthetic CelebA images of %d identities into %s with %d workers.",
        len(plan), num_identities, output_dir, num_workers,
    )
    with atomic.atomic_directory(output_dir) as root:
        for folder in (WILD_DIR, ALIGNED_DIR, "Anno", "Eval"):
            os.makedirs(os.path.join(root, folder))
        rows = _render_all(root, plan, seed, image_size_range, variation, num_workers)
        _write_annotations(root, plan, rows)
    if preview_path is not None:
        _write_preview(output_dir, plan, rows, preview_path, preview_count)
    return output_dir
