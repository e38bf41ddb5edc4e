"""ComfyUI: the user's workflow (API format) with SillyTavern's placeholders, queued by
``POST /prompt``, followed on the ``/ws`` WebSocket, its images fetched from ``/view``.

The workflow is read for every job (an edit applies to the next job) and its placeholders
(``%prompt%``, ``%seed%``, ... as SillyTavern's extension uses them) are replaced in the parsed
JSON, never in its text: a string that is exactly ``"%steps%"`` becomes the number, one that
holds a placeholder among other text gets it as text. A prompt can hold quotes, backslashes or
``%seed%`` and stays one string.

The socket is opened (with our client id) before the prompt is queued, so no message is missed;
if it fails, ``/history/<id>`` is polled instead. When the job is given up (superseded, daemon
stop, deadline) the queue entry is cancelled: deleted while pending, interrupted while running.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from daemon.providers.backend import ImageRequest, Progress, ProgressCallback
from daemon.providers.capabilities import Capabilities, CostReport, SizeMode
from daemon.providers.decode import GeneratedImage, ImageRejected
from daemon.providers.download import download_image
from daemon.providers.http import (
    Clock,
    RetryPolicy,
    image_pacing,
    redact,
    scrubbed,
    with_retries,
)
from daemon.providers.info import BackendInfo, Finding, Preset
from daemon.providers.native import (
    NativeAPI,
    auth_headers,
    checked,
    native_base_url,
    parse_size,
    pick_seed,
)

__all__ = [
    "CANCEL_TIMEOUT",
    "INFO",
    "KNOWN_PLACEHOLDERS",
    "ComfyUIBackend",
    "Workflow",
    "fill_workflow",
    "load_workflow",
    "placeholders_in",
]

log = structlog.get_logger(__name__)

CANCEL_TIMEOUT = 5.0
"""Longest time a given-up job spends cancelling its queue entry (shielded, best effort)."""

HISTORY_POLL = 1.0
"""Seconds between ``/history/<id>`` polls when the WebSocket is not usable."""

WS_OPEN_TIMEOUT = 10.0
"""Longest wait for the WebSocket handshake before falling back to polling."""

WS_MAX_MESSAGE = 32 * 1024 * 1024
"""Largest WebSocket message (live previews are binary frames of a few hundred kB)."""

CALL_TIMEOUT = 30.0
"""Longest wait for one small JSON call (queue, history, doctor's checks)."""

MAX_IMAGES = 16
"""Most images one workflow run may hand back (more is a hostile or broken answer)."""

DEFAULT_SAMPLER = "euler"
DEFAULT_SCHEDULER = "normal"

KNOWN_PLACEHOLDERS = (
    "prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "steps",
    "scale",
    "sampler",
    "scheduler",
    "model",
    "batch_size",
    "denoise",
)
"""SillyTavern's names (``%scale%`` is the CFG scale); ``%batch_size%`` is ``image.n``."""

_PLACEHOLDER = re.compile(r"%([a-z_]+)%")
_ENDPOINTS = ("/prompt", "/ws")
_OOM = ("out of memory", "outofmemory", "allocation on device")


def _default_workflow_text() -> str:
    return (
        importlib.resources.files("daemon.providers")
        .joinpath("workflows/default_txt2img.json")
        .read_text(encoding="utf-8")
    )


@dataclass(frozen=True)
class Workflow:
    """A parsed API-format workflow and where it came from (for messages)."""

    nodes: dict[str, Any]
    source: str

    @property
    def placeholders(self) -> set[str]:
        return placeholders_in(self.nodes)


def load_workflow(path: Path | None) -> Workflow:
    """The workflow at ``path`` (None: the shipped txt2img), checked; raises ConfigError."""
    source = str(path) if path is not None else "the shipped default workflow"
    try:
        text = path.read_text(encoding="utf-8") if path is not None else _default_workflow_text()
    except OSError as exc:
        raise ConfigError(
            f"[image] comfy_workflow {source!r} cannot be read: {exc.strerror or exc}"
        ) from None
    try:
        nodes = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"[image] comfy_workflow {source!r} is not valid JSON: {exc}") from None
    if isinstance(nodes, dict) and isinstance(nodes.get("nodes"), list) and "links" in nodes:
        raise ConfigError(
            f"[image] comfy_workflow {source!r} is a UI workflow: in ComfyUI, export it with "
            "Workflow > Export (API) (or 'Save (API Format)' with dev mode on)"
        )
    if not isinstance(nodes, dict) or not nodes:
        raise ConfigError(f"[image] comfy_workflow {source!r} is not a JSON object of nodes")
    for node_id, node in nodes.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ConfigError(
                f"[image] comfy_workflow {source!r}: node {node_id!r} has no class_type "
                "(export the workflow in API format)"
            )
        if not isinstance(node.get("inputs", {}), dict):
            raise ConfigError(f"[image] comfy_workflow {source!r}: node {node_id!r} inputs")
    workflow = Workflow(nodes, source)
    if "prompt" not in workflow.placeholders:
        raise ConfigError(
            f'[image] comfy_workflow {source!r} has no %prompt% placeholder: put "%prompt%" '
            "as the text of the positive prompt node (CLIPTextEncode)"
        )
    return workflow


