"""The image generator: a prompt in, checked image files out.

One ``images/generations`` call per batch (a profile may cap ``n`` per call), answered as JSON or
as server-sent events parsed as they arrive. Every ``url`` is downloaded at once (under the
download guard), every ``b64_json`` decoded, and every image checked with Pillow; all ``n`` are
kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import anyio.to_thread
import httpx
import structlog

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import (
    AuthError,
    BadResponseError,
    ConfigError,
    ContentRefusedError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from daemon.providers.backend import ImageRequest, ProgressCallback, ReferenceImage
from daemon.providers.capabilities import (
    Capabilities,
    CostReport,
    SizeMode,
    nearest_aspect_ratio,
    parse_wxh,
)
from daemon.providers.decode import GeneratedImage, ImageRejected, check_image
from daemon.providers.download import DownloadPolicy, Resolver, download_image, system_resolve
from daemon.providers.http import (
    ERROR_BODY_LIMIT,
    BearerAuth,
    BodyTooLarge,
    Clock,
    Endpoint,
    RetryPolicy,
    call_timeout,
    endpoint_url,
    error_fields,
    error_from_response,
    error_from_transport,
    image_pacing,
    looks_like_policy,
    read_capped,
    read_within,
    redact,
    scrubbed,
    with_retries,
)
from daemon.providers.info import BackendInfo, Preset
from daemon.providers.profiles import (
    ImageProfile,
    NegativeStyle,
    ReferenceStyle,
    SizeStyle,
    StreamStyle,
    normalize_aspect_ratio,
    resolve_profile,
    unsent_settings,
)
from daemon.providers.sse import SSEEvent, StreamTooLarge, iter_sse

__all__ = [
    "INFO",
    "GeneratedImage",
    "ImageGenerator",
    "OpenAIBackend",
    "ResultItem",
    "build_body",
    "capabilities_for",
    "classify_event",
    "items_from_payload",
]

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 30.0
"""Longest wait for ``check()``'s model list: doctor should answer quickly."""

_PROVISIONAL = {
    "queued",
    "pending",
    "processing",
    "in_progress",
    "running",
    "started",
    "preview",
    "partial_image",
    "progress",
}
_FINAL = {"done", "completed", "complete", "succeeded", "success", "finished"}
_FAILURE = {
    "failed",
    "failure",
    "error",
    "expired",
    "timeout",
    "timed_out",
    "cancelled",
    "canceled",
}
_TRANSIENT_HINTS = (
    "timeout",
    "timed out",
    "overloaded",
    "rate limit",
    "try again",
    "busy",
    "capacity",
    "server_error",
    "unavailable",
    "expired",
)
_WORD = re.compile(r"[a-z_]+")
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ResultItem:
    """One image in an answer: ``kind`` is "url" or "b64"."""

    kind: str
    value: str

    def __repr__(self) -> str:
        shown = self.value if self.kind == "url" else f"<{len(self.value)} base64 chars>"
        return f"ResultItem({self.kind}, {shown[:200]})"


def build_body(
    settings: ImageSettings, profile: ImageProfile, prompt: str, negative: str, n: int
) -> dict[str, Any]:
    """The exact JSON body for one call under ``profile``."""
    if negative and profile.negative is NegativeStyle.PIPE:
        prompt = f"{prompt}|{negative}"
    body: dict[str, Any] = {"model": settings.model, "prompt": prompt, "n": n}
    for setting, wire in profile.fields.items():
        value = getattr(settings, setting)
        if value in ("", None):
            continue
        if setting == "aspect_ratio" and profile.ratio_aspect:
            value = normalize_aspect_ratio(str(value))
        if setting == "size" and profile.size_style is not SizeStyle.SIZE:
            body.update(_size_fields(profile, str(value)))
            continue
        body[wire] = value
    if profile.response_format:
        wanted = profile.response_format_value or settings.response_format
        body["response_format"] = profile.b64_wire_name if wanted == "b64_json" else wanted
    if negative and profile.negative is NegativeStyle.FIELD:
        body[profile.negative_field] = negative
    if settings.sse:
        if profile.stream is StreamStyle.SSE_FLAG:
            body["sse"] = True
        elif profile.stream is StreamStyle.OPENAI:
            body["stream"] = True
    body.update(settings.extra_body)
    return body


