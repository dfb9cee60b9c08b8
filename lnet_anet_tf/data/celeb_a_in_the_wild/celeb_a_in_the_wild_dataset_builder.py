"""TFDS builder for CelebA in the wild: the original photos with face boxes and identities.

TFDS's own `celeb_a` holds only the aligned 178x218 crops, without the in-the-wild
photos and boxes that the localization nets train and are evaluated on. This
builder reads a manually downloaded CelebA copy with the project's reader
(`lnet_anet_tf.data.celeba.load_celeba`), so it accepts what the reader accepts and
reports bad rows and missing files the same way.

Features of one example:

| feature | type | content |
| --- | --- | --- |
| `image_id` | Text | file name in the annotation files, e.g. "000001.jpg" |
| `image` | Image, JPEG | the in-the-wild photo, bytes as released |
| `bbox` | BBoxFeature | face box, normalized [ymin, xmin, ymax, xmax], clipped to [0, 1] |
| `bbox_pixels` | int32 [4] | face box as in `list_bbox_celeba.txt`: x_1, y_1, width, height |
| `landmarks` | int32 [5, 2] | (x, y) pixels of lefteye, righteye, nose, leftmouth, rightmouth |
| `attributes` | bool [40] | the 40 attributes in `lnet_anet_tf.attributes.ATTRIBUTE_NAMES` order |
| `identity` | int32 | identity id of `identity_CelebA.txt` |
| `aligned_image` | Image | the aligned crop (config `with_aligned` only) |
| `aligned_landmarks` | int32 [5, 2] | landmarks in the aligned crop (config `with_aligned` only) |

Attributes are one [40] tensor rather than 40 named features, because every model
in this project consumes them as one vector. The feature's doc lists the names.
Splits come from `Eval/list_eval_partition.txt`: train (0), validation (1), test (2).
"""

from __future__ import annotations

import dataclasses

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from lnet_anet_tf import attributes
from lnet_anet_tf.data import celeba

_HOMEPAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
_CITATION = """\
@inproceedings{liu2015faceattributes,
  title = {Deep Learning Face Attributes in the Wild},
  author = {Liu, Ziwei and Luo, Ping and Wang, Xiaogang and Tang, Xiaoou},
  booktitle = {Proceedings of International Conference on Computer Vision (ICCV)},
  year = {2015}
}
"""

# Columns that every example needs, and the aligned columns of `with_aligned`.
_WILD_PARTS = ("wild_paths", "boxes", "wild_landmarks", "identities", "partitions")
_ALIGNED_PARTS = ("aligned_paths", "aligned_landmarks")


@dataclasses.dataclass
class CelebAInTheWildConfig(tfds.core.BuilderConfig):
    """Whether examples also carry the aligned crop of the same photo."""

    include_aligned: bool = True


