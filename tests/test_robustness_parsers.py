"""Robustness of the CelebA annotation parsers against arbitrary and near-valid files.

Each property writes one annotation file of a valid tiny copy (release text layout
or CSV layout) and reads the copy with `load_celeba`. The read must either return a
table whose untouched columns equal the valid copy's, or raise `CelebAFormatError`
that names a file and a line. Any other exception, or a read that runs longer
than `_READ_TIMEOUT_S`, fails the test.

The memory tests write an annotation file whose data is one 50 MB line and
measure the peak RSS of a separate process that reads it (`robustness_parse_rss.py`,
which also prints the table of every case).
"""

import contextlib
import os
import re
import signal

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from lnet_anet_tf.data import celeba

import data_helpers
import robustness_parse_rss

NUM_IMAGES = 6
# A tiny copy reads in about 1 ms, so a read this long means a hang.
_READ_TIMEOUT_S = 20
# Examples per annotation file and property; 10 files and 2 properties take about
# 20 s on 2 cores.
_EXAMPLES = 80
_SETTINGS = settings(
    max_examples=_EXAMPLES,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# (layout, annotation file relative to the copy's root, part name on CelebATable).
ANNOTATION_FILES = [
    ("release", "Anno/list_attr_celeba.txt", "attributes"),
    ("release", "Anno/list_bbox_celeba.txt", "boxes"),
    ("release", "Anno/list_landmarks_celeba.txt", "wild_landmarks"),
    ("release", "Anno/list_landmarks_align_celeba.txt", "aligned_landmarks"),
    ("release", "Anno/identity_CelebA.txt", "identities"),
    ("release", "Eval/list_eval_partition.txt", "partitions"),
    ("csv", "list_attr_celeba.csv", "attributes"),
    ("csv", "list_bbox_celeba.csv", "boxes"),
    ("csv", "list_landmarks_align_celeba.csv", "aligned_landmarks"),
    ("csv", "list_eval_partition.csv", "partitions"),
]
_FILE_IDS = [relative for _, relative, _ in ANNOTATION_FILES]
_PARTS = ("boxes", "wild_landmarks", "aligned_landmarks", "identities", "partitions")


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Write one valid copy per layout; return layout -> (root, table read from it)."""
    annotations = data_helpers.make_annotations(NUM_IMAGES)
    root = tmp_path_factory.mktemp("copies")
    release = data_helpers.write_release(root / "release", annotations)
    csv_copy = data_helpers.write_csv_copy(root / "csv", annotations)
    return _Copies(
        release=(release, celeba.load_celeba(release)),
        csv=(csv_copy, celeba.load_celeba(csv_copy)),
    )


class _Copies(dict):
    """Layout -> (root, table), with a short repr for Hypothesis's failure reports."""

    def __repr__(self):
        return f"copies({', '.join(f'{layout}={root}' for layout, (root, _) in self.items())})"


class _ReadTimeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    """Raise `_ReadTimeout` in the main thread after `seconds`, so a hang fails the test."""

    def on_alarm(signum, frame):
        raise _ReadTimeout(f"load_celeba ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _replaced(path: str, contents: bytes):
    """Write `contents` to `path` for the duration of the block, then restore the file."""
    with open(path, "rb") as file:
        original = file.read()
    with open(path, "wb") as file:
        file.write(contents)
    try:
        yield
    finally:
        with open(path, "wb") as file:
            file.write(original)


def _check_read(root: str, relative: str, valid_table, on_bad_example: str) -> None:
    """Read the copy and check the outcome against the parser's contract."""
    target = os.path.join(root, relative)
    try:
        with _time_limit(_READ_TIMEOUT_S):
            table = celeba.load_celeba(root, on_bad_example=on_bad_example)
    except celeba.CelebAFormatError as error:
        _check_error(error, root, target)
        return
    _check_table(table, valid_table, target)


def _check_error(error: celeba.CelebAFormatError, root: str, target: str) -> None:
    message = str(error)
    # The error may sit in another file (the attribute file that lists an image
    # the damaged file lacks); its message then names the damaged file.
    assert error.path == target or target in message, message[:500]
    assert os.path.commonpath([error.path, root]) == root, error.path
    if "the file lists 0 rows" in message:
        # An attribute file without rows, so there is no line to name.
        assert error.path.startswith(os.path.join(root, "list_attr_celeba")) or error.path.startswith(
            os.path.join(root, "Anno", "list_attr_celeba")
        ), message[:500]
        return
    assert re.search(r", line [0-9]+", message), message[:500]
    # Quoted file contents are shortened, so a damaged file cannot make a huge message.
    assert len(message) < 4000, f"message of {len(message)} characters: {message[:500]}"


def _check_table(table, valid_table, target: str) -> None:
    valid_rows = {name: row for row, name in enumerate(valid_table.image_names.tolist())}
    names = table.image_names.tolist()
    assert names, "load_celeba returned an empty table instead of raising"
    assert set(names) <= set(valid_rows), names
    rows = [valid_rows[name] for name in names]
    for paths in ("wild_paths", "aligned_paths"):
        if valid_table.has(paths):
            np.testing.assert_array_equal(getattr(table, paths), getattr(valid_table, paths)[rows])

    # Only the damaged file's column may differ from the valid copy.
    damaged_part = next(part for _, relative, part in ANNOTATION_FILES if target.endswith(relative))
    for part in ("attributes",) + _PARTS:
        if part == damaged_part or not valid_table.has(part):
            continue
        np.testing.assert_array_equal(getattr(table, part), getattr(valid_table, part)[rows], part)


# ---------------------------------------------------------------------------
# Mutations of a valid file.

_SPECIAL_TOKENS = [
    b"", b"-", b"+", b"--1", b"1-1", b"+1", b"-0", b"0", b"2", b"-2", b"3",
    b"1e3", b"0x1F", b"1.0", b"nan", b"inf", b"'1'", b'"1"', b"1,", b",",
    b"..", b"../000001.jpg", b"/etc/passwd", b"C:\\x.jpg", b"./000001.jpg",
    b"\x00", b"1\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\x80",
    "\u0661".encode(),  # ARABIC-INDIC DIGIT ONE, which int() accepts
    "\uff11".encode(),  # FULLWIDTH DIGIT ONE
    "\u2028".encode(), "\x1c".encode(), "\x85".encode(), "\u00a0".encode(),
    b"\r", b"\t", b"\x0b", b"\x0c",
    b"2147483647", b"2147483648", b"-2147483649", b"9223372036854775807",
    b"9223372036854775808", b"-9223372036854775809", b"-9223372036854775807",
]

_token = st.one_of(
    st.sampled_from(_SPECIAL_TOKENS),
    st.text(max_size=10).map(lambda text: text.encode("utf-8")),
    st.binary(max_size=6),
    st.integers(-(10**30), 10**30).map(lambda value: str(value).encode()),
    # Longer than the 4300 digits that Python 3.11's int() converts by default.
    st.tuples(st.sampled_from(["", "-", "+"]), st.integers(1, 6000)).map(
        lambda sign_length: (sign_length[0] + "9" * sign_length[1]).encode()
    ),
)

_index = st.integers(0, 1000)
_mutation = st.one_of(
    st.tuples(st.just("drop_column"), _index, _index),
    st.tuples(st.just("duplicate_column"), _index, _index),
    st.tuples(st.just("insert_token"), _index, _index, _token),
    st.tuples(st.just("replace_token"), _index, _index, _token),
    st.tuples(st.just("insert_bytes"), _index, _index, _token),
    st.tuples(st.just("drop_line"), _index),
    st.tuples(st.just("duplicate_line"), _index),
    st.tuples(st.just("swap_lines"), _index, _index),
    st.tuples(st.just("line_endings"), st.sampled_from([b"\r", b"\r\n", b"\n\n", b"\x85"])),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("prefix"), st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"\n"])),
)


