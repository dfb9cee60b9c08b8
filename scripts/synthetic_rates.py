"""Print the positive rate of each attribute in a CelebA directory next to CelebA's rate.

Reads the directory with the project's CelebA reader and prints two Markdown tables.
The first compares the 40 positive rates with the targets that the synthetic
generator is calibrated to. The second lists the conditional rates of the main
correlations.

    python scripts/synthetic_rates.py --data_dir=/tmp/synthetic_rates
"""

import numpy as np
from absl import app, flags

from lnet_anet_tf import attributes
from lnet_anet_tf.data import celeba
from lnet_anet_tf.data.synthetic import rates

_DATA_DIR = flags.DEFINE_string("data_dir", None, "CelebA directory to read.", required=True)

# Pairs (attribute, condition): the table shows the attribute's rate among images
# with the condition and among images without it.
_CORRELATIONS = (
    ("Wearing_Lipstick", "Male"),
    ("Heavy_Makeup", "Male"),
    ("No_Beard", "Male"),
    ("Bald", "Male"),
    ("Wearing_Necktie", "Male"),
    ("Attractive", "Male"),
    ("Gray_Hair", "Young"),
    ("Bags_Under_Eyes", "Young"),
    ("Attractive", "Young"),
    ("Mouth_Slightly_Open", "Smiling"),
    ("High_Cheekbones", "Smiling"),
    ("Heavy_Makeup", "Wearing_Lipstick"),
    ("Double_Chin", "Chubby"),
)


def main(argv):
    del argv
    table = celeba.load_celeba(_DATA_DIR.value, verify_images=False)
    labels = table.attributes.astype(bool)
    index = attributes.ATTRIBUTE_INDEX
    print(f"{len(table)} images of {len(np.unique(table.identities))} identities in {_DATA_DIR.value}\n")

    print("| attribute | CelebA target | measured | difference |")
    print("| --- | --- | --- | --- |")
    for name in attributes.ATTRIBUTE_NAMES:
        target = rates.TARGET_RATES[name]
        measured = labels[:, index[name]].mean()
        print(f"| {name} | {target:.4f} | {measured:.4f} | {measured - target:+.4f} |")

    print("\n| rate of | among images with | among images without |")
    print("| --- | --- | --- |")
    for name, condition in _CORRELATIONS:
        given = labels[:, index[condition]]
        with_condition = labels[given, index[name]].mean()
        without_condition = labels[~given, index[name]].mean()
        print(f"| {name} | {condition}: {with_condition:.4f} | {condition}: {without_condition:.4f} |")


if __name__ == "__main__":
    app.run(main)
