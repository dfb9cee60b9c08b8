"""LNet + ANet cascade for face attribute prediction in the wild.

Liu, Luo, Wang and Tang, "Deep Learning Face Attributes in the Wild", ICCV 2015.
From a raw photo, with no face detector and no landmarks, the cascade localizes the
face with two weakly supervised localization nets (LNet_o, LNet_s) and predicts the 40
CelebA attributes with ANet features and one linear SVM per attribute.
"""

__version__ = "0.1.0"
