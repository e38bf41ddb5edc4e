"""AUTOMATIC1111 / Forge / SD.Next: ``POST /sdapi/v1/txt2img``, progress from ``…/progress``.

The web UI must run with ``--api`` (and, if it has ``--api-auth user:password``, the same in
``[image] api_auth``). One call makes the whole batch (``batch_size`` = ``n``); the answer holds
the images as base64, checked with Pillow like every other image. Extensions such as ControlNet
append their own maps to the list, so only the first ``n`` are kept.
"""

from __future__ import annotations

import json
import secrets
from functools import partial
from typing import Any

import anyio
import httpx
import structlog

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import PermanentProviderError, ProviderError
from daemon.providers.backend import ImageRequest, Progress, ProgressCallback
from daemon.providers.capabilities import Capabilities, CostReport, SizeMode
from daemon.providers.decode import GeneratedImage, ImageRejected
from daemon.providers.http import (
    Clock,
    RetryPolicy,
    image_pacing,
    scrubbed,
    with_retries,
)
from daemon.providers.info import BackendInfo, Preset
from daemon.providers.native import (
    NativeAPI,
    checked,
    decode_b64_image,
    native_base_url,
    parse_size,
    while_running,
)

__all__ = ["INFO", "PROGRESS_INTERVAL", "A1111Backend", "build_payload", "progress_from"]

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL = 1.0
"""Seconds between ``/sdapi/v1/progress`` polls while a generation runs."""

PROGRESS_TIMEOUT = 5.0
"""Longest wait for one progress answer (a busy server may be slow; the next poll tries again)."""
CANCEL_TIMEOUT = 5.0
"""Longest a cancelled job spends asking the server to interrupt its run."""

CHECK_TIMEOUT = 30.0
"""Longest wait for each of doctor's requests."""

_ENDPOINTS = ("/sdapi/v1/txt2img", "/sdapi/v1", "/sdapi")


def build_payload(settings: ImageSettings, request: ImageRequest) -> dict[str, Any]:
    """The exact ``txt2img`` body for ``request`` under ``settings``."""
    width, height = parse_size(request.size or settings.size)
    seed = request.seed if request.seed is not None else settings.seed
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": request.negative,
        "width": width,
        "height": height,
        "steps": settings.steps,
        "cfg_scale": settings.cfg_scale,
        "seed": seed,  # -1: the server picks one (and says which in "info")
        "batch_size": request.n or settings.n,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
    }
    if settings.sampler:
        body["sampler_name"] = settings.sampler
    if settings.scheduler:
        body["scheduler"] = settings.scheduler
    model = request.model if request.model is not None else settings.model
    if model:
        body["override_settings"] = {"sd_model_checkpoint": model}
        # Restoring would unload and reload a checkpoint around every job (tens of seconds);
        # SillyTavern's own extension also leaves the chosen model loaded.
        body["override_settings_restore_afterwards"] = False
    body.update(settings.extra_body)
    return body


def progress_from(payload: Any) -> Progress | None:
    """A :class:`Progress` from a ``/sdapi/v1/progress`` answer, or None while nothing runs."""
    if not isinstance(payload, dict):
        return None
    state = payload.get("state")
    if not isinstance(state, dict):
        state = {}
    fraction = payload.get("progress")
    step, steps = state.get("sampling_step"), state.get("sampling_steps")
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        return None
    if fraction <= 0 and not (isinstance(steps, int) and steps > 0 and state.get("job_count")):
        return None
    text = ""
    if isinstance(step, int) and isinstance(steps, int) and steps > 0:
        text = f"step {min(step, steps)}/{steps}"
    eta = payload.get("eta_relative")
    if isinstance(eta, int | float) and not isinstance(eta, bool) and eta > 0:
        text = f"{text}, about {eta:.0f} s left" if text else f"about {eta:.0f} s left"
    return Progress(fraction=max(0.0, min(1.0, float(fraction))), text=text)


def _matches(wanted: str, names: set[str]) -> bool:
    return wanted.strip().lower() in {n.lower() for n in names}


