"""Reading and decoding image files in tf.data, with errors that name the bad file.

TensorFlow's decode errors do not carry the file path, and an op that fails inside a
`tf.data` map stops the whole pipeline. `load_images` therefore runs the reads and
decodes in small chunks of consecutive examples, each chunk being a tiny inner
dataset followed by `ignore_errors()`. An example whose read or decode raised is
missing from its chunk's output, and a `scan` over the chunk's offsets finds which
one is missing, which gives the pipeline its path. A reporting step then either raises
an `InvalidArgumentError` whose message names the file and says why it is invalid
(`on_bad_example="error"`) or logs a warning that names it and counts the skipped
files (`on_bad_example="skip"`). The reason comes from `describe_invalid_image`,
which inspects the file again in Python. It runs only for invalid files.

Before decoding, the image size is read from the header (JPEG, PNG, GIF, BMP and
WebP), and an image above `max_pixels` is rejected without being decoded, which
guards against decompression bombs.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from typing import Iterator, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from lnet_anet_tf.data import webp_header

# Images above this many pixels are rejected. 40 megapixels fits a full-resolution
# camera photo, while a crafted PNG header can declare up to 2^31 x 2^31 pixels.
DEFAULT_MAX_PIXELS = 40_000_000

ON_BAD_EXAMPLE_CHOICES = ("error", "skip")

# Consecutive examples loaded by one inner dataset. Larger chunks spread the cost of
# building the inner dataset over more images. Chunks are loaded in parallel.
_CHUNK_SIZE = 16

# Per-example status after loading.
_OK = 0
_TOO_LARGE = 1
_CHUNK_END = 2  # the marker that ends each chunk, never a real example
_LOAD_FAILED = 3  # reading, header parsing or decoding raised

# Skipped files are logged one by one up to this count, then every
# `_LOG_EVERY_N_SKIPPED`th, so that a broken folder does not flood the log.
_LOG_ALL_SKIPPED_UP_TO = 100
_LOG_EVERY_N_SKIPPED = 1000

_MESSAGE_PREFIX = "Invalid image file "


class InvalidImageError(ValueError):
    """An image file that cannot be decoded, or whose size exceeds `max_pixels`."""


def validate_on_bad_example(on_bad_example: str) -> None:
    if on_bad_example not in ON_BAD_EXAMPLE_CHOICES:
        raise ValueError(
            f"on_bad_example={on_bad_example!r} is invalid; expected one of "
            f"{ON_BAD_EXAMPLE_CHOICES}."
        )


def decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Decode an image file's bytes to uint8 RGB [height, width, 3].

    The formats are those of `tf.io.decode_image`: JPEG, PNG, GIF, BMP and, in
    TensorFlow 2.21, WebP and JPEG XL.

    Grayscale images are repeated over the three channels and an alpha channel is
    dropped, as Pillow's `convert("RGB")` does. An animated GIF or WebP gives its
    first frame.
    """
    # TensorFlow 2.21 decodes a WebP that declares alpha only to RGBA: asking for 3
    # channels raises "Number of channels requested does not match input". Such a
    # file is decoded to RGBA and the alpha dropped. The channel count stays
    # explicit, because with channels=0 TensorFlow 2.21 writes the RGBA frames of an
    # animated WebP without alpha into an RGB buffer and corrupts the heap.
    has_alpha = webp_header.declares_alpha(_leading_bytes(contents))
    image = tf.cond(
        has_alpha,
        lambda: tf.io.decode_image(contents, channels=4, expand_animations=False)[..., :3],
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    return tf.ensure_shape(image, [None, None, 3])


def _leading_bytes(contents: tf.Tensor, count: int = 32) -> tf.Tensor:
    """Return the first `count` bytes of a file as int64 [count], zero-padded past its end."""
    padded = tf.strings.join([tf.strings.substr(contents, 0, count), b"\0" * count])
    return tf.cast(tf.io.decode_raw(padded, tf.uint8)[:count], tf.int64)


_JPEG_MAGIC = b"\xff\xd8\xff"

# Leading bytes of the formats whose size `header_image_size` reads, in its order.
_HEADER_MAGICS = (_JPEG_MAGIC, b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")

# Byte positions of (height, width) in the first 32 bytes of PNG (the IHDR chunk),
# GIF (the logical screen descriptor) and BMP (the info header), each given as
# (offset, length, byte order). TensorFlow's BMP decoder reads the same 32-bit fields.
_HEADER_SIZE_FIELDS = (
    ((20, 4, "big"), (16, 4, "big")),
    ((8, 2, "little"), (6, 2, "little")),
    ((22, 4, "little"), (18, 4, "little")),
)


def _magic_tables() -> tuple[np.ndarray, np.ndarray]:
    """Return the magic bytes and their masks [format, 8], zero-padded to 8 bytes."""
    magic_bytes = np.zeros((len(_HEADER_MAGICS), 8), np.int64)
    magic_masks = np.zeros((len(_HEADER_MAGICS), 8), np.int64)
    for format_index, magic in enumerate(_HEADER_MAGICS):
        magic_bytes[format_index, : len(magic)] = list(magic)
        magic_masks[format_index, : len(magic)] = 1
    return magic_bytes, magic_masks


def _size_field_tables() -> tuple[np.ndarray, np.ndarray]:
    """Return byte offsets and place values [format, dimension, byte] for a gather."""
    offsets = np.zeros((len(_HEADER_SIZE_FIELDS), 2, 4), np.int32)
    place_values = np.zeros((len(_HEADER_SIZE_FIELDS), 2, 4), np.int64)
    for format_index, fields in enumerate(_HEADER_SIZE_FIELDS):
        for dimension, (offset, length, byte_order) in enumerate(fields):
            values = [256**i for i in range(length)]
            if byte_order == "big":
                values.reverse()
            offsets[format_index, dimension, :length] = range(offset, offset + length)
            place_values[format_index, dimension, :length] = values
    return offsets, place_values


_MAGIC_BYTES, _MAGIC_MASKS = _magic_tables()
_SIZE_FIELD_OFFSETS, _SIZE_FIELD_PLACE_VALUES = _size_field_tables()


@functools.lru_cache(maxsize=None)
def _placeholder_jpeg() -> bytes:
    """Return a valid 1x1 JPEG, decoded in place of files that must not be decoded."""
    with tf.init_scope():
        return tf.io.encode_jpeg(tf.zeros([1, 1, 3], tf.uint8)).numpy()


def header_image_size(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Return (height, width) as int64 from the header of an encoded image.

    Reads JPEG (with `tf.image.extract_jpeg_shape`), PNG, GIF, BMP and WebP
    headers, and returns (-1, -1) for other formats. Raises InvalidArgumentError
    when a JPEG or WebP header is truncated or malformed, so that such a file is
    never decoded. The ops have no branches: this runs once per image (in tf.data
    for every file that is not a JPEG, and in the SavedModel), and gathers from
    fixed byte positions cost less than conditionals there.
    """
    header_bytes = _leading_bytes(contents)

    is_format = tf.reduce_all(
        tf.equal(header_bytes[:8] * _MAGIC_MASKS, _MAGIC_BYTES), axis=1
    )

    field_values = tf.reduce_sum(
        tf.gather(header_bytes, _SIZE_FIELD_OFFSETS) * _SIZE_FIELD_PLACE_VALUES, axis=-1
    )
    # BMP stores signed 32-bit sizes, and a negative height marks a top-down bitmap.
    # The sizes of the other formats stay below 2^31.
    field_values = tf.where(field_values >= 2**31, 2**32 - field_values, field_values)

    # extract_jpeg_shape raises on data that is not a JPEG, so other files are
    # replaced by a valid JPEG and the result is discarded below.
    jpeg_input = tf.where(is_format[0], contents, _placeholder_jpeg())
    jpeg_size = tf.cast(tf.image.extract_jpeg_shape(jpeg_input)[:2], tf.int64)

    is_webp = webp_header.signature_matches(header_bytes)
    webp_size, webp_is_valid = webp_header.size_tensor(
        header_bytes, tf.strings.length(contents, unit="BYTE")
    )
    webp_check = tf.debugging.Assert(
        tf.logical_or(tf.logical_not(is_webp), webp_is_valid),
        ["Invalid WebP header: the file ends inside it, or its first chunk is not a "
         "valid 'VP8 ', 'VP8L' or 'VP8X' chunk."],
    )

    sizes = tf.concat(
        [jpeg_size[tf.newaxis], field_values, webp_size[tf.newaxis], [[-1, -1]]], axis=0
    )
    # The first matching format, or the last row (-1, -1) when none matches.
    candidates = tf.concat([tf.cast(is_format, tf.int32), [tf.cast(is_webp, tf.int32), 1]], axis=0)
    with tf.control_dependencies([webp_check]):
        size = tf.identity(sizes[tf.argmax(candidates, output_type=tf.int32)])
    return size[0], size[1]


def load_images(
    examples: tf.data.Dataset,
    *,
    on_bad_example: str = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Add the decoded `image` to every example of a dataset of dicts with a `path`.

    `image` is uint8 [height, width, 3]. Invalid files (unreadable, not an image,
    truncated, corrupt, or above `max_pixels`) raise an InvalidArgumentError that
    names the file under `on_bad_example="error"`, and are dropped with a warning
    under `"skip"`. Examples keep their order unless `deterministic` is False.
    """
    validate_on_bad_example(on_bad_example)
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}.")
    reporter = _InvalidImageReporter(on_bad_example, max_pixels)

    def load_chunk(chunk):
        return _load_chunk(chunk, max_pixels)

    # A chunk yields at most _CHUNK_SIZE examples plus its end marker. Blocks of that
    # length take whole chunks in turn, so the examples keep their input order.
    loaded = examples.batch(_CHUNK_SIZE).interleave(
        load_chunk,
        cycle_length=tf.data.AUTOTUNE,
        block_length=_CHUNK_SIZE + 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return loaded.filter(reporter.report_and_keep).map(_drop_bookkeeping)


def _load_example(example: dict, max_pixels: int) -> dict:
    contents = tf.io.read_file(example["path"])
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
    # JPEG, the common case, skips the header checks of the other formats and the
    # WebP alpha test. Together they took about half the CPU time of decoding a
    # 178x218 JPEG (2-core x86 CPU). Both branches decode a JPEG to the same pixels.
    image, height, width = tf.cond(
        is_jpeg,
        lambda: _decode_jpeg_under_limit(contents, max_pixels),
        lambda: _decode_image_under_limit(contents, max_pixels),
    )

    loaded = dict(example)
    loaded["image"] = image
    loaded["height"] = height
    loaded["width"] = width
    loaded["status"] = tf.where(height * width > max_pixels, _TOO_LARGE, _OK)
    return loaded


def _decode_jpeg_under_limit(contents: tf.Tensor, max_pixels: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode a JPEG unless its header is above `max_pixels`; see `_decode_image_under_limit`."""
    # extract_jpeg_shape raises on a truncated or malformed header, as in
    # `header_image_size`, so such a file is never decoded.
    header_size = tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64)
    too_large_in_header = header_size[0] * header_size[1] > max_pixels
    image = tf.io.decode_jpeg(tf.where(too_large_in_header, _placeholder_jpeg(), contents), channels=3)
    size = tf.where(too_large_in_header, header_size, tf.shape(image, out_type=tf.int64)[:2])
    return image, size[0], size[1]


def _decode_image_under_limit(contents: tf.Tensor, max_pixels: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode an image unless its header is above `max_pixels`; return it, its height and width.

    A file whose header is above max_pixels is never decoded, which stops
    decompression bombs. The 1x1 placeholder is decoded in its place, and the
    returned size is the header's. JPEG XL, whose header is not parsed, is checked
    after decoding.
    """
    header_height, header_width = header_image_size(contents)
    too_large_in_header = header_height * header_width > max_pixels
    image = decode_image(tf.where(too_large_in_header, _placeholder_jpeg(), contents))
    decoded_shape = tf.shape(image, out_type=tf.int64)
    height = tf.where(too_large_in_header, header_height, decoded_shape[0])
    width = tf.where(too_large_in_header, header_width, decoded_shape[1])
    return image, height, width


def _load_chunk(chunk: dict, max_pixels: int) -> tf.data.Dataset:
    """Load a chunk of examples, marking each one with the paths that failed before it.

    Returns a dataset of (example, failed_paths). An example whose loading raised is
    dropped by `ignore_errors`, and its path shows up in `failed_paths` of the next
    element. The chunk ends with a marker element (status `_CHUNK_END`) that carries
    the failures at the end of the chunk.
    """
    count = tf.shape(chunk["path"], out_type=tf.int64)[0]
    offsets = tf.range(count)
    loaded = (
        tf.data.Dataset.from_tensor_slices((offsets, chunk))
        .map(lambda offset, example: (offset, _load_example(example, max_pixels)))
        .ignore_errors()
    )

    end_marker = {name: tf.zeros_like(values[0]) for name, values in chunk.items()}
    end_marker["image"] = tf.zeros([0, 0, 3], tf.uint8)
    end_marker["height"] = tf.constant(0, tf.int64)
    end_marker["width"] = tf.constant(0, tf.int64)
    end_marker["status"] = tf.constant(_CHUNK_END)
    loaded = loaded.concatenate(tf.data.Dataset.from_tensors((count, end_marker)))

    def find_failures(next_offset, element):
        offset, example = element
        failed_paths = tf.gather(chunk["path"], tf.range(next_offset, offset))
        return offset + 1, (example, failed_paths)

    return loaded.scan(tf.constant(0, tf.int64), find_failures)


def _drop_bookkeeping(example: dict, failed_paths: tf.Tensor) -> dict:
    del failed_paths
    return {
        name: value
        for name, value in example.items()
        if name not in ("height", "width", "status")
    }


class _InvalidImageReporter:
    """Raises for or logs the invalid files that `_load_chunk` found."""

    def __init__(self, on_bad_example: str, max_pixels: int):
        self._on_bad_example = on_bad_example
        self._max_pixels = max_pixels
        self._lock = threading.Lock()
        self._skipped_count = 0

    def report_and_keep(self, example: dict, failed_paths: tf.Tensor) -> tf.Tensor:
        """Report the invalid files behind this element; return whether to keep it."""
        status = example["status"]
        own_is_invalid = tf.equal(status, _TOO_LARGE)
        failed_count = tf.size(failed_paths)

        # The lists of invalid files are built inside the branch, which runs for
        # invalid files only, to keep the per-example cost low.
        def report():
            own_count = tf.cast(own_is_invalid, tf.int32)
            paths = tf.concat([failed_paths, tf.reshape(example["path"], [1])[:own_count]], 0)
            statuses = tf.concat(
                [tf.fill([failed_count], _LOAD_FAILED), tf.fill([own_count], _TOO_LARGE)], 0
            )
            sizes = tf.concat(
                [
                    tf.fill([failed_count, 2], tf.constant(-1, tf.int64)),
                    tf.repeat(tf.stack([[example["height"], example["width"]]]), own_count, 0),
                ],
                0,
            )
            message = tf.py_function(
                self._describe_and_log, [paths, statuses, sizes], tf.string
            )
            if self._on_bad_example == "error":
                assertion = tf.debugging.Assert(False, [message])
                with tf.control_dependencies([assertion]):
                    return tf.identity(message)
            return message

        any_invalid = tf.logical_or(failed_count > 0, own_is_invalid)
        reported = tf.cond(any_invalid, report, lambda: tf.constant(""))
        with tf.control_dependencies([reported]):
            return tf.equal(status, _OK)

    def _describe_and_log(self, paths, statuses, sizes) -> bytes:
        messages = []
        for path, status, size in zip(paths.numpy(), statuses.numpy(), sizes.numpy()):
            path = path.decode("utf-8", "replace")
            image_size = tuple(int(value) for value in size) if status == _TOO_LARGE else None
            reason = describe_invalid_image(path, self._max_pixels, image_size)
            messages.append(f"{_MESSAGE_PREFIX}{path}: {reason}")
            if self._on_bad_example == "skip":
                self._log_skipped(path, reason)
        if self._on_bad_example == "error":
            hint = (
                "raise max_pixels if the file is trusted"
                if statuses.numpy()[0] == _TOO_LARGE
                else "replace or remove the file"
            )
            skip = "on_bad_example='skip' (flag --on_bad_example=skip)"
            return f"{messages[0]}. Either {hint}, or pass {skip}.".encode()
        return b""

    def _log_skipped(self, path: str, reason: str) -> None:
        with self._lock:
            self._skipped_count += 1
            count = self._skipped_count
        if count <= _LOG_ALL_SKIPPED_UP_TO or count % _LOG_EVERY_N_SKIPPED == 0:
            logging.warning(
                "Skipped %s%s: %s. %d invalid image file(s) skipped so far by this "
                "pipeline.",
                _MESSAGE_PREFIX.lower(),
                path,
                reason,
                count,
            )
        if count == _LOG_ALL_SKIPPED_UP_TO:
            logging.warning(
                "Further skipped image files are logged every %dth.", _LOG_EVERY_N_SKIPPED
            )


def describe_invalid_image(
    path: str, max_pixels: int, image_size: Optional[tuple[int, int]] = None
) -> str:
    """Return why the file at `path` cannot be used as an image, as a clause.

    `image_size` is the (height, width) found when the image is too large. Otherwise
    the file is read and checked again here: existence, emptiness, the format's magic
    bytes, a missing end marker (truncation), then a full decode for the decoder's
    own message.
    """
    if image_size is not None:
        height, width = image_size
        return (
            f"the image is {width}x{height} = {height * width / 1e6:.1f} megapixels, "
            f"more than max_pixels={max_pixels}"
        )

    try:
        with tf.io.gfile.GFile(path, "rb") as file:
            contents = file.read()
    except tf.errors.NotFoundError:
        return "the file does not exist"
    except (tf.errors.OpError, OSError) as error:
        return f"the file cannot be read ({error})"

    if not contents:
        return "the file is empty"
    image_format = _sniff_format(contents)
    if image_format is None:
        return (
            "the file is not a JPEG, PNG, GIF, BMP, WebP or JPEG XL image (it starts "
            f"with the bytes {contents[:8].hex(' ')})"
        )
    if image_format == "JPEG" and b"\xff\xd9" not in contents[-2:]:
        return (
            "the JPEG data ends without its end-of-image marker FF D9, so the file is "
            "probably truncated"
        )
    if image_format == "PNG" and b"IEND" not in contents[-12:]:
        return "the PNG data ends without its IEND chunk, so the file is probably truncated"
    if image_format == "WebP":
        reason = _describe_invalid_webp(contents)
        if reason:
            return reason

    try:
        decode_image(contents)
    except tf.errors.InvalidArgumentError as error:
        return (
            f"the {image_format} decoder rejected the data, which is probably corrupt "
            f"({_op_message(error)})"
        )
    return (
        "reading or decoding it failed in the pipeline but succeeded when retried, "
        "which points to a transient read error"
    )


def _describe_invalid_webp(contents: bytes) -> Optional[str]:
    """Return what is wrong with a WebP file's header or length, or None."""
    try:
        webp_header.parse_size(contents)
    except webp_header.WebPHeaderError as error:
        return str(error)
    # The RIFF header stores the length of the rest of the file.
    expected_length = 8 + int.from_bytes(contents[4:8], "little")
    if len(contents) < expected_length:
        return (
            f"the WebP data ends after {len(contents)} bytes, but its RIFF header gives "
            f"{expected_length}, so the file is probably truncated"
        )
    if webp_header.is_animation_without_alpha(contents):
        return (
            "the file is an animated WebP without alpha, which TensorFlow 2.21 cannot "
            "decode, so save its first frame as a still image or re-encode it with alpha"
        )
    return None


def _sniff_format(contents: bytes) -> Optional[str]:
    if contents.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if contents.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if contents.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if contents.startswith(b"BM"):
        return "BMP"
    if webp_header.is_webp(contents):
        return "WebP"
    if contents.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    return None


def _op_message(error: tf.errors.OpError) -> str:
    # Eager op errors read "{{function_node ...}} message [Op:Name] name: ".
    message = re.sub(r"^\{\{[^}]*\}\}\s*", "", error.message)
    return re.sub(r"\s*\[Op:.*$", "", message, flags=re.S).strip()


@contextlib.contextmanager
def raise_invalid_image_errors() -> Iterator[None]:
    """Turn a pipeline's invalid-image InvalidArgumentError into an InvalidImageError.

    TensorFlow wraps the message in the names of the failing ops; the new error has
    only the message, which names the file. Other errors pass through unchanged.

        with images.raise_invalid_image_errors():
            model.fit(dataset)
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        message = invalid_image_message(str(error))
        if message is None:
            raise
        raise InvalidImageError(message) from error


def invalid_image_message(error_text: str) -> Optional[str]:
    """Return the invalid-image message inside a TensorFlow error text, or None."""
    start = error_text.find(_MESSAGE_PREFIX)
    if start < 0:
        return None
    # The Assert op prints its data C-escaped, as "[message]" followed by
    # "\n\t [[{{...}}]]" with the failing node's name.
    end = error_text.find("]\n\t [[", start)
    if end < 0:
        end = error_text.rfind("]", start)
    escaped = error_text[start:end] if end > start else error_text[start:]
    return _unescape_c(escaped)


def _unescape_c(text: str) -> str:
    """Undo C escaping (`\\n`, `\\'`, octal `\\303`), as absl::CEscape writes it."""
    named = {b"n": b"\n", b"t": b"\t", b"r": b"\r"}

    def replace(match: re.Match) -> bytes:
        octal, hexadecimal, character = match.groups()
        if octal:
            return bytes([int(octal, 8) & 0xFF])
        if hexadecimal:
            return bytes([int(hexadecimal, 16)])
        return named.get(character, character)

    raw = text.encode("utf-8", "surrogateescape")
    raw = re.sub(rb"\\(?:([0-7]{3})|x([0-9a-fA-F]{2})|(.))", replace, raw, flags=re.S)
    return raw.decode("utf-8", "replace")
