"""Scaled thumbnails of job images, made once with Pillow and cached in ``<state_dir>/thumbs/``.

The cache name holds the source's size and modification time, so a job folder swapped in again
(a job run twice) gets fresh thumbnails; stale ones are swept at start. Blocking: run in a
worker thread.

A source is decoded through the same checks as a downloaded image
(:func:`daemon.providers.decode.open_checked`: the format from its bytes, its size from its
header against ``image.max_pixels`` before anything is decoded, a decompression bomb refused),
and one thumbnail is rendered at a time: six 12000x12000 uploads asked for at once cost one
render's memory, not six.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from pathlib import Path

from PIL import ImageOps, features

from daemon.providers.decode import open_checked

__all__ = ["THUMB_PX", "Thumbs"]

THUMB_PX = 384
"""Longest side of a thumbnail."""

KEEP_SECONDS = 30 * 86400.0
"""Thumbnails not used for this long are removed at start."""


class Thumbs:
    def __init__(self, folder: Path, *, size: int = THUMB_PX) -> None:
        self.folder = folder
        self.size = size
        self.webp = features.check("webp")
        self.media_type = "image/webp" if self.webp else "image/jpeg"
        self._render = threading.Lock()

    def get(self, source: Path, max_pixels: int) -> Path:
        """The cached thumbnail of ``source`` (made now if missing). ImageRejected (a
        ValueError) when the source is not an image we decode, or too large; OSError when it
        cannot be read or the thumbnail not written."""
        info = source.stat()
        key = hashlib.sha256(
            f"{source}|{info.st_size}|{info.st_mtime_ns}|{self.size}".encode()
        ).hexdigest()[:32]
        target = self.folder / f"{key}.{'webp' if self.webp else 'jpg'}"
        if target.is_file():
            os.utime(target)  # remembered as used, for the sweep
            return target
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._render:
            if target.is_file():  # made by the render this one waited for
                return target
            self._make(source, target, max_pixels)
        return target

    def _make(self, source: Path, target: Path, max_pixels: int) -> None:
        with open_checked(source, max_pixels) as image:
            image.draft("RGB", (self.size, self.size))  # JPEG: decode at a smaller scale
            thumb = ImageOps.exif_transpose(image)
            thumb.thumbnail((self.size, self.size))
            if thumb.mode not in ("RGB", "RGBA"):
                thumb = thumb.convert("RGBA" if "A" in thumb.getbands() else "RGB")
            if not self.webp and thumb.mode == "RGBA":
                thumb = thumb.convert("RGB")
            thumb.load()
        # Written outside the decoding block: a full disk is an OSError, not "not an image".
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        try:
            if self.webp:
                thumb.save(temp, format="WEBP", quality=80, method=4)
            else:
                thumb.save(temp, format="JPEG", quality=82)
            temp.replace(target)
        finally:
            temp.unlink(missing_ok=True)

    def sweep(self, *, older_than: float = KEEP_SECONDS) -> int:
        """Remove thumbnails unused for ``older_than`` seconds; returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    Path(entry.path).unlink()
                    removed += 1
            except OSError:
                continue
        return removed
