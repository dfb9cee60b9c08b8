"""The person layer: head, hair, neck, shoulders and clothing on a transparent canvas.

A person is drawn once, upright and in a fixed canonical frame (eyes level, the
distance between the eyes about `EYE_DISTANCE` pixels). The scene module then maps
this layer into the in-the-wild image and into the aligned crop with two affine
transforms, and maps the landmarks and the face box with the same transforms, so
the annotations are exact in both images.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from lnet_anet_tf.data.synthetic import accessories, face, hair
from lnet_anet_tf.data.synthetic.paint import Canvas, ellipse_box, shade
from lnet_anet_tf.data.synthetic.traits import Appearance, Identity

EYE_DISTANCE = 40.0
LAYER_SIZE = (300, 400)
_CENTRE_X = 150.0
_EYE_Y = 170.0

# Superellipse exponent and chin taper of each face outline.
_OUTLINES = {
    "oval": (2.0, 0.30),
    "round": (2.0, 0.16),
    "square": (2.8, 0.10),
    "chubby": (2.3, 0.06),
}
_OUTLINE_POINTS = 64
_ANGLES = [2 * math.pi * i / _OUTLINE_POINTS for i in range(_OUTLINE_POINTS)]


@dataclasses.dataclass
class Layout:
    """Positions and sizes of the parts of one drawn person, in canonical layer pixels."""

    unit: float  # EYE_DISTANCE, the length every other size is a multiple of
    cx: float
    eye_y: float
    half_width: float  # of the head
    half_height: float
    head_cy: float
    chin_y: float
    outline: list  # closed polygon of the face, clockwise from the right
    feature_dx: float  # sideways shift of eyes, nose and mouth from the head turn
    eyes: tuple  # ((x, y), (x, y)), image-left eye first
    eye_half_widths: tuple
    eye_half_height: float
    brow_y: float
    nose_tip: tuple
    mouth_y: float
    mouth_corners: tuple  # ((x, y), (x, y)), image-left corner first
    ear_x: tuple  # centres of the image-left and image-right ears
    ear_top: float
    ear_bottom: float
    neck_half_width: float
    shoulder_y: float

    def landmarks(self) -> np.ndarray:
        """Return the 5 landmarks as a [5, 2] array in `LANDMARK_NAMES` order."""
        return np.array(
            [self.eyes[0], self.eyes[1], self.nose_tip, self.mouth_corners[0], self.mouth_corners[1]],
            dtype=np.float64,
        )

    def face_box(self) -> tuple:
        """Return the face box (x0, y0, x1, y1): forehead to chin, ear to ear.

        It matches the extent of CelebA's boxes: from a little above the eyebrows
        to just below the chin, and across the head including the ears.
        """
        margin = 0.1 * self.unit
        return (
            self.cx - self.half_width - margin,
            self.eye_y - 1.25 * self.unit,
            self.cx + self.half_width + margin,
            self.chin_y + 0.05 * self.unit,
        )


def _outline(cx: float, cy: float, a: float, b: float, shape: str) -> list:
    exponent, taper = _OUTLINES[shape]
    power = 2.0 / exponent
    points = []
    for angle in _ANGLES:
        c, s = math.cos(angle), math.sin(angle)
        x = a * math.copysign(abs(c) ** power, c) * (1.0 - taper * max(0.0, s) ** 2)
        y = b * math.copysign(abs(s) ** power, s)
        points.append((cx + x, cy + y))
    return points


def make_layout(identity: Identity, appearance: Appearance) -> Layout:
    """Compute the canonical geometry of one image of `identity`."""
    unit = EYE_DISTANCE
    cx, eye_y = _CENTRE_X, _EYE_Y
    a = 1.12 * unit * identity.face_width
    b = 1.78 * unit * identity.face_length
    head_cy = eye_y + 0.1 * unit
    yaw = appearance.yaw

    # A head turn moves the features towards one side and narrows the far eye.
    feature_dx = appearance.head_turn * unit * yaw
    half_spacing = 0.5 * unit * identity.eye_spacing * (1.0 - 0.08 * abs(yaw))
    eye_half_width = 0.24 * unit * (1.0 + 0.08 * identity.eye_size)
    near_far = (1.0 + 0.12 * yaw, 1.0 - 0.12 * yaw)
    eye_half_height = 0.115 * unit * (1.0 + 0.15 * identity.eye_size)
    if appearance.narrow_eyes:
        eye_half_height *= 0.42
    elif appearance.smiling:
        eye_half_height *= 0.85

    mouth_y = eye_y + 1.06 * unit
    mouth_half_width = 0.38 * unit * identity.lip_width * (1.15 if appearance.smiling else 1.0)
    corner_lift = 0.07 * unit if appearance.smiling else 0.0
    mouth_cx = cx + feature_dx
    neck = 0.58 if identity.male else 0.48
    chin_y = head_cy + b

    return Layout(
        unit=unit,
        cx=cx,
        eye_y=eye_y,
        half_width=a,
        half_height=b,
        head_cy=head_cy,
        chin_y=chin_y,
        outline=_outline(cx, head_cy, a, b, identity.face_shape),
        feature_dx=feature_dx,
        eyes=((cx + feature_dx - half_spacing, eye_y), (cx + feature_dx + half_spacing, eye_y)),
        eye_half_widths=(eye_half_width * near_far[0], eye_half_width * near_far[1]),
        eye_half_height=eye_half_height,
        brow_y=eye_y - 0.45 * unit,
        nose_tip=(cx + 1.6 * feature_dx, eye_y + 0.64 * unit * identity.nose_length),
        mouth_y=mouth_y,
        mouth_corners=(
            (mouth_cx - mouth_half_width, mouth_y - corner_lift),
            (mouth_cx + mouth_half_width, mouth_y - corner_lift),
        ),
        ear_x=(cx - a + 0.02 * unit, cx + a - 0.02 * unit),
        ear_top=eye_y - 0.15 * unit,
        ear_bottom=eye_y + 0.75 * unit,
        neck_half_width=neck * unit,
        shoulder_y=chin_y + 0.75 * unit,
    )


def _draw_body(canvas: Canvas, layout: Layout, identity: Identity, appearance: Appearance) -> None:
    draw, solid = canvas.draw, canvas.solid
    u, cx = layout.unit, layout.cx
    skin = identity.skin
    neck = layout.neck_half_width
    top = layout.shoulder_y
    bottom = float(LAYER_SIZE[1])
    shoulders = 2.5 * u * (1.1 if identity.male else 1.0)

    solid.polygon(
        [
            (cx - neck, layout.chin_y - 0.5 * u),
            (cx + neck, layout.chin_y - 0.5 * u),
            (cx + neck * 1.1, top + 0.4 * u),
            (cx - neck * 1.1, top + 0.4 * u),
        ],
        fill=shade(skin, 0.9),
    )
    # The chin casts a shadow on the neck.
    draw.ellipse(
        ellipse_box(cx, layout.chin_y - 0.05 * u, neck * 1.05, 0.3 * u), fill=shade(skin, 0.72)
    )

    clothing = [
        (cx - neck * 1.05, top - 0.08 * u),
        (cx - shoulders * 0.75, top + 0.25 * u),
        (cx - shoulders, top + 0.75 * u),
        (cx - shoulders * 1.1, top + 1.6 * u),
        (cx - shoulders * 1.12, bottom),
        (cx + shoulders * 1.12, bottom),
        (cx + shoulders * 1.1, top + 1.6 * u),
        (cx + shoulders, top + 0.75 * u),
        (cx + shoulders * 0.75, top + 0.25 * u),
        (cx + neck * 1.05, top - 0.08 * u),
    ]
    solid.polygon(clothing, fill=appearance.clothing_rgb)
    draw.line(clothing[1:4], fill=shade(appearance.clothing_rgb, 0.7), width=2)
    draw.line(clothing[6:9], fill=shade(appearance.clothing_rgb, 0.7), width=2)
    accessories.draw_neckline(draw, layout, identity, appearance)


def draw_person(identity: Identity, appearance: Appearance) -> tuple[Image.Image, Image.Image, Layout]:
    """Draw one image of `identity` on a canvas of `LAYER_SIZE`.

    Returns the RGB image, its coverage mask (mode "L", 255 on the person) and the
    `Layout`. Parts are drawn back to front: hair behind
    the head, body and neckline, ears, the face and its features, the front hair,
    then glasses, hat and earrings.
    """
    layout = make_layout(identity, appearance)
    canvas = Canvas(LAYER_SIZE)

    hair.draw_back_hair(canvas.solid, layout, identity, appearance)
    _draw_body(canvas, layout, identity, appearance)
    face.draw_ears(canvas.solid, layout, identity)
    face.draw_face(canvas, layout, identity, appearance)
    hair.draw_front_hair(canvas, layout, identity, appearance)
    if appearance.eyeglasses:
        accessories.draw_glasses(canvas.draw, layout, identity, appearance)
    if appearance.hat:
        accessories.draw_hat(canvas.solid, layout, identity, appearance)
    if appearance.earrings:
        accessories.draw_earrings(canvas.solid, layout, appearance)
    return canvas.image, canvas.mask, layout