def _size_fields(profile: ImageProfile, size: str) -> dict[str, Any]:
    """A WxH as the profile's own fields: width/height, or the nearest aspect ratio."""
    if profile.size_style is SizeStyle.ASPECT:
        return {"aspect_ratio": nearest_aspect_ratio(size, profile.aspect_ratios)}
    parsed = parse_wxh(size)
    if parsed is None:
        raise ConfigError(f"[image] size {size!r} is not WIDTHxHEIGHT (e.g. 1024x768)")
    return {"width": parsed[0], "height": parsed[1]}


def _data_url(reference: ReferenceImage) -> str:
    return f"data:{reference.mime};base64,{base64.b64encode(reference.data).decode('ascii')}"


def _item(entry: Any) -> ResultItem | None:
    if not isinstance(entry, dict):
        return None
    b64 = entry.get("b64_json")
    if isinstance(b64, str) and b64.strip():
        return ResultItem("b64", b64)
    url = entry.get("url")
    if isinstance(url, str) and url.strip():
        return ResultItem("url", url.strip())
    return None


def items_from_payload(payload: Any) -> list[ResultItem]:
    """Images in an answer: ``data[]`` items (``b64_json`` or ``url``), or a single top-level
    image as OpenAI's streamed ``completed`` events carry it."""
    if not isinstance(payload, dict):
        return []
    data = payload.get("data")
    if isinstance(data, dict) and "data" in data:  # a proxy wrapped the whole answer once
        data = data["data"]
    if isinstance(data, list):
        return [item for item in map(_item, data) if item is not None]
    single = _item(payload)
    return [single] if single is not None else []


@dataclass(frozen=True)
class EventOutcome:
    """What one SSE event means: kind is provisional, final, failure, done or ignore."""

    kind: str
    items: tuple[ResultItem, ...] = ()
    message: str = ""


def _words(*values: Any) -> set[str]:
    words: set[str] = set()
    for value in values:
        if isinstance(value, str):
            words.update(_WORD.findall(value.lower()))
    return words


def classify_event(event: SSEEvent) -> EventOutcome:
    """The meaning of one event (providers.md §2.5)."""
    data = event.data.strip()
    if data == "[DONE]":
        return EventOutcome("done")
    if not data or data.startswith(":"):  # "data: : keepalive" and empty pings
        return EventOutcome("ignore")
    try:
        payload = json.loads(data)
    except ValueError:
        return EventOutcome("ignore", message=data[:100])
    if not isinstance(payload, dict):
        return EventOutcome("ignore")
    words = _words(event.event, payload.get("type"), payload.get("status"), payload.get("state"))
    error = payload.get("error")
    if error or words & _FAILURE:
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("code") or "error")
        elif isinstance(error, str):
            message = error
        else:
            message = str(payload.get("message") or payload.get("detail") or "failed")
        return EventOutcome("failure", message=message)
    items = tuple(items_from_payload(payload))
    if words & _PROVISIONAL:
        return EventOutcome("provisional", items)
    if items or words & _FINAL:
        return EventOutcome("final", items)
    return EventOutcome("ignore")


def _decode_b64(value: str, limit: int) -> bytes:
    value = _DATA_URL.sub("", value.strip(), count=1)
    value = "".join(value.split())
    if len(value) * 3 // 4 > limit:
        raise ImageRejected(f"the base64 image is over the limit of {limit} bytes")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("the b64_json field is not valid base64") from None


def _says_no_such_model(raw: bytes) -> bool:
    """Does a 404 body say the model is unknown (OpenAI: code ``model_not_found``)?"""
    text = raw.decode("utf-8", "replace").lower()
    return "model_not_found" in text or ("model" in text and "not exist" in text)


