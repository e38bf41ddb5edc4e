"""A faithful fake ComfyUI server on 127.0.0.1: real HTTP and a real ``/ws`` WebSocket (uvicorn
running the ``websockets`` library's protocol, in a thread with its own event loop).

Shapes follow ComfyUI's server.py and execution.py:

- ``POST /prompt {"prompt": {...}, "client_id": id}`` → ``{"prompt_id", "number", "node_errors"}``,
  or 400 ``{"error": {"type": "prompt_outputs_failed_validation", ...}, "node_errors": {...}}``
  (unknown checkpoint or sampler: ``value_not_in_list``; a placeholder left in a number field:
  ``invalid_input_type``);
- on ``/ws?clientId=id``: ``status`` (queue_remaining, at connect and on queue changes),
  ``execution_start``, ``execution_cached``, ``executing`` per node, ``progress`` per sampling
  step, ``executed`` with the SaveImage output, ``executing`` with ``node: null`` when done;
  ``execution_error`` (node_id, node_type, exception_message, exception_type, traceback) and
  ``execution_interrupted``; a binary preview frame now and then;
- ``GET /history/<id>`` (``{}`` until done), ``GET /queue``, ``POST /queue {"delete": [...]}``,
  ``POST /interrupt`` (optionally ``{"prompt_id"}``), ``GET /view?filename&subfolder&type``,
  ``GET /system_stats``, ``GET /object_info/<node>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["FakeComfy", "serve_comfy"]

CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "dreamshaper_8.safetensors"]
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde"]
SCHEDULERS = ["normal", "karras", "exponential", "simple"]
_INT_INPUTS = {
    "KSampler": ("seed", "steps"),
    "EmptyLatentImage": ("width", "height", "batch_size"),
}
ViewAnswer = Callable[[dict[str, str]], Response]


def _png(side: int, shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (shade % 255, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


GATE_SECONDS = 30.0
"""Longest POST /prompt holds its answer at a closed ``answer_gate``."""


@dataclass
class FakeComfy:
    """State shared with the server thread; set the knobs from the test at any time."""

    port: int = 0
    auth: str | None = None  # "Basic ..." header a proxy in front demands
    step_seconds: float = 0.0
    image_side: int = 8
    no_ws: bool = False  # the socket is refused (a proxy without WebSocket support)
    drop_ws_at: int | None = None  # close every socket at this step (the run goes on)
    die_at: int | None = None  # the whole server stops at this step
    fail_at: int | None = None  # execution_error at this step
    fail_message: str = "Error while deserializing header: HeaderTooLarge"
    fail_type: str = "safetensors_rust.SafetensorsError"
    view: ViewAnswer | None = None  # a hostile /view
    # When set, POST /prompt queues the run and then holds its answer until the gate opens.
    answer_gate: threading.Event | None = None
    outputs_override: dict[str, Any] | None = None  # a hostile history "outputs"
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)  # prompt_id -> workflow
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # owned by the server loop
    _loop: asyncio.AbstractEventLoop | None = None
    _queue: list[tuple[int, str, dict[str, Any], str]] = field(default_factory=list)
    _running: tuple[int, str, dict[str, Any], str] | None = None
    _interrupt: str | None = None
    _sockets: dict[str, list[WebSocket]] = field(default_factory=dict)
    _wake: asyncio.Event | None = None
    _server: Any = None
    _worker: Any = None
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, method: str, path: str) -> list[Any]:
        """The JSON bodies of every ``method path`` request so far."""
        with self.lock:
            return [b for m, p, b in self.requests if m == method and p == path]

    def running_id(self) -> str | None:
        with self.lock:
            return self._running[1] if self._running else None

    def pending_ids(self) -> list[str]:
        with self.lock:
            return [entry[1] for entry in self._queue]

    # --- the server side (runs in the server thread's loop) --------------------------------

    async def _send(self, client_id: str, kind: str, data: dict[str, Any]) -> None:
        for ws in list(self._sockets.get(client_id, [])):
            with contextlib.suppress(Exception):
                await ws.send_json({"type": kind, "data": data})

    async def _broadcast_status(self) -> None:
        remaining = len(self._queue) + (1 if self._running else 0)
        status = {"status": {"exec_info": {"queue_remaining": remaining}}}
        for client_id in list(self._sockets):
            await self._send(client_id, "status", status)

    async def worker(self) -> None:
        assert self._wake is not None
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            with self.lock:
                self._running = self._queue.pop(0)
            try:
                await self._execute(*self._running)
            finally:
                with self.lock:
                    self._running = None
                await self._broadcast_status()

    async def _execute(self, number: int, prompt_id: str, nodes: dict[str, Any], cid: str) -> None:
        messages: list[Any] = [["execution_start", {"prompt_id": prompt_id, "timestamp": 0}]]
        await self._send(cid, "execution_start", {"prompt_id": prompt_id, "timestamp": 0})
        await self._send(cid, "execution_cached", {"nodes": [], "prompt_id": prompt_id})
        sampler = next((k for k, n in nodes.items() if n["class_type"] == "KSampler"), None)
        steps = int(nodes[sampler]["inputs"]["steps"]) if sampler else 1
        batch = next(
            (
                int(n["inputs"].get("batch_size", 1))
                for n in nodes.values()
                if n["class_type"] == "EmptyLatentImage"
            ),
            1,
        )
        for node_id in nodes:
            await self._send(cid, "executing", {"node": node_id, "prompt_id": prompt_id})
            if node_id != sampler:
                continue
            for step in range(1, steps + 1):
                if self._interrupt in (prompt_id, "*"):
                    self._interrupt = None
                    data: dict[str, Any] = {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": "KSampler",
                        "executed": [],
                    }
                    await self._send(cid, "execution_interrupted", data)
                    messages.append(["execution_interrupted", data])
                    self._finish(prompt_id, nodes, {}, "error", messages)
                    return
                if self.die_at == step:
                    self._die()
                    await asyncio.sleep(3600)  # cancelled by the shutdown
                if self.fail_at == step:
                    data = {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": "KSampler",
                        "executed": [],
                        "exception_message": self.fail_message,
                        "exception_type": self.fail_type,
                        "traceback": ["Traceback (most recent call last):", "..."],
                        "current_inputs": {},
                        "current_outputs": {},
                    }
                    await self._send(cid, "execution_error", data)
                    messages.append(["execution_error", data])
                    self._finish(prompt_id, nodes, {}, "error", messages)
                    return
                if self.drop_ws_at == step:
                    for ws in list(self._sockets.get(cid, [])):
                        with contextlib.suppress(Exception):
                            await ws.close(code=1011)
                if self.step_seconds:
                    await asyncio.sleep(self.step_seconds)
                tick = {"value": step, "max": steps, "prompt_id": prompt_id, "node": node_id}
                await self._send(cid, "progress", tick)
                if step == 1:  # a live preview frame: binary, "type 1 = PREVIEW_IMAGE"
                    for ws in list(self._sockets.get(cid, [])):
                        with contextlib.suppress(Exception):
                            await ws.send_bytes(b"\x00\x00\x00\x01\x00\x00\x00\x02" + b"\xff" * 64)
        outputs: dict[str, Any] = {}
        for node_id, node in nodes.items():
            if node["class_type"] in ("SaveImage", "PreviewImage"):
                kind = "output" if node["class_type"] == "SaveImage" else "temp"
                prefix = str(node["inputs"].get("filename_prefix", "ComfyUI"))
                images = [
                    {"filename": f"{prefix}_{number:05d}_{i}_.png", "subfolder": "", "type": kind}
                    for i in range(batch)
                ]
                outputs[node_id] = {"images": images}
                await self._send(
                    cid,
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": outputs[node_id],
                        "prompt_id": prompt_id,
                    },
                )
        if self.outputs_override is not None:
            outputs = self.outputs_override
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": 0}])
        self._finish(prompt_id, nodes, outputs, "success", messages)
        await self._send(cid, "execution_success", {"prompt_id": prompt_id, "timestamp": 0})
        await self._send(cid, "executing", {"node": None, "prompt_id": prompt_id})

    def _finish(
        self,
        prompt_id: str,
        nodes: dict[str, Any],
        outputs: dict[str, Any],
        status: str,
        messages: list[Any],
    ) -> None:
        with self.lock:
            self.history[prompt_id] = {
                "prompt": [0, prompt_id, nodes, {}, list(outputs)],
                "outputs": outputs,
                "status": {
                    "status_str": status,
                    "completed": status == "success",
                    "messages": messages,
                },
                "meta": {},
            }

    def _die(self) -> None:
        """Stop the whole server (uvicorn closes the sockets): the process is gone."""
        self._server.should_exit = True
        self._server.force_exit = True


def _validate(nodes: Any) -> dict[str, Any]:
    """ComfyUI's validation, the parts a workflow from this project can trip."""
    errors: dict[str, Any] = {}
    if not isinstance(nodes, dict):
        return {"_": {"errors": [{"type": "invalid_prompt", "message": "not a dict"}]}}
    for node_id, node in nodes.items():
        problems = []
        inputs = node.get("inputs", {})
        for name in _INT_INPUTS.get(node.get("class_type"), ()):
            if not isinstance(inputs.get(name), int):
                problems.append(
                    {
                        "type": "invalid_input_type",
                        "message": "Failed to convert an input value to a INT value",
                        "details": f"{name}, {inputs.get(name)}, invalid literal for int()",
                    }
                )
        checks = {
            ("CheckpointLoaderSimple", "ckpt_name"): CHECKPOINTS,
            ("KSampler", "sampler_name"): SAMPLERS,
            ("KSampler", "scheduler"): SCHEDULERS,
        }
        for (kind, name), allowed in checks.items():
            if node.get("class_type") == kind and inputs.get(name) not in allowed:
                problems.append(
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{name}: '{inputs.get(name)}' not in {allowed}",
                    }
                )
        if problems:
            errors[node_id] = {
                "errors": problems,
                "dependent_outputs": [],
                "class_type": node.get("class_type"),
            }
    return errors


