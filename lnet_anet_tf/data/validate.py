"""Check a CelebA copy and print what it contains.

    python -m lnet_anet_tf.data.validate --data_dir=/data/celeba [--on_bad_example=skip]

Prints the layout found, which parts are present and why the others are missing,
images and identities per partition, and the positive rate of each attribute. Then it
lists every problem found: at most 10 messages per kind of problem, and a count of the
rows with problems.

Exit status: 0 when the copy can be read with --on_bad_example; 1 when any problem
was found under --on_bad_example=error, or when a problem stops the reader in either
mode (a missing attribute file, a broken header, a file that is not UTF-8).
"""

import itertools

from absl import app
from absl import flags
import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf.data import celeba
from lnet_anet_tf.data.table import CelebATable

_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    None,
    "Folder of the CelebA copy: the one that contains Anno/, list_attr_celeba.txt or "
    "list_attr_celeba.csv.",
)
_ON_BAD_EXAMPLE = flags.DEFINE_enum(
    "on_bad_example",
    "error",
    celeba.ON_BAD_EXAMPLE_CHOICES,
    "How the copy will be read: 'error' stops at the first bad row, 'skip' drops bad "
    "rows. Under 'error' any problem makes the exit status 1.",
)
_VERIFY_IMAGES = flags.DEFINE_bool(
    "verify_images", True, "Check that every listed image exists in each image folder found."
)

# Parts in the order the summary lists them, with the words it uses for each.
_PART_LABELS = {
    "attributes": "attributes",
    "boxes": "face boxes",
    "wild_landmarks": "in-the-wild landmarks",
    "aligned_landmarks": "aligned landmarks",
    "identities": "identities",
    "partitions": "partitions",
    "wild_paths": "in-the-wild images",
    "aligned_paths": "aligned images",
}


def format_layout(layout: celeba.CelebALayout) -> str:
    return (
        f"CelebA copy: {layout.data_dir}\n"
        f"Layout: {layout.kind} ({celeba.LAYOUT_DESCRIPTIONS[layout.kind]})"
    )


def format_parts(layout: celeba.CelebALayout) -> str:
    locations = dict(layout.annotation_files)
    locations["wild_paths"] = layout.wild_image_dir
    locations["aligned_paths"] = layout.aligned_image_dir
    width = max(map(len, _PART_LABELS.values()))
    lines = ["Parts:"]
    for part, label in _PART_LABELS.items():
        if locations.get(part) is not None:
            lines.append(f"  {label:<{width}}  present  {locations[part]}")
        else:
            lines.append(f"  {label:<{width}}  missing  {layout.missing_parts[part]}")
    return "\n".join(lines)


def format_partitions(table: CelebATable) -> str:
    lines = [f"Images: {len(table)}"]
    if table.partitions is None:
        lines.append(f"  per partition: unavailable, {table.missing_parts['partitions']}")
        return "\n".join(lines)
    for name, code in attributes.PARTITIONS.items():
        lines.append(f"  {name:<10}  {int(np.sum(table.partitions == code)):>7}")
    return "\n".join(lines)


def format_identities(table: CelebATable) -> str:
    if table.identities is None:
        return f"Identities: unavailable, {table.missing_parts['identities']}"
    lines = [f"Identities: {np.unique(table.identities).size}"]
    if table.partitions is None:
        return "\n".join(lines)

    per_partition = {
        name: set(np.unique(table.identities[table.partitions == code]).tolist())
        for name, code in attributes.PARTITIONS.items()
    }
    for name, identities in per_partition.items():
        lines.append(f"  {name:<10}  {len(identities):>7}")
    shared = []
    for first, second in itertools.combinations(per_partition, 2):
        common = per_partition[first] & per_partition[second]
        if common:
            shared.append(f"{first} and {second} share {len(common)}")
    if shared:
        lines.append(f"  Partitions share identities: {'; '.join(shared)}.")
    else:
        lines.append("  No identity appears in more than one partition.")
    return "\n".join(lines)


def format_attribute_rates(table: CelebATable) -> str:
    positives = table.attributes.sum(axis=0, dtype=np.int64)
    width = max(map(len, attributes.ATTRIBUTE_NAMES))
    lines = [f"  {'attribute':<{width}}  {'positive':>8}  {'count':>7}"]
    for name, count in zip(attributes.ATTRIBUTE_NAMES, positives.tolist()):
        rate = count / len(table)
        lines.append(f"  {name:<{width}}  {rate:>8.1%}  {count:>7}")
    return "Attribute positive rates:\n" + "\n".join(lines)


def format_problems(table: CelebATable) -> str:
    lines = []
    if table.warnings:
        lines.append("Warnings:")
        lines.extend(f"  {message}" for message in table.warnings)
    if not table.problems:
        lines.append("Problems: none")
        return "\n".join(lines)

    lines.append("Problems:")
    lines.extend(f"  {message}" for message in table.problems)
    if table.skipped_rows:
        counts = ", ".join(f"{reason}: {count}" for reason, count in table.skipped_rows.items())
        lines.append(f"Rows with problems: {sum(table.skipped_rows.values())} ({counts})")
    return "\n".join(lines)


def summarize(layout: celeba.CelebALayout, table: CelebATable) -> str:
    """Return the whole report for a copy that the reader could read."""
    sections = [
        format_layout(layout),
        format_parts(layout),
        format_partitions(table),
        format_identities(table),
        format_attribute_rates(table),
        format_problems(table),
    ]
    return "\n\n".join(sections)


def main(argv) -> int:
    del argv
    try:
        layout = celeba.detect_layout(_DATA_DIR.value)
    except FileNotFoundError as error:
        print(f"Error: {error}")
        return 1

    # Read in skip mode so that every problem is found, not only the first one.
    try:
        table = celeba.load_celeba(
            _DATA_DIR.value, on_bad_example="skip", verify_images=_VERIFY_IMAGES.value
        )
    except celeba.CelebAFormatError as error:
        print(format_layout(layout) + "\n\n" + format_parts(layout))
        print(f"\nError: {error}")
        return 1
    print(summarize(layout, table))

    if not table.problems:
        print("\nResult: no problems found.")
        return 0
    if _ON_BAD_EXAMPLE.value == "error":
        print(
            "\nResult: reading with --on_bad_example=error fails on the problems above. "
            "Fix them, or read with --on_bad_example=skip."
        )
        return 1
    print(f"\nResult: readable with --on_bad_example=skip; {len(table)} images are left.")
    return 0


if __name__ == "__main__":
    flags.mark_flag_as_required("data_dir")
    app.run(main)
