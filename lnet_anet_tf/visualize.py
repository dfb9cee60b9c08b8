"""Draw a prediction on its photo: LNet_o's response map as a heatmap, the boxes, the top attributes.

The response map covers a square frame, LNet_o's letterboxed input or the TFLite
canvas, in which the photo occupies a window. `response_on_image` cuts that
window out and stretches it over the photo.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Heatmap colors from low to high response: transparent blue, then yellow, then red.
_HEAT_COLORS = np.array([[0, 0, 255], [255, 255, 0], [255, 0, 0]], np.float32)
_HEAT_OPACITY = 0.45
_FACE_COLOR = (0, 255, 0)
_HEAD_COLOR = (255, 200, 0)
_TEXT_BACKGROUND = (0, 0, 0, 170)


def letterbox_window(height: int, width: int) -> np.ndarray:
    """Return the window [ymin, xmin, ymax, xmax] that a letterbox of an image gives it.

    This is `preprocessing.letterbox`'s window without its rounding to whole
    pixels of the output, so it is exact to within one output pixel.
    """
    longer = float(max(height, width))
    content_height, content_width = height / longer, width / longer
    top, left = (1.0 - content_height) / 2.0, (1.0 - content_width) / 2.0
    return np.array([top, left, top + content_height, left + content_width], np.float32)


def response_on_image(
    response: np.ndarray, window: Sequence[float], height: int, width: int
) -> np.ndarray:
    """Return the response over the photo, [height, width] float32 scaled to [0, 1].

    `response` is [h, w] over the square frame and `window` the photo's normalized
    [ymin, xmin, ymax, xmax] in that frame.

    NOTE: the map is stretched over the whole frame. The cells' receptive-field
    centres lie further inside (`localization.map_geometry`), which the boxes
    account for and this heatmap does not, so it can sit up to about one map
    cell away from the boxes near the frame's edges.
    """
    response = np.asarray(response, np.float32)
    low, high = float(response.min()), float(response.max())
    scaled = (response - low) / (high - low) if high > low else np.zeros_like(response)

    map_height, map_width = scaled.shape
    ymin, xmin, ymax, xmax = (float(value) for value in window)
    crop_box = (xmin * map_width, ymin * map_height, xmax * map_width, ymax * map_height)
    heat = Image.fromarray(scaled, mode="F").resize(
        (width, height), Image.BILINEAR, box=crop_box
    )
    return np.clip(np.asarray(heat, np.float32), 0.0, 1.0)


def _heat_colors(heat: np.ndarray) -> np.ndarray:
    """Map [H, W] values in [0, 1] to RGB [H, W, 3] along `_HEAT_COLORS`."""
    position = heat * (len(_HEAT_COLORS) - 1)
    lower = np.minimum(np.floor(position).astype(np.int64), len(_HEAT_COLORS) - 2)
    fraction = (position - lower)[..., np.newaxis]
    return _HEAT_COLORS[lower] * (1.0 - fraction) + _HEAT_COLORS[lower + 1] * fraction


def _pixel_box(box: Sequence[float], height: int, width: int) -> tuple:
    ymin, xmin, ymax, xmax = (float(value) for value in box)
    return (xmin * width, ymin * height, xmax * width, ymax * height)


def render(
    image: np.ndarray,
    face_box: Sequence[float],
    probabilities: Sequence[float],
    names: Sequence[str],
    *,
    head_box: Optional[Sequence[float]] = None,
    response: Optional[np.ndarray] = None,
    response_window: Optional[Sequence[float]] = None,
    top_k: int = 5,
) -> Image.Image:
    """Return the photo with the heatmap, the face box (green), the head box and the top attributes.

    `image` is uint8 RGB [H, W, 3]; boxes are normalized [ymin, xmin, ymax, xmax]
    of it. Without `response` no heatmap is drawn.
    """
    height, width = image.shape[:2]
    canvas = np.asarray(image, np.float32)
    if response is not None:
        window = letterbox_window(height, width) if response_window is None else response_window
        heat = response_on_image(response, window, height, width)
        opacity = (_HEAT_OPACITY * heat)[..., np.newaxis]
        canvas = canvas * (1.0 - opacity) + _heat_colors(heat) * opacity
    picture = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).convert("RGBA")

    line_width = max(1, round(max(height, width) / 200))
    draw = ImageDraw.Draw(picture, "RGBA")
    if head_box is not None:
        draw.rectangle(_pixel_box(head_box, height, width), outline=_HEAD_COLOR, width=line_width)
    draw.rectangle(_pixel_box(face_box, height, width), outline=_FACE_COLOR, width=line_width)

    order = np.argsort(-np.asarray(probabilities))[:top_k]
    lines = [f"{names[index]} {float(probabilities[index]):.2f}" for index in order]
    font = ImageFont.load_default(size=max(10, round(max(height, width) / 40)))
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    margin = max(2, line_width)
    draw.rectangle((0, 0, right + 2 * margin, bottom + 2 * margin), fill=_TEXT_BACKGROUND)
    draw.multiline_text((margin, margin), text, fill=(255, 255, 255), font=font)
    return picture.convert("RGB")


def save_png(picture: Image.Image, path: str) -> None:
    """Save `picture` as PNG through a temporary file in the same folder, then rename it."""
    temporary = f"{path}.tmp-{os.getpid()}"
    picture.save(temporary, format="PNG")
    os.replace(temporary, path)