def _mutate(contents: bytes, mutations, separator: bytes) -> bytes:
    """Apply `mutations` (tuples drawn from `_mutation`) to a file's bytes, in order."""
    lines = contents.split(b"\n")
    for kind, *arguments in mutations:
        if not lines:
            lines = [b""]
        if kind == "line_endings":
            lines = b"\n".join(lines).replace(b"\n", arguments[0]).split(b"\n")
        elif kind == "truncate":
            data = b"\n".join(lines)
            lines = data[: arguments[0] % (len(data) + 1)].split(b"\n")
        elif kind == "prefix":
            lines[0] = arguments[0] + lines[0]
        elif kind in ("drop_line", "duplicate_line"):
            row = arguments[0] % len(lines)
            lines[row : row + 1] = [] if kind == "drop_line" else [lines[row]] * 2
        elif kind == "swap_lines":
            first, second = arguments[0] % len(lines), arguments[1] % len(lines)
            lines[first], lines[second] = lines[second], lines[first]
        else:
            row = arguments[0] % len(lines)
            lines[row] = _mutate_line(lines[row], kind, arguments[1:], separator)
    return b"\n".join(lines)


def _mutate_line(line: bytes, kind: str, arguments, separator: bytes) -> bytes:
    if kind == "insert_bytes":
        position, payload = arguments
        position %= len(line) + 1
        return line[:position] + payload + line[position:]

    tokens = line.split(separator) if separator else line.split()
    join = separator or b" "
    column = arguments[0] % (len(tokens) + 1)
    if kind == "insert_token":
        tokens.insert(column, arguments[1])
    elif tokens:
        column %= len(tokens)
        if kind == "drop_column":
            del tokens[column]
        elif kind == "duplicate_column":
            tokens.insert(column, tokens[column])
        elif kind == "replace_token":
            tokens[column] = arguments[1]
    return join.join(tokens)