class ImageGenerator:
    """Generates images; one instance per run (it holds the concurrency limit and pacing)."""

    def __init__(
        self,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        limits = limits or LimitsSettings()
        self._settings = settings
        self._client = client
        self._clock, self._retry, self._limiter, self._gate = image_pacing(limits, clock, retry)
        self._resolve = resolve or system_resolve
        self._auth = BearerAuth(settings.api_key)
        self.profile = resolve_profile(settings)
        self._url = endpoint_url(
            settings.api_url or self.profile.default_url, "images/generations", "image"
        )
        self._references_refused = False  # the API refused them once: not tried again
        self._endpoint = Endpoint(
            "image API", self._url, "image", settings.api_key.get_secret_value()
        )
        trusted = {self._endpoint.host.lower()}
        for entry in settings.allow_private_urls:
            host = urlsplit(entry).hostname if "://" in entry else entry
            if host:
                trusted.add(host.strip().strip("[]").lower())
        self._download = DownloadPolicy(
            max_bytes=settings.max_download_bytes,
            trusted_hosts=frozenset(trusted),
            timeout=settings.timeout_seconds,
        )
        ignored = unsent_settings(settings, self.profile)
        if ignored:
            log.warning(
                "image_settings_not_sent",
                profile=self.profile.name,
                settings=ignored,
                why="the provider profile does not take them",
            )

    def __repr__(self) -> str:
        return f"ImageGenerator(profile={self.profile.name!r}, url={self._url!r})"

    def _overridden(
        self, size: str | None, model: str | None
    ) -> tuple[ImageSettings, ImageProfile]:
        """Settings and profile for one job's style (its own size or model)."""
        update = {k: v for k, v in (("size", size), ("model", model)) if v}
        if not update:
            return self._settings, self.profile
        settings = self._settings.model_copy(update=update)
        return settings, resolve_profile(settings)

    async def generate(
        self,
        prompt: str,
        negative: str = "",
        *,
        size: str | None = None,
        model: str | None = None,
        references: Sequence[ReferenceImage] = (),
    ) -> list[GeneratedImage]:
        """All ``n`` images for ``prompt``, checked; raises ProviderError subclasses.

        ``size`` and ``model`` override ``[image]`` for this call (a style's own).
        ``references`` go the profile's way (``/images/edits`` files, or a JSON field of data
        URLs); an API that cannot take them gets a normal generation, with one log line.
        """
        settings, profile = self._overridden(size, model)
        if references:
            refs = self._usable_references(profile, references)
            if refs:
                try:
                    return await self._generate(settings, profile, prompt, negative, refs)
                except PermanentProviderError as exc:
                    if isinstance(exc, AuthError | ContentRefusedError) or exc.status not in (
                        400,
                        404,
                        405,
                        415,
                        422,
                    ):
                        raise
                    self._references_refused = True
                    log.warning(
                        "references_refused",
                        profile=profile.name,
                        error=str(exc),
                        then="generating without them",
                    )
        return await self._generate(settings, profile, prompt, negative, ())

    def _usable_references(
        self, profile: ImageProfile, references: Sequence[ReferenceImage]
    ) -> tuple[ReferenceImage, ...]:
        if profile.references is ReferenceStyle.NONE:
            log.info("references_not_supported", profile=profile.name, count=len(references))
            return ()
        if self._references_refused:
            log.info("references_not_sent", profile=profile.name, why="refused before")
            return ()
        return tuple(references)

    async def _generate(
        self,
        settings: ImageSettings,
        profile: ImageProfile,
        prompt: str,
        negative: str,
        references: tuple[ReferenceImage, ...],
    ) -> list[GeneratedImage]:
        if negative and profile.negative is NegativeStyle.NONE:
            log.info("negative_prompt_not_sent", profile=profile.name)
        images: list[GeneratedImage] = []
        remaining = self._settings.n
        with scrubbed(self._endpoint.secret):
            while remaining > 0:
                batch = min(remaining, profile.max_n)
                body = build_body(settings, profile, prompt, negative, batch)
                edits: tuple[ReferenceImage, ...] = ()
                if references and profile.references is ReferenceStyle.FIELD:
                    body[profile.reference_field] = [_data_url(r) for r in references]
                elif references:
                    edits = references
                try:
                    items = await self._call(body, edits)
                except ProviderError as exc:
                    if not images:
                        raise
                    # Images already made were paid for: keep them rather than fail the job.
                    log.warning("image_batch_failed", kept=len(images), error=str(exc))
                    break
                if len(items) != batch:
                    log.warning(
                        "image_count_differs", api=self._endpoint.host, asked=batch, got=len(items)
                    )
                images.extend(await self._materialize(items, keep_partial=bool(images)))
                remaining -= batch
        if not images:
            raise self._bad("the answer holds no usable image")
        return images

    async def check(self) -> str | None:
        """One tiny request for ``doctor``: ``GET …/models`` (free on every API we know).

        It proves the URL, the network and the key; 404/405 (no models route) passes. A model the
        list leaves out is a warning (the returned note): many gateways list only some of the
        models they serve. It fails only when ``GET …/models/<model>`` says the model does not
        exist. Only a real generation proves the model works, and that may cost money, so doctor
        does not.
        """
        with scrubbed(self._endpoint.secret):
            return await self._check_models()

    async def _get(self, url: str) -> tuple[int, bytes, httpx.Headers]:
        try:
            with anyio.fail_after(min(self._settings.timeout_seconds, CHECK_TIMEOUT)):
                async with self._client.stream("GET", url, auth=self._auth) as response:
                    raw = await read_capped(response, ERROR_BODY_LIMIT * 16)
        except (TimeoutError, httpx.TransportError) as exc:
            raise error_from_transport(self._endpoint, exc) from exc
        return response.status_code, raw, response.headers

    async def _check_models(self) -> str | None:
        base = self._url.rsplit("/images/generations", 1)[0] + "/models"
        status, raw, headers = await self._get(base)
        if status in (404, 405):
            return None
        if not 200 <= status < 300:
            raise error_from_response(self._endpoint, status, raw, headers, self._clock)
        try:
            listed = {
                str(m.get("id")) for m in json.loads(raw).get("data", []) if isinstance(m, dict)
            }
        except (ValueError, AttributeError, TypeError):
            return None
        model = self._settings.model
        if not listed or model in listed:
            return None
        status, raw, headers = await self._get(f"{base}/{quote(model, safe='')}")
        if 200 <= status < 300:
            return None
        if status == 404 and _says_no_such_model(raw):
            raise PermanentProviderError(
                f"{self._endpoint.label} says the model {model!r} does not exist: "
                "check [image] model",
                provider=self._endpoint.label,
                status=status,
            )
        return (
            f"the model {model!r} is not in {self._endpoint.label}'s model list "
            f"({len(listed)} listed); many gateways list only some models, so this may be fine: "
            "a first generation will tell"
        )

    async def _call(
        self, body: dict[str, Any], edits: tuple[ReferenceImage, ...] = ()
    ) -> list[ResultItem]:
        async def attempt(n: int) -> list[ResultItem]:
            await self._gate.wait()
            return await self._post(body, edits)

        async with self._limiter:
            return await with_retries(attempt, self._retry, self._clock, what="image API")

    async def _post(
        self, body: dict[str, Any], edits: tuple[ReferenceImage, ...] = ()
    ) -> list[ResultItem]:
        timeout = self._settings.timeout_seconds
        log.info(
            "image_request",
            api=self._endpoint.host,
            profile=self.profile.name,
            model=body.get("model"),
            n=body.get("n"),
            references=len(edits) or len(body.get(self.profile.reference_field) or ()),
        )
        request: dict[str, Any] = {"json": body}
        url = self._url
        if edits:
            # OpenAI's edits endpoint: the same fields as multipart form data, plus the files.
            url = self._url.rsplit("/images/generations", 1)[0] + "/images/edits"
            fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()}
            files = [("image[]", (r.name, r.data, r.mime)) for r in edits]
            request = {"data": fields, "files": files}
        try:
            with anyio.fail_after(timeout):
                async with self._client.stream(
                    "POST",
                    url,
                    auth=self._auth,
                    timeout=call_timeout(timeout),
                    **request,
                ) as response:
                    if not 200 <= response.status_code < 300:
                        raw = await read_capped(response, ERROR_BODY_LIMIT)
                        raise error_from_response(
                            self._endpoint, response.status_code, raw, response.headers, self._clock
                        )
                    ctype = response.headers.get("content-type", "").lower()
                    if "event-stream" in ctype or (
                        (body.get("sse") or body.get("stream")) and ("json" not in ctype)
                    ):
                        return await self._read_stream(response.aiter_bytes())
                    return await self._read_json(response)
        except (TimeoutError, httpx.TransportError) as exc:
            raise error_from_transport(self._endpoint, exc) from exc

    def _bad(self, text: str, body: str | bytes | None = None) -> BadResponseError:
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        body = redact(body or "", self._endpoint.secret)
        return BadResponseError(
            f"{self._endpoint.label}: {text}", provider=self._endpoint.label, status=200, body=body
        )

    async def _read_json(self, response: httpx.Response) -> list[ResultItem]:
        cap = self._settings.max_response_bytes
        try:
            raw = await read_within(response, cap)
        except BodyTooLarge:
            raise self._bad(
                f"the answer is over {cap} bytes ([image] max_response_bytes)"
            ) from None
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self._bad(
                "the answer is not JSON: check [image] api_url points at an images API",
                bytes(raw[:300]),
            ) from None
        head = bytes(raw[:300])
        if isinstance(payload, dict) and payload.get("error") and not payload.get("data"):
            message, code, _param = error_fields(bytes(raw))
            raise self._failure(f"{code} {message}".strip() or "error", head)
        del raw  # the parsed answer is all that is needed from here
        items = items_from_payload(payload)
        if not items:
            raise self._bad("the answer holds no image (no data[].url or data[].b64_json)", head)
        return items

    def _failure(self, message: str, body: str | bytes | None = None) -> ProviderError:
        """The error for a failure the provider reported inside a 200 answer."""
        message = redact(message, self._endpoint.secret)
        text = f"{self._endpoint.label} reported a failure: {message}"
        kwargs: dict[str, Any] = {"provider": self._endpoint.label, "status": 200, "body": body}
        if looks_like_policy(message):
            return ContentRefusedError(text, **kwargs)
        if any(hint in message.lower() for hint in _TRANSIENT_HINTS):
            return TransientProviderError(text, **kwargs)
        return PermanentProviderError(text, **kwargs)

    async def _read_stream(self, chunks: AsyncIterator[bytes]) -> list[ResultItem]:
        finals: list[ResultItem] = []
        saw_final = False
        provisional = 0
        try:
            async for event in iter_sse(chunks, self._settings.max_response_bytes):
                outcome = classify_event(event)
                if outcome.kind == "done":
                    break
                if outcome.kind == "failure":
                    raise self._failure(outcome.message, event.data[:300])
                if outcome.kind == "provisional":
                    provisional += 1
                elif outcome.kind == "final":
                    saw_final = True
                    finals.extend(outcome.items)
        except StreamTooLarge:
            raise self._bad(
                f"the event stream went over {self._settings.max_response_bytes} bytes "
                "([image] max_response_bytes)"
            ) from None
        if finals:
            return finals
        if saw_final:
            raise self._bad("the stream said the image was done but carried no image")
        if provisional:
            raise TransientProviderError(
                f"{self._endpoint.label}: the event stream ended before the image was ready "
                f"({provisional} progress events, no final image)",
                provider=self._endpoint.label,
                status=200,
            )
        raise self._bad("the event stream ended without an image")

    async def _materialize(
        self, items: list[ResultItem], *, keep_partial: bool = False
    ) -> list[GeneratedImage]:
        """Fetch and check every item. One bad item out of several is dropped (logged), so the
        good, paid-for images are not lost with it; if none is good, the first error is raised.
        """
        images: list[GeneratedImage] = []
        first: ProviderError | None = None
        for index, item in enumerate(items, start=1):
            try:
                images.append(await self._one(item, index, len(items)))
            except ProviderError as exc:
                log.warning("image_dropped", index=index, of=len(items), error=str(exc))
                first = first or exc
        if first is not None and not images and not keep_partial:
            raise first
        return images

    async def _one(self, item: ResultItem, index: int, count: int) -> GeneratedImage:
        data = await self._fetch(item)
        try:
            return await anyio.to_thread.run_sync(check_image, data, self._settings.max_pixels)
        except ImageRejected as exc:
            raise self._bad(f"image {index} of {count} was rejected: {exc}") from None

    async def _fetch(self, item: ResultItem) -> bytes:
        limit = self._settings.max_download_bytes
        if item.kind == "b64" or _DATA_URL.match(item.value):
            try:
                return _decode_b64(item.value, limit)
            except ImageRejected as exc:
                raise self._bad(str(exc)) from None

        async def attempt(n: int) -> bytes:
            return await download_image(
                self._client, item.value, self._download, resolve=self._resolve
            )

        return await with_retries(attempt, self._retry, self._clock, what="image download")


