"""A base for fake hosted services on 127.0.0.1 (a real threaded HTTP server, a free port).

A fake subclasses :class:`FakeService` and answers in :meth:`FakeService.answer`; every request
is recorded (method, path, query, headers, body). ``script`` holds answers to give first
(consumed in order, per "METHOD /path"), for failure modes: a 429 with or without Retry-After,
a 500, a safety block.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from PIL import Image

__all__ = ["FakeService", "Reply", "Seen", "b64png", "png", "serve"]


def png(width: int = 8, height: int = 8, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def b64png(width: int = 8, height: int = 8) -> str:
    return base64.b64encode(png(width, height)).decode()


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, payload: Any, status: int = 200, **headers: str) -> Reply:
        return cls(
            status,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", **headers},
        )


@dataclass
class FakeService:
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    script: dict[str, list[Reply]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)
    image: bytes = b""  # the picture every answer carries (a benchmark's); empty: a tiny PNG

    def picture(self, width: int = 8, height: int = 8) -> bytes:
        return self.image or png(width, height)

    def b64picture(self, width: int = 8, height: int = 8) -> str:
        return base64.b64encode(self.picture(width, height)).decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def reply(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
            queued = self.script.get(f"{seen.method} {seen.path}")
            if queued:
                return queued.pop(0)
        return self.answer(seen)

    def answer(self, seen: Seen) -> Reply:
        return Reply.of({"error": {"message": "not found"}}, 404)


def _handler(fake: FakeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            # Without it, delayed ACKs add 40 ms to each small answer: a fake must be quick.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            reply = fake.reply(seen)
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


F = TypeVar("F", bound=FakeService)


@contextlib.contextmanager
def serve(fake: F) -> Iterator[F]:
    httpd = _Server(("127.0.0.1", 0), _handler(fake))
    fake.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
