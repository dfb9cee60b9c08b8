"""Tests for the CelebA reader (`load_celeba`) and the validate command."""

import logging
import os
import subprocess
import sys

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from lnet_anet_tf import attributes
from lnet_anet_tf.data import celeba

import data_helpers

NUM_IMAGES = 6


@pytest.fixture
def annotations():
    return data_helpers.make_annotations(NUM_IMAGES)


@pytest.fixture
def release_dir(tmp_path, annotations):
    return data_helpers.write_release(tmp_path / "celeba", annotations)


def anno(root, name):
    return os.path.join(root, "Anno", name)


def _write_attributes_only(root, annotations):
    os.makedirs(root)
    text = data_helpers.release_texts(annotations)["list_attr_celeba.txt"]
    path = os.path.join(root, "list_attr_celeba.txt")
    with open(path, "w") as file:
        file.write(text)
    return path


def assert_matches(table, annotations):
    """Assert that every part of `table` equals what `annotations` wrote."""
    assert table.image_names.tolist() == annotations.names
    assert table.attributes.dtype == np.uint8
    np.testing.assert_array_equal(table.attributes, annotations.attributes == 1)
    if table.boxes is not None:
        assert table.boxes.dtype == np.int32
        np.testing.assert_array_equal(table.boxes, annotations.boxes)
    if table.wild_landmarks is not None:
        np.testing.assert_array_equal(table.wild_landmarks, annotations.wild_landmarks)
    if table.aligned_landmarks is not None:
        assert table.aligned_landmarks.dtype == np.int32
        np.testing.assert_array_equal(table.aligned_landmarks, annotations.aligned_landmarks)
    if table.identities is not None:
        assert table.identities.dtype == np.int32
        np.testing.assert_array_equal(table.identities, annotations.identities)
    if table.partitions is not None:
        assert table.partitions.dtype == np.int8
        np.testing.assert_array_equal(table.partitions, annotations.partitions)


# ---------------------------------------------------------------------------
# Layouts.


@pytest.mark.parametrize("flat", [False, True], ids=["folders", "flat"])
def test_text_layouts_read_every_part(tmp_path, annotations, flat):
    root = data_helpers.write_release(tmp_path / "celeba", annotations, flat=flat)

    table = celeba.load_celeba(root)

    assert_matches(table, annotations)
    for part in ("boxes", "wild_landmarks", "aligned_landmarks", "identities", "partitions"):
        assert table.has(part)
    assert table.missing_parts == {}
    assert table.problems == []
    image_root = root if flat else os.path.join(root, "Img")
    assert table.wild_paths.tolist() == [
        os.path.join(image_root, "img_celeba", name) for name in annotations.names
    ]
    assert table.aligned_paths.tolist() == [
        os.path.join(image_root, "img_align_celeba", name) for name in annotations.names
    ]
    assert all(os.path.isabs(path) and os.path.isfile(path) for path in table.wild_paths)


def test_detect_layout_names_each_kind(tmp_path, annotations):
    release = data_helpers.write_release(tmp_path / "release", annotations)
    flat = data_helpers.write_release(tmp_path / "flat", annotations, flat=True)
    csv = data_helpers.write_csv_copy(tmp_path / "csv", annotations)

    assert celeba.detect_layout(release).kind == celeba.LAYOUT_RELEASE
    assert celeba.detect_layout(flat).kind == celeba.LAYOUT_FLAT
    assert celeba.detect_layout(csv).kind == celeba.LAYOUT_CSV


def test_csv_copy_reads_its_parts(tmp_path, annotations):
    root = data_helpers.write_csv_copy(tmp_path / "celeba", annotations)

    table = celeba.load_celeba(root)

    assert_matches(table, annotations)
    assert table.has("boxes")
    assert table.has("aligned_landmarks")
    assert table.has("partitions")
    nested = os.path.join(root, "img_align_celeba", "img_align_celeba")
    assert table.aligned_paths.tolist() == [
        os.path.join(nested, name) for name in annotations.names
    ]
    assert table.wild_paths is None
    assert table.identities is None
    assert table.wild_landmarks is None
    assert "identity_CelebA.csv or identity_CelebA.txt was not found in" in (
        table.missing_parts["identities"]
    )
    assert "img_celeba was not found in" in table.missing_parts["wild_paths"]


