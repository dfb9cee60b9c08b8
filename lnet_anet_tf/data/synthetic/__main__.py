"""Generate a synthetic CelebA directory.

    python -m lnet_anet_tf.data.synthetic --output_dir /tmp/synthetic_celeba \\
        --num_identities 600 --images_per_identity 5 --seed 0 \\
        --preview /tmp/synthetic_preview.png

The light and head-turn flags set the ranges of `traits.Variation`, for example
`--brightness_range=0.6,1.4 --head_turn=0.45`. They change the pixels, not the
labels.
"""

from absl import app, flags

from lnet_anet_tf.data.synthetic import atomic, traits, writer

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

# The light and head-turn ranges of `traits.Variation`, as "low,high" lists.
_RANGE_HELP = {
    "light_strength_range": "Darkening of the side away from the light, as low,high fractions.",
    "brightness_range": "Brightness factor of each image, as low,high.",
    "contrast_range": "Contrast factor of each image, as low,high.",
    "colour_gain_range": "Gain of each colour channel (a colour cast), as low,high.",
}
_RANGES = {
    name: flags.DEFINE_list(name, [str(v) for v in getattr(traits.DEFAULT_VARIATION, name)], _RANGE_HELP[name])
    for name in traits.RANGE_NAMES
}
_HEAD_TURN = flags.DEFINE_float(
    "head_turn", traits.DEFAULT_VARIATION.head_turn,
    "Sideways shift of the eyes, nose and mouth at the largest head turn, in eye distances.",
)


def _variation() -> traits.Variation:
    """Return the `traits.Variation` of the range flags, or raise UsageError naming the flag."""
    ranges = {}
    for name, flag in _RANGES.items():
        try:
            ranges[name] = tuple(float(value) for value in flag.value)
        except ValueError:
            raise app.UsageError(
                f"--{name}={','.join(flag.value)} is invalid; expected two numbers such as 0.85,1.15."
            ) from None
    try:
        return traits.Variation(head_turn=_HEAD_TURN.value, **ranges)
    except ValueError as error:
        raise app.UsageError(f"--{error}") from error


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    image_size_range = (_MIN_IMAGE_SIZE.value, _MAX_IMAGE_SIZE.value)
    variation = _variation()
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
        variation=variation,
    )


if __name__ == "__main__":
    app.run(main)
