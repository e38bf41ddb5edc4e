"""The job-change hub: the store tells it about every job it changes (in this process), and
each open event stream (``GET /api/v1/events``) gets a copy.

Events carry a monotonic sequence number; the last :data:`REPLAY` of them are kept so a client
that reconnects with ``Last-Event-ID`` gets what it missed (older than that: a ``reset`` event,
the client reloads its list). A subscriber that stops reading is dropped rather than letting
its queue grow: its stream ends and the browser reconnects.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from daemon.engine.front import Job, JobState

__all__ = ["REPLAY", "Event", "EventHub", "sse_format"]

log = structlog.get_logger("st_imagegen.web")

REPLAY = 512
"""Events kept for clients that reconnect."""

QUEUE = 256
"""Events a subscriber may lag behind before it is dropped."""


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    name: str
    data: str  # JSON text
    user: str | None = None  # the ST handle the event is about; None: for every caller


def sse_format(event: Event | None = None, *, comment: str | None = None) -> bytes:
    """One server-sent event (or a comment line) as bytes."""
    if event is None:
        return f": {comment or ''}\n\n".encode()
    lines = [f"id: {event.seq}", f"event: {event.name}"]
    lines += [f"data: {line}" for line in event.data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


class EventHub:
    """Publish job changes to every subscriber; ``render`` turns a job into its API object."""

    def __init__(self, render: Callable[[Job], dict[str, Any]]) -> None:
        self.render = render
        self._seq = 0
        self._recent: deque[Event] = deque(maxlen=REPLAY)
        self._subscribers: set[MemoryObjectSendStream[Event]] = set()
        self.closed = False

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def job_changed(self, job: Job, previous: JobState | None) -> None:
        """The store's listener (runs in the event loop, right after the change committed)."""
        data = {
            "type": "job",
            "job": self.render(job),
            "previous_state": previous.value if previous is not None else None,
        }
        self.publish("job", data, user=job.user)

    def publish(self, name: str, data: dict[str, Any], *, user: str | None = None) -> Event:
        self._seq += 1
        event = Event(self._seq, name, json.dumps(data, ensure_ascii=False), user)
        self._recent.append(event)
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                log.info("event stream client too slow; dropped")
                self._drop(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(stream)
        return event

    def _drop(self, stream: MemoryObjectSendStream[Event]) -> None:
        self._subscribers.discard(stream)
        stream.close()

    def replay_after(self, last: int) -> list[Event] | None:
        """Events after ``last``; ``None`` when some of them are no longer kept."""
        if last >= self._seq:
            return []
        kept = [e for e in self._recent if e.seq > last]
        if not kept or kept[0].seq != last + 1:
            return None
        return kept

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](QUEUE)
        if self.closed:
            send.close()
        else:
            self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

    def close(self) -> None:
        """End every stream (the daemon stops)."""
        self.closed = True
        for stream in list(self._subscribers):
            self._drop(stream)


async def stream_events(
    hub: EventHub,
    last_event_id: str | None,
    hello: dict[str, Any],
    *,
    ping_seconds: float = 15.0,
    view: Callable[[Event], Event | None] = lambda event: event,
    alive: Callable[[], bool] = lambda: True,
) -> AsyncIterator[bytes]:
    """The body of ``GET /api/v1/events``; ``view`` is what this caller may see of an event
    (None: nothing; another user's event never reaches the stream, replayed or live)."""

    async with hub.subscribe() as receive:
        # Subscribed, then the replay read and ``seen`` fixed with no await in between: every
        # later event reaches the queue, every earlier one is in the replay (or skipped).
        first = [sse_format(Event(hub.seq, "hello", json.dumps(hello)))]
        last = _parse_last(last_event_id)
        if last is not None:
            missed = hub.replay_after(last)
            if missed is None:
                first.append(sse_format(Event(hub.seq, "reset", json.dumps({"type": "reset"}))))
            else:
                shown = (view(event) for event in missed)
                first.extend(sse_format(event) for event in shown if event is not None)
        seen = hub.seq
        for chunk in first:
            yield chunk
        while True:
            with anyio.move_on_after(ping_seconds if ping_seconds > 0 else math.inf):
                try:
                    event = await receive.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                if event.seq > seen:
                    seen = event.seq
                    seen_as = view(event)
                    if seen_as is not None:
                        yield sse_format(seen_as)
                continue
            if not alive():
                return  # the caller's token was revoked: its stream ends with it
            yield sse_format(comment="ping")


def _parse_last(value: str | None) -> int | None:
    if not value or len(value) > 20 or not value.strip().isdigit():
        return None
    return int(value.strip())
