"""The image-generator seam: what every image backend (OpenAI-compatible, A1111, ComfyUI) takes
and gives, so the engine (jobs, approval, commit, styles, swipes) never knows which one runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from daemon.providers.decode import GeneratedImage

__all__ = [
    "ImageBackend",
    "ImageRequest",
    "Progress",
    "ProgressCallback",
    "ReferenceImage",
    "SceneCharacter",
]


@dataclass(frozen=True, slots=True)
class ReferenceImage:
    """An image the backend may use as a visual reference (a character's avatar or chosen file)."""

    data: bytes
    mime: str  # "image/png", "image/jpeg", "image/webp"
    name: str = "reference.png"

    def __repr__(self) -> str:
        return f"ReferenceImage({self.name!r}, {self.mime}, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class SceneCharacter:
    """A character in the picture, for backends that caption each one (NovelAI V4+)."""

    name: str
    tags: str  # appearance tags
    negative: str = ""


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One generation: the prompt plus per-job overrides of the configured defaults.

    ``None`` means "the backend's configured value" (``image.size``, ``image.model``, ``image.n``).
    """

    prompt: str
    negative: str = ""
    size: str | None = None
    model: str | None = None
    n: int | None = None
    seed: int | None = None  # None: the backend picks one (and reports it if it can)
    references: tuple[ReferenceImage, ...] = field(default=())
    characters: tuple[SceneCharacter, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running generation is (backends that can tell)."""

    fraction: float  # 0.0 .. 1.0
    text: str = ""  # e.g. "step 8/20"


ProgressCallback = Callable[[Progress], Awaitable[None]]


class ImageBackend(Protocol):
    """What the engine calls. Implementations raise the provider errors of ``daemon.errors``
    (transient ones are retried by the job layer, permanent ones fail the job)."""

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]: ...

    async def check(self) -> str | None:
        """A tiny request proving the backend answers (``doctor``); raises on failure, returns a
        warning to show (or ``None``) when it answers but something looks off."""
        ...
