"""ZIP answers from image services (NovelAI sends its images in a ZIP), opened within caps.

A ZIP names its entries' sizes in its own directory, and the directory can lie; so the caps are
checked twice: first against what the directory declares (number of entries, each entry's size,
the total, the compression ratio), then while each entry is read, against the bytes that really
come out. Nothing is extracted to disk, no path from the archive is used, nested archives are
not opened, and encrypted entries are refused. Blocking (decompression): call it from a worker
thread. Raises :class:`ArchiveRejected` (a ValueError) with the reason.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["ArchiveRejected", "ZipEntry", "ZipLimits", "read_zip"]

READ_CHUNK = 1 << 20


class ArchiveRejected(ValueError):
    """The archive breaks a cap or cannot be read; the message says which."""


@dataclass(frozen=True)
class ZipLimits:
    """Caps for one archive (defaults fit a NovelAI answer: a few PNGs of a few MB)."""

    max_entries: int = 16
    max_entry_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_ratio: float = 100.0  # uncompressed / compressed, per entry (PNGs barely compress)


@dataclass(frozen=True)
class ZipEntry:
    name: str  # the entry's base name only (never a path to use)
    data: bytes


def read_zip(data: bytes, limits: ZipLimits | None = None) -> list[ZipEntry]:
    """The files in the ZIP ``data``, in archive order (folders skipped)."""
    caps = limits or ZipLimits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveRejected(f"the answer is not a readable ZIP ({exc})") from None
    with archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
        if len(files) > caps.max_entries:
            raise ArchiveRejected(f"the ZIP holds {len(files)} files, more than {caps.max_entries}")
        declared = 0
        for info in files:
            _check_declared(info, caps)
            declared += info.file_size
            if declared > caps.max_total_bytes:
                raise ArchiveRejected(f"the ZIP unpacks to more than {caps.max_total_bytes} bytes")
        total = 0
        entries: list[ZipEntry] = []
        for info in files:
            body = _read_entry(archive, info, caps, caps.max_total_bytes - total)
            total += len(body)
            entries.append(ZipEntry(PurePosixPath(info.filename.replace("\\", "/")).name, body))
        return entries


def _check_declared(info: zipfile.ZipInfo, caps: ZipLimits) -> None:
    name = info.filename[:80]
    if info.flag_bits & 0x1:
        raise ArchiveRejected(f"the ZIP entry {name!r} is encrypted")
    if info.file_size > caps.max_entry_bytes:
        raise ArchiveRejected(
            f"the ZIP entry {name!r} is {info.file_size} bytes, more than {caps.max_entry_bytes}"
        )
    if info.file_size > caps.max_ratio * max(info.compress_size, 1):
        raise ArchiveRejected(
            f"the ZIP entry {name!r} expands {info.file_size // max(info.compress_size, 1)}"
            f" times, more than {caps.max_ratio:g} (a ZIP bomb?)"
        )


def _read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, caps: ZipLimits, room: int
) -> bytes:
    """One entry, counted as it comes out: the directory's sizes are not trusted."""
    limit = min(caps.max_entry_bytes, room, int(caps.max_ratio * max(info.compress_size, 1)))
    name = info.filename[:80]
    out = bytearray()
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(READ_CHUNK):
                out += chunk
                if len(out) > limit:
                    raise ArchiveRejected(
                        f"the ZIP entry {name!r} unpacks to more than its caps allow"
                    )
    except ArchiveRejected:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise ArchiveRejected(f"the ZIP entry {name!r} cannot be read ({exc})") from None
    return bytes(out)