def test_csv_copy_accepts_identity_text_file(tmp_path, annotations):
    root = data_helpers.write_csv_copy(tmp_path / "celeba", annotations)
    identity_text = data_helpers.release_texts(annotations)["identity_CelebA.txt"]
    with open(os.path.join(root, "identity_CelebA.txt"), "w") as file:
        file.write(identity_text)

    table = celeba.load_celeba(root)

    np.testing.assert_array_equal(table.identities, annotations.identities)


def test_aligned_png_folder_gives_png_paths(tmp_path, annotations):
    root = data_helpers.write_release(tmp_path / "celeba", annotations, aligned_png=True)

    table = celeba.load_celeba(root)

    folder = os.path.join(root, "Img", "img_align_celeba_png")
    expected = [os.path.join(folder, name.replace(".jpg", ".png")) for name in annotations.names]
    assert table.aligned_paths.tolist() == expected
    assert table.image_names.tolist() == annotations.names


def test_partition_file_found_in_anno(release_dir, annotations):
    os.rename(
        os.path.join(release_dir, "Eval", "list_eval_partition.txt"),
        anno(release_dir, "list_eval_partition.txt"),
    )

    table = celeba.load_celeba(release_dir)

    np.testing.assert_array_equal(table.partitions, annotations.partitions)


def test_rows_in_other_order_are_matched(release_dir, annotations):
    # Reverse the rows of the identity file and the box file (keeping both headers).
    data_helpers.edit_lines(
        anno(release_dir, "identity_CelebA.txt"),
        lambda lines: [line for line in lines if line][::-1],
    )
    data_helpers.edit_lines(
        anno(release_dir, "list_bbox_celeba.txt"),
        lambda lines: lines[:2] + [line for line in lines[2:] if line][::-1],
    )

    table = celeba.load_celeba(release_dir)

    assert_matches(table, annotations)


def test_missing_box_file_says_why(release_dir):
    os.remove(anno(release_dir, "list_bbox_celeba.txt"))

    table = celeba.load_celeba(release_dir)

    assert table.boxes is None
    reason = table.missing_parts["boxes"]
    assert reason == (
        f"list_bbox_celeba.txt was not found in {os.path.join(release_dir, 'Anno')}, "
        "so localization evaluation is unavailable"
    )
    with pytest.raises(ValueError, match="localization evaluation is unavailable"):
        table.require("boxes", "Localization recall")


def test_missing_image_folders_say_why(release_dir, annotations):
    for folder in ("img_celeba", "img_align_celeba"):
        for name in annotations.names:
            os.remove(os.path.join(release_dir, "Img", folder, name))
        os.rmdir(os.path.join(release_dir, "Img", folder))

    table = celeba.load_celeba(release_dir)

    assert table.wild_paths is None
    assert table.aligned_paths is None
    assert "img_celeba was not found in" in table.missing_parts["wild_paths"]
    assert "img_align_celeba or img_align_celeba_png was not found in" in (
        table.missing_parts["aligned_paths"]
    )
    assert len(table) == NUM_IMAGES


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        celeba.load_celeba(str(tmp_path / "absent"))


def test_folder_without_attributes_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.csv"):
        celeba.load_celeba(str(tmp_path))


def test_unknown_on_bad_example_raises(release_dir):
    with pytest.raises(ValueError, match="'drop'"):
        celeba.load_celeba(release_dir, on_bad_example="drop")


# ---------------------------------------------------------------------------
# Tolerated variations of the format.


def _messy(text):
    # CRLF endings, a byte order mark, trailing spaces, runs of spaces and tabs
    # between values, and blank lines at the end.
    lines = [line.replace(" ", "  \t ") + "   " for line in text.split("\n")]
    return "\ufeff" + "\r\n".join(lines) + "\r\n\r\n  \r\n"


def _rewrite_all(root, transform):
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith((".txt", ".csv")):
                path = os.path.join(folder, name)
                with open(path, newline="", encoding="utf-8") as file:
                    text = file.read()
                with open(path, "w", newline="", encoding="utf-8") as file:
                    file.write(transform(text))


