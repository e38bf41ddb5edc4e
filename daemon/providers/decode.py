"""Decode and check image bytes with Pillow before anything is accepted.

An image is accepted only if its magic bytes name a format we keep, Pillow opens and verifies
it, its dimensions are sane and under ``max_pixels``, and it fully decodes. The format (and so
the file extension) comes from the bytes, never from a header or a request.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = [
    "FORMATS",
    "GeneratedImage",
    "ImageRejected",
    "check_image",
    "open_checked",
    "sniff_format",
]

# Pillow format name -> (our format name, file extension, MIME type)
FORMATS: dict[str, tuple[str, str, str]] = {
    "PNG": ("png", "png", "image/png"),
    "JPEG": ("jpeg", "jpg", "image/jpeg"),
    "WEBP": ("webp", "webp", "image/webp"),
    "GIF": ("gif", "gif", "image/gif"),
}
MAX_SIDE = 30_000


class ImageRejected(ValueError):
    """The bytes are not an image we accept; the message says why."""


@dataclass(frozen=True)
class GeneratedImage:
    """One checked image: ``format`` is "png", "jpeg", "webp" or "gif"."""

    data: bytes
    format: str
    width: int
    height: int
    mime: str
    cost: float | None = None  # what making it cost, where the service reports or prices it
    cost_unit: str = "USD"  # "USD", "kudos" (AI Horde), "Anlas" (NovelAI)

    @property
    def ext(self) -> str:
        """The file extension for the real format ("jpg" for JPEG)."""
        return {"jpeg": "jpg"}.get(self.format, self.format)

    def __repr__(self) -> str:
        return (
            f"GeneratedImage(format={self.format!r}, {self.width}x{self.height}, "
            f"{len(self.data)} bytes)"
        )


def sniff_format(head: bytes) -> str | None:
    """The format named by the first bytes (PNG, JPEG, WebP, GIF), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def check_image(data: bytes, max_pixels: int) -> GeneratedImage:
    """The checked image in ``data``; raises :class:`ImageRejected` with the reason.

    CPU-bound (a full decode): call it from a worker thread. Pillow's decompression-bomb
    warning is turned into an error here explicitly, whatever the process's warning filters.
    ``catch_warnings`` is process-global; under a concurrent change of filters the warning
    might only be printed, which is still safe because our own ``max_pixels`` check (normally
    far below Pillow's limit) runs right after ``open``.
    """
    sniffed = sniff_format(data[:16])
    if sniffed is None:
        raise ImageRejected("the bytes are not a PNG, JPEG, WebP or GIF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
                _check_size(width, height, max_pixels)
                probe.verify()
            with Image.open(io.BytesIO(data)) as full:
                full.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageRejected(
            "the image is a decompression bomb (far more pixels than its size suggests)"
        ) from None
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"the image cannot be decoded ({type(exc).__name__})") from None
    if fmt not in FORMATS:
        raise ImageRejected(f"unsupported image format {fmt or 'unknown'}")
    name, _ext, mime = FORMATS[fmt]
    if name != sniffed:
        raise ImageRejected(f"the image's bytes say {sniffed} but it decodes as {name}")
    return GeneratedImage(data=data, format=name, width=width, height=height, mime=mime)


@contextlib.contextmanager
def open_checked(source: Path, max_pixels: int) -> Iterator[Image.Image]:
    """``source`` opened with Pillow once its header says it is a PNG, JPEG, WebP or GIF within
    ``max_pixels`` (nothing is decoded before that); :class:`ImageRejected` otherwise, and for
    any decoding failure inside the block (a decompression bomb included). The same rules as
    :func:`check_image`, for files already on disk (thumbnails of ST's own images)."""
    try:
        with open(source, "rb") as handle:
            if sniff_format(handle.read(16)) is None:
                raise ImageRejected("the file is not a PNG, JPEG, WebP or GIF image")
            handle.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(handle) as image:
                    _check_size(*image.size, max_pixels)
                    yield image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageRejected(
            "the image is a decompression bomb (far more pixels than its size suggests)"
        ) from None
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"the image cannot be decoded ({type(exc).__name__})") from None


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE:
        raise ImageRejected(f"the image has unusable dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(
            f"the image is {width}x{height}, over the limit of {max_pixels} pixels "
            "([image] max_pixels)"
        )
