"""Read a CelebA copy from disk into a validated `CelebATable`.

Supported layouts, detected from the files present:

- `release`: the release's text files in `Anno/` and `Eval/`, images in `Img/`;
- `flat`: the same text files and image folders, all in one folder;
- `csv`: the re-packaged copy with `list_attr_celeba.csv` and friends, and aligned
  images in `img_align_celeba/img_align_celeba/`.

Text files either start with a count line and a header line (attributes, boxes,
landmarks) or have no header (identities, partitions). Rows are an image name and
integers, separated by runs of whitespace; CSV rows are separated by commas.

Every check names the file, the line and the value. With on_bad_example="error" the
first problem raises `CelebAFormatError`; with "skip" the bad rows are dropped and
counted on the table instead. A file-level problem (an unreadable header, a file that
is not UTF-8) raises in both modes, because no row of that file can be trusted.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Optional

from absl import logging
import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf.data.table import CelebATable

LAYOUT_RELEASE = "release"
LAYOUT_FLAT = "flat"
LAYOUT_CSV = "csv"
LAYOUT_DESCRIPTIONS = {
    LAYOUT_RELEASE: "text files in Img/, Anno/ and Eval/ folders",
    LAYOUT_FLAT: "text files and image folders in one folder",
    LAYOUT_CSV: "CSV files of the re-packaged copy",
}
ON_BAD_EXAMPLE_CHOICES = ("error", "skip")

# Base name of each part's annotation file, and the columns after the image name.
PART_FILES = {
    "attributes": "list_attr_celeba",
    "boxes": "list_bbox_celeba",
    "wild_landmarks": "list_landmarks_celeba",
    "aligned_landmarks": "list_landmarks_align_celeba",
    "identities": "identity_CelebA",
    "partitions": "list_eval_partition",
}
_PART_COLUMNS = {
    "attributes": attributes.ATTRIBUTE_NAMES,
    "boxes": attributes.BOX_COLUMNS,
    "wild_landmarks": attributes.LANDMARK_COLUMNS,
    "aligned_landmarks": attributes.LANDMARK_COLUMNS,
    "identities": ("identity",),
    "partitions": ("partition",),
}
# Text files that start with a count line and a header line.
_COUNTED_PARTS = ("attributes", "boxes", "wild_landmarks", "aligned_landmarks")
# The consequence of each missing part, which ends its sentence in `missing_parts`.
_PART_USES = {
    "boxes": "localization evaluation is unavailable",
    "wild_landmarks": "in-the-wild landmarks are unavailable",
    "aligned_landmarks": "aligned landmarks are unavailable",
    "identities": "identity pre-training of ANet and identity checks are unavailable",
    "partitions": "the train, validation and test partitions are unavailable",
    "wild_paths": "LNet training and localization on in-the-wild images are unavailable",
    "aligned_paths": "aligned images are unavailable",
}

# Recorded messages per problem reason under on_bad_example="skip"; the rest are counted.
_MESSAGES_PER_REASON = 10
# Missing image names quoted in one error message.
_MISSING_IMAGE_EXAMPLES = 5
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
_BYTE_ORDER_MARK = b"\xef\xbb\xbf"
_SKIP_HINT = "Correct the row, or drop it with on_bad_example='skip' (flag --on_bad_example=skip)."


class CelebAFormatError(ValueError):
    """A CelebA file breaks the format; `path`, `line` and `value` locate the problem."""

    def __init__(self, message: str, path: str, line: Optional[int] = None, value=None):
        location = path if line is None else f"{path}, line {line}"
        super().__init__(f"{location}: {message}")
        self.path = path
        self.line = line
        self.value = value


# ---------------------------------------------------------------------------
# Layout detection.


@dataclasses.dataclass(frozen=True)
class CelebALayout:
    """Locations of the files of one CelebA copy. All paths are absolute."""

    kind: str  # LAYOUT_RELEASE, LAYOUT_FLAT or LAYOUT_CSV.
    data_dir: str
    # Part name ("attributes", "boxes", ...) -> annotation file; absent parts are left out.
    annotation_files: dict
    wild_image_dir: Optional[str]
    aligned_image_dir: Optional[str]
    # Extension of the aligned image files: ".jpg", or ".png" in img_align_celeba_png/.
    aligned_extension: str
    # Part name -> a sentence saying why the part is absent.
    missing_parts: dict


def detect_layout(data_dir: str) -> CelebALayout:
    """Detect the layout of the CelebA copy in `data_dir` and locate its files.

    Raises FileNotFoundError when `data_dir` or its attribute file does not exist.
    """
    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"CelebA folder {data_dir} does not exist or is not a folder. Pass the folder "
            "that contains Anno/, list_attr_celeba.txt or list_attr_celeba.csv."
        )

    attribute_files = {
        LAYOUT_RELEASE: os.path.join(data_dir, "Anno", "list_attr_celeba.txt"),
        LAYOUT_FLAT: os.path.join(data_dir, "list_attr_celeba.txt"),
        LAYOUT_CSV: os.path.join(data_dir, "list_attr_celeba.csv"),
    }
    kind = next((k for k, path in attribute_files.items() if os.path.isfile(path)), None)
    if kind is None:
        raise FileNotFoundError(
            f"No CelebA attribute file in {data_dir}: looked for "
            f"{', '.join(attribute_files.values())}. Download CelebA and pass the folder "
            "that contains Anno/ (or the annotation files themselves)."
        )

    annotation_files = {}
    missing_parts = {}
    for part in PART_FILES:
        candidates = _annotation_candidates(data_dir, kind, part)
        found = next((path for path in candidates if os.path.isfile(path)), None)
        if found is not None:
            annotation_files[part] = found
        else:
            missing_parts[part] = f"{_not_found(candidates)}, so {_PART_USES[part]}"

    image_root = os.path.join(data_dir, "Img") if kind == LAYOUT_RELEASE else data_dir
    wild_candidates = [os.path.join(image_root, "img_celeba")]
    aligned_candidates = [
        os.path.join(image_root, "img_align_celeba"),
        os.path.join(image_root, "img_align_celeba_png"),
    ]
    wild_dir = _find_image_dir(wild_candidates[0])
    if wild_dir is None:
        missing_parts["wild_paths"] = (
            f"{_not_found(wild_candidates)}, so {_PART_USES['wild_paths']}"
        )
    aligned_dir = _find_image_dir(aligned_candidates[0])
    aligned_extension = ".jpg"
    if aligned_dir is None:
        aligned_dir = _find_image_dir(aligned_candidates[1])
        aligned_extension = ".png"
    if aligned_dir is None:
        missing_parts["aligned_paths"] = (
            f"{_not_found(aligned_candidates)}, so {_PART_USES['aligned_paths']}"
        )

    return CelebALayout(
        kind=kind,
        data_dir=data_dir,
        annotation_files=annotation_files,
        wild_image_dir=wild_dir,
        aligned_image_dir=aligned_dir,
        aligned_extension=aligned_extension,
        missing_parts=missing_parts,
    )


def _annotation_candidates(data_dir: str, kind: str, part: str) -> list:
    base = PART_FILES[part]
    if kind == LAYOUT_RELEASE:
        folders = ["Eval", "Anno"] if part == "partitions" else ["Anno"]
        return [os.path.join(data_dir, folder, base + ".txt") for folder in folders]
    if kind == LAYOUT_FLAT:
        return [os.path.join(data_dir, base + ".txt")]
    # The CSV copy ships no identity file; a user may add the release's text file.
    return [os.path.join(data_dir, base + ".csv"), os.path.join(data_dir, base + ".txt")]


def _not_found(paths: list) -> str:
    """Say "a.txt was not found in D1 or D2", or "a.csv or a.txt was not found in D"."""
    names = dict.fromkeys(os.path.basename(path) for path in paths)
    folders = dict.fromkeys(os.path.dirname(path) for path in paths)
    return f"{' or '.join(names)} was not found in {' or '.join(folders)}"


def _find_image_dir(path: str) -> Optional[str]:
    # Archives of the aligned images often unpack into a folder of the same name.
    if not os.path.isdir(path):
        return None
    nested = os.path.join(path, os.path.basename(path))
    return nested if os.path.isdir(nested) else path


# ---------------------------------------------------------------------------
# Problem reporting.


class _ProblemLog:
    """Problem collector: raises each problem, or records it when bad examples are skipped."""

    def __init__(self, on_bad_example: str):
        self.skip = on_bad_example == "skip"
        self.messages = []
        self.skipped_rows = collections.Counter()
        self.reasons = collections.Counter()
        self.warnings = []
        # Names of rows dropped from any file, so that their absence from another
        # file is not reported a second time.
        self.dropped_names = set()

    def report(self, reason: str, error: CelebAFormatError, rows: int = 1) -> None:
        if not self.skip:
            raise error
        self.reasons[reason] += 1
        if rows:
            self.skipped_rows[reason] += rows
        if self.reasons[reason] <= _MESSAGES_PER_REASON:
            self.messages.append(str(error))

    def warn(self, message: str) -> None:
        logging.warning("%s", message)
        self.warnings.append(message)


# ---------------------------------------------------------------------------
# Rows of one file.


@dataclasses.dataclass
class _Rows:
    """The parsed rows of one annotation file."""

    path: str
    columns: tuple
    # Every line of the file, to quote values exactly as written.
    lines: list
    names: np.ndarray  # str [N]
    values: np.ndarray  # int64 [N, len(columns)]
    line_numbers: np.ndarray  # int64 [N], counted from 1
    # Number of non-blank data lines, good or bad, to compare with the count line.
    listed: int

    def token(self, row: int, column: int) -> str:
        return self.lines[self.line_numbers[row] - 1].split()[column + 1]

    def drop(self, bad: np.ndarray, problems: _ProblemLog) -> "_Rows":
        if not bad.any():
            return self
        problems.dropped_names.update(self.names[bad].tolist())
        keep = ~bad
        return dataclasses.replace(
            self,
            names=self.names[keep],
            values=self.values[keep],
            line_numbers=self.line_numbers[keep],
        )


def _read_text(path: str) -> str:
    with open(path, "rb") as file:
        data = file.read()
    if data.startswith(_BYTE_ORDER_MARK):
        data = data[len(_BYTE_ORDER_MARK):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad_bytes = data[error.start:error.end]
        line = data.count(b"\n", 0, error.start) + 1
        raise CelebAFormatError(
            f"bytes {bad_bytes!r} are not valid UTF-8. Save the file as UTF-8 or "
            "download it again.",
            path,
            line,
            bad_bytes,
        ) from None
    return text


def _read_lines(path: str) -> list:
    # Splitting on "\n" alone keeps line numbers equal to those of grep -n; the "\r"
    # of CRLF endings is whitespace to the row parser.
    return _read_text(path).split("\n")


def _parse_rows(path: str, lines: list, start: int, columns: tuple, problems: _ProblemLog) -> _Rows:
    """Parse lines[start:] as rows of an image name and len(columns) integers."""
    indices = [
        index for index in range(start, len(lines)) if lines[index] and not lines[index].isspace()
    ]
    parsed = _parse_rows_quickly(lines, indices, len(columns))
    if parsed is None:
        parsed = _parse_rows_in_blocks(path, lines, indices, len(columns), problems)
    names, values, line_numbers = parsed
    return _Rows(
        path=path,
        columns=tuple(columns),
        lines=lines,
        names=names,
        values=values,
        line_numbers=line_numbers,
        listed=len(indices),
    )


# Rows per block when a file has bad rows: only the blocks that contain one are
# parsed row by row.
_BLOCK_ROWS = 2048


def _parse_rows_in_blocks(
    path: str, lines: list, indices: list, num_values: int, problems: _ProblemLog
):
    """Parse block by block, falling back to row by row in blocks with bad rows."""
    blocks = []
    for start in range(0, len(indices), _BLOCK_ROWS):
        block = indices[start : start + _BLOCK_ROWS]
        parsed = _parse_rows_quickly(lines, block, num_values)
        if parsed is None:
            parsed = _parse_rows_slowly(path, lines, block, num_values, problems)
        blocks.append(parsed)
    if not blocks:
        return _parse_rows_slowly(path, lines, [], num_values, problems)
    return tuple(np.concatenate(arrays) for arrays in zip(*blocks))


# A marker placed after every row. A row with too few or too many values shifts it
# out of the last column. It is int64 min + 1, which no CelebA file contains.
_ROW_END = -(2**63) + 1
_ROW_END_TEXT = str(_ROW_END)


def _parse_rows_quickly(lines: list, indices: list, num_values: int):
    """Parse well-formed rows with one NumPy call; return None when any row is not.

    Every row it accepts, `_parse_rows_slowly` accepts with the same values, so the
    fallback changes only the speed, never the result.
    """
    split = _split_names(lines, indices)
    if split is None:
        return None
    names, rests = split

    separator = f" {_ROW_END_TEXT} "
    body = separator.join(rests) + separator
    if not _is_integer_text(body):
        return None
    try:
        values = np.fromstring(body, dtype=np.int64, sep=" ")
    except ValueError:
        return None

    if values.size != len(names) * (num_values + 1):
        return None
    values = values.reshape(len(names), num_values + 1)
    # Row ends in the last column only, and nowhere else, prove every row has
    # exactly num_values values.
    if not (values[:, -1] == _ROW_END).all() or (values[:, :-1] == _ROW_END).any():
        return None

    return np.array(names, dtype=str), values[:, :-1], np.asarray(indices, dtype=np.int64) + 1


def _split_names(lines: list, indices: list):
    """Split each row into its image name and the text after it, as str.split(None, 1) does.

    Returns (names, rests), or None when a row has nothing after its name.
    """
    # str.partition took 0.11 s against 0.29 s for str.split(None, 1) on 202,599
    # attribute rows, and splits the same way when each name starts its line and a
    # space follows it.
    parts = [lines[index].partition(" ") for index in indices]
    names = [part[0] for part in parts]
    if "\n".join(names).split() == names:
        return names, [part[2] for part in parts]

    parts = [lines[index].split(None, 1) for index in indices]
    if any(len(part) != 2 for part in parts):
        return None
    return [part[0] for part in parts], [part[1] for part in parts]


# Bytes allowed in the integer columns by the fast path: digits, signs, space, tab, CR.
_INTEGER_BYTES = np.zeros(256, dtype=bool)
_INTEGER_BYTES[list(b"0123456789+- \t\r")] = True
_DIGIT_BYTES = np.zeros(256, dtype=bool)
_DIGIT_BYTES[list(b"0123456789")] = True
_SPACE_BYTES = np.zeros(256, dtype=bool)
_SPACE_BYTES[list(b" \t\r")] = True


def _is_integer_text(text: str) -> bool:
    """Return True if `text` is whitespace-separated tokens that each match [+-]?[0-9]+."""
    try:
        data = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        return False
    if not _INTEGER_BYTES[data].all():
        return False

    # A sign must start a token and be followed by a digit; np.fromstring would
    # otherwise read "-" alone as 0 and "1-1" as two numbers.
    signs = np.flatnonzero((data == ord("+")) | (data == ord("-")))
    if signs.size == 0:
        return True
    if signs[-1] == data.size - 1 or not _DIGIT_BYTES[data[signs + 1]].all():
        return False
    after_space = _SPACE_BYTES[data[np.maximum(signs - 1, 0)]] | (signs == 0)
    return bool(after_space.all())


def _parse_rows_slowly(
    path: str, lines: list, indices: list, num_values: int, problems: _ProblemLog
):
    """Parse row by row, reporting each malformed row with its line number."""
    names, values, line_numbers = [], [], []
    for index in indices:
        # Splitting off at most one token too many keeps a row of millions of fields
        # from becoming millions of strings.
        tokens = lines[index].split(None, num_values + 1)
        line_number = index + 1
        if len(tokens) != num_values + 1:
            field_count = len(tokens) if len(tokens) < num_values + 1 else _count_fields(lines[index])
            row_text = _shorten(lines[index].strip())
            problems.report(
                "wrong number of fields",
                CelebAFormatError(
                    f"the row {row_text!r} has {field_count} fields, expected "
                    f"{num_values + 1} (an image name and {num_values} integers). "
                    + _SKIP_HINT,
                    path,
                    line_number,
                    row_text,
                ),
            )
            problems.dropped_names.add(tokens[0])
            continue

        bad_token = next((token for token in tokens[1:] if not _INTEGER.fullmatch(token)), None)
        if bad_token is not None:
            problems.report(
                "not an integer",
                CelebAFormatError(
                    f"value {_shorten(bad_token)!r} for {_shorten(tokens[0])} is not an integer. "
                    + _SKIP_HINT,
                    path,
                    line_number,
                    bad_token,
                ),
            )
            problems.dropped_names.add(tokens[0])
            continue

        names.append(tokens[0])
        values.append([_clamped_int64(token) for token in tokens[1:]])
        line_numbers.append(line_number)

    return (
        np.array(names, dtype=str),
        np.array(values, dtype=np.int64).reshape(len(names), num_values),
        np.array(line_numbers, dtype=np.int64),
    )


# Characters per piece when `_count_fields` splits a long row.
_COUNT_CHUNK = 1 << 20


def _count_fields(line: str) -> int:
    """Return len(line.split()), splitting one piece of the line at a time to bound memory."""
    count = 0
    previous_ends_in_space = True
    for start in range(0, len(line), _COUNT_CHUNK):
        piece = line[start : start + _COUNT_CHUNK]
        count += len(piece.split())
        if not previous_ends_in_space and not piece[0].isspace():
            count -= 1  # the piece boundary cut a field in two
        previous_ends_in_space = piece[-1].isspace()
    return count


def _clamped_int64(token: str) -> int:
    """Convert a token that matches `_INTEGER`, clamped to int64 like np.fromstring.

    The int32 range check then reports both parsers' values alike. Tokens of more
    than 19 digits are clamped without int(), which rejects strings longer than
    4300 digits by default (Python 3.11).
    """
    if len(token.lstrip("+-").lstrip("0")) > 19:
        return -(2**63) if token.startswith("-") else 2**63 - 1
    return min(max(int(token), -(2**63)), 2**63 - 1)


# Values quoted from a file are shortened, so a damaged file cannot make an error
# message as long as the file.
def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# File formats.


def _read_counted_text(path: str, columns: tuple, problems: _ProblemLog) -> _Rows:
    """Read a release text file: a count line, a header line, then one row per image."""
    lines = _read_lines(path)
    count_text = lines[0].strip()
    if not re.fullmatch(r"[0-9]+", count_text):
        raise CelebAFormatError(
            f"the first line must be the number of images, found {_shorten(count_text)!r}. "
            "Restore the count line or download the file again.",
            path,
            1,
            count_text,
        )
    _check_header(path, lines, 2, columns, require_image_id=False)
    rows = _parse_rows(path, lines, 2, columns, problems)

    # Comparing digits spares int() a count line of thousands of digits, which it rejects.
    count = count_text.lstrip("0") or "0"
    if count != str(rows.listed):
        problems.report(
            "count line mismatch",
            CelebAFormatError(
                f"the count line gives {_shorten(count)} images but the file lists {rows.listed}. "
                "The file may be truncated or edited; download it again.",
                path,
                1,
                count_text,
            ),
            rows=0,
        )
    return rows


def _read_plain_text(path: str, columns: tuple, problems: _ProblemLog) -> _Rows:
    """Read a release text file without header: `identity_CelebA.txt`, `list_eval_partition.txt`."""
    lines = _read_lines(path)
    # The release has no header here, but some copies add one; accept it if correct.
    start = 0
    if lines[0].split(None, 1)[:1] == ["image_id"]:
        _check_header(path, lines, 1, columns, require_image_id=True)
        start = 1
    return _parse_rows(path, lines, start, columns, problems)


def _read_csv(path: str, columns: tuple, problems: _ProblemLog) -> _Rows:
    """Read a file of the CSV copy: a header `image_id,<columns>`, then one row per image.

    Fields are separated by commas, with optional whitespace around them. No field
    may be empty. Quotes are not removed, so a quoted value is not an integer.
    """
    text = _read_text(path)
    lines = text.split("\n")
    _check_header(path, [lines[0].replace(",", " ")], 1, columns, require_image_id=True)

    # Empty fields would vanish when commas become spaces, so find them first; the
    # text-wide test spares the common case a pass over every line.
    compact = text.replace(" ", "").replace("\t", "").replace("\r", "")
    if ",," in compact or "\n," in compact or ",\n" in compact or compact.endswith(","):
        _blank_rows_with_empty_fields(path, lines, problems)

    lines = [line.replace(",", " ") for line in lines]
    return _parse_rows(path, lines, 1, columns, problems)


def _blank_rows_with_empty_fields(path: str, lines: list, problems: _ProblemLog) -> None:
    """Report each data row with an empty field and blank it in `lines`."""
    for index in range(1, len(lines)):
        fields = lines[index].strip().split(",")
        if len(fields) < 2 or all(field.strip() for field in fields):
            continue
        row_text = _shorten(lines[index].strip())
        problems.report(
            "empty field",
            CelebAFormatError(
                f"the row {row_text!r} has an empty field, field "
                f"{[field.strip() for field in fields].index('') + 1}. " + _SKIP_HINT,
                path,
                index + 1,
                row_text,
            ),
        )
        problems.dropped_names.add(fields[0].strip())
        lines[index] = ""


def _check_header(
    path: str, lines: list, line_number: int, columns: tuple, require_image_id: bool
) -> None:
    """Raise unless the header lists `columns` in order, after an optional "image_id"."""
    line = lines[line_number - 1] if line_number <= len(lines) else ""
    # Splitting off at most one token more than a full header finds every mismatch,
    # and keeps a huge header line from becoming millions of strings.
    tokens = line.split(None, len(columns) + 1)
    expected = " ".join(("image_id",) + tuple(columns))
    fix = f"The header must be {_shorten(expected)!r}; fix it or download the file again."
    leading_tokens = 0
    if tokens[:1] == ["image_id"]:
        tokens = tokens[1:]
        leading_tokens = 1
    elif require_image_id:
        found = tokens[0] if tokens else ""
        raise CelebAFormatError(
            f"the header must start with 'image_id', found {_shorten(found)!r}. {fix}",
            path,
            line_number,
            found,
        )
    if tokens == list(columns):
        return

    for position, (found, wanted) in enumerate(zip(tokens, columns)):
        if found != wanted:
            raise CelebAFormatError(
                f"header column {position + 1} is {_shorten(found)!r}, expected {wanted!r}. {fix}",
                path,
                line_number,
                found,
            )
    if len(tokens) < len(columns):
        wanted = columns[len(tokens)]
        raise CelebAFormatError(
            f"the header lists {len(tokens)} columns and lacks {wanted!r} and any after it. {fix}",
            path,
            line_number,
            wanted,
        )
    # The last token holds the rest of the line when the header has many extra columns.
    extra = tokens[len(columns)].split(None, 1)[0]
    count = _count_fields(line) - leading_tokens
    raise CelebAFormatError(
        f"the header has {count} columns, expected {len(columns)}; {_shorten(extra)!r} is extra. "
        f"{fix}",
        path,
        line_number,
        extra,
    )


# ---------------------------------------------------------------------------
# Checks on the rows of one file.


def _read_part(path: str, part: str, problems: _ProblemLog) -> _Rows:
    """Read and check the annotation file of one part; bad rows are reported and dropped."""
    columns = _PART_COLUMNS[part]
    if path.endswith(".csv"):
        rows = _read_csv(path, columns, problems)
    elif part in _COUNTED_PARTS:
        rows = _read_counted_text(path, columns, problems)
    else:
        rows = _read_plain_text(path, columns, problems)

    rows = _drop_unsafe_names(rows, problems)
    rows = _drop_duplicate_names(rows, problems)
    rows = _drop_bad_cells(
        rows,
        (rows.values < _INT32_MIN) | (rows.values > _INT32_MAX),
        "value out of range",
        problems,
        lambda name, column, token: (
            f"{column} of {name} is {token}, which does not fit in a 32-bit integer."
        ),
    )
    if part == "attributes":
        rows = _drop_invalid_attributes(rows, problems)
    elif part == "boxes":
        bad = np.zeros(rows.values.shape, dtype=bool)
        bad[:, 2:] = rows.values[:, 2:] <= 0
        rows = _drop_bad_cells(
            rows,
            bad,
            "non-positive box size",
            problems,
            lambda name, column, token: (
                f"the box {column} of {name} is {token}, but a face box needs a positive "
                "width and height."
            ),
        )
    elif part == "partitions":
        rows = _drop_bad_cells(
            rows,
            (rows.values < 0) | (rows.values > 2),
            "invalid partition",
            problems,
            lambda name, column, token: (
                f"the partition of {name} is {token}, expected 0 (train), 1 (validation) "
                "or 2 (test)."
            ),
        )
    return rows


def _drop_bad_cells(
    rows: _Rows, bad_cells: np.ndarray, reason: str, problems: _ProblemLog, describe
) -> _Rows:
    """Report and drop each row with a True in `bad_cells` ([N, columns] bool).

    `describe(image_name, column_name, token)` returns the first sentence of the message.
    """
    bad_rows = bad_cells.any(axis=1)
    for row in np.flatnonzero(bad_rows):
        column = int(np.argmax(bad_cells[row]))
        token = rows.token(row, column)
        problems.report(
            reason,
            CelebAFormatError(
                f"{describe(_shorten(rows.names[row]), rows.columns[column], _shorten(token))} "
                f"{_SKIP_HINT}",
                rows.path,
                int(rows.line_numbers[row]),
                token,
            ),
        )
    return rows.drop(bad_rows, problems)


def _drop_invalid_attributes(rows: _Rows, problems: _ProblemLog) -> _Rows:
    """Check that attributes are 1 or -1; a copy with 0 and no -1 is read as 0 for -1."""
    values = rows.values
    absent = -1
    if not (values == -1).any() and (values == 0).any():
        absent = 0
        problems.warn(
            f"{rows.path} writes absent attributes as 0 instead of -1; reading 0 as absent."
        )
    expected = "1 or -1" if absent == -1 else "1 or 0"
    return _drop_bad_cells(
        rows,
        (values != 1) & (values != absent),
        "invalid attribute value",
        problems,
        lambda name, column, token: (
            f"attribute {column} of {name} is {token}, expected {expected}."
        ),
    )


def _is_unsafe_name(name: str) -> bool:
    absolute = name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None
    return absolute or ".." in re.split(r"[/\\]", name)


def _drop_unsafe_names(rows: _Rows, problems: _ProblemLog) -> _Rows:
    """Drop names that are absolute or step up with "..", which could reach any file."""
    joined = "\n".join(rows.names.tolist())
    if not any(mark in joined for mark in ("/", "\\", ":", "..")):
        return rows
    bad = np.array([_is_unsafe_name(name) for name in rows.names.tolist()], dtype=bool)
    for row in np.flatnonzero(bad):
        name = str(rows.names[row])
        problems.report(
            "unsafe image name",
            CelebAFormatError(
                f"image name {_shorten(name)!r} is an absolute path or contains '..'. Names must be "
                f"relative to the image folder, such as '000001.jpg'. {_SKIP_HINT}",
                rows.path,
                int(rows.line_numbers[row]),
                name,
            ),
        )
    return rows.drop(bad, problems)


def _drop_duplicate_names(rows: _Rows, problems: _ProblemLog) -> _Rows:
    """Drop each repeat of an image name, keeping its first row."""
    names = rows.names
    # The release lists names in increasing order, which rules out repeats at once.
    if names.size < 2 or (names[1:] > names[:-1]).all():
        return rows

    order = np.argsort(names, kind="stable")
    ordered = names[order]
    bad = np.zeros(names.size, dtype=bool)
    first_row = {}
    for position in np.flatnonzero(ordered[1:] == ordered[:-1]):
        first_row.setdefault(ordered[position], order[position])
        bad[order[position + 1]] = True

    for row in np.flatnonzero(bad):
        name = str(names[row])
        first_line = int(rows.line_numbers[first_row[name]])
        problems.report(
            "duplicate image name",
            CelebAFormatError(
                f"image name {_shorten(name)!r} is listed again; it is first listed on line "
                f"{first_line}. Remove the repeated row, or drop it with "
                "on_bad_example='skip' (flag --on_bad_example=skip).",
                rows.path,
                int(rows.line_numbers[row]),
                name,
            ),
        )
    # Drop without recording the name: its first row stays in the table.
    keep = ~bad
    return dataclasses.replace(
        rows, names=names[keep], values=rows.values[keep], line_numbers=rows.line_numbers[keep]
    )


# ---------------------------------------------------------------------------
# Checks across files and against the image folders.


def _match_rows(reference: _Rows, other: _Rows, problems: _ProblemLog):
    """Find each reference row in `other`; report names that only one file lists.

    Returns (found [N] bool, index [N] int): where `found`, `other` row `index` has
    the same image name. Names dropped earlier for another reason are not reported again.
    """
    count = reference.names.size
    if other.names.shape == reference.names.shape and (other.names == reference.names).all():
        return np.ones(count, dtype=bool), np.arange(count)

    order = np.argsort(other.names)
    ordered = other.names[order]
    positions = np.minimum(np.searchsorted(ordered, reference.names), max(ordered.size - 1, 0))
    if ordered.size:
        found = ordered[positions] == reference.names
        index = order[positions]
    else:
        found = np.zeros(count, dtype=bool)
        index = np.zeros(count, dtype=np.int64)

    _report_unmatched(reference, ~found, other.path, problems)
    _report_unmatched(other, ~np.isin(other.names, reference.names), reference.path, problems)
    return found, index


def _report_unmatched(
    rows: _Rows, unmatched: np.ndarray, other_path: str, problems: _ProblemLog
) -> None:
    for row in np.flatnonzero(unmatched):
        name = str(rows.names[row])
        if name in problems.dropped_names:
            continue
        problems.report(
            "image listed in only one file",
            CelebAFormatError(
                f"image {_shorten(name)!r} is listed here but not in {other_path}. Every annotation "
                "file must list the same images: download the files again, or drop the "
                "row with on_bad_example='skip' (flag --on_bad_example=skip).",
                rows.path,
                int(rows.line_numbers[row]),
                name,
            ),
        )
        problems.dropped_names.add(name)


def _image_file_names(names: np.ndarray, extension: str) -> list:
    if extension == ".jpg":
        return names.tolist()
    # img_align_celeba_png/ contains the same images as PNG, under the annotated stem.
    return [os.path.splitext(name)[0] + extension for name in names.tolist()]


def _missing_on_disk(image_dir: str, file_names: list) -> np.ndarray:
    if any(os.sep in name or "/" in name for name in file_names):
        exists = [os.path.isfile(os.path.join(image_dir, name)) for name in file_names]
        return ~np.array(exists, dtype=bool)
    # One directory listing is much faster than a stat call per image.
    on_disk = np.array(os.listdir(image_dir), dtype=str)
    return ~np.isin(np.array(file_names, dtype=str), on_disk)


def _check_images(
    reference: _Rows, keep: np.ndarray, image_dir: str, file_names: list, problems: _ProblemLog
) -> np.ndarray:
    """Return `keep` without the rows whose image file is missing from `image_dir`."""
    missing = _missing_on_disk(image_dir, file_names) & keep
    if not missing.any():
        return keep

    rows = np.flatnonzero(missing)
    examples = ", ".join(
        f"{_shorten(file_names[row])} (line {reference.line_numbers[row]})"
        for row in rows[:_MISSING_IMAGE_EXAMPLES]
    )
    first = int(rows[0])
    problems.report(
        "image missing",
        CelebAFormatError(
            f"{rows.size} images listed in this file are missing from {image_dir}, for "
            f"example {examples}. Download and extract the missing images, "
            "pass verify_images=False to skip this check, or drop the rows with "
            "on_bad_example='skip' (flag --on_bad_example=skip).",
            reference.path,
            int(reference.line_numbers[first]),
            file_names[first],
        ),
        rows=int(rows.size),
    )
    return keep & ~missing


# ---------------------------------------------------------------------------
# The reader.


def load_celeba(
    data_dir: str, on_bad_example: str = "error", verify_images: bool = True
) -> CelebATable:
    """Read and validate the CelebA copy in `data_dir`.

    Returns one row per image of the attribute file, in its order, with every part
    the copy has; `missing_parts` gives the reason for each absent part. With
    on_bad_example="error" the first bad row raises `CelebAFormatError`; with "skip"
    bad rows are dropped, logged and counted in `skipped_rows` and `problems`.
    `verify_images` checks that every listed image exists in each image folder found.

    Raises FileNotFoundError when the folder or its attribute file does not exist.
    """
    if on_bad_example not in ON_BAD_EXAMPLE_CHOICES:
        raise ValueError(
            f"on_bad_example is {on_bad_example!r}; expected one of {ON_BAD_EXAMPLE_CHOICES}."
        )
    layout = detect_layout(data_dir)
    problems = _ProblemLog(on_bad_example)
    parts = {
        part: _read_part(path, part, problems) for part, path in layout.annotation_files.items()
    }

    # The attribute file decides which images the table has and in which order.
    reference = parts["attributes"]
    keep = np.ones(reference.names.size, dtype=bool)
    indices = {}
    for part, rows in parts.items():
        if part != "attributes":
            found, indices[part] = _match_rows(reference, rows, problems)
            keep &= found

    image_files = {}
    for image_dir, extension in (
        (layout.wild_image_dir, ".jpg"),
        (layout.aligned_image_dir, layout.aligned_extension),
    ):
        if image_dir is None:
            continue
        image_files[image_dir] = _image_file_names(reference.names, extension)
        if verify_images:
            keep = _check_images(reference, keep, image_dir, image_files[image_dir], problems)

    if not keep.any():
        # Under "skip" the problems were only recorded, so the first one says which
        # file and line to look at.
        first_problem = f" The first problem: {problems.messages[0]}" if problems.messages else ""
        raise CelebAFormatError(
            f"no usable image: the file lists {reference.listed} rows and none passed the "
            f"checks. Download CelebA again.{first_problem}",
            reference.path,
        )
    table = _assemble_table(layout, parts, indices, keep, image_files)
    table.problems = list(problems.messages)
    table.skipped_rows = dict(problems.skipped_rows)
    table.warnings = list(problems.warnings)
    if problems.skipped_rows:
        summary = ", ".join(
            f"{reason} ({count} {'row' if count == 1 else 'rows'})"
            for reason, count in problems.skipped_rows.items()
        )
        first_problem = f" The first: {problems.messages[0]}" if problems.messages else ""
        logging.warning(
            "Skipped %d of %d rows of %s: %s.%s",
            sum(problems.skipped_rows.values()),
            reference.listed,
            reference.path,
            summary,
            first_problem,
        )
    return table


def _assemble_table(
    layout: CelebALayout, parts: dict, indices: dict, keep: np.ndarray, image_files: dict
) -> CelebATable:
    """Gather the kept rows of every part in the attribute file's order.

    `indices[part]` maps each attribute row to its row in that part's file, and
    `image_files[image_dir]` lists each attribute row's file name in that folder.
    """
    reference = parts["attributes"]
    kept = np.flatnonzero(keep)

    def column(part: str, dtype) -> Optional[np.ndarray]:
        if part not in parts:
            return None
        values = parts[part].values[indices[part][keep]].astype(dtype)
        return values[:, 0] if values.shape[1] == 1 else values

    def paths(image_dir: Optional[str]) -> Optional[np.ndarray]:
        if image_dir is None:
            return None
        file_names = image_files[image_dir]
        return np.array([os.path.join(image_dir, file_names[row]) for row in kept], dtype=str)

    return CelebATable(
        image_names=reference.names[keep],
        attributes=(reference.values[keep] == 1).astype(np.uint8),
        wild_paths=paths(layout.wild_image_dir),
        aligned_paths=paths(layout.aligned_image_dir),
        boxes=column("boxes", np.int32),
        wild_landmarks=column("wild_landmarks", np.int32),
        aligned_landmarks=column("aligned_landmarks", np.int32),
        identities=column("identities", np.int32),
        partitions=column("partitions", np.int8),
        missing_parts=dict(layout.missing_parts),
    )
