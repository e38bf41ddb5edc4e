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
    "DEEPINFRA",
    "GENERIC",
    "LOCALAI",
    "NANOGPT",
    "OPENAI_DALLE2",
    "OPENAI_DALLE3",
    "OPENAI_GPT_IMAGE",
    "POLLINATIONS",
    "PROFILES",
    "TOGETHER",
    "XAI",
    "ImageProfile",
    "NegativeStyle",
    "ReferenceStyle",
    "SizeStyle",
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


class SizeStyle(StrEnum):
    """How the configured WxH ``size`` is sent."""

    SIZE = "size"  # "size": "WxH" (the OpenAI shape)
    WIDTH_HEIGHT = "width_height"  # "width": W, "height": H (Together)
    ASPECT = "aspect"  # "aspect_ratio": the nearest of ``aspect_ratios`` (xAI)


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
    size_style: SizeStyle = SizeStyle.SIZE
    aspect_ratios: tuple[str, ...] = ()  # for SizeStyle.ASPECT
    # Always ask for this response_format, whatever [image] says (URLs that expire, or a
    # service whose URLs are slower than its base64): "" = the configured one.
    response_format_value: str = ""
    b64_wire_name: str = "b64_json"  # what the service calls b64_json in response_format
    default_url: str = ""  # used when [image] api_url is empty (a preset's service)
    key_required: bool = True
    local: bool = False  # a server on the user's machine: nothing is paid


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
    local=True,
    notes=("negative prompt after '|' in the prompt; always send size (small defaults)",),
)

POLLINATIONS = ImageProfile(
    name="pollinations",
    fields=_names("size"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.NONE,
    max_n=1,
    response_format_value="b64_json",
    default_url="https://gen.pollinations.ai/v1",
    key_required=False,
    notes=(
        "POST /v1/images/generations answers the OpenAI shape; a first image needs no key "
        "(sk_/pk_ keys lift the limits)",
    ),
)
XAI_ASPECTS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2")
XAI = ImageProfile(
    name="xai",
    fields=_names("size", "resolution"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.NONE,
    max_n=10,
    size_style=SizeStyle.ASPECT,
    aspect_ratios=XAI_ASPECTS,
    response_format_value="b64_json",
    default_url="https://api.x.ai/v1",
    notes=(
        "grok-imagine takes aspect_ratio and resolution, not size: a WxH is mapped to the "
        "nearest ratio; its b64_json may carry a data: prefix (stripped)",
    ),
)
TOGETHER = ImageProfile(
    name="together",
    fields=_names("size"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.FIELD,
    max_n=4,
    size_style=SizeStyle.WIDTH_HEIGHT,
    response_format_value="b64_json",
    b64_wire_name="base64",
    default_url="https://api.together.xyz/v1",
    notes=("width and height instead of size; response_format is base64 or url",),
)
NANOGPT = ImageProfile(
    name="nanogpt",
    fields=_names("size"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.FIELD,
    max_n=4,
    response_format_value="b64_json",
    default_url="https://nano-gpt.com/v1",
    notes=("its URLs expire after about an hour: base64 is always asked for",),
)
DEEPINFRA = ImageProfile(
    name="deepinfra",
    fields=_names("size"),
    response_format=True,
    stream=StreamStyle.NONE,
    negative=NegativeStyle.NONE,
    max_n=4,
    response_format_value="b64_json",
    default_url="https://api.deepinfra.com/v1/openai",
    notes=("OpenAI shape under /v1/openai; base64 answers",),
)

PROFILES: Mapping[str, ImageProfile] = MappingProxyType(
    {
        p.name: p
        for p in (
            GENERIC,
            AIRFORCE,
            OPENAI_GPT_IMAGE,
            OPENAI_DALLE3,
            OPENAI_DALLE2,
            LOCALAI,
            POLLINATIONS,
            XAI,
            TOGETHER,
            NANOGPT,
            DEEPINFRA,
        )
    }
)

# Host suffix -> profile kind, for profile = "auto".
_HOSTS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    ("api.airforce", "airforce"),
    ("pollinations.ai", "pollinations"),
    ("api.x.ai", "xai"),
    ("together.xyz", "together"),
    ("together.ai", "together"),
    ("nano-gpt.com", "nanogpt"),
    ("deepinfra.com", "deepinfra"),
)


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
