"""OpenRouter's image models: chat-image mode and the dedicated images endpoint.

Chat-image mode (Gemini "nano banana" and the other text+image models, and Flux-style image-only
models that OpenRouter serves through chat): ``POST /api/v1/chat/completions`` with
``modalities`` (``["image", "text"]`` or ``["image"]``) and ``image_config`` (``aspect_ratio``
from the configured WxH, ``image_size`` when set); references go as ``image_url`` parts of the
user message. Images are read from ``choices[0].message.images[]`` first, then from a data URL,
a markdown image or a bare URL in ``content``. One call makes one image, so ``n`` is several
calls.

The dedicated endpoint (``POST /api/v1/images``: gpt-image, Seedream and the other models that
answer an opaque 500 on chat completions) takes ``aspect_ratio`` instead of ``size`` and no
``response_format``; it answers ``data[].b64_json``.

Both report the price in ``usage.cost`` (USD): it is attached to the images it paid for.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import anyio
import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import ContentRefusedError, PermanentProviderError, ProviderError
from daemon.providers.backend import ImageRequest, ProgressCallback
from daemon.providers.capabilities import (
    COMMON_ASPECT_RATIOS,
    Capabilities,
    CostReport,
    SizeMode,
    batches,
    nearest_aspect_ratio,
)
from daemon.providers.decode import GeneratedImage
from daemon.providers.http import (
    BearerAuth,
    Clock,
    RetryPolicy,
    error_fields,
    image_pacing,
    looks_like_policy,
    scrubbed,
    with_retries,
)
from daemon.providers.info import BackendInfo, Preset, backend_options
from daemon.providers.service import ServiceAPI, data_url, with_cost

__all__ = [
    "INFO",
    "OpenRouterBackend",
    "OpenRouterOptions",
    "chat_body",
    "images_body",
    "images_in_message",
]

log = structlog.get_logger(__name__)

DEFAULT_URL = "https://openrouter.ai/api/v1"
CHECK_TIMEOUT = 30.0

# Models OpenRouter serves only on /images (they answer an opaque 500 on chat completions).
_IMAGES_ONLY = ("openai/gpt-image", "bytedance-seed/seedream", "krea/", "recraft/", "ideogram/")
# Text+image models: modalities ["image", "text"]; the others take ["image"].
_TEXT_AND_IMAGE = ("google/gemini", "openai/gpt-5", "openai/gpt-4o")

_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*(\S+?)\s*\)")
_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+", re.IGNORECASE)
_BARE_URL = re.compile(r"https?://\S+?\.(?:png|jpe?g|webp|gif)(?:\?\S*)?", re.IGNORECASE)


class OpenRouterOptions(BaseModel):
    """``[image.openrouter]``: which endpoint, which modalities, and the ranking headers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: Literal["auto", "chat", "images"] = Field(
        default="auto",
        description="auto: /images for image-only models (gpt-image, Seedream, ...), chat "
        "completions for the rest | chat | images",
    )
    modalities: Literal["auto", "image", "image_text"] = Field(
        default="auto",
        description='chat mode: auto (["image","text"] for Gemini/GPT models, else ["image"])',
    )
    image_size: str = Field(default="", description='image_config.image_size: "1K", "2K", "4K"')
    app_url: str = Field(default="", description="HTTP-Referer sent for OpenRouter's rankings")
    app_title: str = Field(default="st-imagegen", description="X-Title sent with each call")


def _endpoint_for(model: str, options: OpenRouterOptions) -> str:
    if options.endpoint != "auto":
        return options.endpoint
    return "images" if model.lower().startswith(_IMAGES_ONLY) else "chat"


def _modalities(model: str, options: OpenRouterOptions) -> list[str]:
    if options.modalities == "image":
        return ["image"]
    if options.modalities == "image_text" or model.lower().startswith(_TEXT_AND_IMAGE):
        return ["image", "text"]
    return ["image"]


