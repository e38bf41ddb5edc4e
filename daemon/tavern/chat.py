"""The chat codec: SillyTavern's JSONL exactly as it writes it.

ST joins one compact ``JSON.stringify`` per line with ``\\n`` and no trailing newline, writes
non-ASCII raw (U+2028 included) and lone surrogates as ``\\udXXX`` escapes. We split on ``b"\\n"``
only, keep every line's bytes as read, and never re-serialize a line we did not create. Lines that
fail to parse are kept as raw bytes and reported, never dropped. A :class:`Chat` parses its lines
only when they are used: a lookup near the end of a 60 MB chat parses a few lines, not 100,000.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.errors import ChatReadError
from daemon.tavern.files import open_regular

__all__ = [
    "MARKER_KEY",
    "MAX_CHAT_BYTES",
    "MAX_CHAT_LINES",
    "Chat",
    "ChatLine",
    "Cursor",
    "LineMessage",
    "Message",
    "MessageIdentity",
    "Revision",
    "encode_message",
    "format_send_date",
    "is_header",
    "parse_chat",
    "parse_line",
    "parse_send_date",
    "read_chat",
    "split_lines",
]

MARKER_KEY = "st_imagegen_job"
"""Top-level ``extra`` key that marks a message written by us; its value is the job id."""

MAX_CHAT_BYTES = 512 * 1024 * 1024
"""Chats larger than this are refused with a clear error instead of exhausting memory."""

MAX_CHAT_LINES = 5_000_000
"""Chats with more lines are refused (a file of newlines would otherwise exhaust memory)."""

_HEADER_KEYS = ("chat_metadata", "user_name", "character_name")


def split_lines(data: bytes) -> list[bytes]:
    """Split a chat file into lines exactly as ST does: on ``\\n`` only.

    An empty file has no lines. A trailing newline (written by other tools) yields a last empty
    line, which callers keep as-is so the bytes round-trip.
    """
    if not data:
        return []
    return data.split(b"\n")


def _reject_constant(name: str) -> Any:
    # JSON.parse rejects NaN and Infinity; so must we, or ST and we disagree on the line.
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """Parse one line as ST does; ``None`` when ST would drop it (callers keep it raw).

    Invalid UTF-8 becomes U+FFFD first, as Node's ``readFile(..., "utf8")`` does, so a line with
    stray bytes in a string is still the message ST shows. A BOM, ``NaN`` or a non-object fails.
    """
    try:
        value = _DECODER.decode(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def is_header(obj: Mapping[str, Any]) -> bool:
    """ST's own rule: a header has chat_metadata, user_name or character_name, and no mes."""
    return "mes" not in obj and any(k in obj for k in _HEADER_KEYS)


def _truthy(value: object) -> bool:
    # JS truthiness for the JSON values ST writes: "", 0, false, null are falsy.
    return bool(value)


@dataclass(frozen=True, slots=True)
class MessageIdentity:
    """Which reply a message is, stable across swipes, continues and edits.

    ``index`` is ST's message number (header excluded) and only a hint: inserts and deletions
    above shift it. ``key`` (name and the first swipe's start time) is what matches.
    """

    index: int
    name: str
    first_date: str

    @property
    def key(self) -> str:
        return f"{self.name}\x1f{self.first_date}"


