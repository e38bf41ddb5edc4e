"""Guarded downloads of image URLs that an images API returned.

Provider URLs expire (OpenAI and NanoGPT: about an hour), so results are fetched at once. A URL
comes from a remote answer, so every hop is checked before we connect: http(s) only, and the
host's addresses must be public unless the host is trusted (the image API's own host, which local
servers such as LocalAI use for their results, or one listed in ``[image] allow_private_urls``).
Redirects are followed by hand, each hop re-checked, at most ``max_redirects``. Bodies are
streamed with a byte cap, and the content type and magic bytes are checked.

We resolve the host ourselves, then httpx resolves it again to connect: a DNS answer that
changes in between (rebinding) is not caught. Pinning the address would break TLS name checks
through httpx's public API; the window is small and the body is still only accepted if it is
a valid image, so this is accepted and documented.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from daemon.errors import BadResponseError, TransientProviderError
from daemon.providers.decode import sniff_format
from daemon.providers.http import call_timeout

__all__ = ["DownloadPolicy", "Resolver", "download_image", "is_public_address", "system_resolve"]

Resolver = Callable[[str, int], Awaitable[list[str]]]

_REDIRECTS = {301, 302, 303, 307, 308}
_BINARY_TYPES = {"application/octet-stream", "binary/octet-stream"}


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(address: str) -> bool:
    """Is ``address`` a globally routable unicast address (not private, loopback, ...)?"""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits for one download. Hosts in ``trusted_hosts`` may use private addresses."""

    max_bytes: int
    trusted_hosts: frozenset[str] = frozenset()
    max_redirects: int = 5
    timeout: float = 120.0


class _Refused(Exception):
    """Internal: a hop is refused (becomes a BadResponseError with context)."""


async def _guard(url: str, policy: DownloadPolicy, resolve: Resolver) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _Refused("it is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise _Refused(f"the URL scheme {parts.scheme or '(none)'!r} is not http(s)")
    host = (parts.hostname or "").lower()
    if not host:
        raise _Refused("the URL has no host")
    if parts.username or parts.password:
        raise _Refused("the URL carries credentials")
    if host in policy.trusted_hosts:
        return
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await resolve(host, port or (443 if parts.scheme == "https" else 80))
        except OSError as exc:
            raise TransientProviderError(
                f"cannot resolve the image download host {host} ({type(exc).__name__})",
                provider=f"the image download from {host}",
            ) from None
    if not addresses:
        raise _Refused(f"{host} resolves to no address")
    for address in addresses:
        if not is_public_address(address):
            raise _Refused(
                f"{host} is a private, loopback, link-local or reserved address ({address}); "
                "list the host in [image] allow_private_urls if it is yours"
            )


async def download_image(
    client: httpx.AsyncClient,
    url: str,
    policy: DownloadPolicy,
    *,
    resolve: Resolver = system_resolve,
    auth: httpx.Auth | None = None,
) -> bytes:
    """The bytes of the image at ``url``, fetched under ``policy``; raises ProviderError.

    ``auth`` (a local server's own login) is sent only to the URL's first host, never to a
    host a redirect names.
    """
    try:
        start_host = urlsplit(url).hostname
    except ValueError:
        start_host = None
    label = f"the image download from {start_host}" if start_host else "the image download"
    try:
        # One deadline for the whole download, redirects included.
        with anyio.fail_after(policy.timeout):
            for _hop in range(policy.max_redirects + 1):
                try:
                    await _guard(url, policy, resolve)
                except _Refused as exc:
                    raise BadResponseError(f"{label} was refused: {exc}", provider=label) from None
                same_host = urlsplit(url).hostname == start_host
                async with client.stream(
                    "GET",
                    url,
                    follow_redirects=False,
                    timeout=call_timeout(policy.timeout),
                    auth=auth if same_host else None,
                ) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        try:
                            url = urljoin(url, response.headers["location"])
                        except ValueError:
                            url = response.headers["location"]  # refused by the guard next
                        continue
                    return await _body(response, policy, label)
    except (TimeoutError, httpx.TransportError) as exc:
        raise TransientProviderError(
            f"{label} failed ({type(exc).__name__})", provider=label
        ) from exc
    except httpx.InvalidURL:
        raise BadResponseError(f"{label} was refused: not a valid URL", provider=label) from None
    raise BadResponseError(
        f"{label} was refused: more than {policy.max_redirects} redirects", provider=label
    )


async def _body(response: httpx.Response, policy: DownloadPolicy, label: str) -> bytes:
    status = response.status_code
    if status != 200:
        text = f"{label} answered {status}"
        if status in (408, 429) or status >= 500:
            raise TransientProviderError(text, provider=label, status=status)
        raise BadResponseError(
            f"{text} (the image URL expired or is wrong)", provider=label, status=status
        )
    ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype and not ctype.startswith("image/") and ctype not in _BINARY_TYPES:
        raise BadResponseError(
            f"{label} is not an image (content type {ctype!r})", provider=label, status=status
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise BadResponseError(
            f"{label} is {declared} bytes, over the limit of {policy.max_bytes} "
            "([image] max_download_bytes)",
            provider=label,
            status=status,
        )
    body = bytearray()  # one buffer, dropped at the cap (no list of chunks joined at the end)
    checked = False
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > policy.max_bytes:
            del body[:]
            raise BadResponseError(
                f"{label} went over the limit of {policy.max_bytes} bytes "
                "([image] max_download_bytes)",
                provider=label,
                status=status,
            )
        body += chunk
        if not checked and len(body) >= 16:
            checked = True
            if sniff_format(bytes(body[:16])) is None:
                raise BadResponseError(
                    f"{label} is not a PNG, JPEG, WebP or GIF image (wrong magic bytes)",
                    provider=label,
                    status=status,
                )
    data = bytes(body)
    del body[:]
    if sniff_format(data[:16]) is None:
        raise BadResponseError(
            f"{label} is not a PNG, JPEG, WebP or GIF image", provider=label, status=status
        )
    return data
