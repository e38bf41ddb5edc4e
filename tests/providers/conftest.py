"""Fixtures for the provider tests: a controlled clock, tiny real images, a real local server."""

from __future__ import annotations

import functools
import io
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio.lowlevel
import httpx
import pytest
import respx
from PIL import Image

from daemon.providers.http import RetryPolicy, make_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Records sleeps and advances its own time instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_800_000_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.wall += seconds
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@functools.cache
def _tls() -> ssl.SSLContext:
    # Building a TLS context loads the CA bundle (~0.1 s); once per session is plenty.
    return ssl.create_default_context()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The shared client as the daemon makes it (respx patches its transport)."""
    async with make_client(verify=_tls()) as c:
        yield c


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as r:
        yield r


@dataclass
class InFlight:
    """A respx side effect that answers ``answer()`` after a few scheduler turns, recording the
    most requests ever in flight at once (``peak``), to check a concurrency limit."""

    answer: Callable[[], httpx.Response]
    inflight: int = 0
    peak: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()  # let the other tasks try to start theirs
        self.inflight -= 1
        return self.answer()


def no_jitter_policy(attempts: int = 3, **kwargs: Any) -> RetryPolicy:
    """A retry policy whose jitter is fixed (rng 0: half the backoff ceiling)."""
    return RetryPolicy(attempts=attempts, base=1.0, cap=60.0, rng=lambda: 0.0, **kwargs)


def make_image(fmt: str = "PNG", size: tuple[int, int] = (8, 6), color: str = "red") -> bytes:
    """A tiny real image in ``fmt`` (PNG, JPEG, WEBP, GIF)."""
    buf = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


async def public_resolver(host: str, port: int) -> list[str]:
    """Every name resolves to a public documentation-range-free address (no DNS in tests)."""
    return ["93.184.216.34"]


# ---------------------------------------------------------------- a real local HTTP server

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class LocalServer:
    """A threaded HTTP server on 127.0.0.1; ``routes`` maps "METHOD /path" to a handler."""

    port: int
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # method, path, host
    stop: threading.Event = field(default_factory=threading.Event)  # set at teardown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler_class(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            server.requests.append((method, path, self.headers.get("host", ""), body))
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            route = server.routes.get(f"{method} {path}")
            try:
                if route is None:
                    self.send_error(404)
                else:
                    route(self)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a cap or a deadline): expected in these tests

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return _Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    state = LocalServer(port=0)
    httpd = _QuietServer(("127.0.0.1", 0), _handler_class(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    """Send a whole response."""
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def stream(
    handler: BaseHTTPRequestHandler,
    chunks: Iterable[bytes],
    *,
    content_type: str = "text/event-stream",
    pause: float = 0.0,
    stop: threading.Event | None = None,
) -> None:
    """Send a 200 whose body is written chunk by chunk (no length: it ends when we close)."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.end_headers()
    for chunk in chunks:
        if stop is not None and stop.is_set():
            return
        handler.wfile.write(chunk)
        handler.wfile.flush()
        if pause and stop is not None:
            stop.wait(pause)  # a slow server, as the test means it to be
