"""The embedded default dataset: a synthetic CelebA, written in CelebA's on-disk format.

Each image shows one drawn person (head, hair, neck, shoulders and clothing) on a
cluttered background with skin-coloured distractor blobs. The person is placed at a
random position and scale (face box 15% to 60% of the image height) and rotated by
up to 6 degrees, under varied light, and the image is saved as JPEG. The aligned 178 x 218 crop is the same person drawn
again with the eyes at (69, 111) and (108, 111). Boxes and landmarks come from the
same geometry as the pixels, so they are exact.

Identities keep sex, age group, skin tone, face shape, eye spacing and size, eye
colour, nose, lips, eyebrows, natural hair colour, hairline, hair style and beard.
Their images vary in pose, expression, accessories, makeup, clothing, light, blur
and background.

Drawn attributes (39): 5_o_Clock_Shadow, Arched_Eyebrows, Bags_Under_Eyes, Bald,
Bangs, Big_Lips, Big_Nose, Black_Hair, Blond_Hair, Blurry, Brown_Hair,
Bushy_Eyebrows, Chubby, Double_Chin, Eyeglasses, Goatee, Gray_Hair, Heavy_Makeup,
High_Cheekbones, Male, Mouth_Slightly_Open, Mustache, Narrow_Eyes, No_Beard,
Oval_Face, Pale_Skin, Pointy_Nose, Receding_Hairline, Rosy_Cheeks, Sideburns,
Smiling, Straight_Hair, Wavy_Hair, Wearing_Earrings, Wearing_Hat, Wearing_Lipstick,
Wearing_Necklace, Wearing_Necktie, Young. Male is drawn as a slightly wider face, a
thicker neck and broader shoulders, and it shows mostly through its correlates at
CelebA's rates (beards, shorter hair, no makeup, ties). Old identities (Young -1)
get forehead lines, crow's feet and nasolabial folds, and more often gray hair,
bags under the eyes, baldness and a receding hairline.

Derived attribute (1): Attractive is a threshold on a score of drawn traits. The
score rises with female, young, heavy makeup, smiling, oval face, high cheekbones,
pointy nose and eye size, and falls with bags under the eyes, chubby, double chin,
bald, receding hairline, big nose, blurry and eyeglasses. See
`traits.attractive_score`.

Positive rates and correlations follow CelebA's: see `rates.py` and
docs/synthetic_data.md.

Command line (see `__main__.py`):

    python -m lnet_anet_tf.data.synthetic --output_dir DIR --num_identities 200 \\
        --images_per_identity 12 --seed 0 --preview preview.png
"""

from lnet_anet_tf.data.synthetic.cache import DEFAULT_CACHE_DIR, ensure_default_dataset, variation
from lnet_anet_tf.data.synthetic.objects import CLASS_NAMES, generate_object_classes
from lnet_anet_tf.data.synthetic.render import ALIGNED_SIZE, Example, render_example
from lnet_anet_tf.data.synthetic.traits import Variation, sample_labels
from lnet_anet_tf.data.synthetic.writer import generate_celeba

__all__ = [
    "ALIGNED_SIZE",
    "CLASS_NAMES",
    "Example",
    "DEFAULT_CACHE_DIR",
    "ensure_default_dataset",
    "generate_celeba",
    "generate_object_classes",
    "render_example",
    "sample_labels",
    "Variation",
    "variation",
]