class Builder(tfds.core.GeneratorBasedBuilder):
    """CelebA's in-the-wild photos with boxes, landmarks, identities and attributes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        CelebAInTheWildConfig(
            name="with_aligned",
            description="In-the-wild photos and the aligned crops (Img/img_align_celeba/).",
            include_aligned=True,
        ),
        CelebAInTheWildConfig(
            name="wild_only",
            description="In-the-wild photos only; Img/img_align_celeba/ is not needed.",
            include_aligned=False,
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    CelebA cannot be downloaded automatically. Request it from
    https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (the "In-The-Wild Images",
    "Align&Cropped Images", "Anno" and "Eval" folders of the release), unpack the
    7z parts of Img/img_celeba.7z and put the release layout in the manual dir:

      <manual_dir>/Img/img_celeba/000001.jpg ...        in-the-wild photos
      <manual_dir>/Img/img_align_celeba/000001.jpg ...  aligned crops (with_aligned only)
      <manual_dir>/Anno/list_attr_celeba.txt
      <manual_dir>/Anno/list_bbox_celeba.txt
      <manual_dir>/Anno/list_landmarks_celeba.txt
      <manual_dir>/Anno/list_landmarks_align_celeba.txt  (with_aligned only)
      <manual_dir>/Anno/identity_CelebA.txt
      <manual_dir>/Eval/list_eval_partition.txt

    Check the copy first with
    `python -m lnet_anet_tf.data.validate --data_dir=<manual_dir>`.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image_id": tfds.features.Text(doc="File name in the annotation files."),
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "bbox": tfds.features.BBoxFeature(
                doc="Face box, normalized [ymin, xmin, ymax, xmax], clipped to [0, 1]."
            ),
            "bbox_pixels": tfds.features.Tensor(
                shape=(4,), dtype=np.int32,
                doc="Face box in pixels as released: x_1, y_1, width, height.",
            ),
            "landmarks": _landmarks_feature("in-the-wild photo"),
            "attributes": tfds.features.Tensor(
                shape=(attributes.NUM_ATTRIBUTES,), dtype=np.bool_,
                doc="True where present, in this order: " + " ".join(attributes.ATTRIBUTE_NAMES),
            ),
            "identity": tfds.features.Scalar(dtype=np.int32, doc="Identity id as released."),
        }
        if self.builder_config.include_aligned:
            # No encoding_format: the release also ships the crops as PNG
            # (img_align_celeba_png/), and TFDS stores the file bytes unchanged.
            features["aligned_image"] = tfds.features.Image(shape=(None, None, 3))
            features["aligned_landmarks"] = _landmarks_feature("aligned crop")
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "CelebA in the wild: 202,599 photos of 10,177 identities with a face box, "
                "5 landmarks and 40 binary attributes each."
            ),
            features=tfds.features.FeaturesDict(features),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        """Read and validate the manual dir, then return one generator per partition."""
        table = celeba.load_celeba(str(dl_manager.manual_dir))
        needed = _WILD_PARTS + (_ALIGNED_PARTS if self.builder_config.include_aligned else ())
        for part in needed:
            table.require(part, f"Dataset celeb_a_in_the_wild/{self.builder_config.name}")

        generators = {}
        for split_name in attributes.PARTITIONS:
            rows = table.partition(split_name)
            # A partition without rows gets no split, so that tiny copies build.
            if len(rows):
                generators[split_name] = self._generate_examples(rows)
        return generators

    def _generate_examples(self, table):
        """Yield (image name, example) for every row of `table`."""
        include_aligned = self.builder_config.include_aligned
        for row in range(len(table)):
            path = table.wild_paths[row]
            box = table.boxes[row]
            example = {
                "image_id": str(table.image_names[row]),
                "image": path,
                "bbox": normalized_box(box, image_size(path), path),
                "bbox_pixels": box.astype(np.int32),
                "landmarks": table.wild_landmarks[row].reshape(5, 2).astype(np.int32),
                "attributes": table.attributes[row].astype(np.bool_),
                "identity": np.int32(table.identities[row]),
            }
            if include_aligned:
                example["aligned_image"] = table.aligned_paths[row]
                example["aligned_landmarks"] = (
                    table.aligned_landmarks[row].reshape(5, 2).astype(np.int32)
                )
            yield str(table.image_names[row]), example


def _landmarks_feature(image_kind: str) -> tfds.features.Tensor:
    names = ", ".join(attributes.LANDMARK_NAMES)
    return tfds.features.Tensor(
        shape=(len(attributes.LANDMARK_NAMES), 2), dtype=np.int32,
        doc=f"(x, y) pixels in the {image_kind} of: {names}.",
    )


def image_size(path: str) -> tuple[int, int]:
    """Return (height, width) of an image file, reading only its header."""
    with epath.Path(path).open("rb") as file:
        with Image.open(file) as image:
            width, height = image.size
    return height, width


def normalized_box(box: np.ndarray, size: tuple[int, int], path: str) -> tfds.features.BBox:
    """Map a pixel box (x_1, y_1, width, height) to a normalized BBox inside the image.

    CelebA's boxes may reach past the border of the photo; TFDS's BBoxFeature only
    holds [0, 1], so the box is clipped, and `bbox_pixels` keeps the released values.
    """
    height, width = size
    x_1, y_1, box_width, box_height = (float(value) for value in box)
    if box_width <= 0 or box_height <= 0:
        raise ValueError(
            f"Face box {box.tolist()} of {path} has no area: width and height must be "
            "positive. Correct the row of list_bbox_celeba.txt."
        )
    ymin, xmin = y_1 / height, x_1 / width
    ymax, xmax = (y_1 + box_height) / height, (x_1 + box_width) / width
    return tfds.features.BBox(
        ymin=float(np.clip(ymin, 0.0, 1.0)),
        xmin=float(np.clip(xmin, 0.0, 1.0)),
        ymax=float(np.clip(ymax, 0.0, 1.0)),
        xmax=float(np.clip(xmax, 0.0, 1.0)),
    )