def chat_body(
    settings: ImageSettings, options: OpenRouterOptions, request: ImageRequest, model: str
) -> dict[str, Any]:
    """The chat-completions body for one image."""
    content: Any = request.prompt
    if request.references:
        content = [{"type": "text", "text": request.prompt}] + [
            {"type": "image_url", "image_url": {"url": data_url(r)}} for r in request.references
        ]
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "modalities": _modalities(model, options),
        "usage": {"include": True},  # usage accounting: the answer's usage.cost, in USD
    }
    image_config: dict[str, Any] = {}
    size = request.size or settings.aspect_ratio or settings.size
    if size:
        image_config["aspect_ratio"] = nearest_aspect_ratio(size, COMMON_ASPECT_RATIOS)
    if options.image_size:
        image_config["image_size"] = options.image_size
    if image_config:
        body["image_config"] = image_config
    if request.seed is not None:
        body["seed"] = request.seed
    body.update(settings.extra_body)
    return body


def images_body(
    settings: ImageSettings, options: OpenRouterOptions, request: ImageRequest, model: str, n: int
) -> dict[str, Any]:
    """The ``/images`` body: ``aspect_ratio`` for ``size``, no ``response_format``."""
    body: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": n}
    size = request.size or settings.aspect_ratio or settings.size
    if size:
        body["aspect_ratio"] = nearest_aspect_ratio(size, COMMON_ASPECT_RATIOS)
    if settings.resolution or options.image_size:
        body["resolution"] = settings.resolution or options.image_size
    if settings.quality:
        body["quality"] = settings.quality
    if settings.output_format:
        body["output_format"] = settings.output_format
    if request.seed is not None:
        body["seed"] = request.seed
    if request.references:
        body["input_references"] = [data_url(r) for r in request.references]
    body.update(settings.extra_body)
    return body


def images_in_message(message: Any) -> list[str]:
    """Image URLs (``data:`` or http) in a chat answer's message: ``images[]`` first, then a
    data URL, a markdown image or a bare image URL in ``content``."""
    if not isinstance(message, dict):
        return []
    found: list[str] = []
    for entry in message.get("images") or ():
        url = entry.get("image_url") if isinstance(entry, dict) else None
        url = url.get("url") if isinstance(url, dict) else url
        if isinstance(url, str) and url.strip():
            found.append(url.strip())
    if found:
        return found
    content = message.get("content")
    if isinstance(content, list):  # content parts
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url")
                if isinstance(url, str):
                    found.append(url)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        if found:
            return found
        content = "\n".join(texts)
    if not isinstance(content, str):
        return []
    for pattern in (_MARKDOWN_IMAGE, _DATA_URL, _BARE_URL):
        hits = [m.group(1) if m.groups() else m.group(0) for m in pattern.finditer(content)]
        if hits:
            return ["".join(hit.split()) for hit in hits]
    return []


def _cost(payload: Any) -> float | None:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    cost = usage.get("cost") if isinstance(usage, dict) else None
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
        return float(cost)
    return None


