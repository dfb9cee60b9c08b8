"""Identity traits, per-image traits and the 40 attribute labels they imply.

Sampling is separate from drawing: `sample_identity` and `sample_appearance` return
plain data, `attribute_labels` turns it into the label row, and the renderer draws
exactly what the data says. Each call takes its own seed, so an image does not
depend on which other images are generated or in which order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf.data.synthetic import rates

# Skin tones from light to dark; a non-pale identity is interpolated along them.
_SKIN_TONES = np.array(
    [(236, 196, 168), (222, 170, 136), (198, 142, 104), (160, 106, 72), (112, 72, 48), (82, 54, 40)],
    dtype=float,
)
_PALE_SKIN = np.array((252, 234, 224), dtype=float)

HAIR_COLOURS = {
    "black": (30, 25, 25),
    "brown": (105, 66, 38),
    "blond": (226, 192, 120),
    "gray": (178, 178, 176),
    # Red hair, which none of the four hair colour attributes covers.
    "other": (156, 62, 34),
}
# Shades of the "other" hair colour: red, copper and auburn.
_OTHER_HAIR_SHADES = ((156, 62, 34), (186, 98, 50), (128, 48, 40))
_EYE_COLOURS = ((70, 45, 30), (60, 100, 150), (70, 115, 75), (120, 88, 50), (35, 25, 20))
_LIPSTICK_COLOURS = ((200, 20, 45), (225, 70, 125), (150, 25, 70), (185, 45, 35))
_EYESHADOW_COLOURS = ((120, 70, 140), (95, 60, 45), (70, 95, 140), (150, 90, 110))
_JEWELLERY_COLOURS = ((235, 190, 60), (215, 215, 225), (245, 240, 230), (220, 40, 60), (40, 170, 200))
_FRAME_COLOURS = ((20, 20, 20), (90, 50, 25), (160, 160, 170), (120, 20, 30))
HAT_STYLES = ("cap", "beanie", "fedora")
NECKLINES = ("crew", "v", "scoop", "collar")

# Attractive is not drawn: it is a threshold on this score of drawn traits. The
# threshold sets the positive rate near its target (checked by the rate test).
_ATTRACTIVE_WEIGHTS = {
    "Male": -0.3,
    "Young": 0.7,
    "Heavy_Makeup": 0.5,
    "Smiling": 0.3,
    "Oval_Face": 0.4,
    "High_Cheekbones": 0.3,
    "Pointy_Nose": 0.2,
    "Bags_Under_Eyes": -0.7,
    "Chubby": -1.0,
    "Double_Chin": -0.8,
    "Bald": -1.0,
    "Receding_Hairline": -0.5,
    "Big_Nose": -0.5,
    "Blurry": -0.6,
    "Eyeglasses": -0.3,
}
_ATTRACTIVE_EYE_SIZE_WEIGHT = 1.5
ATTRACTIVE_THRESHOLD = 0.66


@dataclasses.dataclass(frozen=True)
class Identity:
    """Traits fixed for every image of one person."""

    identity: int
    male: bool
    young: bool
    pale_skin: bool
    skin: tuple  # RGB
    face_shape: str  # "oval", "round", "square" or "chubby"
    face_width: float  # multiplier of the head's half-width
    face_length: float  # multiplier of the head's half-height
    double_chin: bool
    eye_spacing: float  # multiplier of the distance between the eyes
    eye_size: float  # in [-1, 1]; larger means bigger eyes
    eye_colour: tuple
    nose: str  # "big", "pointy" or "plain"
    nose_length: float
    big_lips: bool
    lip_width: float
    arched_brows: bool
    bushy_brows: bool
    bags_under_eyes: bool
    hair_colour: str  # a key of HAIR_COLOURS
    hair_rgb: tuple
    hairline: str  # "bald", "receding", "bangs" or "normal"
    hair_style: str  # "wavy", "straight" or "short" (neither attribute)
    hair_length: str  # "short", "medium" or "long"
    beard: str  # a key of rates.BEARD_STYLES
    glasses_wearer: bool
    glasses_frame: tuple  # RGB of the frame
    glasses_round: bool


# The fields of `Variation` that are (low, high) ranges, in its order.
RANGE_NAMES = ("light_strength_range", "brightness_range", "contrast_range", "colour_gain_range")


@dataclasses.dataclass(frozen=True)
class Variation:
    """Ranges of the light and head turn that the images of one person differ in.

    Each image draws its light and head turn from these ranges. No label reads
    them, so two datasets with the same seed and different ranges have the same
    labels and face boxes. `head_turn` also moves the eye, nose and mouth
    landmarks. The defaults are the embedded dataset's. docs/benchmarks.md
    ("Harder synthetic images") measures wider ranges.
    """

    # Darkening of the side away from the light, 0 for flat light.
    light_strength_range: tuple = (0.0, 0.3)
    brightness_range: tuple = (0.85, 1.15)
    contrast_range: tuple = (0.85, 1.15)
    # Per-channel gain of the colour cast.
    colour_gain_range: tuple = (0.9, 1.1)
    # Sideways shift of the eyes, nose and mouth at the largest head turn, in
    # eye distances. The aligned images align the eyes, so a larger shift moves
    # the head outline and the hair there, not the eyes.
    head_turn: float = 0.2

    def __post_init__(self):
        for name in RANGE_NAMES:
            value = getattr(self, name)
            # The darkening is a fraction of the colour, and the others are factors.
            fraction = name == "light_strength_range"
            if not _valid_range(value, fraction):
                condition = "0 <= low <= high <= 1" if fraction else "0 < low <= high"
                raise ValueError(f"{name} is {value!r}; it must be (low, high) with {condition}.")
        turn = self.head_turn
        if isinstance(turn, bool) or not isinstance(turn, (int, float)) or not 0.0 <= turn <= MAX_HEAD_TURN:
            raise ValueError(
                f"head_turn is {self.head_turn!r}; it must lie in [0, {MAX_HEAD_TURN}] eye "
                f"distances, or an eye leaves the face."
            )


# At yaw 1 this shift puts the outer eye's centre 0.95 eye distances from the
# head's centre line, just inside the narrowest face outline (0.96).
MAX_HEAD_TURN = 0.45


def _valid_range(value, fraction: bool) -> bool:
    is_pair = isinstance(value, (tuple, list)) and len(value) == 2
    if not is_pair or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return False
    low, high = value
    return 0.0 <= low <= high <= 1.0 if fraction else 0.0 < low <= high


DEFAULT_VARIATION = Variation()


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Traits of one image of a person: expression, accessories, pose and light."""

    smiling: bool
    mouth_open: bool
    high_cheekbones: bool
    narrow_eyes: bool
    eyeglasses: bool
    sunglasses: bool
    hat: bool
    hat_style: str
    hat_rgb: tuple
    lipstick: bool
    lipstick_rgb: tuple
    heavy_makeup: bool
    eyeshadow_rgb: tuple
    rosy_cheeks: bool
    earrings: bool
    earring_hoops: bool
    earring_rgb: tuple
    necklace: bool
    necklace_rgb: tuple
    necktie: bool
    tie_rgb: tuple
    clothing_rgb: tuple
    neckline: str
    blurry: bool
    yaw: float  # in [-1, 1], a fake head turn that shifts the features sideways
    head_turn: float  # the features' shift at yaw 1, in eye distances (`Variation.head_turn`)
    roll_degrees: float  # in-plane rotation, counter-clockwise
    light_angle: float  # direction the light comes from, radians
    light_strength: float  # 0 is flat light
    brightness: float
    contrast: float
    colour_gains: tuple  # per-channel gains for a colour cast


