"""A stand-in SillyTavern server for the extension's browser tests: it serves the test page
(fake_st/: the subset of ``SillyTavern.getContext()`` the extension uses), the installed
extension's folder under ST's URL for it, the chat images, and ``/api/chats/get`` and
``/api/chats/save`` over the real chat files. Saves are written the way ST's server writes them
(``src/endpoints/chats.js`` ``trySaveChat``: the integrity slug checked, ``JSON.stringify`` lines
joined by ``\\n``, write-file-atomic's temp file + fsync + rename)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.stsim import js_stringify, st_temp_name

PAGE = Path(__file__).parent / "fake_st"
EXTENSION_URL = "/scripts/extensions/third-party/st-imagegen/"
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",  # module scripts need a JavaScript type
    ".css": "text/css",
    ".json": "application/json",
    ".png": "image/png",
    ".webp": "image/webp",
}


@dataclass
class FakeST:
    root: Path  # the data root
    extension: Path  # the installed extension folder ST would serve
    user: str = "default-user"
    port: int = 0
    saves: list[Path] = field(default_factory=list)  # the file of every save, in order
    refused: int = 0  # saves refused by the integrity check
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def chat_path(self, body: dict[str, Any]) -> Path:
        folder = str(body["avatar_url"]).replace(".png", "", 1)  # ST's own replace
        return self.root / self.user / "chats" / folder / f"{body['file_name']}.jsonl"

    def save(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path = Path(os.path.realpath(self.chat_path(body)))
        lines = body["chat"]
        if not isinstance(lines, list):
            return 400, {"error": "The request's body.chat is not an array."}
        mine = (lines[0].get("chat_metadata") or {}).get("integrity") if lines else None
        with self.lock:
            if mine and not body.get("force"):
                try:
                    first = path.read_bytes().split(b"\n", 1)[0]
                    theirs = (json.loads(first).get("chat_metadata") or {}).get("integrity")
                except (OSError, ValueError, AttributeError):
                    theirs = None
                if theirs and theirs != mine:
                    self.refused += 1
                    return 400, {"error": "integrity"}
            data = "\n".join(js_stringify(line) for line in lines).encode("utf-8")
            temp = st_temp_name(path)
            mode = path.stat().st_mode & 0o7777
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            temp.chmod(mode)
            temp.rename(path)
            self.saves.append(path)
        return 200, {"ok": True}

    def load(self, body: dict[str, Any]) -> list[Any]:
        try:
            text = self.chat_path(body).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.split("\n"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def _handler(st: FakeST) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _file(self, base: Path, rel: str) -> None:
            path = (base / rel).resolve()
            if not path.is_relative_to(base.resolve()) or not path.is_file():
                self._send(404, b"not found", "text/plain")
                return
            self._send(200, path.read_bytes(), TYPES.get(path.suffix, "application/octet-stream"))

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._file(PAGE, "index.html")
            elif path in ("/st.js", "/fake_st.css"):
                self._file(PAGE, path[1:])
            elif path.startswith(EXTENSION_URL):
                self._file(st.extension, path[len(EXTENSION_URL) :])
            elif path.startswith("/user/images/"):
                self._file(st.root / st.user / "user" / "images", path[len("/user/images/") :])
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/chats/get":
                self._send(200, json.dumps(st.load(body)).encode(), "application/json")
            elif self.path == "/api/chats/save":
                status, answer = st.save(body)
                self._send(status, json.dumps(answer).encode(), "application/json")
            else:
                self._send(404, b"{}", "application/json")

    return Handler


@contextmanager
def serve(st: FakeST) -> Iterator[FakeST]:
    server = ThreadingHTTPServer(("127.0.0.1", st.port), _handler(st))
    st.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield st
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
