"""tf.data input pipelines for the training stages.

| pipeline | examples | used for |
| --- | --- | --- |
| `whole_image_dataset` | in-the-wild images, letterboxed | LNet_o, evaluation of the cascade |
| `crop_dataset` | boxes cropped from images | LNet_s, ANet (boxes from the LNets) |
| `aligned_face_dataset` | centre face of the aligned images | ANet identities, baselines |
| `object_class_dataset` | class folders or a TFDS dataset | LNet pre-training on objects |

`shard_pipeline` builds the elements of the first two from TFRecord shards, with the
same map functions (`whole_image_fn`, `crop_fn`).

Images reach the models as float32 in [-1, 1] (`preprocessing.normalize`). Whole images
are letterboxed to a square: the aspect ratio is kept and the padding is mid-gray.
Boxes are normalized [ymin, xmin, ymax, xmax] of the image they refer to. Attributes
are float32 0/1 [40]; class and identity labels are int32.

All pipelines except the TFDS source share these rules:

- Order. With `training=True` the rows are permuted by NumPy's generator seeded with
  (seed, epoch). The same pair gives the same order on every machine and run, so a
  training loop builds one dataset per epoch and resumes exactly. NumPy may change
  its generator streams between versions, so keep one NumPy version to resume.
  Iterating one dataset twice repeats its order. With `training=False` the rows keep their order.
  `deterministic=False` lets tf.data yield examples out of order, for speed.
- Repeated paths. When rows share a path (ANet's patches of one face), the order is
  cut into mixing windows of consecutive examples: the examples of
  `MIX_WINDOW_IMAGES` images, at most `MAX_MIX_WINDOW_EXAMPLES`. The pipeline reads
  and decodes an image once for all of its rows in one window, prepares each row
  from it and sorts the window's examples back into their order. In training the
  generator seeded with (seed, epoch) permutes the images, not the rows, so that
  the rows of one image follow one another, and then shuffles each window. A batch
  therefore draws its examples from one window of `MIX_WINDOW_IMAGES` images
  instead of from the whole epoch.
- Sharding. With a `tf.distribute.InputContext`, pipeline i of k takes every k-th row
  of the epoch's order, before any file is read, and `batch_size` is the global batch
  size. Training shards get equal lengths, so every replica runs the same number of
  steps. This drops fewer than k rows per epoch, different ones each epoch.
  Together, evaluation shards contain every row once.
  NOTE: with `on_bad_example="skip"`, a shard that skips files can run fewer steps
  than the others, which can stall synchronous multi-worker training.
  With repeated paths, the rows of one image are split among the shards, and each
  shard that gets some of them decodes the image.
- Resuming. `start_batch` skips that many batches of this pipeline's shard without
  reading their files. The result is exact when no file was skipped as invalid.
  With repeated paths, a skipped file shifts the runs of examples that are sorted
  back into order, so the examples after it can come in a different order than
  the rows. The order is still the same for the same files, seed and epoch.
- Invalid files raise or are skipped (`on_bad_example`), see `images.load_images`.
  With "error" the dataset's cardinality is known; with "skip" it is unknown.
- Batches are dropped at the end of a training epoch when incomplete, and kept
  when evaluating.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional, Sequence, Union

from absl import logging
import numpy as np
import tensorflow as tf

from lnet_anet_tf import attributes as attribute_names
from lnet_anet_tf import preprocessing
from lnet_anet_tf.data import images
from lnet_anet_tf.data.table import CelebATable

PathLike = Union[str, os.PathLike]

# Box noise for training crops, as a fraction of the box side per edge.
DEFAULT_BOX_JITTER = 0.05

# The uint8 value that `preprocessing.normalize` maps to 0.0.
_MID_GRAY_UINT8 = 127.5

# When rows share a path, a mixing window contains the examples of this many
# images, and at most `MAX_MIX_WINDOW_EXAMPLES` examples. A batch mixes examples
# of one window only, so a small window correlates the examples of a batch. On
# the same LNet_s crops, ANet's validation accuracy after finetune_anet was 0.829
# with windows of 64 images and 0.843 with 1024 (demo preset, synthetic data,
# one run each). The pipeline keeps one or two windows of prepared examples in memory:
# 8192 crops of 48 x 48 float32 pixels (demo ANet patches) take 216 MiB, of
# 96 x 96 (paper) 864 MiB.
MIX_WINDOW_IMAGES = 1024
MAX_MIX_WINDOW_EXAMPLES = 8192

# The centre face region of CelebA's 178x218 aligned images: the 148x148 square at
# x=15, y=40, centred horizontally. `aligned_face_dataset(face_box=...)` changes it.
ALIGNED_FACE_BOX = (40 / 218, 15 / 178, 188 / 218, 163 / 178)

# File extensions that `object_class_dataset` reads from class folders, lowercased.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")

# `object_class_dataset(source=...)` reads a TFDS dataset when source has this prefix.
TFDS_PREFIX = "tfds:"


def whole_image_dataset(
    table: CelebATable,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    cache: bool = False,
    deterministic: bool = True,
    augment: bool = False,
    input_context: Optional[tf.distribute.InputContext] = None,
    on_bad_example: str = "error",
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    with_index: bool = False,
) -> tf.data.Dataset:
    """Build the in-the-wild images, letterboxed to `image_size`, with their attributes.

    Elements are (images [B, S, S, 3] float32, attributes [B, 40] float32). With
    `with_index`, the features are a dict of "image", "index" (the int64 row of
    `table`) and "window". The window is the float32 [ymin, xmin, ymax, xmax] that the
    image occupies in the letterboxed square, which `preprocessing.window_to_image`
    uses to map boxes back to the image. `augment` flips images horizontally at
    random, which is safe because the 40 attributes do not depend on the side.
    """
    prepare = whole_image_fn(
        image_size, seed=seed, epoch=epoch, augment=augment, with_index=with_index
    )
    columns = {
        "path": _paths(table.require("wild_paths", "whole_image_dataset")),
        "label": _attribute_labels(table.attributes),
    }
    return _build_dataset(
        columns,
        prepare,
        batch_size=batch_size,
        training=training,
        seed=seed,
        epoch=epoch,
        start_batch=start_batch,
        cache=cache,
        augment=augment,
        deterministic=deterministic,
        input_context=input_context,
        on_bad_example=on_bad_example,
        max_pixels=max_pixels,
    )


def crop_dataset(
    paths: Sequence[PathLike],
    boxes: np.ndarray,
    labels: np.ndarray,
    crop_size: int,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    cache: bool = False,
    deterministic: bool = True,
    augment: bool = False,
    box_jitter: float = DEFAULT_BOX_JITTER,
    scale_jitter: float = 1.0,
    input_context: Optional[tf.distribute.InputContext] = None,
    on_bad_example: str = "error",
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    with_index: bool = False,
) -> tf.data.Dataset:
    """Build square crops of `boxes` from the images at `paths`, with their labels.

    `boxes` is [N, 4] normalized [ymin, xmin, ymax, xmax] of each image, as the
    localization nets predict them. A box may extend past the image, and the outside
    is mid-gray. Crops are resized to `crop_size` with `tf.image.crop_and_resize`.
    `labels` is either [N] integer ids (identities, classes), given as int32, or
    [N, K] vectors (attributes), given as float32.

    Elements are (crops [B, C, C, 3] float32, labels). With `with_index`, the features
    are a dict with "image" and "index", the int64 row of the inputs. `augment` moves
    each box edge by up to `box_jitter` of the box side, scales the box about its
    centre by a factor drawn log-uniformly from [1 / scale_jitter, scale_jitter],
    and flips crops horizontally at random, so it suits labels that do not depend on
    the side, such as identities and the 40 attributes.
    """
    prepare = crop_fn(
        crop_size, seed=seed, epoch=epoch, augment=augment, box_jitter=box_jitter,
        scale_jitter=scale_jitter, with_index=with_index,
    )
    columns = {"path": _paths(paths)}
    columns["box"] = check_boxes(boxes, len(columns["path"]))
    columns["label"] = check_labels(labels, len(columns["path"]))
    return _build_dataset(
        columns,
        prepare,
        batch_size=batch_size,
        training=training,
        seed=seed,
        epoch=epoch,
        start_batch=start_batch,
        cache=cache,
        augment=augment,
        deterministic=deterministic,
        input_context=input_context,
        on_bad_example=on_bad_example,
        max_pixels=max_pixels,
    )


def aligned_face_dataset(
    table: CelebATable,
    crop_size: int,
    batch_size: int,
    *,
    training: bool,
    label: str = "attributes",
    face_box: Sequence[float] = ALIGNED_FACE_BOX,
    **crop_options,
) -> tf.data.Dataset:
    """Build the centre face of the aligned images, resized to `crop_size`.

    `label` is "attributes" (float32 [B, 40]) or "identities" (int32 [B]). Identities
    are the ids of `identity_CelebA.txt` unchanged, so map them to 0..K-1 before
    training a softmax on them. `face_box` is the normalized [ymin, xmin, ymax, xmax]
    crop of every aligned image. Other keyword arguments are those of `crop_dataset`.
    """
    paths = table.require("aligned_paths", "aligned_face_dataset")
    if label == "attributes":
        labels = _attribute_labels(table.attributes)
    elif label == "identities":
        labels = table.require("identities", "aligned_face_dataset(label='identities')")
    else:
        raise ValueError(
            f"label={label!r} is invalid; expected 'attributes' or 'identities'."
        )
    boxes = np.tile(np.asarray(face_box, np.float32)[np.newaxis], (len(paths), 1))
    return crop_dataset(
        paths, boxes, labels, crop_size, batch_size, training=training, **crop_options
    )


def whole_image_fn(image_size: int, *, seed: int, epoch: int, augment: bool, with_index: bool):
    """Return the map from a decoded example to an element of `whole_image_dataset`.

    The example is a dict of "image" (uint8 [H, W, 3]), "index" (int64, which seeds
    the example's flip) and "label". The TFRecord pipelines map with the same
    function, so both inputs give the same element for the same index.
    """
    _check_positive(image_size=image_size)
    augment_seed = _augment_seed(seed, epoch)

    def prepare(example):
        image = preprocessing.normalize(example["image"])
        if augment:
            seed_pair = _example_seed(augment_seed, example["index"])
            image = tf.image.stateless_random_flip_left_right(image, seed_pair)
        letterboxed, window = preprocessing.letterbox(image[tf.newaxis], image_size)
        if with_index:
            features = {"image": letterboxed[0], "index": example["index"], "window": window}
            return features, example["label"]
        return letterboxed[0], example["label"]

    return prepare


def crop_fn(
    crop_size: int,
    *,
    seed: int,
    epoch: int,
    augment: bool,
    box_jitter: float,
    with_index: bool,
    scale_jitter: float = 1.0,
):
    """Return the map from a decoded example to an element of `crop_dataset`.

    The example is a dict of "image" (uint8 [H, W, 3]), "box" (float32 [4]),
    "index" (int64, which seeds the example's jitter and flip) and "label".
    """
    _check_positive(crop_size=crop_size)
    if not 0.0 <= box_jitter <= 0.25:
        raise ValueError(f"box_jitter must be in [0, 0.25], got {box_jitter}.")
    if not 1.0 <= scale_jitter <= 4.0:
        raise ValueError(
            f"scale_jitter must be in [1, 4], got {scale_jitter}. Use 1 to turn scaling off."
        )
    augment_seed = _augment_seed(seed, epoch)

    def prepare(example):
        box = example["box"]
        if augment:
            seed_pair = _example_seed(augment_seed, example["index"])
            jitter_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(seed_pair, 2)
            )
            box = _jitter_box(box, box_jitter, jitter_seed)
            if scale_jitter > 1.0:
                # A seed of its own, so that the edge jitter and the flip stay the
                # ones drawn without scale jitter.
                scale_seed = tf.random.experimental.stateless_fold_in(jitter_seed, 1)
                box = _scale_box(box, scale_jitter, scale_seed)
        # Cropping the uint8 image and normalizing the crop converts crop_size^2
        # pixels to float instead of the whole image. Bilinear sampling commutes with
        # the affine `normalize`, so this changes the values by float rounding only,
        # and the outside of the image stays exactly 0.0, mid-gray.
        crop = tf.image.crop_and_resize(
            example["image"][tf.newaxis],
            box[tf.newaxis],
            tf.zeros([1], tf.int32),
            [crop_size, crop_size],
            extrapolation_value=_MID_GRAY_UINT8,
        )[0]
        crop = preprocessing.normalize(crop)
        if augment:
            crop = tf.image.stateless_random_flip_left_right(crop, flip_seed)
        if with_index:
            return {"image": crop, "index": example["index"]}, example["label"]
        return crop, example["label"]

    return prepare


def object_class_dataset(
    source: PathLike,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    split: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    manual_dir: Optional[PathLike] = None,
    download: bool = False,
    shuffle_buffer_size: int = 10_000,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    cache: bool = False,
    deterministic: bool = True,
    augment: bool = False,
    input_context: Optional[tf.distribute.InputContext] = None,
    on_bad_example: str = "error",
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
) -> tuple[tf.data.Dataset, int]:
    """Build letterboxed object images with int32 class labels; return it and the class count.

    `source` is either a folder with one subfolder per class (`<class>/<file>.jpg`,
    classes numbered in sorted name order, subfolders of a class included), or
    "tfds:<name>" for a TFDS image classification dataset with supervised keys
    (image, label), for example "tfds:imagenet2012". ImageNet cannot be downloaded
    automatically: put its tar files in `manual_dir` and pass `download=True` once to
    prepare it in `data_dir`. `split` (default "train") and `shuffle_buffer_size`
    apply to TFDS only. Elements are (images [B, S, S, 3] float32, labels [B] int32).
    """
    _check_positive(image_size=image_size)
    source = os.fspath(source)
    if source.startswith(TFDS_PREFIX):
        return _tfds_object_dataset(
            source[len(TFDS_PREFIX) :],
            image_size,
            batch_size,
            split=split or "train",
            data_dir=data_dir,
            manual_dir=manual_dir,
            download=download,
            shuffle_buffer_size=shuffle_buffer_size,
            training=training,
            seed=seed,
            epoch=epoch,
            start_batch=start_batch,
            cache=cache,
            augment=augment,
            deterministic=deterministic,
            input_context=input_context,
        )
    if split is not None:
        raise ValueError(
            f"split={split!r} applies to TFDS sources only; pass the folder of that "
            f"split as source instead of {source}."
        )

    paths, labels, class_names = list_class_folders(source)
    augment_seed = _augment_seed(seed, epoch)

    def prepare(example):
        image = preprocessing.normalize(example["image"])
        if augment:
            seed_pair = _example_seed(augment_seed, example["index"])
            image = tf.image.stateless_random_flip_left_right(image, seed_pair)
        letterboxed, _ = preprocessing.letterbox(image[tf.newaxis], image_size)
        return letterboxed[0], example["label"]

    dataset = _build_dataset(
        {"path": paths, "label": labels},
        prepare,
        batch_size=batch_size,
        training=training,
        seed=seed,
        epoch=epoch,
        start_batch=start_batch,
        cache=cache,
        augment=augment,
        deterministic=deterministic,
        input_context=input_context,
        on_bad_example=on_bad_example,
        max_pixels=max_pixels,
    )
    return dataset, len(class_names)


def list_class_folders(directory: PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return the image paths under `directory/<class>/`, their class ids and class names.

    Classes are the subfolders in sorted order, numbered from 0. Files whose
    extension is not in `IMAGE_EXTENSIONS` are ignored. Paths are sorted per class.
    """
    directory = os.fspath(directory)
    if not tf.io.gfile.isdir(directory):
        raise ValueError(
            f"Object image folder {directory} does not exist or is not a folder; "
            "expected one subfolder of images per class."
        )
    class_names = sorted(
        name.rstrip("/")
        for name in tf.io.gfile.listdir(directory)
        if tf.io.gfile.isdir(os.path.join(directory, name))
    )
    if not class_names:
        raise ValueError(
            f"Object image folder {directory} has no class subfolders; expected "
            "<class>/<file>.jpg."
        )

    paths, labels, ignored_count = [], [], 0
    for class_id, class_name in enumerate(class_names):
        class_paths = []
        for folder, _, file_names in tf.io.gfile.walk(os.path.join(directory, class_name)):
            for file_name in file_names:
                if os.path.splitext(file_name)[1].lower() in IMAGE_EXTENSIONS:
                    class_paths.append(os.path.join(folder, file_name))
                else:
                    ignored_count += 1
        if not class_paths:
            logging.warning("Class folder %s has no images.", os.path.join(directory, class_name))
        paths.extend(sorted(class_paths))
        labels.extend([class_id] * len(class_paths))

    if not paths:
        raise ValueError(
            f"Object image folder {directory} has no image files with the extensions "
            f"{IMAGE_EXTENSIONS}."
        )
    if ignored_count:
        logging.info(
            "Ignored %d files without an image extension under %s.", ignored_count, directory
        )
    return np.asarray(paths, dtype=str), np.asarray(labels, np.int32), class_names


def _tfds_object_dataset(
    name: str,
    image_size: int,
    batch_size: int,
    *,
    split: str,
    data_dir: Optional[PathLike],
    manual_dir: Optional[PathLike],
    download: bool,
    shuffle_buffer_size: int,
    training: bool,
    seed: int,
    epoch: int,
    start_batch: int,
    cache: bool,
    augment: bool,
    deterministic: bool,
    input_context: Optional[tf.distribute.InputContext],
) -> tuple[tf.data.Dataset, int]:
    # TFDS examples come from its prepared record files, not from image paths, so the
    # file checks of `images.load_images` do not apply. A corrupt record raises
    # TensorFlow's decode error.
    import tensorflow_datasets as tfds  # imported here: it is slow to import

    _check_options(seed=seed, epoch=epoch, start_batch=start_batch, cache=cache,
                   training=training, augment=augment)
    _check_positive(shuffle_buffer_size=shuffle_buffer_size)
    builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    if download:
        manual = None if manual_dir is None else os.fspath(manual_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual)
        )
    image_key, label_key = _tfds_supervised_keys(builder, name)
    num_classes = builder.info.features[label_key].num_classes

    order_seed = _order_seed(seed, epoch)
    read_config = tfds.ReadConfig(shuffle_seed=order_seed, input_context=input_context)
    dataset = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=training,
        read_config=read_config,
        decoders={image_key: tfds.decode.SkipDecoding()},
    )
    if training:
        # NOTE: tf.data's shuffle combines this seed with TensorFlow's global seed, so
        # the order repeats for the same (seed, epoch) only under the same global seed.
        dataset = dataset.shuffle(
            shuffle_buffer_size, seed=order_seed, reshuffle_each_iteration=False
        )
    # The position in the epoch seeds each example's augmentation; numbering before
    # skipping keeps it when resuming.
    per_replica_batch_size = _per_replica_batch_size(batch_size, input_context)
    dataset = dataset.enumerate().skip(start_batch * per_replica_batch_size)
    augment_seed = _augment_seed(seed, epoch)

    def prepare(position, example):
        contents, label = example
        image = preprocessing.normalize(images.decode_image(contents))
        if augment:
            seed_pair = _example_seed(augment_seed, position)
            image = tf.image.stateless_random_flip_left_right(image, seed_pair)
        letterboxed, _ = preprocessing.letterbox(image[tf.newaxis], image_size)
        return letterboxed[0], tf.cast(label, tf.int32)

    dataset = dataset.map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )
    if cache:
        dataset = dataset.cache()
    dataset = dataset.batch(
        per_replica_batch_size,
        drop_remainder=training,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return _finish(dataset, deterministic), num_classes


def _tfds_supervised_keys(builder, name: str) -> tuple[str, str]:
    keys = builder.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(key, str) for key in keys):
        raise ValueError(
            f"TFDS dataset {name} has supervised keys {keys!r}; object_class_dataset "
            "needs an image classification dataset with supervised keys (image, label)."
        )
    label_feature = builder.info.features[keys[1]]
    if not hasattr(label_feature, "num_classes"):
        raise ValueError(
            f"TFDS dataset {name}: feature {keys[1]!r} is not a ClassLabel, so the "
            "number of classes is unknown."
        )
    return keys[0], keys[1]


