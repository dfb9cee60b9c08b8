"""Tests of the synthetic CelebA generator and the synthetic object classes."""

import dataclasses
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lnet_anet_tf import attributes
from lnet_anet_tf.config import SyntheticConfig
from lnet_anet_tf.data import synthetic
from lnet_anet_tf.data.synthetic import cache, objects, person, rates, render, traits, writer

A = attributes.ATTRIBUTE_INDEX
SMALL_SIZES = (96, 128)


def _generate(path, num_identities=10, images_per_identity=2, seed=3, num_workers=1):
    return synthetic.generate_celeba(
        str(path),
        num_identities=num_identities,
        images_per_identity=images_per_identity,
        seed=seed,
        num_workers=num_workers,
        image_size_range=SMALL_SIZES,
    )


def _all_files(root):
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as file:
                found[os.path.relpath(path, root)] = file.read()
    return found


def _rows(path, skip):
    with open(path, encoding="ascii") as file:
        lines = file.read().splitlines()
    return [line.split() for line in lines[skip:]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("synthetic") / "celeba", num_identities=20, images_per_identity=3)


# ---------------------------------------------------------------------------
# Determinism.


def test_same_seed_same_bytes_across_worker_counts(tmp_path):
    one_worker = _all_files(_generate(tmp_path / "one", num_workers=1))
    two_workers = _all_files(_generate(tmp_path / "two", num_workers=2))

    assert len(one_worker) == 20 * 2 + 6
    assert one_worker.keys() == two_workers.keys()
    for name in one_worker:
        assert one_worker[name] == two_workers[name], name


def test_render_example_repeats_exactly():
    first = render.render_example(5, 4, 1)
    second = render.render_example(5, 4, 1)

    assert first.wild.tobytes() == second.wild.tobytes()
    assert first.aligned.tobytes() == second.aligned.tobytes()
    np.testing.assert_array_equal(first.labels, second.labels)


def test_other_seed_other_images():
    first = render.render_example(5, 4, 1)
    second = render.render_example(6, 4, 1)

    assert first.wild.tobytes() != second.wild.tobytes()


# ---------------------------------------------------------------------------
# File formats.


def test_counted_files_have_count_and_header(dataset):
    anno = os.path.join(dataset, "Anno")
    headers = {
        "list_attr_celeba.txt": " ".join(attributes.ATTRIBUTE_NAMES),
        "list_bbox_celeba.txt": "image_id x_1 y_1 width height",
        "list_landmarks_celeba.txt": " ".join(attributes.LANDMARK_COLUMNS),
        "list_landmarks_align_celeba.txt": " ".join(attributes.LANDMARK_COLUMNS),
    }
    for name, header in headers.items():
        with open(os.path.join(anno, name), encoding="ascii") as file:
            lines = file.read().splitlines()
        assert lines[0] == "60", name
        assert lines[1] == header, name
        assert len(lines) == 62, name


def test_rows_match_release_syntax(dataset):
    patterns = {
        # As in the release: each value right-aligned in two characters after a space.
        "Anno/list_attr_celeba.txt": (2, r"\d{6}\.jpg(  1| -1){40}"),
        "Anno/list_bbox_celeba.txt": (2, r"\d{6}\.jpg( +\d+){4}"),
        "Anno/list_landmarks_celeba.txt": (2, r"\d{6}\.jpg( +\d+){10}"),
        "Anno/list_landmarks_align_celeba.txt": (2, r"\d{6}\.jpg( +\d+){10}"),
        "Anno/identity_CelebA.txt": (0, r"\d{6}\.jpg \d+"),
        "Eval/list_eval_partition.txt": (0, r"\d{6}\.jpg [012]"),
    }
    for name, (skip, pattern) in patterns.items():
        with open(os.path.join(dataset, name), encoding="ascii") as file:
            lines = file.read().splitlines()[skip:]
        assert len(lines) == 60, name
        for number, line in enumerate(lines, start=1):
            assert re.fullmatch(pattern, line), f"{name} row {number}: {line!r}"
            assert line.startswith(f"{number:06d}.jpg"), f"{name} row {number}: {line!r}"


