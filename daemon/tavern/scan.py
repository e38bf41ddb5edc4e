"""Backwards tail scan: what changed in a chat since a cursor, reading only the end of the file.

The file is read from the end in growing blocks and split on ``b"\\n"``; lines are parsed newest
first. Reading stops once the cursor's messages are placed (or a small, fixed number of messages
past the first one found), so one scan costs the same on a 10-message and a 100,000-message
chat. When none of the cursor's messages turns up within a budget, the cursor is gone: the whole
chat is read and returned as ``full``, with no guesses about what is new. (So while a message
longer than :data:`MAX_SCAN_BYTES` is among the cursor's, each scan is a full read; it leaves
the cursor after :data:`~daemon.tavern.chat.CURSOR_DEPTH` newer messages.)

Placing the cursor is an alignment, not a lookup: up to ST 1.14 ``send_date`` has minute
granularity, so two user messages in one minute share an identity key. The cursor's keys are
matched in order against the tail (most matches, then the most compact match, then the most
unchanged revisions, then the earliest), which keeps a same-minute message from being taken for
an old one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.errors import ChatReadError
from daemon.tavern.chat import (
    CURSOR_DEPTH,
    MAX_CHAT_BYTES,
    Chat,
    Cursor,
    Message,
    MessageIdentity,
    Revision,
    is_header,
    parse_line,
    read_chat,
)
from daemon.tavern.files import open_regular

__all__ = [
    "FIRST_BLOCK",
    "MAX_BLOCK",
    "MAX_SCAN_BYTES",
    "MAX_SCAN_LINES",
    "MAX_UNANCHORED_MESSAGES",
    "SLACK",
    "ScanResult",
    "scan_lines",
    "tail_scan",
]

FIRST_BLOCK = 16 * 1024
"""First read from the end; about 25 typical messages. Later blocks double up to MAX_BLOCK."""
MAX_BLOCK = 4 * 1024 * 1024
SLACK = 8
"""Messages read past the first cursor match beyond the cursor's depth, to place the rest."""
MAX_UNANCHORED_MESSAGES = 2000
"""New messages read without finding the cursor before giving up and reading it all."""
MAX_SCAN_LINES = 4 * MAX_UNANCHORED_MESSAGES
"""Lines (unparsable ones included) a tail scan may read before it falls back to a full read."""
MAX_SCAN_BYTES = 32 * 1024 * 1024
"""Bytes a tail scan may read before it falls back to a full read (bounded by MAX_CHAT_BYTES)."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What changed in a chat since a cursor.

    ``new``: messages not in the cursor that are newer than the oldest cursor message found, in
    file order (appended ones, and ones inserted between cursor messages). ``changed``: messages
    in the cursor whose revision differs. ``removed``: cursor identities no longer found.
    ``tail``: every message read (new and known), in file order; ``bad_lines`` counts
    unparsable lines read.
    ``cursor_gone``: no cursor message was found within the scan budget, so the caller fell back
    to (or must fall back to) a full read; then ``new`` holds no guesses and ``full`` is the chat.
    ``cursor`` is the cursor to store now. Indices are hints computed from the cursor.
    """

    new: list[Message]
    changed: list[Message]
    removed: list[MessageIdentity]
    tail: list[Message]
    cursor: Cursor
    cursor_gone: bool
    bytes_read: int
    bad_lines: int = 0
    full: Chat | None = None


@dataclass(slots=True)
class _Line:
    raw: bytes
    obj: dict[str, Any] | None
    first: bool  # line 0 of the file (only known once the start is reached)
    name: str = ""
    first_date: str = ""
    revision: Revision | None = None

    @property
    def is_message(self) -> bool:
        return self.obj is not None and not (self.first and is_header(self.obj))

    @property
    def key(self) -> str:
        return MessageIdentity(0, self.name, self.first_date).key


class _Gone(Exception):
    """The cursor could not be placed within the budget."""


