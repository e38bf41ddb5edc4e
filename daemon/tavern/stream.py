"""Inserting a line into a big chat without holding the chat in memory.

:mod:`daemon.tavern.write` reads the whole chat once and writes the new version from memory:
fast, but a 200 MB chat then costs 200 MB of memory. Here both passes stream through a fixed
buffer: :func:`find_lines` reads the chat once (byte-searching for our marker and the reply,
parsing only the lines that hold them; hashing it when asked to) and :func:`insert_at` copies it
into the temp file with the new line spliced in. Memory is the buffer plus
the longest line, whatever the chat's size. The guarantees are those of ``write``: the same temp
file, fsync, compare-before-replace and rename, and the same errors.

Rare shapes the byte search cannot settle (a date every encoder may not write literally, the
same identity on two lines, too many hits) raise :class:`NeedsFullRead`: the caller uses the
in-memory path, which decides those with a full parse.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.errors import ChatConflictError, ChatReadError
from daemon.tavern.chat import (
    MARKER_KEY,
    LineMessage,
    Message,
    MessageIdentity,
    is_header,
    parse_line,
    send_date_style,
)
from daemon.tavern.files import open_regular
from daemon.tavern.write import (
    _FRESH_NS,
    Snapshot,
    Written,
    _check_chat_path,
    _copy_prefix,
    _encode_new,
    _snap,
    _write_error,
    _Writeback,
    chat_temp,
    held_basis,
    is_marked,
)

__all__ = ["CHUNK", "STREAM_MIN_BYTES", "FoundLines", "NeedsFullRead", "find_lines", "insert_at"]

STREAM_MIN_BYTES = 16 * 1024 * 1024
"""Chats at least this big are committed by streaming; smaller ones in memory (faster, and
small anyway)."""

CHUNK = 4 * 1024 * 1024
"""The read buffer of both passes."""

_MAX_HITS = 256  # lines holding a needle, as Chat's line searches allow
_READ_ATTEMPTS = 3


class NeedsFullRead(Exception):
    """The byte search cannot settle this chat; use the in-memory path."""


@dataclass(frozen=True, slots=True)
class FoundLines:
    """What :func:`find_lines` found in one stable read of a chat."""

    snapshot: Snapshot  # with the sha256 of the bytes read, when hashed
    present: LineMessage | None  # the newest line holding our marker for the job
    reply: LineMessage | None  # the line of the reply, by identity
    insert_end: int  # after the reply and our image messages that follow it: a line's end
    date_style: str  # "iso", "human", "ms" or "at": the newest dated message's send_date style


def _literal(value: str) -> bool:
    # As daemon.tavern.chat: a value every JSON encoder writes byte for byte as it is.
    return (
        bool(value)
        and value.isascii()
        and value.isprintable()
        and not any(c in value for c in '"\\/')
    )


class _Scan:
    """The state of one streaming pass over the chat's lines."""

    def __init__(self, job_id: str, identity: MessageIdentity) -> None:
        self.marker_needle = job_id.encode()
        self.date_needle = identity.first_date.encode()
        self.key = identity.key
        self.job_id = job_id
        self.hits = 0
        self.present: LineMessage | None = None
        self.replies: list[LineMessage] = []
        self.follow: int | None = None  # start of the next line to look at after the reply
        self.insert_end = -1
        self.date_style: str | None = None
        self.header_style = "iso"

    def lines(self, region: bytes, base: int) -> None:
        """Look at the complete lines of ``region`` (file offset ``base``)."""
        if base == 0:
            self._header(region)
        starts: set[int] = set()
        for needle in (self.marker_needle, self.date_needle):
            pos = 0
            while (hit := region.find(needle, pos)) >= 0:
                start = region.rfind(b"\n", 0, hit) + 1
                end = region.find(b"\n", hit)
                end = len(region) if end < 0 else end
                pos = end + 1
                if start in starts:
                    continue
                starts.add(start)
                self.hits += 1
                if self.hits > _MAX_HITS:
                    raise NeedsFullRead("too many lines hold the reply's date or the job id")
        for start in sorted(starts):
            self._look(region, base, start)
        self._follow(region, base)
        self._dated(region)

    def _header(self, region: bytes) -> None:
        end = region.find(b"\n")
        obj = parse_line(region[: len(region) if end < 0 else end])
        if obj is not None and is_header(obj) and "create_date" in obj:
            self.header_style = "human"

    def _line(self, region: bytes, base: int, start: int) -> LineMessage | None:
        end = region.find(b"\n", start)
        end = len(region) if end < 0 else end
        raw = region[start:end]
        obj = parse_line(raw)
        if obj is None or (base + start == 0 and is_header(obj)):
            return None
        return LineMessage(base + start, base + end, Message(-1, obj, raw))

    def _look(self, region: bytes, base: int, start: int) -> None:
        line = self._line(region, base, start)
        if line is None:
            return
        if line.message.marker == self.job_id:
            self.present = line  # file order: the last one seen is the newest
        if line.message.identity.key == self.key:
            self.replies.append(line)
            self.insert_end = line.end
            self.follow = line.end + 1

    def _follow(self, region: bytes, base: int) -> None:
        """After the reply: our image messages that follow it (lines that do not parse are
        passed over), up to the first other message."""
        while self.follow is not None and self.follow - base < len(region):
            start = self.follow - base
            end = region.find(b"\n", start)
            end = len(region) if end < 0 else end
            if MARKER_KEY.encode() not in region[start:end]:
                obj = parse_line(region[start:end])
                if obj is not None:
                    self.follow = None  # another message: insert before it
                    return
                self.follow = base + end + 1  # does not parse: no message to ST
                continue
            line = self._line(region, base, start)
            if line is not None and line.message.marker is None:
                self.follow = None
                return
            if line is not None:
                self.insert_end = line.end
            self.follow = base + end + 1

    def _dated(self, region: bytes) -> None:
        # The newest dated message so far: the region's last line with a send_date.
        end = len(region)
        while end > 0:
            start = region.rfind(b"\n", 0, end - 1) + 1 if end > 1 else 0
            raw = region[start:end].rstrip(b"\n")
            if b'"send_date"' in raw:
                obj = parse_line(raw)
                if obj is not None and obj.get("send_date") is not None:
                    self.date_style = send_date_style(obj["send_date"])
                    return
            if start == 0:
                return
            end = start