@pytest.mark.parametrize("layout", ["release", "csv"])
def test_crlf_bom_and_spaces_accepted(tmp_path, annotations, layout):
    if layout == "csv":
        root = data_helpers.write_csv_copy(tmp_path / "celeba", annotations)
    else:
        root = data_helpers.write_release(tmp_path / "celeba", annotations)
    _rewrite_all(root, _messy)

    table = celeba.load_celeba(root)

    assert_matches(table, annotations)
    assert table.problems == []


def test_zero_for_absent_attribute_warns(release_dir, annotations, caplog):
    path = anno(release_dir, "list_attr_celeba.txt")
    data_helpers.edit_lines(
        path, lambda lines: lines[:2] + [line.replace("-1", " 0") for line in lines[2:]]
    )

    with caplog.at_level(logging.WARNING):
        table = celeba.load_celeba(release_dir)

    assert_matches(table, annotations)
    assert len(table.warnings) == 1
    assert path in table.warnings[0]
    assert "0 instead of -1" in table.warnings[0]
    assert sum("0 instead of -1" in record.getMessage() for record in caplog.records) == 1


def test_images_not_checked_when_disabled(release_dir, annotations):
    os.remove(os.path.join(release_dir, "Img", "img_celeba", "000002.jpg"))

    table = celeba.load_celeba(release_dir, verify_images=False)

    assert table.image_names.tolist() == annotations.names


# ---------------------------------------------------------------------------
# Malformed files: each case edits one file of a good copy and names the file,
# line and value the error must report.


def _set_row(line_number, old, new, count=1):
    def edit(lines):
        lines = list(lines)
        assert old in lines[line_number - 1]
        lines[line_number - 1] = lines[line_number - 1].replace(old, new, count)
        return lines

    return edit


def _replace_value(line_number, column, new):
    def edit(lines):
        lines = list(lines)
        tokens = lines[line_number - 1].split()
        tokens[column + 1] = new
        lines[line_number - 1] = " ".join(tokens)
        return lines

    return edit


def _header_edit(transform):
    def edit(lines):
        return [lines[0], " ".join(transform(lines[1].split()))] + lines[2:]

    return edit


def _swap_bald_bangs(names):
    names = list(names)
    names[4], names[5] = names[5], names[4]
    return names


def _drop_row(line_number, fix_count):
    def edit(lines):
        lines = lines[: line_number - 1] + lines[line_number:]
        if fix_count:
            lines[0] = str(int(lines[0]) - 1)
        return lines

    return edit


def _add_row(row, fix_count):
    def edit(lines):
        lines = [line for line in lines if line] + [row, ""]
        if fix_count:
            lines[0] = str(int(lines[0]) + 1)
        return lines

    return edit


ATTR = "Anno/list_attr_celeba.txt"
BBOX = "Anno/list_bbox_celeba.txt"
LANDMARKS = "Anno/list_landmarks_celeba.txt"
IDENTITY = "Anno/identity_CelebA.txt"
PARTITION = "Eval/list_eval_partition.txt"

