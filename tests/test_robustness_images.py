"""Robustness of image reading: unusual encodings, damaged files and decompression bombs.

Every file goes through `pipeline.whole_image_dataset`, the pipeline of LNet_o and of
the cascade's evaluation. Valid files must give the same pixels as a reference
decoder, and invalid ones an error (or, under on_bad_example="skip", a skipped
file) that names the file.

EXIF orientation is not applied: TensorFlow's decoders ignore it, and CelebA's
boxes and landmarks are in the coordinates of the stored pixels, so applying it
would move every annotation of a rotated photo.
"""

import io
import logging
import os
import re
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from lnet_anet_tf import attributes
from lnet_anet_tf import preprocessing
from lnet_anet_tf.data import images
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.data import webp_header
from lnet_anet_tf.data.table import CelebATable

import robustness_image_rss

SIDE = 32
_LEVEL = 1 / 127.5  # one uint8 level after `preprocessing.normalize`


def _gradient(height: int = SIDE, width: int = SIDE) -> np.ndarray:
    """Return a smooth uint8 RGB image, which JPEG encodes with small errors."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (height + width)], -1).astype(
        np.uint8
    )


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png(width: int, height: int, bit_depth: int, color_type: int, rows) -> bytes:
    """Encode a PNG from an iterable of raw rows (filter byte excluded), compressing as it goes."""
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b"\x00" + row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def _png_16_bit_rgb(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    rows = (pixels[row].astype(">u2").tobytes() for row in range(height))
    return _png(width, height, 16, 2, rows)


def _with_png_size(contents: bytes, width: int, height: int) -> bytes:
    """Rewrite the size in a PNG's IHDR chunk, with a valid CRC, keeping the pixel data."""
    ihdr = contents[12:29]
    patched = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    return contents[:12] + patched + struct.pack(">I", zlib.crc32(patched)) + contents[33:]


def _with_jpeg_size(contents: bytes, width: int, height: int) -> bytes:
    """Rewrite the size in a JPEG's start-of-frame segment, keeping the pixel data."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        start = contents.find(marker)
        if start >= 0:
            size_offset = start + 5  # marker, length (2 bytes), precision (1 byte)
            return (
                contents[:size_offset]
                + struct.pack(">HH", height, width)
                + contents[size_offset + 4 :]
            )
    raise ValueError("no start-of-frame segment")


def _with_little_endian_size(contents: bytes, offset: int, fmt: str, width: int, height: int) -> bytes:
    size = struct.pack(fmt, width, height)
    return contents[:offset] + size + contents[offset + len(size) :]


def _with_lossy_webp_size(contents: bytes, width: int, height: int) -> bytes:
    """Rewrite the 14-bit sizes of a simple lossy WebP's 'VP8 ' frame header (offsets 26, 28)."""
    assert contents[12:16] == b"VP8 "
    return _with_little_endian_size(contents, 26, "<HH", width, height)


def _with_webp_canvas_size(contents: bytes, width: int, height: int) -> bytes:
    """Rewrite the canvas size of a 'VP8X' WebP: two uint24 sizes minus one from offset 24."""
    assert contents[12:16] == b"VP8X"
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return contents[:24] + size + contents[30:]