def identity_rng(seed: int, identity: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence((seed, 1, identity)))


def image_rng(seed: int, identity: int, image: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence((seed, 2, identity, image)))


def _bernoulli(rng: np.random.Generator, name: str, group: int, parent: bool = False) -> bool:
    return bool(rng.random() < rates.RULES[name].probability(group, parent))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, rgb, amount: float) -> tuple:
    values = np.asarray(rgb, float) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(values, 0, 255))


def _sample_hair(rng: np.random.Generator, group: int, male: bool) -> dict:
    bald = _bernoulli(rng, "Bald", group)
    receding = _bernoulli(rng, "Receding_Hairline", group, bald)
    bangs = _bernoulli(rng, "Bangs", group, bald or receding)
    hairline = "bald" if bald else "receding" if receding else "bangs" if bangs else "normal"

    colour = "other"
    taken = False
    for name, key in (("Gray_Hair", "gray"), ("Blond_Hair", "blond"), ("Black_Hair", "black"), ("Brown_Hair", "brown")):
        if _bernoulli(rng, name, group, taken):
            colour = key
            taken = True

    wavy = _bernoulli(rng, "Wavy_Hair", group, bald)
    straight = _bernoulli(rng, "Straight_Hair", group, bald or wavy)
    style = "wavy" if wavy else "straight" if straight else "short"
    if style == "short":
        length = "short"
    elif male:
        length = "long" if rng.random() < 0.15 else "medium"
    else:
        length = "medium" if rng.random() < 0.2 else "long"
    return dict(
        hairline=hairline,
        hair_colour=colour,
        hair_rgb=_jitter(rng, _pick(rng, _OTHER_HAIR_SHADES) if colour == "other" else HAIR_COLOURS[colour], 14),
        hair_style=style,
        hair_length=length,
    )