# (id, file, edit, line, value, words the message must contain)
MALFORMED_CASES = [
    ("count_too_high", ATTR, lambda lines: ["7"] + lines[1:], 1, "7", "gives 7 images"),
    ("count_not_number", ATTR, lambda lines: ["six"] + lines[1:], 1, "six", "number of images"),
    ("header_order", ATTR, _header_edit(_swap_bald_bangs), 2, "Bangs", "expected 'Bald'"),
    ("header_missing", ATTR, _header_edit(lambda names: names[:-1]), 2, "Young", "lacks"),
    ("header_extra", ATTR, _header_edit(lambda names: names + ["Hat"]), 2, "Hat", "extra"),
    ("header_typo", ATTR, _header_edit(lambda names: ["5_o_clock"] + names[1:]), 2,
     "5_o_clock", "expected '5_o_Clock_Shadow'"),
    ("bbox_header", BBOX, _header_edit(lambda names: ["image_id", "x", "y", "w", "h"]), 2,
     "x", "expected 'x_1'"),
    ("row_too_short", ATTR, lambda lines: lines[:4] + [lines[4][:-3]] + lines[5:], 5,
     None, "has 40 fields, expected 41"),
    ("row_too_long", LANDMARKS, _set_row(4, "000002.jpg", "000002.jpg 5"), 4, None,
     "has 12 fields, expected 11"),
    ("not_integer", ATTR, _replace_value(3, 7, "1.0"), 3, "1.0", "not an integer"),
    ("identity_not_integer", IDENTITY, _replace_value(2, 0, "abc"), 2, "abc",
     "not an integer"),
    ("attribute_two", ATTR, _replace_value(6, 20, "2"), 6, "2",
     "attribute Male of 000004.jpg is 2, expected 1 or -1"),
    ("zero_beside_minus_one", ATTR, _replace_value(3, 0, "0"), 3, "0", "expected 1 or -1"),
    ("duplicate_name", ATTR, _set_row(6, "000004.jpg", "000003.jpg"), 6, "000003.jpg",
     "first listed on line 5"),
    ("absolute_name", ATTR, _set_row(3, "000001.jpg", "/etc/passwd"), 3, "/etc/passwd",
     "absolute path"),
    ("parent_name", ATTR, _set_row(4, "000002.jpg", "../000002.jpg"), 4, "../000002.jpg",
     "contains '..'"),
    ("windows_absolute_name", ATTR, _set_row(3, "000001.jpg", "C:\\x.jpg"), 3, "C:\\x.jpg",
     "absolute path"),
    ("only_in_attributes", ATTR, None, 4, "000002.jpg", "list_bbox_celeba.txt"),
    ("only_in_boxes", BBOX, _add_row("000007.jpg 1 2 3 4", fix_count=True), 9, "000007.jpg",
     "list_attr_celeba.txt"),
    ("partition_three", PARTITION, _replace_value(2, 0, "3"), 2, "3", "expected 0 (train)"),
    ("partition_negative", PARTITION, _replace_value(5, 0, "-1"), 5, "-1", "expected 0"),
    ("box_zero_width", BBOX, _replace_value(4, 2, "0"), 4, "0", "width of 000002.jpg is 0"),
    ("box_negative_height", BBOX, _replace_value(8, 3, "-5"), 8, "-5",
     "height of 000006.jpg is -5"),
    ("landmark_overflow", LANDMARKS, _replace_value(3, 1, "99999999999"), 3, "99999999999",
     "32-bit"),
    ("landmark_huge", LANDMARKS, _replace_value(3, 1, "9" * 30), 3, "9" * 30, "32-bit"),
    ("lone_minus", ATTR, _replace_value(4, 3, "-"), 4, "-", "not an integer"),
    ("sign_inside", ATTR, _replace_value(4, 3, "1-1"), 4, "1-1", "not an integer"),
]


def _only_in_attributes(root):
    # The attribute file lists 000002.jpg, the box file does not.
    data_helpers.edit_lines(anno(root, "list_bbox_celeba.txt"), _drop_row(4, fix_count=True))


@pytest.mark.parametrize(
    "relative_path, edit, line, value, words",
    [case[1:] for case in MALFORMED_CASES],
    ids=[case[0] for case in MALFORMED_CASES],
)
def test_malformed_file_raises(release_dir, relative_path, edit, line, value, words):
    if edit is None:
        _only_in_attributes(release_dir)
    else:
        data_helpers.edit_lines(os.path.join(release_dir, relative_path), edit)

    with pytest.raises(celeba.CelebAFormatError) as raised:
        celeba.load_celeba(release_dir)

    error = raised.value
    message = str(error)
    assert error.path == os.path.join(release_dir, relative_path)
    assert os.path.basename(relative_path) in message
    assert error.line == line
    assert f"line {line}:" in message
    if value is not None:
        assert error.value == value
    # Messages quote names with repr(), which doubles backslashes.
    assert str(error.value) in message or repr(error.value) in message
    assert words in message
    assert isinstance(error, ValueError)


def _replace_csv_value(line_number, column, new):
    def edit(lines):
        lines = list(lines)
        fields = lines[line_number - 1].split(",")
        fields[column + 1] = new
        lines[line_number - 1] = ",".join(fields)
        return lines

    return edit


