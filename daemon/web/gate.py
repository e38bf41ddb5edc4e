"""The inbox's door under hostile load: how many connections it holds, how long a connection may
take to send its request, and how loudly it complains.

* **Connections are capped** below the descriptor limit (``web.max_connections``, and never more
  than the soft ``RLIMIT_NOFILE`` minus :data:`RESERVED_FDS`): the engine's chats, store and
  heartbeat always find a descriptor.
* **At the cap, a complete request wins**: connections are accepted here, not by asyncio's
  server. Below the cap every one is taken in. At the cap a new connection waits, in a short
  line of :data:`WAITING` (no protocol, task or timer: just its socket), for its whole request
  head, which a browser or the extension sends at once; then it pushes out the oldest *idle*
  connection (no request in progress: half-open, or a keep-alive between requests). A newer
  arrival pushes the oldest waiting one out of the line. Each of these costs an accept, a read
  and a close: a flood that keeps reconnecting is drained from the kernel's queue fast, so a
  real request behind it waits milliseconds, not seconds. A request in progress (an event
  stream too) is never cut.
* **Header timeout**: a connection that has not sent a complete request head within
  ``web.header_timeout_seconds`` (after connecting, or after its previous answer) is closed.
* **Accept errors** (out of descriptors all the same) pause accepting briefly and are logged
  once per episode, with their count when it ends.
* **Log lines are rate-limited**: a message repeated by the flood (``socket.accept() out of
  system resource``, uvicorn's "Invalid HTTP request") is logged once per
  :data:`LOG_EPISODE_SECONDS` episode, the next line carrying how many were held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import resource
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "ACCEPT_BATCH",
    "Gate",
    "RateLimitFilter",
    "connection_cap",
    "protocol_class",
]

log = structlog.get_logger("st_imagegen.web")

RESERVED_FDS = 256
"""Descriptors never given to inbox connections (the engine's files, store, API calls)."""

ACCEPT_BATCH = 256
"""Connections accepted per wake-up of the listening socket."""

LISTEN_QUEUE = 4096
"""The kernel's queue of connections not yet accepted (capped by net.core.somaxconn)."""

PEEK_BYTES = 16384
"""The largest request head a connection waiting at the cap may send."""

WAITING = 128
"""Connections waiting at the cap for their request head (the oldest goes when one more comes)."""

ACCEPT_PAUSE = 0.5
"""Seconds accepting rests after an accept failed for lack of descriptors or memory."""

ERROR_EPISODE_GAP = 10.0
"""Accept errors this far apart are two episodes (each logged once)."""

LOG_EPISODE_SECONDS = 60.0
"""One line per repeated message per this many seconds."""


def connection_cap(configured: int) -> int:
    """``configured``, lowered to leave :data:`RESERVED_FDS` of the soft descriptor limit (or a
    quarter of it, when the limit is small) to the engine."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return configured
    reserve = min(RESERVED_FDS, soft // 4) if soft < 4 * RESERVED_FDS else RESERVED_FDS
    return max(8, min(configured, soft - reserve - WAITING))


class Gate:
    """The connections one inbox holds, and its accept loop (event loop only)."""

    def __init__(self, cap: int, header_timeout: float) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.open: OrderedDict[GuardedH11, None] = OrderedDict()  # oldest first
        self.arriving = 0  # accepted, handed to asyncio, not yet connection_made
        self.waiting: OrderedDict[socket.socket, tuple[bytearray, float]] = OrderedDict()
        self._sweeper: asyncio.TimerHandle | None = None
        self.pushed_out = 0
        self.refused = 0
        self.timed_out = 0
        self.accept_errors = 0
        self._episode_errors = 0
        self.episode_gap = ERROR_EPISODE_GAP
        self.accept_pause = ACCEPT_PAUSE
        self._last_error = -math.inf
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._factory: Callable[[], asyncio.Protocol] | None = None

    # --- accepting -------------------------------------------------------------------------

    def serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        """Accept on ``sock`` from now on (asyncio's own accept handler is taken off it)."""
        self._loop, self._sock, self._factory = loop, sock, factory
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.listen(LISTEN_QUEUE)
        loop.remove_reader(sock.fileno())
        loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        if self._loop is not None and self._sock is not None and self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
        self._sock = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.waiting):
            self._forget(conn)

    def _full(self) -> bool:
        return len(self.open) + self.arriving >= self.cap

    def _accept(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                break
            except OSError as exc:
                self._accept_failed(exc)
                return
            conn.setblocking(False)
            self._arrived(conn)
        self._accept_recovered()

    # A new connection gets a protocol (uvicorn's, a task, timers) only once its whole request
    # head is in. Until then it waits as a bare socket: a flood of heads that never end costs
    # an accept, a read and a close each, and never pushes a real request's connection out.

    def _holding(self) -> int:
        return len(self.open) + self.arriving + len(self.waiting)

    def _arrived(self, conn: socket.socket) -> None:
        assert self._loop is not None
        try:
            first: bytes | None = conn.recv(PEEK_BYTES)
        except (BlockingIOError, InterruptedError):
            first = None  # nothing yet: its head may be on the way
        except OSError:
            first = b""
        if first is not None and b"\r\n\r\n" in first:
            self._admit_with(conn, first)
            return
        if first == b"":
            conn.close()  # gone already
            return
        if self._holding() >= self.cap + WAITING:
            if first:
                # At the limit, a head begun and left unfinished (what a slow-headers flood
                # sends) is closed at once, with a reset (no FIN handshake, no TIME_WAIT).
                self.refused += 1
                _reset(conn)
                return
            if not self.waiting:
                self.refused += 1
                _reset(conn)
                return
            self._forget(next(iter(self.waiting)))  # the oldest waiting one makes room
            self.refused += 1
        self.waiting[conn] = (bytearray(first or b""), time.monotonic() + self.header_timeout)
        self._loop.add_reader(conn.fileno(), self._read_head, conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.header_timeout, self._timed_sweep)

    def _admit_with(self, conn: socket.socket, head: bytes) -> None:
        """Serve ``conn`` whose request head is ``head``: below the cap at once, at the cap in
        the place of the oldest idle connection; refused when every one is busy."""
        if self._full() and not self._room_for_one():
            self.refused += 1
            _reset(conn)
            return
        self._hand_over(conn, head)

    def _timed_sweep(self) -> None:
        self._sweeper = None
        self._sweep_waiting()
        if self.waiting and self._loop is not None:
            self._sweeper = self._loop.call_later(self.header_timeout, self._timed_sweep)

    def _read_head(self, conn: socket.socket) -> None:
        entry = self.waiting.get(conn)
        if entry is None:
            return
        head, _deadline = entry
        try:
            data = conn.recv(PEEK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or len(head) + len(data) > PEEK_BYTES:
            self._forget(conn)  # gone, or a head larger than any real one
            self.refused += 1
            return
        head += data
        if b"\r\n\r\n" not in head:
            return
        assert self._loop is not None
        self._loop.remove_reader(conn.fileno())
        del self.waiting[conn]
        self._admit_with(conn, bytes(head))

    def _forget(self, conn: socket.socket) -> None:
        self.waiting.pop(conn, None)
        if self._loop is not None and conn.fileno() >= 0:
            self._loop.remove_reader(conn.fileno())
        _reset(conn)

    def _sweep_waiting(self) -> None:
        now = time.monotonic()
        while self.waiting:
            conn, (_head, deadline) = next(iter(self.waiting.items()))
            if deadline > now:
                break
            self._forget(conn)
            self.timed_out += 1

    def _room_for_one(self) -> bool:
        """Push out the oldest idle connection; False when every one is busy."""
        victim = next((c for c in self.open if not c.busy), None)
        if victim is None:
            return False
        self.pushed_out += 1
        victim.shut()
        return True

    def _hand_over(self, conn: socket.socket, head: bytes) -> None:
        """Serve ``conn``; ``head``: what was already read from it (fed to the protocol before
        anything else it receives)."""
        assert self._loop is not None and self._factory is not None
        factory = self._factory

        def make() -> asyncio.Protocol:
            protocol = factory()
            if head and isinstance(protocol, GuardedH11):
                protocol.prefetched = head
            return protocol

        self.arriving += 1
        self._loop.create_task(self._connect(conn, make))

    async def _connect(self, conn: socket.socket, make: Callable[[], asyncio.Protocol]) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(make, conn)
        except OSError:
            conn.close()  # the client left already, or no memory: nothing to serve
        finally:
            self.arriving -= 1

    def _accept_failed(self, exc: OSError) -> None:
        now = time.monotonic()
        self.accept_errors += 1
        if now - self._last_error > self.episode_gap:
            self._episode_errors = 0
            log.error(
                "web inbox cannot accept connections; pausing a moment (logged once per episode)",
                error=errno.errorcode.get(exc.errno or 0, str(exc)),
            )
        self._episode_errors += 1
        self._last_error = now
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(self.accept_pause, self._resume)

    def _resume(self) -> None:
        if self._loop is not None and self._sock is not None and self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def _accept_recovered(self) -> None:
        if self._episode_errors and time.monotonic() - self._last_error > self.episode_gap:
            log.warning("web inbox accepts again", failed_accepts=self._episode_errors)
            self._episode_errors = 0

    # --- connections -----------------------------------------------------------------------

    def admit(self, conn: GuardedH11) -> None:
        self.open[conn] = None

    def drop(self, conn: GuardedH11) -> None:
        self.open.pop(conn, None)


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with :class:`Gate`'s cap and header timeout."""

    gate: Gate  # set on the subclass :func:`protocol_class` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self.prefetched = b""  # read by the gate before the connection was handed over

    @property
    def busy(self) -> bool:
        """A request is in progress (its head is in: the app has it, or its answer is going)."""
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.gate.admit(self)
        self._arm()
        if self.prefetched:
            # Runs before the transport starts reading: these bytes come first.
            head, self.prefetched = self.prefetched, b""
            self.data_received(head)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.drop(self)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.busy:
            self._disarm()
        elif self._deadline is None:
            self._arm()  # a keep-alive connection started its next request head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request head has the same time as the first

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.gate.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.busy:
            self.gate.timed_out += 1
            self.shut()

    def shut(self) -> None:
        self.gate.drop(self)
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()


_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(conn: socket.socket) -> None:
    """Close ``conn`` with a reset: cheaper for both kernels than an orderly close."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    conn.close()


def protocol_class(gate: Gate) -> type[GuardedH11]:
    """The protocol class uvicorn is given (``uvicorn.Config(http=...)``) for one inbox."""
    return type("InboxH11", (GuardedH11,), {"gate": gate})


class RateLimitFilter(logging.Filter):
    """Lets a repeated message through once per :data:`LOG_EPISODE_SECONDS`; the next one that
    passes says how many were held back. Keyed by logger and message template."""

    def __init__(self, episode: float = LOG_EPISODE_SECONDS) -> None:
        super().__init__()
        self.episode = episode
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n", 1)[0][:200])
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.episode:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
            if len(self._last) > 1000:  # many different messages: forget the old ones
                self._last = {k: v for k, v in self._last.items() if now - v < self.episode}
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last episode not logged)"
        return True


RATE_LIMITED_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error")
_filter = RateLimitFilter()


def limit_noisy_loggers() -> None:
    """Rate-limit the loggers a flood makes talk (idempotent)."""
    for name in RATE_LIMITED_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
