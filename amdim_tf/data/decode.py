"""Decoding: encoded image bytes into bounded uint8 RGB, and the gate in front of it.

This file owns the two halves of "an image file becomes pixels without unbounded
memory":

- `refusal(head, max_pixels)`, the decode gate: from the first bytes of a file (its
  header: PNG IHDR, GIF logical screen, BMP info header, WebP VP8/VP8L/VP8X, JPEG SOF)
  the number of pixels the decoder would allocate, and a one-line reason to refuse the
  image when that exceeds `data.max_pixels`. Every source that reads encoded images
  runs it over each payload in its up-front scan, so an image refused here is skipped
  and counted like one that does not decode, and no consumer ever decodes it.
- `decode_image` / `decode_file`, the decoder inside tf.data: any format TensorFlow
  decodes (JPEG, PNG, GIF, BMP, WebP) -> uint8 [H, W, 3], longer side at most
  `MAX_DECODE_SIDE`. JPEGs are decoded at a reduced DCT scale; anything still larger is
  resized with antialiasing, so a cache of decoded images stays small.

Why a hand-written header reader: TensorFlow has a header-only size op for JPEG alone
(`tf.image.extract_jpeg_shape`); its other decoders allocate the full image before any
check. Pillow reads headers but is not a dependency of this library (only of
matplotlib), and would add its own decompression-bomb policy. The formats TF decodes
store their size at fixed places in the first bytes, so a few lines per format suffice.
"""

import struct

import tensorflow as tf

from amdim_tf.data.pixel_scale import PIXEL_MAX, to_uint8

# Longest decoded image side: 4x the largest preset view (128 px), so random crops still
# see detail, while 8 cached images of any size take 8 * 512 * 512 * 3 bytes, not GBs.
MAX_DECODE_SIDE = 512
# Every extension of a format tf.io.decode_image reads (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Bytes of a file the gate reads: PNG, GIF, BMP and WebP sizes sit in the first 30;
# a JPEG's SOF marker follows its APP segments (EXIF is at most 64 KiB).
HEADER_BYTES = 1 << 16
# JPEG DCT reductions, smallest first; see _decode_jpeg and jpeg_ratio.
_JPEG_RATIOS = (1, 2, 4, 8)


# -- the gate (Python, before any pixel is allocated) ----------------------------------


def _jpeg_size(head):
    """(height, width) from the first SOF marker of a JPEG, or None if not in `head`."""
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return height, width
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        i += 2 + length
    return None


def header_size(head: bytes) -> tuple[int, int] | None:
    """(height, width) that the header at the start of `head` declares, or None.

    None for a format this reader does not know or a header cut short; the decoder
    then decides (and a file it cannot decode is skipped as undecodable).
    """
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        if head[:6] in (b"GIF87a", b"GIF89a"):
            # The decoder allocates frames of the logical screen size.
            width, height = struct.unpack("<HH", head[6:10])
            return height, width
        if head[:2] == b"BM":
            (info_size,) = struct.unpack("<I", head[14:18])
            if info_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
                width, height = struct.unpack("<HH", head[18:22])
            else:
                width, height = struct.unpack("<ii", head[18:26])
            return abs(height), abs(width)  # a negative height is a top-down bitmap
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            chunk = head[12:16]
            if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame start code
                width, height = struct.unpack("<HH", head[26:30])
                return height & 0x3FFF, width & 0x3FFF
            if chunk == b"VP8L":  # lossless: 14-bit (size - 1) fields after 0x2f
                (bits,) = struct.unpack("<I", head[21:25])
                return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
            if chunk == b"VP8X":  # extended: 24-bit (canvas size - 1) fields
                width = int.from_bytes(head[24:27], "little") + 1
                height = int.from_bytes(head[27:30], "little") + 1
                return height, width
            return None
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(head)
    except struct.error:  # a header cut short
        return None
    return None


def jpeg_ratio(side: int) -> int:
    """The DCT reduction `decode_image` uses for a JPEG whose longer side is `side`."""
    return max(r for r in _JPEG_RATIOS if r == 1 or side >= r * MAX_DECODE_SIDE)


