"""Fakes for the engine tests: a local chat-completions + images API, tiny PNGs, configs.

The fake API is a real HTTP server on 127.0.0.1 (a thread in the test process), so a daemon
started as a subprocess reaches it too. It records every request and the most requests it ever
had in flight, and can be slowed down or told to fail.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from PIL import Image

from daemon.config import Config, load_config
from daemon.engine.jobs.pipeline import open_job_deps
from daemon.engine.process.service import Face, Service, ServiceTimings
from daemon.engine.store import Job, Store
from daemon.jobstate import ReplyKey
from daemon.tavern import layout
from daemon.tavern.chat import read_chat
from tests.engine.test_commit_support import Harness, harness_for, new_data_root
from tests.stsim import SimClock, STSim

if TYPE_CHECKING:
    from daemon.engine.jobs.pipeline import JobDeps

WATCHDOG_RACE = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
"""watchdog's inotify thread warns when a new folder's watch is added twice (a harmless race
when folders appear quickly); the suite turns warnings into errors, which would kill that
thread, so watcher tests ignore exactly this one."""


def tiny_png(color: tuple[int, int, int] = (200, 120, 40), size: int = 8) -> bytes:
    """A small valid PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeRequest:
    path: str
    body: dict[str, Any]
    at: float
    method: str = "POST"


GATE_TIMEOUT = 30.0
"""Longest an image call waits at a closed ``FakeAPI.image_gate`` (a test that forgot it)."""