@pytest.mark.parametrize(
    "name, edit, line, value, words",
    [
        ("list_attr_celeba.csv", lambda lines: [lines[0][len("image_id,"):]] + lines[1:], 1,
         "5_o_Clock_Shadow", "must start with 'image_id'"),
        ("list_attr_celeba.csv", _replace_csv_value(3, 4, ""), 3, None, "empty field, field 6"),
        ("list_attr_celeba.csv", _replace_csv_value(4, 39, "1,"), 4, None, "empty field"),
        ("list_attr_celeba.csv", _replace_csv_value(4, 39, "1 1"), 4, None, "has 42 fields"),
        ("list_eval_partition.csv", _replace_csv_value(6, 0, "7"), 6, "7", "expected 0 (train)"),
        ("list_bbox_celeba.csv", _replace_csv_value(2, 3, "0"), 2, "0", "height"),
    ],
    ids=[
        "header_without_image_id",
        "empty_field",
        "trailing_comma",
        "space_separated_extra_value",
        "partition_seven",
        "box_zero_height",
    ],
)
def test_malformed_csv_raises(tmp_path, annotations, name, edit, line, value, words):
    root = data_helpers.write_csv_copy(tmp_path / "celeba", annotations)
    data_helpers.edit_lines(os.path.join(root, name), edit)

    with pytest.raises(celeba.CelebAFormatError) as raised:
        celeba.load_celeba(root)

    message = str(raised.value)
    assert name in message
    assert raised.value.line == line
    assert f"line {line}:" in message
    if value is not None:
        assert raised.value.value == value
    assert str(raised.value.value) in message
    assert words in message


def test_skip_drops_csv_rows_with_empty_fields(tmp_path, annotations):
    root = data_helpers.write_csv_copy(tmp_path / "celeba", annotations)
    data_helpers.edit_lines(
        os.path.join(root, "list_landmarks_align_celeba.csv"), _replace_csv_value(3, 0, "")
    )

    table = celeba.load_celeba(root, on_bad_example="skip")

    assert "000002.jpg" not in table.image_names.tolist()
    assert table.skipped_rows == {"empty field": 1}
    np.testing.assert_array_equal(
        table.aligned_landmarks, np.delete(annotations.aligned_landmarks, 1, axis=0)
    )


def test_invalid_utf8_names_line(release_dir):
    path = anno(release_dir, "list_attr_celeba.txt")
    with open(path, "rb") as file:
        data = file.read().split(b"\n")
    data[4] = data[4].replace(b"000003", b"0000\xff3")
    with open(path, "wb") as file:
        file.write(b"\n".join(data))

    with pytest.raises(celeba.CelebAFormatError) as raised:
        celeba.load_celeba(release_dir)

    assert raised.value.line == 5
    assert raised.value.value == b"\xff"
    assert "list_attr_celeba.txt, line 5:" in str(raised.value)
    assert "not valid UTF-8" in str(raised.value)


def test_missing_images_counted_and_named(release_dir):
    for name in ("000002.jpg", "000005.jpg"):
        os.remove(os.path.join(release_dir, "Img", "img_celeba", name))

    with pytest.raises(celeba.CelebAFormatError) as raised:
        celeba.load_celeba(release_dir)

    message = str(raised.value)
    assert raised.value.path == anno(release_dir, "list_attr_celeba.txt")
    assert raised.value.line == 4
    assert raised.value.value == "000002.jpg"
    assert "2 images listed in this file are missing from" in message
    assert os.path.join(release_dir, "Img", "img_celeba") in message
    assert "000002.jpg (line 4), 000005.jpg (line 7)" in message


def test_missing_png_image_named(tmp_path, annotations):
    root = data_helpers.write_release(tmp_path / "celeba", annotations, aligned_png=True)
    os.remove(os.path.join(root, "Img", "img_align_celeba_png", "000003.png"))

    with pytest.raises(celeba.CelebAFormatError, match=r"000003\.png \(line 5\)"):
        celeba.load_celeba(root)


def test_attribute_file_without_rows_raises(tmp_path, annotations):
    root = str(tmp_path / "celeba")
    path = _write_attributes_only(root, annotations)
    data_helpers.edit_lines(path, lambda lines: ["0", lines[1]])

    with pytest.raises(celeba.CelebAFormatError, match="the file lists 0 rows"):
        celeba.load_celeba(root)


def test_empty_attribute_file_raises(release_dir):
    data_helpers.edit_lines(anno(release_dir, "list_attr_celeba.txt"), lambda lines: lines[:1])

    with pytest.raises(celeba.CelebAFormatError, match="header must be"):
        celeba.load_celeba(release_dir)