def find_lines(
    path: Path,
    job_id: str,
    identity: MessageIdentity,
    *,
    root: Path | None = None,
    hashed: bool = True,
) -> FoundLines:
    """Stream the chat once: our marker line for ``job_id``, the reply's line, where a new
    image message goes, and the chat's hash. Raises :class:`NeedsFullRead`, ``ChatReadError``,
    ``ChatConflictError`` (the chat kept changing while read) or ``UnsafePathError``.

    ``hashed=False`` skips the hash (``snapshot.sha256`` is ``""``) unless the chat is fresh
    (:attr:`Snapshot.needs_rehash`: the insert must then compare hashes); the hash of a big
    chat costs about as much as its durable copy."""
    if not _literal(job_id) or not _literal(identity.first_date) or "\x1f" in identity.name:
        raise NeedsFullRead("the job id or the reply's date cannot be byte-searched")
    real = _check_chat_path(path, root)
    for _ in range(_READ_ATTEMPTS):
        taken = time.time_ns()
        fd, before = open_regular(real, ChatReadError, "chat", "a chat file", nofollow=True)
        hash_it = hashed or taken - before.st_mtime_ns < _FRESH_NS
        try:
            scan, digest, size = _scan_fd(fd, job_id, identity, hash_it)
            after = os.fstat(fd)
            marked = is_marked(fd, after)
        except OSError as exc:
            raise ChatReadError(f"chat {str(real)!r} cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            continue
        if after.st_size != size:
            continue
        if len(scan.replies) > 1:
            raise NeedsFullRead("two lines hold the reply's identity")
        reply = scan.replies[0] if scan.replies else None
        return FoundLines(
            _snap(after, digest, taken, marked),
            scan.present,
            reply,
            scan.insert_end,
            scan.date_style or scan.header_style,
        )
    raise ChatConflictError(f"chat {path.name!r} kept changing while being read")


def _scan_fd(
    fd: int, job_id: str, identity: MessageIdentity, hashed: bool = True
) -> tuple[_Scan, str, int]:
    scan = _Scan(job_id, identity)
    h = hashlib.sha256()
    carry = b""
    base = 0  # file offset of carry[0]
    pos = 0
    while chunk := os.pread(fd, CHUNK, pos):
        pos += len(chunk)
        if hashed:
            h.update(chunk)
        buf = carry + chunk if carry else chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            carry = buf  # one long line so far
            continue
        scan.lines(buf[:cut], base)
        carry = buf[cut + 1 :]
        base += cut + 1
    if carry:
        scan.lines(carry, base)  # the last line, without a trailing newline
    return scan, h.hexdigest() if hashed else "", pos


def insert_at(
    path: Path,
    basis: Snapshot,
    line_end: int,
    new_messages: Sequence[Mapping[str, Any]],
    *,
    root: Path | None = None,
    before_replace: Callable[[Written], None] | None = None,
) -> Snapshot:
    """Insert ``new_messages`` after the line ending at ``line_end`` of the chat ``basis``
    describes (as :func:`daemon.tavern.write.insert_after_line`), streaming: the bytes before
    the insert point are copied in the kernel where it can, the rest through a fixed buffer.
    A fresh basis (:attr:`Snapshot.needs_rehash`) needs its ``sha256`` (from
    :func:`find_lines`): the held chat is hashed again before the rename. Returns the
    snapshot of the file written (unhashed)."""
    new = _encode_new(new_messages)
    if not basis.sha256 and basis.needs_rehash:
        raise ValueError("insert_at needs a fresh basis' sha256 (from find_lines)")
    if not 0 < line_end <= basis.size:
        raise ValueError(f"offset {line_end} is not the end of a line of the chat")
    with held_basis(path, basis, root) as (real, held, current):
        written, marked = _write_and_replace(
            path, real, held, current, basis, line_end, new, before_replace
        )
    return _snap(written, "", time.time_ns(), marked)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy(src: int, dst: int, start: int, stop: int, writeback: _Writeback) -> None:
    """Copy ``src[start:stop]`` to ``dst`` through the buffer."""
    pos = start
    while pos < stop:
        chunk = os.pread(src, min(CHUNK, stop - pos), pos)
        if not chunk:
            raise ChatConflictError("the chat shrank while it was copied")
        _write(dst, chunk)
        pos += len(chunk)
        writeback.kick()


def _write_and_replace(
    path: Path,
    real: Path,
    held: int,
    current: os.stat_result,
    basis: Snapshot,
    line_end: int,
    new: bytes,
    before_replace: Callable[[Written], None] | None,
) -> tuple[os.stat_result, bool]:
    at_end = line_end == basis.size
    # As write._splice: after the line's "\n"; a last line without one gets one first.
    split = line_end if at_end else line_end + 1
    tail = b"\n" + new if at_end else new + b"\n"
    with chat_temp(real, current) as temp:
        fd, writeback = temp.fd, temp.writeback
        try:
            if not at_end and os.pread(held, 1, line_end) != b"\n":
                raise ChatConflictError(f"chat {path.name!r} changed since it was read")
            copied = _copy_prefix(held, fd, split, writeback)  # in the kernel
            _copy(held, fd, copied, split, writeback)  # what the kernel did not copy
            _write(fd, tail)
            _copy(held, fd, split, basis.size, writeback)
            written = temp.seal()
        except OSError as exc:
            raise _write_error(exc, "the chat", real.parent) from None
        if before_replace is not None:
            before_replace(written)
        if basis.needs_rehash and _hash_fd(held) != basis.sha256:
            raise ChatConflictError(f"chat {path.name!r} changed since it was read")
        temp.replace(path, real, basis, current)
        return os.fstat(fd), written.marked


def _hash_fd(fd: int) -> str:
    """sha256 of the whole file open at ``fd`` (pread: the offset does not move)."""
    h = hashlib.sha256()
    pos = 0
    while chunk := os.pread(fd, CHUNK, pos):
        h.update(chunk)
        pos += len(chunk)
    return h.hexdigest()
