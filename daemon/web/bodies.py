"""The request bodies of the JSON API, one type per route, and the one reader of a request's
body (:func:`parsed`). The reader checks the envelope (JSON, size, depth, lone surrogates);
each type's ``parse`` takes the decoded JSON object and returns the typed body, or raises
:class:`BodyError` (status, code, message) for the API to answer with. The routes then work
with typed fields, never with a raw dict or the request's raw body: a structure test holds
every other web module to that. Fields a type does not know are ignored (an older or newer
client may send more); a known field of the wrong type or size is refused, and nothing is
changed then."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from starlette.requests import Request

from daemon.configure.keys import SECRET_FILES

__all__ = [
    "MAX_BODY",
    "MAX_CHANGES",
    "MAX_CHAT",
    "MAX_PROMPT",
    "MAX_TEXT",
    "MAX_UPLOAD_BYTES",
    "MAX_VALUE_CHARS",
    "UPLOAD_LIMIT",
    "AcceptBody",
    "BodyError",
    "CancelQueuedBody",
    "CharacterBody",
    "EmptyBody",
    "GenerateBody",
    "PauseBody",
    "PreviewBody",
    "ReferenceBody",
    "RegenBody",
    "SettingsBody",
    "SettingsCheckBody",
    "UserTokenBody",
    "parsed",
]

MAX_BODY = 64 * 1024
"""The largest body a route takes (bytes), unless it says otherwise."""
MAX_PROMPT = 8000
MAX_CHAT = 1000
MAX_CHANGES = 200
"""Settings changed (and secrets given) in one request."""
MAX_KEY_CHARS = 200
MAX_VALUE_CHARS = 20_000
"""The longest text a setting takes (a style's prefix included)."""
MAX_TEXT = 4000
"""A character's tags, negative and style name; the preview's sample reply."""
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
"""Largest reference image accepted from the browser (its base64 is a third larger)."""
UPLOAD_LIMIT = MAX_UPLOAD_BYTES * 4 // 3 + 4096
"""The body of a reference upload: room for one image in base64."""

T = TypeVar("T")


class BodyError(Exception):
    """A body the route cannot take: answered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.key = key  # the setting an "invalid" answer is about


def _invalid(message: str) -> BodyError:
    return BodyError(422, "invalid", message)


# --- the reader ---------------------------------------------------------------------------------


async def parsed(
    request: Request, parse: Callable[[dict[str, Any]], T], *, limit: int = MAX_BODY
) -> T:
    """The route's typed body: the envelope checked here (415 not JSON, 413 over ``limit``
    bytes, 400 not a JSON object or too deep, 422 a lone surrogate), the fields by ``parse``
    (its own 422s). No body at all is the empty object."""
    return parse(await _read_object(request, limit))


async def _read_object(request: Request, limit: int) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise BodyError(415, "json_required", "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise BodyError(413, "too_large", f"the body is larger than {limit} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise BodyError(413, "too_large", f"the body is larger than {limit} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BodyError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BodyError(400, "bad_json", "the body must be a JSON object")
    if _unencodable(data):
        raise BodyError(
            422,
            "unencodable",
            "the body holds text that cannot be stored (a lone surrogate such as \\ud800: half "
            "of an emoji cut in two?)",
        )
    return data


def _unencodable(data: Any) -> bool:
    """Does any text in ``data`` (keys too) hold a lone surrogate, which no file takes?"""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


# --- the pieces ---------------------------------------------------------------------------------


def _optional_text(data: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _invalid(f"{key} is a text of at most {limit} characters")
    return value


def _whole_number(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{key} must be a whole number")
    return value


def _chat_path(data: dict[str, Any]) -> str | None:
    chat = data.get("chat")
    if chat is not None and (not isinstance(chat, str) or not chat or len(chat) > MAX_CHAT):
        raise _invalid("chat must be a chat path")
    return chat


@dataclass(frozen=True, slots=True)
class EmptyBody:
    """Reject, restore, cancel: nothing to say (an empty object, or no body)."""

    @classmethod
    def parse(cls, data: dict[str, Any]) -> EmptyBody:
        return cls()


@dataclass(frozen=True, slots=True)
class AcceptBody:
    """``{"keep"?: [1, 3]}``: the image numbers to keep (all when absent)."""

    keep: tuple[int, ...] | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> AcceptBody:
        keep = data.get("keep")
        if keep is None:
            return cls(None)
        if (
            not isinstance(keep, list)
            or not keep
            or any(isinstance(n, bool) or not isinstance(n, int) for n in keep)
        ):
            raise _invalid("keep is a list of image numbers, like [1, 3]")
        return cls(tuple(keep))

    def check_against(self, job_id: str, images: int) -> None:
        """The numbers must name images the job has (when it has any)."""
        bad = [n for n in self.keep or () if not 1 <= n <= images]
        if bad and images:
            raise _invalid(f"job {job_id} has images 1..{images}; no image {bad[0]}")


@dataclass(frozen=True, slots=True)
class RegenBody:
    """``{"prompt"?: text}``: regenerate with this prompt instead of the job's."""

    prompt: str | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RegenBody:
        prompt = data.get("prompt")
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt.strip():
                raise _invalid("prompt must be a non-empty text")
            if len(prompt) > MAX_PROMPT:
                raise _invalid(f"prompt is longer than {MAX_PROMPT} characters")
        return cls(prompt)