# ---------------------------------------------------------------------------
# on_bad_example="skip".


def test_skip_counts_each_reason(release_dir, annotations, caplog):
    data_helpers.edit_lines(anno(release_dir, "list_attr_celeba.txt"), _replace_value(3, 0, "5"))
    data_helpers.edit_lines(anno(release_dir, "list_bbox_celeba.txt"), _replace_value(4, 2, "0"))
    data_helpers.edit_lines(
        os.path.join(release_dir, "Eval", "list_eval_partition.txt"), _replace_value(3, 0, "9")
    )
    data_helpers.edit_lines(
        anno(release_dir, "identity_CelebA.txt"), _set_row(4, "000004.jpg 2", "000004.jpg")
    )
    os.remove(os.path.join(release_dir, "Img", "img_align_celeba", "000005.jpg"))

    with caplog.at_level(logging.WARNING):
        table = celeba.load_celeba(release_dir, on_bad_example="skip")

    assert table.image_names.tolist() == ["000006.jpg"]
    assert table.skipped_rows == {
        "invalid attribute value": 1,
        "non-positive box size": 1,
        "invalid partition": 1,
        "wrong number of fields": 1,
        "image missing": 1,
    }
    assert len(table.problems) == 5
    assert any("list_bbox_celeba.txt, line 4:" in message for message in table.problems)
    np.testing.assert_array_equal(table.boxes, annotations.boxes[5:])
    np.testing.assert_array_equal(table.identities, annotations.identities[5:])
    summaries = [r.getMessage() for r in caplog.records if "Skipped 5 of 6 rows" in r.getMessage()]
    assert len(summaries) == 1
    assert "invalid partition (1 row)" in summaries[0]
    assert f"The first: {table.problems[0]}" in summaries[0]


def test_skip_keeps_first_of_duplicates(release_dir, annotations):
    data_helpers.edit_lines(
        anno(release_dir, "list_attr_celeba.txt"), _add_row("000003.jpg" + " 1" * 40, True)
    )

    table = celeba.load_celeba(release_dir, on_bad_example="skip")

    assert table.image_names.tolist() == annotations.names
    np.testing.assert_array_equal(table.attributes, annotations.attributes == 1)
    assert table.skipped_rows == {"duplicate image name": 1}


def test_skip_reports_count_line_without_dropping(release_dir, annotations):
    data_helpers.edit_lines(anno(release_dir, "list_attr_celeba.txt"), lambda l: ["9"] + l[1:])

    table = celeba.load_celeba(release_dir, on_bad_example="skip")

    assert table.image_names.tolist() == annotations.names
    assert table.skipped_rows == {}
    assert len(table.problems) == 1
    assert "the count line gives 9 images but the file lists 6" in table.problems[0]


def test_skip_reports_a_name_once(release_dir, annotations):
    # 000002.jpg is missing from two files; only the first is reported.
    data_helpers.edit_lines(anno(release_dir, "list_bbox_celeba.txt"), _drop_row(4, True))
    data_helpers.edit_lines(anno(release_dir, "identity_CelebA.txt"), _drop_row(2, False))

    table = celeba.load_celeba(release_dir, on_bad_example="skip")

    assert "000002.jpg" not in table.image_names.tolist()
    assert len(table) == NUM_IMAGES - 1
    assert table.skipped_rows == {"image listed in only one file": 1}


def test_skip_still_raises_on_bad_header(release_dir):
    data_helpers.edit_lines(
        anno(release_dir, "list_attr_celeba.txt"), _header_edit(_swap_bald_bangs)
    )

    with pytest.raises(celeba.CelebAFormatError, match="line 2"):
        celeba.load_celeba(release_dir, on_bad_example="skip")


def test_skip_raises_when_no_row_is_left(release_dir):
    data_helpers.edit_lines(
        anno(release_dir, "list_attr_celeba.txt"),
        lambda lines: lines[:2] + [line.replace("-1", "3") for line in lines[2:]],
    )

    with pytest.raises(celeba.CelebAFormatError, match="no usable image"):
        celeba.load_celeba(release_dir, on_bad_example="skip")