@pytest.mark.parametrize("layout, relative, part", ANNOTATION_FILES, ids=_FILE_IDS)
@_SETTINGS
@given(contents=st.binary(max_size=3000), on_bad_example=st.sampled_from(["error", "skip"]))
def test_random_bytes_parse_or_raise(copies, layout, relative, part, contents, on_bad_example):
    root, valid_table = copies[layout]

    with _replaced(os.path.join(root, relative), contents):
        _check_read(root, relative, valid_table, on_bad_example)


@pytest.mark.parametrize("layout, relative, part", ANNOTATION_FILES, ids=_FILE_IDS)
@_SETTINGS
@given(
    mutations=st.lists(_mutation, min_size=1, max_size=4),
    on_bad_example=st.sampled_from(["error", "skip"]),
)
def test_mutated_files_parse_or_raise(
    copies, layout, relative, part, mutations, on_bad_example
):
    root, valid_table = copies[layout]
    path = os.path.join(root, relative)
    with open(path, "rb") as file:
        valid_contents = file.read()
    separator = b"," if layout == "csv" else b""

    contents = _mutate(valid_contents, mutations, separator)

    with _replaced(path, contents):
        _check_read(root, relative, valid_table, on_bad_example)


# ---------------------------------------------------------------------------
# Fixed cases that the properties found or that they reach only rarely.


def _read_with(copies, layout: str, relative: str, contents: bytes, on_bad_example="error"):
    root, _ = copies[layout]
    with _replaced(os.path.join(root, relative), contents):
        return celeba.load_celeba(root, on_bad_example=on_bad_example)


def test_count_line_longer_than_int_limit(copies):
    root, _ = copies["release"]
    relative = "Anno/list_attr_celeba.txt"
    with open(os.path.join(root, relative), "rb") as file:
        lines = file.read().split(b"\n")
    lines[0] = b"9" * 5000

    with pytest.raises(celeba.CelebAFormatError, match="the count line gives 99999") as raised:
        _read_with(copies, "release", relative, b"\n".join(lines))

    assert raised.value.line == 1
    assert len(str(raised.value)) < 1000