def test_images_exist_with_expected_sizes(dataset):
    boxes = _rows(os.path.join(dataset, "Anno/list_bbox_celeba.txt"), 2)
    for name, *_ in boxes:
        with Image.open(os.path.join(dataset, "Img/img_celeba", name)) as wild:
            assert wild.format == "JPEG"
            assert SMALL_SIZES[0] <= wild.width <= SMALL_SIZES[1]
            assert SMALL_SIZES[0] <= wild.height <= SMALL_SIZES[1]
        with Image.open(os.path.join(dataset, "Img/img_align_celeba", name)) as aligned:
            assert aligned.format == "JPEG"
            assert aligned.size == (178, 218)


# ---------------------------------------------------------------------------
# Boxes, landmarks and labels.


def test_landmarks_lie_in_box_in_order(dataset):
    boxes = _rows(os.path.join(dataset, "Anno/list_bbox_celeba.txt"), 2)
    landmarks = _rows(os.path.join(dataset, "Anno/list_landmarks_celeba.txt"), 2)
    for box_row, landmark_row in zip(boxes, landmarks):
        name = box_row[0]
        x, y, width, height = map(int, box_row[1:])
        points = np.array(list(map(int, landmark_row[1:]))).reshape(5, 2)
        with Image.open(os.path.join(dataset, "Img/img_celeba", name)) as wild:
            assert x >= 0, name
            assert y >= 0, name
            assert x + width <= wild.width, name
            assert y + height <= wild.height, name
        assert np.all(points[:, 0] >= x), name
        assert np.all(points[:, 0] < x + width), name
        assert np.all(points[:, 1] >= y), name
        assert np.all(points[:, 1] < y + height), name
        left_eye, right_eye, nose, left_mouth, right_mouth = points
        assert left_eye[0] < right_eye[0], name
        assert left_mouth[0] < right_mouth[0], name
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1]), name


def test_aligned_eyes_are_fixed(dataset):
    for row in _rows(os.path.join(dataset, "Anno/list_landmarks_align_celeba.txt"), 2):
        points = np.array(list(map(int, row[1:]))).reshape(5, 2)
        assert np.abs(points[0] - render.ALIGNED_LEFT_EYE).max() <= 1, row
        assert np.abs(points[1] - render.ALIGNED_RIGHT_EYE).max() <= 1, row
        assert points[1, 1] < points[2, 1] < points[3, 1], row


def test_face_height_within_range(dataset):
    for row in _rows(os.path.join(dataset, "Anno/list_bbox_celeba.txt"), 2):
        with Image.open(os.path.join(dataset, "Img/img_celeba", row[0])) as wild:
            image_height = wild.height
        # The rotated box's bounds are taller than the face by up to sin(6 deg).
        fraction = int(row[4]) / image_height
        assert 0.14 <= fraction <= 0.62 * (1 + math.sin(math.radians(6))) + 0.02, row


def _marker_centres(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image).astype(np.float64)
    centres = []
    for channel in range(3):
        weights = pixels[..., channel] * (pixels[..., channel] > 60)
        ys, xs = np.nonzero(weights)
        total = weights[ys, xs].sum()
        centres.append(((xs * weights[ys, xs]).sum() / total, (ys * weights[ys, xs]).sum() / total))
    return np.array(centres)


@pytest.mark.parametrize("image", range(6))
def test_landmarks_follow_warped_pixels(image):
    # Draw a coloured dot at three landmarks in the canonical frame, warp the dots
    # with the maps that place the person, and check that each dot lands where the
    # landmark map sends its centre.
    identity = traits.sample_identity(11, image + 1)
    appearance = traits.sample_appearance(identity, 11, image)
    layout = person.make_layout(identity, appearance)
    markers = Image.new("RGB", person.LAYER_SIZE)
    draw = ImageDraw.Draw(markers)
    chosen = [0, 1, 2]
    for channel, (x, y) in enumerate(layout.landmarks()[chosen]):
        colour = [0, 0, 0]
        colour[channel] = 255
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=tuple(colour))
    # ImageDraw rounds the dot to whole pixels, so map the dot's own centre.
    drawn_centres = _marker_centres(markers)

    rng = np.random.default_rng(image)
    size = (200, 180)
    wild_map = render._wild_map(rng, layout, appearance, size)
    aligned_map = render._aligned_map(layout)
    for matrix, output_size in ((wild_map, size), (aligned_map, render.ALIGNED_SIZE)):
        found = _marker_centres(render._warp(markers, matrix, output_size))
        expected = render._to_index(render._apply(matrix, render._to_continuous(drawn_centres)))
        np.testing.assert_allclose(found, expected, atol=0.35)

        exact = render._to_index(render._apply(matrix, render._to_continuous(layout.landmarks())))
        written = render._landmarks_in(matrix, layout).reshape(5, 2)
        assert np.abs(written - exact).max() <= 0.5


