"""Colour arithmetic and curve helpers shared by the drawing modules."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw


def shade(rgb, factor: float, alpha: int | None = None) -> tuple:
    """Scale a colour's channels by `factor` (below 1 darkens), clipped to [0, 255]."""
    values = [max(0, min(255, int(channel * factor))) for channel in rgb[:3]]
    if alpha is not None:
        values.append(alpha)
    return tuple(values)


def mix(first, second, amount: float, alpha: int | None = None) -> tuple:
    """Blend two colours: `amount` 0 gives `first`, 1 gives `second`."""
    values = [int(a + (b - a) * amount) for a, b in zip(first[:3], second[:3])]
    if alpha is not None:
        values.append(alpha)
    return tuple(values)


def with_alpha(rgb, alpha: int) -> tuple:
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]), alpha)


def ellipse_box(x: float, y: float, half_width: float, half_height: float) -> tuple:
    return (x - half_width, y - half_height, x + half_width, y + half_height)


def curve(function, start: float, stop: float, count: int) -> list:
    """Sample a parametric curve `function(u) -> (x, y)` at `count` points."""
    step = (stop - start) / (count - 1)
    return [function(start + i * step) for i in range(count)]


def ribbon(points: list, half_widths) -> list:
    """Return a polygon of a stroke of varying width along a polyline.

    `half_widths` contains one half width per point. The offsets follow the local
    normal, so the stroke bends with the polyline.
    """
    left, right = [], []
    for i, (x, y) in enumerate(points):
        previous = points[max(i - 1, 0)]
        following = points[min(i + 1, len(points) - 1)]
        dx, dy = following[0] - previous[0], following[1] - previous[1]
        length = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / length, dx / length
        width = half_widths[i]
        left.append((x + nx * width, y + ny * width))
        right.append((x - nx * width, y - ny * width))
    return left + right[::-1]


def wave(points: list, amplitude: float, period: float) -> list:
    """Displace a closed or open polyline along its normals by a sine of arc length."""
    result = []
    travelled = 0.0
    for i, (x, y) in enumerate(points):
        previous = points[max(i - 1, 0)]
        following = points[min(i + 1, len(points) - 1)]
        if i > 0:
            travelled += math.hypot(x - previous[0], y - previous[1])
        dx, dy = following[0] - previous[0], following[1] - previous[1]
        length = math.hypot(dx, dy) or 1.0
        offset = amplitude * math.sin(2 * math.pi * travelled / period)
        result.append((x - dy / length * offset, y + dx / length * offset))
    return result


class _SilhouetteDraw:
    """Forward ImageDraw calls to the colour image and, in white, to the mask."""

    def __init__(self, colour_draw: ImageDraw.ImageDraw, mask_draw: ImageDraw.ImageDraw):
        self._colour_draw = colour_draw
        self._mask_draw = mask_draw

    def __getattr__(self, name: str):
        colour_method = getattr(self._colour_draw, name)
        mask_method = getattr(self._mask_draw, name)

        def call(*args, **kwargs):
            colour_method(*args, **kwargs)
            for key in ("fill", "outline"):
                if kwargs.get(key) is not None:
                    kwargs[key] = 255
            mask_method(*args, **kwargs)

        return call


class Canvas:
    """An RGB image and its coverage mask, drawn together.

    `draw` paints colour only and blends translucent fills, which ImageDraw does
    only on RGB images (on RGBA images it overwrites the alpha instead). `solid`
    paints colour and marks the pixels as covered in `mask`; use it for every
    shape that can extend the silhouette.
    """

    def __init__(self, size: tuple):
        self.image = Image.new("RGB", size, (0, 0, 0))
        self.mask = Image.new("L", size, 0)
        self.draw = ImageDraw.Draw(self.image, "RGBA")
        self.solid = _SilhouetteDraw(self.draw, ImageDraw.Draw(self.mask))
