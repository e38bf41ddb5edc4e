"""Logging: structlog for our code, stdlib logging routed through the same pipeline.

Readable console lines on a terminal, JSON lines otherwise (``log.format``: auto, console, json).
Every record passes :class:`Redactor` last before rendering: values under secret-looking keys
(``api_key``, ``authorization``, ``token``, ``secret``, ``password``, ...), ``SecretStr`` values,
``Bearer`` tokens and every literal registered with :func:`register_secret` are replaced by
``[redacted]``, in the message, its %-arguments, other fields and exception text alike.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from pydantic import SecretStr

from daemon.config import LogSettings

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.jobstate import Job

__all__ = [
    "REDACTED",
    "Redactor",
    "configure_logging",
    "is_secret_key",
    "job_log",
    "redact",
    "register_config_secrets",
    "register_secret",
]

REDACTED = "[redacted]"
HANDLER_NAME = "st-imagegen"
MIN_SECRET_LENGTH = 4
"""Shorter registered values are ignored: redacting every "ab" would garble the logs."""

_SECRET_KEY = re.compile(r"(api_?key|authorization|secret|passw(or)?d|cookie|credential)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_QUERY_KEY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token)=)[^&#\s'\"]+")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(value: str | SecretStr | None) -> None:
    """Redact this literal value wherever it appears in a log record from now on."""
    global _secrets
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not text or len(text) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if text not in _secrets:
            # Longest first, so a secret containing another is replaced whole.
            _secrets = tuple(sorted((*_secrets, text), key=len, reverse=True))


def register_config_secrets(config: Config) -> None:
    """Register the API keys of ``config`` (at start, and for every config applied live,
    before anything logs)."""
    register_secret(config.text.api_key)
    register_secret(config.image.api_key)
    register_secret(config.image.api_auth)


def _forget_secrets() -> None:
    """For tests: clear the registry."""
    global _secrets
    with _lock:
        _secrets = ()


def _redact_text(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _QUERY_KEY.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def is_secret_key(key: str) -> bool:
    """A field name that holds a secret: ``api_key``, ``Authorization``, ``access_token``, ...

    (``max_tokens`` and ``prompt_tokens`` are counts, not secrets.)"""
    name = key.lower().replace("-", "_")
    return bool(_SECRET_KEY.search(name)) or "token" in name.split("_")


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every secret replaced (recursively through dicts, lists, tuples)."""
    if key and is_secret_key(key) and value is not None and value != "":
        return REDACTED
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, BaseException):
        return _redact_text(f"{type(value).__name__}: {value}")
    # Other objects render through repr/str; only replace them when that text leaks.
    shown = repr(value)
    cleaned = _redact_text(shown)
    return value if cleaned == shown else cleaned


class Redactor:
    """structlog processor: redacts every field of the event dict (run it last)."""

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.startswith("_"):
                continue  # structlog's own bookkeeping (record, from_structlog)
            event_dict[key] = redact(event_dict[key], "" if key == "event" else key)
        return event_dict


def _level(settings: LogSettings) -> int:
    return getattr(logging, settings.level.upper(), logging.INFO)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def _use_console(settings: LogSettings, stream: TextIO) -> bool:
    if settings.format == "auto":
        return _isatty(stream)
    return settings.format == "console"


def configure_logging(
    settings: LogSettings | None = None,
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str | SecretStr] = (),
) -> None:
    """Set up structlog and the stdlib root logger to write to ``stream`` (stderr).

    Safe to call again (tests, a CLI command after the config is known): it replaces the
    previous setup.
    """
    settings = settings or LogSettings()
    out = stream if stream is not None else sys.stderr
    for secret in secrets:
        register_secret(secret)
    console = _use_console(settings, out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(
            colors=_isatty(out), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False, default=str)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Exceptions become text first, so the redactor sees (and cleans) them.
            structlog.processors.format_exc_info,
            Redactor(),
            renderer,
        ],
    )
    # No stream given: whatever sys.stderr is when a record is written, not the object it was
    # at set-up (a test's captured stderr is closed after it; a later log line then failed with
    # "I/O operation on closed file").
    handler = logging.StreamHandler(out) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    level = _level(settings)
    root.setLevel(level)
    # Chatty libraries: request lines can carry URLs with keys; keep them at warnings.
    for name in ("httpx", "httpcore", "watchdog", "PIL", "asyncio"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that always writes to the current ``sys.stderr``."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # the current sys.stderr is always used


def job_log(
    job: Job,
    step: str,
    *,
    started: float | None = None,
    duration: float | None = None,
    level: str = "info",
    logger: Any = None,
    **fields: Any,
) -> None:
    """One line for one job step: job id, user, chat, message index, state, duration.

    ``started`` is a ``time.monotonic()`` reading (the duration is computed from it);
    ``fields`` are added as they are (and redacted like everything else).
    """
    if duration is None and started is not None:
        duration = time.monotonic() - started
    log = logger if logger is not None else structlog.get_logger("st_imagegen.jobs")
    line: dict[str, Any] = {
        "job": job.id,
        "user": job.user,
        "chat": job.chat,
        "mesid": job.message_index,
        "state": job.state.value,
    }
    if duration is not None:
        line["duration"] = round(duration, 3)
    line.update(fields)
    getattr(log, level)(f"job {step}", **line)
