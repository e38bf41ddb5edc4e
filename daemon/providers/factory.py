"""One place that turns ``[image] backend`` into the image backend the engine and doctor use."""

from __future__ import annotations

import httpx

from daemon.config import ImageSettings, LimitsSettings
from daemon.providers.backend import ImageBackend, ImageRequest, ProgressCallback
from daemon.providers.decode import GeneratedImage
from daemon.providers.http import Clock, RetryPolicy
from daemon.providers.images import ImageGenerator

__all__ = ["OpenAIBackend", "make_image_backend"]


class OpenAIBackend:
    """The OpenAI-compatible generator behind the :class:`ImageBackend` seam.

    Its n comes from ``[image]``; a request's size and model (a style's) replace ``[image]``'s
    for that call, sent only where the profile takes them; it reports no progress.
    """

    def __init__(self, generator: ImageGenerator) -> None:
        self.generator = generator

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


def make_image_backend(
    settings: ImageSettings,
    client: httpx.AsyncClient,
    *,
    limits: LimitsSettings | None = None,
    clock: Clock | None = None,
    retry: RetryPolicy | None = None,
) -> ImageBackend:
    """The backend ``settings.backend`` names, sharing ``client``; raises ConfigError."""
    if settings.backend == "a1111":
        from daemon.providers.a1111 import A1111Backend

        return A1111Backend(settings, client, limits=limits, clock=clock, retry=retry)
    if settings.backend == "comfyui":
        from daemon.providers.comfyui import ComfyUIBackend

        return ComfyUIBackend(settings, client, limits=limits, clock=clock, retry=retry)
    return OpenAIBackend(ImageGenerator(settings, client, limits=limits, clock=clock, retry=retry))
