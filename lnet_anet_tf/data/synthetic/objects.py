"""A synthetic object-class dataset for pre-training LNet on something other than faces.

LNet_o starts from a network trained to classify general object classes, and this
module replaces that data. Each class is a shape with a fill texture. It is drawn at
a random position, size, rotation and colour on the same cluttered backgrounds as
the faces, without the skin-coloured blobs. Class k is shape k mod 12 with texture
k // 12, so the first 12 classes differ by shape alone and up to 48 classes exist.

Output: `<output_dir>/<class_name>/<n>.jpg` with n = 000001, 000002, ...
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np
from absl import logging
from PIL import Image, ImageDraw, ImageFilter

from lnet_anet_tf.data.synthetic import atomic, parallel, scene

SHAPES = (
    "circle", "square", "triangle", "star", "ring", "cross",
    "crescent", "hexagon", "arrow", "diamond", "heart", "frame",
)
TEXTURES = ("solid", "striped", "dotted", "checked")
CLASS_NAMES = tuple(f"{SHAPES[k % len(SHAPES)]}_{TEXTURES[k // len(SHAPES)]}" for k in range(len(SHAPES) * len(TEXTURES)))
JPEG_QUALITY = 90


def _regular(sides: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list:
    return [(radius * math.cos(phase + 2 * math.pi * k / sides), radius * math.sin(phase + 2 * math.pi * k / sides)) for k in range(sides)]


def _star() -> list:
    points = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else 0.42
        angle = -math.pi / 2 + math.pi * k / 5
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    return points


def _heart() -> list:
    points = []
    for k in range(40):
        t = 2 * math.pi * k / 40
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        points.append((x / 17.0, y / 17.0))
    return points


# Each shape is a list of (polygon, filled) pairs in a unit frame: filled polygons
# add to the shape and unfilled ones cut holes.
_UNIT_SHAPES = {
    "circle": [(_regular(40), True)],
    "square": [(_regular(4, 1.0, math.pi / 4), True)],
    "triangle": [(_regular(3), True)],
    "star": [(_star(), True)],
    "ring": [(_regular(40), True), (_regular(40, 0.55), False)],
    "cross": [([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)], True)],
    "crescent": [(_regular(40), True), ([(x + 0.45, y - 0.1) for x, y in _regular(40, 0.85)], False)],
    "hexagon": [(_regular(6), True)],
    "arrow": [([(-1, -0.3), (0.2, -0.3), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.3), (-1, 0.3)], True)],
    "diamond": [([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)], True)],
    "heart": [(_heart(), True)],
    "frame": [(_regular(4, 1.0, math.pi / 4), True), (_regular(4, 0.62, math.pi / 4), False)],
}


def _texture(rng: np.random.Generator, kind: str, size: tuple, step: float) -> Image.Image:
    base, pattern = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
    image = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(image)
    step = max(4, int(step))
    width, height = size
    if kind == "striped":
        for offset in range(-height, width, step):
            draw.line([(offset, 0), (offset + height, height)], fill=pattern, width=max(2, step // 2))
    elif kind == "dotted":
        radius = max(1, step // 4)
        for y in range(step // 2, height, step):
            for x in range(step // 2, width, step):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=pattern)
    elif kind == "checked":
        for y in range(0, height, step):
            for x in range((y // step) % 2 * step, width, 2 * step):
                draw.rectangle((x, y, x + step - 1, y + step - 1), fill=pattern)
    return image


def render_object(seed: int, class_index: int, image: int, image_size: int) -> Image.Image:
    """Draw image number `image` (0-based) of class `class_index`."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, 4, class_index, image)))
    size = (image_size, image_size)
    canvas = scene.draw_background(rng, size, skin_blobs=False)

    radius = 0.5 * image_size * rng.uniform(0.45, 0.85)
    centre = rng.uniform(radius, image_size - radius, 2)
    angle = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for polygon, filled in _UNIT_SHAPES[SHAPES[class_index % len(SHAPES)]]:
        points = [(centre[0] + radius * (x * cos - y * sin), centre[1] + radius * (x * sin + y * cos)) for x, y in polygon]
        draw.polygon(points, fill=255 if filled else 0)

    # A drop shadow and an outline make the object stand out from the clutter,
    # as the main subject of a photo does.
    shadow_offset = max(2, image_size // 40)
    canvas.paste((15, 15, 15), (shadow_offset, shadow_offset), mask.point(lambda v: v * 2 // 5))
    texture = _texture(rng, TEXTURES[class_index // len(SHAPES)], size, radius / 3)
    canvas.paste(texture, (0, 0), mask)
    edges = mask.filter(ImageFilter.FIND_EDGES)
    if image_size >= 96:
        edges = edges.filter(ImageFilter.MaxFilter(3))
    canvas.paste((20, 20, 20), (0, 0), edges)
    return canvas


def _render_chunk(arguments) -> int:
    """Render and save a chunk of object images in a worker process, and return how many."""
    root, seed, image_size, chunk = arguments
    for class_index, image in chunk:
        path = os.path.join(root, CLASS_NAMES[class_index], f"{image + 1:06d}.jpg")
        render_object(seed, class_index, image, image_size).save(path, quality=JPEG_QUALITY)
    return len(chunk)


def generate_object_classes(
    output_dir: str,
    num_classes: int,
    images_per_class: int,
    seed: int,
    image_size: int = 128,
    num_workers: Optional[int] = None,
) -> str:
    """Generate `num_classes` folders of `images_per_class` square JPEGs of `image_size` pixels.

    Class folders are the first `num_classes` entries of `CLASS_NAMES`. Like
    `generate_celeba`, it writes atomically and the bytes do not depend on
    `num_workers`. Returns the absolute path of the dataset directory.
    """
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes is {num_classes}, but it must be between 1 and {len(CLASS_NAMES)}.")
    if images_per_class < 1:
        raise ValueError(f"images_per_class is {images_per_class}, but it must be at least 1.")
    if image_size < 32:
        raise ValueError(f"image_size is {image_size}, but it must be at least 32 pixels.")
    num_workers = num_workers or parallel.default_num_workers()
    output_dir = os.path.abspath(output_dir)
    tasks = [(k, n) for k in range(num_classes) for n in range(images_per_class)]
    chunk_size = max(1, min(128, len(tasks) // (8 * num_workers)))
    logging.info("Generating %d object images of %d classes into %s.", len(tasks), num_classes, output_dir)

    with atomic.atomic_directory(output_dir) as root:
        for name in CLASS_NAMES[:num_classes]:
            os.makedirs(os.path.join(root, name))
        chunks = [(root, seed, image_size, tasks[i : i + chunk_size]) for i in range(0, len(tasks), chunk_size)]
        written = sum(parallel.ordered_map(_render_chunk, chunks, num_workers))
    logging.info("Wrote %d object images to %s.", written, output_dir)
    return output_dir
