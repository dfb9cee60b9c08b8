"""A labelled contact sheet of generated examples, for people to look at the data."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lnet_anet_tf import attributes
from lnet_anet_tf.data.synthetic import rates

_WILD_SIDE = 200
_ALIGNED_SIZE = (100, 122)
_CELL = (_WILD_SIDE + _ALIGNED_SIZE[0] + 24, _WILD_SIDE + 78)
_COLUMNS = 4
_LANDMARK_COLOURS = ((255, 40, 40), (40, 120, 255), (40, 220, 40), (255, 200, 0), (255, 0, 255))
# Attributes too common to be worth a line on a sheet.
_SKIPPED = {"Young", "No_Beard", "Male"}


def _caption(labels: np.ndarray) -> list:
    present = [name for name, value in zip(attributes.ATTRIBUTE_NAMES, labels) if value > 0]
    sex = "Male" if "Male" in present else "Female"
    age = "Young" if "Young" in present else "Old"
    rarest = sorted((n for n in present if n not in _SKIPPED), key=rates.TARGET_RATES.get)
    words = [f"{sex}, {age}"] + rarest[:6]
    lines, line = [], ""
    for word in words:
        candidate = f"{line}, {word}" if line else word
        if len(candidate) > 48:
            lines.append(line)
            candidate = word
        line = candidate
    lines.append(line)
    return lines[:4]


def _annotated_wild(wild: Image.Image, box: tuple, landmarks: np.ndarray) -> Image.Image:
    scale = _WILD_SIDE / max(wild.size)
    shown = wild.resize((round(wild.width * scale), round(wild.height * scale)), Image.BILINEAR)
    draw = ImageDraw.Draw(shown)
    x, y, width, height = box
    draw.rectangle(
        (x * scale, y * scale, (x + width - 1) * scale, (y + height - 1) * scale), outline=(0, 255, 0), width=2
    )
    for (lx, ly), colour in zip(np.reshape(landmarks, (5, 2)), _LANDMARK_COLOURS):
        cx, cy = (lx + 0.5) * scale, (ly + 0.5) * scale
        draw.ellipse((cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5), fill=colour)
    return shown


def _annotated_aligned(aligned: Image.Image, landmarks: np.ndarray) -> Image.Image:
    scale = _ALIGNED_SIZE[0] / aligned.width
    shown = aligned.resize(_ALIGNED_SIZE, Image.BILINEAR)
    draw = ImageDraw.Draw(shown)
    for (lx, ly), colour in zip(np.reshape(landmarks, (5, 2)), _LANDMARK_COLOURS):
        cx, cy = (lx + 0.5) * scale, (ly + 0.5) * scale
        draw.ellipse((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5), fill=colour)
    return shown


def contact_sheet(examples: list) -> Image.Image:
    """Lay out examples in a grid with boxes, landmarks and attribute names.

    Each example is a tuple (name, wild image, aligned image, labels, box, wild
    landmarks, aligned landmarks) as written to the CelebA files. Landmark colours:
    left eye red, right eye blue, nose green, left mouth corner yellow, right mouth
    corner magenta.
    """
    rows = (len(examples) + _COLUMNS - 1) // _COLUMNS
    sheet = Image.new("RGB", (_CELL[0] * _COLUMNS, _CELL[1] * rows), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (name, wild, aligned, labels, box, wild_landmarks, aligned_landmarks) in enumerate(examples):
        left = (index % _COLUMNS) * _CELL[0] + 6
        top = (index // _COLUMNS) * _CELL[1] + 6
        sheet.paste(_annotated_wild(wild, box, wild_landmarks), (left, top))
        sheet.paste(_annotated_aligned(aligned, aligned_landmarks), (left + _WILD_SIDE + 10, top))
        draw.text((left + _WILD_SIDE + 10, top + _ALIGNED_SIZE[1] + 4), name, fill=(0, 0, 0), font=font)
        for line_number, line in enumerate(_caption(labels)):
            draw.text((left, top + _WILD_SIDE + 4 + 15 * line_number), line, fill=(0, 0, 0), font=font)
    return sheet
