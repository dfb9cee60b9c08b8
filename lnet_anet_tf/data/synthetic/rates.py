"""Target positive rates and the calibrated conditional probabilities behind them.

Every sampled trait depends on the person's group (sex x age) and on at most one
parent trait. Each rule is written as relative weights: one weight per group, which
carries the correlation with Male and Young, and one factor per parent state, which
carries the correlation with the parent (for example Mouth_Slightly_Open with
Smiling). `calibrate` scales the weights so that the marginal rate over all groups
equals the CelebA target, so the correlations and the marginals are set separately.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Approximate positive rates of the 40 attributes over all 202,599 CelebA images,
# as widely reported from `list_attr_celeba.txt`.
# NOTE: copied from published statistics; there is no CelebA copy on this machine
# to recompute them.
TARGET_RATES = {
    "5_o_Clock_Shadow": 0.1111,
    "Arched_Eyebrows": 0.2668,
    "Attractive": 0.5125,
    "Bags_Under_Eyes": 0.2046,
    "Bald": 0.0224,
    "Bangs": 0.1516,
    "Big_Lips": 0.2408,
    "Big_Nose": 0.2345,
    "Black_Hair": 0.2393,
    "Blond_Hair": 0.1480,
    "Blurry": 0.0509,
    "Brown_Hair": 0.2052,
    "Bushy_Eyebrows": 0.1422,
    "Chubby": 0.0576,
    "Double_Chin": 0.0467,
    "Eyeglasses": 0.0651,
    "Goatee": 0.0628,
    "Gray_Hair": 0.0419,
    "Heavy_Makeup": 0.3869,
    "High_Cheekbones": 0.4550,
    "Male": 0.4168,
    "Mouth_Slightly_Open": 0.4834,
    "Mustache": 0.0415,
    "Narrow_Eyes": 0.1150,
    "No_Beard": 0.8349,
    "Oval_Face": 0.2842,
    "Pale_Skin": 0.0429,
    "Pointy_Nose": 0.2774,
    "Receding_Hairline": 0.0798,
    "Rosy_Cheeks": 0.0657,
    "Sideburns": 0.0565,
    "Smiling": 0.4821,
    "Straight_Hair": 0.2084,
    "Wavy_Hair": 0.3196,
    "Wearing_Earrings": 0.1889,
    "Wearing_Hat": 0.0485,
    "Wearing_Lipstick": 0.4724,
    "Wearing_Necklace": 0.1230,
    "Wearing_Necktie": 0.0727,
    "Young": 0.7736,
}

# P(Young | sex), chosen so that P(Young) matches its target: 0.5832 * 0.86 +
# 0.4168 * 0.65 = 0.7725.
YOUNG_GIVEN_FEMALE = 0.86
YOUNG_GIVEN_MALE = 0.65

# Groups in the order (female young, female old, male young, male old), indexed by
# `group_index`.
_MALE = TARGET_RATES["Male"]
GROUP_PROBABILITIES = np.array(
    [
        (1 - _MALE) * YOUNG_GIVEN_FEMALE,
        (1 - _MALE) * (1 - YOUNG_GIVEN_FEMALE),
        _MALE * YOUNG_GIVEN_MALE,
        _MALE * (1 - YOUNG_GIVEN_MALE),
    ]
)

# A glasses wearer has glasses on in this fraction of their images.
GLASSES_WORN_FRACTION = 0.75


def group_index(male: bool, young: bool) -> int:
    return 2 * int(male) + int(not young)


@dataclasses.dataclass(frozen=True)
class Rule:
    """P(trait | group, parent state) for one trait, already calibrated."""

    # [4 groups, 2 parent states] probabilities.
    table: np.ndarray
    # [4] P(trait | group), the parent marginalized out.
    group_rates: np.ndarray

    def probability(self, group: int, parent: bool = False) -> float:
        return float(self.table[group, int(parent)])


def calibrate(
    target: float,
    group_weights,
    parent_rates=None,
    parent_factors=(1.0, 1.0),
) -> Rule:
    """Scale `group_weights` x `parent_factors` so that the marginal rate is `target`.

    `parent_rates` is P(parent | group) for each group (a `Rule.group_rates`), or
    None when the trait has no parent. Probabilities are clipped to 1, and the scale
    is found by bisection because the clipped marginal is monotone in it.
    """
    weights = np.outer(np.asarray(group_weights, float), np.asarray(parent_factors, float))
    if parent_rates is None:
        parent_rates = np.zeros(4)
    parent_rates = np.asarray(parent_rates, float)
    state_probabilities = np.stack([1.0 - parent_rates, parent_rates], axis=1)
    mass = GROUP_PROBABILITIES[:, None] * state_probabilities

    def marginal(scale: float) -> float:
        return float(np.sum(mass * np.minimum(1.0, scale * weights)))

    reachable = float(np.sum(mass[weights > 0]))
    if target > reachable + 1e-9:
        raise ValueError(
            f"Target rate {target} is unreachable with weights {group_weights} and "
            f"parent factors {parent_factors}, because at most {reachable:.4f} is possible."
        )
    low, high = 0.0, 1.0
    while marginal(high) < target:
        high *= 2.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if marginal(middle) < target:
            low = middle
        else:
            high = middle
    table = np.minimum(1.0, high * weights)
    group_rates = np.sum(state_probabilities * table, axis=1)
    return Rule(table=table, group_rates=group_rates)


def union_rates(*rules: Rule) -> np.ndarray:
    """P(any of several mutually exclusive traits | group)."""
    return np.sum([rule.group_rates for rule in rules], axis=0)


# Facial hair: a male-only categorical choice. Each style lists the attributes it
# sets. "stubble" is light stubble, which CelebA often labels 5_o_Clock_Shadow with
# No_Beard still 1. "stubble_beard" adds a short beard along the jaw, and "jaw_beard"
# is that beard alone; both set No_Beard to -1. The probabilities are P(style |
# male), solved so that the five beard attributes and No_Beard hit their targets
# (the population shares divided by P(Male) = 0.4168).
BEARD_STYLES = {
    "clean": (0.4812, ()),
    "stubble": (0.1226, ("5_o_Clock_Shadow",)),
    "stubble_beard": (0.0960, ("5_o_Clock_Shadow",)),
    "stubble_sideburns": (0.0480, ("5_o_Clock_Shadow", "Sideburns")),
    "jaw_beard": (0.0391, ()),
    "goatee": (0.0739, ("Goatee",)),
    "mustache": (0.0228, ("Mustache",)),
    "goatee_mustache": (0.0288, ("Goatee", "Mustache")),
    "full_beard": (0.0480, ("Goatee", "Mustache", "Sideburns")),
    "sideburns": (0.0396, ("Sideburns",)),
}
# Styles whose label keeps No_Beard at 1.
BEARDLESS_STYLES = ("clean", "stubble")


def _build_rules() -> dict:
    rules = {}
    target = TARGET_RATES

    # Identity traits: skin, face shape and features.
    rules["Pale_Skin"] = calibrate(target["Pale_Skin"], (1.3, 1.0, 0.6, 0.5))
    rules["Chubby"] = calibrate(target["Chubby"], (0.25, 1.2, 1.0, 3.0))
    rules["Double_Chin"] = calibrate(
        target["Double_Chin"], (0.5, 1.5, 1.0, 2.5), rules["Chubby"].group_rates, (1.0, 14.0)
    )
    # An oval face is never chubby: the two are different face outlines.
    rules["Oval_Face"] = calibrate(
        target["Oval_Face"], (1.3, 1.0, 0.8, 0.6), rules["Chubby"].group_rates, (1.0, 0.0)
    )
    rules["Bags_Under_Eyes"] = calibrate(target["Bags_Under_Eyes"], (0.5, 1.5, 1.2, 2.5))
    rules["Big_Lips"] = calibrate(target["Big_Lips"], (1.2, 1.0, 0.8, 0.7))
    rules["Big_Nose"] = calibrate(target["Big_Nose"], (0.4, 1.0, 1.5, 2.5))
    rules["Pointy_Nose"] = calibrate(
        target["Pointy_Nose"], (1.4, 1.0, 0.8, 0.6), rules["Big_Nose"].group_rates, (1.0, 0.2)
    )
    rules["Arched_Eyebrows"] = calibrate(target["Arched_Eyebrows"], (1.0, 0.8, 0.15, 0.1))
    rules["Bushy_Eyebrows"] = calibrate(
        target["Bushy_Eyebrows"],
        (0.6, 0.5, 1.6, 1.4),
        rules["Arched_Eyebrows"].group_rates,
        (1.0, 0.2),
    )
    rules["glasses_wearer"] = calibrate(
        target["Eyeglasses"] / GLASSES_WORN_FRACTION, (0.5, 1.6, 1.0, 2.6)
    )

    # Identity traits: hairline, then hair colour and hair style, each chain
    # mutually exclusive (a parent factor of 0 excludes what came before).
    rules["Bald"] = calibrate(target["Bald"], (0.0, 0.01, 0.25, 1.0))
    rules["Receding_Hairline"] = calibrate(
        target["Receding_Hairline"], (0.1, 0.5, 0.8, 2.5), rules["Bald"].group_rates, (1.0, 0.0)
    )
    hairline = union_rates(rules["Bald"], rules["Receding_Hairline"])
    rules["Bangs"] = calibrate(target["Bangs"], (1.0, 0.7, 0.35, 0.2), hairline, (1.0, 0.0))

    rules["Gray_Hair"] = calibrate(target["Gray_Hair"], (0.01, 1.0, 0.03, 1.3))
    rules["Blond_Hair"] = calibrate(
        target["Blond_Hair"], (1.0, 0.8, 0.08, 0.05), rules["Gray_Hair"].group_rates, (1.0, 0.0)
    )
    taken = union_rates(rules["Gray_Hair"], rules["Blond_Hair"])
    rules["Black_Hair"] = calibrate(target["Black_Hair"], (1.0, 1.0, 1.1, 1.0), taken, (1.0, 0.0))
    taken = taken + rules["Black_Hair"].group_rates
    rules["Brown_Hair"] = calibrate(target["Brown_Hair"], (1.0, 1.0, 1.0, 1.0), taken, (1.0, 0.0))

    rules["Wavy_Hair"] = calibrate(
        target["Wavy_Hair"], (1.0, 0.9, 0.3, 0.25), rules["Bald"].group_rates, (1.0, 0.0)
    )
    taken = union_rates(rules["Bald"], rules["Wavy_Hair"])
    rules["Straight_Hair"] = calibrate(
        target["Straight_Hair"], (1.0, 0.9, 0.8, 0.7), taken, (1.0, 0.0)
    )

    # Per-image traits: expression.
    rules["Smiling"] = calibrate(target["Smiling"], (1.15, 1.0, 0.85, 0.75))
    smiling = rules["Smiling"].group_rates
    rules["Mouth_Slightly_Open"] = calibrate(
        target["Mouth_Slightly_Open"], (1.0, 1.0, 1.0, 1.0), smiling, (1.0, 2.8)
    )
    rules["High_Cheekbones"] = calibrate(
        target["High_Cheekbones"], (1.2, 1.0, 0.8, 0.7), smiling, (1.0, 5.0)
    )
    rules["Narrow_Eyes"] = calibrate(target["Narrow_Eyes"], (1.0, 1.0, 1.0, 1.2), smiling, (1.0, 1.8))

    # Per-image traits: accessories, makeup and photo quality.
    rules["Wearing_Hat"] = calibrate(target["Wearing_Hat"], (0.9, 1.0, 1.1, 1.2))
    rules["Wearing_Lipstick"] = calibrate(target["Wearing_Lipstick"], (1.0, 0.85, 0.015, 0.01))
    rules["Heavy_Makeup"] = calibrate(
        target["Heavy_Makeup"],
        (1.0, 0.7, 0.2, 0.1),
        rules["Wearing_Lipstick"].group_rates,
        (0.08, 1.0),
    )
    rules["Rosy_Cheeks"] = calibrate(
        target["Rosy_Cheeks"], (1.0, 0.8, 0.15, 0.1), rules["Heavy_Makeup"].group_rates, (1.0, 4.0)
    )
    rules["Wearing_Earrings"] = calibrate(target["Wearing_Earrings"], (1.0, 1.0, 0.06, 0.04))
    rules["Wearing_Necklace"] = calibrate(target["Wearing_Necklace"], (1.0, 1.0, 0.05, 0.05))
    rules["Wearing_Necktie"] = calibrate(target["Wearing_Necktie"], (0.02, 0.02, 1.0, 1.8))
    rules["Blurry"] = calibrate(target["Blurry"], (1.0, 1.0, 1.0, 1.0))
    return rules


RULES = _build_rules()
