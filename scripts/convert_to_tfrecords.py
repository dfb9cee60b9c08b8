"""Convert a CelebA copy into sharded TFRecords for `tfrecords.tfrecord_dataset`.

    python scripts/convert_to_tfrecords.py --data_dir=/data/celeba \\
        --output_dir=/data/celeba_tfrecords --num_shards=256

Reads the copy with the project's reader (any layout it accepts), then writes
`<split>-<i>-of-<n>.tfrecord` files per partition and `manifest.json`. A killed run
resumes when the same command runs again: finished shards whose size and SHA-256
match the manifest are kept, the rest are written again. The exit status is 0 when
every shard was written and its count verified.
"""

from absl import app
from absl import flags
from absl import logging

from lnet_anet_tf.data import celeba
from lnet_anet_tf.data import tfrecords

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "CelebA folder: the one that contains Anno/ (or the annotation files).",
    required=True,
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Folder for the shards and manifest.json; created if absent.",
    required=True,
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 64,
    "Shards per partition (fewer for a partition with fewer images). Use at least the "
    "number of input pipelines (workers) that will read the files.",
)
_IMAGE = flags.DEFINE_enum(
    "image", "wild", list(tfrecords.IMAGE_KINDS),
    "Which images to store: the in-the-wild photos or the aligned crops.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the assignment of images to shards.")
_ON_BAD_EXAMPLE = flags.DEFINE_enum(
    "on_bad_example", "error", list(celeba.ON_BAD_EXAMPLE_CHOICES),
    "What the reader does with an invalid annotation row: stop, or skip it.",
)
_VERIFY_IMAGES = flags.DEFINE_bool(
    "verify_images", True,
    "Decode every image before writing it, so a damaged file stops the conversion "
    "with its path instead of failing during training.",
)
_PROGRESS = flags.DEFINE_enum(
    "progress", "auto", ["auto", "on", "off"], "Progress bar: auto shows it on a terminal."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    table = celeba.load_celeba(_DATA_DIR.value, on_bad_example=_ON_BAD_EXAMPLE.value)
    manifest = tfrecords.write_tfrecords(
        table,
        _OUTPUT_DIR.value,
        num_shards=_NUM_SHARDS.value,
        image=_IMAGE.value,
        seed=_SEED.value,
        verify_images=_VERIFY_IMAGES.value,
        progress={"auto": None, "on": True, "off": False}[_PROGRESS.value],
    )
    for split, entry in manifest["splits"].items():
        logging.info(
            "%s: %d examples in %d shards.", split, entry["num_examples"], len(entry["shards"])
        )
    # A resumed run writes only the missing shards, and the log reports how many.
    # So report what the folder contains rather than what this run wrote.
    print(f"{_OUTPUT_DIR.value} contains all {manifest['num_rows']} examples; counts verified.")


if __name__ == "__main__":
    app.run(main)