def test_identity_traits_repeat_across_images(dataset):
    labels = {row[0]: np.array(list(map(int, row[1:]))) for row in _rows(os.path.join(dataset, "Anno/list_attr_celeba.txt"), 2)}
    identities = {}
    for name, identity in _rows(os.path.join(dataset, "Anno/identity_CelebA.txt"), 0):
        identities.setdefault(identity, []).append(labels[name])
    fixed = ["Male", "Young", "Pale_Skin", "Big_Nose", "Black_Hair", "Blond_Hair", "Bald", "Goatee", "Oval_Face"]
    for identity, rows in identities.items():
        assert len(rows) == 3
        for name in fixed:
            assert len({row[A[name]] for row in rows}) == 1, (identity, name)


# ---------------------------------------------------------------------------
# Partitions.


def test_partitions_are_identity_disjoint(dataset):
    partitions = dict(_rows(os.path.join(dataset, "Eval/list_eval_partition.txt"), 0))
    identities_by_code = {"0": set(), "1": set(), "2": set()}
    for name, identity in _rows(os.path.join(dataset, "Anno/identity_CelebA.txt"), 0):
        identities_by_code[partitions[name]].add(identity)

    assert [len(identities_by_code[code]) for code in "012"] == [16, 2, 2]
    assert not identities_by_code["0"] & identities_by_code["1"]
    assert not identities_by_code["0"] & identities_by_code["2"]
    assert not identities_by_code["1"] & identities_by_code["2"]
    codes = [partitions[f"{n:06d}.jpg"] for n in range(1, 61)]
    assert codes == sorted(codes), "train rows must come first, then validation, then test"


@pytest.mark.parametrize("num_identities, expected", [(3, (1, 1, 1)), (10, (8, 1, 1)), (25, (19, 3, 3)), (200, (160, 20, 20))])
def test_partition_sizes(num_identities, expected):
    split = writer.partition_identities(num_identities, seed=0)
    sizes = tuple(len(split[code]) for code in (0, 1, 2))
    assert sizes == expected
    everyone = np.concatenate([split[code] for code in (0, 1, 2)])
    assert sorted(everyone.tolist()) == list(range(1, num_identities + 1))


# ---------------------------------------------------------------------------
# Positive rates and correlations, from labels sampled without drawing.


@pytest.fixture(scope="module")
def sampled_labels():
    return traits.sample_labels(seed=1, num_identities=4000, images_per_identity=1) > 0


def test_positive_rates_match_targets(sampled_labels):
    count = len(sampled_labels)
    for name in attributes.ATTRIBUTE_NAMES:
        target = rates.TARGET_RATES[name]
        measured = sampled_labels[:, A[name]].mean()
        # Four standard errors of the sample, plus 0.01 for the calibration's own
        # approximations (Young is set through P(Young | sex), for example).
        tolerance = 0.01 + 4 * math.sqrt(target * (1 - target) / count)
        assert abs(measured - target) <= tolerance, f"{name}: measured {measured:.4f}, target {target:.4f}"


def _conditional(labels, name, given, value=True):
    rows = labels[:, A[given]] == value
    return labels[rows, A[name]].mean()


def test_main_correlations(sampled_labels):
    labels = sampled_labels
    assert _conditional(labels, "Wearing_Lipstick", "Male") < 0.03
    assert _conditional(labels, "Wearing_Lipstick", "Male", False) > 0.7
    assert _conditional(labels, "Heavy_Makeup", "Male") < 0.03
    assert _conditional(labels, "No_Beard", "Male", False) == 1.0
    assert _conditional(labels, "Goatee", "Male", False) == 0.0
    assert _conditional(labels, "Gray_Hair", "Young") < 0.02
    assert _conditional(labels, "Gray_Hair", "Young", False) > 0.1
    assert _conditional(labels, "Bald", "Male", False) < 0.005
    assert _conditional(labels, "Mouth_Slightly_Open", "Smiling") > _conditional(labels, "Mouth_Slightly_Open", "Smiling", False) + 0.3
    assert _conditional(labels, "High_Cheekbones", "Smiling") > _conditional(labels, "High_Cheekbones", "Smiling", False) + 0.4
    assert _conditional(labels, "Attractive", "Male", False) > _conditional(labels, "Attractive", "Male") + 0.3
    assert _conditional(labels, "Wearing_Necktie", "Male") > 10 * _conditional(labels, "Wearing_Necktie", "Male", False)


