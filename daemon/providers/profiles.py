"""Provider kinds of the images API and their quirks, as data.

A profile says which optional settings a provider takes and under which wire name, whether it
takes ``response_format``, how it streams, where a negative prompt goes, and how many images one
call may ask for. Adding a provider is adding a row, not an ``if``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from urllib.parse import urlsplit

from daemon.config import ImageSettings

__all__ = [
    "AIRFORCE",
    "GENERIC",
    "LOCALAI",
    "OPENAI_DALLE2",
    "OPENAI_DALLE3",
    "OPENAI_GPT_IMAGE",
    "PROFILES",
    "ImageProfile",
    "NegativeStyle",
    "ReferenceStyle",
    "StreamStyle",
    "guess_profile",
    "normalize_aspect_ratio",
    "resolve_profile",
    "unsent_settings",
]

# Every optional image setting, in the order fields are written into a request.
OPTIONAL_SETTINGS = (
    "size",
    "aspect_ratio",
    "resolution",
    "quality",
    "style",
    "output_format",
    "output_compression",
    "background",
    "moderation",
)


class StreamStyle(StrEnum):
    """How ``[image] sse = true`` is asked for."""

    NONE = "none"  # the provider cannot stream: the setting is not sent
    SSE_FLAG = "sse_flag"  # "sse": true (api.airforce, the seed)
    OPENAI = "openai"  # "stream": true (gpt-image partial-image events)


class NegativeStyle(StrEnum):
    """Where a negative prompt goes."""

    NONE = "none"  # not supported: not sent (logged once)
    FIELD = "field"  # its own field, ``negative_field``
    PIPE = "pipe"  # appended to the prompt after "|" (LocalAI)


class ReferenceStyle(StrEnum):
    """How reference images (a character's avatar or chosen pictures) reach the API."""

    NONE = "none"  # not taken: normal generation (logged once)
    EDITS = "edits"  # OpenAI: multipart POST .../images/edits with image[] files (gpt-image)
    FIELD = "field"  # a JSON list of data URLs in ``reference_field`` (gateways)


def _names(*pairs: str | tuple[str, str]) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        setting, wire = (pair, pair) if isinstance(pair, str) else pair
        out[setting] = wire
    return MappingProxyType(out)


@dataclass(frozen=True)
class ImageProfile:
    """One provider kind's request rules."""

    name: str
    fields: Mapping[str, str]  # optional setting -> wire name; settings not listed are not sent
    response_format: bool  # may send "response_format"
    stream: StreamStyle
    negative: NegativeStyle
    negative_field: str = "negative_prompt"
    max_n: int = 10  # most images one call may ask for; more are asked for in several calls
    b64_only: bool = False  # the answer is always b64_json whatever was asked
    ratio_aspect: bool = False  # aspect ratios go as "W:H" (the seed's "square_1_1" converted)
    references: ReferenceStyle = ReferenceStyle.NONE
    reference_field: str = "image_urls"
    notes: tuple[str, ...] = field(default=())


GENERIC = ImageProfile(
    name="generic",
    fields=_names(*OPTIONAL_SETTINGS),
    response_format=True,
    stream=StreamStyle.SSE_FLAG,
    negative=NegativeStyle.FIELD,
    notes=("plain OpenAI shape; every optional setting is sent under its own name when set",),
)
AIRFORCE = ImageProfile(
    name="airforce",
    fields=_names("size", "aspect_ratio", "resolution", "quality"),
    response_format=True,
    stream=StreamStyle.SSE_FLAG,
    negative=NegativeStyle.FIELD,
    ratio_aspect=True,
    references=ReferenceStyle.FIELD,
    reference_field="image_urls",
    notes=("documented field is snake_case aspect_ratio; sse:true sends keepalives, [DONE]",),
)
OPENAI_GPT_IMAGE = ImageProfile(
    name="openai",
    fields=_names(
        "size", "quality", "output_format", "output_compression", "background", "moderation"
    ),
    response_format=False,
    stream=StreamStyle.OPENAI,
    negative=NegativeStyle.NONE,
    b64_only=True,
    references=ReferenceStyle.EDITS,
    notes=(
        "gpt-image rejects response_format and always answers b64_json",
        "references go to /v1/images/edits as image[] files",
    ),
)
OPENAI_DALLE3 = ImageProfile(
    name="openai-dall-e-3",
    fields=_names("size", "quality", "style"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.NONE,
    max_n=1,
    notes=("dall-e-3 makes one image per call",),
)
OPENAI_DALLE2 = ImageProfile(
    name="openai-dall-e-2",
    fields=_names("size"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.NONE,
)
LOCALAI = ImageProfile(
    name="localai",
    fields=_names("size"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.PIPE,
    notes=("negative prompt after '|' in the prompt; always send size (small defaults)",),
)

PROFILES: Mapping[str, ImageProfile] = MappingProxyType(
    {
        p.name: p
        for p in (GENERIC, AIRFORCE, OPENAI_GPT_IMAGE, OPENAI_DALLE3, OPENAI_DALLE2, LOCALAI)
    }
)

# Host suffix -> profile kind, for profile = "auto".
_HOSTS: tuple[tuple[str, str], ...] = (("api.openai.com", "openai"), ("api.airforce", "airforce"))


def guess_profile(api_url: str) -> str:
    """The profile kind for an API URL: by host, else "generic"."""
    host = (urlsplit(api_url.strip()).hostname or "").lower()
    for suffix, kind in _HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return kind
    return "generic"


def resolve_profile(settings: ImageSettings) -> ImageProfile:
    """The profile for these settings (``auto`` guessed from the URL; ``openai`` by model).

    OpenAI's own families differ: dall-e-2 and dall-e-3 have their own shapes, and every other
    model (gpt-image-*, chatgpt-image-*, future ones) follows the gpt-image rules.
    """
    kind = guess_profile(settings.api_url) if settings.profile == "auto" else settings.profile
    if kind == "openai":
        model = settings.model.lower()
        if model.startswith("dall-e-2"):
            return OPENAI_DALLE2
        if model.startswith("dall-e"):
            return OPENAI_DALLE3
        return OPENAI_GPT_IMAGE
    profile = PROFILES[kind]
    if settings.reference_field:
        # A gateway the user knows takes references in a field of its own.
        profile = replace(
            profile, references=ReferenceStyle.FIELD, reference_field=settings.reference_field
        )
    return profile


_SEED_RATIO = re.compile(r"^[a-z]+_(\d+)_(\d+)$")


def normalize_aspect_ratio(value: str) -> str:
    """``"16:9"`` as is; the seed's ``"landscape_16_9"`` / ``"square_1_1"`` become ``"W:H"``."""
    value = value.strip()
    match = _SEED_RATIO.match(value.lower())
    if match:
        return f"{match.group(1)}:{match.group(2)}"
    return value


def unsent_settings(settings: ImageSettings, profile: ImageProfile) -> list[str]:
    """Settings the user set that this profile does not send (to warn about once)."""
    out = [
        name
        for name in OPTIONAL_SETTINGS
        if getattr(settings, name) not in ("", None) and name not in profile.fields
    ]
    if settings.sse and profile.stream is StreamStyle.NONE:
        out.append("sse")
    return out
