"""Transport shared by both providers: the client, errors from answers, retries, pacing.

Nothing here knows a request shape. It turns HTTP outcomes into the ``daemon.errors`` hierarchy,
retries transient ones with capped exponential backoff and jitter, and paces calls. Time is
injected (:class:`Clock`) so tests never really sleep.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import structlog
from pydantic import SecretStr

from daemon.config import LimitsSettings
from daemon.errors import (
    AuthError,
    ConfigError,
    ContentRefusedError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "BearerAuth",
    "BodyTooLarge",
    "Clock",
    "Endpoint",
    "IntervalGate",
    "RetryPolicy",
    "SystemClock",
    "call_timeout",
    "endpoint_url",
    "error_fields",
    "error_from_response",
    "error_from_transport",
    "image_pacing",
    "looks_like_policy",
    "make_client",
    "parse_retry_after",
    "read_capped",
    "read_within",
    "redact",
    "scrubbed",
    "with_retries",
]

log = structlog.get_logger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_WRITE_TIMEOUT = 30.0
DEFAULT_POOL_TIMEOUT = 10.0
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error answer we read to explain it

T = TypeVar("T")


def make_client(
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    max_connections: int = 16,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """The one shared client: explicit timeouts and no automatic redirects.

    Redirects are off because downloads follow them by hand (each hop is re-checked) and an API
    call that redirects is a configuration error we want to report, not silently follow.
    Callers override the read timeout per request (image renders take minutes).
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout
        ),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=8),
        follow_redirects=False,
        transport=transport,
        verify=verify,
        headers={"User-Agent": "st-imagegen/0.1"},
    )


class Clock(Protocol):
    """Time as the providers see it; a test clock records sleeps instead of waiting."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


@dataclass(frozen=True)
class Endpoint:
    """Which API a call goes to, for messages: ``what`` is "prompt API" or "image API"."""

    what: str
    url: str
    section: str  # config section, named in actionable messages: "text" or "image"
    secret: str = field(default="", repr=False)  # redacted from every excerpt

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def label(self) -> str:
        return f"the {self.what} at {self.host}" if self.host else f"the {self.what}"


def redact(text: str, secret: str) -> str:
    """``text`` with ``secret`` replaced by ``***`` (a value under 4 characters is left alone:
    replacing it everywhere would garble the text, and no real key is that short)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def error_fields(body: bytes) -> tuple[str, str, str]:
    """``(message, code, param)`` from an OpenAI-style ``{"error": {...}}`` body, if any."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", "", ""
    err: Any = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, str):
        return err, "", ""
    if not isinstance(err, dict):
        detail = payload.get("detail") if isinstance(payload, dict) else None
        message = payload.get("message") if isinstance(payload, dict) else None
        text = detail if isinstance(detail, str) else message if isinstance(message, str) else ""
        return text, "", ""
    return (
        str(err.get("message") or ""),
        str(err.get("code") or err.get("type") or ""),
        str(err.get("param") or ""),
    )


_POLICY_WORDS = (
    "content_policy",
    "content policy",
    "safety system",
    "moderation_blocked",
    "safety_violation",
    "nsfw",
)


def looks_like_policy(text: str) -> bool:
    """Does an error text say a content policy blocked the request?"""
    low = text.lower()
    return any(word in low for word in _POLICY_WORDS)


def error_from_response(
    endpoint: Endpoint, status: int, body: bytes, headers: httpx.Headers, clock: Clock
) -> ProviderError:
    """The error for a non-2xx answer, with a message that says what to do."""
    message, code, _param = error_fields(body)
    detail = redact(message or "", endpoint.secret)
    shown = redact(body.decode("utf-8", "replace"), endpoint.secret)
    base = f"{endpoint.label} answered {status}"
    why = f" ({detail})" if detail else ""
    kwargs: dict[str, Any] = {"provider": endpoint.label, "status": status, "body": shown}
    if status in (401, 403):
        return AuthError(
            f"{base}{why}: check [{endpoint.section}] api_key (and that it may use this model)",
            **kwargs,
        )
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"), clock.time())
        hint = f", retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(
            f"{base}{why}: rate limited{hint}", retry_after=retry_after, **kwargs
        )
    if status == 408 or status >= 500:
        return TransientProviderError(f"{base}{why}: a server-side failure, will retry", **kwargs)
    if looks_like_policy(f"{code} {message}"):
        return ContentRefusedError(
            f"{base}: the request was refused by a content policy{why}", **kwargs
        )
    if 300 <= status < 400:
        target = redact(headers.get("location", "?"), endpoint.secret)
        return PermanentProviderError(
            f"{base}: it redirects to {target}; set [{endpoint.section}] api_url to the final URL",
            **kwargs,
        )
    if status == 404:
        return PermanentProviderError(
            f"{base}{why}: check [{endpoint.section}] api_url and model", **kwargs
        )
    return PermanentProviderError(
        f"{base}{why}: the request was rejected; check the [{endpoint.section}] settings",
        **kwargs,
    )


def error_from_transport(endpoint: Endpoint, exc: Exception) -> TransientProviderError:
    """A transient error for a connect failure, timeout or broken connection."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        text = f"{endpoint.label} did not answer in time ({kind})"
    elif isinstance(exc, httpx.ConnectError):
        text = f"cannot connect to {endpoint.label} ({kind}): check [{endpoint.section}] api_url"
    else:
        text = f"the connection to {endpoint.label} failed ({kind})"
    return TransientProviderError(text, provider=endpoint.label)


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed response, at most ``limit`` bytes (longer bodies are cut). For
    small bodies (error answers); a large one is read with :func:`read_within`."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            del body[limit:]
            break
    return bytes(body)


