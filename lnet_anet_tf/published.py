"""Published per-attribute accuracies of LNets+ANet, for reports beside measured ones.

Source: Liu, Luo, Wang, Tang, "Deep Learning Face Attributes in the Wild", ICCV 2015,
Table 1, row "LNets+ANet" (percent, test partitions of CelebA and LFWA). The paper
reports plain accuracy only; it gives no balanced accuracy.
"""

from lnet_anet_tf import attributes

_CELEBA = (
    91, 79, 81, 79, 98, 95, 68, 78, 88, 95, 84, 80, 90, 91, 92, 99, 95, 97, 90, 87,
    98, 92, 95, 81, 95, 66, 91, 72, 89, 90, 96, 92, 73, 80, 82, 99, 93, 71, 93, 87,
)
_LFWA = (
    84, 82, 83, 83, 88, 88, 75, 81, 90, 97, 74, 77, 82, 73, 78, 95, 78, 84, 95, 88,
    94, 82, 92, 81, 79, 74, 84, 80, 85, 78, 77, 91, 76, 76, 94, 88, 95, 88, 79, 86,
)

# Attribute name -> published accuracy in percent.
CELEBA_ACCURACY = dict(zip(attributes.ATTRIBUTE_NAMES, _CELEBA))
LFWA_ACCURACY = dict(zip(attributes.ATTRIBUTE_NAMES, _LFWA))

# Mean accuracies as printed in the paper (rounded to whole percent there).
CELEBA_MEAN_ACCURACY = 87
LFWA_MEAN_ACCURACY = 84