def _model_names(entry: dict[str, Any]) -> set[str]:
    """Every name a user may write for one checkpoint (title, name, file, title sans hash)."""
    names = set()
    for key in ("title", "model_name", "filename"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            names.add(value)
    title = str(entry.get("title") or "")
    if title.endswith("]") and " [" in title:
        names.add(title.rsplit(" [", 1)[0])
    filename = str(entry.get("filename") or "")
    if filename:
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        names.update({base, base.rsplit(".", 1)[0]})
    return names


def _listed(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


class A1111Backend:
    """Generates through an AUTOMATIC1111-compatible web UI; one instance per run."""

    def __init__(
        self,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        limits = limits or LimitsSettings()
        self._settings = settings
        self._clock, self._retry, self._limiter, self._gate = image_pacing(limits, clock, retry)
        self._interval = progress_interval
        base = native_base_url(settings.api_url, "AUTOMATIC1111", _ENDPOINTS)
        self._api = NativeAPI("A1111 API", base, settings, client, self._clock)
        self.summary = ""  # what check() found, for doctor's PASS line

    def __repr__(self) -> str:
        return f"A1111Backend(url={self._api.base!r})"

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        """All ``n`` images for ``request``, checked; raises ProviderError subclasses.

        Reference images are not sent (txt2img takes none): one log line, normal generation."""
        if request.references:
            log.info("references_not_supported", backend="a1111", count=len(request.references))
        body = build_payload(self._settings, request)
        # Our own task id (A1111 1.6+, Forge): a cancel interrupts the run only when the one
        # running is ours; older servers ignore the field (and are left alone on a cancel).
        task = f"task(st-imagegen-{secrets.token_hex(6)})"
        body["force_task_id"] = task

        async def attempt(n: int) -> Any:
            await self._gate.wait()
            try:
                return await self._txt2img(body, progress)
            except anyio.get_cancelled_exc_class():
                await self._interrupt_if_ours(task)
                raise

        with scrubbed(self._api.secret):
            log.info(
                "image_request",
                api=self._api.endpoint.host,
                backend="a1111",
                model=body.get("override_settings", {}).get("sd_model_checkpoint", ""),
                n=body["batch_size"],
            )
            async with self._limiter:
                payload = await with_retries(attempt, self._retry, self._clock, what="A1111 API")
            return await self._images(payload, int(body["batch_size"]))

    async def _txt2img(self, body: dict[str, Any], progress: ProgressCallback | None) -> Any:
        async def post() -> Any:
            try:
                return await self._api.call(
                    "POST",
                    "/sdapi/v1/txt2img",
                    body=body,
                    timeout=self._settings.timeout_seconds,
                    cap=self._settings.max_response_bytes,
                )
            except PermanentProviderError as exc:
                raise self._explain(exc) from exc

        poll = None if progress is None else partial(self._poll_progress, progress)
        return await while_running(post, poll)

    async def _interrupt_if_ours(self, task: str) -> None:
        """Best effort, shielded, at most CANCEL_TIMEOUT: interrupt the server's run when the
        running task is ours (a cancelled job); another client's run is never interrupted."""
        with anyio.move_on_after(CANCEL_TIMEOUT, shield=True) as scope:
            try:
                now = await self._api.call(
                    "GET",
                    "/sdapi/v1/progress",
                    params={"skip_current_image": "true"},
                    timeout=CANCEL_TIMEOUT,
                )
                if isinstance(now, dict) and now.get("current_task") == task:
                    await self._api.call("POST", "/sdapi/v1/interrupt", timeout=CANCEL_TIMEOUT)
                    log.info("a1111_cancelled", task=task, how="interrupted")
            except ProviderError as exc:
                log.warning("a1111_cancel_failed", task=task, error=str(exc))
        if scope.cancelled_caught:
            log.warning("a1111_cancel_failed", task=task, error="timed out")

    def _explain(self, exc: PermanentProviderError) -> PermanentProviderError:
        """404 means two things here: no API at all (no ``--api``) or an unknown sampler."""
        if exc.status != 404:
            return exc
        if "sampler" in exc.body.lower():
            return PermanentProviderError(
                f"{self._api.label} does not know the sampler {self._settings.sampler!r}: "
                "check [image] sampler (`st-imagegen doctor` lists the server's samplers)",
                provider=exc.provider,
                status=404,
                body=exc.body,
            )
        return PermanentProviderError(
            f"{self._api.label} has no /sdapi/v1/txt2img: start the web UI with --api, and "
            "check [image] api_url (the web UI's address, e.g. http://127.0.0.1:7860)",
            provider=exc.provider,
            status=404,
            body=exc.body,
        )

    async def _poll_progress(self, progress: ProgressCallback) -> None:
        """Report ``/sdapi/v1/progress`` until cancelled; a failed poll is only skipped."""
        last: Progress | None = None
        while True:
            await anyio.sleep(self._interval)
            try:
                payload = await self._api.call(
                    "GET",
                    "/sdapi/v1/progress",
                    params={"skip_current_image": "true"},
                    timeout=PROGRESS_TIMEOUT,
                )
            except ProviderError as exc:
                log.debug("a1111_progress_failed", error=str(exc))
                continue
            current = progress_from(payload)
            if current is not None and current != last:
                last = current
                await progress(current)

    async def _images(self, payload: Any, wanted: int) -> list[GeneratedImage]:
        raw = payload.get("images") if isinstance(payload, dict) else None
        if not isinstance(raw, list) or not raw:
            raise self._api.bad(
                "the answer holds no images (no base64 list in 'images')",
                json.dumps(payload)[:300] if payload is not None else "",
            )
        if len(raw) > wanted:
            log.debug("a1111_extra_images_dropped", kept=wanted, got=len(raw))
        images: list[GeneratedImage] = []
        first: ProviderError | None = None
        for index, value in enumerate(raw[:wanted], start=1):
            try:
                if not isinstance(value, str):
                    raise ImageRejected(f"image {index} is not a base64 string")
                data = decode_b64_image(value, index, self._settings)
                images.append(await checked(data, self._settings))
            except ImageRejected as exc:
                error = self._api.bad(f"image {index} of {len(raw[:wanted])} was rejected: {exc}")
                log.warning("image_dropped", index=index, error=str(error))
                first = first or error
        if not images:
            assert first is not None
            raise first
        return images

    async def check(self) -> str | None:
        """``doctor``: the server answers, and has the configured model, sampler and scheduler.

        An unknown one fails (every job would); ``summary`` lists what the server has.
        """
        with scrubbed(self._api.secret):
            return await self._check()

    async def _get(self, path: str) -> Any:
        try:
            return await self._api.call(
                "GET", path, timeout=min(self._settings.timeout_seconds, CHECK_TIMEOUT)
            )
        except PermanentProviderError as exc:
            if path != "/sdapi/v1/sd-models":
                raise
            raise self._explain(exc) from exc

    async def _check(self) -> str | None:
        settings = self._settings
        models = await self._get("/sdapi/v1/sd-models")
        samplers = await self._get("/sdapi/v1/samplers")
        if not isinstance(models, list) or not isinstance(samplers, list):
            raise self._api.bad("the model or sampler list is not a JSON list")
        titles = [str(m.get("title") or m.get("model_name")) for m in models if isinstance(m, dict)]
        sampler_names = [str(s.get("name")) for s in samplers if isinstance(s, dict)]
        self.summary = (
            f"{len(titles)} model(s): {_listed(titles)}; "
            f"{len(sampler_names)} sampler(s): {_listed(sampler_names)}"
        )
        missing: list[str] = []
        if settings.model:
            names = set().union(*(_model_names(m) for m in models if isinstance(m, dict)))
            if not _matches(settings.model, names):
                missing.append(f"the model {settings.model!r} (it has {_listed(titles)})")
        if settings.sampler:
            known = set(sampler_names)
            for entry in samplers:
                if isinstance(entry, dict) and isinstance(entry.get("aliases"), list):
                    known.update(str(a) for a in entry["aliases"])
            if not _matches(settings.sampler, known):
                missing.append(
                    f"the sampler {settings.sampler!r} (it has {_listed(sampler_names)})"
                )
        if settings.scheduler:
            missing.extend(await self._missing_scheduler(settings.scheduler))
        if missing:
            raise PermanentProviderError(
                f"{self._api.label} has no "
                + "; and no ".join(missing)
                + ": check [image] model, sampler and scheduler",
                provider=self._api.label,
            )
        return None

    async def _missing_scheduler(self, wanted: str) -> list[str]:
        try:
            schedulers = await self._get("/sdapi/v1/schedulers")
        except PermanentProviderError as exc:
            if exc.status == 404:  # before A1111 1.9 the scheduler was part of the sampler
                return [f"scheduler list for {wanted!r} (schedulers need A1111 1.9+ or Forge)"]
            raise
        entries = schedulers if isinstance(schedulers, list) else []
        names = [str(s.get("name")) for s in entries if isinstance(s, dict)]
        known = set(names) | {str(s.get("label")) for s in entries if isinstance(s, dict)}
        if _matches(wanted, known):
            return []
        return [f"the scheduler {wanted!r} (it has {_listed(names)})"]


INFO = BackendInfo(
    name="a1111",
    title="AUTOMATIC1111 / Forge / SD.Next",
    summary="POST /sdapi/v1/txt2img on a local web UI started with --api",
    create=A1111Backend,
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
    url_hint="the web UI's address, e.g. http://127.0.0.1:7860, started with --api",
    default_url="http://127.0.0.1:7860",
    key_required=False,
    presets=(
        Preset(
            "a1111-local",
            "A1111 / Forge on this machine",
            {"backend": "a1111", "api_url": "http://127.0.0.1:7860", "size": "832x1216"},
            "start the web UI with --api",
        ),
    ),
)
