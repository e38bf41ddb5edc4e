"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the ops tests, with key checking.

It serves ``POST /v1/chat/completions``, ``GET /v1/models`` and ``POST /v1/images/generations``,
answers 401 to a wrong ``Authorization`` header, and records every request (method, path). A
thread in the test process, so a daemon started as a subprocess reaches it too.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

__all__ = ["GOOD_KEY", "FakeAPI", "closed_port", "fake_api"]

GOOD_KEY = "sk-good-test-key"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeAPI:
    """State shared with the server thread."""

    key: str = GOOD_KEY
    models: tuple[str, ...] = ("gpt-4", "dall-e-3")
    image_delay: float = 0.0
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.requests)


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def _reply(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            with api.lock:
                api.requests.append((self.command, self.path))
            if self.headers.get("Authorization") == f"Bearer {api.key}":
                return True
            self._reply(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                    }
                },
            )
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path.endswith("/models"):
                self._reply(200, {"object": "list", "data": [{"id": m} for m in api.models]})
            else:
                self._reply(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            if not self._authorized():
                return
            if self.path.endswith("/chat/completions"):
                self._reply(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "a lantern at dusk"},
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )
            elif self.path.endswith("/images/generations"):
                time.sleep(api.image_delay)
                data = base64.b64encode(_png()).decode()
                self._reply(200, {"created": int(time.time()), "data": [{"b64_json": data}]})
            else:
                self._reply(404, {"error": {"message": "not found"}})

    return Handler


@contextmanager
def fake_api(*, key: str = GOOD_KEY, image_delay: float = 0.0) -> Iterator[FakeAPI]:
    """Serve a :class:`FakeAPI` until the block ends."""
    api = FakeAPI(key=key, image_delay=image_delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    api.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A local TCP port with nothing listening (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
