"""A faithful fake AUTOMATIC1111 / Forge web UI API on 127.0.0.1 (a real threaded HTTP server).

Shapes follow the real ``/sdapi/v1`` routes (modules/api/api.py, modules/api/models.py):

- ``POST /sdapi/v1/txt2img`` → ``{"images": [base64...], "parameters": {...}, "info": "<json>"}``;
  an unknown ``sampler_name`` is ``404 {"detail": "Sampler not found"}`` as the real validation;
- ``GET /sdapi/v1/progress`` → ``{"progress", "eta_relative", "state": {"sampling_step",
  "sampling_steps", "job_count", ...}, "current_image", "textinfo"}``;
- ``GET /sdapi/v1/sd-models`` / ``samplers`` / ``schedulers``, ``POST /sdapi/v1/interrupt``;
- ``--api-auth``: HTTP basic auth, ``401 {"detail": "Incorrect username or password"}``.

A render takes ``steps * step_seconds`` and updates the progress state step by step, so a
client's polls see it move; with ``hold_for_polls`` it also stays running until that many polls
have seen it run (a test of progress must not depend on the client polling before a short
render ends on a busy machine). It can also fail (``fail`` statuses, consumed), die mid-run (close
the socket without an answer) or answer hostile images (``answer_images``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

__all__ = ["FakeA1111", "png", "serve_a1111"]

MODELS = [
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/sd/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None,
    },
    {
        "title": "sdxl/juggernautXL_v9.safetensors [c9e3e68f89]",
        "model_name": "sdxl_juggernautXL_v9",
        "hash": "c9e3e68f89",
        "sha256": None,
        "filename": "/sd/models/Stable-diffusion/sdxl/juggernautXL_v9.safetensors",
        "config": None,
    },
]
SAMPLERS = [
    {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {}},
    {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {}},
    {"name": "Euler", "aliases": ["k_euler"], "options": {}},
]
SCHEDULERS = [
    {"name": "automatic", "label": "Automatic", "aliases": None},
    {"name": "karras", "label": "Karras", "aliases": None},
    {"name": "exponential", "label": "Exponential", "aliases": None},
]


HOLD_FOR_POLLS_S = 60.0
"""Longest a render waits for ``hold_for_polls`` (then it answers anyway and the test says why)."""


def png(width: int = 8, height: int = 8, color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeA1111:
    """State shared with the server threads; change it from the test at any time."""

    port: int = 0
    auth: str | None = None  # "user:password": --api-auth
    step_seconds: float = 0.0  # render time per sampling step
    image_side: int = 8  # the images' width and height (the real server: width x height)
    extra_images: int = 0  # appended maps (ControlNet does this)
    fail: list[int] = field(default_factory=list)  # statuses to answer first, consumed
    die_mid_run: int = 0  # this many renders close the connection half-way, consumed
    answer_images: list[Any] | None = None  # hostile answers: the "images" list as given
    schedulers_route: bool = True  # A1111 before 1.9 has no /sdapi/v1/schedulers
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    progress_polls: int = 0
    hold_for_polls: int = 0  # a render's answer waits until this many polls saw it running
    running_polls: int = 0
    interrupts: int = 0
    renders: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    _state: dict[str, Any] = field(default_factory=dict)
    _polled: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._polled = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [b for m, p, b in self.requests if p == "/sdapi/v1/txt2img"]

    def progress_payload(self) -> dict[str, Any]:
        with self.lock:
            state = dict(self._state)
        steps = int(state.get("sampling_steps", 0))
        step = int(state.get("sampling_step", 0))
        running = bool(state.get("job_count"))
        fraction = step / steps if running and steps else 0.0
        return {
            "progress": fraction,
            "eta_relative": (steps - step) * self.step_seconds if running else 0.0,
            "state": {
                "skipped": False,
                "interrupted": False,
                "stopping_generation": False,
                "job": "txt2img" if running else "",
                "job_count": 1 if running else 0,
                "job_timestamp": "20260101120000",
                "job_no": 0,
                "sampling_step": step,
                "sampling_steps": steps,
            },
            "current_image": None,
            "textinfo": None,
            "current_task": str(state.get("task") or "task(fake)") if running else None,
        }


def _handler(api: FakeA1111) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if api.auth is None:
                return True
            wanted = "Basic " + base64.b64encode(api.auth.encode()).decode()
            if self.headers.get("Authorization") == wanted:
                return True
            self._send(
                401,
                {"detail": "Incorrect username or password"},
                {"WWW-Authenticate": "Basic"},
            )
            return False

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            return body if isinstance(body, dict) else {}

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with api.lock:
                api.requests.append(("GET", path, {}))
            if not self._authorized():
                return
            if path == "/sdapi/v1/progress":
                payload = api.progress_payload()
                with api.lock:
                    api.progress_polls += 1
                    if payload["state"]["job_count"]:
                        api.running_polls += 1
                        api._polled.notify_all()
                self._send(200, payload)
            elif path == "/sdapi/v1/sd-models":
                self._send(200, MODELS)
            elif path == "/sdapi/v1/samplers":
                self._send(200, SAMPLERS)
            elif path == "/sdapi/v1/schedulers" and api.schedulers_route:
                self._send(200, SCHEDULERS)
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            body = self._body()
            with api.lock:
                api.requests.append(("POST", path, body))
            if not self._authorized():
                return
            if path == "/sdapi/v1/interrupt":
                with api.lock:
                    api.interrupts += 1
                self._send(200, {})
            elif path == "/sdapi/v1/txt2img":
                self._txt2img(body)
            else:
                self._send(404, {"detail": "Not Found"})

        def _txt2img(self, body: dict[str, Any]) -> None:
            sampler = body.get("sampler_name")
            known = {s["name"] for s in SAMPLERS} | {a for s in SAMPLERS for a in s["aliases"]}
            if sampler is not None and sampler not in known:
                self._send(404, {"detail": "Sampler not found"})
                return
            with api.lock:
                status = api.fail.pop(0) if api.fail else 200
                die = api.die_mid_run > 0
                api.die_mid_run -= 1 if die else 0
            if status != 200:
                self._send(
                    status,
                    {"error": "OutOfMemoryError", "detail": "", "body": "", "errors": "CUDA OOM"},
                )
                return
            steps = int(body.get("steps") or 20)
            with api.lock:
                api._state = {
                    "job_count": 1,
                    "sampling_steps": steps,
                    "sampling_step": 0,
                    "task": body.get("force_task_id"),
                }
            try:
                for step in range(1, steps + 1):
                    if api.stop.wait(api.step_seconds) if api.step_seconds else api.stop.is_set():
                        return
                    with api.lock:
                        api._state["sampling_step"] = step
                    if die and step >= steps // 2:
                        self.close_connection = True
                        self.connection.shutdown(2)  # the web UI crashed (OOM kill, restart)
                        return
                with api.lock:
                    api._polled.wait_for(
                        lambda: api.running_polls >= api.hold_for_polls or api.stop.is_set(),
                        timeout=HOLD_FOR_POLLS_S,
                    )
            finally:
                with api.lock:
                    api._state = {}
            with api.lock:
                api.renders += 1
            seed = int(body.get("seed", -1))
            if seed < 0:
                seed = random.randrange(2**32)
            count = int(body.get("batch_size") or 1) * int(body.get("n_iter") or 1)
            side = api.image_side
            images: list[Any] = [
                base64.b64encode(png(side, side, (40 * i % 255, 120, 200))).decode()
                for i in range(count)
            ]
            images += [base64.b64encode(png(side, side, (0, 0, 0))).decode()] * api.extra_images
            if api.answer_images is not None:
                images = list(api.answer_images)
            info = {"prompt": body.get("prompt"), "seed": seed, "all_seeds": [seed] * count}
            self._send(200, {"images": images, "parameters": body, "info": json.dumps(info)})

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up (a cancelled job) is not a failure


@contextlib.contextmanager
def serve_a1111(api: FakeA1111 | None = None) -> Iterator[FakeA1111]:
    """Serve ``api`` on 127.0.0.1 until the block ends."""
    api = api or FakeA1111()
    server = _QuietServer(("127.0.0.1", api.port), _handler(api))
    api.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-a1111", daemon=True
    )
    thread.start()
    try:
        yield api
    finally:
        api.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