def test_skip_caps_messages_per_reason(tmp_path):
    annotations = data_helpers.make_annotations(30)
    root = data_helpers.write_release(tmp_path / "celeba", annotations)
    data_helpers.edit_lines(
        os.path.join(root, "Eval", "list_eval_partition.txt"),
        lambda lines: [line.replace(" 2", " 4") for line in lines],
    )

    table = celeba.load_celeba(root, on_bad_example="skip")

    dropped = int(np.sum(annotations.partitions == 2))
    assert dropped > 10
    assert table.skipped_rows == {"invalid partition": dropped}
    assert len(table.problems) == 10
    assert len(table) == 30 - dropped


# ---------------------------------------------------------------------------
# The fast parser and the row-by-row parser agree.


def test_fast_parser_handles_release_rows(annotations):
    lines = data_helpers.release_texts(annotations)["list_attr_celeba.txt"].split("\n")
    lines = [line + "\r" for line in lines]
    indices = list(range(2, 2 + NUM_IMAGES))

    parsed = celeba._parse_rows_quickly(lines, indices, attributes.NUM_ATTRIBUTES)

    assert parsed is not None
    names, values, line_numbers = parsed
    assert names.tolist() == annotations.names
    np.testing.assert_array_equal(values, annotations.attributes)
    assert line_numbers.tolist() == list(range(3, 3 + NUM_IMAGES))


def test_bad_rows_in_large_file_skipped(tmp_path):
    # Enough rows for several parsing blocks, with bad rows in the first and third.
    annotations = data_helpers.make_annotations(5000)
    root = str(tmp_path / "celeba")
    path = _write_attributes_only(root, annotations)
    data_helpers.edit_lines(path, _replace_value(12, 5, "x"))
    data_helpers.edit_lines(path, _replace_value(4502, 5, "3"))

    table = celeba.load_celeba(root, on_bad_example="skip")

    keep = np.ones(5000, dtype=bool)
    keep[[9, 4499]] = False
    assert table.image_names.tolist() == np.array(annotations.names)[keep].tolist()
    np.testing.assert_array_equal(table.attributes, annotations.attributes[keep] == 1)
    assert table.skipped_rows == {"not an integer": 1, "invalid attribute value": 1}


def test_large_file_error_names_first_bad_line(tmp_path):
    annotations = data_helpers.make_annotations(5000)
    root = str(tmp_path / "celeba")
    path = _write_attributes_only(root, annotations)
    data_helpers.edit_lines(path, _replace_value(4502, 5, "y"))
    data_helpers.edit_lines(path, _replace_value(4800, 5, "z"))

    with pytest.raises(celeba.CelebAFormatError) as raised:
        celeba.load_celeba(root)

    assert raised.value.line == 4502
    assert raised.value.value == "y"


def test_fast_parser_rejects_shifted_rows():
    # Three values and one value make the right total for two rows of two.
    lines = ["a.jpg 1 2 3", "b.jpg 4"]

    assert celeba._parse_rows_quickly(lines, [0, 1], 2) is None


_TOKENS = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(["-", "+", "1-1", "--1", "+7", "1.0", "x", "0x1", "\u0663", "-0", "007"]),
)
_ROW = st.tuples(
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["a.jpg", "b.jpg", "c\xa0d.jpg"]),
    st.lists(_TOKENS, min_size=0, max_size=4),
    st.sampled_from([" ", "  ", "\t", " \t "]),
    st.sampled_from(["", "\r", "  "]),
)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(_ROW, min_size=1, max_size=5), num_values=st.integers(1, 3))
def test_fast_parser_agrees_with_slow(rows, num_values):
    lines = [start + sep.join([name] + tokens) + end for start, name, tokens, sep, end in rows]
    indices = list(range(len(lines)))

    fast = celeba._parse_rows_quickly(lines, indices, num_values)
    problems = celeba._ProblemLog("skip")
    slow = celeba._parse_rows_slowly("rows.txt", lines, indices, num_values, problems)

    if fast is not None:
        assert sum(problems.reasons.values()) == 0
        for fast_part, slow_part in zip(fast, slow):
            np.testing.assert_array_equal(fast_part, slow_part)


# ---------------------------------------------------------------------------
# The validate command, run as a user would.