def placeholders_in(value: Any) -> set[str]:
    """The placeholder names (without %) in every string value of ``value``."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(_PLACEHOLDER.findall(value))
    elif isinstance(value, dict):
        for item in value.values():
            found |= placeholders_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= placeholders_in(item)
    return found


def fill_workflow(nodes: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``nodes`` with every known placeholder replaced as a JSON value (one pass, so
    a substituted prompt is never searched again). Unknown ``%names%`` are left as they are."""

    def one(value: Any) -> Any:
        if isinstance(value, str):
            whole = _PLACEHOLDER.fullmatch(value)
            if whole and whole.group(1) in values:
                return copy.copy(values[whole.group(1)])

            def text(match: re.Match[str]) -> str:
                name = match.group(1)
                return str(values[name]) if name in values else match.group(0)

            return _PLACEHOLDER.sub(text, value)
        if isinstance(value, dict):
            return {key: one(item) for key, item in value.items()}
        if isinstance(value, list):
            return [one(item) for item in value]
        return value

    return {key: one(node) for key, node in nodes.items()}


def _prompt_id(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("prompt_id"), str):
        return str(payload["prompt_id"])
    return ""


@dataclass(frozen=True)
class _Outcome:
    """How a run ended as the socket or the history told it: done, or an error."""

    done: bool
    error: ProviderError | None = None


