"""An incremental server-sent-events decoder (the WHATWG event-stream rules).

Bytes go in as they arrive, in chunks split anywhere (inside a UTF-8 sequence, between ``\\r``
and ``\\n``); complete events come out. Comment lines (``: keepalive``) are dropped here; what an
event means is for the caller.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent", "StreamTooLarge", "iter_sse"]

_EOL = re.compile(r"\r\n|\r|\n")


class StreamTooLarge(ValueError):
    """The stream went over its byte cap."""


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: ``event`` is "" when the stream named none."""

    data: str
    event: str = ""
    id: str = ""


class SSEDecoder:
    """Feed bytes, get events. ``close()`` flushes what is left at the end of the stream."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._id = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by ``chunk``."""
        self._buf += self._text.decode(chunk)
        return self._drain(final=False)

    def close(self) -> list[SSEEvent]:
        """Events left at the end of the stream.

        The standard drops an event that is not followed by a blank line; servers that end the
        body right after their last ``data:`` line are common, so such an event is kept.
        """
        self._buf += self._text.decode(b"", final=True)
        events = self._drain(final=True)
        if self._buf:
            events.extend(self._line(self._buf))
            self._buf = ""
        pending = self._dispatch()
        if pending is not None:
            events.append(pending)
        return events

    def _drain(self, *, final: bool) -> list[SSEEvent]:
        if not self._started and self._buf:
            self._started = True
            if self._buf.startswith("\ufeff"):
                self._buf = self._buf[1:]
        events: list[SSEEvent] = []
        buf = self._buf
        start = 0
        while True:
            match = _EOL.search(buf, start)
            if match is None:
                break
            # A lone "\r" at the very end may be the first half of "\r\n": wait for more.
            if match.group() == "\r" and match.end() == len(buf) and not final:
                break
            events.extend(self._line(buf[start : match.start()]))
            start = match.end()
        self._buf = buf[start:]
        return events

    def _line(self, line: str) -> list[SSEEvent]:
        if not line:
            event = self._dispatch()
            return [event] if event is not None else []
        if line.startswith(":"):
            return []
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return []

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent(data="\n".join(data), event=event, id=self._id)


async def iter_sse(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[SSEEvent]:
    """Events from a byte stream; raises :class:`StreamTooLarge` past ``max_bytes``."""
    decoder = SSEDecoder()
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise StreamTooLarge(f"the event stream went over {max_bytes} bytes")
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event
