"""What the local image servers (AUTOMATIC1111/Forge, ComfyUI) share: their base URL, auth, JSON
calls that turn every outcome into the ``daemon.errors`` hierarchy, sizes and seeds, and the
checking of the images they return.

Both servers are usually on loopback or the LAN: their own host is trusted for downloads (like
the OpenAI-compatible API's), any other private address is not.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
import httpx

from daemon.config import ImageSettings
from daemon.errors import AuthError, BadResponseError, ConfigError, ProviderError
from daemon.providers.decode import GeneratedImage, ImageRejected, check_image
from daemon.providers.download import DownloadPolicy
from daemon.providers.http import (
    ERROR_BODY_LIMIT,
    BearerAuth,
    BodyTooLarge,
    Clock,
    Endpoint,
    call_timeout,
    error_from_response,
    error_from_transport,
    read_capped,
    read_within,
    redact,
)

__all__ = [
    "DEFAULT_SIZE",
    "MAX_SEED",
    "NativeAPI",
    "auth_headers",
    "decode_b64_image",
    "native_auth",
    "native_base_url",
    "parse_size",
    "pick_seed",
    "while_running",
]

T = TypeVar("T")

DEFAULT_SIZE = (1024, 1024)
"""Width and height when ``image.size`` is empty."""

MAX_SEED = 2**32 - 1
"""Random seeds stay below this (A1111 takes 32 bits; ComfyUI takes more, but ST uses 32)."""

_SIZE = re.compile(r"^\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*$", re.IGNORECASE)
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


def native_base_url(api_url: str, backend: str, strip: tuple[str, ...] = ()) -> str:
    """The server's base URL (scheme, host, port, any proxy path) from ``image.api_url``.

    A pasted endpoint (``…/sdapi/v1/txt2img``, ``…/prompt``) is cut back to the base: users copy
    whatever URL their browser shows.
    """
    url = api_url.strip()
    if not url:
        raise ConfigError(
            f"[image] api_url is empty: set it to the {backend} server's address "
            "(or ST_IMAGEGEN_IMAGE__API_URL)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"[image] api_url {url!r} is not an http(s) URL (e.g. http://127.0.0.1:7860)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            "[image] api_url must not carry a query, fragment or credentials; "
            'put "user:password" in [image] api_auth'
        )
    path = parts.path.rstrip("/")
    for suffix in strip:
        if path.endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
            break
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def native_auth(settings: ImageSettings) -> httpx.Auth | None:
    """HTTP basic auth from ``api_auth`` ("user:password"), else a Bearer ``api_key``, else none."""
    auth = settings.api_auth.get_secret_value()
    if auth:
        user, sep, password = auth.partition(":")
        if not sep:
            raise ConfigError('[image] api_auth must be "user:password" (as A1111\'s --api-auth)')
        return httpx.BasicAuth(user, password)
    if settings.api_key.get_secret_value():
        return BearerAuth(settings.api_key)
    return None


def auth_headers(settings: ImageSettings) -> dict[str, str]:
    """The same auth as :func:`native_auth` as a header, for the WebSocket handshake."""
    auth = settings.api_auth.get_secret_value()
    if auth:
        native_auth(settings)  # the same "user:password" check
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    key = settings.api_key.get_secret_value()
    return {"Authorization": f"Bearer {key}"} if key else {}


def native_secret(settings: ImageSettings) -> str:
    """The secret to redact from anything shown: the password of ``api_auth``, else the key."""
    auth = settings.api_auth.get_secret_value()
    if auth:
        return auth.partition(":")[2] or auth
    return settings.api_key.get_secret_value()


def parse_size(size: str | None) -> tuple[int, int]:
    """``(width, height)`` from "WxH" (empty: 1024x1024); raises ConfigError."""
    if not size or not size.strip():
        return DEFAULT_SIZE
    match = _SIZE.match(size)
    if not match:
        raise ConfigError(f"[image] size {size!r} is not WIDTHxHEIGHT (e.g. 832x1216)")
    width, height = int(match.group(1)), int(match.group(2))
    if not (64 <= width <= 8192 and 64 <= height <= 8192):
        raise ConfigError(f"[image] size {size!r}: each side must be 64 to 8192 pixels")
    return width, height


def pick_seed(wanted: int | None, configured: int, rng: random.Random | None = None) -> int:
    """The request's seed, else the configured one, else (-1) a new random one."""
    for seed in (wanted, configured):
        if seed is not None and seed >= 0:
            return seed
    return (rng or random.SystemRandom()).randrange(0, MAX_SEED)


