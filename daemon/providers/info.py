"""The record each image backend module declares about itself (``INFO``), as plain data.

:class:`BackendInfo` holds a backend's name, title, :class:`~daemon.providers.capabilities.
Capabilities`, settings model (its ``[image.<name>]`` section), defaults and presets; ``registry``
lists them. Kept apart from ``registry`` so the backend modules can use these types without
importing the table that imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import ConfigError
from daemon.providers.backend import ImageBackend
from daemon.providers.capabilities import Capabilities
from daemon.providers.http import Clock, RetryPolicy

__all__ = ["BackendFactory", "BackendInfo", "Finding", "Preset", "backend_options"]

M = TypeVar("M", bound=BaseModel)


class BackendFactory(Protocol):
    """How a backend is built: its settings, the shared client, and the shared pacing."""

    def __call__(
        self,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> ImageBackend: ...


@dataclass(frozen=True)
class Preset:
    """A ready-made ``[image]`` configuration for one service (a settings page's choice)."""

    name: str  # "pollinations"
    title: str  # "Pollinations (free first image)"
    image: Mapping[str, Any]  # [image] keys to set (never a key)
    notes: str = ""
    key_url: str = ""  # where to get a key

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "image": dict(self.image),
            "notes": self.notes,
            "key_url": self.key_url,
        }


@dataclass(frozen=True)
class Finding:
    """One thing ``doctor`` should say about a backend's own configuration."""

    name: str  # "ComfyUI workflow"
    level: str  # "pass" | "warn" | "fail"
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class BackendInfo:
    """Everything known about one backend without building it."""

    name: str  # the value of [image] backend
    title: str  # "OpenRouter"
    summary: str  # one line: what it talks to
    create: BackendFactory = field(repr=False)
    capabilities: Capabilities
    url_hint: str  # what [image] api_url looks like (doctor's advice)
    default_url: str = ""  # used when [image] api_url is empty
    default_model: str = ""  # used when [image] model is empty
    options: type[BaseModel] | None = None  # the [image.<name>] section's model
    presets: tuple[Preset, ...] = ()
    key_required: bool = True
    # Capabilities that depend on the settings (the OpenAI-compatible profiles).
    capabilities_for: Callable[[ImageSettings], Capabilities] | None = field(
        default=None, repr=False
    )
    # Checks of the backend's own configuration files (ComfyUI's workflow), for doctor.
    config_checks: Callable[[ImageSettings, str], list[Finding]] | None = field(
        default=None, repr=False
    )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (the options' JSON schema included)."""
        return {
            "name": self.name,
            "title": self.title,
            "summary": self.summary,
            "capabilities": self.capabilities.as_dict(),
            "url_hint": self.url_hint,
            "default_url": self.default_url,
            "default_model": self.default_model,
            "key_required": self.key_required,
            "options": self.options.model_json_schema() if self.options else None,
            "presets": [p.as_dict() for p in self.presets],
        }


def backend_options(settings: ImageSettings, name: str, model: type[M]) -> M:
    """The ``[image.<name>]`` section, validated by ``model``; raises ConfigError."""
    raw = (settings.model_extra or {}).get(name) or {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key 'image.{name}.{key}'")
            else:
                problems.append(f"image.{name}.{key}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