def _alpha_gradient(height: int = SIDE, width: int = SIDE) -> Image.Image:
    """Return an RGBA image whose alpha grows down the rows."""
    alpha = (np.arange(height)[:, None] * 255 // height + np.zeros((1, width))).astype(np.uint8)
    return Image.fromarray(np.dstack([_gradient(height, width), alpha]))


def _animated_webp(frame: Image.Image, **options) -> bytes:
    second = frame.transpose(Image.Transpose.ROTATE_180)
    return _encode(frame, "WEBP", save_all=True, append_images=[second], duration=100, **options)


# ---------------------------------------------------------------------------
# Valid files in unusual encodings: (file name, bytes, expected uint8 RGB, tolerance
# in uint8 levels). JPEG decoders differ by a few levels from Pillow's.


def _valid_cases():
    rgb = _gradient()
    image = Image.fromarray(rgb)
    gray_16 = (np.mgrid[0:SIDE, 0:SIDE][1] * 2047).astype(np.uint16)
    rgb_16 = rgb.astype(np.uint16) * 257 + np.arange(SIDE, dtype=np.uint16)[:, None, None]
    palette = image.convert("P", palette=Image.ADAPTIVE, colors=16)

    cases = [
        ("baseline.jpg", _encode(image, "JPEG", quality=95), rgb, 8),
        ("progressive.jpg", _encode(image, "JPEG", quality=95, progressive=True), rgb, 8),
        ("cmyk.jpg", _encode(image.convert("CMYK"), "JPEG", quality=95), rgb, 8),
        ("gray.jpg", _encode(image.convert("L"), "JPEG", quality=95), None, 8),
        ("gray_16_bit.png", _encode(Image.fromarray(gray_16), "PNG"),
         np.repeat((gray_16 >> 8).astype(np.uint8)[..., None], 3, -1), 1),
        ("rgb_16_bit.png", _png_16_bit_rgb(rgb_16), (rgb_16 >> 8).astype(np.uint8), 1),
        ("palette.png", _encode(palette, "PNG"), None, 0),
        ("palette_transparency.png", _encode(palette, "PNG", transparency=0), None, 0),
        ("gray_alpha.png", _encode(image.convert("LA"), "PNG"), None, 0),
        ("rgba.png", _encode(image.convert("RGBA"), "PNG"), rgb, 0),
        ("frames.gif", _encode(palette, "GIF", save_all=True, append_images=[palette]), None, 0),
        ("lossless.webp", _encode(image, "WEBP", lossless=True), rgb, 0),
        ("lossy.webp", _encode(image, "WEBP", quality=90), None, 2),
        # A 'VP8X' file with an 'ALPH' chunk, and an animation with alpha. TensorFlow
        # decodes both only to RGBA.
        ("alpha.webp", _encode(_alpha_gradient(), "WEBP", quality=90, exact=True), None, 2),
        ("animated_alpha.webp", _animated_webp(_alpha_gradient(), lossless=True, exact=True), None, 0),
    ]
    resolved = []
    for name, contents, expected, tolerance in cases:
        if expected is None:
            # Pillow's RGB conversion of the same file is the reference.
            expected = np.asarray(Image.open(io.BytesIO(contents)).convert("RGB"))
        resolved.append((name, contents, expected, tolerance))
    return resolved


VALID_CASES = _valid_cases()


def exif_rotated_jpeg() -> tuple[bytes, np.ndarray]:
    """Return a tall JPEG (32 high, 16 wide) tagged to display rotated 90 degrees clockwise."""
    stored = _gradient(SIDE, SIDE // 2)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif), stored


# ---------------------------------------------------------------------------
# Invalid files: (file name, bytes, words the error must contain).


def _invalid_cases():
    image = Image.fromarray(_gradient())
    jpeg = _encode(image, "JPEG", quality=95)
    png = _encode(image, "PNG")
    lossy_webp = _encode(image, "WEBP", quality=90)
    lossless_webp = _encode(image, "WEBP", lossless=True)
    return [
        ("empty.jpg", b"", "the file is empty"),
        ("half.jpg", jpeg[: len(jpeg) // 2], "probably truncated"),
        ("no_end_marker.jpg", jpeg[:-2], "probably truncated"),
        ("half.png", png[: len(png) // 2], "probably truncated"),
        ("no_iend.png", png[:-12], "probably truncated"),
        ("text.jpg", b"this is not an image\n", "is not a JPEG, PNG"),
        ("corrupt.png", png[:41] + bytes(20) + png[61:], "decoder rejected the data"),
        ("header_cut.webp", lossy_webp[:25], "the WebP header is truncated: the file ends after 25 bytes"),
        ("no_start_code.webp", lossy_webp[:23] + b"\x00\x00\x00" + lossy_webp[26:],
         "where the start code 9d 01 2a must be"),
        ("half.webp", lossless_webp[: len(lossless_webp) // 2], "probably truncated"),
        ("animated_no_alpha.webp", _animated_webp(image, lossless=True), "animated WebP without alpha"),
    ]


INVALID_CASES = _invalid_cases()


def _bomb_cases():
    """Files whose header declares a huge size but whose data is that of a 32x32 image.

    Decoding one would fail on the data, or allocate gigabytes, so the header size
    in the message shows that the file was rejected without being decoded. The
    lossless WebP is a real bomb: its 34 bytes decode to 16383x16383 black pixels,
    and `test_webp_bomb_memory_bounded` shows that it is not decoded.
    """
    image = Image.fromarray(_gradient())
    bmp = _encode(image, "BMP")
    gif = _encode(image.convert("P"), "GIF")
    lossy_webp = _encode(image, "WEBP", quality=90)
    extended_webp = _encode(_alpha_gradient(), "WEBP", quality=90)
    return [
        ("bomb_lossy.webp", _with_lossy_webp_size(lossy_webp, 16_383, 16_383), "16383x16383"),
        ("bomb_lossless.webp", robustness_image_rss.lossless_bomb(), "16383x16383"),
        ("bomb_extended.webp", _with_webp_canvas_size(extended_webp, 100_000, 100_000), "100000x100000"),
        ("bomb.png", _with_png_size(_encode(image, "PNG"), 100_000, 100_000), "100000x100000"),
        ("bomb.jpg", _with_jpeg_size(_encode(image, "JPEG"), 65_000, 65_000), "65000x65000"),
        ("bomb_progressive.jpg",
         _with_jpeg_size(_encode(image, "JPEG", progressive=True), 65_000, 65_000), "65000x65000"),
        ("bomb.gif", _with_little_endian_size(gif, 6, "<HH", 65_535, 65_535), "65535x65535"),
        ("bomb.bmp", _with_little_endian_size(bmp, 18, "<ii", 100_000, 100_000), "100000x100000"),
    ]


BOMB_CASES = _bomb_cases()


def write_file(directory, name: str, contents: bytes) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as file:
        file.write(contents)
    return path


def _table(paths) -> CelebATable:
    count = len(paths)
    return CelebATable(
        image_names=np.array([os.path.basename(path) for path in paths], dtype=str),
        attributes=np.zeros((count, attributes.NUM_ATTRIBUTES), np.uint8),
        wild_paths=np.array(paths, dtype=str),
    )


def _read_all(paths, **options) -> list:
    """Run `whole_image_dataset` on `paths`; return (index, image, window) per example."""
    options.setdefault("on_bad_example", "error")
    dataset = pipeline.whole_image_dataset(
        _table(paths), SIDE, 4, training=False, with_index=True, **options
    )
    examples = []
    with images.raise_invalid_image_errors():
        for features, _ in dataset:
            for index, image, window in zip(
                features["index"].numpy(), features["image"].numpy(), features["window"].numpy()
            ):
                examples.append((int(index), image, window))
    return examples


def _expected_image(pixels: np.ndarray) -> np.ndarray:
    normalized = preprocessing.normalize(tf.constant(pixels)[tf.newaxis])
    letterboxed, _ = preprocessing.letterbox(normalized, SIDE)
    return letterboxed[0].numpy()


class _RecordingHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def skip_run(tmp_path_factory):
    """Read every valid, invalid and bomb file in one pipeline with on_bad_example="skip".

    Returns the paths in pipeline order, the examples, the path of each case and
    the warnings logged. One pipeline run keeps the file fast.
    """
    directory = tmp_path_factory.mktemp("images")
    rotated, _ = exif_rotated_jpeg()
    valid = [write_file(directory, name, contents) for name, contents, _, _ in VALID_CASES]
    valid.append(write_file(directory, "rotated.jpg", rotated))
    invalid = [write_file(directory, name, contents) for name, contents, _ in INVALID_CASES]
    invalid.append(os.path.join(str(directory), "missing.jpg"))
    bombs = [write_file(directory, name, contents) for name, contents, _ in BOMB_CASES]
    # Valid files between the invalid ones, across several of the loader's 16-file chunks.
    paths = list(valid)
    for bad in invalid + bombs:
        paths += [bad] + valid[: len(paths) % 5]

    handler = _RecordingHandler()
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(handler)
    try:
        examples = _read_all(paths, on_bad_example="skip")
    finally:
        absl_logger.removeHandler(handler)
    return {
        "paths": paths,
        "examples": examples,
        "valid": set(valid),
        "case_paths": {os.path.basename(path): path for path in valid + invalid + bombs},
        "warnings": handler.messages,
    }


def _examples_of(skip_run, name: str) -> list:
    path = skip_run["case_paths"][name]
    return [(image, window) for index, image, window in skip_run["examples"] if skip_run["paths"][index] == path]


def _warnings_of(skip_run, name: str) -> list:
    path = skip_run["case_paths"][name]
    return [message for message in skip_run["warnings"] if f"invalid image file {path}:" in message]


# ---------------------------------------------------------------------------
# Valid files.


@pytest.mark.parametrize(
    "name, contents, expected, tolerance", VALID_CASES, ids=[case[0] for case in VALID_CASES]
)
def test_unusual_encoding_decodes(skip_run, name, contents, expected, tolerance):
    examples = _examples_of(skip_run, name)

    assert examples, f"{name} was skipped: {skip_run['warnings']}"
    for image, window in examples:
        np.testing.assert_allclose(image, _expected_image(expected), atol=(tolerance + 0.5) * _LEVEL)
        np.testing.assert_allclose(window, [0.0, 0.0, 1.0, 1.0])


def test_exif_orientation_not_applied(skip_run):
    contents, stored = exif_rotated_jpeg()
    assert Image.open(io.BytesIO(contents)).getexif()[0x0112] == 6

    examples = _examples_of(skip_run, "rotated.jpg")

    assert examples
    for image, window in examples:
        # The stored 32x16 pixels, letterboxed as a tall image: padding left and right.
        np.testing.assert_allclose(window, [0.0, 0.25, 1.0, 0.75])
        np.testing.assert_allclose(image, _expected_image(stored), atol=10.5 * _LEVEL)


def test_skip_keeps_every_valid_file_in_order(skip_run):
    paths = skip_run["paths"]

    indices = [index for index, _, _ in skip_run["examples"]]

    assert indices == [row for row, path in enumerate(paths) if path in skip_run["valid"]]


# ---------------------------------------------------------------------------
# Invalid files.


@pytest.mark.parametrize(
    "name, contents, reason", INVALID_CASES, ids=[case[0] for case in INVALID_CASES]
)
def test_invalid_file_skipped_with_reason(skip_run, name, contents, reason):
    warnings = _warnings_of(skip_run, name)

    assert len(warnings) == 1, skip_run["warnings"]
    assert reason in warnings[0]
    assert _examples_of(skip_run, name) == []


def test_missing_file_skipped_with_reason(skip_run):
    warnings = _warnings_of(skip_run, "missing.jpg")

    assert len(warnings) == 1, skip_run["warnings"]
    assert "the file does not exist" in warnings[0]


@pytest.mark.parametrize("name", ["empty.jpg", "half.jpg", "no_iend.png"])
def test_invalid_file_raises_naming_it(tmp_path, name):
    contents, reason = next((case[1], case[2]) for case in INVALID_CASES if case[0] == name)
    good = write_file(tmp_path, "good.png", _encode(Image.fromarray(_gradient()), "PNG"))
    bad = write_file(tmp_path, name, contents)

    with pytest.raises(images.InvalidImageError) as raised:
        _read_all([good, bad])

    message = str(raised.value)
    assert f"Invalid image file {bad}:" in message
    assert reason in message
    assert "on_bad_example='skip'" in message


def test_missing_file_raises_naming_it(tmp_path):
    missing = os.path.join(str(tmp_path), "missing.jpg")

    with pytest.raises(images.InvalidImageError, match="missing.jpg: the file does not exist"):
        _read_all([missing])


# ---------------------------------------------------------------------------
# Decompression bombs.


@pytest.mark.parametrize("name, contents, size", BOMB_CASES, ids=[case[0] for case in BOMB_CASES])
def test_header_bomb_skipped_without_decoding(skip_run, name, contents, size):
    warnings = _warnings_of(skip_run, name)

    assert len(warnings) == 1, skip_run["warnings"]
    assert f"the image is {size}" in warnings[0]
    assert f"more than max_pixels={images.DEFAULT_MAX_PIXELS}" in warnings[0]


@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg", "bomb_lossless.webp"])
def test_header_bomb_raises_naming_it(tmp_path, name):
    contents, size = next((case[1], case[2]) for case in BOMB_CASES if case[0] == name)
    path = write_file(tmp_path, name, contents)

    with pytest.raises(images.InvalidImageError) as raised:
        _read_all([path])

    message = str(raised.value)
    assert f"Invalid image file {path}: the image is {size}" in message
    assert "raise max_pixels if the file is trusted" in message


def test_real_png_bomb_rejected(tmp_path):
    # 8000 x 8000 gray pixels: 64 megapixels, 192 MB decoded as RGB, 62 KB on disk.
    side = 8000
    contents = _png(side, side, 8, 0, (bytes(side) for _ in range(side)))
    assert len(contents) < 100_000
    path = write_file(tmp_path, "zeros.png", contents)

    with pytest.raises(images.InvalidImageError, match=f"the image is {side}x{side} = 64.0 megapixels"):
        _read_all([path])


def test_max_pixels_parameter_is_the_limit(tmp_path):
    contents = next(case[1] for case in VALID_CASES if case[0] == "baseline.jpg")
    path = write_file(tmp_path, "baseline.jpg", contents)

    assert len(_read_all([path], max_pixels=SIDE * SIDE)) == 1
    with pytest.raises(images.InvalidImageError, match=f"32x32 .* more than max_pixels={SIDE * SIDE - 1}"):
        _read_all([path], max_pixels=SIDE * SIDE - 1)
    assert _read_all([path], max_pixels=SIDE * SIDE - 1, on_bad_example="skip") == []


def test_max_pixels_limits_webp(tmp_path):
    contents = next(case[1] for case in VALID_CASES if case[0] == "lossless.webp")
    path = write_file(tmp_path, "lossless.webp", contents)

    assert len(_read_all([path], max_pixels=SIDE * SIDE)) == 1
    with pytest.raises(images.InvalidImageError, match=f"32x32 .* more than max_pixels={SIDE * SIDE - 1}"):
        _read_all([path], max_pixels=SIDE * SIDE - 1)


# Peak RSS growth allowed while the 34-byte lossless WebP bomb is rejected. Decoding
# it raised the peak by 932 MiB before its header was parsed, and rejecting it from
# the header by about 4 MiB (`python tests/robustness_image_rss.py`).
_BOMB_RSS_GROWTH_BOUND = 64 * 2**20


def test_webp_bomb_memory_bounded(tmp_path):
    path = write_file(tmp_path, "bomb.webp", robustness_image_rss.lossless_bomb())

    measured = robustness_image_rss.measure(path)

    assert measured["examples"] == 0
    assert len(measured["warnings"]) == 1, measured
    assert f"{path}: the image is 16383x16383 = 268.4 megapixels" in measured["warnings"][0]
    assert measured["rss_growth_bytes"] < _BOMB_RSS_GROWTH_BOUND, measured


# ---------------------------------------------------------------------------
# WebP headers: the size that `webp_header` reads in Python and in TensorFlow.


def _webp_size_cases():
    """Real Pillow files of 41x23 pixels (width x height): (name, bytes, first chunk)."""
    width, height = 41, 23
    image = Image.fromarray(_gradient(height, width))
    alpha = _alpha_gradient(height, width)
    exif = Image.Exif()
    exif[0x010E] = "a description"  # ImageDescription, which moves the file to 'VP8X'
    return [
        ("lossy", _encode(image, "WEBP", quality=90), b"VP8 "),
        ("lossless", _encode(image, "WEBP", lossless=True), b"VP8L"),
        ("lossless_alpha", _encode(alpha, "WEBP", lossless=True), b"VP8L"),
        ("lossy_alpha", _encode(alpha, "WEBP", quality=90), b"VP8X"),
        ("lossy_exif", _encode(image, "WEBP", quality=90, exif=exif), b"VP8X"),
        ("animated_alpha", _animated_webp(alpha, lossless=True), b"VP8X"),
    ]


WEBP_SIZE_CASES = _webp_size_cases()


def _tensor_size(contents: bytes) -> tuple[int, int]:
    height, width = images.header_image_size(tf.constant(contents))
    return int(height), int(width)


@pytest.mark.parametrize("name, contents, chunk", WEBP_SIZE_CASES, ids=[case[0] for case in WEBP_SIZE_CASES])
def test_webp_header_size_matches_real_size(name, contents, chunk):
    width, height = Image.open(io.BytesIO(contents)).size

    assert contents[12:16] == chunk
    assert (width, height) == (41, 23)
    assert webp_header.parse_size(contents) == (height, width)
    assert _tensor_size(contents) == (height, width)


@pytest.mark.parametrize(
    "width, height",
    [(1, 1), (robustness_image_rss.MAX_LOSSLESS_SIDE, 1), (1, robustness_image_rss.MAX_LOSSLESS_SIDE), (12_345, 6_789)],
)
def test_webp_lossless_size_fields(width, height):
    contents = robustness_image_rss.with_lossless_size(robustness_image_rss.solid_lossless_webp(), width, height)

    assert webp_header.parse_size(contents) == (height, width)
    assert _tensor_size(contents) == (height, width)


@pytest.mark.parametrize("width, height", [(1, 1), (2**24, 1), (1, 2**24), (300_000, 70_000)])
def test_webp_canvas_size_fields(width, height):
    extended = next(case[1] for case in WEBP_SIZE_CASES if case[0] == "lossy_alpha")
    contents = _with_webp_canvas_size(extended, width, height)

    assert webp_header.parse_size(contents) == (height, width)
    assert _tensor_size(contents) == (height, width)


@pytest.mark.parametrize("name", ["lossy", "lossless", "lossy_alpha"])
def test_webp_header_cut_raises_clear_error(name):
    contents = next(case[1] for case in WEBP_SIZE_CASES if case[0] == name)

    for length in range(webp_header.HEADER_LENGTH):
        cut = contents[:length]
        with pytest.raises(webp_header.WebPHeaderError) as raised:
            webp_header.parse_size(cut)
        if length < 12:
            assert "does not start with the WebP signature" in str(raised.value)
            # Not a WebP file for TensorFlow either, so no size is read.
            assert _tensor_size(cut) == (-1, -1)
        else:
            assert f"the WebP header is truncated: the file ends after {length} bytes" in str(raised.value)
            with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid WebP header"):
                _tensor_size(cut)


def _replace(contents: bytes, offset: int, data: bytes) -> bytes:
    return contents[:offset] + data + contents[offset + len(data) :]


def _malformed_webp_cases():
    lossy, lossless = (next(case[1] for case in WEBP_SIZE_CASES if case[0] == name) for name in ("lossy", "lossless"))
    return [
        ("unknown_first_chunk", _replace(lossy, 12, b"ALPH"), "the first chunk is 'ALPH', but it must be"),
        ("no_start_code", _replace(lossy, 23, b"\x9d\x01\x2b"), "has 9d 01 2b where the start code 9d 01 2a"),
        ("zero_width", _replace(lossy, 26, b"\x00\xc0"), "gives the size 0x23, and neither side may be 0"),
        ("no_signature", _replace(lossless, 20, b"\x2e"), "starts with 0x2e, not the signature 0x2f"),
        ("version_1", _replace(lossless, 24, bytes([lossless[24] | 0x20])), "has version 1"),
    ]


MALFORMED_WEBP_CASES = _malformed_webp_cases()


@pytest.mark.parametrize(
    "name, contents, reason", MALFORMED_WEBP_CASES, ids=[case[0] for case in MALFORMED_WEBP_CASES]
)
def test_malformed_webp_header_raises_clear_error(tmp_path, name, contents, reason):
    with pytest.raises(webp_header.WebPHeaderError, match=re.escape(reason)):
        webp_header.parse_size(contents)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid WebP header"):
        _tensor_size(contents)

    path = write_file(tmp_path, f"{name}.webp", contents)
    with pytest.raises(images.InvalidImageError) as raised:
        _read_all([path])
    assert f"Invalid image file {path}: the WebP header is malformed: " in str(raised.value)
    assert reason in str(raised.value)