def test_exclusive_attributes_never_cooccur(sampled_labels):
    labels = sampled_labels
    hair = labels[:, [A["Black_Hair"], A["Blond_Hair"], A["Brown_Hair"], A["Gray_Hair"]]]
    assert hair.sum(axis=1).max() == 1
    assert not np.any(labels[:, A["Straight_Hair"]] & labels[:, A["Wavy_Hair"]])
    assert not np.any(labels[:, A["Bald"]] & (labels[:, A["Bangs"]] | labels[:, A["Receding_Hairline"]]))
    assert not np.any(labels[:, A["Oval_Face"]] & labels[:, A["Chubby"]])


def test_beard_styles_are_a_distribution():
    total = sum(probability for probability, _ in rates.BEARD_STYLES.values())
    assert total == pytest.approx(1.0, abs=1e-9)


def test_calibrate_rejects_unreachable_target():
    with pytest.raises(ValueError, match="unreachable"):
        rates.calibrate(0.9, (1.0, 0.0, 0.0, 0.0))


# ---------------------------------------------------------------------------
# Every drawn attribute changes the pixels.

# Attribute -> (identity changes, appearance changes) that flip its label from the
# base person's.
_DRAWN = {
    "5_o_Clock_Shadow": ({"beard": "stubble"}, {}),
    "Arched_Eyebrows": ({"arched_brows": True}, {}),
    "Bags_Under_Eyes": ({"bags_under_eyes": True}, {}),
    "Bald": ({"hairline": "bald"}, {}),
    "Bangs": ({"hairline": "bangs"}, {}),
    "Big_Lips": ({"big_lips": True}, {}),
    "Big_Nose": ({"nose": "big"}, {}),
    "Black_Hair": ({"hair_colour": "black", "hair_rgb": traits.HAIR_COLOURS["black"]}, {}),
    "Blond_Hair": ({"hair_colour": "blond", "hair_rgb": traits.HAIR_COLOURS["blond"]}, {}),
    "Brown_Hair": ({"hair_colour": "brown", "hair_rgb": traits.HAIR_COLOURS["brown"]}, {}),
    "Bushy_Eyebrows": ({"bushy_brows": True}, {}),
    "Chubby": ({"face_shape": "chubby", "face_width": 1.2}, {}),
    "Double_Chin": ({"double_chin": True}, {}),
    "Eyeglasses": ({}, {"eyeglasses": True}),
    "Goatee": ({"beard": "goatee"}, {}),
    "Gray_Hair": ({"hair_colour": "gray", "hair_rgb": traits.HAIR_COLOURS["gray"]}, {}),
    "Heavy_Makeup": ({}, {"heavy_makeup": True}),
    "High_Cheekbones": ({}, {"high_cheekbones": True}),
    "Male": ({"male": True}, {}),
    "Mouth_Slightly_Open": ({}, {"mouth_open": True}),
    "Mustache": ({"beard": "mustache"}, {}),
    "Narrow_Eyes": ({}, {"narrow_eyes": True}),
    "No_Beard": ({"beard": "jaw_beard"}, {}),
    "Oval_Face": ({"face_shape": "oval", "face_width": 0.88, "face_length": 1.1}, {}),
    "Pale_Skin": ({"pale_skin": True, "skin": (252, 234, 224)}, {}),
    "Pointy_Nose": ({"nose": "pointy"}, {}),
    "Receding_Hairline": ({"hairline": "receding"}, {}),
    "Rosy_Cheeks": ({}, {"rosy_cheeks": True}),
    "Sideburns": ({"beard": "sideburns"}, {}),
    "Smiling": ({}, {"smiling": True}),
    "Wavy_Hair": ({"hair_style": "wavy", "hair_length": "long"}, {}),
    "Straight_Hair": ({"hair_style": "straight", "hair_length": "long"}, {}),
    "Wearing_Earrings": ({}, {"earrings": True}),
    "Wearing_Hat": ({}, {"hat": True}),
    "Wearing_Lipstick": ({}, {"lipstick": True}),
    "Wearing_Necklace": ({}, {"necklace": True, "neckline": "v"}),
    "Wearing_Necktie": ({}, {"necktie": True, "neckline": "collar"}),
    "Young": ({"young": True}, {}),
}