@dataclass
class FakeAPI:
    """State shared with the server threads; change it from the test at any time."""

    host: str = "127.0.0.1"
    port: int = 0
    key: str | None = None  # when set, a request without "Bearer <key>" gets a 401
    models: tuple[str, ...] = ("gpt-4", "dall-e-3")  # GET /v1/models
    text_delay: float = 0.0
    image_delay: float = 0.0
    # When set, image calls wait for it to open (at most GATE_TIMEOUT): a call held in flight.
    image_gate: threading.Event | None = None
    images_per_call: int = 1
    # Status codes to answer with before succeeding, per route ("text" / "image"), consumed.
    fail_text: list[int] = field(default_factory=list)
    fail_image: list[int] = field(default_factory=list)
    picture: Callable[[int], bytes] | None = None  # image i of a call (default: tiny_png)
    fail_message: str = "fake failure {status}"  # the error body's message ({status} filled)
    text_suffix: str = ""  # appended to every chat completion (e.g. markup for escaping tests)
    requests: list[FakeRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    image_in_flight: int = 0
    max_image_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def seen(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far."""
        with self.lock:
            return [(r.method, r.path) for r in self.requests]

    def count(self, route: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path.endswith(route))

    def prompts(self) -> list[str]:
        with self.lock:
            return [
                str(r.body.get("prompt"))
                for r in self.requests
                if r.path.endswith("images/generations")
            ]

    def text_inputs(self) -> list[str]:
        """The last user message of every chat-completions request."""
        with self.lock:
            out = []
            for r in self.requests:
                if r.path.endswith("chat/completions"):
                    messages = r.body.get("messages") or [{}]
                    out.append(str(messages[-1].get("content", "")))
            return out


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _authorized(self) -> bool:
            if api.key is None or self.headers.get("Authorization") == f"Bearer {api.key}":
                return True
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            self._send(401, {"error": error})
            return False

        def do_GET(self) -> None:
            with api.lock:
                api.requests.append(FakeRequest(self.path, {}, time.monotonic(), "GET"))
            if not self._authorized():
                return
            if self.path.endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": m} for m in api.models]})
            else:
                self._send(404, {"error": {"message": "no such route"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            is_image = self.path.endswith("/images/generations")
            is_text = self.path.endswith("/chat/completions")
            with api.lock:
                api.requests.append(FakeRequest(self.path, body, time.monotonic()))
            if not self._authorized():
                return
            with api.lock:
                api.in_flight += 1
                api.max_in_flight = max(api.max_in_flight, api.in_flight)
                if is_image:
                    api.image_in_flight += 1
                    api.max_image_in_flight = max(api.max_image_in_flight, api.image_in_flight)
                fails = api.fail_image if is_image else api.fail_text
                status = fails.pop(0) if fails else 200
            try:
                if is_image and api.image_gate is not None:
                    api.image_gate.wait(GATE_TIMEOUT)
                time.sleep(api.image_delay if is_image else api.text_delay)
                if status != 200:
                    message = api.fail_message.replace("{status}", str(status))
                    self._send(status, {"error": {"message": message}})
                elif is_text:
                    self._send(200, _completion(body, api.text_suffix))
                elif is_image:
                    self._send(200, _images(body, api.images_per_call, api.picture))
                else:
                    self._send(404, {"error": {"message": "no such route"}})
            finally:
                with api.lock:
                    api.in_flight -= 1
                    if is_image:
                        api.image_in_flight -= 1

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _completion(body: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    text = str(messages[-1].get("content", ""))
    # The prompt is the illustrated message itself, so tests can tell which reply it came from.
    match = re.search(r"--- MESSAGE TO ILLUSTRATE[^\n]*\n(.*?)\n--- End of Message", text, re.S)
    reply = match.group(1) if match else text
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"a picture of {reply}{suffix}"},
                "finish_reason": "stop",
            }
        ],
    }


def _images(
    body: dict[str, Any], count: int, picture: Callable[[int], bytes] | None = None
) -> dict[str, Any]:
    n = max(1, int(body.get("n") or count))
    if picture is not None:
        made = [picture(i) for i in range(n)]
    else:
        made = [tiny_png((40 * i % 255, 120, 200)) for i in range(n)]
    return {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(data).decode()} for data in made],
    }


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (cancelled job, stopped daemon) is not a test failure.
        return


@contextlib.contextmanager
def serve_fake_api(api: FakeAPI) -> Iterator[FakeAPI]:
    """Serve ``api`` on 127.0.0.1 (a thread in the test process) until the block ends."""
    server = _QuietServer(("127.0.0.1", 0), _handler(api))
    api.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-api", daemon=True
    )
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def fake_api() -> Iterator[FakeAPI]:
    with serve_fake_api(FakeAPI()) as api:
        yield api


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty data root with one user (the commit and reconcile tests)."""
    return new_data_root(tmp_path)


@pytest.fixture
async def harness(data_root: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    """Store, approval folder and committer over ``data_root`` (state in ``tmp_path/state``)."""
    async with harness_for(data_root, tmp_path / "state") as h:
        yield h


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store in ``tmp_path/state/state.db``, closed after the test."""
    st = await Store.open(tmp_path / "state" / "state.db")
    try:
        yield st
    finally:
        await st.close()


def config_toml(
    root: Path, state_dir: Path, api: FakeAPI, extra: dict[str, Any] | None = None
) -> str:
    """A config file's text pointing at ``root``, ``state_dir`` and the fake API."""
    sections: dict[str, dict[str, Any]] = {
        "detect": {"settle_seconds": 0.2, "rescan_seconds": 30.0},
        "text": {"api_url": api.base_url, "model": "fake-llm", "include_character_card": True},
        "image": {
            "api_url": api.base_url,
            "model": "fake-image",
            "response_format": "b64_json",
            "profile": "generic",
        },
        "limits": {
            "concurrency": 2,
            "retry_base_seconds": 0.2,
            "retry_max_seconds": 1.0,
            "provider_attempts": 1,
        },
        "log": {"level": "info", "format": "json"},
        "web": {"port": 0},  # any free port: tests run side by side
    }
    top: dict[str, Any] = {}
    for key, values in (extra or {}).items():
        if isinstance(values, dict):
            sections.setdefault(key, {}).update(values)
        else:
            top[key] = values
    lines = [f"data_root = {json.dumps(str(root))}", f"state_dir = {json.dumps(str(state_dir))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """JSON is TOML for strings, numbers, booleans and lists; a dict is an inline table."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path, fake_api: FakeAPI) -> MakeConfig:
    """``make_config(root, **sections)``: write ``tmp_path/config.toml`` and load it."""

    def _make(root: Path, **extra: Any) -> Config:
        path = tmp_path / "config.toml"
        path.write_text(config_toml(root, tmp_path / "state", fake_api, extra), encoding="utf-8")
        return load_config(path, environ={})

    return _make


SERVICE_START_TIMEOUT = 15.0
"""Seconds a service started by :func:`running` may take to report ready."""


@contextlib.asynccontextmanager
async def running(
    config: Config, timings: ServiceTimings, *, web: Face | None = None
) -> AsyncIterator[Service]:
    """The service running in this event loop, holding the state dir's lock as ``serve``
    does (with the ``web`` face, as ``run`` composes it); drained and stopped after the
    block."""
    from daemon.engine.process.lock import hold_state_lock

    assert config.data_root is not None
    root = layout.resolve_data_root(config.data_root)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with hold_state_lock(config.state_dir):
        async with running_unlocked(config, root, timings, web=web) as service:
            yield service


@contextlib.asynccontextmanager
async def running_unlocked(
    config: Config, root: Path, timings: ServiceTimings, *, web: Face | None = None
) -> AsyncIterator[Service]:
    async with open_job_deps(config, root=root) as deps:
        service = Service(config, root, deps, timings=timings, web=web)
        async with anyio.create_task_group() as tg:
            ready = anyio.Event()
            tg.start_soon(partial(service.run, ready=ready.set))
            with anyio.fail_after(SERVICE_START_TIMEOUT):
                await ready.wait()
            try:
                yield service
            finally:
                await service.shutdown("test over")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], Awaitable[Any]], within: float = 10.0, interval: float = 0.02
) -> Any:
    """Like :func:`wait_for` for async predicates, without blocking the event loop."""
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await anyio.sleep(interval)


def write_chat(root: Path, name: str, replies: list[str], owner: str = "Alice") -> Path:
    """A new chat of ``owner`` saved by the simulated ST: greeting, then user/reply pairs."""
    path = root / "default-user" / "chats" / owner / f"{owner} - {name}.jsonl"
    tab = STSim.create(path, character=owner, clock=SimClock(start=datetime.now(UTC)))
    for text in replies:
        tab.send_user("Go on.").reply(owner, text)
    tab.save()
    return path


async def job_for(deps: JobDeps, path: Path, index: int = -1, **over: Any) -> Job:
    """A queued job for reply ``index`` of ``path``, as detection would create it."""
    chat, _ = read_chat(path)
    message = [m for m in chat.messages if not m.is_user][1:][index]  # [0] is the greeting
    ref = layout.classify(deps.root, path).chat
    assert ref is not None
    fields: dict[str, Any] = {
        "reply": ReplyKey(
            ref.user,
            ref.rel,
            message.identity.name,
            message.identity.first_date,
            str(message.revision),
        ),
        "character": ref.owner,
        "is_group": False,
        "speaker": message.name,
        "message_index": message.index,
        "excerpt": message.mes[:200],
    }
    fields.update(over)
    job = await deps.store.create_job(**fields)
    assert job is not None
    return job