def run_validate(*args):
    return subprocess.run(
        [sys.executable, "-m", "lnet_anet_tf.data.validate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_good_copy(release_dir):
    result = run_validate(f"--data_dir={release_dir}")

    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "Layout: release" in output
    assert "present  " + anno(release_dir, "list_bbox_celeba.txt") in output
    assert "  train             2" in output
    assert "  validation        2" in output
    assert "Identities: 3" in output
    assert "No identity appears in more than one partition." in output
    for name in attributes.ATTRIBUTE_NAMES:
        assert f"\n  {name} " in output
    assert "Problems: none" in output


def test_validate_lists_missing_parts(tmp_path, annotations):
    root = data_helpers.write_csv_copy(tmp_path / "celeba", annotations)

    result = run_validate(f"--data_dir={root}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Layout: csv" in result.stdout
    assert "identities             missing  identity_CelebA.csv or" in result.stdout
    assert "Identities: unavailable" in result.stdout


def test_validate_reports_shared_identities(release_dir):
    data_helpers.edit_lines(
        anno(release_dir, "identity_CelebA.txt"), _set_row(6, "000006.jpg 3", "000006.jpg 1")
    )

    result = run_validate(f"--data_dir={release_dir}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Partitions share identities: train and test share 1." in result.stdout


def test_validate_bad_copy_fails_in_error_mode(release_dir):
    data_helpers.edit_lines(anno(release_dir, "list_attr_celeba.txt"), _replace_value(5, 3, "2"))
    os.remove(os.path.join(release_dir, "Img", "img_celeba", "000006.jpg"))

    result = run_validate(f"--data_dir={release_dir}")

    assert result.returncode == 1
    assert "list_attr_celeba.txt, line 5: attribute Bags_Under_Eyes of 000003.jpg is 2" in (
        result.stdout
    )
    assert "1 images listed in this file are missing" in result.stdout
    assert "reading with --on_bad_example=error fails" in result.stdout
    assert "read with --on_bad_example=skip." in result.stdout


def test_validate_bad_copy_passes_in_skip_mode(release_dir):
    data_helpers.edit_lines(anno(release_dir, "list_attr_celeba.txt"), _replace_value(5, 3, "2"))

    result = run_validate(f"--data_dir={release_dir}", "--on_bad_example=skip")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Rows with problems: 1 (invalid attribute value: 1)" in result.stdout
    assert "Images: 5" in result.stdout


def test_validate_fatal_problem_fails(release_dir):
    data_helpers.edit_lines(anno(release_dir, "list_attr_celeba.txt"), lambda l: ["x"] + l[1:])

    result = run_validate(f"--data_dir={release_dir}", "--on_bad_example=skip")

    assert result.returncode == 1
    assert "Error: " in result.stdout
    assert "list_attr_celeba.txt, line 1:" in result.stdout


def test_validate_missing_folder_fails(tmp_path):
    result = run_validate(f"--data_dir={tmp_path / 'absent'}")

    assert result.returncode == 1
    assert "does not exist" in result.stdout


# ---------------------------------------------------------------------------
# Round trip: the synthetic dataset generator writes, the reader reads.


def test_synthetic_dataset_round_trip(tmp_path):
    from lnet_anet_tf.data.synthetic import render
    from lnet_anet_tf.data.synthetic import writer

    size_range = (96, 96)
    root = writer.generate_celeba(
        str(tmp_path / "synthetic"),
        num_identities=3,
        images_per_identity=2,
        seed=7,
        num_workers=1,
        image_size_range=size_range,
    )

    table = celeba.load_celeba(root)

    plan = writer.plan_images(3, 2, 7)
    assert table.missing_parts == {}
    assert table.problems == []
    assert table.image_names.tolist() == [name for name, _, _, _ in plan]
    assert table.identities.tolist() == [identity for _, identity, _, _ in plan]
    assert table.partitions.tolist() == [partition for _, _, _, partition in plan]
    for row, (name, identity, image, _) in enumerate(plan):
        example = render.render_example(7, identity, image, size_range)
        np.testing.assert_array_equal(table.attributes[row], example.labels == 1)
        assert tuple(table.boxes[row]) == tuple(example.box)
        np.testing.assert_array_equal(table.wild_landmarks[row], example.wild_landmarks)
        np.testing.assert_array_equal(table.aligned_landmarks[row], example.aligned_landmarks)
        assert table.wild_paths[row] == os.path.join(root, "Img", "img_celeba", name)