def _base_person():
    identity = traits.sample_identity(0, 1)
    identity = dataclasses.replace(
        identity, male=False, young=False, pale_skin=False, skin=(198, 142, 104), face_shape="round",
        face_width=1.0, face_length=1.0, double_chin=False, nose="plain", big_lips=False,
        arched_brows=False, bushy_brows=False, bags_under_eyes=False, hair_colour="other",
        hair_rgb=traits.HAIR_COLOURS["other"], hairline="normal", hair_style="short",
        hair_length="short", beard="clean",
    )
    appearance = traits.sample_appearance(identity, 0, 0)
    appearance = dataclasses.replace(
        appearance, smiling=False, mouth_open=False, high_cheekbones=False, narrow_eyes=False,
        eyeglasses=False, sunglasses=False, hat=False, lipstick=False, heavy_makeup=False,
        rosy_cheeks=False, earrings=False, necklace=False, necktie=False, neckline="crew",
        yaw=0.0,
    )
    return identity, appearance


@pytest.mark.parametrize("name", sorted(_DRAWN))
def test_drawn_attribute_changes_pixels(name):
    identity, appearance = _base_person()
    identity_changes, appearance_changes = _DRAWN[name]
    changed_identity = dataclasses.replace(identity, **identity_changes)
    changed_appearance = dataclasses.replace(appearance, **appearance_changes)
    before_label = traits.attribute_labels(identity, appearance)[A[name]]
    after_label = traits.attribute_labels(changed_identity, changed_appearance)[A[name]]
    assert before_label == -after_label, name

    before, _, _ = person.draw_person(identity, appearance)
    after, _, _ = person.draw_person(changed_identity, changed_appearance)
    difference = np.abs(np.asarray(before, np.int16) - np.asarray(after, np.int16)).max(axis=2)
    # At least 100 canonical pixels must change clearly: about 25 pixels of the
    # 48 x 48 face crops that the demo models see, where the eye distance is about
    # 20 pixels instead of 40.
    assert (difference > 30).sum() >= 100, name


def test_blurry_image_loses_detail():
    seed, identity_id = 0, 1
    for image in range(200):
        identity = traits.sample_identity(seed, identity_id)
        if traits.sample_appearance(identity, seed, image).blurry:
            break
    else:
        pytest.fail("no blurry image among 200")
    blurry = render.render_example(seed, identity_id, image)
    sharp = render.render_example(seed, identity_id, image + 1 if image == 0 else image - 1)

    def detail(picture):
        pixels = np.asarray(picture.convert("L"), np.float64)
        return np.abs(np.diff(pixels, axis=1)).mean()

    assert blurry.labels[A["Blurry"]] == 1
    assert detail(blurry.aligned) < 0.6 * detail(sharp.aligned)


# ---------------------------------------------------------------------------
# Variation of light and head turn.

_WIDE = traits.Variation(
    light_strength_range=(0.0, 0.6),
    brightness_range=(0.6, 1.4),
    contrast_range=(0.6, 1.4),
    colour_gain_range=(0.75, 1.25),
    head_turn=0.45,
)


def test_config_defaults_match_generator():
    assert synthetic.variation(SyntheticConfig()) == traits.DEFAULT_VARIATION


def test_fixed_ranges_keep_other_traits():
    fixed = traits.Variation(
        light_strength_range=(0.5, 0.5),
        brightness_range=(1.3, 1.3),
        contrast_range=(0.7, 0.7),
        colour_gain_range=(1.2, 1.2),
        head_turn=0.4,
    )
    identity = traits.sample_identity(2, 5)

    default = traits.sample_appearance(identity, 2, 1)
    changed = traits.sample_appearance(identity, 2, 1, fixed)

    assert changed.light_strength == 0.5
    assert changed.brightness == 1.3
    assert changed.contrast == 0.7
    assert changed.colour_gains == (1.2, 1.2, 1.2)
    assert changed.head_turn == 0.4
    light = {"light_strength", "brightness", "contrast", "colour_gains", "head_turn"}
    for field in dataclasses.fields(traits.Appearance):
        if field.name not in light:
            assert getattr(changed, field.name) == getattr(default, field.name), field.name


