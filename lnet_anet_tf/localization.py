"""Weakly supervised localization: from a response map to a box, in TFLite builtins.

The LNets never see a bounding box. A box comes from the channel-averaged response
map of a net's last conv layer. Every window of a dense multi-scale grid is scored
with an integral image, and the best one wins. Its edges are then moved one at a
time to their best positions.

Boxes are normalized [ymin, xmin, ymax, xmax] float32 in [0, 1] of the image they
refer to, the TensorFlow convention. `locate` finds a box on the response map;
`MapGeometry` says where the map's cells sit in the net's input, so that the box can
be mapped there (see `map_geometry`).

Every op here converts to a TFLite builtin: MEAN, RESIZE_BILINEAR, TOPK_V2, CUMSUM,
PAD, GATHER, ONE_HOT, ARG_MAX, ARG_MIN, SELECT_V2, comparisons, CAST and
arithmetic. `tf.image.crop_and_resize` is not a builtin, so `crop_and_resize`
samples with GATHER and arithmetic instead.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from lnet_anet_tf.config import LocalizationConfig

# Masks out impossible edge positions before an ARG_MAX or ARG_MIN.
_MASKED = 1e30


def response_map(feature_map: tf.Tensor, blank: tf.Tensor | None = None) -> tf.Tensor:
    """Average a [batch, h, w, channels] feature map over channels to [batch, h, w].

    With `blank`, the net's response map to a blank image (`blank_response`), the
    result is the response above it.
    """
    response = tf.reduce_mean(feature_map, axis=-1)
    if blank is not None:
        response = response - blank
    return response


def blank_response(model) -> tf.Tensor:
    """Return the [h, w] response map of `model` to a blank (mid-gray) input.

    Conv layers with zero padding, biases and batch normalization respond strongly
    to the map borders and to flat regions such as the letterbox padding. In
    trained LNets that response outweighed the person's. Subtracting the response
    to a blank image, whose every pixel is the padding value, cancels that part
    and leaves what the image content adds. On the demo preset this raised the
    share of LNet_o boxes that contain the face centre from 33% to 98%
    (synthetic data).
    """
    side = int(model.inputs[0].shape[1])
    feature_map = model(tf.zeros([1, side, side, 3]), training=False)["feature_map"]
    return response_map(tf.cast(feature_map, tf.float32))[0]


@dataclasses.dataclass(frozen=True)
class MapGeometry:
    """The positions of a response map's cells in the input of the net that made it.

    Per axis (height, then width): the input side in pixels, the number of map
    cells, the input coordinate of cell 0's receptive-field centre and the
    distance between neighbouring centres, in pixels. Pixel i spans [i, i + 1].
    """

    input_size: tuple
    map_size: tuple
    first_center: tuple
    stride: tuple


def map_geometry(model: keras.Model, output: str = "feature_map") -> MapGeometry:
    """Derive the `MapGeometry` of `model`'s output `output` from its layers.

    Follows the chain of layers from the model's input to its output `output`
    and composes the kernel size, stride and padding of each convolution and
    pooling layer. Padding follows TensorFlow: "same" puts an odd padding pixel at
    the bottom or right end of the layer's input. Layers without a kernel or pool size are
    taken to keep the spatial size. Raises ValueError when a layer on the way has
    several inputs or the composed map size disagrees with the output's shape,
    which is how a layer that breaks those assumptions shows up.

    Why it matters: a valid convolution and each pooling layer move the centres
    inwards, so the map does not span the whole input. In the demo LNets (96
    pixel input, 10 x 10 map) the centres run from pixel 8.5 to 80.5, 8 apart.
    Reading cell i of 10 as the band [i / 10, (i + 1) / 10] of the input instead
    made boxes 1.2 times too tall and wide and shifted them towards the bottom
    right.
    """
    input_size = tuple(int(side) for side in model.inputs[0].shape[1:3])
    size, center, stride = list(input_size), [0.5, 0.5], [1.0, 1.0]
    for layer in _chain_to(model, output):
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        if kernel is None or not hasattr(layer, "strides"):
            continue
        dilation = getattr(layer, "dilation_rate", (1, 1))
        for axis in range(2):
            extent = (kernel[axis] - 1) * dilation[axis] + 1
            step = layer.strides[axis]
            if layer.padding == "same":
                out = -(-size[axis] // step)
                pad_before = max((out - 1) * step + extent - size[axis], 0) // 2
            else:
                out = (size[axis] - extent) // step + 1
                pad_before = 0
            center[axis] += (extent - 1 - 2 * pad_before) / 2 * stride[axis]
            stride[axis] *= step
            size[axis] = out

    map_size = tuple(int(side) for side in model.output[output].shape[1:3])
    if tuple(size) != map_size:
        raise ValueError(
            f"The layers of {model.name!r} give a {size[0]}x{size[1]} map, but "
            f"{output!r} is {map_size[0]}x{map_size[1]}; map_geometry needs a chain "
            f"of convolution and pooling layers."
        )
    return MapGeometry(input_size, map_size, tuple(center), tuple(stride))


def _chain_to(model: keras.Model, output: str) -> list:
    """Return the layers from `model`'s input to its output `output`, in order."""
    if not isinstance(model.output, dict) or output not in model.output:
        raise ValueError(f"Model {model.name!r} has no output named {output!r}.")
    producers = {id(layer.output): layer for layer in model.layers if layer.input is not None}
    layer = producers[id(model.output[output])]
    chain = []
    while True:
        chain.append(layer)
        if isinstance(layer.input, (list, tuple, dict)):
            raise ValueError(
                f"Layer {layer.name!r} of {model.name!r} has several inputs; "
                f"map_geometry needs a chain of layers."
            )
        layer = producers.get(id(layer.input))
        if layer is None or isinstance(layer, keras.layers.InputLayer):
            return chain[::-1]