@dataclass(frozen=True, slots=True)
class GenerateBody:
    """``{"chat"?, "chat_file"?, "mesid"?, "force"?}``: which reply (``generate``'s forms)."""

    chat: str | None
    chat_file: str | None
    mesid: int | None
    force: bool

    @classmethod
    def parse(cls, data: dict[str, Any]) -> GenerateBody:
        chat, chat_file = data.get("chat"), data.get("chat_file")
        for key, value in (("chat", chat), ("chat_file", chat_file)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise _invalid(f"{key} must be a non-empty text")
            if isinstance(value, str) and ("\x00" in value or len(value) > MAX_CHAT):
                raise BodyError(400, "bad_chat", f"{key} is not a chat name")
        mesid = _whole_number(data, "mesid")
        if mesid is not None and mesid < 0:
            raise _invalid("mesid starts at 0")
        force = data.get("force", False)
        if not isinstance(force, bool):
            raise _invalid("force is true or false")
        if isinstance(chat, str) and (Path(chat).is_absolute() or chat.startswith(("~", "."))):
            raise BodyError(400, "bad_chat", "give the chat relative to the data root, or a name")
        return cls(chat, chat_file, mesid, force)


@dataclass(frozen=True, slots=True)
class CancelQueuedBody:
    """``{"chat"?: path}``: cancel the queued jobs of one chat (of every chat when absent)."""

    chat: str | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> CancelQueuedBody:
        return cls(_chat_path(data))


@dataclass(frozen=True, slots=True)
class PauseBody:
    """``{"paused": bool, "chat"?: path, "chat_file"?: ST's chat id}``: the pause switch, for
    every chat or one (named by its path, or by the id the extension knows)."""

    paused: bool
    chat: str | None
    chat_file: str | None = None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PauseBody:
        paused = data.get("paused")
        if not isinstance(paused, bool):
            raise _invalid("paused is true or false")
        chat = _chat_path(data)
        chat_file = data.get("chat_file")
        if chat is None and chat_file is not None:
            if not isinstance(chat_file, str) or not chat_file or len(chat_file) > MAX_CHAT:
                raise _invalid("chat_file must be a chat id")
            return cls(paused, None, chat_file)
        return cls(paused, chat)


@dataclass(frozen=True, slots=True)
class UserTokenBody:
    """``{"handles": [handle, ...] | handle, "label"?: text}``: a new user token."""

    handles: tuple[str, ...]
    label: str

    @classmethod
    def parse(cls, data: dict[str, Any]) -> UserTokenBody:
        handles = data.get("handles")
        if isinstance(handles, str):
            handles = [handles]
        if (
            not isinstance(handles, list)
            or not handles
            or not all(isinstance(h, str) for h in handles)
        ):
            raise _invalid("handles is a list of SillyTavern user handles")
        label = data.get("label", "")
        if not isinstance(label, str):
            raise _invalid("label is a text")
        return cls(tuple(handles), label)


# --- the settings page ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettingsBody:
    """``{"changes"?: {"image.model": value, ...}, "secrets"?: {"image.api_key": text}}``:
    settings to save (``null`` removes one), and keys given but never returned. The values are
    checked by the config writer (a 422 naming the key); here, their shape and size."""

    changes: dict[str, Any]
    secrets: dict[str, str]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SettingsBody:
        changes = data.get("changes", {})
        secrets = data.get("secrets", {})
        if not isinstance(changes, dict) or not isinstance(secrets, dict):
            raise _invalid("changes and secrets are JSON objects")
        if len(changes) + len(secrets) > MAX_CHANGES:
            raise BodyError(413, "too_large", f"at most {MAX_CHANGES} changes at once")
        for key, value in [*changes.items(), *secrets.items()]:
            if len(key) > MAX_KEY_CHARS:
                raise _invalid("keys are dotted names like image.model")
            if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
                raise _invalid(f"{key} is longer than {MAX_VALUE_CHARS} characters")
        for key, value in secrets.items():
            if key not in SECRET_FILES or not isinstance(value, str):
                raise _invalid(f"{key} is not a key that can be given here")
        return cls(changes, secrets)


@dataclass(frozen=True, slots=True)
class SettingsCheckBody:
    """``{"section": "image"|"text", "changes"?, "secrets"?}``: test a section, or list its
    models, on the form's unsaved values."""

    section: Literal["image", "text"]
    settings: SettingsBody

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SettingsCheckBody:
        section = data.get("section")
        if section == "image" or section == "text":
            return cls(section, SettingsBody.parse(data))
        raise _invalid("section is image or text")


@dataclass(frozen=True, slots=True)
class PreviewBody:
    """``{"style"?: {"prefix"?, "suffix"?, "negative"?}, "reply"?: text}``: what a style
    (unsaved) sends for a sample reply (the shipped one when absent or empty)."""

    prefix: str
    suffix: str
    negative: str
    reply: str | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PreviewBody:
        style = data.get("style") or {}
        reply = data.get("reply") or None
        if not isinstance(style, dict) or (
            reply is not None and (not isinstance(reply, str) or len(reply) > MAX_TEXT)
        ):
            raise _invalid(f"style is an object, reply a text of at most {MAX_TEXT}")
        prefix, suffix, negative = (
            (_optional_text(style, key, MAX_VALUE_CHARS) or "").strip() for key in _STYLE
        )
        return cls(prefix, suffix, negative, reply)


_STYLE = ("prefix", "suffix", "negative")


# --- the characters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CharacterBody:
    """``{"appearance"?, "negative"?, "style"?: text, "references"?: "on"|"off"|"default"}``:
    what to change of a character (an absent field stays as it is; an empty style is the
    default one)."""

    appearance: str | None
    negative: str | None
    style: str | None
    references: Literal["on", "off", "default"] | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> CharacterBody:
        appearance = _optional_text(data, "appearance", MAX_TEXT)
        negative = _optional_text(data, "negative", MAX_TEXT)
        style = _optional_text(data, "style", MAX_TEXT)
        refs = data.get("references")
        if refs is None or refs == "on" or refs == "off" or refs == "default":
            return cls(appearance, negative, style, refs)
        raise _invalid("references is on, off or default")


@dataclass(frozen=True, slots=True)
class ReferenceBody:
    """``{"data_base64": "…"}``: one reference image, at most :data:`MAX_UPLOAD_BYTES` (read
    with ``limit=UPLOAD_LIMIT``); whether it is an image is the character store's check."""

    image: bytes

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ReferenceBody:
        encoded = data.get("data_base64")
        if not isinstance(encoded, str):
            raise _invalid("data_base64 holds the image")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("data_base64 is not base64") from None
        if len(raw) > MAX_UPLOAD_BYTES:
            raise BodyError(413, "too_large", f"the image is larger than {MAX_UPLOAD_BYTES} bytes")
        return cls(raw)