def test_wider_variation_changes_pixels_not_labels():
    for image in range(3):
        default = render.render_example(4, 7, image, SMALL_SIZES)
        wide = render.render_example(4, 7, image, SMALL_SIZES, _WIDE)

        np.testing.assert_array_equal(wide.labels, default.labels)
        assert wide.wild.size == default.wild.size
        difference = np.abs(np.asarray(wide.aligned, np.int16) - np.asarray(default.aligned, np.int16))
        assert difference.mean() > 2.0, image


def test_head_turn_shifts_features():
    identity = traits.sample_identity(0, 3)
    appearance = dataclasses.replace(traits.sample_appearance(identity, 0, 0), yaw=1.0)

    shifts = []
    for turn in (0.0, 0.2, 0.45):
        layout = person.make_layout(identity, dataclasses.replace(appearance, head_turn=turn))
        eyes_centre = (layout.eyes[0][0] + layout.eyes[1][0]) / 2
        shifts.append((eyes_centre - layout.cx) / layout.unit)

    np.testing.assert_allclose(shifts, [0.0, 0.2, 0.45])


def test_wider_variation_keeps_label_files(tmp_path):
    default_dir = _generate(tmp_path / "default", num_identities=4)
    wide_dir = synthetic.generate_celeba(
        str(tmp_path / "wide"), 4, 2, seed=3, num_workers=1, image_size_range=SMALL_SIZES, variation=_WIDE
    )

    default_files, wide_files = _all_files(default_dir), _all_files(wide_dir)
    for name in ("list_attr_celeba.txt", "identity_CelebA.txt"):
        path = os.path.join("Anno", name)
        assert default_files[path] == wide_files[path], name
    wild = os.path.join("Img", "img_celeba", "000001.jpg")
    assert default_files[wild] != wide_files[wild]


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("brightness_range", (1.2, 0.8), r"brightness_range is \(1\.2, 0\.8\); .* 0 < low <= high"),
        ("contrast_range", (0.0, 1.0), r"contrast_range is \(0\.0, 1\.0\)"),
        ("colour_gain_range", (1.0,), r"colour_gain_range is \(1\.0,\)"),
        ("light_strength_range", (0.0, 1.5), r"light_strength_range is \(0\.0, 1\.5\); .* 0 <= low <= high <= 1"),
        ("head_turn", 0.5, r"head_turn is 0\.5; it must lie in \[0, 0\.45\]"),
        ("head_turn", "wide", r"head_turn is 'wide'"),
    ],
)
def test_invalid_variation_names_the_setting(setting, value, message):
    with pytest.raises(ValueError, match=message):
        traits.Variation(**{setting: value})
    with pytest.raises(ValueError, match=r"^The config setting synthetic\." + message):
        synthetic.variation(dataclasses.replace(SyntheticConfig(), **{setting: value}))


def test_cache_separates_variations(tmp_path):
    first, _ = synthetic.ensure_default_dataset(str(tmp_path), _TINY, num_workers=1)
    brighter = dataclasses.replace(_TINY, brightness_range=(1.1, 1.2))
    second, _ = synthetic.ensure_default_dataset(str(tmp_path), brighter, num_workers=1)

    labels = os.path.join("Anno", "list_attr_celeba.txt")
    assert os.path.dirname(first) != os.path.dirname(second)
    assert _all_files(first)[labels] == _all_files(second)[labels]


# ---------------------------------------------------------------------------
# Object classes.


def test_object_classes_write_class_folders(tmp_path):
    root = synthetic.generate_object_classes(str(tmp_path / "objects"), 3, 2, seed=0, image_size=64, num_workers=1)

    assert sorted(os.listdir(root)) == sorted(objects.CLASS_NAMES[:3])
    for name in objects.CLASS_NAMES[:3]:
        assert sorted(os.listdir(os.path.join(root, name))) == ["000001.jpg", "000002.jpg"]
        with Image.open(os.path.join(root, name, "000001.jpg")) as image:
            assert image.format == "JPEG"
            assert image.size == (64, 64)
            assert image.mode == "RGB"


