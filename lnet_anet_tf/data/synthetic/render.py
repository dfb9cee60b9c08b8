"""One example: the in-the-wild image, the aligned crop, labels, box and landmarks.

The person is drawn once in the canonical frame of `person.py`. Two affine maps take
it into the images: `wild_map` (scale, in-plane rotation and position in the
in-the-wild image) and `aligned_map` (scale and shift that put the eyes where
CelebA's aligned images have them). The same maps take the landmarks and the face
box, so the annotations match the pixels exactly.

Coordinates: ImageDraw and the annotation files use pixel indices (pixel i is
centred at i), while `Image.transform` works in continuous coordinates (pixel i
spans [i, i + 1)). The maps here are continuous; `_to_continuous` and
`_to_index` convert at the boundaries.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from lnet_anet_tf.data.synthetic import person, scene, traits

# CelebA's aligned images are 178 x 218 with the eyes at about these pixels.
ALIGNED_SIZE = (178, 218)
ALIGNED_LEFT_EYE = (69, 111)
ALIGNED_RIGHT_EYE = (108, 111)
# Face box height as a fraction of the in-the-wild image height.
FACE_HEIGHT_RANGE = (0.15, 0.6)


@dataclasses.dataclass
class Example:
    """One image pair with its annotations, in the units of the CelebA files."""

    wild: Image.Image
    aligned: Image.Image
    labels: np.ndarray  # [40] int8, 1 or -1
    box: tuple  # (x_1, y_1, width, height) in pixels of `wild`
    wild_landmarks: np.ndarray  # [10] int, x and y of the 5 landmarks in `wild`
    aligned_landmarks: np.ndarray  # [10] int, the same in `aligned`


def _to_continuous(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) + 0.5


def _to_index(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) - 0.5


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _similarity(scale: float, degrees: float, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return the 3x3 map that rotates and scales about `source` and moves it to `target`."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    # Counter-clockwise on screen, where y points down.
    linear = np.array([[cos, sin], [-sin, cos]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = target - linear @ source
    return matrix


def _warp(image: Image.Image, matrix: np.ndarray, size: tuple) -> Image.Image:
    """Map `image` into a new image of `size` by the forward map `matrix`.

    A map without rotation whose source window lies inside `image` is a plain
    resize, which filters properly when it shrinks. Other maps sample the nearest
    source pixel on a grid of twice the output resolution and average each 2 x 2
    block, which smooths the steps. In Pillow 13.0 a nearest-neighbour affine
    `Image.transform` measured about 20 times faster than a bilinear one (RGBA,
    256 x 256 output). Large reductions first shrink the source with `Image.reduce`
    (a box filter) so that the sampling does not alias.
    """
    if matrix[0, 1] == 0.0 and matrix[1, 0] == 0.0:
        inverse = np.linalg.inv(matrix)
        x0, y0 = inverse[:2, 2]
        x1, y1 = _apply(inverse, np.array([size], np.float64))[0]
        if x0 >= 0 and y0 >= 0 and x1 <= image.width and y1 <= image.height:
            return image.resize(size, Image.BILINEAR, box=(x0, y0, x1, y1))

    scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    factor = int(1.0 / (1.5 * scale)) if scale < 1.0 / 3.0 else 1
    if factor > 1:
        image = image.reduce(factor)
        matrix = matrix @ np.diag([factor, factor, 1.0])
    inverse = np.linalg.inv(np.diag([2.0, 2.0, 1.0]) @ matrix)
    doubled = (2 * size[0], 2 * size[1])
    return image.transform(doubled, Image.AFFINE, tuple(inverse[:2].ravel()), resample=Image.NEAREST).reduce(2)


def _box_corners(box: tuple) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)


def _wild_map(rng: np.random.Generator, layout, appearance, size: tuple) -> np.ndarray:
    """Choose the scale, rotation and position of the face in the in-the-wild image."""
    width, height = size
    corners = _to_continuous(_box_corners(layout.face_box()))
    centre = corners.mean(axis=0)
    box_width, box_height = corners[3] - corners[0]

    scale = rng.uniform(*FACE_HEIGHT_RANGE) * height / box_height
    # Keep the rotated box inside the image, with a pixel to spare.
    angle = math.radians(appearance.roll_degrees)
    half_x = 0.5 * (box_width * abs(math.cos(angle)) + box_height * abs(math.sin(angle)))
    half_y = 0.5 * (box_width * abs(math.sin(angle)) + box_height * abs(math.cos(angle)))
    scale = min(scale, (width - 2) / (2 * half_x), (height - 2) / (2 * half_y))
    half_x, half_y = half_x * scale, half_y * scale
    target = np.array([rng.uniform(half_x + 1, width - 1 - half_x), rng.uniform(half_y + 1, height - 1 - half_y)])
    return _similarity(scale, appearance.roll_degrees, centre, target)


def _aligned_map(layout) -> np.ndarray:
    left, right = _to_continuous(np.array(layout.eyes))
    target_left = _to_continuous(np.array(ALIGNED_LEFT_EYE))
    scale = (ALIGNED_RIGHT_EYE[0] - ALIGNED_LEFT_EYE[0]) / (right[0] - left[0])
    return _similarity(scale, 0.0, left, target_left)


def _box_in(matrix: np.ndarray, layout, size: tuple) -> tuple:
    corners = _to_index(_apply(matrix, _to_continuous(_box_corners(layout.face_box()))))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, size[0] - 1), min(y1, size[1] - 1)
    return (int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1))


def _landmarks_in(matrix: np.ndarray, layout) -> np.ndarray:
    points = _to_index(_apply(matrix, _to_continuous(layout.landmarks())))
    return np.rint(points).astype(np.int64).reshape(-1)


def _aligned_background(background: Image.Image, wild_to_aligned: np.ndarray) -> Image.Image:
    """Warp the in-the-wild background into the aligned frame.

    A large face in a small image puts part of the aligned crop outside the
    in-the-wild image. The background is then mirrored outwards first, so the crop
    never shows a constant border that would mark where the image ended. The
    background is usually enlarged, so it is warped at half resolution and scaled
    up, which keeps it smooth at a quarter of the cost.
    """
    width, height = ALIGNED_SIZE
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    source = _apply(np.linalg.inv(wild_to_aligned), corners)
    overshoot = max(0.0, -source.min(), (source[:, 0] - background.width).max(), (source[:, 1] - background.height).max())
    if overshoot > 0.0:
        pad = int(math.ceil(overshoot)) + 2
        pixels = np.pad(np.asarray(background), ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
        background = Image.fromarray(pixels)
        shift = np.eye(3)
        shift[:2, 2] = -pad
        wild_to_aligned = wild_to_aligned @ shift
    half = np.diag([0.5, 0.5, 1.0]) @ wild_to_aligned
    return _warp(background, half, (width // 2, height // 2)).resize(ALIGNED_SIZE, Image.BILINEAR)


def _image_size(rng: np.random.Generator, size_range: tuple) -> tuple:
    low, high = size_range
    width = int(rng.integers(low, high + 1))
    height = width if rng.random() < 0.3 else int(rng.integers(low, high + 1))
    return (width, height)


def scene_rng(seed: int, identity: int, image: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence((seed, 3, identity, image)))


def _paste_person(target: Image.Image, person_rgba: Image.Image, matrix: np.ndarray) -> None:
    """Warp the person by `matrix` and paste it onto `target` in place.

    Only the part of `target` that the person covers is resampled, which keeps
    small faces in large images cheap.
    """
    x0, y0, x1, y1 = person_rgba.getbbox()
    corners = _apply(matrix, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64))
    left, top = np.floor(corners.min(axis=0)).astype(int)
    right, bottom = np.ceil(corners.max(axis=0)).astype(int)
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, target.width), min(bottom, target.height)
    if right <= left or bottom <= top:
        return
    shift = np.eye(3)
    shift[:2, 2] = (-left, -top)
    region = _warp(person_rgba, shift @ matrix, (int(right - left), int(bottom - top)))
    target.paste(region, (int(left), int(top)), region)


def render_example(
    seed: int,
    identity_id: int,
    image: int,
    image_size_range=(160, 256),
    variation: traits.Variation = traits.DEFAULT_VARIATION,
) -> Example:
    """Draw image number `image` (0-based) of identity `identity_id` for dataset `seed`."""
    identity = traits.sample_identity(seed, identity_id)
    appearance = traits.sample_appearance(identity, seed, image, variation)
    rng = scene_rng(seed, identity_id, image)

    colour, mask, layout = person.draw_person(identity, appearance)
    person_rgba = scene.light_person(colour, appearance)
    person_rgba.putalpha(mask)

    size = _image_size(rng, image_size_range)
    background = scene.draw_background(rng, size)
    wild_map = _wild_map(rng, layout, appearance, size)
    wild = background.copy()
    _paste_person(wild, person_rgba, wild_map)

    aligned_map = _aligned_map(layout)
    aligned = _aligned_background(background, aligned_map @ np.linalg.inv(wild_map))
    _paste_person(aligned, person_rgba, aligned_map)

    table = scene.lighting_table(appearance)
    wild, aligned = wild.point(table), aligned.point(table)
    box = _box_in(wild_map, layout, size)
    if appearance.blurry:
        wild = scene.blur(wild, box[3])
        aligned_box = _box_in(aligned_map, layout, ALIGNED_SIZE)
        aligned = scene.blur(aligned, aligned_box[3])

    return Example(
        wild=wild,
        aligned=aligned,
        labels=traits.attribute_labels(identity, appearance),
        box=box,
        wild_landmarks=_landmarks_in(wild_map, layout),
        aligned_landmarks=_landmarks_in(aligned_map, layout),
    )
