"""Tests for response map -> box localization and the box and crop helpers."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from lnet_anet_tf import localization
from lnet_anet_tf.config import LocalizationConfig

CONFIG = LocalizationConfig()

# Boxes of several positions, sizes and aspect ratios (height / width from 0.5 to 2).
BUMP_BOXES = np.array(
    [
        [0.2, 0.2, 0.6, 0.6],
        [0.1, 0.3, 0.9, 0.8],
        [0.5, 0.5, 0.95, 0.9],
        [0.3, 0.1, 0.6, 0.5],
        [0.05, 0.05, 0.45, 0.35],
        [0.25, 0.2, 0.75, 0.8],
        [0.1, 0.1, 0.9, 0.9],
        [0.1, 0.3, 0.9, 0.7],
        [0.4, 0.1, 0.7, 0.9],
    ],
    dtype=np.float32,
)


def gaussian_bump(height, width, box):
    """Sample at cell centres a Gaussian whose +-1.5 sigma extent per axis is `box`."""
    center_y = (box[0] + box[2]) / 2 * height
    center_x = (box[1] + box[3]) / 2 * width
    sigma_y = (box[2] - box[0]) * height / 3
    sigma_x = (box[3] - box[1]) * width / 3
    y = np.arange(height)[:, None] + 0.5
    x = np.arange(width)[None, :] + 0.5
    exponent = (y - center_y) ** 2 / (2 * sigma_y**2) + (x - center_x) ** 2 / (2 * sigma_x**2)
    return np.exp(-exponent).astype(np.float32)


def bumps(height, width, boxes=BUMP_BOXES):
    return np.stack([gaussian_bump(height, width, box) for box in boxes])


def test_response_map_averages_channels():
    feature_map = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)

    response = localization.response_map(feature_map)

    assert response.shape == (2, 3, 4)
    np.testing.assert_allclose(response, feature_map.mean(axis=-1), rtol=1e-6)


@pytest.mark.parametrize("map_size", [13, 10])
def test_locate_finds_gaussian_bumps(map_size):
    boxes, scores = localization.locate(bumps(map_size, map_size), CONFIG)

    overlaps = localization.iou(boxes, BUMP_BOXES).numpy()
    for box, overlap in zip(BUMP_BOXES, overlaps):
        assert overlap > 0.7, f"IoU {overlap:.3f} for bump box {box} on a {map_size}x{map_size} map"
    assert np.all(scores.numpy() > 0.9)


def test_locate_finds_bumps_on_noisy_background():
    rng = np.random.default_rng(0)
    maps = bumps(13, 13) + 0.3 + 0.2 * rng.random((len(BUMP_BOXES), 13, 13), dtype=np.float32)

    boxes, _ = localization.locate(maps, CONFIG)

    overlaps = localization.iou(boxes, BUMP_BOXES).numpy()
    assert np.all(overlaps > 0.7), overlaps


def test_locate_finds_bump_on_non_square_map():
    box = np.array([0.2, 0.1, 0.7, 0.5], np.float32)
    maps = gaussian_bump(9, 15, box)[None]

    boxes, _ = localization.locate(maps, CONFIG)

    assert localization.iou(boxes[0], box).numpy() > 0.7


def test_locate_is_independent_of_batch():
    rng = np.random.default_rng(1)
    maps = bumps(13, 13) * rng.uniform(0.5, 20.0, (len(BUMP_BOXES), 1, 1)).astype(np.float32)

    batch_boxes, batch_scores = localization.locate(maps, CONFIG)

    for index in range(len(maps)):
        boxes, scores = localization.locate(maps[index : index + 1], CONFIG)
        np.testing.assert_array_equal(boxes[0], batch_boxes[index])
        np.testing.assert_allclose(scores[0], batch_scores[index], rtol=1e-5)


def test_locate_ignores_map_scale_and_offset():
    maps = bumps(13, 13)

    boxes, scores = localization.locate(maps, CONFIG)
    shifted_boxes, shifted_scores = localization.locate(maps * 7.0 + 3.0, CONFIG)

    np.testing.assert_array_equal(boxes, shifted_boxes)
    np.testing.assert_allclose(scores, shifted_scores, atol=1e-4)


def test_locate_score_halves_for_two_distant_blobs():
    blob_boxes = np.array([[0.35, 0.0, 0.65, 0.25], [0.35, 0.75, 0.65, 1.0]], np.float32)
    maps = gaussian_bump(13, 13, blob_boxes[0]) + gaussian_bump(13, 13, blob_boxes[1])

    boxes, scores = localization.locate(maps[None], CONFIG)

    overlaps = localization.iou(boxes, blob_boxes).numpy()
    assert overlaps.max() > 0.7, overlaps
    assert 0.4 < scores[0].numpy() < 0.6


def test_locate_returns_whole_map_for_constant_map():
    boxes, scores = localization.locate(np.full((2, 13, 13), 3.0, np.float32), CONFIG)

    np.testing.assert_array_equal(boxes, [[0.0, 0.0, 1.0, 1.0]] * 2)
    np.testing.assert_array_equal(scores, [0.0, 0.0])


def test_locate_refinement_never_lowers_score():
    rng = np.random.default_rng(2)
    smooth = tf.image.resize(rng.random((16, 4, 4, 1), dtype=np.float32), [13, 13])[..., 0]
    grid_only = dataclasses.replace(CONFIG, refine_steps=0)

    _, grid_scores = localization.locate(smooth, grid_only)
    _, refined_scores = localization.locate(smooth, CONFIG)

    assert np.all(refined_scores.numpy() >= grid_scores.numpy() - 1e-6)
    assert np.any(refined_scores.numpy() > grid_scores.numpy() + 1e-3)


def test_locate_boxes_are_valid():
    rng = np.random.default_rng(3)
    maps = rng.random((32, 10, 10), dtype=np.float32)

    boxes, scores = localization.locate(maps, CONFIG)

    boxes = boxes.numpy()
    assert np.all((boxes >= 0.0) & (boxes <= 1.0))
    assert np.all(boxes[:, 2] > boxes[:, 0])
    assert np.all(boxes[:, 3] > boxes[:, 1])
    assert np.all((scores.numpy() >= 0.0) & (scores.numpy() <= 1.0))


def test_locate_rejects_unknown_map_size():
    locate = tf.function(
        lambda maps: localization.locate(maps, CONFIG),
        input_signature=[tf.TensorSpec([None, None, None], tf.float32)],
    )

    with pytest.raises(ValueError, match="static shape"):
        locate.get_concrete_function()


@pytest.mark.parametrize(
    "field, value",
    [
        ("response_threshold", 1.0),
        ("background_quantile", 1.0),
        ("refine_steps", -1),
        ("lnet_s_recrop_context", 0.0),
        ("lnet_s_recrop_scales", ()),
        ("lnet_s_recrop_scales", (1.0, 0.0)),
        ("lnet_s_recrop_scales", ("1.0",)),
        ("lnet_s_recrop_scales", 1.0),
        ("lnet_s_recrop_scales", (True,)),
    ],
)
def test_locate_rejects_invalid_config(field, value):
    config = dataclasses.replace(CONFIG, **{field: value})

    with pytest.raises(ValueError, match=field):
        localization.locate(bumps(10, 10), config)


def test_window_grid_covers_scales_inside_lattice():
    lattice_height, lattice_width, corners = localization.window_grid(
        13, 13, CONFIG.window_scales, CONFIG.aspect_ratios, CONFIG.grid_step
    )

    assert (lattice_height, lattice_width) == (26, 26)
    assert len(np.unique(corners, axis=0)) == len(corners)
    assert corners.min() >= 0
    assert corners[:, [0, 2]].max() <= lattice_height
    assert corners[:, [1, 3]].max() <= lattice_width
    heights = set(corners[:, 2] - corners[:, 0])
    assert round(0.3 * 26) in heights
    assert round(0.9 * np.sqrt(1.25) * 26) in heights


def test_expand_box_keeps_centre():
    boxes = tf.constant([[0.4, 0.4, 0.6, 0.5]])

    expanded = localization.expand_box(boxes, 2.0)

    np.testing.assert_allclose(expanded, [[0.3, 0.35, 0.7, 0.55]], atol=1e-6)


def test_expand_box_clips_to_image():
    boxes = tf.constant([[0.0, 0.8, 0.4, 1.0], [0.1, 0.1, 0.9, 0.9]])

    expanded = localization.expand_box(boxes, 1.5)

    np.testing.assert_allclose(expanded, [[0.0, 0.75, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]], atol=1e-6)


def test_iou_of_hand_computed_cases():
    boxes_a = tf.constant(
        [
            [0.0, 0.0, 0.5, 0.5],  # identical
            [0.0, 0.0, 0.5, 0.5],  # disjoint
            [0.0, 0.0, 0.5, 1.0],  # half of each overlaps
            [0.0, 0.0, 1.0, 1.0],  # contains a quarter-size box
            [0.0, 0.0, 0.2, 0.2],  # touching corners
            [0.3, 0.3, 0.3, 0.3],  # two empty boxes
        ]
    )
    boxes_b = tf.constant(
        [
            [0.0, 0.0, 0.5, 0.5],
            [0.5, 0.5, 1.0, 1.0],
            [0.0, 0.5, 1.0, 1.0],
            [0.25, 0.25, 0.75, 0.75],
            [0.2, 0.2, 0.4, 0.4],
            [0.3, 0.3, 0.3, 0.3],
        ]
    )

    overlaps = localization.iou(boxes_a, boxes_b)

    np.testing.assert_allclose(overlaps, [1.0, 0.0, 1.0 / 3.0, 0.25, 0.0, 0.0], atol=1e-6)


def test_iou_broadcasts():
    whole = tf.constant([[0.0, 0.0, 1.0, 1.0]])
    others = tf.constant([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])

    overlaps = localization.iou(whole, others)

    np.testing.assert_allclose(overlaps, [0.25, 1.0], atol=1e-6)


def test_box_to_parent_maps_known_box():
    crop_boxes = tf.constant([[0.2, 0.4, 0.6, 0.8]])

    parent = localization.box_to_parent(tf.constant([[0.0, 0.5, 0.5, 1.0]]), crop_boxes)

    np.testing.assert_allclose(parent, [[0.2, 0.6, 0.4, 0.8]], atol=1e-6)


def random_boxes(rng, count):
    """Return [count, 4] valid boxes: sorting each (y, x) pair puts min before max."""
    corners = np.sort(rng.random((count, 2, 2), dtype=np.float32), axis=1)
    return corners.reshape(count, 4)


def test_box_to_parent_round_trips():
    rng = np.random.default_rng(4)
    crop_boxes = random_boxes(rng, 20)
    boxes_in_crop = random_boxes(rng, 20)

    parent = localization.box_to_parent(boxes_in_crop, crop_boxes)
    back = localization.box_to_crop(parent, crop_boxes)

    np.testing.assert_allclose(back, boxes_in_crop, atol=1e-4)
    parent = parent.numpy()
    assert np.all(parent[:, :2] >= crop_boxes[:, :2] - 1e-6)
    assert np.all(parent[:, 2:] <= crop_boxes[:, 2:] + 1e-6)


def test_xywh_pixels_to_normalized():
    boxes = tf.constant([[95, 71, 226, 313], [-10, 400, 100, 200]])

    normalized = localization.xywh_pixels_to_normalized(boxes, 500, 400)

    np.testing.assert_allclose(
        normalized,
        [[71 / 500, 95 / 400, 384 / 500, 321 / 400], [400 / 500, 0.0, 1.0, 90 / 400]],
        atol=1e-6,
    )


def random_images(batch, height, width, seed=5):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (batch, height, width, 3)).astype(np.float32)


def tf_crop_box(box, image_height, image_width, crop_height, crop_width):
    """Convert a half-pixel-centre box to the box `tf.image.crop_and_resize` needs.

    `tf.image.crop_and_resize` samples row y1 * (H - 1) + i * (y2 - y1) * (H - 1) /
    (crop_height - 1). This solves for the y1 and y2 whose samples equal ours.
    """

    def convert(start, end, extent, count):
        span = end - start
        first = (start * extent + 0.5 * span * extent / count - 0.5) / (extent - 1)
        last = first + span * extent * (count - 1) / (count * (extent - 1))
        return first, last

    y1, y2 = convert(box[0], box[2], image_height, crop_height)
    x1, x2 = convert(box[1], box[3], image_width, crop_width)
    return [y1, x1, y2, x2]


@pytest.mark.parametrize("size", [(20, 30), (64, 80), (7, 7)])
def test_crop_and_resize_of_whole_image_matches_resize(size):
    images = random_images(2, 37, 53)

    crops = localization.crop_and_resize(images, [[0.0, 0.0, 1.0, 1.0]] * 2, size)

    np.testing.assert_allclose(crops, tf.image.resize(images, size, "bilinear"), atol=1e-4)


@pytest.mark.parametrize("size", [(20, 30), (64, 80), (5, 9)])
def test_crop_and_resize_matches_tf_crop_and_resize(size):
    images = random_images(3, 37, 53)
    boxes = np.array(
        [[0.1, 0.2, 0.7, 0.9], [0.3, 0.8, 0.9, 0.1], [0.45, 0.3, 0.55, 0.6]], np.float32
    )
    tf_boxes = np.array([tf_crop_box(box, 37, 53, *size) for box in boxes], np.float32)

    crops = localization.crop_and_resize(images, boxes, size)
    expected = tf.image.crop_and_resize(images, tf_boxes, [0, 1, 2], size)

    np.testing.assert_allclose(crops, expected, atol=1e-4)


def test_crop_and_resize_reads_box_indices():
    images = random_images(2, 20, 20)
    boxes = [[0.1, 0.1, 0.6, 0.9]] * 3

    crops = localization.crop_and_resize(images, boxes, 8, box_indices=[1, 0, 1])

    np.testing.assert_array_equal(crops[0], crops[2])
    np.testing.assert_allclose(crops[1], localization.crop_and_resize(images[:1], boxes[:1], 8)[0])
    np.testing.assert_allclose(crops[0], localization.crop_and_resize(images[1:], boxes[:1], 8)[0])


def test_crop_and_resize_mirrors_reversed_box():
    images = random_images(1, 24, 24)

    crops = localization.crop_and_resize(images, [[0.2, 0.25, 0.8, 0.75]], 10)
    mirrored = localization.crop_and_resize(images, [[0.2, 0.75, 0.8, 0.25]], 10)

    np.testing.assert_allclose(mirrored, crops[:, :, ::-1, :], atol=1e-6)


def test_crop_and_resize_with_unknown_channels():
    images = random_images(2, 20, 24)
    boxes = np.array([[0.1, 0.2, 0.7, 0.9], [0.3, 0.8, 0.9, 0.1]], np.float32)
    traced = tf.function(
        lambda images, boxes: localization.crop_and_resize(images, boxes, (7, 9)),
        input_signature=[tf.TensorSpec([None] * 4), tf.TensorSpec([None, 4])],
    )

    crops = traced(images, boxes)

    assert crops.shape == (2, 7, 9, 3)
    np.testing.assert_array_equal(crops, localization.crop_and_resize(images, boxes, (7, 9)))


def test_crop_and_resize_tflite_muls_keep_channel_axis():
    from ai_edge_litert.interpreter import Interpreter

    images = random_images(2, 40, 40)
    boxes = np.array([[0.1, 0.2, 0.7, 0.9], [0.3, 0.1, 0.9, 0.6]], np.float32)
    function = tf.function(
        lambda images, boxes: localization.crop_and_resize(images, boxes, 16),
        input_signature=[tf.TensorSpec(images.shape), tf.TensorSpec(boxes.shape)],
    ).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()

    # XNNPACK runs a MUL slowly when an operand [..., n, 1] is broadcast along
    # the channel axis; [..., 1, 1] and full channel axes are fast.
    for op in interpreter._get_ops_details():
        if op["op_name"] != "MUL":
            continue
        output_shape = tuple(interpreter._get_tensor_details(op["outputs"][0], 0)["shape"])
        for index in op["inputs"]:
            shape = tuple(interpreter._get_tensor_details(index, 0)["shape"])
            if len(shape) == 4 and shape[-1] != output_shape[-1]:
                assert shape[-2] == 1, (shape, output_shape)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], images if len(detail["shape"]) == 4 else boxes)
    interpreter.invoke()
    crops = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(crops, localization.crop_and_resize(images, boxes, 16), atol=1e-6)


def test_crop_and_resize_copies_pixel_aligned_crop():
    images = random_images(1, 20, 30)

    crops = localization.crop_and_resize(images, [[0.25, 0.2, 0.75, 0.6]], (10, 12))

    np.testing.assert_allclose(crops[0], images[0, 5:15, 6:18], atol=1e-5)


def test_crop_and_resize_pads_outside_image():
    images = random_images(1, 20, 30)

    # One output pixel per input pixel; the box starts 5 rows above and 6 columns
    # left of the image.
    crops = localization.crop_and_resize(
        images, [[-0.25, -0.2, 0.75, 0.6]], (20, 24), extrapolation_value=7.0
    )[0].numpy()

    np.testing.assert_array_equal(crops[:5], 7.0)
    np.testing.assert_array_equal(crops[:, :6], 7.0)
    np.testing.assert_allclose(crops[5:, 6:], images[0, :15, :18], atol=1e-5)


def test_extrapolation_leaves_inner_boxes():
    images = random_images(2, 37, 53)
    boxes = np.array([[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0]], np.float32)

    padded = localization.crop_and_resize(images, boxes, (11, 13), extrapolation_value=0.0)

    np.testing.assert_array_equal(padded, localization.crop_and_resize(images, boxes, (11, 13)))


def test_square_context_box_in_pixels():
    # Image 100 x 200 pixels (aspect 0.5): a 40 x 40 pixel box and a 20 x 80 one.
    boxes = np.array([[0.2, 0.1, 0.6, 0.3], [0.4, 0.5, 0.6, 0.9]], np.float32)

    squares = localization.square_context_box(boxes, 1.5, 0.5).numpy()

    # Sides 1.5 * 40 = 60 pixels and 1.5 * sqrt(20 * 80) = 60 pixels.
    np.testing.assert_allclose(squares[0], [0.1, 0.05, 0.7, 0.35], atol=1e-6)
    np.testing.assert_allclose(squares[1], [0.2, 0.55, 0.8, 0.85], atol=1e-6)


def test_square_context_box_unclipped():
    squares = localization.square_context_box([[0.0, 0.0, 0.4, 0.2]], 2.0, [2.0]).numpy()

    # In an image twice as tall as wide the box is 0.8 x 0.2 image widths, so the
    # square's side is 2 * 0.4 = 0.8 widths: 0.4 of the height, 0.8 of the width.
    np.testing.assert_allclose(squares, [[0.0, -0.3, 0.4, 0.5]], atol=1e-6)


def test_crop_box_to_image_clips():
    crop_boxes = np.array([[-0.5, -0.5, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]], np.float32)
    in_crop = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]], np.float32)

    boxes = localization.crop_box_to_image(in_crop, crop_boxes, 0.05).numpy()

    np.testing.assert_allclose(boxes[0], [0.0, 0.0, 0.05, 0.05], atol=1e-6)
    np.testing.assert_allclose(boxes[1], [0.3, 0.3, 0.5, 0.5], atol=1e-6)


def test_blank_response_cancels_constant_activations():
    # A net whose only response is a bias: the blank response equals it everywhere.
    inputs = keras.Input((16, 16, 3))
    feature_map = keras.layers.Conv2D(
        4, 3, padding="same", bias_initializer="ones", activation="relu"
    )(inputs)
    model = keras.Model(inputs, {"feature_map": feature_map})

    blank = localization.blank_response(model)
    images = np.zeros([2, 16, 16, 3], np.float32)
    response = localization.response_map(model(images)["feature_map"], blank)

    assert blank.shape == (16, 16)
    assert float(tf.reduce_max(blank)) > 0.0
    np.testing.assert_allclose(response.numpy(), 0.0, atol=1e-6)


def test_ensure_min_size_grows_collapsed_boxes():
    boxes = np.array(
        [[0.0, 1.0, 1.0, 1.0], [0.2, 0.2, 0.5, 0.6], [0.5, 0.5, 0.5, 0.5]], np.float32
    )

    grown = localization.ensure_min_size(boxes, 0.1).numpy()

    np.testing.assert_allclose(grown[0], [0.0, 0.9, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(grown[1], boxes[1], atol=1e-6)
    np.testing.assert_allclose(grown[2], [0.45, 0.45, 0.55, 0.55], atol=1e-6)
    assert np.all(grown >= 0.0)
    assert np.all(grown <= 1.0)


def chain_model(input_size, layer_specs):
    """A chain of all-ones convolutions and average pools, with output "feature_map"."""
    inputs = keras.Input((input_size, input_size, 1))
    x = inputs
    for kind, kernel, stride, padding in layer_specs:
        if kind == "conv":
            x = keras.layers.Conv2D(
                1, kernel, strides=stride, padding=padding, kernel_initializer="ones"
            )(x)
        else:
            x = keras.layers.AveragePooling2D(kernel, strides=stride, padding=padding)(x)
    return keras.Model(inputs, {"feature_map": x})


@pytest.mark.parametrize(
    "input_size,layer_specs",
    [
        (37, [("conv", 5, 2, "valid"), ("pool", 3, 2, "valid"), ("conv", 3, 1, "same")]),
        (40, [("conv", 3, 2, "same"), ("conv", 4, 1, "same"), ("pool", 2, 2, "same")]),
        (33, [("conv", 7, 3, "valid"), ("conv", 3, 1, "valid")]),
    ],
)
def test_map_geometry_matches_receptive_field_centres(input_size, layer_specs):
    # The pixels a cell reads are those its gradient reaches. Away from the
    # padded borders that receptive field is symmetric about the cell's centre.
    model = chain_model(input_size, layer_specs)
    geometry = localization.map_geometry(model)
    images = tf.random.uniform([1, input_size, input_size, 1])
    map_height, map_width = geometry.map_size

    for row, column in [(1, 2), (map_height // 2, map_width - 3)]:
        with tf.GradientTape() as tape:
            tape.watch(images)
            cell = model(images)["feature_map"][0, row, column, 0]
        reached = np.abs(tape.gradient(cell, images).numpy()[0, :, :, 0]) > 0
        ys, xs = np.nonzero(reached)
        centre = ((ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2)
        expected = (
            geometry.first_center[0] + row * geometry.stride[0],
            geometry.first_center[1] + column * geometry.stride[1],
        )
        assert centre == pytest.approx(expected)


def test_map_geometry_of_demo_and_paper_lnets():
    from lnet_anet_tf.config import get_config
    from lnet_anet_tf.models.lnet import build_lnet

    demo = localization.map_geometry(build_lnet(get_config("demo").lnet_s, 40))
    paper = localization.map_geometry(build_lnet(get_config("paper").lnet_s, 40))

    # Worked by hand in the docstrings of map_geometry and models/lnet.py.
    assert demo == localization.MapGeometry((96, 96), (10, 10), (8.5, 8.5), (8.0, 8.0))
    assert paper == localization.MapGeometry((227, 227), (13, 13), (17.5, 17.5), (16.0, 16.0))


def test_map_geometry_rejects_branches_and_unknown_outputs():
    inputs = keras.Input((16, 16, 3))
    branch_a = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    branch_b = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    merged = keras.layers.Add()([branch_a, branch_b])
    model = keras.Model(inputs, {"feature_map": merged})

    with pytest.raises(ValueError, match="several inputs"):
        localization.map_geometry(model)
    with pytest.raises(ValueError, match="no output named 'response'"):
        localization.map_geometry(model, output="response")


def test_map_to_input_known_boxes():
    geometry = localization.MapGeometry((96, 96), (10, 10), (8.5, 8.5), (8.0, 8.0))
    boxes = np.array(
        [[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.9, 0.5], [0.05, 0.95, 0.5, 1.0]], np.float32
    )

    mapped = localization.map_to_input(boxes, geometry).numpy() * 96

    # The whole map is the whole input. Inner cell j spans 8.5 + 8 j -+ 4 pixels,
    # and the border cells reach the borders, linearly within their band.
    np.testing.assert_allclose(mapped[0], [0, 0, 96, 96], atol=1e-4)
    np.testing.assert_allclose(mapped[1], [12.5, 20.5, 76.5, 44.5], atol=1e-4)
    np.testing.assert_allclose(mapped[2], [6.25, 86.25, 44.5, 96], atol=1e-4)


def test_map_to_input_one_cell_map():
    geometry = localization.MapGeometry((20, 20), (1, 1), (10.0, 10.0), (8.0, 8.0))
    boxes = np.array([[0.2, 0.3, 0.7, 0.9]], np.float32)

    np.testing.assert_allclose(localization.map_to_input(boxes, geometry).numpy(), boxes)


def test_locate_with_geometry():
    geometry = localization.MapGeometry((96, 96), (10, 10), (8.5, 8.5), (8.0, 8.0))
    maps = bumps(10, 10)

    on_map, scores = localization.locate(maps, CONFIG)
    on_input, scores_with_geometry = localization.locate(maps, CONFIG, geometry)

    np.testing.assert_allclose(on_input, localization.map_to_input(on_map, geometry))
    np.testing.assert_allclose(scores, scores_with_geometry)
    with pytest.raises(ValueError, match="10x10 map, but the response maps are 13x13"):
        localization.locate(bumps(13, 13), CONFIG, geometry)