def test_object_classes_are_deterministic(tmp_path):
    first = synthetic.generate_object_classes(str(tmp_path / "a"), 2, 3, seed=4, image_size=64, num_workers=1)
    second = synthetic.generate_object_classes(str(tmp_path / "b"), 2, 3, seed=4, image_size=64, num_workers=2)
    assert _all_files(first) == _all_files(second)


def test_object_class_names_unique():
    assert len(set(objects.CLASS_NAMES)) == len(objects.CLASS_NAMES) == 48
    assert [name.split("_")[0] for name in objects.CLASS_NAMES[:12]] == list(objects.SHAPES)


@pytest.mark.parametrize("num_classes", [0, 49])
def test_object_classes_reject_bad_count(tmp_path, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.generate_object_classes(str(tmp_path / "objects"), num_classes, 1, seed=0)
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------
# Bad input and atomic writes.


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(num_identities=2, images_per_identity=1), "num_identities is 2"),
        (dict(num_identities=3, images_per_identity=0), "images_per_identity is 0"),
        (dict(num_identities=3, images_per_identity=1, image_size_range=(50, 60)), "image_size_range"),
        (dict(num_identities=3, images_per_identity=1, image_size_range=(200, 160)), "image_size_range"),
    ],
)
def test_generate_rejects_bad_sizes(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        synthetic.generate_celeba(str(tmp_path / "out"), seed=0, num_workers=1, **arguments)
    assert not os.listdir(tmp_path)


def test_generate_rejects_non_empty_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        _generate(tmp_path / "out", num_identities=3, images_per_identity=1)
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


def test_generate_fills_empty_existing_output(tmp_path):
    (tmp_path / "out").mkdir()
    root = _generate(tmp_path / "out", num_identities=3, images_per_identity=1)
    assert sorted(os.listdir(root)) == ["Anno", "Eval", "Img"]


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_render = render.render_example

    def fail_on_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("simulated failure")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(render, "render_example", fail_on_third)
    with pytest.raises(RuntimeError, match="simulated failure"):
        _generate(tmp_path / "out", num_identities=3, images_per_identity=2, num_workers=1)
    assert os.listdir(tmp_path) == []


_PARENT_SCRIPT = """
import os, sys
if __name__ != "__main__":
    # Runs only if a worker process imports this script.
    open(os.path.join(os.environ["MARKER_DIR"], "imported-%d" % os.getpid()), "w").close()
from lnet_anet_tf.data import synthetic
if __name__ == "__main__":
    synthetic.generate_celeba(sys.argv[1], 3, 1, 0, num_workers=2, image_size_range=(96, 128))
    print("main file after generation:", os.path.basename(__file__))
"""


def test_workers_skip_parent_main_module(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_PARENT_SCRIPT)
    markers = tmp_path / "markers"
    markers.mkdir()
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MARKER_DIR": str(markers)},
    )

    assert result.returncode == 0, result.stderr
    assert os.listdir(markers) == []
    assert "main file after generation: parent.py" in result.stdout
    assert os.path.isfile(tmp_path / "out" / "Anno" / "list_attr_celeba.txt")


# ---------------------------------------------------------------------------
# Cache of the default datasets.

_TINY = SyntheticConfig(num_identities=3, images_per_identity=1, object_classes=2, object_images_per_class=1, seed=0)


def test_cache_generates_once_and_reuses(tmp_path):
    celeba_dir, objects_dir = synthetic.ensure_default_dataset(str(tmp_path), _TINY, num_workers=1)
    marker = os.path.join(os.path.dirname(celeba_dir), cache.MARKER_FILE)
    written = os.stat(marker).st_mtime_ns

    again = synthetic.ensure_default_dataset(str(tmp_path), _TINY, num_workers=1)

    assert again == (celeba_dir, objects_dir)
    assert os.stat(marker).st_mtime_ns == written
    assert os.path.isfile(os.path.join(celeba_dir, "Anno", "list_attr_celeba.txt"))
    assert sorted(os.listdir(objects_dir)) == sorted(objects.CLASS_NAMES[:2])
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