class ComfyUIBackend:
    """Generates through a ComfyUI server; one instance per run."""

    def __init__(
        self,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        history_poll: float = HISTORY_POLL,
    ) -> None:
        limits = limits or LimitsSettings()
        self._settings = settings
        self._client = client
        self._clock, self._retry, self._limiter, self._gate = image_pacing(limits, clock, retry)
        self._history_poll = history_poll
        base = native_base_url(settings.api_url, "ComfyUI", _ENDPOINTS)
        self._api = NativeAPI("ComfyUI API", base, settings, client, self._clock)
        self._headers = auth_headers(settings)
        self._checkpoint: str | None = None  # the server's first one, when image.model is empty
        self.summary = ""  # what check() found, for doctor's PASS line
        load_workflow(settings.comfy_workflow)  # a broken workflow stops the start, named

    def __repr__(self) -> str:
        return f"ComfyUIBackend(url={self._api.base!r})"

    # --- generate --------------------------------------------------------------------------

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        """Every image the workflow saves for ``request``, checked; raises ProviderError.

        Reference images are not sent (a workflow has no place for them): one log line."""
        if request.references:
            log.info("references_not_supported", backend="comfyui", count=len(request.references))
        try:
            workflow = load_workflow(self._settings.comfy_workflow)
        except ConfigError as exc:  # edited since the start: this job cannot run as it is
            raise PermanentProviderError(str(exc), provider=self._api.label) from None
        with scrubbed(self._api.secret):
            values = await self._values(request, workflow)
            nodes = fill_workflow(workflow.nodes, values)

            async def attempt(n: int) -> list[dict[str, str]]:
                await self._gate.wait()
                return await self._run(nodes, progress)

            log.info(
                "image_request",
                api=self._api.endpoint.host,
                backend="comfyui",
                workflow=workflow.source,
                model=values.get("model", ""),
                seed=values["seed"],
            )
            async with self._limiter:
                refs = await with_retries(attempt, self._retry, self._clock, what="ComfyUI API")
            return await self._fetch_all(refs)

    async def _values(self, request: ImageRequest, workflow: Workflow) -> dict[str, Any]:
        settings = self._settings
        width, height = parse_size(request.size or settings.size)
        values: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative,
            "seed": pick_seed(request.seed, settings.seed),
            "width": width - width % 8,  # the latent is an eighth of the image
            "height": height - height % 8,
            "steps": settings.steps,
            "scale": settings.cfg_scale,
            "sampler": settings.sampler or DEFAULT_SAMPLER,
            "scheduler": settings.scheduler or DEFAULT_SCHEDULER,
            "batch_size": request.n or settings.n,
            "denoise": 1.0,
        }
        model = request.model if request.model is not None else settings.model
        if "model" in workflow.placeholders:
            values["model"] = model or await self._first_checkpoint()
        return values

    async def _first_checkpoint(self) -> str:
        """With ``image.model`` empty, the server's first checkpoint (as ComfyUI's own UI)."""
        if self._checkpoint is None:
            names = await self._choices("CheckpointLoaderSimple", "ckpt_name")
            if not names:
                raise PermanentProviderError(
                    f"{self._api.label} lists no checkpoints: put one in ComfyUI's "
                    "models/checkpoints folder, or set [image] model",
                    provider=self._api.label,
                )
            self._checkpoint = names[0]
            log.info("comfyui_model_picked", model=self._checkpoint, why="[image] model is empty")
        return self._checkpoint

    async def _choices(self, node: str, field: str) -> list[str]:
        """The values ComfyUI offers for ``node``'s input ``field`` (``/object_info/<node>``)."""
        info = await self._api.call("GET", f"/object_info/{node}", timeout=CALL_TIMEOUT)
        try:
            spec = info[node]["input"]["required"][field][0]
        except (KeyError, IndexError, TypeError):
            return []
        return [str(name) for name in spec] if isinstance(spec, list) else []

    async def _run(
        self, nodes: dict[str, Any], progress: ProgressCallback | None
    ) -> list[dict[str, str]]:
        """One queued run, start to end; the image references of its outputs."""
        client_id = uuid.uuid4().hex
        prompt_id = ""
        try:
            with anyio.fail_after(self._settings.timeout_seconds):
                async with self._socket(client_id) as ws:
                    # Shielded (CALL_TIMEOUT bounds it): once the run is queued its id must be
                    # known, or a job given up while the answer was on its way would leave the
                    # run on the GPU with nothing to cancel it by.
                    with anyio.CancelScope(shield=True):
                        prompt_id = await self._queue(nodes, client_id)
                    outcome = _Outcome(False)
                    if ws is not None:
                        outcome = await self._follow(ws, prompt_id, progress)
                if outcome.error is not None:
                    raise outcome.error
                entry = await self._wait_history(prompt_id, outcome.done)
                failure = self._judge(entry).error
                if failure is not None:
                    raise failure
                return self._refs(entry)
        except TimeoutError:
            await self._cancel(prompt_id, "the deadline passed")
            raise TransientProviderError(
                f"{self._api.label} did not finish in {self._settings.timeout_seconds:g} s "
                "([image] timeout_seconds)",
                provider=self._api.label,
            ) from None
        except anyio.get_cancelled_exc_class():
            await self._cancel(prompt_id, "the job was given up")
            raise
        except ProviderError as exc:
            if exc.transient:  # the run may go on without us: do not leave it on the GPU
                await self._cancel(prompt_id, "it failed")
            raise

    @contextlib.asynccontextmanager
    async def _socket(self, client_id: str) -> AsyncIterator[ClientConnection | None]:
        """The ``/ws`` socket for ``client_id``, or None when it cannot be opened (polling)."""
        base = self._api.base
        url = ("wss" if base.startswith("https:") else "ws") + base[base.index(":") :]
        url += "/ws?" + urlencode({"clientId": client_id})
        ws: ClientConnection | None = None
        try:
            ws = await connect(
                url,
                additional_headers=self._headers,
                open_timeout=WS_OPEN_TIMEOUT,
                max_size=WS_MAX_MESSAGE,
                proxy=None,
                compression=None,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            log.info("comfyui_socket_unavailable", error=type(exc).__name__, then="polling")
        try:
            yield ws
        finally:
            if ws is not None:
                with anyio.move_on_after(1.0, shield=True):
                    await ws.close()

    async def _queue(self, nodes: dict[str, Any], client_id: str) -> str:
        body = {"prompt": nodes, "client_id": client_id}
        # Shielded (CALL_TIMEOUT bounds it): a job given up while this POST is in flight must
        # still learn the prompt_id, or its run stays on ComfyUI's queue with nobody to cancel it.
        with anyio.CancelScope(shield=True):
            answer = await self._api.call(
                "POST", "/prompt", body=body, timeout=CALL_TIMEOUT, explain=self._refused
            )
        prompt_id = _prompt_id(answer)
        if not prompt_id:
            raise self._api.bad("POST /prompt gave no prompt_id", json.dumps(answer)[:300])
        return prompt_id

    def _refused(self, status: int, raw: bytes) -> ProviderError | None:
        """ComfyUI's validation answer (400), said in one line: which node and why."""
        if status != 400:
            return None
        detail = ""
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            detail = str(_dig(payload, "error", "message") or "")
            errors = payload.get("node_errors")
            for node_id, info in list(errors.items())[:3] if isinstance(errors, dict) else ():
                problems = info.get("errors") if isinstance(info, dict) else None
                for item in problems[:2] if isinstance(problems, list) else ():
                    if isinstance(item, dict):
                        what = item.get("details") or item.get("message")
                        detail += f"; node {node_id} ({info.get('class_type')}): {what}"
        detail = redact(" ".join((detail or "validation failed").split()), self._api.secret)
        return PermanentProviderError(
            f"{self._api.label} refused the workflow: {detail[:1000]} "
            "(check [image] comfy_workflow and model)",
            provider=self._api.label,
            status=400,
            body=redact(raw.decode("utf-8", "replace"), self._api.secret),
        )

    async def _follow(
        self, ws: ClientConnection, prompt_id: str, progress: ProgressCallback | None
    ) -> _Outcome:
        """Read the socket until our run ends; not done (polling takes over) if it breaks."""
        started = False
        try:
            async for message in ws:
                event = _our_event(message, prompt_id)
                if event is None:
                    continue
                kind, data, theirs = event
                if kind == "status" and not started and progress is not None:
                    queued = _dig(data, "status", "exec_info", "queue_remaining")
                    if isinstance(queued, int) and queued > 0:
                        await progress(Progress(0.0, f"queued ({queued} in ComfyUI's queue)"))
                elif kind == "execution_start":
                    started = True
                    if progress is not None:
                        await progress(Progress(0.0, "started"))
                elif kind == "progress" and progress is not None:
                    value, top = data.get("value"), data.get("max")
                    if isinstance(value, int) and isinstance(top, int) and top > 0:
                        fraction = max(0.0, min(1.0, value / top))
                        await progress(Progress(fraction, f"step {value}/{top}"))
                elif (kind == "executing" and data.get("node") is None and theirs) or (
                    kind == "execution_success"
                ):
                    return _Outcome(True)
                elif kind == "execution_error":
                    return _Outcome(True, self._execution_error(data))
                elif kind == "execution_interrupted":
                    return _Outcome(True, self._interrupted())
        except (ConnectionClosed, OSError) as exc:
            log.info("comfyui_socket_lost", error=type(exc).__name__, then="polling")
        return _Outcome(False)

    def _execution_error(self, data: Mapping[str, Any]) -> ProviderError:
        message = redact(str(data.get("exception_message") or "an error"), self._api.secret)
        node = f"node {data.get('node_id')} ({data.get('node_type')})"
        text = f"{self._api.label}: the workflow failed at {node}: {' '.join(message.split())}"
        kind = str(data.get("exception_type") or "")
        if any(word in f"{kind} {message}".lower() for word in _OOM):
            return TransientProviderError(text, provider=self._api.label, status=200)
        return PermanentProviderError(
            text + " (check [image] comfy_workflow and model)", provider=self._api.label, status=200
        )

    def _interrupted(self) -> PermanentProviderError:
        return PermanentProviderError(
            f"{self._api.label}: the run was interrupted in ComfyUI (someone pressed cancel)",
            provider=self._api.label,
            status=200,
        )

    async def _wait_history(self, prompt_id: str, done: bool) -> dict[str, Any]:
        """The history entry of ``prompt_id`` once the run is over (polled; right after a
        finished socket run it is normally there at once)."""
        interval = self._history_poll / 10 if done else self._history_poll
        while True:
            answer = await self._api.call(
                "GET",
                f"/history/{prompt_id}",
                timeout=CALL_TIMEOUT,
                cap=self._settings.max_response_bytes,
            )
            entry = answer.get(prompt_id) if isinstance(answer, dict) else None
            if isinstance(entry, dict):
                status = entry.get("status")
                if not isinstance(status, dict) or status.get("completed", True) is not False:
                    return entry
                if status.get("status_str") == "error":
                    return entry
            await anyio.sleep(interval)

    def _judge(self, entry: dict[str, Any]) -> _Outcome:
        status = entry.get("status")
        if not isinstance(status, dict) or status.get("status_str") != "error":
            return _Outcome(True)
        for item in status.get("messages") or []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
                if item[0] == "execution_error":
                    return _Outcome(True, self._execution_error(item[1]))
                if item[0] == "execution_interrupted":
                    return _Outcome(True, self._interrupted())
        return _Outcome(True, self._execution_error({}))

    def _refs(self, entry: dict[str, Any]) -> list[dict[str, str]]:
        """The saved images (type "output"; a workflow with only previews gives "temp")."""
        outputs = entry.get("outputs")
        found: list[dict[str, str]] = []
        for node in outputs.values() if isinstance(outputs, dict) else ():
            images = node.get("images") if isinstance(node, dict) else None
            for image in images if isinstance(images, list) else ():
                if isinstance(image, dict) and isinstance(image.get("filename"), str):
                    found.append(
                        {
                            "filename": str(image["filename"]),
                            "subfolder": str(image.get("subfolder") or ""),
                            "type": str(image.get("type") or "output"),
                        }
                    )
        saved = [ref for ref in found if ref["type"] == "output"] or found
        if not saved:
            raise self._api.bad(
                "the workflow finished without an image (does it end in a SaveImage node?)",
                json.dumps(outputs)[:300],
            )
        if len(saved) > MAX_IMAGES:
            log.warning("comfyui_images_capped", kept=MAX_IMAGES, got=len(saved))
        return saved[:MAX_IMAGES]

    async def _fetch_all(self, refs: list[dict[str, str]]) -> list[GeneratedImage]:
        images: list[GeneratedImage] = []
        first: ProviderError | None = None
        for index, ref in enumerate(refs, start=1):
            try:
                images.append(await self._fetch(ref, index, len(refs)))
            except ProviderError as exc:
                log.warning("image_dropped", index=index, of=len(refs), error=str(exc))
                first = first or exc
        if not images:
            assert first is not None
            raise first
        return images

    async def _fetch(self, ref: dict[str, str], index: int, count: int) -> GeneratedImage:
        url = f"{self._api.base}/view?{urlencode(ref)}"

        async def attempt(n: int) -> bytes:
            return await download_image(self._client, url, self._api.download, auth=self._api.auth)

        data = await with_retries(attempt, self._retry, self._clock, what="ComfyUI /view")
        try:
            return await checked(data, self._settings)
        except ImageRejected as exc:
            raise self._api.bad(f"image {index} of {count} was rejected: {exc}") from None

    async def _cancel(self, prompt_id: str, why: str) -> None:
        """Best effort, shielded, at most CANCEL_TIMEOUT: take our entry off ComfyUI's queue
        (pending) or interrupt it (running). Another client's run is never interrupted."""
        if not prompt_id:
            return
        with anyio.move_on_after(CANCEL_TIMEOUT, shield=True) as scope:
            try:
                queue = await self._api.call("GET", "/queue", timeout=CANCEL_TIMEOUT)
                running = _queued_ids(queue, "queue_running")
                if prompt_id in _queued_ids(queue, "queue_pending"):
                    await self._api.call(
                        "POST", "/queue", body={"delete": [prompt_id]}, timeout=CANCEL_TIMEOUT
                    )
                    log.info("comfyui_cancelled", prompt_id=prompt_id, how="deleted", why=why)
                elif prompt_id in running:
                    await self._api.call(
                        "POST", "/interrupt", body={"prompt_id": prompt_id}, timeout=CANCEL_TIMEOUT
                    )
                    log.info("comfyui_cancelled", prompt_id=prompt_id, how="interrupted", why=why)
            except ProviderError as exc:
                log.warning("comfyui_cancel_failed", prompt_id=prompt_id, error=str(exc))
        if scope.cancelled_caught:
            log.warning("comfyui_cancel_failed", prompt_id=prompt_id, error="timed out")

    # --- doctor ----------------------------------------------------------------------------

    async def check(self) -> str | None:
        """``doctor``: ``/system_stats`` answers; the configured model, sampler and scheduler
        exist (when the workflow uses them). Workflow warnings are :func:`workflow_warnings`."""
        with scrubbed(self._api.secret):
            return await self._check()

    async def _check(self) -> str | None:
        stats = await self._api.call("GET", "/system_stats", timeout=CALL_TIMEOUT)
        system = stats.get("system") if isinstance(stats, dict) else None
        if not isinstance(system, dict):
            raise self._api.bad("/system_stats is not ComfyUI's answer (no 'system')")
        devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
        device = devices[0].get("name") if devices and isinstance(devices[0], dict) else "?"
        version = system.get("comfyui_version") or "(version unknown)"
        workflow = load_workflow(self._settings.comfy_workflow)
        used = workflow.placeholders
        missing: list[str] = []
        checks = (
            ("model", "CheckpointLoaderSimple", "ckpt_name", self._settings.model),
            ("sampler", "KSampler", "sampler_name", self._settings.sampler),
            ("scheduler", "KSampler", "scheduler", self._settings.scheduler),
        )
        listed: dict[str, list[str]] = {}
        for name, node, field, wanted in checks:
            if name not in used:
                continue
            options = listed.get(f"{node}.{field}") or await self._choices(node, field)
            listed[f"{node}.{field}"] = options
            if name == "model":
                self.summary = f"ComfyUI {version} on {device}; {len(options)} checkpoint(s)"
                if not wanted and not options:
                    missing.append("any checkpoint (models/checkpoints is empty)")
            if wanted and options and wanted not in options:
                shown = ", ".join(options[:8]) + (" …" if len(options) > 8 else "")
                missing.append(f"the {name} {wanted!r} (it has {shown})")
        self.summary = self.summary or f"ComfyUI {version} on {device}"
        if missing:
            raise PermanentProviderError(
                f"{self._api.label} has no "
                + "; and no ".join(missing)
                + ": check [image] model, sampler and scheduler",
                provider=self._api.label,
            )
        return None


def _dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _queued_ids(queue: Any, key: str) -> set[str]:
    """The prompt ids in ``/queue``'s ``queue_running`` or ``queue_pending`` lists
    (each entry is ``[number, prompt_id, prompt, extra_data, outputs]``)."""
    entries = queue.get(key) if isinstance(queue, dict) else None
    ids = set()
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, list) and len(entry) > 1 and isinstance(entry[1], str):
            ids.add(entry[1])
    return ids


