"""Image checks with Pillow: real formats accepted, everything else refused with a reason."""

from __future__ import annotations

import struct
import zlib

import pytest

from daemon.providers.decode import ImageRejected, check_image, sniff_format
from tests.providers.conftest import make_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` with almost no data (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "name", "ext", "mime"),
    [
        ("PNG", "png", "png", "image/png"),
        ("JPEG", "jpeg", "jpg", "image/jpeg"),
        ("WEBP", "webp", "webp", "image/webp"),
        ("GIF", "gif", "gif", "image/gif"),
    ],
)
def test_real_images_are_accepted(fmt: str, name: str, ext: str, mime: str) -> None:
    data = make_image(fmt, (12, 7))
    image = check_image(data, max_pixels=1000)
    assert (image.format, image.ext, image.mime, image.width, image.height) == (
        name,
        ext,
        mime,
        12,
        7,
    )
    assert image.data == data
    assert sniff_format(data) == name
    assert "bytes" in repr(image) and len(repr(image)) < 100  # never the data itself


def test_garbage_is_refused() -> None:
    with pytest.raises(ImageRejected, match="not a PNG, JPEG, WebP or GIF"):
        check_image(b"<html>not an image</html>", 1000)


def test_other_formats_are_refused() -> None:
    with pytest.raises(ImageRejected, match="not a PNG"):
        check_image(make_image("BMP"), 1000)


def test_truncated_image_is_refused() -> None:
    data = make_image("PNG", (64, 64))
    with pytest.raises(ImageRejected, match="cannot be decoded"):
        check_image(data[: len(data) // 2], 100_000)


def test_magic_that_lies_is_refused() -> None:
    with pytest.raises(ImageRejected, match="cannot be decoded"):
        check_image(b"\x89PNG\r\n\x1a\n" + make_image("JPEG")[3:], 100_000)


def test_over_max_pixels_is_refused() -> None:
    with pytest.raises(ImageRejected, match=r"100x100, over the limit of 9999 pixels"):
        check_image(make_image("PNG", (100, 100)), max_pixels=9999)


def test_absurd_dimensions_are_refused() -> None:
    with pytest.raises(ImageRejected, match="unusable dimensions 40000x1"):
        check_image(png_header_only(40_000, 1), max_pixels=10**9)


def test_decompression_bomb_warning_is_refused() -> None:
    # 10000 x 10000 is over Pillow's warning threshold (about 89 M pixels), under its error one.
    with pytest.raises(ImageRejected, match="decompression bomb"):
        check_image(png_header_only(10_000, 10_000), max_pixels=10**9)


def test_decompression_bomb_error_is_refused() -> None:
    with pytest.raises(ImageRejected, match="decompression bomb"):
        check_image(png_header_only(20_000, 20_000), max_pixels=10**9)


def test_bomb_under_pillows_threshold_is_refused_by_our_limit() -> None:
    with pytest.raises(ImageRejected, match="over the limit"):
        check_image(png_header_only(9_000, 9_000), max_pixels=64_000_000)