def test_cache_output_reads_back(tmp_path):
    from lnet_anet_tf.data import celeba

    celeba_dir, _ = synthetic.ensure_default_dataset(str(tmp_path), _TINY, num_workers=1)
    table = celeba.load_celeba(celeba_dir)

    assert len(table) == 3
    assert table.missing_parts == {}
    assert table.problems == []
    assert sorted(table.partitions.tolist()) == [0, 1, 2]


def test_cache_separates_configs(tmp_path):
    first, _ = synthetic.ensure_default_dataset(str(tmp_path), _TINY, num_workers=1)
    second, _ = synthetic.ensure_default_dataset(str(tmp_path), dataclasses.replace(_TINY, seed=1), num_workers=1)
    assert os.path.dirname(first) != os.path.dirname(second)


def test_cache_replaces_incomplete_directory(tmp_path):
    celeba_dir, _ = synthetic.ensure_default_dataset(str(tmp_path), _TINY, num_workers=1)
    root = os.path.dirname(celeba_dir)
    os.remove(os.path.join(root, cache.MARKER_FILE))
    os.remove(os.path.join(celeba_dir, "Anno", "list_attr_celeba.txt"))

    synthetic.ensure_default_dataset(str(tmp_path), _TINY, num_workers=1)

    assert os.path.isfile(os.path.join(celeba_dir, "Anno", "list_attr_celeba.txt"))
    assert os.path.isfile(os.path.join(root, cache.MARKER_FILE))


# ---------------------------------------------------------------------------
# Command line.


def _run_cli(*flags):
    return subprocess.run(
        [sys.executable, "-m", "lnet_anet_tf.data.synthetic", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_dataset_and_preview(tmp_path):
    preview = tmp_path / "preview.png"
    result = _run_cli(
        f"--output_dir={tmp_path / 'out'}", "--num_identities=3", "--images_per_identity=2",
        "--seed=2", "--num_workers=1", f"--preview={preview}", "--preview_count=4",
    )

    assert result.returncode == 0, result.stderr
    assert os.path.isfile(tmp_path / "out" / "Eval" / "list_eval_partition.txt")
    with Image.open(preview) as sheet:
        assert sheet.format == "PNG"
        assert sheet.width > 600


def test_cli_sets_variation_ranges(tmp_path):
    arguments = ["--num_identities=3", "--images_per_identity=1", "--seed=2", "--num_workers=1"]
    default = _run_cli(f"--output_dir={tmp_path / 'default'}", *arguments)
    brighter = _run_cli(
        f"--output_dir={tmp_path / 'brighter'}", *arguments, "--brightness_range=1.3,1.4", "--head_turn=0.3"
    )

    assert default.returncode == 0, default.stderr
    assert brighter.returncode == 0, brighter.stderr
    wild = os.path.join("Img", "img_celeba", "000001.jpg")
    labels = os.path.join("Anno", "list_attr_celeba.txt")
    default_files, brighter_files = _all_files(tmp_path / "default"), _all_files(tmp_path / "brighter")
    assert default_files[labels] == brighter_files[labels]
    with Image.open(tmp_path / "default" / wild) as dark, Image.open(tmp_path / "brighter" / wild) as bright:
        assert np.asarray(bright, np.float64).mean() > np.asarray(dark, np.float64).mean() + 10


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--brightness_range=1.4,1.3", "--brightness_range is (1.4, 1.3); it must be (low, high)"),
        ("--contrast_range=0.9", "--contrast_range is (0.9,); it must be (low, high)"),
        ("--colour_gain_range=a,b", "--colour_gain_range=a,b is invalid; expected two numbers"),
        ("--head_turn=0.9", "--head_turn is 0.9; it must lie in [0, 0.45]"),
    ],
)
def test_cli_rejects_bad_range(tmp_path, flag, message):
    result = _run_cli(f"--output_dir={tmp_path / 'out'}", "--num_identities=3", flag)

    assert result.returncode != 0
    assert message in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_cli_reports_bad_size(tmp_path):
    result = _run_cli(f"--output_dir={tmp_path / 'out'}", "--num_identities=2")

    assert result.returncode != 0
    assert "num_identities is 2" in result.stderr
    assert not os.path.exists(tmp_path / "out")