def workflow_warnings(settings: ImageSettings, negative: str = "") -> list[str]:
    """What looks off in the workflow (doctor): placeholders it lacks or does not know.

    Raises ConfigError for a workflow no job could use."""
    workflow = load_workflow(settings.comfy_workflow)
    used = workflow.placeholders
    notes = []
    if "seed" not in used:
        notes.append("it has no %seed%: every job renders with the same seed")
    if negative and "negative_prompt" not in used:
        notes.append("it has no %negative_prompt%: text.negative_prompt is not sent")
    if settings.model and "model" not in used:
        notes.append("it has no %model%: image.model is not used")
    unknown = sorted(used - set(KNOWN_PLACEHOLDERS))
    if unknown:
        names = ", ".join(f"%{name}%" for name in unknown)
        notes.append(f"it has placeholders st-imagegen does not fill: {names}")
    return notes


def workflow_findings(settings: ImageSettings, negative: str = "") -> list[Finding]:
    """``doctor``'s word on the workflow: it parses, is in API format and has its placeholders."""
    name = "ComfyUI workflow"
    try:
        workflow = load_workflow(settings.comfy_workflow)
        notes = workflow_warnings(settings, negative)
    except ConfigError as exc:
        return [
            Finding(
                name,
                "fail",
                str(exc),
                'in ComfyUI, export the workflow with Workflow > Export (API), put "%prompt%" '
                "in its positive prompt, and set image.comfy_workflow to that file (or leave it "
                "empty for the shipped txt2img)",
            )
        ]
    if notes:
        return [Finding(name, "warn", f"{workflow.source}: " + "; ".join(notes))]
    names = ", ".join(f"%{n}%" for n in sorted(workflow.placeholders))
    return [Finding(name, "pass", f"{workflow.source} ({len(workflow.nodes)} nodes; {names})")]


