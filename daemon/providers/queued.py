"""Queue-based services: submit a request, poll until it is done, fetch the images.

One mechanism (:class:`QueuedBackend`) with the poll interval and deadline of
``[image.<service>]``, the queue position reported as progress, and the request cancelled at
the provider when the job is given up (superseded, the daemon stopping, the deadline passing).
What differs per service is a small :class:`QueueService`: where to submit and in what shape,
how to read the ticket, a status and a result, and how to cancel. Shipped for AI Horde (free,
anonymous key ``0000000000``; kudos as the cost), fal's queue, Replicate's predictions and
BFL's FLUX API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote

import anyio
import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import (
    ContentRefusedError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from daemon.providers.backend import ImageRequest, Progress, ProgressCallback
from daemon.providers.capabilities import (
    COMMON_ASPECT_RATIOS,
    Capabilities,
    CostReport,
    SizeMode,
    nearest_aspect_ratio,
)
from daemon.providers.decode import GeneratedImage
from daemon.providers.http import (
    BearerAuth,
    Clock,
    RetryPolicy,
    image_pacing,
    looks_like_policy,
    scrubbed,
    with_retries,
)
from daemon.providers.info import BackendInfo, Preset, backend_options
from daemon.providers.native import parse_size
from daemon.providers.service import HeaderAuth, ServiceAPI, with_cost

__all__ = [
    "BFL",
    "CANCEL_TIMEOUT",
    "FAL",
    "HORDE",
    "INFOS",
    "REPLICATE",
    "BFLService",
    "FalService",
    "HordeService",
    "Poll",
    "QueueOptions",
    "QueueService",
    "QueuedBackend",
    "ReplicateService",
    "Result",
    "Ticket",
]

log = structlog.get_logger(__name__)

CANCEL_TIMEOUT = 10.0
"""Longest time a given-up job spends cancelling its request (shielded, best effort)."""

POLL_TIMEOUT = 30.0
"""Longest wait for one status answer (a slow one is skipped; the next poll tries again)."""

CHECK_TIMEOUT = 30.0


@dataclass(frozen=True)
class Ticket:
    """A submitted request: its id and the URLs to follow it."""

    id: str
    status_url: str
    result_url: str
    cancel_url: str
    cancel_method: str = "DELETE"
    cost: float | None = None


@dataclass(frozen=True)
class Poll:
    """One status answer."""

    state: Literal["waiting", "running", "done", "failed"]
    position: int | None = None
    wait_seconds: float | None = None
    message: str = ""
    refused: bool = False  # failed because of content: not retried
    impossible: bool = False  # no worker can ever serve it: not retried

    def progress(self) -> Progress:
        if self.state == "waiting":
            text = f"queue position {self.position}" if self.position is not None else "queued"
        else:
            text = "rendering"
        if self.wait_seconds:
            text += f", about {self.wait_seconds:.0f} s left"
        return Progress(fraction=0.5 if self.state == "running" else 0.0, text=text)


@dataclass(frozen=True)
class Result:
    """The images of a finished request: ``("url" | "b64", value)`` pairs, and its cost."""

    items: list[tuple[str, str]] = field(default_factory=list)
    cost: float | None = None
    dropped: int = 0  # images the service blanked (censored)


class QueueOptions(BaseModel):
    """``[image.horde]`` / ``[image.fal]``: how often to poll and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_seconds: float = Field(default=0.0, ge=0, description="0: the service's own default")
    deadline_seconds: float = Field(
        default=0.0, ge=0, description="give up (and cancel) after this; 0: the service's default"
    )
    nsfw: bool = Field(default=True, description="AI Horde: ask for workers that allow NSFW")
    trusted_workers: bool = Field(default=False, description="AI Horde: only trusted workers")
    safety_checker: bool = Field(default=False, description="fal: enable_safety_checker")


