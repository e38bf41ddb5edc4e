"""One place that turns ``[image] backend`` into the image backend the engine and doctor use."""

from __future__ import annotations

import httpx

from daemon.config import ImageSettings, LimitsSettings
from daemon.providers.backend import ImageBackend
from daemon.providers.http import Clock, RetryPolicy
from daemon.providers.images import OpenAIBackend
from daemon.providers.registry import make_backend

__all__ = ["OpenAIBackend", "make_image_backend"]


def make_image_backend(
    settings: ImageSettings,
    client: httpx.AsyncClient,
    *,
    limits: LimitsSettings | None = None,
    clock: Clock | None = None,
    retry: RetryPolicy | None = None,
) -> ImageBackend:
    """The backend ``settings.backend`` names (see ``registry``), sharing ``client``; raises
    ConfigError for an unknown backend or an invalid ``[image.<backend>]`` section."""
    return make_backend(settings, client, limits=limits, clock=clock, retry=retry)