def _lines_backwards(fd: int, size: int, block: int, counter: list[int]) -> Iterator[_Line]:
    """The file's lines, newest first. ``counter[0]`` counts the bytes read; past
    :data:`MAX_SCAN_BYTES` (a huge line, a huge tail) the scan gives up for a full read."""
    pos = size
    rest = b""  # the start of the newest line not yet complete
    at_end = True
    while pos > 0:
        take = min(block, pos)
        pos -= take
        chunk = os.pread(fd, take, pos)
        if len(chunk) != take:
            raise _Gone  # truncated in place while we read: let a full read see what is left
        counter[0] += take
        if counter[0] > MAX_SCAN_BYTES:
            raise _Gone
        pieces = (chunk + rest).split(b"\n")
        rest = pieces[0]
        for raw in reversed(pieces[1:]):
            if at_end:
                at_end = False
                if raw == b"":
                    continue  # a trailing newline is not a line
            yield _Line(raw, parse_line(raw), False)
        block = min(block * 2, MAX_BLOCK)
    if size > 0:
        yield _Line(rest, parse_line(rest), True)


def _lines_of(lines: Sequence[bytes]) -> Iterator[_Line]:
    """Whole-file lines (as :func:`daemon.tavern.chat.split_lines` gives them), newest first."""
    last = len(lines) - 1
    for lineno in range(last, -1, -1):
        raw = lines[lineno]
        if lineno == last and lineno > 0 and raw == b"":
            continue
        yield _Line(raw, parse_line(raw), lineno == 0)


@dataclass(slots=True)
class _Collected:
    lines: list[_Line]  # newest first
    reached_start: bool


def _collect(stream: Iterable[_Line], cursor: Cursor) -> _Collected:
    """Read newest-first until the cursor is placed; raise :class:`_Gone` past the budget."""
    keys = [identity.key for identity, _ in cursor.recent]
    wanted = set(keys)
    depth = len(keys)
    backwards = [(identity.key, revision) for identity, revision in reversed(cursor.recent)]
    lines: list[_Line] = []
    seen: list[tuple[str, Revision]] = []  # message keys and revisions, newest first
    first_hit: int | None = None
    for line in stream:
        lines.append(line)
        if len(lines) > MAX_SCAN_LINES:
            raise _Gone  # e.g. a tail of garbage lines: let the full read judge the file
        if line.obj is None or not line.is_message:
            continue
        probe = Message(0, line.obj, line.raw)
        line.name, line.first_date, line.revision = probe.name, probe.first_date, probe.revision
        key = line.key
        seen.append((key, line.revision))
        if first_hit is None:
            if key in wanted:
                first_hit = len(seen)
            elif len(seen) > MAX_UNANCHORED_MESSAGES:
                raise _Gone
            else:
                continue
        # The whole cursor seen in order, every revision the same: nothing older can place it
        # better. (Keys alone are not enough: up to 1.14 a new message may share its key.)
        if depth and seen[-depth:] == backwards:
            return _Collected(lines, False)
        if len(seen) - first_hit + 1 >= depth + SLACK:
            return _Collected(lines, False)
    return _Collected(lines, True)


@dataclass(frozen=True, slots=True)
class _Match:
    tail: int  # index into the tail's messages (file order)
    entry: int  # index into cursor.recent


def _align(tail_keys: Sequence[str], tail_revs: Sequence[Revision], cursor: Cursor) -> list[_Match]:
    """Match cursor entries to tail messages in order (see the module docstring for the rule)."""
    by_key: dict[str, list[int]] = {}
    for j, (identity, _) in enumerate(cursor.recent):
        by_key.setdefault(identity.key, []).append(j)
    depth = len(cursor.recent)
    # Chains of matches ending at a cursor entry, valued (matches, first tail index, same revs).
    best: list[tuple[tuple[int, int, int], list[_Match]] | None] = [None] * depth
    winner: tuple[tuple[int, int, int, int], list[_Match]] | None = None
    for i, key in enumerate(tail_keys):
        entries = by_key.get(key)
        if not entries:
            continue
        updates: list[tuple[int, tuple[tuple[int, int, int], list[_Match]]]] = []
        for j in entries:
            same = int(cursor.recent[j][1] == tail_revs[i])
            prev: tuple[tuple[int, int, int], list[_Match]] | None = None
            for jj in range(j):
                cand = best[jj]
                if cand is not None and (prev is None or cand[0] > prev[0]):
                    prev = cand
            if prev is None:
                value = (1, i, same)
                chain = [_Match(i, j)]
            else:
                value = (prev[0][0] + 1, prev[0][1], prev[0][2] + same)
                chain = [*prev[1], _Match(i, j)]
            updates.append((j, (value, chain)))
            final = (value[0], value[1] - i, value[2], -i)
            if winner is None or final > winner[0]:
                winner = (final, chain)
        for j, item in updates:
            current = best[j]
            if current is None or item[0] > current[0]:
                best[j] = item
    return winner[1] if winner is not None else []