class QueueService(Protocol):
    """One service's shapes for the submit → poll → fetch steps."""

    name: str
    poll_seconds: float
    deadline_seconds: float

    def auth(self, key: SecretStr) -> httpx.Auth: ...

    def headers(self) -> dict[str, str]: ...

    def submit(
        self, settings: ImageSettings, options: QueueOptions, request: ImageRequest, model: str
    ) -> tuple[str, dict[str, Any]]: ...

    def ticket(self, payload: Any, base: str) -> Ticket: ...

    def read_status(self, payload: Any) -> Poll: ...

    def read_result(self, payload: Any) -> Result: ...

    def check_path(self, model: str) -> str:
        """A free GET that proves the key (404 counts as a pass)."""
        ...


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class HordeService:
    """AI Horde (aihorde.net): ``/v2/generate/async`` → ``check/{id}`` → ``status/{id}``."""

    name = "horde"
    poll_seconds = 5.0  # the Horde asks clients not to check more than every few seconds
    deadline_seconds = 1200.0  # a free queue: minutes are normal

    def auth(self, key: SecretStr) -> httpx.Auth:
        # The anonymous key works (slowest in the queue).
        return HeaderAuth(key if key.get_secret_value() else SecretStr("0000000000"), "apikey")

    def headers(self) -> dict[str, str]:
        return {"Client-Agent": "st-imagegen:0.1:https://github.com/st-imagegen"}

    def submit(
        self, settings: ImageSettings, options: QueueOptions, request: ImageRequest, model: str
    ) -> tuple[str, dict[str, Any]]:
        width, height = parse_size(request.size or settings.size)
        params: dict[str, Any] = {
            "width": max(64, width // 64 * 64),
            "height": max(64, height // 64 * 64),
            "steps": settings.steps,
            "cfg_scale": settings.cfg_scale,
            "n": request.n or settings.n,
        }
        if settings.sampler:
            params["sampler_name"] = settings.sampler
        if request.seed is not None:
            params["seed"] = str(request.seed)
        prompt = request.prompt + (f" ### {request.negative}" if request.negative else "")
        body: dict[str, Any] = {
            "prompt": prompt,
            "params": params,
            "nsfw": options.nsfw,
            "censor_nsfw": False,
            "trusted_workers": options.trusted_workers,
            "r2": True,
            "shared": False,
        }
        if model:
            body["models"] = [model]
        body.update(settings.extra_body)
        return "/v2/generate/async", body

    def ticket(self, payload: Any, base: str) -> Ticket:
        ident = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(ident, str) or not ident:
            raise ValueError("no id in the answer")
        safe = quote(ident, safe="")
        return Ticket(
            id=ident,
            status_url=f"{base}/v2/generate/check/{safe}",
            result_url=f"{base}/v2/generate/status/{safe}",
            cancel_url=f"{base}/v2/generate/status/{safe}",
            cost=_number(payload.get("kudos")),
        )

    def read_status(self, payload: Any) -> Poll:
        if not isinstance(payload, dict):
            raise ValueError("the status is not a JSON object")
        wait = _number(payload.get("wait_time"))
        position = payload.get("queue_position")
        position = position if isinstance(position, int) else None
        if payload.get("faulted"):
            return Poll("failed", message="the request faulted on the Horde")
        if payload.get("is_possible") is False:
            return Poll(
                "failed",
                message="no worker can serve this request (model, size or steps): pick another "
                "[image] model or a smaller size",
                impossible=True,
            )
        if payload.get("done"):
            return Poll("done")
        if payload.get("processing"):
            return Poll("running", position, wait)
        return Poll("waiting", position, wait)

    def read_result(self, payload: Any) -> Result:
        generations = payload.get("generations") if isinstance(payload, dict) else None
        items: list[tuple[str, str]] = []
        dropped = 0
        for gen in generations or ():
            if not isinstance(gen, dict) or not isinstance(gen.get("img"), str):
                continue
            if gen.get("censored"):
                dropped += 1  # a worker's filter blanked it: a black image, not worth keeping
                continue
            img = gen["img"]
            items.append(("url" if img.startswith(("http://", "https://")) else "b64", img))
        cost = _number(payload.get("kudos")) if isinstance(payload, dict) else None
        return Result(items, cost, dropped)

    def check_path(self, model: str) -> str:
        return "/v2/find_user"


class FalService:
    """fal's queue (queue.fal.run): ``POST /{app}`` → ``status_url`` → ``response_url``."""

    name = "fal"
    poll_seconds = 1.0
    deadline_seconds = 600.0

    def auth(self, key: SecretStr) -> httpx.Auth:
        return HeaderAuth(key, "Authorization", "Key {key}")

    def headers(self) -> dict[str, str]:
        return {}

    def submit(
        self, settings: ImageSettings, options: QueueOptions, request: ImageRequest, model: str
    ) -> tuple[str, dict[str, Any]]:
        width, height = parse_size(request.size or settings.size)
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "image_size": {"width": width, "height": height},
            "num_images": request.n or settings.n,
            "enable_safety_checker": options.safety_checker,
        }
        if request.negative:
            body["negative_prompt"] = request.negative
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(settings.extra_body)
        return "/" + model.strip("/"), body

    def ticket(self, payload: Any, base: str) -> Ticket:
        if not isinstance(payload, dict) or not isinstance(payload.get("request_id"), str):
            raise ValueError("no request_id in the answer")
        urls = [payload.get(k) for k in ("status_url", "response_url", "cancel_url")]
        if not all(isinstance(u, str) and u for u in urls):
            raise ValueError("status_url, response_url or cancel_url missing")
        return Ticket(
            id=payload["request_id"],
            status_url=str(urls[0]),
            result_url=str(urls[1]),
            cancel_url=str(urls[2]),
            cancel_method="PUT",
        )

    def read_status(self, payload: Any) -> Poll:
        if not isinstance(payload, dict):
            raise ValueError("the status is not a JSON object")
        status = str(payload.get("status") or "")
        position = payload.get("queue_position")
        position = position if isinstance(position, int) else None
        if status == "COMPLETED":
            if payload.get("error"):
                return Poll("failed", message=str(payload["error"]))
            return Poll("done")
        if status == "IN_PROGRESS":
            return Poll("running")
        if status == "IN_QUEUE":
            return Poll("waiting", position)
        return Poll("failed", message=f"unknown status {status!r}")

    def read_result(self, payload: Any) -> Result:
        images = payload.get("images") if isinstance(payload, dict) else None
        nsfw = payload.get("has_nsfw_concepts") if isinstance(payload, dict) else None
        items: list[tuple[str, str]] = []
        dropped = 0
        for index, image in enumerate(images or ()):
            if isinstance(nsfw, list) and index < len(nsfw) and nsfw[index] is True:
                dropped += 1  # the safety checker blacked it out
                continue
            if isinstance(image, dict) and isinstance(image.get("url"), str):
                items.append(("url", image["url"]))
        return Result(items, None, dropped)

    def check_path(self, model: str) -> str:
        # The status of a request that does not exist: 404 with a good key, 401 without.
        return f"/{model.strip('/')}/requests/00000000-0000-0000-0000-000000000000/status"


class ReplicateService:
    """Replicate: ``POST /v1/models/{owner}/{model}/predictions`` → poll ``urls.get``."""

    name = "replicate"
    poll_seconds = 1.0
    deadline_seconds = 600.0

    def auth(self, key: SecretStr) -> httpx.Auth:
        return BearerAuth(key)

    def headers(self) -> dict[str, str]:
        return {}

    def submit(
        self, settings: ImageSettings, options: QueueOptions, request: ImageRequest, model: str
    ) -> tuple[str, dict[str, Any]]:
        # Most image models there take these inputs; extra_body adds or overrides any.
        inputs: dict[str, Any] = {
            "prompt": request.prompt,
            "aspect_ratio": nearest_aspect_ratio(request.size or settings.size or "1:1"),
            "num_outputs": request.n or settings.n,
            "output_format": "png",
        }
        if request.seed is not None:
            inputs["seed"] = request.seed
        if request.negative:
            inputs["negative_prompt"] = request.negative
        inputs.update(settings.extra_body)
        return f"/models/{model.strip('/')}/predictions", {"input": inputs}

    def ticket(self, payload: Any, base: str) -> Ticket:
        urls = payload.get("urls") if isinstance(payload, dict) else None
        if not isinstance(urls, dict) or not isinstance(urls.get("get"), str):
            raise ValueError("no urls.get in the answer")
        return Ticket(
            id=str(payload.get("id") or ""),
            status_url=urls["get"],
            result_url=urls["get"],
            cancel_url=str(urls.get("cancel") or ""),
            cancel_method="POST",
        )

    def read_status(self, payload: Any) -> Poll:
        if not isinstance(payload, dict):
            raise ValueError("the prediction is not a JSON object")
        status = str(payload.get("status") or "")
        if status == "succeeded":
            return Poll("done")
        if status in ("failed", "canceled"):
            error = str(payload.get("error") or status)
            return Poll("failed", message=error, refused=looks_like_policy(error))
        return Poll("waiting" if status == "starting" else "running")

    def read_result(self, payload: Any) -> Result:
        output = payload.get("output") if isinstance(payload, dict) else None
        urls = [output] if isinstance(output, str) else output if isinstance(output, list) else []
        return Result([("url", u) for u in urls if isinstance(u, str)])

    def check_path(self, model: str) -> str:
        return "/account"


class BFLService:
    """Black Forest Labs' FLUX API: ``POST /v1/{model}`` → poll ``polling_url`` → ``sample``."""

    name = "bfl"
    poll_seconds = 1.0
    deadline_seconds = 300.0

    def auth(self, key: SecretStr) -> httpx.Auth:
        return HeaderAuth(key, "x-key")

    def headers(self) -> dict[str, str]:
        return {}

    def submit(
        self, settings: ImageSettings, options: QueueOptions, request: ImageRequest, model: str
    ) -> tuple[str, dict[str, Any]]:
        width, height = parse_size(request.size or settings.size)
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "width": max(256, width // 32 * 32),
            "height": max(256, height // 32 * 32),
            "output_format": "png",
        }
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(settings.extra_body)
        return "/" + model.strip("/"), body

    def ticket(self, payload: Any, base: str) -> Ticket:
        ident = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(ident, str) or not ident:
            raise ValueError("no id in the answer")
        polling = payload.get("polling_url")
        url = polling if isinstance(polling, str) and polling else f"{base}/get_result?id={ident}"
        return Ticket(id=ident, status_url=url, result_url=url, cancel_url="")

    def read_status(self, payload: Any) -> Poll:
        if not isinstance(payload, dict):
            raise ValueError("the result is not a JSON object")
        status = str(payload.get("status") or "")
        if status == "Ready":
            return Poll("done")
        if "Moderated" in status:
            return Poll("failed", message=f"{status} (BFL's moderation)", refused=True)
        if status in ("Pending", "Processing", "Queued"):
            return Poll("running" if status == "Processing" else "waiting")
        return Poll("failed", message=status or "unknown status")

    def read_result(self, payload: Any) -> Result:
        result = payload.get("result") if isinstance(payload, dict) else None
        sample = result.get("sample") if isinstance(result, dict) else None
        return Result([("url", sample)] if isinstance(sample, str) else [])

    def check_path(self, model: str) -> str:
        return "/get_result?id=00000000-0000-0000-0000-000000000000"


HORDE = HordeService()
FAL = FalService()
REPLICATE = ReplicateService()
BFL = BFLService()


class QueuedBackend:
    """Generates through one queue service; one instance per run."""

    def __init__(
        self,
        service: QueueService,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        limits = limits or LimitsSettings()
        self.service = service
        self._settings = settings
        self._options = backend_options(settings, service.name, QueueOptions)
        self._clock, self._retry, self._limiter, self._gate = image_pacing(limits, clock, retry)
        self._info = _INFO_BY_NAME[service.name]
        self._api = ServiceAPI(
            f"{self._info.title} API",
            settings.api_url or self._info.default_url,
            settings,
            client,
            self._clock,
            self._retry,
            service.auth(settings.api_key),
            headers=service.headers(),
        )
        self._poll = self._options.poll_seconds or service.poll_seconds
        self._deadline = self._options.deadline_seconds or service.deadline_seconds

    def __repr__(self) -> str:
        return f"QueuedBackend({self.service.name}, url={self._api.base!r})"

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        model = request.model or self._settings.model or self._info.default_model
        path, body = self.service.submit(self._settings, self._options, request, model)
        with scrubbed(self._api.secret):
            async with self._limiter:
                ticket = await self._submit(path, body)
                log.info("queue_submitted", service=self.service.name, id=ticket.id)
                try:
                    result = await self._follow(ticket, progress)
                except BaseException:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT):
                        await self._cancel(ticket)
                    raise
            return await self._images(result, ticket)

    async def _submit(self, path: str, body: dict[str, Any]) -> Ticket:
        async def attempt(n: int) -> Ticket:
            await self._gate.wait()
            # Shielded (its timeout bounds it): a job given up while the submit is in flight
            # must still learn the ticket, or the paid request runs on with nobody to cancel it.
            with anyio.CancelScope(shield=True):
                payload = await self._api.json(
                    "POST", path, body=body, timeout=self._settings.timeout_seconds
                )
            try:
                return self.service.ticket(payload, self._api.base)
            except ValueError as exc:
                raise self._api.bad(f"the submit answer is not a ticket: {exc}") from None

        return await with_retries(attempt, self._retry, self._clock, what=self._info.title)

    async def _follow(self, ticket: Ticket, progress: ProgressCallback | None) -> Result:
        started = self._clock.monotonic()
        last: Progress | None = None
        while True:
            poll = await self._status(ticket)
            if poll is not None:
                if poll.state == "done":
                    break
                if poll.state == "failed":
                    raise self._failed(poll)
                told = poll.progress()
                if progress is not None and told != last:
                    last = told
                    await progress(told)
            if self._clock.monotonic() - started >= self._deadline:
                raise TransientProviderError(
                    f"{self._api.label}: the request was not done after {self._deadline:g} s "
                    f"(queue timeout; cancelled there); raise [image.{self.service.name}] "
                    "deadline_seconds for a slow queue",
                    provider=self._api.label,
                )
            await self._clock.sleep(self._poll)
        payload = await self._api.json(
            "GET",
            ticket.result_url,
            timeout=self._settings.timeout_seconds,
            cap=self._settings.max_response_bytes,
        )
        return self.service.read_result(payload)

    async def _status(self, ticket: Ticket) -> Poll | None:
        """One poll; a transient failure (a 429 on checks, a dropped connection) is skipped."""
        try:
            payload = await self._api.json("GET", ticket.status_url, timeout=POLL_TIMEOUT)
            return self.service.read_status(payload)
        except TransientProviderError as exc:
            log.info("queue_poll_failed", service=self.service.name, error=str(exc))
            return None
        except ValueError as exc:
            raise self._api.bad(f"the status answer is not understood: {exc}") from None

    def _failed(self, poll: Poll) -> ProviderError:
        text = f"{self._api.label}: {poll.message}"
        if poll.refused:
            return ContentRefusedError(text, provider=self._api.label)
        if poll.impossible:
            return PermanentProviderError(text, provider=self._api.label)
        return TransientProviderError(text, provider=self._api.label)

    async def _cancel(self, ticket: Ticket) -> None:
        if not ticket.cancel_url:
            return  # the service has no cancel (BFL): the request runs out on its own
        try:
            await self._api.json(ticket.cancel_method, ticket.cancel_url, timeout=CANCEL_TIMEOUT)
            log.info("queue_cancelled", service=self.service.name, id=ticket.id)
        except ProviderError as exc:
            log.warning("queue_cancel_failed", service=self.service.name, error=str(exc))

    async def _images(self, result: Result, ticket: Ticket) -> list[GeneratedImage]:
        if not result.items:
            if result.dropped:
                raise ContentRefusedError(
                    f"{self._api.label}: every image was blanked by the service's filter",
                    provider=self._api.label,
                )
            raise self._api.bad("the finished request holds no image")
        images: list[GeneratedImage] = []
        count = len(result.items)
        for index, (kind, value) in enumerate(result.items, 1):
            try:
                if kind == "url":
                    images.append(await self._api.image_from_url(value, index, count))
                else:
                    images.append(await self._api.image_from_b64(value, index, count))
            except ProviderError as exc:
                if not images and index == count:
                    raise
                log.warning("image_dropped", index=index, of=count, error=str(exc))
        if not images:
            raise self._api.bad("no image of the finished request could be fetched")
        cost = result.cost if result.cost is not None else ticket.cost
        return with_cost(images, cost, self._info.capabilities.cost_unit)

    async def check(self) -> str | None:
        """``doctor``: the service answers and takes the key (no image is made)."""
        model = self._settings.model or self._info.default_model
        with scrubbed(self._api.secret):
            try:
                await self._api.json("GET", self.service.check_path(model), timeout=CHECK_TIMEOUT)
            except PermanentProviderError as exc:
                if exc.status != 404 or isinstance(exc, ContentRefusedError):
                    raise
        return None


def _factory(service: QueueService) -> Any:
    def create(
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> QueuedBackend:
        return QueuedBackend(service, settings, client, limits=limits, clock=clock, retry=retry)

    return create


INFOS: tuple[BackendInfo, ...] = (
    BackendInfo(
        name="horde",
        title="AI Horde",
        summary="the free, volunteer-run queue (aihorde.net); the anonymous key works",
        create=_factory(HORDE),
        capabilities=Capabilities(
            size_mode=SizeMode.PIXELS,
            size_multiple=64,
            max_n_per_call=10,
            negative_prompt=True,
            seed=True,
            steps=True,
            sampler=True,
            progress=True,
            cancel=True,
            cost=CostReport.REPORTED,
            cost_unit="kudos",
        ),
        url_hint="https://aihorde.net/api (or leave api_url empty)",
        default_url="https://aihorde.net/api",
        default_model="",
        options=QueueOptions,
        key_required=False,
        presets=(
            Preset(
                "horde-anonymous",
                "AI Horde (free, no key)",
                {"backend": "horde", "size": "512x768", "steps": 25},
                "free and slow: a registered key earns kudos and a better place in the queue",
                "https://aihorde.net/register",
            ),
        ),
    ),
    BackendInfo(
        name="fal",
        title="fal",
        summary="fal's queue (queue.fal.run/{app}): submit, poll status_url, fetch",
        create=_factory(FAL),
        capabilities=Capabilities(
            size_mode=SizeMode.PIXELS,
            max_n_per_call=4,
            negative_prompt=True,
            seed=True,
            progress=True,
            cancel=True,
            cost=CostReport.ESTIMATED,
        ),
        url_hint="https://queue.fal.run (or leave api_url empty); model is the app id",
        default_url="https://queue.fal.run",
        default_model="fal-ai/flux/schnell",
        options=QueueOptions,
        presets=(
            Preset(
                "fal-flux-schnell",
                "fal: FLUX.1 [schnell]",
                {"backend": "fal", "model": "fal-ai/flux/schnell", "size": "1024x768"},
                "about 0.003 USD a megapixel",
                "https://fal.ai/dashboard/keys",
            ),
        ),
    ),
)

INFOS += (
    BackendInfo(
        name="replicate",
        title="Replicate",
        summary="POST /v1/models/{owner}/{model}/predictions, polled until it succeeds",
        create=_factory(REPLICATE),
        capabilities=Capabilities(
            size_mode=SizeMode.ASPECT,
            aspect_ratios=COMMON_ASPECT_RATIOS,
            max_n_per_call=4,
            negative_prompt=True,
            seed=True,
            progress=True,
            cancel=True,
            cost=CostReport.ESTIMATED,
        ),
        url_hint="https://api.replicate.com/v1 (or leave api_url empty); model is owner/name",
        default_url="https://api.replicate.com/v1",
        default_model="black-forest-labs/flux-schnell",
        options=QueueOptions,
        presets=(
            Preset(
                "replicate-flux-schnell",
                "Replicate: FLUX.1 [schnell]",
                {"backend": "replicate", "model": "black-forest-labs/flux-schnell"},
                "inputs other models need go in [image] extra_body",
                "https://replicate.com/account/api-tokens",
            ),
        ),
    ),
    BackendInfo(
        name="bfl",
        title="Black Forest Labs (FLUX API)",
        summary="POST /v1/{model} with x-key, polled at polling_url until Ready",
        create=_factory(BFL),
        capabilities=Capabilities(
            size_mode=SizeMode.PIXELS,
            size_multiple=32,
            max_n_per_call=1,
            seed=True,
            progress=True,
            cost=CostReport.ESTIMATED,
        ),
        url_hint="https://api.bfl.ai/v1 (or leave api_url empty); model e.g. flux-pro-1.1",
        default_url="https://api.bfl.ai/v1",
        default_model="flux-pro-1.1",
        options=QueueOptions,
        presets=(
            Preset(
                "bfl-flux-pro",
                "BFL: FLUX 1.1 [pro]",
                {"backend": "bfl", "model": "flux-pro-1.1", "size": "832x1216"},
                "about 0.04 USD an image; its result URLs expire in minutes (fetched at once)",
                "https://api.bfl.ai",
            ),
        ),
    ),
)

_INFO_BY_NAME = {info.name: info for info in INFOS}