def _build_dataset(
    columns: dict,
    prepare,
    *,
    batch_size: int,
    training: bool,
    seed: int,
    epoch: int,
    start_batch: int,
    cache: bool,
    augment: bool,
    deterministic: bool,
    input_context: Optional[tf.distribute.InputContext],
    on_bad_example: str,
    max_pixels: int,
) -> tf.data.Dataset:
    """Order, shard, read, decode, `prepare` and batch the rows of `columns`."""
    images.validate_on_bad_example(on_bad_example)
    _check_options(seed=seed, epoch=epoch, start_batch=start_batch, cache=cache,
                   training=training, augment=augment)
    num_rows = len(columns["path"])
    if num_rows == 0:
        raise ValueError("The pipeline has no examples: the given table or arrays are empty.")

    path_ids, num_paths = _path_ids(columns["path"])
    mix_window = _mix_window(path_ids) if num_paths < num_rows else None
    rows = _epoch_rows(
        num_rows, training=training, seed=seed, epoch=epoch, path_ids=path_ids,
        num_paths=num_paths, mix_window=mix_window,
    )
    rows = _shard_rows(rows, input_context, equal_shards=training)
    per_replica_batch_size = _per_replica_batch_size(batch_size, input_context)
    rows = rows[start_batch * per_replica_batch_size :]

    load_options = dict(
        on_bad_example=on_bad_example, max_pixels=max_pixels, deterministic=deterministic
    )
    if mix_window is None:
        dataset = _prepare_each_row(columns, rows, prepare, **load_options)
    else:
        groups = _window_groups(path_ids[rows], num_paths, mix_window)
        dataset = _prepare_by_image(columns, rows, groups, prepare, mix_window, **load_options)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.batch(
        per_replica_batch_size,
        drop_remainder=training,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if on_bad_example == "error":
        # No example can disappear, so the batch count is known in advance; Keras
        # uses it for progress bars and steps per epoch.
        if training:
            num_batches = len(rows) // per_replica_batch_size
        else:
            num_batches = -(-len(rows) // per_replica_batch_size)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    return _finish(dataset, deterministic)


def _prepare_each_row(
    columns: dict, rows: np.ndarray, prepare, *, on_bad_example: str, max_pixels: int,
    deterministic: bool,
) -> tf.data.Dataset:
    """Load the image of every row in `rows` and `prepare` it, in the order of `rows`."""
    examples = {name: values[rows] for name, values in columns.items()}
    examples["index"] = rows.astype(np.int64)
    dataset = tf.data.Dataset.from_tensor_slices(examples)
    dataset = images.load_images(
        dataset,
        on_bad_example=on_bad_example,
        max_pixels=max_pixels,
        deterministic=deterministic,
    )
    return dataset.map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )


def _prepare_by_image(
    columns: dict, rows: np.ndarray, groups: _WindowGroups, prepare, mix_window: int, *,
    on_bad_example: str, max_pixels: int, deterministic: bool,
) -> tf.data.Dataset:
    """Prepare the rows in `rows` like `_prepare_each_row`, loading each image once per group.

    Each group's image is loaded once, with the checks and messages of
    `images.load_images`. Every row of the group is prepared from it, and the
    examples of each window of `mix_window` positions are sorted back into the
    order of `rows`.
    """
    group_rows = rows[groups.first_positions]
    dataset = tf.data.Dataset.from_tensor_slices(
        {"path": columns["path"][group_rows], "start": groups.starts, "count": groups.counts}
    )
    dataset = images.load_images(
        dataset,
        on_bad_example=on_bad_example,
        max_pixels=max_pixels,
        deterministic=deterministic,
    )
    examples = dataset.flat_map(_expand_group_fn(columns, rows, groups.members))

    def prepare_with_position(example):
        position = example["position"]
        rest = {name: value for name, value in example.items() if name != "position"}
        return position, prepare(rest)

    prepared = examples.map(
        prepare_with_position, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )
    return _sort_windows(prepared, mix_window)


class _WindowGroups(NamedTuple):
    """Groups of positions in the pipeline's rows: a group is the rows of one path in one window."""

    first_positions: np.ndarray  # [G] the first position of each group, increasing
    starts: np.ndarray  # [G] where each group's positions begin in `members`
    counts: np.ndarray  # [G] positions of each group
    members: np.ndarray  # [M] all positions, grouped, in increasing order within a group


def _window_groups(path_ids: np.ndarray, num_paths: int, mix_window: int) -> _WindowGroups:
    """Group the positions of `path_ids` by (window of `mix_window` positions, path id)."""
    positions = np.arange(len(path_ids), dtype=np.int64)
    keys = (positions // mix_window) * num_paths + path_ids
    _, first_positions, key_index = np.unique(keys, return_index=True, return_inverse=True)
    # np.unique numbers the groups by key; number them by first position instead, so
    # that the groups come in the order of the rows.
    by_first_position = np.argsort(first_positions)
    group_of_position = np.argsort(by_first_position)[key_index.reshape(-1)]
    counts = np.bincount(group_of_position, minlength=len(first_positions)).astype(np.int64)
    return _WindowGroups(
        first_positions=first_positions[by_first_position],
        starts=np.cumsum(counts) - counts,
        counts=counts,
        members=np.argsort(group_of_position, kind="stable").astype(np.int64),
    )


def _expand_group_fn(columns: dict, rows: np.ndarray, members: np.ndarray):
    """Return the map from a loaded group to the dataset of its examples.

    Every example gets the group's decoded image, its row as "index", its position
    in `rows` as "position", and the row's values of the columns other than "path".
    """
    member_positions = tf.constant(members, tf.int64)
    row_of_position = tf.constant(rows, tf.int64)
    column_values = {
        name: tf.constant(values) for name, values in columns.items() if name != "path"
    }

    def expand(group):
        positions = member_positions[group["start"] : group["start"] + group["count"]]

        def example(position):
            row = tf.gather(row_of_position, position)
            values = {name: tf.gather(tensor, row) for name, tensor in column_values.items()}
            return {"image": group["image"], "index": row, "position": position, **values}

        return tf.data.Dataset.from_tensor_slices(positions).map(example)

    return expand


def _sort_windows(prepared: tf.data.Dataset, mix_window: int) -> tf.data.Dataset:
    """Sort each run of `mix_window` (position, element) pairs by position; drop positions.

    A window's examples arrive grouped by image, and exactly `mix_window` of them
    (fewer in the last window) unless a file was skipped as invalid. A skipped file
    shifts the runs after it, which then straddle two windows: the order stays the
    same for the same files, but differs from the order of the rows.
    """

    def sort(positions, elements):
        order = tf.argsort(positions)
        return tf.nest.map_structure(lambda values: tf.gather(values, order), elements)

    return prepared.batch(mix_window).map(sort).unbatch()


def _finish(dataset: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _epoch_rows(
    num_rows: int, *, training: bool, seed: int, epoch: int, path_ids: np.ndarray,
    num_paths: int, mix_window: Optional[int],
) -> np.ndarray:
    """Return the rows in the order of the epoch; see "Order" and "Repeated paths" above."""
    if not training:
        return np.arange(num_rows)
    generator = np.random.default_rng([seed, epoch])
    if mix_window is None:
        return generator.permutation(num_rows)
    image_order = generator.permutation(num_paths)
    image_position = np.argsort(image_order)
    by_image = np.argsort(image_position[path_ids], kind="stable")
    # Sorting by (window, random key) shuffles each window of consecutive positions.
    window_of_position = np.arange(num_rows) // mix_window
    mixed = np.lexsort((generator.random(num_rows), window_of_position))
    return by_image[mixed]


def _path_ids(paths: np.ndarray) -> tuple[np.ndarray, int]:
    """Return the id of every row's path (equal paths share an id) and the number of ids."""
    unique_paths, path_ids = np.unique(paths, return_inverse=True)
    return path_ids.reshape(-1).astype(np.int64), len(unique_paths)


def _mix_window(path_ids: np.ndarray) -> int:
    """Return the mixing window for `path_ids` in examples; see `MIX_WINDOW_IMAGES`."""
    max_rows_per_path = int(np.bincount(path_ids).max())
    return min(MIX_WINDOW_IMAGES * max_rows_per_path, MAX_MIX_WINDOW_EXAMPLES)


def _shard_rows(
    rows: np.ndarray,
    input_context: Optional[tf.distribute.InputContext],
    *,
    equal_shards: bool,
) -> np.ndarray:
    if input_context is None or input_context.num_input_pipelines == 1:
        return rows
    num_pipelines = input_context.num_input_pipelines
    if equal_shards:
        rows = rows[: len(rows) - len(rows) % num_pipelines]
    return rows[input_context.input_pipeline_id :: num_pipelines]


def _per_replica_batch_size(
    batch_size: int, input_context: Optional[tf.distribute.InputContext]
) -> int:
    _check_positive(batch_size=batch_size)
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def _order_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _augment_seed(seed: int, epoch: int) -> int:
    # A different stream from the order seed, so that order and augmentation do not
    # move together.
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])


def _example_seed(augment_seed: int, index: tf.Tensor) -> tf.Tensor:
    """Return the stateless seed of one example, fixed by the epoch and its row."""
    return tf.stack([tf.constant(augment_seed, tf.int64), index])


def _jitter_box(box: tf.Tensor, fraction: float, seed: tf.Tensor) -> tf.Tensor:
    height = box[2] - box[0]
    width = box[3] - box[1]
    noise = tf.random.stateless_uniform([4], seed, -fraction, fraction)
    return box + noise * tf.stack([height, width, height, width])


def _scale_box(box: tf.Tensor, max_factor: float, seed: tf.Tensor) -> tf.Tensor:
    """Scale `box` about its centre by a factor in [1 / max_factor, max_factor].

    The factor's logarithm is uniform, so shrinking and growing are equally likely.
    """
    log_factor = tf.random.stateless_uniform(
        [], seed, -math.log(max_factor), math.log(max_factor)
    )
    half_extent = (box[2:] - box[:2]) * (tf.exp(log_factor) / 2.0)
    center = (box[:2] + box[2:]) / 2.0
    return tf.concat([center - half_extent, center + half_extent], axis=0)


def _paths(paths: Sequence[PathLike]) -> np.ndarray:
    return np.asarray([os.fspath(path) for path in paths], dtype=str)


def check_boxes(boxes: np.ndarray, num_rows: int) -> np.ndarray:
    """Return `boxes` as float32 [num_rows, 4]; raise ValueError naming the first invalid box."""
    boxes = np.asarray(boxes, np.float32)
    if boxes.shape != (num_rows, 4):
        raise ValueError(
            f"boxes has shape {boxes.shape}; expected ({num_rows}, 4), one normalized "
            "[ymin, xmin, ymax, xmax] per path."
        )
    invalid = ~np.isfinite(boxes).all(axis=1)
    # A box with xmin > xmax (or ymin > ymax) is valid: `tf.image.crop_and_resize`
    # samples it in reverse, which mirrors the crop. Only empty boxes are invalid.
    invalid |= (boxes[:, 2] == boxes[:, 0]) | (boxes[:, 3] == boxes[:, 1])
    if invalid.any():
        row = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"boxes[{row}] = {boxes[row].tolist()} is invalid: a box must be finite "
            f"[ymin, xmin, ymax, xmax] with ymax != ymin and xmax != xmin "
            f"({int(invalid.sum())} invalid boxes in all)."
        )
    return boxes