class OpenAIBackend:
    """The OpenAI-compatible generator behind the :class:`ImageBackend` seam.

    Its n comes from ``[image]``; a request's size and model (a style's) replace ``[image]``'s
    for that call, sent only where the profile takes them; it reports no progress.
    """

    def __init__(self, generator: ImageGenerator) -> None:
        self.generator = generator

    @classmethod
    def create(
        cls,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> OpenAIBackend:
        return cls(ImageGenerator(settings, client, limits=limits, clock=clock, retry=retry))

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.generator!r})"

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        return await self.generator.generate(
            request.prompt,
            request.negative,
            size=request.size,
            model=request.model,
            references=request.references,
        )

    async def check(self) -> str | None:
        return await self.generator.check()


def capabilities_for(settings: ImageSettings) -> Capabilities:
    """The OpenAI-compatible API's abilities under the profile these settings resolve to."""
    profile = resolve_profile(settings)
    aspect = profile.size_style is SizeStyle.ASPECT
    return Capabilities(
        size_mode=SizeMode.ASPECT if aspect else SizeMode.PIXELS,
        aspect_ratios=profile.aspect_ratios,
        max_n_per_call=profile.max_n,
        negative_prompt=profile.negative is not NegativeStyle.NONE,
        max_references={
            ReferenceStyle.NONE: 0,
            ReferenceStyle.EDITS: 16,  # gpt-image's /images/edits limit
            ReferenceStyle.FIELD: 4,
        }[profile.references],
        cost=CostReport.FREE if profile.local else CostReport.ESTIMATED,
    )