@dataclass(frozen=True, slots=True)
class Revision:
    """Which text of a reply: the swipe shown and a hash of ``mes``."""

    swipe_id: int
    mes_hash: str

    def __str__(self) -> str:
        return f"{self.swipe_id}:{self.mes_hash}"


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: the parsed object (unknown keys kept) plus typed views of it."""

    index: int
    data: dict[str, Any]
    raw: bytes

    @property
    def name(self) -> str:
        value = self.data.get("name")
        return value if isinstance(value, str) else ""

    @property
    def is_user(self) -> bool:
        return _truthy(self.data.get("is_user"))

    @property
    def is_system(self) -> bool:
        """Hidden from the prompt (``true``); ``false``, ``""`` and absent are visible."""
        return _truthy(self.data.get("is_system"))

    @property
    def mes(self) -> str:
        value = self.data.get("mes")
        return value if isinstance(value, str) else ""

    @property
    def extra(self) -> dict[str, Any]:
        value = self.data.get("extra")
        return value if isinstance(value, dict) else {}

    @property
    def marker(self) -> str | None:
        """Our job id if we wrote this message (top-level ``extra`` only, never swipe_info)."""
        value = self.extra.get(MARKER_KEY)
        return value if isinstance(value, str) and value else None

    @property
    def is_narrator(self) -> bool:
        """A ``/sys`` narrator line (its ``is_system`` is ``""``: visible, yet no character's)."""
        return self.extra.get("type") == "narrator"

    @property
    def is_slash_command(self) -> bool:
        """Typed by the user through a slash command (``/sendas``, ``/sys``), not generated.

        ST marks such lines ``extra.model = "slash command"`` (``api = "manual"``); a swipe
        generated on one later replaces ``extra`` with the real API's.
        """
        return self.extra.get("model") == "slash command"

    @property
    def is_st_system(self) -> bool:
        """ST's own UI messages ("SillyTavern System", isSmallSys, typed system messages)."""
        extra = self.extra
        if _truthy(extra.get("isSmallSys")):
            return True
        kind = extra.get("type")
        if isinstance(kind, str) and kind and kind != "narrator":
            return True
        return self.name == "SillyTavern System"

    @property
    def swipe_id(self) -> int:
        value = self.data.get("swipe_id")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def swipes(self) -> list[str]:
        value = self.data.get("swipes")
        return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []

    @property
    def send_date(self) -> str:
        value = self.data.get("send_date")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(int(value))
        return value if isinstance(value, str) else ""

    @property
    def is_generated(self) -> bool:
        return "gen_finished" in self.data or "gen_started" in self.data

    @property
    def first_date(self) -> str:
        """The first swipe's start: stable across swipes (top-level dates follow the swipe).

        ``swipe_info[0]`` (``gen_started``, else ``send_date``); without swipe info, the
        top-level ``gen_started`` of an unswiped reply, else ``send_date``. Limitation: a
        message that got ``swipes`` but no ``swipe_info`` (up to 1.14, only the last message
        is given swipe fields) and is then swiped keeps no record of its first date, so it
        becomes a new identity (reported as removed plus new).
        """
        info = self.data.get("swipe_info")
        if not isinstance(info, list):
            info = self.data.get("swipes_info")  # 1.12 misspells it on /sendas
        if isinstance(info, list) and info and isinstance(info[0], dict):
            first = info[0]
            for key in ("gen_started", "send_date"):
                value = first.get(key)
                if isinstance(value, str) and value:
                    return value
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return str(int(value))
        value = self.data.get("gen_started")
        if isinstance(value, str) and value and not self.swipes[1:]:
            return value
        return self.send_date

    @property
    def identity(self) -> MessageIdentity:
        return MessageIdentity(self.index, self.name, self.first_date)

    @property
    def revision(self) -> Revision:
        digest = hashlib.sha256(self.mes.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return Revision(self.swipe_id, digest)


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One line of the file: its bytes, and its parsed object when it parsed."""

    lineno: int
    raw: bytes
    obj: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class LineMessage:
    """A message found by one of :class:`Chat`'s line searches, and where its line is.

    The line's bytes are ``chat.data[start:end]``; ``end`` is the offset of the ``\\n`` that
    ends it (or the file's length): the position :func:`daemon.tavern.write.insert_after_line`
    takes. ``message.index`` is always ``-1``: ST numbers messages skipping the lines that do
    not parse, so numbering one needs every earlier line parsed, which line searches avoid.
    """

    start: int
    end: int
    message: Message


@dataclass(frozen=True, slots=True)
class _FullView:
    lines: list[ChatLine]
    header: dict[str, Any] | None
    messages: list[Message]
    bad_lines: list[int]
    starts: list[int]  # byte offset of each line
    message_lines: list[int]  # line number of each message


_MAX_SEARCH_HITS = 256
"""Lines a byte search parses before handing the question to the full view (a needle found
on most lines of a chat would otherwise cost more than one full parse)."""


def _literal(value: str) -> bool:
    """Whether every JSON encoder in use writes ``value`` byte for byte as it is (so a byte
    search finds every line holding it): printable ASCII without quote, backslash or slash
    (some encoders write ``\\/``). Anything else is looked up in the full view. A date that
    was a number is found by its integer digits, which JSON writers put literally (JS below
    1e21, Python below 1e16 ms, that is before the year 318,000)."""
    return (
        value.isascii()
        and value.isprintable()
        and not any(c in value for c in '"\\/')
        and bool(value)
    )


class Chat:
    """A whole chat file, every line kept byte for byte, parsed only as far as it is used.

    The full view (``lines``, ``messages``, ``bad_lines``, :meth:`line_of`, :meth:`find`,
    :meth:`find_marker`, :meth:`markers`) parses every line the first time one of them is
    used, once. ``messages`` are numbered as ST numbers them (the header is not a message);
    lines that did not parse are in ``bad_lines`` (line numbers) and are not messages: ST drops
    them on load.

    The line view (:meth:`find_line`, :meth:`find_marker_line`, :meth:`line_message`,
    :meth:`lines_backwards`, :meth:`lines_after`) parses only the lines it looks at, so an edit
    of a 100,000-message chat costs a byte search and a few parsed lines, not a full parse.
    ``header``, ``integrity``, ``trailing_newline`` and ``date_style`` use it too. Both views
    give the same answers (tested); a lookup the line view cannot answer exactly asks the full
    view.
    """

    __slots__ = ("_full", "_parsed", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._full: _FullView | None = None
        self._parsed: dict[int, dict[str, Any] | None] = {}  # line start -> parsed line

    def __repr__(self) -> str:
        return f"Chat({len(self.data)} bytes)"

    def __eq__(self, other: object) -> bool:
        return self.data == other.data if isinstance(other, Chat) else NotImplemented

    # --- the full view ---------------------------------------------------------------------

    def _view(self) -> _FullView:
        full = self._full
        if full is None:
            full = self._full = _parse_full(self.data)
        return full

    @property
    def lines(self) -> list[ChatLine]:
        return self._view().lines

    @property
    def messages(self) -> list[Message]:
        return self._view().messages

    @property
    def bad_lines(self) -> list[int]:
        return self._view().bad_lines

    def line_of(self, message_index: int) -> int:
        """The line number (0-based, header included) of message ``message_index``."""
        return self._view().message_lines[message_index]

    def message_span(self, message_index: int) -> tuple[int, int]:
        """The ``(start, end)`` byte offsets of message ``message_index``'s line."""
        view = self._view()
        start = view.starts[view.message_lines[message_index]]
        return start, start + len(view.messages[message_index].raw)

    def find_marker(self, job_id: str) -> Message | None:
        """Our message for ``job_id``, found by the marker in its top-level ``extra``."""
        for message in self.messages:
            if message.marker == job_id:
                return message
        return None

    def markers(self) -> dict[str, Message]:
        return {m.marker: m for m in self.messages if m.marker is not None}

    def find(self, identity: MessageIdentity) -> Message | None:
        """The message with this identity key; when several share it, the one nearest the
        index hint, and of two equally near the later one (the usual shift is our own image
        messages inserted above, which move a reply down)."""
        best: Message | None = None
        for message in self.messages:
            if message.identity.key == identity.key and (
                best is None
                or abs(message.index - identity.index) <= abs(best.index - identity.index)
            ):
                best = message
        return best

    # --- cheap in both views -----------------------------------------------------------------

    @property
    def header(self) -> dict[str, Any] | None:
        if self._full is not None:
            return self._full.header
        if not self.data:
            return None
        obj = self._obj(0, self._line_end(0))
        return obj if obj is not None and is_header(obj) else None

    @property
    def trailing_newline(self) -> bool:
        return self.data.endswith(b"\n")

    @property
    def integrity(self) -> str | None:
        meta = (self.header or {}).get("chat_metadata")
        value = meta.get("integrity") if isinstance(meta, dict) else None
        return value if isinstance(value, str) else None

    @property
    def date_style(self) -> str:
        """The ``send_date`` style of the newest dated message: "iso", "human", "ms" or "at"."""
        for start, end in self.lines_backwards():
            line = self.line_message(start, end)
            if line is not None and line.message.data.get("send_date") is not None:
                return send_date_style(line.message.data["send_date"])
        header = self.header
        return "iso" if header is None or "create_date" not in header else "human"

    # --- the line view -----------------------------------------------------------------------

    def _line_end(self, pos: int) -> int:
        end = self.data.find(b"\n", pos)
        return len(self.data) if end < 0 else end

    def _obj(self, start: int, end: int) -> dict[str, Any] | None:
        try:
            return self._parsed[start]
        except KeyError:
            obj = self._parsed[start] = parse_line(self.data[start:end])
            return obj

    def line_around(self, pos: int) -> tuple[int, int]:
        """The ``(start, end)`` of the line holding byte ``pos``."""
        return self.data.rfind(b"\n", 0, pos) + 1, self._line_end(pos)

    def lines_backwards(self, before: int | None = None) -> Iterator[tuple[int, int]]:
        """Every line's ``(start, end)``, newest first; not the empty one after a trailing
        newline (it is no line to ST). With ``before`` (a line's start), only the lines above
        that one: e.g. the context of a reply found by :meth:`find_line`."""
        data = self.data
        if not data or before == 0:
            return
        if before is not None:
            end = before - 1
        else:
            end = len(data) - 1 if data.endswith(b"\n") else len(data)
        while True:
            start = data.rfind(b"\n", 0, end) + 1
            yield start, end
            if start == 0:
                return
            end = start - 1

    def lines_after(self, end: int) -> Iterator[tuple[int, int]]:
        """The ``(start, end)`` of the lines after the one ending at ``end``, in file order."""
        data = self.data
        while end + 1 < len(data):  # a trailing newline's empty last line is not a line
            start = end + 1
            end = self._line_end(start)
            yield start, end

    def line_message(self, start: int, end: int) -> LineMessage | None:
        """The message on the line ``data[start:end]``; ``None`` for the header and for a
        line that does not parse. Each line is parsed once."""
        obj = self._obj(start, end)
        if obj is None or (start == 0 and is_header(obj)):
            return None
        return LineMessage(start, end, Message(-1, obj, self.data[start:end]))

    def _search(self, needle: bytes) -> list[LineMessage] | None:
        """The messages on lines holding ``needle``, newest first; ``None`` (ask the full
        view) once more than :data:`_MAX_SEARCH_HITS` lines held it."""
        found: list[LineMessage] = []
        data = self.data
        pos = len(data)
        hits = 0
        while (hit := data.rfind(needle, 0, pos)) >= 0:
            start, end = self.line_around(hit)
            pos = start
            hits += 1
            if hits > _MAX_SEARCH_HITS:
                return None
            line = self.line_message(start, end)
            if line is not None:
                found.append(line)
        return found

    def _located(self, message: Message | None) -> LineMessage | None:
        """A full-view message as a :class:`LineMessage`."""
        if message is None:
            return None
        start, end = self.message_span(message.index)
        return LineMessage(start, end, Message(-1, message.data, message.raw))

    def find_marker_line(self, job_id: str) -> LineMessage | None:
        """Our message for ``job_id`` (top-level ``extra`` only), the newest if there are
        several: a byte search for the id, then a parse of the lines holding it."""
        lines = self._search(job_id.encode()) if _literal(job_id) else None
        if lines is None:
            found = [m for m in self.messages if m.marker == job_id]
            return self._located(found[-1] if found else None)
        return next((line for line in lines if line.message.marker == job_id), None)

    def find_line(self, identity: MessageIdentity) -> LineMessage | None:
        """:meth:`find` through the line view: only the lines holding the identity's date are
        parsed. The index hint only matters when several messages share the identity; then
        the full view decides, as :meth:`find` does."""
        date = identity.first_date
        lines = (
            self._search(date.encode()) if _literal(date) and "\x1f" not in identity.name else None
        )
        if lines is not None:
            key = identity.key
            matches = [line for line in lines if line.message.identity.key == key]
            if len(matches) <= 1:
                return matches[0] if matches else None
        return self._located(self.find(identity))


def _parse_full(data: bytes) -> _FullView:
    raw_lines = split_lines(data)
    trailing = bool(raw_lines) and raw_lines[-1] == b""
    lines: list[ChatLine] = []
    messages: list[Message] = []
    bad: list[int] = []
    starts: list[int] = []
    message_lines: list[int] = []
    header: dict[str, Any] | None = None
    offset = 0
    for lineno, raw in enumerate(raw_lines):
        starts.append(offset)
        offset += len(raw) + 1
        if trailing and lineno == len(raw_lines) - 1:
            lines.append(ChatLine(lineno, raw, None))
            break
        obj = parse_line(raw)
        lines.append(ChatLine(lineno, raw, obj))
        if obj is None:
            bad.append(lineno)
        elif lineno == 0 and is_header(obj):
            header = obj
        else:
            messages.append(Message(len(messages), obj, raw))
            message_lines.append(lineno)
    return _FullView(lines, header, messages, bad, starts, message_lines)


def parse_chat(data: bytes) -> Chat:
    """The chat in ``data``. Never raises for bad content: bad lines are kept and reported.

    Lines are parsed when first used (see :class:`Chat`)."""
    return Chat(data)


def read_chat(path: Path, *, max_bytes: int = MAX_CHAT_BYTES) -> tuple[Chat, bytes]:
    """Read and parse a chat; returns the parsed chat and the exact bytes it came from."""
    fd, st = open_regular(path, ChatReadError, "chat", "a chat file")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > max_bytes:
            raise ChatReadError(
                f"chat {path.name!r} is {st.st_size / 1e6:.0f} MB, "
                f"over the {max_bytes / 1e6:.0f} MB limit"
            )
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ChatReadError(f"chat {str(path)!r} cannot be read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ChatReadError(f"chat {path.name!r} grew past the {max_bytes / 1e6:.0f} MB limit")
    lines = data.count(b"\n") + 1
    if lines > MAX_CHAT_LINES:
        raise ChatReadError(
            f"chat {path.name!r} has {lines:,} lines, over the {MAX_CHAT_LINES:,} line limit"
        )
    return parse_chat(data), data


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    """Replace lone surrogates (they cannot be encoded as UTF-8) in copied text."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def encode_message(obj: Mapping[str, Any]) -> bytes:
    """Serialize a new line the way ST does: compact, raw non-ASCII, one line."""
    text = json.dumps(_scrub(dict(obj)), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


# --- send_date -------------------------------------------------------------------------------

_HUMAN = re.compile(
    r"^(?P<mon>[A-Za-z]+)\s+(?P<d>\d{1,2}),\s*(?P<y>\d{4})\s+(?P<h>\d{1,2}):(?P<mi>\d{2})\s*(?P<ap>am|pm)$",
    re.IGNORECASE,
)
_AT = re.compile(
    r"^(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})\s*@\s*(?P<h>\d{1,2})h\s*(?P<mi>\d{1,2})m"
    r"(?:\s*(?P<s>\d{1,2})s)?(?:\s*(?P<ms>\d{1,3})ms)?$"
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}


def send_date_style(value: object) -> str:
    """ "iso", "human" ("November 23, 2025 10:06pm"), "ms" (unix ms) or "at" (``@HHhMMm``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "ms"
    if isinstance(value, str):
        if _HUMAN.match(value.strip()):
            return "human"
        if "@" in value:
            return "at"
        if value.strip().isdigit():
            return "ms"
    return "iso"


def parse_send_date(value: object) -> datetime | None:
    """Parse every ``send_date`` form ST has written; naive local forms are taken as UTC.

    ISO-8601 (1.15+), "November 23, 2025 10:06pm" (to 1.14), unix ms numbers or digit strings,
    "2024-7-12@01h31m37s" and "2024-6-5 @14h 56m 50s 682ms". ``None`` when unparsable.
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value / 1000, UTC)
        text = str(value).strip()
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        if m := _HUMAN.match(text):
            month = _MONTHS.get(m["mon"][:3].lower())
            if month is None:
                return None
            hour = int(m["h"]) % 12 + (12 if m["ap"].lower() == "pm" else 0)
            return datetime(int(m["y"]), month, int(m["d"]), hour, int(m["mi"]), tzinfo=UTC)
        if m := _AT.match(text):
            return datetime(
                int(m["y"]),
                int(m["mo"]),
                int(m["d"]),
                int(m["h"]),
                int(m["mi"]),
                int(m["s"] or 0),
                int(m["ms"] or 0) * 1000,
                tzinfo=UTC,
            )
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def format_send_date(when: datetime, style: str) -> str | int:
    """Format ``when`` in the chat's own style (see :func:`send_date_style`)."""
    when = when.astimezone(UTC)
    if style == "ms":
        return int(when.timestamp() * 1000)
    if style == "human":
        hour12 = when.hour % 12 or 12
        ampm = "am" if when.hour < 12 else "pm"
        return f"{when:%B} {when.day}, {when.year} {hour12}:{when.minute:02d}{ampm}"
    if style == "at":
        clock = f"{when.hour:02d}h{when.minute:02d}m{when.second:02d}s"
        return f"{when.year}-{when.month}-{when.day}@{clock}"
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# --- backwards tail scan ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """What we last saw of a chat: the newest messages' identities and revisions, and the file.

    ``recent`` holds up to :data:`CURSOR_DEPTH` (identity, revision) pairs, oldest first; the
    last one is the newest message seen. ``message_count`` and ``size`` describe the file then.
    """

    recent: tuple[tuple[MessageIdentity, Revision], ...]
    message_count: int
    size: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "recent": [
                    [i.index, i.name, i.first_date, r.swipe_id, r.mes_hash] for i, r in self.recent
                ],
                "message_count": self.message_count,
                "size": self.size,
            },
            ensure_ascii=True,  # names may hold lone surrogates, which UTF-8 cannot encode
        )

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        obj = json.loads(text)
        recent = tuple(
            (MessageIdentity(int(a), str(b), str(c)), Revision(int(d), str(e)))
            for a, b, c, d, e in obj["recent"]
        )
        return cls(recent, int(obj["message_count"]), int(obj["size"]))

    @classmethod
    def of(cls, messages: Sequence[Message], size: int, total: int | None = None) -> Cursor:
        """A cursor after seeing ``messages`` (the newest of them, in file order)."""
        tail = list(messages)[-CURSOR_DEPTH:]
        count = total if total is not None else (tail[-1].index + 1 if tail else 0)
        return cls(tuple((m.identity, m.revision) for m in tail), count, size)


CURSOR_DEPTH = 8
"""How many of the newest messages a cursor remembers: edits and deletions among them are
reported; one scan reads about this many messages past the new ones."""
