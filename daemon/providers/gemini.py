"""Google Gemini's image models, natively: ``models/{model}:generateContent``.

The key goes in ``x-goog-api-key`` (an AI Studio key; the free tier works). The body asks for
``responseModalities: ["TEXT", "IMAGE"]`` with ``imageConfig.aspectRatio`` (the configured WxH
mapped to the nearest ratio the models take) and ``imageSize`` when set; references are extra
``inlineData`` parts. The answer's image is the first ``inlineData`` part of
``candidates[0].content.parts`` that is not a ``thought`` (thinking models send draft images
first). One call makes one image, so ``n`` is several calls, paced like every image call.

A safety block is not an HTTP error: it arrives as ``promptFeedback.blockReason`` or a
``finishReason`` such as ``SAFETY`` / ``IMAGE_SAFETY`` / ``PROHIBITED_CONTENT``. It fails the job
at once (never retried: the same prompt is blocked again), naming the reason.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import AuthError, ContentRefusedError, PermanentProviderError, ProviderError
from daemon.providers.backend import ImageRequest, ProgressCallback
from daemon.providers.capabilities import (
    COMMON_ASPECT_RATIOS,
    Capabilities,
    CostReport,
    SizeMode,
    nearest_aspect_ratio,
)
from daemon.providers.decode import GeneratedImage
from daemon.providers.http import (
    Clock,
    RetryPolicy,
    error_fields,
    image_pacing,
    scrubbed,
    with_retries,
)
from daemon.providers.info import BackendInfo, Preset, backend_options
from daemon.providers.service import HeaderAuth, ServiceAPI

__all__ = ["INFO", "GeminiBackend", "GeminiOptions", "generate_body", "image_parts"]

log = structlog.get_logger(__name__)

DEFAULT_URL = "https://generativelanguage.googleapis.com/v1beta"
CHECK_TIMEOUT = 30.0

# finishReason values that mean "blocked", not "failed" (the Gemini API's FinishReason enum).
_BLOCKED = {
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
}


class GeminiOptions(BaseModel):
    """``[image.gemini]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: str = Field(
        default="", description='imageConfig.imageSize: "1K", "2K", "4K" (Gemini 3 image models)'
    )
    text_too: bool = Field(
        default=True,
        description='responseModalities ["TEXT","IMAGE"] (true) or ["IMAGE"] only (false)',
    )


def generate_body(
    settings: ImageSettings, options: GeminiOptions, request: ImageRequest
) -> dict[str, Any]:
    """The ``generateContent`` body for one image."""
    parts: list[dict[str, Any]] = [{"text": request.prompt}]
    parts += [
        {
            "inlineData": {
                "mimeType": r.mime,
                "data": base64.b64encode(r.data).decode("ascii"),
            }
        }
        for r in request.references
    ]
    image_config: dict[str, Any] = {}
    size = request.size or settings.aspect_ratio or settings.size
    if size:
        image_config["aspectRatio"] = nearest_aspect_ratio(size, COMMON_ASPECT_RATIOS)
    if options.image_size:
        image_config["imageSize"] = options.image_size
    config: dict[str, Any] = {
        "responseModalities": ["TEXT", "IMAGE"] if options.text_too else ["IMAGE"]
    }
    if image_config:
        config["imageConfig"] = image_config
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": config,
    }
    body.update(settings.extra_body)
    return body


def image_parts(payload: Any) -> list[str]:
    """The base64 images of an answer's first candidate, thought parts skipped."""
    candidates = payload.get("candidates") if isinstance(payload, dict) else None
    if not isinstance(candidates, list) or not candidates:
        return []
    content = candidates[0].get("content") if isinstance(candidates[0], dict) else None
    found = []
    for part in (content or {}).get("parts") or ():
        if not isinstance(part, dict) or part.get("thought"):
            continue
        inline = part.get("inlineData") or part.get("inline_data")
        if isinstance(inline, dict) and isinstance(inline.get("data"), str):
            found.append(inline["data"])
    return found


