"""Generate a synthetic CelebA directory.

    python -m lnet_anet_tf.data.synthetic --output_dir /tmp/synthetic_celeba \\
        --num_identities 600 --images_per_identity 5 --seed 0 \\
        --preview /tmp/synthetic_preview.png
"""

from absl import app, flags

from lnet_anet_tf.data.synthetic import atomic, writer

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory to create. It must not exist or must be empty.", required=True
)
_NUM_IDENTITIES = flags.DEFINE_integer(
    "num_identities", 600, "Number of people, split 8:1:1 into train, validation and test."
)
_IMAGES_PER_IDENTITY = flags.DEFINE_integer("images_per_identity", 5, "Images of each person.")
_SEED = flags.DEFINE_integer("seed", 0, "Dataset seed. The same seed writes the same bytes.")
_PREVIEW = flags.DEFINE_string(
    "preview", None, "If set, write a labelled contact sheet of the first images to this PNG path."
)
_PREVIEW_COUNT = flags.DEFINE_integer("preview_count", 16, "Number of images on the contact sheet.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "Number of worker processes. Default: one per available CPU core."
)
_MIN_IMAGE_SIZE = flags.DEFINE_integer("min_image_size", 160, "Smallest in-the-wild image side, pixels.")
_MAX_IMAGE_SIZE = flags.DEFINE_integer("max_image_size", 256, "Largest in-the-wild image side, pixels.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    image_size_range = (_MIN_IMAGE_SIZE.value, _MAX_IMAGE_SIZE.value)
    try:
        writer.validate_arguments(_NUM_IDENTITIES.value, _IMAGES_PER_IDENTITY.value, image_size_range)
        atomic.check_empty_target(_OUTPUT_DIR.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    writer.generate_celeba(
        _OUTPUT_DIR.value,
        num_identities=_NUM_IDENTITIES.value,
        images_per_identity=_IMAGES_PER_IDENTITY.value,
        seed=_SEED.value,
        num_workers=_NUM_WORKERS.value,
        image_size_range=image_size_range,
        preview_path=_PREVIEW.value,
        preview_count=_PREVIEW_COUNT.value,
    )


if __name__ == "__main__":
    app.run(main)