def _preset(name: str, title: str, notes: str, key_url: str = "", **image: Any) -> Preset:
    return Preset(
        name=name, title=title, image={"backend": "openai", **image}, notes=notes, key_url=key_url
    )


INFO = BackendInfo(
    name="openai",
    title="OpenAI-compatible images API",
    summary="POST /v1/images/generations (OpenAI, api.airforce, LocalAI, gateways, presets)",
    create=OpenAIBackend.create,
    capabilities=capabilities_for(ImageSettings()),
    capabilities_for=capabilities_for,
    url_hint="a base URL must end in /v1",
    default_model="dall-e-3",
    presets=(
        _preset(
            "openai",
            "OpenAI (gpt-image-1)",
            "b64_json answers; references via /images/edits",
            "https://platform.openai.com/api-keys",
            api_url="https://api.openai.com/v1",
            model="gpt-image-1",
            profile="openai",
        ),
        _preset(
            "pollinations",
            "Pollinations (a first image free, no key)",
            "works with no key at first; an sk_/pk_ key lifts the limits",
            "https://enter.pollinations.ai",
            profile="pollinations",
            model="flux",
            size="1024x1024",
        ),
        _preset(
            "xai",
            "xAI grok-imagine",
            "aspect_ratio from the size; base64 answers",
            "https://console.x.ai",
            profile="xai",
            model="grok-imagine-image",
        ),
        _preset(
            "together",
            "Together AI (FLUX)",
            "width/height from the size; base64 answers",
            "https://api.together.xyz/settings/api-keys",
            profile="together",
            model="black-forest-labs/FLUX.1-schnell",
            size="1024x768",
        ),
        _preset(
            "nanogpt",
            "NanoGPT",
            "base64 always (its URLs expire after about an hour)",
            "https://nano-gpt.com/api",
            profile="nanogpt",
            model="hidream",
        ),
        _preset(
            "deepinfra",
            "DeepInfra",
            "OpenAI shape under /v1/openai",
            "https://deepinfra.com/dash/api_keys",
            profile="deepinfra",
            model="black-forest-labs/FLUX-1-schnell",
        ),
        _preset(
            "airforce",
            "api.airforce",
            "aspect_ratio and sse keepalives",
            "https://api.airforce",
            api_url="https://api.airforce/v1",
            profile="airforce",
            model="flux",
        ),
    ),
)