def _sample_beard(rng: np.random.Generator, male: bool) -> str:
    if not male:
        return "clean"
    names = list(rates.BEARD_STYLES)
    probabilities = np.array([rates.BEARD_STYLES[name][0] for name in names])
    return names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]


def sample_identity(seed: int, identity: int) -> Identity:
    """Draw the fixed traits of person `identity` for dataset seed `seed`."""
    rng = identity_rng(seed, identity)
    male = bool(rng.random() < rates.TARGET_RATES["Male"])
    young_rate = rates.YOUNG_GIVEN_MALE if male else rates.YOUNG_GIVEN_FEMALE
    young = bool(rng.random() < young_rate)
    group = rates.group_index(male, young)

    pale = _bernoulli(rng, "Pale_Skin", group)
    if pale:
        skin = _jitter(rng, _PALE_SKIN, 4)
    else:
        position = rng.uniform(0, len(_SKIN_TONES) - 1)
        low = int(position)
        high = min(low + 1, len(_SKIN_TONES) - 1)
        tone = _SKIN_TONES[low] + (position - low) * (_SKIN_TONES[high] - _SKIN_TONES[low])
        skin = _jitter(rng, tone, 6)

    chubby = _bernoulli(rng, "Chubby", group)
    double_chin = _bernoulli(rng, "Double_Chin", group, chubby)
    oval = _bernoulli(rng, "Oval_Face", group, chubby)
    if chubby:
        shape, width, length = "chubby", rng.uniform(1.14, 1.22), rng.uniform(0.97, 1.02)
    elif oval:
        shape, width, length = "oval", rng.uniform(0.86, 0.92), rng.uniform(1.06, 1.12)
    else:
        shape = _pick(rng, ("round", "square"))
        width, length = rng.uniform(0.96, 1.06), rng.uniform(0.95, 1.02)

    big_nose = _bernoulli(rng, "Big_Nose", group)
    pointy_nose = _bernoulli(rng, "Pointy_Nose", group, big_nose)
    # A nose that is both big and pointy is drawn big with a pointed tip.
    nose = "big" if big_nose else "pointy" if pointy_nose else "plain"
    arched = _bernoulli(rng, "Arched_Eyebrows", group)

    return Identity(
        identity=identity,
        male=male,
        young=young,
        pale_skin=pale,
        skin=skin,
        face_shape=shape,
        face_width=float(width) * (1.04 if male else 1.0),
        face_length=float(length),
        double_chin=double_chin,
        eye_spacing=float(rng.uniform(0.92, 1.08)),
        eye_size=float(rng.uniform(-1.0, 1.0)),
        eye_colour=_pick(rng, _EYE_COLOURS),
        nose=nose if not (big_nose and pointy_nose) else "big_pointy",
        nose_length=float(rng.uniform(0.92, 1.08)),
        big_lips=_bernoulli(rng, "Big_Lips", group),
        lip_width=float(rng.uniform(0.9, 1.1)),
        arched_brows=arched,
        bushy_brows=_bernoulli(rng, "Bushy_Eyebrows", group, arched),
        bags_under_eyes=_bernoulli(rng, "Bags_Under_Eyes", group),
        beard=_sample_beard(rng, male),
        glasses_wearer=_bernoulli(rng, "glasses_wearer", group),
        glasses_frame=_pick(rng, _FRAME_COLOURS),
        glasses_round=bool(rng.random() < 0.4),
        **_sample_hair(rng, group, male),
    )