class BodyTooLarge(Exception):
    """A streamed body went over its cap (nothing of it is kept)."""


async def read_within(response: httpx.Response, cap: int) -> bytearray:
    """The body of a streamed response of at most ``cap`` bytes; :class:`BodyTooLarge` past it.

    One growing buffer, never a list of chunks joined (and copied) at the end, and dropped the
    moment the cap is passed: a 1 GiB answer against a 200 MB cap costs about the cap in
    memory, not three times it. The buffer itself is returned (``json.loads`` takes it), so an
    answer just under the cap is not copied either."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > cap:
            del body[:]
            raise BodyTooLarge(f"the answer went over {cap} bytes")
        body += chunk
    return body


def call_timeout(seconds: float) -> httpx.Timeout:
    """Per-request timeouts for a call with an overall deadline of ``seconds``."""
    return httpx.Timeout(seconds, connect=min(seconds, DEFAULT_CONNECT_TIMEOUT))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with equal jitter; only transient errors are retried.

    These are the tries inside one call (``limits.provider_attempts``); a step that still fails
    transiently is rescheduled by the job layer (``limits.max_attempts``), which reads a
    :class:`RateLimitedError`'s ``retry_after``.
    """

    attempts: int = 3
    base: float = 5.0
    cap: float = 600.0
    max_retry_after: float = 300.0
    rng: Callable[[], float] = field(default=random.random, repr=False)

    @classmethod
    def from_limits(cls, limits: LimitsSettings) -> RetryPolicy:
        return cls(
            attempts=limits.provider_attempts,
            base=limits.retry_base_seconds,
            cap=limits.retry_max_seconds,
            max_retry_after=limits.max_retry_after_seconds,
        )

    def delay(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or None to give up now."""
        if attempt >= self.attempts or not error.transient:
            return None
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            # Waiting longer than the cap inside one call would hold a job slot for minutes:
            # give up and let the job layer reschedule with the server's hint.
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        ceiling: float = min(self.cap, self.base * 2.0 ** (attempt - 1))
        # "Equal jitter": at least half the backoff, so retries never bunch at zero.
        return ceiling / 2 + self.rng() * ceiling / 2


async def with_retries(
    call: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    clock: Clock,
    *,
    what: str,
) -> T:
    """Run ``call(attempt)`` until it succeeds, a permanent error, or attempts run out."""
    attempt = 1
    while True:
        try:
            return await call(attempt)
        except ProviderError as exc:
            wait = policy.delay(attempt, exc)
            if wait is None:
                raise
            log.warning(
                "provider_retry",
                api=what,
                attempt=attempt,
                status=exc.status,
                error=str(exc),
                wait_seconds=round(wait, 3),
            )
            await clock.sleep(wait)
            attempt += 1


class IntervalGate:
    """Spaces the starts of calls at least ``interval`` seconds apart."""

    def __init__(self, interval: float, clock: Clock) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = anyio.Lock()
        self._last: float | None = None

    async def wait(self) -> None:
        if self._interval <= 0:
            return
        async with self._lock:
            now = self._clock.monotonic()
            if self._last is not None:
                remaining = self._last + self._interval - now
                if remaining > 0:
                    await self._clock.sleep(remaining)
            self._last = self._clock.monotonic()


def image_pacing(
    limits: LimitsSettings, clock: Clock | None, retry: RetryPolicy | None
) -> tuple[Clock, RetryPolicy, anyio.CapacityLimiter, IntervalGate]:
    """The pacing every image backend shares: its clock, retry policy, the
    ``limits.image_concurrency`` limiter and the ``limits.min_interval_seconds`` gate."""
    clock = clock or SystemClock()
    return (
        clock,
        retry or RetryPolicy.from_limits(limits),
        anyio.CapacityLimiter(limits.image_concurrency),
        IntervalGate(limits.min_interval_seconds, clock),
    )


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <key>`` added at send time, so no plain header dict holds the key."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        secret = self._key.get_secret_value()
        if secret:
            request.headers["Authorization"] = f"Bearer {secret}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


def endpoint_url(api_url: str, route: str, section: str) -> str:
    """The full URL of ``route`` ("chat/completions") from a full URL or a base URL.

    Accepts ``…/v1/<route>``, a base ending in ``/v1`` (or any other API base path, e.g.
    ``/api/v1`` or ``/v1beta/openai``), and a bare host (``/v1`` is assumed); trailing
    slashes are tolerated.
    """
    url = api_url.strip()
    if not url:
        raise ConfigError(
            f"[{section}] api_url is empty: set it in the config file or in "
            f"ST_IMAGEGEN_{section.upper()}__API_URL"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"[{section}] api_url {url!r} is not an http(s) URL (e.g. https://host/v1)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            f"[{section}] api_url must not carry a query, fragment or credentials; "
            f"put the key in [{section}] api_key"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/" + route):
        path = (path or "/v1") + "/" + route
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@contextmanager
def scrubbed(secret: str) -> Iterator[None]:
    """Re-raise any ProviderError with ``secret`` removed from its message, body and provider.

    The errors built here already redact; this guards the public entry points against a key a
    server echoed back in some other place.
    """
    try:
        yield
    except ProviderError as exc:
        if secret and len(secret) >= 4:
            exc.args = tuple(redact(a, secret) if isinstance(a, str) else a for a in exc.args)
            exc.body = redact(exc.body, secret)
            exc.provider = redact(exc.provider, secret)
        raise
