"""The request bodies of the JSON API, one type per route: each ``parse`` takes the decoded
JSON object and returns the typed body, or raises :class:`BodyError` (status, code, message)
for the API to answer with. The routes then work with typed fields, never with a raw dict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_CHAT",
    "MAX_PROMPT",
    "AcceptBody",
    "BodyError",
    "CancelQueuedBody",
    "EmptyBody",
    "GenerateBody",
    "PauseBody",
    "RegenBody",
    "UserTokenBody",
]

MAX_PROMPT = 8000
MAX_CHAT = 1000


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
