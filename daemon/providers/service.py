"""What the hosted image services' own clients share (OpenRouter, Gemini, NovelAI, the queues):
a key sent in the service's own header, calls whose every outcome becomes a ``daemon.errors``
error naming the right ``[image]`` key, the download guard for result URLs, and the checking of
the images they return (with the call's cost attached).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from daemon.config import ImageSettings
from daemon.errors import ProviderError
from daemon.providers.backend import ReferenceImage
from daemon.providers.decode import GeneratedImage, ImageRejected
from daemon.providers.download import DownloadPolicy, Resolver, download_image, system_resolve
from daemon.providers.http import (
    ERROR_BODY_LIMIT,
    BodyTooLarge,
    Clock,
    Endpoint,
    RetryPolicy,
    call_timeout,
    error_from_response,
    error_from_transport,
    read_capped,
    read_within,
    with_retries,
)
from daemon.providers.native import EndpointReplies, checked, decode_b64_image

__all__ = ["HeaderAuth", "ServiceAPI", "data_url", "with_cost"]


class HeaderAuth(httpx.Auth):
    """The key in the service's own header (``x-goog-api-key``, ``apikey``, ``Authorization:
    Key …``), added at send time so no plain header dict holds it."""

    def __init__(self, key: SecretStr, header: str, template: str = "{key}") -> None:
        self._key = key
        self._header = header
        self._template = template

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        secret = self._key.get_secret_value()
        if secret:
            request.headers[self._header] = self._template.format(key=secret)
        yield request

    def __repr__(self) -> str:
        return f"HeaderAuth({self._header}: ***)"


def data_url(reference: ReferenceImage) -> str:
    return f"data:{reference.mime};base64,{base64.b64encode(reference.data).decode('ascii')}"


def with_cost(
    images: Sequence[GeneratedImage], cost: float | None, unit: str
) -> list[GeneratedImage]:
    """The images of one call with its cost shared out among them (so a job's images add up
    to what its calls cost)."""
    if cost is None or not images:
        return list(images)
    share = cost / len(images)
    return [replace(image, cost=share, cost_unit=unit) for image in images]


class ServiceAPI(EndpointReplies):
    """Calls to one hosted service; its errors in the ``daemon.errors`` hierarchy, never with
    the key in them."""

    def __init__(
        self,
        what: str,
        base: str,
        settings: ImageSettings,
        client: httpx.AsyncClient,
        clock: Clock,
        retry: RetryPolicy,
        auth: httpx.Auth | None,
        *,
        headers: dict[str, str] | None = None,
        resolve: Resolver = system_resolve,
    ) -> None:
        self.base = base.rstrip("/")
        self.headers = dict(headers or {})  # sent with every call (a Client-Agent, X-Title)
        self.settings = settings
        self.client = client
        self.clock = clock
        self.retry = retry
        self.auth = auth
        self.endpoint = Endpoint(what, self.base, "image", settings.api_key.get_secret_value())
        self.resolve = resolve
        self.download = DownloadPolicy(
            max_bytes=settings.max_download_bytes,
            trusted_hosts=frozenset({self.endpoint.host.lower()}),
            timeout=settings.timeout_seconds,
        )

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    async def raw(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        timeout: float,  # noqa: ASYNC109 - a per-call deadline that also sets httpx's timeouts
        cap: int,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        explain: Callable[[int, bytes, httpx.Headers], ProviderError | None] | None = None,
    ) -> tuple[bytes, httpx.Headers]:
        """One call; the body (at most ``cap`` bytes, else an error) and headers of a 2xx."""
        try:
            with anyio.fail_after(timeout):
                async with self.client.stream(
                    method,
                    self.url(path),
                    json=body,
                    params=params,
                    headers={**self.headers, **(headers or {})},
                    auth=self.auth or httpx.USE_CLIENT_DEFAULT,
                    timeout=call_timeout(timeout),
                ) as response:
                    status = response.status_code
                    if not 200 <= status < 300:
                        raw = await read_capped(response, ERROR_BODY_LIMIT)
                        told = explain(status, raw, response.headers) if explain else None
                        raise told or error_from_response(
                            self.endpoint, status, raw, response.headers, self.clock
                        )
                    try:
                        body = await read_within(response, cap)
                    except BodyTooLarge:
                        raise self.bad(
                            f"the answer is over {cap} bytes ([image] max_response_bytes)"
                        ) from None
                    got = response.headers
        except (TimeoutError, httpx.TransportError) as exc:
            raise error_from_transport(self.endpoint, exc) from exc
        return bytes(body), got

    async def json(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        timeout: float,  # noqa: ASYNC109 - see raw()
        cap: int = ERROR_BODY_LIMIT * 16,
        params: dict[str, str] | None = None,
        explain: Callable[[int, bytes, httpx.Headers], ProviderError | None] | None = None,
    ) -> Any:
        """One call's parsed JSON answer (``None`` for an empty one)."""
        raw, _headers = await self.raw(
            method, path, body=body, timeout=timeout, cap=cap, params=params, explain=explain
        )
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self.bad(
                f"the answer to {path} is not JSON: check [image] api_url", raw[:300]
            ) from None

    async def image_from_b64(self, value: str, index: int, count: int) -> GeneratedImage:
        try:
            data = decode_b64_image(value, index, self.settings)
            return await checked(data, self.settings)
        except ImageRejected as exc:
            raise self.bad(f"image {index} of {count} was rejected: {exc}") from None

    async def image_from_bytes(self, data: bytes, index: int, count: int) -> GeneratedImage:
        try:
            return await checked(data, self.settings)
        except ImageRejected as exc:
            raise self.bad(f"image {index} of {count} was rejected: {exc}") from None

    async def image_from_url(self, url: str, index: int, count: int) -> GeneratedImage:
        if url.startswith("data:"):
            return await self.image_from_b64(url, index, count)

        async def attempt(n: int) -> bytes:
            return await download_image(self.client, url, self.download, resolve=self.resolve)

        data = await with_retries(attempt, self.retry, self.clock, what="image download")
        return await self.image_from_bytes(data, index, count)