def sample_appearance(
    identity: Identity, seed: int, image: int, variation: Variation = DEFAULT_VARIATION
) -> Appearance:
    """Draw the traits of image number `image` (0-based) of `identity`.

    `variation` sets the ranges of the light and the head turn. Every range takes
    one draw whatever its bounds, so it changes no other trait.
    """
    rng = image_rng(seed, identity.identity, image)
    group = rates.group_index(identity.male, identity.young)

    smiling = _bernoulli(rng, "Smiling", group)
    lipstick = _bernoulli(rng, "Wearing_Lipstick", group)
    heavy_makeup = _bernoulli(rng, "Heavy_Makeup", group, lipstick)
    necktie = _bernoulli(rng, "Wearing_Necktie", group)
    necklace = _bernoulli(rng, "Wearing_Necklace", group)
    eyeglasses = identity.glasses_wearer and rng.random() < rates.GLASSES_WORN_FRACTION

    # A tie needs a shirt collar; a necklace needs an open neckline to lie on.
    if necktie:
        neckline = "collar"
    elif necklace:
        neckline = _pick(rng, ("v", "scoop"))
    else:
        neckline = _pick(rng, NECKLINES)

    return Appearance(
        smiling=smiling,
        mouth_open=_bernoulli(rng, "Mouth_Slightly_Open", group, smiling),
        high_cheekbones=_bernoulli(rng, "High_Cheekbones", group, smiling),
        narrow_eyes=_bernoulli(rng, "Narrow_Eyes", group, smiling),
        eyeglasses=bool(eyeglasses),
        sunglasses=bool(eyeglasses and rng.random() < 0.15),
        hat=_bernoulli(rng, "Wearing_Hat", group),
        hat_style=_pick(rng, HAT_STYLES),
        hat_rgb=tuple(int(v) for v in rng.integers(20, 235, 3)),
        lipstick=lipstick,
        lipstick_rgb=_pick(rng, _LIPSTICK_COLOURS),
        heavy_makeup=heavy_makeup,
        eyeshadow_rgb=_pick(rng, _EYESHADOW_COLOURS),
        rosy_cheeks=_bernoulli(rng, "Rosy_Cheeks", group, heavy_makeup),
        earrings=_bernoulli(rng, "Wearing_Earrings", group),
        earring_hoops=bool(rng.random() < 0.5),
        earring_rgb=_pick(rng, _JEWELLERY_COLOURS),
        necklace=necklace,
        necklace_rgb=_pick(rng, _JEWELLERY_COLOURS),
        necktie=necktie,
        tie_rgb=tuple(int(v) for v in rng.integers(20, 220, 3)),
        clothing_rgb=tuple(int(v) for v in rng.integers(15, 240, 3)),
        neckline=neckline,
        blurry=_bernoulli(rng, "Blurry", group),
        yaw=float(rng.uniform(-1.0, 1.0)),
        head_turn=float(variation.head_turn),
        roll_degrees=float(rng.uniform(-6.0, 6.0)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(*variation.light_strength_range)),
        brightness=float(rng.uniform(*variation.brightness_range)),
        contrast=float(rng.uniform(*variation.contrast_range)),
        colour_gains=tuple(float(g) for g in rng.uniform(*variation.colour_gain_range, 3)),
    )