INFO = BackendInfo(
    name="comfyui",
    title="ComfyUI",
    summary="your workflow (API format) queued by POST /prompt, followed on /ws",
    create=ComfyUIBackend,
    capabilities=Capabilities(
        size_mode=SizeMode.PIXELS,
        size_multiple=8,
        max_n_per_call=10,
        negative_prompt=True,
        seed=True,
        steps=True,
        sampler=True,
        progress=True,
        cancel=True,
        cost=CostReport.FREE,
    ),
    url_hint="ComfyUI's address, e.g. http://127.0.0.1:8188",
    default_url="http://127.0.0.1:8188",
    key_required=False,
    config_checks=workflow_findings,
    presets=(
        Preset(
            "comfyui-local",
            "ComfyUI on this machine",
            {"backend": "comfyui", "api_url": "http://127.0.0.1:8188", "size": "832x1216"},
            "the shipped txt2img workflow uses the first checkpoint; set comfy_workflow for yours",
        ),
    ),
)


def _our_event(message: str | bytes, prompt_id: str) -> tuple[Any, dict[str, Any], Any] | None:
    """``(type, data, data's prompt_id)`` of a socket message about our run (or about no run
    in particular); None for a preview image, a message that is not an event, another run's."""
    if isinstance(message, bytes):
        return None  # a live preview image
    try:
        event = json.loads(message)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return None
    data: dict[str, Any] = event["data"]
    theirs = data.get("prompt_id")
    if theirs is not None and theirs != prompt_id:
        return None  # another client's run (ST's own, the user's in the browser)
    return event.get("type"), data, theirs