def _diff(collected: _Collected, cursor: Cursor, size: int, bytes_read: int) -> ScanResult:
    found = [line for line in reversed(collected.lines) if line.is_message]
    bad = sum(1 for line in collected.lines if line.obj is None)
    keys = [line.key for line in found]
    # Each message's revision is hashed once; identities and the cursor reuse the parts.
    revs = [line.revision or Message(0, line.obj or {}, line.raw).revision for line in found]
    matches = _align(keys, revs, cursor)
    if not matches and cursor.recent:
        raise _Gone
    matched = {m.tail: m.entry for m in matches}
    # Index hints: exact from the file start, else from the oldest matched cursor entry.
    if collected.reached_start:
        base = 0
    else:
        # Cursor entries older than the oldest match are gone (deleted): one index each.
        first = matches[0]
        base = cursor.recent[first.entry][0].index - first.entry - first.tail
    tail = [Message(base + i, line.obj or {}, line.raw) for i, line in enumerate(found)]
    start = matches[0].tail if matches else 0
    new = [m for i, m in enumerate(tail) if i > start and i not in matched]
    if not matches:
        new = tail  # an empty cursor: every message is new
    changed = [tail[i] for i, j in matched.items() if cursor.recent[j][1] != revs[i]]
    entries = set(matched.values())
    removed = [identity for j, (identity, _) in enumerate(cursor.recent) if j not in entries]
    total = tail[-1].index + 1 if tail else max(base, 0)
    keep = max(len(found) - CURSOR_DEPTH, 0)
    recent = tuple(
        (MessageIdentity(base + i, found[i].name, found[i].first_date), revs[i])
        for i in range(keep, len(found))
    )
    return ScanResult(
        new=new,
        changed=changed,
        removed=removed,
        tail=tail,
        cursor=Cursor(recent, total, size),
        cursor_gone=False,
        bytes_read=bytes_read,
        bad_lines=bad,
    )


def _full(path: Path, already_read: int, gone: bool) -> ScanResult:
    chat, data = read_chat(path, max_bytes=MAX_CHAT_BYTES)
    return ScanResult(
        new=[],
        changed=[],
        removed=[],
        tail=list(chat.messages),
        cursor=Cursor.of(chat.messages, len(data), total=len(chat.messages)),
        cursor_gone=gone,
        bytes_read=already_read + len(data),
        bad_lines=len(chat.bad_lines),
        full=chat,
    )


def scan_lines(lines: Sequence[bytes], cursor: Cursor) -> ScanResult | None:
    """The scan :func:`tail_scan` would return for a file of ``lines`` (all of them, as
    :func:`daemon.tavern.chat.split_lines` gives them); ``None`` where it would fall back to a
    full read. The same decisions on an in-memory chat: the reference for tests."""
    size = sum(len(raw) for raw in lines) + max(len(lines) - 1, 0)
    try:
        collected = _collect(_lines_of(lines), cursor)
        return _diff(collected, cursor, size, size)
    except _Gone:
        return None


def tail_scan(path: Path, cursor: Cursor | None, *, block_size: int = FIRST_BLOCK) -> ScanResult:
    """What is new, changed and removed in ``path`` since ``cursor`` (see :class:`ScanResult`).

    ``cursor`` None reads the whole chat (first sight: everything in ``tail``, ``new`` empty).
    Raises :class:`ChatReadError` when the file is missing, a folder, unreadable or too big.
    """
    if cursor is None:
        return _full(path, 0, gone=False)
    fd, st = open_regular(path, ChatReadError, "chat", "a chat file")
    counter = [0]
    try:
        size = st.st_size
        try:
            stream = _lines_backwards(fd, size, max(block_size, 1), counter)
            collected = _collect(stream, cursor)
            return _diff(collected, cursor, size, counter[0])
        except _Gone:
            pass
        except OSError as exc:
            raise ChatReadError(f"chat {str(path)!r} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return _full(path, counter[0], gone=True)