def decoded_pixels(head: bytes) -> int | None:
    """Pixels the decoder allocates for the image whose header starts `head`, or None."""
    size = header_size(head)
    if size is None:
        return None
    height, width = size
    if head[:2] == b"\xff\xd8":
        r = jpeg_ratio(max(height, width))
        height, width = -(-height // r), -(-width // r)
    return height * width


def refusal(head: bytes, max_pixels: int) -> str | None:
    """Why the image whose header starts `head` must not be decoded, or None.

    max_pixels: the bound (`data.max_pixels`); 0 or less turns the gate off.
    """
    if max_pixels <= 0:
        return None
    pixels, size = decoded_pixels(head), header_size(head)
    if pixels is None or size is None or pixels <= max_pixels:
        return None
    height, width = size
    return (
        f"image is {width}x{height}, {pixels:,} pixels to decode, more than "
        f"data.max_pixels={max_pixels:,}; shrink it or raise data.max_pixels"
    )


def read_head(path: bytes | str) -> bytes:
    """The first HEADER_BYTES of a (regular) file: what `refusal` reads."""
    with open(path, "rb") as f:
        return f.read(HEADER_BYTES)


# -- the decoder (TF ops, inside tf.data) ----------------------------------------------


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, C] with C in 1..4 -> [H, W, 3] (gray is tiled, alpha dropped)."""
    channels = tf.shape(image)[-1]
    gray = lambda: tf.tile(image[..., :1], [1, 1, 3])
    rgb = lambda: image[..., :3]
    out = tf.cond(channels < 3, gray, rgb)
    return tf.ensure_shape(out, [None, None, 3])


def bound_size(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] -> longer side at most MAX_DECODE_SIDE; smaller images unchanged."""
    hw = tf.shape(image)[:2]
    side = tf.reduce_max(hw)

    def shrink():
        scale = MAX_DECODE_SIDE / tf.cast(side, tf.float32)
        size = tf.maximum(1, tf.cast(tf.round(tf.cast(hw, tf.float32) * scale), tf.int32))
        # Antialiasing averages the pixels a plain bilinear resize would skip.
        out = tf.image.resize(image, size, method="bilinear", antialias=True)
        return to_uint8(out, peak=PIXEL_MAX)

    return tf.cond(side > MAX_DECODE_SIDE, shrink, lambda: image)


def _decode_jpeg(contents):
    # A big JPEG is decoded at 1/2, 1/4 or 1/8 scale in libjpeg's DCT (cheap, and never
    # at full size in memory): the largest reduction that still leaves a longer side of
    # MAX_DECODE_SIDE or more (jpeg_ratio is the same rule, for the gate). Up to
    # 2 * MAX_DECODE_SIDE the full-scale decode is used, which INTEGER_ACCURATE makes
    # match PIL bit for bit (see ../shared/data/README.md).
    side = tf.reduce_max(tf.image.extract_jpeg_shape(contents)[:2])
    thresholds = tf.constant(_JPEG_RATIOS[1:], tf.int32) * MAX_DECODE_SIDE
    branch = tf.reduce_sum(tf.cast(side >= thresholds, tf.int32))

    def at(ratio):
        return lambda: tf.io.decode_jpeg(
            contents, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
        )

    return tf.switch_case(branch, [at(r) for r in _JPEG_RATIOS])


def decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Any supported encoding -> uint8 [H, W, 3], longer side <= MAX_DECODE_SIDE."""

    def other():
        image = tf.io.decode_image(contents, dtype=tf.uint8, expand_animations=False)
        return to_rgb(image)

    image = tf.cond(tf.io.is_jpeg(contents), lambda: _decode_jpeg(contents), other)
    return tf.ensure_shape(bound_size(tf.ensure_shape(image, [None, None, 3])), [None, None, 3])


def decode_file(path: tf.Tensor) -> tf.Tensor:
    """A file path (string tensor) -> uint8 [H, W, 3], as `decode_image`."""
    return decode_image(tf.io.read_file(path))


def decoded_image(image: tf.Tensor) -> tf.Tensor:
    """An already decoded image (tfds) -> uint8 [H, W, 3], longer side bounded."""
    return bound_size(to_rgb(image))
