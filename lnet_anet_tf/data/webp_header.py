"""The image size in a WebP file's header, read without decoding the image.

A WebP file is a RIFF container: "RIFF", the uint32 size of the rest of the file,
"WEBP", then chunks of a FourCC, a uint32 size and the payload. The first chunk
gives the size, always within the first 30 bytes of the file:

| first chunk | payload from byte 20 | size |
| --- | --- | --- |
| `VP8 ` (lossy) | 3-byte frame tag, start code 9d 01 2a, uint16 width, uint16 height | the low 14 bits of each |
| `VP8L` (lossless) | signature 0x2f, then 32 bits read from the least significant: width - 1 (14), height - 1 (14), alpha (1), version (3) | 1 + each field |
| `VP8X` (extended) | flags (1 byte), reserved (3 bytes), uint24 canvas width - 1, uint24 canvas height - 1 | 1 + each field |

All integers are little-endian. Sources: the WebP container specification
(libwebp's `doc/webp-container-spec.txt`) and libwebp's header readers
`VP8GetInfo` ('VP8 ') and `ReadImageInfo` ('VP8L').

The checks here are the part of those readers' checks that concerns these
bytes: the start code and nonzero sides for
'VP8 ', the signature and version 0 for 'VP8L'. libwebp also checks the VP8 frame
tag, so a header that passes here can still fail to decode. An image that decodes
has the size read here: libwebp rejects a `VP8X` still image whose bitstream size
differs from the canvas, and TensorFlow decodes an animation onto the canvas.

`parse_size` reads a file's bytes in Python and names what is wrong with a header.
`size_tensor` computes the same size and validity with TensorFlow ops, for graphs
(tf.data pipelines and the SavedModel) that cannot call Python.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Every header field that `parse_size` reads ends before this byte.
HEADER_LENGTH = 30

_RIFF = b"RIFF"
_WEBP = b"WEBP"
_LOSSY = b"VP8 "
_LOSSLESS = b"VP8L"
_EXTENDED = b"VP8X"
_FIRST_CHUNKS = (_LOSSY, _LOSSLESS, _EXTENDED)

_FOURCC_OFFSET = 12
_PAYLOAD_OFFSET = 20

# 'VP8 ': the start code follows the 3-byte frame tag, then the two uint16 sizes.
_VP8_START_CODE = b"\x9d\x01\x2a"
_VP8_START_CODE_OFFSET = _PAYLOAD_OFFSET + 3
_VP8_WIDTH_OFFSET = _PAYLOAD_OFFSET + 6
_VP8_HEIGHT_OFFSET = _PAYLOAD_OFFSET + 8
_VP8_SIZE_MASK = 0x3FFF  # the top 2 bits of each uint16 are the upscaling factor

# 'VP8L': the signature byte, then the 32 packed bits.
_VP8L_SIGNATURE = 0x2F
_VP8L_BITS_OFFSET = _PAYLOAD_OFFSET + 1
_VP8L_SIZE_BITS = 14
_VP8L_ALPHA_SHIFT = 28
_VP8L_VERSION_SHIFT = 29

# 'VP8X': 4 bytes of flags and reserved bits, then the two uint24 sizes minus one.
_VP8X_WIDTH_OFFSET = _PAYLOAD_OFFSET + 4
_VP8X_HEIGHT_OFFSET = _PAYLOAD_OFFSET + 7
_VP8X_ALPHA_FLAG = 0x10
_VP8X_ANIMATION_FLAG = 0x02


class WebPHeaderError(ValueError):
    """A WebP header that is truncated or malformed; the message is a clause."""


def is_webp(contents: bytes) -> bool:
    """Return whether the bytes start like a WebP file ("RIFF", 4 bytes, "WEBP")."""
    return contents[:4] == _RIFF and contents[8:12] == _WEBP


def parse_size(contents: bytes) -> tuple[int, int]:
    """Return (height, width) from the header of a WebP file's bytes.

    Raises WebPHeaderError when the bytes are not a WebP file, end inside the
    header, or hold a first chunk whose header libwebp rejects.
    """
    if not is_webp(contents):
        raise WebPHeaderError(
            f"the file does not start with the WebP signature RIFF....WEBP (it starts "
            f"with the bytes {contents[:12].hex(' ')})"
        )
    fourcc = contents[_FOURCC_OFFSET : _FOURCC_OFFSET + 4]
    if len(fourcc) == 4 and fourcc not in _FIRST_CHUNKS:
        raise WebPHeaderError(
            f"the WebP header is malformed: the first chunk is {_quote(fourcc)}, but it "
            "must be 'VP8 ', 'VP8L' or 'VP8X'"
        )
    if len(contents) < HEADER_LENGTH:
        raise WebPHeaderError(
            f"the WebP header is truncated: the file ends after {len(contents)} bytes, "
            f"and the header takes {HEADER_LENGTH}"
        )

    if fourcc == _LOSSY:
        return _parse_lossy(contents)
    if fourcc == _LOSSLESS:
        return _parse_lossless(contents)
    height = _little_endian(contents, _VP8X_HEIGHT_OFFSET, 3) + 1
    width = _little_endian(contents, _VP8X_WIDTH_OFFSET, 3) + 1
    return height, width


def is_animation_without_alpha(contents: bytes) -> bool:
    """Return whether a 'VP8X' header sets the animation flag but not the alpha flag.

    TensorFlow 2.21 decodes animations only to RGBA and rejects such a file.
    """
    if contents[_FOURCC_OFFSET : _FOURCC_OFFSET + 4] != _EXTENDED or len(contents) <= _PAYLOAD_OFFSET:
        return False
    flags = contents[_PAYLOAD_OFFSET]
    return bool(flags & _VP8X_ANIMATION_FLAG) and not flags & _VP8X_ALPHA_FLAG


def _parse_lossy(contents: bytes) -> tuple[int, int]:
    start_code = contents[_VP8_START_CODE_OFFSET : _VP8_START_CODE_OFFSET + 3]
    if start_code != _VP8_START_CODE:
        raise WebPHeaderError(
            "the WebP header is malformed: the 'VP8 ' frame header has "
            f"{start_code.hex(' ')} where the start code 9d 01 2a must be"
        )
    height = _little_endian(contents, _VP8_HEIGHT_OFFSET, 2) & _VP8_SIZE_MASK
    width = _little_endian(contents, _VP8_WIDTH_OFFSET, 2) & _VP8_SIZE_MASK
    if height == 0 or width == 0:
        raise WebPHeaderError(
            f"the WebP header is malformed: the 'VP8 ' frame header gives the size "
            f"{width}x{height}, and neither side may be 0"
        )
    return height, width


def _parse_lossless(contents: bytes) -> tuple[int, int]:
    signature = contents[_PAYLOAD_OFFSET]
    if signature != _VP8L_SIGNATURE:
        raise WebPHeaderError(
            f"the WebP header is malformed: the 'VP8L' chunk starts with 0x{signature:02x}, "
            f"not the signature 0x{_VP8L_SIGNATURE:02x}"
        )
    bits = _little_endian(contents, _VP8L_BITS_OFFSET, 4)
    version = bits >> _VP8L_VERSION_SHIFT
    if version != 0:
        raise WebPHeaderError(
            f"the WebP header is malformed: the 'VP8L' chunk has version {version}, and "
            "only version 0 is defined"
        )
    mask = (1 << _VP8L_SIZE_BITS) - 1
    width = (bits & mask) + 1
    height = ((bits >> _VP8L_SIZE_BITS) & mask) + 1
    return height, width


def _little_endian(contents: bytes, offset: int, length: int) -> int:
    return int.from_bytes(contents[offset : offset + length], "little")


def _quote(fourcc: bytes) -> str:
    return repr(fourcc.decode("latin-1"))


def size_tensor(header_bytes: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Return ([height, width] int64, is_valid bool) from a WebP header, as `parse_size` would.

    `header_bytes` is int64 [n] with n >= HEADER_LENGTH: the file's first bytes,
    zero-padded past its end. `length` is the file's length in bytes. `is_valid` is
    False exactly where `parse_size` raises, and the size is then meaningless. The
    ops have no branches, so they run cheaply inside tf.data for every file.
    """
    is_signature = signature_matches(header_bytes)
    is_lossy = _bytes_equal(header_bytes, _FOURCC_OFFSET, _LOSSY)
    is_lossless = _bytes_equal(header_bytes, _FOURCC_OFFSET, _LOSSLESS)
    is_extended = _bytes_equal(header_bytes, _FOURCC_OFFSET, _EXTENDED)

    lossy_size = tf.stack([
        tf.bitwise.bitwise_and(_tensor_little_endian(header_bytes, _VP8_HEIGHT_OFFSET, 2), _VP8_SIZE_MASK),
        tf.bitwise.bitwise_and(_tensor_little_endian(header_bytes, _VP8_WIDTH_OFFSET, 2), _VP8_SIZE_MASK),
    ])
    lossy_valid = tf.logical_and(
        _bytes_equal(header_bytes, _VP8_START_CODE_OFFSET, _VP8_START_CODE),
        tf.reduce_all(lossy_size > 0),
    )

    bits = _tensor_little_endian(header_bytes, _VP8L_BITS_OFFSET, 4)
    mask = (1 << _VP8L_SIZE_BITS) - 1
    lossless_size = tf.stack([
        tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, _VP8L_SIZE_BITS), mask) + 1,
        tf.bitwise.bitwise_and(bits, mask) + 1,
    ])
    lossless_valid = tf.logical_and(
        tf.equal(header_bytes[_PAYLOAD_OFFSET], _VP8L_SIGNATURE),
        tf.equal(tf.bitwise.right_shift(bits, _VP8L_VERSION_SHIFT), 0),
    )

    extended_size = tf.stack([
        _tensor_little_endian(header_bytes, _VP8X_HEIGHT_OFFSET, 3) + 1,
        _tensor_little_endian(header_bytes, _VP8X_WIDTH_OFFSET, 3) + 1,
    ])

    size = tf.where(is_lossy, lossy_size, tf.where(is_lossless, lossless_size, extended_size))
    chunk_valid = tf.reduce_any(tf.stack([
        tf.logical_and(is_lossy, lossy_valid),
        tf.logical_and(is_lossless, lossless_valid),
        is_extended,
    ]))
    is_valid = tf.logical_and(
        tf.logical_and(is_signature, chunk_valid),
        tf.cast(length, tf.int64) >= HEADER_LENGTH,
    )
    return size, is_valid