def decode_b64_image(value: str, index: int, settings: ImageSettings) -> bytes:
    """The bytes of one base64 image (a data: URL prefix allowed), under the download cap."""
    limit = settings.max_download_bytes
    text = "".join(_DATA_URL.sub("", value.strip(), count=1).split())
    if len(text) * 3 // 4 > limit:
        raise ImageRejected(
            f"image {index} is over the limit of {limit} bytes ([image] max_download_bytes)"
        )
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected(f"image {index} is not valid base64") from None


async def checked(data: bytes, settings: ImageSettings) -> GeneratedImage:
    """Pillow's full check (magic bytes, size, bombs) off the event loop."""
    return await anyio.to_thread.run_sync(check_image, data, settings.max_pixels)


async def while_running(
    main: Callable[[], Awaitable[T]], side: Callable[[], Coroutine[Any, Any, None]] | None
) -> T:
    """``await main()`` with ``side()`` (a progress poller) running beside it until it ends.

    ``main``'s own error is raised as itself, not in an exception group: callers and the retry
    loop match on the provider error classes.
    """
    if side is None:
        return await main()
    failure: list[Exception] = []
    result: list[T] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(side)
        try:
            result.append(await main())
        except Exception as exc:
            failure.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return result[0]


class EndpointReplies:
    """What an image API client says about itself: its label, its secret (for redaction) and
    a bad answer as a :class:`BadResponseError` with the secret taken out."""

    endpoint: Endpoint

    @property
    def label(self) -> str:
        return self.endpoint.label

    @property
    def secret(self) -> str:
        return self.endpoint.secret

    def bad(
        self, text: str, body: str | bytes | None = None, status: int = 200
    ) -> BadResponseError:
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        return BadResponseError(
            f"{self.label}: {text}",
            provider=self.label,
            status=status,
            body=redact(body or "", self.secret),
        )


class NativeAPI(EndpointReplies):
    """JSON calls to one local server: its errors in the ``daemon.errors`` hierarchy, with fixes
    that name the right keys (``api_auth``, ``api_url``), never a secret."""

    def __init__(
        self,
        what: str,
        base: str,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        clock: Clock,
    ) -> None:
        self.base = base
        self.settings = settings
        self.client = client
        self.clock = clock
        self.auth = native_auth(settings)
        self.endpoint = Endpoint(what, base, "image", native_secret(settings))
        host = self.endpoint.host.lower()
        self.download = DownloadPolicy(
            max_bytes=settings.max_download_bytes,
            trusted_hosts=frozenset({host}),
            timeout=settings.timeout_seconds,
        )

    def error(self, status: int, raw: bytes, headers: httpx.Headers) -> ProviderError:
        """The error for a non-2xx answer (401/403 name api_auth, not api_key)."""
        if status in (401, 403):
            return AuthError(
                f"{self.label} answered {status}: check [image] api_auth "
                '("user:password", as the server\'s --api-auth) or api_key',
                provider=self.label,
                status=status,
                body=redact(raw.decode("utf-8", "replace"), self.secret),
            )
        return error_from_response(self.endpoint, status, raw, headers, self.clock)

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        timeout: float,  # noqa: ASYNC109 - a per-call deadline that also sets httpx's timeouts
        cap: int = ERROR_BODY_LIMIT * 16,
        params: dict[str, str] | None = None,
        explain: Callable[[int, bytes], ProviderError | None] | None = None,
    ) -> Any:
        """``method`` ``base + path`` with a JSON ``body``; the parsed JSON answer (``None`` for an
        empty one). Raises ProviderError (transport failures are transient); ``explain`` may
        turn an error answer (status, whole body) into a more telling error."""
        url = self.base + path
        try:
            with anyio.fail_after(timeout):
                async with self.client.stream(
                    method,
                    url,
                    json=body,
                    params=params,
                    auth=self.auth or httpx.USE_CLIENT_DEFAULT,
                    timeout=call_timeout(timeout),
                ) as response:
                    status = response.status_code
                    if not 200 <= status < 300:
                        raw = await read_capped(response, ERROR_BODY_LIMIT)
                        told = explain(status, raw) if explain is not None else None
                        raise told or self.error(status, raw, response.headers)
                    try:
                        body = await read_within(response, cap)
                    except BodyTooLarge:
                        raise self.bad(
                            f"the answer to {path} is over {cap} bytes ([image] max_response_bytes)"
                        ) from None
        except (TimeoutError, httpx.TransportError) as exc:
            raise error_from_transport(self.endpoint, exc) from exc
        if not body or body.isspace():
            return None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise self.bad(
                f"the answer to {path} is not JSON: check [image] api_url and backend",
                bytes(body[:300]),
            ) from None
