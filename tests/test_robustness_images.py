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
from lnet_anet_tf.data.table import CelebATable

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
    jpeg = _encode(Image.fromarray(_gradient()), "JPEG", quality=95)
    png = _encode(Image.fromarray(_gradient()), "PNG")
    return [
        ("empty.jpg", b"", "the file is empty"),
        ("half.jpg", jpeg[: len(jpeg) // 2], "probably truncated"),
        ("no_end_marker.jpg", jpeg[:-2], "probably truncated"),
        ("half.png", png[: len(png) // 2], "probably truncated"),
        ("no_iend.png", png[:-12], "probably truncated"),
        ("text.jpg", b"this is not an image\n", "is not a JPEG, PNG"),
        ("corrupt.png", png[:41] + bytes(20) + png[61:], "decoder rejected the data"),
    ]


INVALID_CASES = _invalid_cases()


def _bomb_cases():
    """Files whose header declares a huge size but whose data is that of a 32x32 image.

    Decoding one would fail on the data, or allocate gigabytes, so the header size
    in the message shows that the file was rejected without being decoded.
    """
    image = Image.fromarray(_gradient())
    bmp = _encode(image, "BMP")
    gif = _encode(image.convert("P"), "GIF")
    return [
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


@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg"])
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


def test_max_pixels_checked_after_decoding_webp(tmp_path):
    # WebP headers are not parsed, so the size is checked once the image is decoded.
    contents = next(case[1] for case in VALID_CASES if case[0] == "lossless.webp")
    path = write_file(tmp_path, "lossless.webp", contents)

    with pytest.raises(images.InvalidImageError, match=f"32x32 .* more than max_pixels={SIDE * SIDE - 1}"):
        _read_all([path], max_pixels=SIDE * SIDE - 1)