def declares_alpha(header_bytes: tf.Tensor) -> tf.Tensor:
    """Return whether a WebP header declares alpha, which makes TensorFlow decode to RGBA.

    That is the alpha bit of a 'VP8L' header or the alpha flag of a 'VP8X' header,
    and False for 'VP8 ' and for bytes that are not a WebP header.
    NOTE: libwebp, which gives TensorFlow the channel count, also reads past the
    header: an 'ALPH' chunk counts as alpha even without the flag, and a 'VP8L'
    bitstream's bit replaces the flag. Such files break the container
    specification, and TensorFlow rejects the channel count chosen from this result.
    """
    bits = _tensor_little_endian(header_bytes, _VP8L_BITS_OFFSET, 4)
    lossless_alpha = tf.equal(tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, _VP8L_ALPHA_SHIFT), 1), 1)
    extended_alpha = tf.not_equal(tf.bitwise.bitwise_and(header_bytes[_PAYLOAD_OFFSET], _VP8X_ALPHA_FLAG), 0)
    is_lossless = _bytes_equal(header_bytes, _FOURCC_OFFSET, _LOSSLESS)
    is_extended = _bytes_equal(header_bytes, _FOURCC_OFFSET, _EXTENDED)
    return tf.logical_and(
        signature_matches(header_bytes),
        tf.logical_or(
            tf.logical_and(is_lossless, lossless_alpha), tf.logical_and(is_extended, extended_alpha)
        ),
    )


def signature_matches(header_bytes: tf.Tensor) -> tf.Tensor:
    """Return whether int64 bytes [n >= 12] start like a WebP file, as `is_webp` does."""
    return tf.logical_and(_bytes_equal(header_bytes, 0, _RIFF), _bytes_equal(header_bytes, 8, _WEBP))


def _bytes_equal(header_bytes: tf.Tensor, offset: int, expected: bytes) -> tf.Tensor:
    actual = header_bytes[offset : offset + len(expected)]
    return tf.reduce_all(tf.equal(actual, np.frombuffer(expected, np.uint8).astype(np.int64)))


def _tensor_little_endian(header_bytes: tf.Tensor, offset: int, length: int) -> tf.Tensor:
    place_values = np.array([256**i for i in range(length)], np.int64)
    return tf.reduce_sum(header_bytes[offset : offset + length] * place_values)
