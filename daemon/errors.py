"""One exception hierarchy for the whole daemon.

::

    StImagegenError
    ├── ConfigError                   bad or missing configuration (key named)
    ├── TavernError                   SillyTavern's files
    │   ├── NotADataRootError         the given folder is not an ST data root
    │   ├── UnsafePathError           a hostile or out-of-tree name
    │   ├── ChatReadError             a chat cannot be read (missing, directory, too big, ...)
    │   ├── ChatConflictError         the chat changed under an edit: retry from a fresh read
    │   ├── ChatWriteError            an edit or image write failed (disk full, read-only, ...)
    │   ├── MessageNotFoundError      the target message is gone or changed
    │   └── CardError                 a character card cannot be read
    ├── ProviderError                 an outside API failed (provider, status, body excerpt)
    │   ├── TransientProviderError    worth retrying: connect errors, 408, 429, 5xx, timeouts
    │   │   └── RateLimitedError      429, with the server's Retry-After if any
    │   └── PermanentProviderError    never retried: 400, 401, 403, 404, policy, bad answers
    │       ├── AuthError             401/403: the key is wrong or missing
    │       ├── ContentRefusedError   refused by a content policy or by the model
    │       └── BadResponseError      an answer we cannot use (empty, not an image, lying types)
    ├── StoreError                    the SQLite state store
    └── JobError                      a job action that cannot be done (unknown, superseded, ...)

Messages are written for the user: they say what failed and what to do. They never contain
secrets: provider errors carry only a short, redacted excerpt of the response body.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousError",
    "AuthError",
    "BadResponseError",
    "CardError",
    "ChatConflictError",
    "ChatReadError",
    "ChatWriteError",
    "ConfigError",
    "ContentRefusedError",
    "ExtensionError",
    "JobError",
    "JobStateError",
    "MessageNotFoundError",
    "NotADataRootError",
    "NotFoundError",
    "PermanentProviderError",
    "ProviderError",
    "RateLimitedError",
    "StImagegenError",
    "StoreError",
    "TavernError",
    "TransientProviderError",
    "UnsafePathError",
]

_EXCERPT_CHARS = 300


class StImagegenError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(StImagegenError):
    """The configuration is invalid; the message names the key (and ``line``, the config
    file's line, when a TOML syntax error is at a known place)."""

    def __init__(self, message: str, *, line: int | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.key = key


class TavernError(StImagegenError):
    """A problem with SillyTavern's files."""


class NotADataRootError(TavernError):
    """The folder is not a SillyTavern data root."""


class UnsafePathError(TavernError):
    """A path escapes the data root or has a hostile name."""


class ImageFolderOutsideError(UnsafePathError):
    """An image folder leads out of the data root (a symlink); refused, the job waits."""


class ChatReadError(TavernError):
    """A chat file cannot be read."""


class ChatConflictError(TavernError):
    """The chat changed between our read and our replace; retry from a fresh read."""


class ChatWriteError(TavernError):
    """Writing a chat or an image failed; nothing was changed."""


class MessageNotFoundError(TavernError):
    """The message an edit targets is gone or has a new revision."""


class CardError(TavernError):
    """A character card cannot be read."""


class StoreError(StImagegenError):
    """The state store failed."""


class JobError(StImagegenError):
    """A job action cannot be done (unknown id, ambiguous prefix, wrong state)."""


class NotFoundError(JobError):
    """No job, chat or character by that name (the web answers 404)."""


class AmbiguousError(JobError):
    """A name or id prefix matches more than one job or chat (the web answers 400)."""


class JobStateError(JobError):
    """The job's state does not allow the action (the web answers 409)."""


class ExtensionError(StImagegenError):
    """The SillyTavern extension cannot be installed or removed where asked."""


def excerpt(body: str | bytes | None, limit: int = _EXCERPT_CHARS) -> str:
    """A short, single-line excerpt of a response body, safe to show and log."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ProviderError(StImagegenError):
    """An outside API call failed.

    ``provider`` names the API ("prompt API" or "image API" plus its host), ``status`` is the HTTP
    status if there was one, ``body`` a short excerpt of the answer.
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        body: str | bytes | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.body = excerpt(body)
        super().__init__(message)


class TransientProviderError(ProviderError):
    """Worth retrying later: connect errors, timeouts, 408, 429, 5xx."""

    transient = True


class RateLimitedError(TransientProviderError):
    """429 Too Many Requests; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = 429,
        body: str | bytes | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, body=body)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying will not help: 400, 401, 403, 404, content policy, unusable answers."""


class AuthError(PermanentProviderError):
    """401/403: the API key is missing or wrong."""


class ContentRefusedError(PermanentProviderError):
    """The provider or the model refused the content."""


class BadResponseError(PermanentProviderError):
    """The answer cannot be used: empty, malformed, not an image, or lying about its type."""
