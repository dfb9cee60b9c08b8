"""Cluttered backgrounds, lighting and blur for the in-the-wild images.

Backgrounds mix gradients, smooth colour blotches, stripes, checks, random shapes
and skin-coloured blobs. The blobs have the colour of faces but not their structure
(no eyes, mouth or hair), so a localizer has to learn more than "find skin".
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lnet_anet_tf.data.synthetic.paint import shade

# Skin colours for the distractor blobs, spanning the same range as the faces.
_BLOB_TONES = ((240, 205, 180), (222, 170, 136), (198, 142, 104), (160, 106, 72), (112, 72, 48))


def _random_colour(rng: np.random.Generator, alpha: int | None = None) -> tuple:
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    return colour if alpha is None else colour + (alpha,)


def _base(rng: np.random.Generator, size: tuple) -> Image.Image:
    """Return a linear colour gradient mixed with smooth colour blotches.

    Both are computed on a coarse grid of 3 to 8 cells per side and upsampled once.
    Bicubic upsampling keeps the gradient close to a ramp and turns the cells into
    blotches.
    """
    cells = int(rng.integers(3, 9))
    start, stop = rng.integers(0, 256, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    grid = np.linspace(-1.0, 1.0, cells, dtype=np.float32)
    ramp = (np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None] + 1.0) / 2.0
    gradient = start + ramp[..., None] * (stop - start)
    noise = rng.integers(0, 256, (cells, cells, 3)).astype(np.float32)
    amount = rng.uniform(0.2, 0.6)
    pixels = (1.0 - amount) * gradient + amount * noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").resize(size, Image.BICUBIC)


def _draw_pattern(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple) -> None:
    width, height = size
    colour = _random_colour(rng, int(rng.integers(60, 200)))
    kind = int(rng.integers(3))
    step = int(rng.integers(8, 30))
    if kind == 0:
        for offset in range(-height, width, step):
            draw.line([(offset, 0), (offset + height, height)], fill=colour, width=max(1, step // 3))
    elif kind == 1:
        for y in range(0, height, step):
            for x in range((y // step) % 2 * step, width, 2 * step):
                draw.rectangle((x, y, x + step - 1, y + step - 1), fill=colour)
    else:
        radius = max(2, step // 4)
        for y in range(step // 2, height, step):
            for x in range(step // 2, width, step):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def _draw_shapes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple, count: int) -> None:
    width, height = size
    for _ in range(count):
        alpha = int(rng.choice((255, 255, 180, 110)))
        colour = _random_colour(rng, alpha)
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * width)
        y0, y1 = sorted(rng.uniform(-0.2, 1.2, 2) * height)
        kind = int(rng.integers(4))
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 2:
            points = rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * (width, height)
            draw.polygon([tuple(p) for p in points], fill=colour)
        else:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(2, 10)))


def _draw_skin_blobs(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple) -> None:
    width, height = size
    for _ in range(int(rng.integers(1, 4))):
        tone = _BLOB_TONES[int(rng.integers(len(_BLOB_TONES)))]
        tone = tuple(int(np.clip(c + rng.uniform(-15, 15), 0, 255)) for c in tone)
        blob_height = rng.uniform(0.1, 0.4) * height
        blob_width = blob_height * rng.uniform(0.5, 1.4)
        x = rng.uniform(0, width)
        y = rng.uniform(0, height)
        draw.ellipse((x - blob_width / 2, y - blob_height / 2, x + blob_width / 2, y + blob_height / 2), fill=tone)
        # Some blobs get fingers, so they read as hands rather than as plain ovals.
        if rng.random() < 0.5:
            finger = blob_width / 5
            for k in range(4):
                fx = x - blob_width / 2 + finger * (k + 0.5)
                draw.rounded_rectangle(
                    (fx, y - blob_height * 0.9, fx + finger * 0.8, y), radius=finger * 0.4, fill=tone
                )
        draw.ellipse(
            (x - blob_width / 3, y, x + blob_width / 3, y + blob_height / 2.5), fill=shade(tone, 0.8, 90)
        )


def draw_background(rng: np.random.Generator, size: tuple, skin_blobs: bool = True) -> Image.Image:
    """Return a cluttered RGB background of `size` (width, height).

    `skin_blobs` adds one to three skin-coloured ovals and hands.
    """
    image = _base(rng, size)
    draw = ImageDraw.Draw(image, "RGBA")
    if rng.random() < 0.5:
        _draw_pattern(draw, rng, size)
    _draw_shapes(draw, rng, size, int(rng.integers(3, 12)))
    if skin_blobs:
        _draw_skin_blobs(draw, rng, size)
    return image


def light_person(image: Image.Image, appearance) -> Image.Image:
    """Darken the person's RGB canvas towards the side away from the light.

    The light is applied in the canonical frame, before the person is placed, so the
    in-the-wild image and the aligned crop show the same shading. The far side is
    darkened by `appearance.light_strength`, along a linear ramp.
    """
    if appearance.light_strength <= 0.0:
        return image
    direction = np.array([np.cos(appearance.light_angle), np.sin(appearance.light_angle)], np.float32)
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float32)
    shadow = (1.0 - corners @ direction / np.sqrt(2.0)) / 2.0
    ramp = Image.fromarray((shadow * 255).astype(np.uint8).reshape(2, 2), "L")
    # The ramp is smooth at a tenth of the resolution, so nearest-neighbour
    # upsampling from there adds no visible steps and costs little.
    width, height = image.size
    ramp = ramp.resize((width // 10, height // 10), Image.BILINEAR).resize(image.size, Image.NEAREST)
    darker = Image.blend(Image.new("RGB", image.size), image, 1.0 - appearance.light_strength)
    return Image.composite(darker, image, ramp)


def lighting_table(appearance) -> list:
    """Return the `Image.point` table for brightness, contrast and colour cast."""
    levels = np.arange(256, dtype=np.float32)
    table = []
    for gain in appearance.colour_gains:
        values = (levels - 128.0) * appearance.contrast + 128.0
        values = values * appearance.brightness * gain
        table.extend(np.clip(values, 0, 255).astype(np.uint8).tolist())
    return table


def blur(image: Image.Image, face_height: float) -> Image.Image:
    """Blur so that the face loses detail: the radius is 4% of the face box height, at least 1.5 px."""
    return image.filter(ImageFilter.GaussianBlur(max(1.5, 0.04 * face_height)))