def map_to_input(boxes: tf.Tensor, geometry: MapGeometry) -> tf.Tensor:
    """Map [..., 4] boxes normalized to a response map into the net's input.

    Cell j covers the band of one stride around its centre. The two border cells
    are extended to the input's borders, because no other cell lies closer. With
    valid layers the last few pixels may reach no cell at all (pixels 93 to 95 of
    the demo LNets' 96). Between cell bands the mapping is linear.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    y_edges = [_cells_to_input(edge, geometry, axis=0) for edge in (ymin, ymax)]
    x_edges = [_cells_to_input(edge, geometry, axis=1) for edge in (xmin, xmax)]
    return tf.stack([y_edges[0], x_edges[0], y_edges[1], x_edges[1]], axis=-1)


def _cells_to_input(edges: tf.Tensor, geometry: MapGeometry, axis: int) -> tf.Tensor:
    size = float(geometry.input_size[axis])
    cells = geometry.map_size[axis]
    if cells == 1:
        return edges

    stride = geometry.stride[axis]
    first_inner = geometry.first_center[axis] + stride / 2  # end of cell 0's band
    last_inner = first_inner + (cells - 2) * stride  # start of the last cell's band
    u = edges * cells
    inner = first_inner + (u - 1.0) * stride
    first = u * first_inner
    last = last_inner + (u - (cells - 1)) * (size - last_inner)
    pixels = tf.where(u < 1.0, first, tf.where(u > cells - 1, last, inner))
    return tf.clip_by_value(pixels / size, 0.0, 1.0)


@functools.lru_cache(maxsize=32)
def window_grid(
    map_height: int,
    map_width: int,
    window_scales: tuple,
    aspect_ratios: tuple,
    grid_step: float,
) -> tuple[int, int, np.ndarray]:
    """Build the candidate windows for a response map of a given size.

    Windows live on a lattice of `lattice_height` x `lattice_width` units, where one
    unit is `grid_step` map cells rounded so that the lattice divides the map
    evenly. A window of scale s and aspect ratio r (height / width) is
    s * sqrt(r) of the map high and s / sqrt(r) wide, rounded to whole units and
    clipped to the map, placed at every unit. Returns the lattice size and an int32
    [num_windows, 4] array of (y0, x0, y1, x1) lattice corners, without duplicates.
    """
    if grid_step <= 0:
        raise ValueError(f"grid_step must be positive, got {grid_step}.")
    lattice_height = max(1, round(map_height / grid_step))
    lattice_width = max(1, round(map_width / grid_step))

    windows = set()
    for scale in window_scales:
        for ratio in aspect_ratios:
            if scale <= 0 or ratio <= 0:
                raise ValueError(
                    f"Window scales and aspect ratios must be positive, got scale "
                    f"{scale} and aspect ratio {ratio}."
                )
            height = round(scale * math.sqrt(ratio) * lattice_height)
            width = round(scale / math.sqrt(ratio) * lattice_width)
            height = min(max(height, 1), lattice_height)
            width = min(max(width, 1), lattice_width)
            for y0 in range(lattice_height - height + 1):
                for x0 in range(lattice_width - width + 1):
                    windows.add((y0, x0, y0 + height, x0 + width))

    corners = np.array(sorted(windows), dtype=np.int32).reshape(-1, 4)
    corners.setflags(write=False)  # The cache hands the same array to every caller.
    return lattice_height, lattice_width, corners


def locate(
    response: tf.Tensor, config: LocalizationConfig, geometry: MapGeometry | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Find the object box in each response map of a [batch, h, w] batch.

    The map is resized bilinearly to the window lattice, so window edges can fall
    between cell centres. It is rescaled so that its background level (the
    `background_quantile` quantile) is 0 and its peak is 1, and
    `response_threshold` is subtracted. A window's score is the sum of this
    contrast inside it, so a window grows while the cells it gains are above the
    threshold. The best grid window's edges are then moved `refine_steps` times.

    `h` and `w` must be static. Returns the boxes [batch, 4], normalized to the map,
    or to the net's input when `geometry` (`map_geometry` of the net) is given,
    and the localization scores [batch] in [0, 1]: the box's summed contrast divided
    by the map's total above-threshold contrast. A score of 1 means that one
    rectangle contains all the above-threshold response and nothing below it. The
    score falls when the response is diffuse or split between separate blobs. Two
    blobs merge into one box when the below-threshold gap between them costs less
    than the second blob adds. With the default threshold of 0.25 a gap cell
    costs at most 0.25 and a blob cell adds up to 0.75, so gaps several blob
    widths wide can merge. A map without contrast (every value equal) yields the whole
    map and score 0.
    """
    validate_config(config)
    response = tf.convert_to_tensor(response, tf.float32)
    if response.shape.rank != 3 or None in response.shape[1:]:
        raise ValueError(
            f"locate expects response maps of static shape [batch, h, w], got "
            f"{response.shape}. Build the net with a fixed input size."
        )
    map_height, map_width = int(response.shape[1]), int(response.shape[2])
    lattice_height, lattice_width, corners = window_grid(
        map_height,
        map_width,
        tuple(config.window_scales),
        tuple(config.aspect_ratios),
        float(config.grid_step),
    )

    upsampled = response
    if (lattice_height, lattice_width) != (map_height, map_width):
        upsampled = tf.image.resize(
            response[..., tf.newaxis], [lattice_height, lattice_width], method="bilinear"
        )[..., 0]
    contrast, has_contrast = _contrast(upsampled, config)
    integral = _integral_image(contrast)

    box, best_sum = _best_grid_window(integral, corners)
    for _ in range(config.refine_steps):
        box, best_sum = _refine_edges(integral, box)

    lattice_size = tf.constant(
        [lattice_height, lattice_width, lattice_height, lattice_width], tf.float32
    )
    boxes = tf.cast(box, tf.float32) / lattice_size
    positive_mass = tf.reduce_sum(tf.nn.relu(contrast), axis=[1, 2])
    scores = tf.clip_by_value(best_sum / tf.maximum(positive_mass, 1e-12), 0.0, 1.0)

    whole_map = tf.constant([[0.0, 0.0, 1.0, 1.0]])
    boxes = tf.where(has_contrast[:, tf.newaxis], boxes, whole_map)
    scores = tf.where(has_contrast, scores, tf.zeros_like(scores))
    if geometry is not None:
        if geometry.map_size != (map_height, map_width):
            raise ValueError(
                f"The geometry describes a {geometry.map_size[0]}x{geometry.map_size[1]} "
                f"map, but the response maps are {map_height}x{map_width}."
            )
        boxes = map_to_input(boxes, geometry)
    return boxes, scores