class OpenRouterBackend:
    """Generates through OpenRouter; one instance per run."""

    def __init__(
        self,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        limits = limits or LimitsSettings()
        self._settings = settings
        self._options = backend_options(settings, "openrouter", OpenRouterOptions)
        self._clock, self._retry, self._limiter, self._gate = image_pacing(limits, clock, retry)
        self._api = ServiceAPI(
            "OpenRouter API",
            settings.api_url or DEFAULT_URL,
            settings,
            client,
            self._clock,
            self._retry,
            BearerAuth(settings.api_key),
        )
        self._headers = {"X-Title": self._options.app_title}
        if self._options.app_url:
            self._headers["HTTP-Referer"] = self._options.app_url

    def __repr__(self) -> str:
        return f"OpenRouterBackend(url={self._api.base!r})"

    def _model(self, request: ImageRequest) -> str:
        return request.model or self._settings.model or INFO.default_model

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        model = self._model(request)
        n = request.n or self._settings.n
        images: list[GeneratedImage] = []
        with scrubbed(self._api.secret):
            use_images = _endpoint_for(model, self._options) == "images"
            per_call = 10 if use_images else 1
            for count in batches(n, per_call):
                try:
                    if use_images:
                        body = images_body(self._settings, self._options, request, model, count)
                        made = await self._call("/images", body, self._read_images)
                    else:
                        body = chat_body(self._settings, self._options, request, model)
                        made = await self._call("/chat/completions", body, self._read_chat)
                except ProviderError:
                    if not images:
                        raise
                    log.warning("image_batch_failed", kept=len(images))
                    break  # the images made were paid for: keep them
                images.extend(made)
        return images

    async def _call(self, path: str, body: dict[str, Any], read: Any) -> list[GeneratedImage]:
        log.info("image_request", api=self._api.endpoint.host, path=path, model=body["model"])

        async def attempt(n: int) -> Any:
            await self._gate.wait()
            raw, _headers = await self._api.raw(
                "POST",
                path,
                body=body,
                timeout=self._settings.timeout_seconds,
                cap=self._settings.max_response_bytes,
                headers=self._headers,
                explain=self._explain,
            )
            try:
                return json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise self._api.bad("the answer is not JSON", raw[:300]) from None

        async with self._limiter:
            payload = await with_retries(attempt, self._retry, self._clock, what="OpenRouter")
        images: list[GeneratedImage] = await read(payload)
        return with_cost(images, _cost(payload), "USD")

    def _explain(self, status: int, raw: bytes, headers: httpx.Headers) -> ProviderError | None:
        message, _code, _param = error_fields(raw)
        if status == 402:
            return PermanentProviderError(
                f"{self._api.label} answered 402: the account is out of credits ({message}); "
                "add credits at openrouter.ai/settings/credits",
                provider=self._api.label,
                status=status,
            )
        if status == 403 and looks_like_policy(message or "moderation"):
            return ContentRefusedError(
                f"{self._api.label} refused the prompt (moderation): {message}",
                provider=self._api.label,
                status=status,
            )
        return None

    def _error_in(self, payload: dict[str, Any]) -> ProviderError | None:
        """An error OpenRouter put inside a 200 answer (top level or in the choice)."""
        choices = payload.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        error = payload.get("error") or (choice.get("error") if isinstance(choice, dict) else None)
        finish = str(choice.get("finish_reason") or "") if isinstance(choice, dict) else ""
        if error:
            message = str(error.get("message") if isinstance(error, dict) else error)
            if looks_like_policy(message):
                return ContentRefusedError(
                    f"{self._api.label} refused: {message}", provider=self._api.label, status=200
                )
            return self._api.bad(f"the model failed: {message}", json.dumps(payload)[:300])
        if finish == "content_filter":
            return ContentRefusedError(
                f"{self._api.label}: the model's content filter stopped the image",
                provider=self._api.label,
                status=200,
            )
        return None

    async def _read_chat(self, payload: Any) -> list[GeneratedImage]:
        if not isinstance(payload, dict):
            raise self._api.bad("the answer is not a JSON object")
        error = self._error_in(payload)
        if error is not None:
            raise error
        choices = payload.get("choices")
        message = choices[0].get("message") if isinstance(choices, list) and choices else None
        urls = images_in_message(message)
        if not urls:
            text = str(message.get("content") or "") if isinstance(message, dict) else ""
            raise PermanentProviderError(
                f"{self._api.label}: the model answered without an image"
                + (f" (it said: {text[:160]!r})" if text else "")
                + "; check that [image] model is an image model, or set "
                "[image.openrouter] modalities",
                provider=self._api.label,
                status=200,
                body=json.dumps(payload)[:300],
            )
        return [await self._api.image_from_url(url, i, len(urls)) for i, url in enumerate(urls, 1)]

    async def _read_images(self, payload: Any) -> list[GeneratedImage]:
        data = payload.get("data") if isinstance(payload, dict) else None
        if isinstance(payload, dict) and payload.get("error") and not data:
            error = self._error_in(payload)
            raise error or self._api.bad("the answer is an error")
        out: list[GeneratedImage] = []
        entries = [e for e in data or () if isinstance(e, dict)]
        for index, entry in enumerate(entries, 1):
            if isinstance(entry.get("b64_json"), str):
                out.append(await self._api.image_from_b64(entry["b64_json"], index, len(entries)))
            elif isinstance(entry.get("url"), str):
                out.append(await self._api.image_from_url(entry["url"], index, len(entries)))
        if not out:
            raise self._api.bad("the answer holds no image (no data[].b64_json)")
        return out

    async def models(self) -> list[str]:
        """The image models OpenRouter lists (a dropdown's choices): chat models whose output
        includes images, and the dedicated endpoint's catalogue."""
        found: list[str] = []
        with scrubbed(self._api.secret):
            for path, params in (
                ("/models", {"output_modalities": "image"}),
                ("/images/models", None),
            ):
                try:
                    payload = await self._api.json(
                        "GET", path, params=params, timeout=CHECK_TIMEOUT
                    )
                except PermanentProviderError as exc:
                    if exc.status == 404:
                        continue
                    raise
                for entry in (payload or {}).get("data") or ():
                    name = entry.get("id") if isinstance(entry, dict) else None
                    if isinstance(name, str) and name not in found:
                        found.append(name)
        return found

    async def check(self) -> str | None:
        """``doctor``: the key works (``GET /key``) and the model is one OpenRouter lists."""
        with scrubbed(self._api.secret):
            with anyio.fail_after(CHECK_TIMEOUT * 3):
                key = await self._api.json("GET", "/key", timeout=CHECK_TIMEOUT)
                listed = await self.models()
        model = self._settings.model or INFO.default_model
        data = (key or {}).get("data") if isinstance(key, dict) else None
        remaining = data.get("limit_remaining") if isinstance(data, dict) else None
        if isinstance(remaining, int | float) and remaining <= 0:
            return "the key has no credit left (limit_remaining is 0)"
        if listed and model not in listed:
            return (
                f"the model {model!r} is not among OpenRouter's {len(listed)} image models "
                f"(e.g. {', '.join(listed[:4])})"
            )
        return None


INFO = BackendInfo(
    name="openrouter",
    title="OpenRouter",
    summary="image models through chat completions (modalities) or /api/v1/images",
    create=OpenRouterBackend,
    capabilities=Capabilities(
        size_mode=SizeMode.ASPECT,
        aspect_ratios=COMMON_ASPECT_RATIOS,
        max_n_per_call=1,
        negative_prompt=False,
        seed=False,
        max_references=4,
        cost=CostReport.REPORTED,
    ),
    url_hint="https://openrouter.ai/api/v1 (or leave api_url empty)",
    default_url=DEFAULT_URL,
    default_model="google/gemini-2.5-flash-image",
    options=OpenRouterOptions,
    presets=(
        Preset(
            "openrouter-nano-banana",
            "OpenRouter: Gemini 2.5 Flash Image (nano banana)",
            {"backend": "openrouter", "model": "google/gemini-2.5-flash-image", "size": "832x1216"},
            "about 0.04 USD an image; the cost of each job is what OpenRouter reports",
            "https://openrouter.ai/settings/keys",
        ),
        Preset(
            "openrouter-gpt-image",
            "OpenRouter: GPT Image (dedicated images endpoint)",
            {"backend": "openrouter", "model": "openai/gpt-image-1", "size": "1024x1024"},
            "image-only models go to /api/v1/images automatically",
            "https://openrouter.ai/settings/keys",
        ),
    ),
)