@pytest.mark.parametrize("on_bad_example", ["error", "skip"])
def test_value_longer_than_int_limit(copies, on_bad_example):
    root, _ = copies["release"]
    relative = "Eval/list_eval_partition.txt"
    with open(os.path.join(root, relative), "rb") as file:
        lines = file.read().split(b"\n")
    # The second damaged row sends the block to the row-by-row parser.
    lines[0] = lines[0].split()[0] + b" " + b"7" * 5000
    lines[1] = lines[1] + b" extra"
    contents = b"\n".join(lines)

    if on_bad_example == "error":
        # Row errors are raised as the rows are parsed, before range checks.
        with pytest.raises(celeba.CelebAFormatError, match="has 3 fields") as raised:
            _read_with(copies, "release", relative, contents)
        assert raised.value.line == 2
    else:
        table = _read_with(copies, "release", relative, contents, on_bad_example)
        assert table.skipped_rows["value out of range"] == 1
        assert table.skipped_rows["wrong number of fields"] == 1


def test_cr_only_line_endings_rejected_at_line_one(copies):
    root, _ = copies["release"]
    relative = "Anno/list_bbox_celeba.txt"
    with open(os.path.join(root, relative), "rb") as file:
        contents = file.read().replace(b"\n", b"\r")

    with pytest.raises(celeba.CelebAFormatError, match="first line must be the number") as raised:
        _read_with(copies, "release", relative, contents)

    assert raised.value.line == 1


def test_crlf_line_endings_read(copies):
    root, valid_table = copies["csv"]
    relative = "list_bbox_celeba.csv"
    with open(os.path.join(root, relative), "rb") as file:
        contents = file.read().replace(b"\n", b"\r\n")

    table = _read_with(copies, "csv", relative, contents)

    np.testing.assert_array_equal(table.boxes, valid_table.boxes)


def test_skip_without_rows_names_problem(copies):
    root, _ = copies["release"]
    relative = "Eval/list_eval_partition.txt"
    target = os.path.join(root, relative)

    with pytest.raises(celeba.CelebAFormatError, match="no usable image") as raised:
        _read_with(copies, "release", relative, b"\x00" * 10, on_bad_example="skip")

    assert target in str(raised.value)
    assert f"{target}, line 1" in str(raised.value)


# ---------------------------------------------------------------------------
# Memory on a 50 MB file that is one line.

# Peak RSS growth allowed while reading a file with a huge line, as a multiple of
# the file size. The reader keeps the bytes, the decoded text and its lines (three
# copies), and the row parser makes a few more transient copies of a long row.
_RSS_GROWTH_PER_FILE_BYTE = 10


def _check_huge_line_read(tmp_path, shape: str, relative: str) -> None:
    measured = robustness_parse_rss.measure(robustness_parse_rss.write_copy(str(tmp_path), relative, shape))

    assert measured["outcome"] == "CelebAFormatError", measured
    assert measured["message_length"] < 4000, measured
    bound = _RSS_GROWTH_PER_FILE_BYTE * robustness_parse_rss.HUGE_LINE_BYTES
    assert measured["rss_growth_bytes"] < bound, measured


@pytest.mark.parametrize(
    "shape, relative",
    [("letters", "Anno/list_attr_celeba.txt"), ("words", "Eval/list_eval_partition.txt")],
)
def test_huge_line_memory_bounded(tmp_path, shape, relative):
    _check_huge_line_read(tmp_path, shape, relative)


@pytest.mark.slow
@pytest.mark.parametrize("shape", robustness_parse_rss.SHAPES)
@pytest.mark.parametrize("relative", robustness_parse_rss.FILES)
def test_huge_line_memory_every_shape(tmp_path, shape, relative):
    _check_huge_line_read(tmp_path, shape, relative)
