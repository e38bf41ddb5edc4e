"""What st-imagegen reads from a user's ``settings.json``: personas and the image extension's
per-character prompts.

SillyTavern keeps both there: ``power_user.personas`` (avatar file -> name),
``power_user.persona_descriptions`` (avatar file -> ``{"description": ...}``), ``user_avatar``
(the persona in use), and ``extension_settings.sd.character_prompts`` /
``character_negative_prompts`` (card file stem -> tags) for the prompts a user typed into the
built-in image extension without sharing them in the card. Read-only; a missing or broken file
reads as empty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from daemon.tavern import layout

__all__ = [
    "MAX_SETTINGS_BYTES",
    "Persona",
    "avatar_of",
    "persona_for",
    "read_user_settings",
    "sd_prompts_for",
]

MAX_SETTINGS_BYTES = 32 * 1024 * 1024
_cache: dict[Path, tuple[int, int, dict[str, Any]]] = {}
_PERSONA_FOLDER = re.compile(r"^/?User Avatars/", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Persona:
    """The user's persona: ``avatar`` is its file name in ``User Avatars/``."""

    avatar: str
    name: str
    description: str


def read_user_settings(root: Path, user: str) -> dict[str, Any]:
    """``<root>/<user>/settings.json`` parsed (cached by mtime and size), or ``{}``."""
    path = root / layout._plain_name(user, "user") / "settings.json"
    try:
        st = path.stat()
    except OSError:
        return {}
    cached = _cache.get(path)
    if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
        return cached[2]
    obj: Any = None
    try:
        with path.open("rb") as fh:
            obj = json.loads(fh.read(MAX_SETTINGS_BYTES).decode("utf-8", "replace"))
    except (OSError, ValueError, RecursionError):
        obj = None
    settings = obj if isinstance(obj, dict) else {}
    _cache[path] = (st.st_mtime_ns, st.st_size, settings)
    return settings


def _dict(obj: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def sd_prompts_for(settings: dict[str, Any], stem: str) -> tuple[str, str]:
    """``(positive, negative)`` the image extension keeps for the card ``stem``."""
    sd = _dict(settings, "extension_settings", "sd")
    positive = _dict(sd, "character_prompts").get(stem)
    negative = _dict(sd, "character_negative_prompts").get(stem)
    return (
        positive.strip() if isinstance(positive, str) else "",
        negative.strip() if isinstance(negative, str) else "",
    )


def avatar_of(force_avatar: str) -> str:
    """The persona file a user message's ``force_avatar`` names ("" if none).

    ST 1.14+ writes ``/thumbnail?type=persona&file=user-default.png``, older versions
    ``User Avatars/user-default.png``.
    """
    value = force_avatar.strip()
    if not value:
        return ""
    if "?" in value:
        query = parse_qs(urlsplit(value).query)
        files = query.get("file") or []
        return Path(unquote(files[0])).name if files else ""
    return Path(_PERSONA_FOLDER.sub("", unquote(value))).name


def persona_for(settings: dict[str, Any], avatar: str = "") -> Persona | None:
    """The persona ``avatar`` names, else the one in use; ``None`` without a description."""
    power = _dict(settings, "power_user")
    chosen = avatar or str(settings.get("user_avatar") or "")
    names = _dict(power, "personas")
    described = _dict(power, "persona_descriptions").get(chosen)
    description = ""
    if isinstance(described, dict) and isinstance(described.get("description"), str):
        description = described["description"]
    elif not avatar and isinstance(power.get("persona_description"), str):
        description = power["persona_description"]  # ST before per-persona descriptions
    name = names.get(chosen)
    if not isinstance(name, str) or not name:
        name = str(settings.get("username") or power.get("default_persona_name") or "")
    if not description.strip():
        return None
    return Persona(avatar=chosen, name=name, description=description.strip())
