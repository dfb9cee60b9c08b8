"""Write tiny CelebA copies in each on-disk layout for the reader's tests."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from lnet_anet_tf import attributes


@dataclasses.dataclass
class Annotations:
    """What a tiny CelebA copy lists, in the release's value conventions."""

    names: list
    attributes: np.ndarray  # int [N, 40], 1 or -1
    boxes: np.ndarray  # int [N, 4]
    wild_landmarks: np.ndarray  # int [N, 10]
    aligned_landmarks: np.ndarray  # int [N, 10]
    identities: np.ndarray  # int [N]
    partitions: np.ndarray  # int [N]


def make_annotations(num_images: int = 6, seed: int = 0) -> Annotations:
    rng = np.random.default_rng(seed)
    # Two images per identity; each identity stays inside one partition.
    identities = np.arange(num_images) // 2 + 1
    partitions = np.minimum(identities - 1, 2)
    return Annotations(
        names=[f"{index:06d}.jpg" for index in range(1, num_images + 1)],
        attributes=rng.choice([-1, 1], size=(num_images, attributes.NUM_ATTRIBUTES)),
        boxes=np.column_stack(
            [rng.integers(0, 50, (num_images, 2)), rng.integers(20, 300, (num_images, 2))]
        ),
        wild_landmarks=rng.integers(0, 500, (num_images, 10)),
        aligned_landmarks=rng.integers(0, 178, (num_images, 10)),
        identities=identities,
        partitions=partitions,
    )


def _rows(names, values, width):
    # The release right-aligns values, so columns are separated by runs of spaces.
    values = np.asarray(values).reshape(len(names), -1)
    return [
        f"{name} " + " ".join(f"{value:{width}d}" for value in row)
        for name, row in zip(names, values)
    ]


def release_texts(annotations: Annotations) -> dict:
    """Return file name -> text of the release's annotation files."""
    names = annotations.names
    count = str(len(names))

    def counted(header, rows):
        return "\n".join([count, header] + rows) + "\n"

    return {
        "list_attr_celeba.txt": counted(
            " ".join(attributes.ATTRIBUTE_NAMES) + " ", _rows(names, annotations.attributes, 2)
        ),
        "list_bbox_celeba.txt": counted(
            "image_id x_1 y_1 width height", _rows(names, annotations.boxes, 5)
        ),
        "list_landmarks_celeba.txt": counted(
            " ".join(attributes.LANDMARK_COLUMNS), _rows(names, annotations.wild_landmarks, 4)
        ),
        "list_landmarks_align_celeba.txt": counted(
            " ".join(attributes.LANDMARK_COLUMNS), _rows(names, annotations.aligned_landmarks, 4)
        ),
        "identity_CelebA.txt": "\n".join(_rows(names, annotations.identities, 1)) + "\n",
        "list_eval_partition.txt": "\n".join(_rows(names, annotations.partitions, 1)) + "\n",
    }


def csv_texts(annotations: Annotations) -> dict:
    """Return file name -> text of the CSV copy's annotation files."""

    def table(columns, values):
        values = np.asarray(values).reshape(len(annotations.names), -1)
        lines = [",".join(("image_id",) + tuple(columns))]
        for name, row in zip(annotations.names, values):
            lines.append(",".join([name] + [str(value) for value in row]))
        return "\n".join(lines) + "\n"

    return {
        "list_attr_celeba.csv": table(attributes.ATTRIBUTE_NAMES, annotations.attributes),
        "list_bbox_celeba.csv": table(attributes.BOX_COLUMNS, annotations.boxes),
        "list_landmarks_align_celeba.csv": table(
            attributes.LANDMARK_COLUMNS, annotations.aligned_landmarks
        ),
        "list_eval_partition.csv": table(("partition",), annotations.partitions),
    }


def write_images(directory: str, names: list, extension: str = ".jpg") -> None:
    os.makedirs(directory, exist_ok=True)
    for index, name in enumerate(names):
        pixels = np.full((8, 8, 3), index * 20 % 256, dtype=np.uint8)
        stem = os.path.splitext(name)[0]
        Image.fromarray(pixels).save(os.path.join(directory, stem + extension))


def write_release(
    root, annotations: Annotations, flat: bool = False, aligned_png: bool = False
) -> str:
    """Write the release layout (`Img/`, `Anno/`, `Eval/`, or one flat folder); return root."""
    root = str(root)
    anno_dir = root if flat else os.path.join(root, "Anno")
    eval_dir = root if flat else os.path.join(root, "Eval")
    image_dir = root if flat else os.path.join(root, "Img")
    for name, text in release_texts(annotations).items():
        folder = eval_dir if name == "list_eval_partition.txt" else anno_dir
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w", newline="") as file:
            file.write(text)

    write_images(os.path.join(image_dir, "img_celeba"), annotations.names)
    if aligned_png:
        write_images(os.path.join(image_dir, "img_align_celeba_png"), annotations.names, ".png")
    else:
        write_images(os.path.join(image_dir, "img_align_celeba"), annotations.names)
    return root


def write_csv_copy(root, annotations: Annotations) -> str:
    """Write the re-packaged CSV layout with nested aligned images; return root."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    for name, text in csv_texts(annotations).items():
        with open(os.path.join(root, name), "w", newline="") as file:
            file.write(text)
    write_images(os.path.join(root, "img_align_celeba", "img_align_celeba"), annotations.names)
    return root


def edit_lines(path: str, edit) -> None:
    """Rewrite the text file at `path` as "\\n".join(edit(lines))."""
    with open(path, newline="") as file:
        lines = file.read().split("\n")
    with open(path, "w", newline="") as file:
        file.write("\n".join(edit(lines)))
