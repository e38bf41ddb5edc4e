"""The image backends, by name: each one's description, capabilities, settings and presets.

A backend module declares one :class:`BackendInfo` (``INFO``) next to its class; adding a
backend is writing that module and adding its ``INFO`` to :data:`BACKENDS` below. Everything
else (the factory, ``doctor``, the engine's capability questions, a settings page) reads this
table, so nothing outside ``daemon.providers`` needs a backend's name.

Each backend may have its own settings section, ``[image.<name>]`` in the config file (or
``ST_IMAGEGEN_IMAGE__<NAME>__<KEY>``), validated by its pydantic model (``BackendInfo.options``).
The records are plain data: ``describe()`` gives all of them as JSON-ready dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import ConfigError
from daemon.providers import a1111, comfyui, gemini, images, novelai, openrouter, queued
from daemon.providers.backend import ImageBackend
from daemon.providers.capabilities import Capabilities
from daemon.providers.http import Clock, RetryPolicy
from daemon.providers.info import BackendInfo, Finding, Preset, backend_options

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "Finding",
    "Preset",
    "backend_info",
    "backend_options",
    "capabilities",
    "check_settings",
    "describe",
    "image_api_url",
    "make_backend",
]


def _table(*infos: BackendInfo) -> Mapping[str, BackendInfo]:
    table = {info.name: info for info in infos}
    assert len(table) == len(infos), "two backends share a name"
    return MappingProxyType(table)


# The registration lines: one per backend module.
BACKENDS: Mapping[str, BackendInfo] = _table(
    images.INFO,
    a1111.INFO,
    comfyui.INFO,
    openrouter.INFO,
    gemini.INFO,
    novelai.INFO,
    *queued.INFOS,
)


def backend_info(name: str) -> BackendInfo:
    """The record for ``[image] backend = name``; raises ConfigError naming the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"[image] backend {name!r} is not known (known: {', '.join(sorted(BACKENDS))})"
        ) from None


def capabilities(settings: ImageSettings) -> Capabilities:
    """What the configured backend can do with these settings."""
    info = backend_info(settings.backend)
    if info.capabilities_for is not None:
        return info.capabilities_for(settings)
    return info.capabilities


def image_api_url(settings: ImageSettings) -> str:
    """``[image] api_url``, or the backend's own default address."""
    return settings.api_url.strip() or backend_info(settings.backend).default_url


def check_settings(settings: ImageSettings) -> None:
    """The backend exists, and every ``[image.<name>]`` section is a known backend's and valid.

    Raises ConfigError (the factory calls this; ``doctor`` reports it)."""
    backend_info(settings.backend)
    for name in settings.model_extra or {}:
        info = BACKENDS.get(name)
        if info is None or info.options is None:
            with_options = sorted(n for n, i in BACKENDS.items() if i.options is not None)
            raise ConfigError(
                f"unknown key 'image.{name}' (backend sections: "
                f"{', '.join('image.' + n for n in with_options)})"
            )
        backend_options(settings, name, info.options)


def make_backend(
    settings: ImageSettings,
    client: httpx.AsyncClient,
    *,
    limits: LimitsSettings | None = None,
    clock: Clock | None = None,
    retry: RetryPolicy | None = None,
) -> ImageBackend:
    """The backend ``settings.backend`` names, sharing ``client``; raises ConfigError."""
    check_settings(settings)
    info = backend_info(settings.backend)
    return info.create(settings, client, limits=limits, clock=clock, retry=retry)


def describe() -> list[dict[str, Any]]:
    """Every backend as JSON-ready data (for a settings page or ``--json`` output)."""
    return [info.as_dict() for info in BACKENDS.values()]
