"""NovelAI: ``POST https://image.novelai.net/ai/generate-image`` answering a ZIP of PNGs.

V4, V4.5 and V5 models take the ``v4_prompt`` caption structure: a base caption (the prompt)
and one caption per character in the scene, built from each character's appearance tags (the
same tags the prompt writer uses), with ``characterPrompts`` mirroring them; the negative goes
in ``negative_prompt`` and ``v4_negative_prompt`` (per character too). Sampler, steps, scale
and seed are the ``[image]`` ones.

The answer is unpacked under caps (entry count, each entry's and the total size, and the
compression ratio, so a ZIP bomb is refused before it is inflated), and every image is
checked with Pillow. Its 500s under load and its "concurrent generation is locked" 429s are
retried with backoff; a 402 (not enough Anlas) is not. ``[image.novelai] free_only`` keeps
each call within what an Opus subscription renders without Anlas (at most 1024x1024 pixels'
worth, 28 steps, one image per call).
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any

import anyio.to_thread
import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import PermanentProviderError, ProviderError, TransientProviderError
from daemon.providers.backend import ImageRequest, ProgressCallback, SceneCharacter
from daemon.providers.capabilities import Capabilities, CostReport, SizeMode, batches
from daemon.providers.decode import GeneratedImage
from daemon.providers.http import (
    BearerAuth,
    Clock,
    RetryPolicy,
    error_fields,
    image_pacing,
    scrubbed,
    with_retries,
)
from daemon.providers.info import BackendInfo, Preset, backend_options
from daemon.providers.native import MAX_SEED, parse_size, pick_seed
from daemon.providers.service import ServiceAPI

__all__ = [
    "FREE_PIXELS",
    "FREE_STEPS",
    "INFO",
    "NovelAIBackend",
    "NovelAIOptions",
    "ZipRefused",
    "build_payload",
    "free_size",
    "unzip_images",
]

log = structlog.get_logger(__name__)

DEFAULT_URL = "https://image.novelai.net"
ACCOUNT_URL = "https://api.novelai.net"
CHECK_TIMEOUT = 30.0

FREE_PIXELS = 1024 * 1024
"""The most pixels an Opus subscriber renders without Anlas."""

FREE_STEPS = 28
"""The most steps an Opus subscriber renders without Anlas."""

_IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")


class NovelAIOptions(BaseModel):
    """``[image.novelai]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    free_only: bool = Field(
        default=False,
        description="keep every call free for Opus (size scaled to <= 1024x1024 pixels, "
        "<= 28 steps, one image per call)",
    )
    quality_tags: bool = Field(default=True, description="qualityToggle: NovelAI's quality tags")
    uc_preset: int = Field(default=0, ge=0, le=4, description="ucPreset: 0 heavy .. 3 none")
    noise_schedule: str = Field(default="karras", description="karras | exponential | polyexp")
    account_url: str = Field(default=ACCOUNT_URL, description="where doctor reads the account")
    max_zip_entries: int = Field(default=16, ge=1, le=256, description="most files in an answer")
    max_zip_ratio: float = Field(
        default=50.0, gt=1, description="largest inflated/compressed ratio of one entry"
    )