def _app(api: FakeComfy) -> Starlette:
    def record(request: Request, body: Any = None) -> None:
        with api.lock:
            api.requests.append((request.method, request.url.path, body))

    def authorized(headers: Any) -> bool:
        return api.auth is None or headers.get("authorization") == api.auth

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    async def prompt(request: Request) -> Response:
        body = await body_of(request)
        record(request, body)
        if not authorized(request.headers):
            return Response("401: Unauthorized", status_code=401)
        nodes = body.get("prompt") if isinstance(body, dict) else None
        errors = _validate(nodes)
        if errors:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            }
            return JSONResponse({"error": error, "node_errors": errors}, status_code=400)
        assert isinstance(nodes, dict) and isinstance(body, dict)
        prompt_id = str(uuid.uuid4())
        number = next(api._counter)
        with api.lock:
            api.prompts[prompt_id] = nodes
            api._queue.append((number, prompt_id, nodes, str(body.get("client_id", ""))))
        assert api._wake is not None
        api._wake.set()
        await api._broadcast_status()
        if api.answer_gate is not None:
            await asyncio.to_thread(api.answer_gate.wait, GATE_SECONDS)
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def history(request: Request) -> Response:
        record(request)
        if not authorized(request.headers):
            return Response("401: Unauthorized", status_code=401)
        prompt_id = request.path_params["prompt_id"]
        with api.lock:
            entry = api.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry else {})

    async def queue(request: Request) -> Response:
        body = await body_of(request) if request.method == "POST" else None
        record(request, body)
        if not authorized(request.headers):
            return Response("401: Unauthorized", status_code=401)
        if request.method == "POST":
            wanted = set(body.get("delete", [])) if isinstance(body, dict) else set()
            with api.lock:
                api._queue = [e for e in api._queue if e[1] not in wanted]
            await api._broadcast_status()
            return Response(status_code=200)
        with api.lock:
            running = [[*api._running[:3], {}, []]] if api._running else []
            pending = [[*e[:3], {}, []] for e in api._queue]
        return JSONResponse({"queue_running": running, "queue_pending": pending})

    async def interrupt(request: Request) -> Response:
        body = await body_of(request)
        record(request, body)
        if not authorized(request.headers):
            return Response("401: Unauthorized", status_code=401)
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        current = api.running_id()
        if current is not None and wanted in (None, current):
            api._interrupt = current
        return Response(status_code=200)

    async def view(request: Request) -> Response:
        params = dict(request.query_params)
        record(request, params)
        if not authorized(request.headers):
            return Response("401: Unauthorized", status_code=401)
        if api.view is not None:
            return api.view(params)
        shade = sum(params.get("filename", "").encode())  # each file its own colour
        return Response(_png(api.image_side, shade), media_type="image/png")

    async def system_stats(request: Request) -> Response:
        record(request)
        if not authorized(request.headers):
            return Response("401: Unauthorized", status_code=401)
        return JSONResponse(
            {
                "system": {
                    "os": "posix",
                    "ram_total": 68719476736,
                    "ram_free": 34359738368,
                    "comfyui_version": "0.3.40",
                    "python_version": "3.12.3",
                    "pytorch_version": "2.7.0+cu128",
                    "embedded_python": False,
                    "argv": ["main.py", "--listen"],
                },
                "devices": [
                    {
                        "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                        "type": "cuda",
                        "index": 0,
                        "vram_total": 25757220864,
                        "vram_free": 24000000000,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    async def object_info(request: Request) -> Response:
        record(request)
        if not authorized(request.headers):
            return Response("401: Unauthorized", status_code=401)
        node = request.path_params["node"]
        spec: dict[str, Any] = {
            "CheckpointLoaderSimple": {"ckpt_name": [CHECKPOINTS, {"tooltip": "checkpoint"}]},
            "KSampler": {
                "seed": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}],
                "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
                "sampler_name": [SAMPLERS, {}],
                "scheduler": [SCHEDULERS, {}],
            },
        }
        if node not in spec:
            return JSONResponse({})
        return JSONResponse({node: {"input": {"required": spec[node]}, "name": node}})

    async def ws_endpoint(websocket: WebSocket) -> None:
        if api.no_ws or not authorized(websocket.headers):
            await websocket.close(code=1008)
            return
        client_id = websocket.query_params.get("clientId") or uuid.uuid4().hex
        await websocket.accept()
        api._sockets.setdefault(client_id, []).append(websocket)
        with api.lock:
            api.requests.append(("WS", "/ws", client_id))
        remaining = len(api._queue) + (1 if api._running else 0)
        await websocket.send_json(
            {
                "type": "status",
                "data": {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": client_id},
            }
        )
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            api._sockets.get(client_id, []).remove(websocket)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        api._loop = asyncio.get_running_loop()
        api._wake = asyncio.Event()
        api._worker = asyncio.ensure_future(api.worker())
        try:
            yield
        finally:
            api._worker.cancel()

    routes = [
        Route("/prompt", prompt, methods=["POST"]),
        Route("/history/{prompt_id}", history),
        Route("/queue", queue, methods=["GET", "POST"]),
        Route("/interrupt", interrupt, methods=["POST"]),
        Route("/view", view),
        Route("/system_stats", system_stats),
        Route("/object_info/{node}", object_info),
        WebSocketRoute("/ws", ws_endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_comfy(api: FakeComfy | None = None) -> Iterator[FakeComfy]:
    """Serve ``api`` on 127.0.0.1 (uvicorn in a thread) until the block ends."""
    api = api or FakeComfy()
    if not api.port:
        api.port = free_port()
    config = uvicorn.Config(
        _app(api),
        host="127.0.0.1",
        port=api.port,
        ws="websockets-sansio",
        log_level="critical",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    api._server = server
    thread = threading.Thread(target=server.run, name="fake-comfyui", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake ComfyUI did not start")
        time.sleep(0.01)
    try:
        yield api
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(10)
