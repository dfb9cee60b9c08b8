"""The 40 CelebA attribute names and the 5 landmark names, in the release's order."""

# Column order of `list_attr_celeba.txt` in the CelebA release. Every array of
# attributes in this package uses this order.
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)
ATTRIBUTE_INDEX = {name: index for index, name in enumerate(ATTRIBUTE_NAMES)}

# The five landmarks, each an (x, y) pair in pixels: the header of
# `list_landmarks_celeba.txt` and `list_landmarks_align_celeba.txt`.
LANDMARK_COLUMNS = (
    "lefteye_x",
    "lefteye_y",
    "righteye_x",
    "righteye_y",
    "nose_x",
    "nose_y",
    "leftmouth_x",
    "leftmouth_y",
    "rightmouth_x",
    "rightmouth_y",
)
LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")

# Header of `list_bbox_celeba.txt`: the face box in pixels of the in-the-wild image.
BOX_COLUMNS = ("x_1", "y_1", "width", "height")

# `list_eval_partition.txt` codes.
PARTITIONS = {"train": 0, "validation": 1, "test": 2}