class GeminiBackend:
    """Generates through the Gemini API; one instance per run."""

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
        self._options = backend_options(settings, "gemini", GeminiOptions)
        self._clock, self._retry, self._limiter, self._gate = image_pacing(limits, clock, retry)
        self._api = ServiceAPI(
            "Gemini API",
            settings.api_url or DEFAULT_URL,
            settings,
            client,
            self._clock,
            self._retry,
            HeaderAuth(settings.api_key, "x-goog-api-key"),
        )

    def __repr__(self) -> str:
        return f"GeminiBackend(url={self._api.base!r})"

    def _model(self, request: ImageRequest) -> str:
        model = request.model or self._settings.model or INFO.default_model
        return model.removeprefix("models/")

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        model = self._model(request)
        body = generate_body(self._settings, self._options, request)
        images: list[GeneratedImage] = []
        with scrubbed(self._api.secret):
            for _ in range(request.n or self._settings.n):
                try:
                    images.append(await self._one(model, body))
                except ProviderError:
                    if not images:
                        raise
                    log.warning("image_batch_failed", kept=len(images))
                    break  # the images made were paid for: keep them
        return images

    async def _one(self, model: str, body: dict[str, Any]) -> GeneratedImage:
        log.info("image_request", api=self._api.endpoint.host, model=model, n=1)

        async def attempt(n: int) -> Any:
            await self._gate.wait()
            return await self._api.json(
                "POST",
                f"/models/{model}:generateContent",
                body=body,
                timeout=self._settings.timeout_seconds,
                cap=self._settings.max_response_bytes,
                explain=self._explain,
            )

        async with self._limiter:
            payload = await with_retries(attempt, self._retry, self._clock, what="Gemini API")
        blocked = self._blocked(payload)
        if blocked is not None:
            raise blocked
        found = image_parts(payload)
        if not found:
            raise PermanentProviderError(
                f"{self._api.label}: the answer holds no image"
                + self._said(payload)
                + f" (finishReason {self._finish(payload) or 'none'}); check that [image] "
                "model is an image model (e.g. gemini-2.5-flash-image)",
                provider=self._api.label,
                status=200,
                body=json.dumps(payload)[:300],
            )
        return await self._api.image_from_b64(found[-1], 1, 1)

    def _explain(self, status: int, raw: bytes, headers: httpx.Headers) -> ProviderError | None:
        message, _code, _param = error_fields(raw)
        if status == 400 and "api key not valid" in message.lower():
            return AuthError(
                f"{self._api.label} answered 400 (API key not valid): check [image] api_key "
                "(an AI Studio key from aistudio.google.com/apikey)",
                provider=self._api.label,
                status=status,
            )
        return None

    @staticmethod
    def _finish(payload: Any) -> str:
        candidates = payload.get("candidates") if isinstance(payload, dict) else None
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            return str(candidates[0].get("finishReason") or "")
        return ""

    @staticmethod
    def _said(payload: Any) -> str:
        candidates = payload.get("candidates") if isinstance(payload, dict) else None
        if not isinstance(candidates, list) or not candidates:
            return ""
        content = candidates[0].get("content") if isinstance(candidates[0], dict) else None
        texts = [
            str(p.get("text"))
            for p in (content or {}).get("parts") or ()
            if isinstance(p, dict) and p.get("text") and not p.get("thought")
        ]
        return f" (it said: {' '.join(texts)[:160]!r})" if texts else ""

    def _blocked(self, payload: Any) -> ContentRefusedError | None:
        feedback = payload.get("promptFeedback") if isinstance(payload, dict) else None
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        where = "the prompt"
        if not reason:
            finish = self._finish(payload)
            reason = finish if finish in _BLOCKED else None
            where = "the image"
        if not reason:
            return None
        return ContentRefusedError(
            f"{self._api.label} blocked {where}: {reason} (Gemini's safety filter; the same "
            "prompt would be blocked again, so it is not retried)",
            provider=self._api.label,
            status=200,
            body=json.dumps(payload)[:300],
        )

    async def check(self) -> str | None:
        """``doctor``: the key works and the model exists (``GET models/{model}``: free)."""
        model = self._model(ImageRequest(""))
        with scrubbed(self._api.secret):
            info = await self._api.json(
                "GET", f"/models/{model}", timeout=CHECK_TIMEOUT, explain=self._explain
            )
        methods = info.get("supportedGenerationMethods") if isinstance(info, dict) else None
        if isinstance(methods, list) and "generateContent" not in methods:
            return f"the model {model!r} does not offer generateContent"
        return None


INFO = BackendInfo(
    name="gemini",
    title="Google Gemini (native)",
    summary="models/{model}:generateContent with responseModalities IMAGE (nano banana)",
    create=GeminiBackend,
    capabilities=Capabilities(
        size_mode=SizeMode.ASPECT,
        aspect_ratios=COMMON_ASPECT_RATIOS,
        max_n_per_call=1,
        max_references=14,
        cost=CostReport.ESTIMATED,
    ),
    url_hint="https://generativelanguage.googleapis.com/v1beta (or leave api_url empty)",
    default_url=DEFAULT_URL,
    default_model="gemini-2.5-flash-image",
    options=GeminiOptions,
    presets=(
        Preset(
            "gemini-flash-image",
            "Gemini 2.5 Flash Image (AI Studio key, free tier)",
            {"backend": "gemini", "model": "gemini-2.5-flash-image", "size": "832x1216"},
            "about 0.04 USD an image on the paid tier; strong with reference images",
            "https://aistudio.google.com/apikey",
        ),
        Preset(
            "gemini-3-pro-image",
            "Gemini 3 Pro Image",
            {"backend": "gemini", "model": "gemini-3-pro-image-preview", "size": "832x1216"},
            "about 0.14 USD an image; up to 14 reference images",
            "https://aistudio.google.com/apikey",
        ),
    ),
)