def validate_config(config: LocalizationConfig) -> None:
    """Raise ValueError naming the first invalid `LocalizationConfig` setting."""
    if not 0.0 < config.response_threshold < 1.0:
        raise ValueError(
            f"response_threshold must be in (0, 1), got {config.response_threshold}."
        )
    if not 0.0 <= config.background_quantile < 1.0:
        raise ValueError(
            f"background_quantile must be in [0, 1), got {config.background_quantile}."
        )
    if config.refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {config.refine_steps}.")
    if config.lnet_s_recrop_context is not None and not config.lnet_s_recrop_context > 0.0:
        raise ValueError(
            f"lnet_s_recrop_context must be None or > 0, got {config.lnet_s_recrop_context}."
        )
    scales = config.lnet_s_recrop_scales
    numbers = isinstance(scales, (tuple, list)) and all(
        isinstance(scale, (int, float)) and not isinstance(scale, bool) for scale in scales
    )
    if not numbers or not scales or min(scales) <= 0:
        raise ValueError(
            f"lnet_s_recrop_scales must be a non-empty tuple of positive numbers, got "
            f"{scales!r}. Use (1.0,) for one crop in LNet_s's second pass."
        )


def _contrast(maps: tf.Tensor, config: LocalizationConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Rescale maps to background 0 and peak 1, then subtract the threshold."""
    height, width = maps.shape[1], maps.shape[2]
    flat = tf.reshape(maps, [-1, height * width])

    # The quantile is the rank-th smallest value ("lower" interpolation). TOPK_V2
    # of the negated map returns the smallest values, in ascending order.
    rank = int(math.floor(config.background_quantile * (height * width - 1)))
    smallest, _ = tf.math.top_k(-flat, k=rank + 1, sorted=True)
    background = -smallest[:, rank]
    peak = tf.reduce_max(flat, axis=1)

    spread = peak - background
    has_contrast = spread > 0.0
    spread = tf.where(has_contrast, spread, tf.ones_like(spread))
    normalized = (maps - background[:, None, None]) / spread[:, None, None]
    return normalized - config.response_threshold, has_contrast


def _integral_image(maps: tf.Tensor) -> tf.Tensor:
    """Return [batch, h + 1, w + 1]; entry (y, x) sums the cells above and left of it."""
    sums = tf.math.cumsum(tf.math.cumsum(maps, axis=1), axis=2)
    return tf.pad(sums, [[0, 0], [1, 0], [1, 0]])


def _best_grid_window(integral: tf.Tensor, corners: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """Score every grid window from its four integral-image corners; keep the best."""
    stride = int(integral.shape[2])
    flat = tf.reshape(integral, [-1, int(integral.shape[1]) * stride])

    y0, x0, y1, x1 = corners.T
    corner_indices = np.stack(
        [y1 * stride + x1, y0 * stride + x1, y1 * stride + x0, y0 * stride + x0]
    ).astype(np.int32)
    values = tf.gather(flat, corner_indices, axis=1)  # [batch, 4, num_windows]
    # One UNPACK rather than four strided slices, which LiteRT runs without
    # XNNPACK at several microseconds each.
    bottom_right, top_right, bottom_left, top_left = tf.unstack(values, axis=1)
    sums = bottom_right - top_right - bottom_left + top_left

    best = tf.math.argmax(sums, axis=1, output_type=tf.int32)
    box = tf.gather(tf.constant(corners), best)
    return box, tf.reduce_max(sums, axis=1)


def _refine_edges(integral: tf.Tensor, box: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Move top, bottom, left and right edge in turn to its best position.

    With x0 and x1 fixed, the window sum is P[y1] - P[y0] for the column profile
    P[k] = I[k, x1] - I[k, x0], so the best top edge is the argmin of P above the
    bottom edge and the best bottom edge the argmax of P below the top edge. Rows
    work the same way. No step lowers the window sum.
    """
    lattice_height = int(integral.shape[1]) - 1
    lattice_width = int(integral.shape[2]) - 1
    y0, x0, y1, x1 = tf.unstack(box, axis=1)

    columns = _select(integral, x1, axis=2) - _select(integral, x0, axis=2)
    y0, y1 = _refine_interval(columns, y0, y1, lattice_height)

    rows = _select(integral, y1, axis=1) - _select(integral, y0, axis=1)
    x0, x1 = _refine_interval(rows, x0, x1, lattice_width)

    window_sum = _pick(rows, x1) - _pick(rows, x0)
    return tf.stack([y0, x0, y1, x1], axis=1), window_sum


def _refine_interval(
    profile: tf.Tensor, start: tf.Tensor, end: tf.Tensor, size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Choose start < end on [0, size] that maximize profile[end] - profile[start]."""
    positions = tf.range(size + 1)[tf.newaxis, :]

    allowed = positions < end[:, tf.newaxis]
    start = tf.math.argmin(
        tf.where(allowed, profile, _MASKED), axis=1, output_type=tf.int32
    )
    allowed = positions > start[:, tf.newaxis]
    end = tf.math.argmax(
        tf.where(allowed, profile, -_MASKED), axis=1, output_type=tf.int32
    )
    return start, end


def _select(integral: tf.Tensor, index: tf.Tensor, axis: int) -> tf.Tensor:
    """Take one row (axis=1) or column (axis=2) per batch item with a one-hot mask."""
    depth = int(integral.shape[axis])
    mask = tf.one_hot(index, depth, dtype=integral.dtype)
    if axis == 1:
        return tf.reduce_sum(integral * mask[:, :, tf.newaxis], axis=1)
    return tf.reduce_sum(integral * mask[:, tf.newaxis, :], axis=2)


def _pick(profile: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """Take profile[b, index[b]] for every batch item."""
    mask = tf.one_hot(index, int(profile.shape[1]), dtype=profile.dtype)
    return tf.reduce_sum(profile * mask, axis=1)


def expand_box(boxes: tf.Tensor, factor: float) -> tf.Tensor:
    """Scale [..., 4] boxes by `factor` about their centres and clip them to [0, 1]."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    center_y = (ymin + ymax) / 2.0
    center_x = (xmin + xmax) / 2.0
    half_height = (ymax - ymin) * (factor / 2.0)
    half_width = (xmax - xmin) * (factor / 2.0)
    expanded = tf.stack(
        [
            center_y - half_height,
            center_x - half_width,
            center_y + half_height,
            center_x + half_width,
        ],
        axis=-1,
    )
    return tf.clip_by_value(expanded, 0.0, 1.0)


def square_context_box(boxes: tf.Tensor, factor: float, aspect: tf.Tensor) -> tf.Tensor:
    """Return squares about the centres of [..., 4] boxes, for the next net's crop.

    A box of h x w pixels becomes a square of side `factor` * sqrt(h * w) pixels
    with the same centre. `aspect` is the image's height / width in pixels,
    broadcast against the boxes' leading dimensions. The squares are not clipped
    to the image: crop them with an `extrapolation_value` so that the part outside
    the image is padding.

    Why: the next net is trained on these crops resized to a square. A crop cut
    from the box itself stretches the face by the box's aspect ratio and the
    image's, and a crop clipped at the image border contains a larger part of a face
    near that border. Both make the face's size and shape in the crop vary more
    than the localizer's error does.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    aspect = tf.convert_to_tensor(aspect, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    center_y = (ymin + ymax) / 2.0
    center_x = (xmin + xmax) / 2.0

    # In units of the image width, the box is h * aspect high and w wide.
    side = factor * tf.sqrt(tf.maximum((ymax - ymin) * aspect * (xmax - xmin), 0.0))
    half_height = side / aspect / 2.0
    half_width = side / 2.0
    return tf.stack(
        [
            center_y - half_height,
            center_x - half_width,
            center_y + half_height,
            center_x + half_width,
        ],
        axis=-1,
    )


def crop_box_to_image(
    boxes_in_crop: tf.Tensor, crop_boxes: tf.Tensor, min_side: float
) -> tf.Tensor:
    """Map boxes found in crops to the image, clip them to it and `ensure_min_size`."""
    boxes = tf.clip_by_value(box_to_parent(boxes_in_crop, crop_boxes), 0.0, 1.0)
    return ensure_min_size(boxes, min_side)


def ensure_min_size(boxes: tf.Tensor, min_side: float) -> tf.Tensor:
    """Grow [..., 4] boxes to at least `min_side` per side, keeping them inside [0, 1].

    A box found in the letterbox padding collapses to a line when it is mapped back
    to the image and clipped; cropping it would fail. Growing it about its centre
    and shifting it back inside the image gives every later stage a real crop.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)

    def grow(low, high):
        side = tf.maximum(high - low, min_side)
        center = tf.clip_by_value((low + high) / 2.0, side / 2.0, 1.0 - side / 2.0)
        return center - side / 2.0, center + side / 2.0

    ymin, ymax = grow(ymin, ymax)
    xmin, xmax = grow(xmin, xmax)
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


def crop_and_resize(
    images: tf.Tensor,
    boxes: tf.Tensor,
    size: Union[int, Sequence[int]],
    box_indices: tf.Tensor | None = None,
    extrapolation_value: float | None = None,
) -> tf.Tensor:
    """Crop boxes from images and resize them bilinearly, with TFLite builtins only.

    `images` is [batch, height, width, channels]; `boxes` is [num_boxes, 4], and box
    i is cut from image `box_indices[i]` (from image i when `box_indices` is None).
    Returns float32 [num_boxes, size_y, size_x, channels].

    Sampling uses half-pixel centres: output pixel i of a box samples the input at
    (ymin + (i + 0.5) * (ymax - ymin) / size_y) * height - 0.5, in pixel index
    units. The box [0, 0, 1, 1] therefore reproduces `tf.image.resize(images, size,
    "bilinear")`. `tf.image.crop_and_resize` differs: it puts the first and last
    samples on the pixel centres at the box edges, so [0, 0, 1, 1] reproduces an
    align-corners resize there. Samples outside the image take the nearest edge
    pixel's value, as `tf.image.resize` does, or `extrapolation_value` when it is
    given, as `tf.image.crop_and_resize` does. A sample is outside when it falls
    outside the image's pixels, more than half a pixel beyond the outer pixel
    centres. A box with xmin > xmax (or ymin > ymax) yields a mirrored crop.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if np.ndim(size) == 0:
        size_y = size_x = int(size)
    else:
        size_y, size_x = (int(side) for side in size)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    channels = images.shape[3] if images.shape[3] is not None else shape[3]
    if box_indices is None:
        box_indices = tf.range(tf.shape(boxes)[0])

    ys = _sample_positions(boxes[:, 0], boxes[:, 2], height, size_y)  # [num_boxes, size_y]
    xs = _sample_positions(boxes[:, 1], boxes[:, 3], width, size_x)  # [num_boxes, size_x]
    y_inside, x_inside = _inside(ys, height), _inside(xs, width)
    ys, xs = _clamp(ys, height), _clamp(xs, width)
    y_low, y_high, y_weight = _neighbors(ys, height)
    x_low, x_high, x_weight = _neighbors(xs, width)

    # GATHER from the images flattened to [batch * height * width, channels].
    flat_images = tf.reshape(images, [-1, channels])
    base = tf.cast(box_indices, tf.int32) * height * width

    def gather(rows: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
        indices = (
            base[:, None, None] + rows[:, :, None] * width + columns[:, None, :]
        )
        return tf.gather(flat_images, indices)  # [num_boxes, size_y, size_x, channels]

    top_left = gather(y_low, x_low)
    top_right = gather(y_low, x_high)
    bottom_left = gather(y_high, x_low)
    bottom_right = gather(y_high, x_high)

    # Same order of interpolation as TensorFlow's kernels: along x, then along y.
    x_weight = _repeat_channels(x_weight[:, None, :, None], channels)
    y_weight = y_weight[:, :, None, None]
    top = top_left + (top_right - top_left) * x_weight
    bottom = bottom_left + (bottom_right - bottom_left) * x_weight
    crops = top + (bottom - top) * y_weight
    if extrapolation_value is None:
        return crops

    inside = y_inside[:, :, None, None] * x_inside[:, None, :, None]
    inside = _repeat_channels(inside, channels)
    return crops * inside + float(extrapolation_value) * (1.0 - inside)


def _repeat_channels(weights: tf.Tensor, channels) -> tf.Tensor:
    """Repeat [..., 1] weights along the last axis to [..., channels].

    A MUL could broadcast the weights itself, but XNNPACK in ai-edge-litert 2.3
    runs a MUL whose last axis is broadcast about ten times slower: 38 against
    3 microseconds for ANet's five 48 x 48 patches. A CONCATENATION is used
    because the TFLite converter folds BROADCAST_TO and TILE back into the MUL.
    """
    if isinstance(channels, int):
        return tf.concat([weights] * channels, axis=-1)
    return tf.tile(weights, tf.stack([1] * (weights.shape.rank - 1) + [channels]))


def _sample_positions(
    start: tf.Tensor, end: tf.Tensor, extent: tf.Tensor, count: int
) -> tf.Tensor:
    """Return sample positions in pixel index units, not clamped."""
    extent = tf.cast(extent, tf.float32)
    steps = (tf.range(count, dtype=tf.float32) + 0.5) / float(count)
    return (start[:, None] + steps[None, :] * (end - start)[:, None]) * extent - 0.5


def _clamp(positions: tf.Tensor, extent: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(positions, 0.0, tf.cast(extent, tf.float32) - 1.0)


def _inside(positions: tf.Tensor, extent: tf.Tensor) -> tf.Tensor:
    """Return 1.0 where a position lies on the image's pixels, else 0.0."""
    extent = tf.cast(extent, tf.float32)
    inside = tf.logical_and(positions >= -0.5, positions <= extent - 0.5)
    return tf.cast(inside, tf.float32)


def _neighbors(positions: tf.Tensor, extent: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Return the lower and upper pixel indices around each position and the weight."""
    low = tf.floor(positions)
    weight = positions - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, extent - 1)
    return low, high, weight


def box_to_parent(boxes_in_crop: tf.Tensor, crop_boxes: tf.Tensor) -> tf.Tensor:
    """Map boxes normalized to a crop back to the image the crop was cut from.

    `crop_boxes` are the crops' boxes in the parent image; both are [..., 4].
    """
    boxes_in_crop = tf.convert_to_tensor(boxes_in_crop, tf.float32)
    crop_boxes = tf.convert_to_tensor(crop_boxes, tf.float32)
    origin, extent = _origin_and_extent(crop_boxes)
    return origin + boxes_in_crop * extent


def box_to_crop(boxes: tf.Tensor, crop_boxes: tf.Tensor) -> tf.Tensor:
    """Inverse of `box_to_parent`: map parent-image boxes into a crop's coordinates.

    Crop boxes must have non-zero height and width. The result is not clipped, so
    parts of a box outside the crop fall outside [0, 1].
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    crop_boxes = tf.convert_to_tensor(crop_boxes, tf.float32)
    origin, extent = _origin_and_extent(crop_boxes)
    return (boxes - origin) / extent


def _origin_and_extent(crop_boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    ymin, xmin, ymax, xmax = tf.unstack(crop_boxes, axis=-1)
    origin = tf.stack([ymin, xmin, ymin, xmin], axis=-1)
    extent = tf.stack([ymax - ymin, xmax - xmin, ymax - ymin, xmax - xmin], axis=-1)
    return origin, extent


def iou(boxes_a: tf.Tensor, boxes_b: tf.Tensor) -> tf.Tensor:
    """Intersection over union of [..., 4] boxes, elementwise with broadcasting.

    Boxes must have ymin <= ymax and xmin <= xmax. Two empty boxes have IoU 0.
    """
    boxes_a = tf.convert_to_tensor(boxes_a, tf.float32)
    boxes_b = tf.convert_to_tensor(boxes_b, tf.float32)
    ymin_a, xmin_a, ymax_a, xmax_a = tf.unstack(boxes_a, axis=-1)
    ymin_b, xmin_b, ymax_b, xmax_b = tf.unstack(boxes_b, axis=-1)

    overlap_height = tf.nn.relu(tf.minimum(ymax_a, ymax_b) - tf.maximum(ymin_a, ymin_b))
    overlap_width = tf.nn.relu(tf.minimum(xmax_a, xmax_b) - tf.maximum(xmin_a, xmin_b))
    intersection = overlap_height * overlap_width
    area_a = (ymax_a - ymin_a) * (xmax_a - xmin_a)
    area_b = (ymax_b - ymin_b) * (xmax_b - xmin_b)
    union = area_a + area_b - intersection
    return tf.where(union > 0.0, intersection / tf.maximum(union, 1e-12), 0.0)


def xywh_pixels_to_normalized(
    boxes: tf.Tensor, image_height: tf.Tensor, image_width: tf.Tensor
) -> tf.Tensor:
    """Convert CelebA pixel boxes (x_1, y_1, width, height) to normalized boxes.

    `boxes` is [..., 4]; the image sizes broadcast against its leading dimensions.
    x_1 is the left pixel column, so the box spans [x_1, x_1 + width) in pixels. The
    result is clipped to [0, 1] because some annotated boxes extend past the image
    and predicted boxes never do.
    """
    boxes = tf.cast(boxes, tf.float32)
    image_height = tf.cast(image_height, tf.float32)
    image_width = tf.cast(image_width, tf.float32)
    x, y, width, height = tf.unstack(boxes, axis=-1)
    normalized = tf.stack(
        [
            y / image_height,
            x / image_width,
            (y + height) / image_height,
            (x + width) / image_width,
        ],
        axis=-1,
    )
    return tf.clip_by_value(normalized, 0.0, 1.0)