def check_labels(labels: np.ndarray, num_rows: int) -> np.ndarray:
    """Return integer ids [num_rows] as int32 or vectors [num_rows, K] as float32."""
    labels = np.asarray(labels)
    if len(labels) != num_rows:
        raise ValueError(f"labels has {len(labels)} rows but there are {num_rows} paths.")
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"1-D labels must be integer ids, got dtype {labels.dtype}; pass "
                "vectors as a 2-D array."
            )
        return labels.astype(np.int32)
    if labels.ndim == 2:
        return labels.astype(np.float32)
    raise ValueError(f"labels must be 1-D ids or 2-D vectors, got shape {labels.shape}.")


def _attribute_labels(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    expected_width = attribute_names.NUM_ATTRIBUTES
    if values.ndim != 2 or values.shape[1] != expected_width:
        raise ValueError(
            f"attributes has shape {values.shape}; expected (N, {expected_width})."
        )
    if not np.isin(values, (0, 1)).all():
        row, column = np.argwhere(~np.isin(values, (0, 1)))[0]
        raise ValueError(
            f"attributes[{row}, {column}] = {values[row, column]} is invalid; expected 0 "
            "or 1 (CelebA's -1 means 0)."
        )
    return values.astype(np.float32)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")


def _check_options(
    *, seed: int, epoch: int, start_batch: int, cache: bool, training: bool, augment: bool
) -> None:
    for name, value in (("seed", seed), ("epoch", epoch), ("start_batch", start_batch)):
        if value < 0:
            raise ValueError(f"{name} must be zero or positive, got {value}.")
    if cache and (training or augment):
        raise ValueError(
            "cache=True keeps the elements of the first pass, so it cannot give a new "
            "order or new augmentation each epoch; use it with training=False and "
            "augment=False, for evaluation datasets."
        )