def attribute_labels(identity: Identity, appearance: Appearance) -> np.ndarray:
    """Return the 40 labels (1 or -1) in `attributes.ATTRIBUTE_NAMES` order."""
    present = {
        "Male": identity.male,
        "Young": identity.young,
        "Pale_Skin": identity.pale_skin,
        "Chubby": identity.face_shape == "chubby",
        "Oval_Face": identity.face_shape == "oval",
        "Double_Chin": identity.double_chin,
        "Big_Nose": identity.nose in ("big", "big_pointy"),
        "Pointy_Nose": identity.nose in ("pointy", "big_pointy"),
        "Big_Lips": identity.big_lips,
        "Arched_Eyebrows": identity.arched_brows,
        "Bushy_Eyebrows": identity.bushy_brows,
        "Bags_Under_Eyes": identity.bags_under_eyes,
        "Bald": identity.hairline == "bald",
        "Receding_Hairline": identity.hairline == "receding",
        "Bangs": identity.hairline == "bangs",
        "Black_Hair": identity.hair_colour == "black",
        "Blond_Hair": identity.hair_colour == "blond",
        "Brown_Hair": identity.hair_colour == "brown",
        "Gray_Hair": identity.hair_colour == "gray",
        "Wavy_Hair": identity.hair_style == "wavy",
        "Straight_Hair": identity.hair_style == "straight",
        "No_Beard": identity.beard in rates.BEARDLESS_STYLES,
        "Smiling": appearance.smiling,
        "Mouth_Slightly_Open": appearance.mouth_open,
        "High_Cheekbones": appearance.high_cheekbones,
        "Narrow_Eyes": appearance.narrow_eyes,
        "Eyeglasses": appearance.eyeglasses,
        "Wearing_Hat": appearance.hat,
        "Wearing_Lipstick": appearance.lipstick,
        "Heavy_Makeup": appearance.heavy_makeup,
        "Rosy_Cheeks": appearance.rosy_cheeks,
        "Wearing_Earrings": appearance.earrings,
        "Wearing_Necklace": appearance.necklace,
        "Wearing_Necktie": appearance.necktie,
        "Blurry": appearance.blurry,
    }
    for name in ("5_o_Clock_Shadow", "Goatee", "Mustache", "Sideburns"):
        present[name] = name in rates.BEARD_STYLES[identity.beard][1]
    present["Attractive"] = attractive_score(present, identity.eye_size) > ATTRACTIVE_THRESHOLD

    return np.array(
        [1 if present[name] else -1 for name in attributes.ATTRIBUTE_NAMES], dtype=np.int8
    )


def attractive_score(present: dict, eye_size: float) -> float:
    """Score whose threshold defines Attractive, from drawn traits only."""
    score = _ATTRACTIVE_EYE_SIZE_WEIGHT * eye_size
    for name, weight in _ATTRACTIVE_WEIGHTS.items():
        score += weight * float(present[name])
    return score


def sample_labels(seed: int, num_identities: int, images_per_identity: int) -> np.ndarray:
    """Return [num_identities * images_per_identity, 40] labels, without drawing."""
    rows = []
    for identity_id in range(1, num_identities + 1):
        identity = sample_identity(seed, identity_id)
        for image in range(images_per_identity):
            rows.append(attribute_labels(identity, sample_appearance(identity, seed, image)))
    return np.stack(rows)