def free_size(width: int, height: int) -> tuple[int, int]:
    """The largest size of the same shape within :data:`FREE_PIXELS`, in multiples of 64."""
    if width * height <= FREE_PIXELS:
        return width, height
    scale = math.sqrt(FREE_PIXELS / (width * height))
    w, h = max(64, int(width * scale) // 64 * 64), max(64, int(height * scale) // 64 * 64)
    return w, h


def _snap(value: int) -> int:
    return max(64, round(value / 64) * 64)


def _centers(count: int) -> list[dict[str, float]]:
    """Characters spread left to right (only a hint: use_coords is off)."""
    return [{"x": round((i + 1) / (count + 1), 2), "y": 0.5} for i in range(count)]


def build_payload(
    settings: ImageSettings,
    options: NovelAIOptions,
    request: ImageRequest,
    model: str,
    seed: int,
    n: int,
) -> dict[str, Any]:
    """The exact ``/ai/generate-image`` body."""
    width, height = parse_size(request.size or settings.size)
    width, height = _snap(width), _snap(height)
    steps = settings.steps
    if options.free_only:
        width, height = free_size(width, height)
        steps = min(steps, FREE_STEPS)
    characters: tuple[SceneCharacter, ...] = tuple(c for c in request.characters if c.tags)
    centers = _centers(len(characters))
    parameters: dict[str, Any] = {
        "params_version": 3,
        "width": width,
        "height": height,
        "scale": settings.cfg_scale,
        "sampler": settings.sampler or "k_euler_ancestral",
        "steps": steps,
        "seed": seed,
        "n_samples": n,
        "ucPreset": options.uc_preset,
        "qualityToggle": options.quality_tags,
        "noise_schedule": options.noise_schedule,
        "negative_prompt": request.negative,
        "cfg_rescale": 0,
        "legacy": False,
        "legacy_v3_extend": False,
        "use_coords": False,
        "prefer_brownian": True,
        "characterPrompts": [
            {"prompt": c.tags, "uc": c.negative, "center": center, "enabled": True}
            for c, center in zip(characters, centers, strict=True)
        ],
        "v4_prompt": {
            "caption": {
                "base_caption": request.prompt,
                "char_captions": [
                    {"char_caption": c.tags, "centers": [center]}
                    for c, center in zip(characters, centers, strict=True)
                ],
            },
            "use_coords": False,
            "use_order": True,
        },
        "v4_negative_prompt": {
            "caption": {
                "base_caption": request.negative,
                "char_captions": [
                    {"char_caption": c.negative, "centers": [center]}
                    for c, center in zip(characters, centers, strict=True)
                ],
            },
            "legacy_uc": False,
        },
    }
    parameters.update(settings.extra_body)
    return {"input": request.prompt, "model": model, "action": "generate", "parameters": parameters}


class ZipRefused(ValueError):
    """The ZIP answer broke a cap or is not a ZIP; the message says which."""


def unzip_images(
    data: bytes, *, max_entries: int, max_entry_bytes: int, max_total_bytes: int, max_ratio: float
) -> list[bytes]:
    """The image files of a ZIP answer, in name order, under the caps.

    The caps are checked on the directory first (nothing is inflated for a ZIP that declares
    too much), then again while reading, since a directory can lie."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ZipRefused("the answer is not a ZIP archive") from None
    with archive:
        entries = [e for e in archive.infolist() if not e.is_dir()]
        if len(entries) > max_entries:
            raise ZipRefused(f"the ZIP holds {len(entries)} files (at most {max_entries})")
        declared = sum(e.file_size for e in entries)
        if declared > max_total_bytes:
            raise ZipRefused(
                f"the ZIP would inflate to {declared} bytes (at most {max_total_bytes})"
            )
        out: list[bytes] = []
        total = 0
        for entry in sorted(entries, key=lambda e: e.filename):
            if not entry.filename.lower().endswith(_IMAGE_SUFFIXES):
                continue
            if entry.file_size > max_entry_bytes:
                raise ZipRefused(f"{entry.filename} is {entry.file_size} bytes inflated")
            if entry.compress_size and entry.file_size / entry.compress_size > max_ratio:
                raise ZipRefused(
                    f"{entry.filename} inflates {entry.file_size / entry.compress_size:.0f}-fold "
                    f"(at most {max_ratio:g}): a ZIP bomb?"
                )
            try:
                with archive.open(entry) as handle:
                    content = handle.read(max_entry_bytes + 1)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ZipRefused(f"{entry.filename} cannot be read: {exc}") from None
            total += len(content)
            if len(content) > max_entry_bytes or total > max_total_bytes:
                raise ZipRefused(f"{entry.filename} inflates past its declared size")
            out.append(content)
    if not out:
        raise ZipRefused("the ZIP holds no image")
    return out


class NovelAIBackend:
    """Generates through NovelAI; one instance per run."""

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
        self._options = backend_options(settings, "novelai", NovelAIOptions)
        self._clock, self._retry, self._limiter, self._gate = image_pacing(limits, clock, retry)
        auth = BearerAuth(settings.api_key)
        self._api = ServiceAPI(
            "NovelAI API",
            settings.api_url or DEFAULT_URL,
            settings,
            client,
            self._clock,
            self._retry,
            auth,
        )
        self._account = ServiceAPI(
            "NovelAI account API",
            self._options.account_url,
            settings,
            client,
            self._clock,
            self._retry,
            auth,
        )
        self.summary = ""

    def __repr__(self) -> str:
        return f"NovelAIBackend(url={self._api.base!r})"

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        model = request.model or self._settings.model or INFO.default_model
        per_call = 1 if self._options.free_only else 4
        seed = pick_seed(request.seed, self._settings.seed)
        images: list[GeneratedImage] = []
        with scrubbed(self._api.secret):
            for index, count in enumerate(batches(request.n or self._settings.n, per_call)):
                body = build_payload(
                    self._settings, self._options, request, model, (seed + index) % MAX_SEED, count
                )
                try:
                    images.extend(await self._call(body))
                except ProviderError:
                    if not images:
                        raise
                    log.warning("image_batch_failed", kept=len(images))
                    break  # the images made were paid for: keep them
        return images

    async def _call(self, body: dict[str, Any]) -> list[GeneratedImage]:
        params = body["parameters"]
        log.info(
            "image_request",
            api=self._api.endpoint.host,
            model=body["model"],
            n=params["n_samples"],
            size=f"{params['width']}x{params['height']}",
            characters=len(params["characterPrompts"]),
        )

        async def attempt(n: int) -> bytes:
            await self._gate.wait()
            raw, _headers = await self._api.raw(
                "POST",
                "/ai/generate-image",
                body=body,
                timeout=self._settings.timeout_seconds,
                cap=self._settings.max_response_bytes,
                explain=self._explain,
            )
            return raw

        async with self._limiter:
            raw = await with_retries(attempt, self._retry, self._clock, what="NovelAI API")
        limit = self._settings.max_download_bytes
        try:
            files = await anyio.to_thread.run_sync(
                lambda: unzip_images(
                    raw,
                    max_entries=self._options.max_zip_entries,
                    max_entry_bytes=limit,
                    max_total_bytes=limit * 4,
                    max_ratio=self._options.max_zip_ratio,
                )
            )
        except ZipRefused as exc:
            raise self._api.bad(f"the answer was refused: {exc}", raw[:120]) from None
        return [
            await self._api.image_from_bytes(data, i, len(files)) for i, data in enumerate(files, 1)
        ]

    def _explain(self, status: int, raw: bytes, headers: httpx.Headers) -> ProviderError | None:
        message, _code, _param = error_fields(raw)
        label = self._api.label
        if status == 402:
            return PermanentProviderError(
                f"{label} answered 402: not enough Anlas for this image ({message}); buy Anlas, "
                "or with Opus set [image.novelai] free_only = true",
                provider=label,
                status=status,
            )
        if status == 429:
            # "Concurrent generation is locked": one image at a time per account. Retried with
            # backoff; limits.image_concurrency = 1 avoids it.
            return TransientProviderError(
                f"{label} answered 429: another generation of this account is running "
                f"({message or 'concurrent generation is locked'}), will retry",
                provider=label,
                status=status,
            )
        return None

    async def check(self) -> str | None:
        """``doctor``: the key works (``GET /user/subscription``), and what it may render."""
        with scrubbed(self._api.secret):
            payload = await self._account.json("GET", "/user/subscription", timeout=CHECK_TIMEOUT)
        if not isinstance(payload, dict):
            return None
        tier = payload.get("tier")
        steps = payload.get("trainingStepsLeft")
        anlas = 0
        if isinstance(steps, dict):
            anlas = sum(v for v in steps.values() if isinstance(v, int))
        self.summary = f"subscription tier {tier}, {anlas} Anlas"
        if not payload.get("active"):
            return "the account has no active subscription: every image costs Anlas"
        if self._options.free_only and tier != 3:
            return "free_only needs Opus (tier 3): images will cost Anlas"
        return None


INFO = BackendInfo(
    name="novelai",
    title="NovelAI",
    summary="/ai/generate-image with V4+ per-character captions; a ZIP of PNGs",
    create=NovelAIBackend,
    capabilities=Capabilities(
        size_mode=SizeMode.PIXELS,
        size_multiple=64,
        max_n_per_call=4,
        negative_prompt=True,
        seed=True,
        steps=True,
        sampler=True,
        cost=CostReport.ESTIMATED,
        cost_unit="Anlas",
    ),
    url_hint="https://image.novelai.net (or leave api_url empty)",
    default_url=DEFAULT_URL,
    default_model="nai-diffusion-4-5-full",
    options=NovelAIOptions,
    presets=(
        Preset(
            "novelai-v45-free",
            "NovelAI V4.5 Full (Opus: no Anlas)",
            {
                "backend": "novelai",
                "model": "nai-diffusion-4-5-full",
                "size": "832x1216",
                "steps": 28,
                "cfg_scale": 5.0,
                "novelai": {"free_only": True},
            },
            "a persistent API token from NovelAI's settings (Account > Get Persistent API Token)",
            "https://novelai.net/image",
        ),
    ),
)
