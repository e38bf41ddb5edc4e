"""Guarded downloads of result URLs (respx; DNS answers injected, never real)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from daemon.errors import BadResponseError, TransientProviderError
from daemon.providers.download import DownloadPolicy, download_image, is_public_address
from tests.providers.conftest import make_image, public_resolver

pytestmark = pytest.mark.anyio

PNG = make_image("PNG", (8, 6))
POLICY = DownloadPolicy(max_bytes=100_000, trusted_hosts=frozenset({"api.example.com"}))


def resolver_to(*addresses: str) -> Any:
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(addresses)

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def _stream(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 4096):
        yield body[start : start + 4096]


def image_response(body: bytes = PNG, ctype: str = "image/png") -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": ctype})


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.216.34", True),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_public_url_is_downloaded(client: httpx.AsyncClient, router: respx.Router) -> None:
    router.get("https://cdn.example.net/a.png").mock(return_value=image_response())
    assert (
        await download_image(
            client, "https://cdn.example.net/a.png", POLICY, resolve=public_resolver
        )
        == PNG
    )


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.7"], ["127.0.0.1"], ["169.254.169.254"], ["::1"], ["93.184.216.34", "192.168.0.2"]],
)
async def test_private_resolution_is_refused_before_connecting(
    addresses: list[str], client: httpx.AsyncClient, router: respx.Router
) -> None:
    route = router.get("https://evil.example.net/a.png").mock(return_value=image_response())
    with pytest.raises(BadResponseError, match=r"private, loopback.*allow_private_urls"):
        await download_image(
            client, "https://evil.example.net/a.png", POLICY, resolve=resolver_to(*addresses)
        )
    assert route.call_count == 0


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/a.png", "http://[::1]:8080/a.png", "http://169.254.169.254/latest/meta-data"],
)
async def test_private_literal_is_refused_without_dns(
    url: str, client: httpx.AsyncClient, router: respx.Router
) -> None:
    resolve = resolver_to("93.184.216.34")
    with pytest.raises(BadResponseError, match="private"):
        await download_image(client, url, POLICY, resolve=resolve)
    assert resolve.calls == []
    assert len(router.calls) == 0


async def test_trusted_hosts_may_be_private(
    client: httpx.AsyncClient, router: respx.Router
) -> None:
    router.get("http://api.example.com:8080/out/a.png").mock(return_value=image_response())
    resolve = resolver_to("192.168.1.5")
    assert (
        await download_image(
            client, "http://api.example.com:8080/out/a.png", POLICY, resolve=resolve
        )
        == PNG
    )
    assert resolve.calls == []  # trusted: no need to look


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "scheme 'file' is not http"),
        ("ftp://cdn.example.net/a.png", "scheme 'ftp'"),
        ("https://user:pw@cdn.example.net/a.png", "credentials"),
        ("http://[not-an-ip/a.png", "not a valid URL"),
        ("http://cdn.example.net:99999/a.png", "not a valid URL"),
    ],
)
async def test_bad_urls_are_refused(url: str, words: str, client: httpx.AsyncClient) -> None:
    with pytest.raises(BadResponseError, match=words):
        await download_image(client, url, POLICY, resolve=public_resolver)


async def test_redirects_are_followed_and_rechecked(
    client: httpx.AsyncClient, router: respx.Router
) -> None:
    router.get("https://cdn.example.net/a").mock(
        return_value=httpx.Response(302, headers={"location": "/b"})
    )
    router.get("https://cdn.example.net/b").mock(
        return_value=httpx.Response(307, headers={"location": "https://other.example.org/c.png"})
    )
    router.get("https://other.example.org/c.png").mock(return_value=image_response())
    resolve = resolver_to("93.184.216.34")
    assert await download_image(client, "https://cdn.example.net/a", POLICY, resolve=resolve) == PNG
    assert resolve.calls == ["cdn.example.net", "cdn.example.net", "other.example.org"]


async def test_redirect_to_a_private_address_is_refused(
    client: httpx.AsyncClient, router: respx.Router
) -> None:
    router.get("https://cdn.example.net/a").mock(
        return_value=httpx.Response(302, headers={"location": "http://10.0.0.1/secret"})
    )
    private = router.get("http://10.0.0.1/secret").mock(return_value=image_response())
    with pytest.raises(BadResponseError, match="private"):
        await download_image(client, "https://cdn.example.net/a", POLICY, resolve=public_resolver)
    assert private.call_count == 0


async def test_too_many_redirects(client: httpx.AsyncClient, router: respx.Router) -> None:
    for i in range(4):
        router.get(f"https://cdn.example.net/{i}").mock(
            return_value=httpx.Response(301, headers={"location": f"/{i + 1}"})
        )
    router.get("https://cdn.example.net/4").mock(return_value=image_response())
    policy = DownloadPolicy(max_bytes=100_000, max_redirects=3)
    with pytest.raises(BadResponseError, match="more than 3 redirects"):
        await download_image(client, "https://cdn.example.net/0", policy, resolve=public_resolver)
    policy = DownloadPolicy(max_bytes=100_000, max_redirects=4)
    assert (
        await download_image(client, "https://cdn.example.net/0", policy, resolve=public_resolver)
        == PNG
    )


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (
            image_response(ctype="text/html; charset=utf-8"),
            BadResponseError,
            "content type 'text/html'",
        ),
        (
            image_response(b"<html>" + b"x" * 100, "image/png"),
            BadResponseError,
            "wrong magic bytes",
        ),
        (image_response(b"tiny", ""), BadResponseError, "not a PNG"),
        (httpx.Response(404), BadResponseError, "expired"),
        (httpx.Response(403), BadResponseError, "answered 403"),
        (httpx.Response(503), TransientProviderError, "answered 503"),
        (
            httpx.Response(
                200,
                content=PNG,
                headers={"content-length": "999999999", "content-type": "image/png"},
            ),
            BadResponseError,
            "999999999 bytes, over the limit",
        ),
        (
            httpx.Response(
                200, content=_stream(PNG + b"\0" * 200_000), headers={"content-type": "image/png"}
            ),
            BadResponseError,
            "went over the limit of 100000",
        ),
    ],
)
async def test_bad_bodies(
    response: httpx.Response,
    error: type[Exception],
    words: str,
    client: httpx.AsyncClient,
    router: respx.Router,
) -> None:
    router.get("https://cdn.example.net/a.png").mock(return_value=response)
    with pytest.raises(error) as info:
        await download_image(
            client, "https://cdn.example.net/a.png", POLICY, resolve=public_resolver
        )
    assert words in str(info.value)
    assert "the image download from cdn.example.net" in str(info.value)


async def test_octet_stream_and_missing_type_are_accepted(
    client: httpx.AsyncClient, router: respx.Router
) -> None:
    router.get("https://cdn.example.net/a").mock(
        return_value=image_response(ctype="application/octet-stream")
    )
    router.get("https://cdn.example.net/b").mock(return_value=httpx.Response(200, content=PNG))
    for path in ("a", "b"):
        assert (
            await download_image(
                client, f"https://cdn.example.net/{path}", POLICY, resolve=public_resolver
            )
            == PNG
        )


async def test_dns_failure_is_transient(client: httpx.AsyncClient) -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(TransientProviderError, match="cannot resolve"):
        await download_image(client, "https://nowhere.example.net/a.png", POLICY, resolve=broken)


async def test_connection_failure_is_transient(
    client: httpx.AsyncClient, router: respx.Router
) -> None:
    router.get("https://cdn.example.net/a.png").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(TransientProviderError, match="failed"):
        await download_image(
            client, "https://cdn.example.net/a.png", POLICY, resolve=public_resolver
        )


async def test_redirect_to_a_broken_url_is_refused(
    client: httpx.AsyncClient, router: respx.Router
) -> None:
    router.get("https://cdn.example.net/a").mock(
        return_value=httpx.Response(302, headers={"location": "http://[broken/x"})
    )
    with pytest.raises(BadResponseError, match="not a valid URL"):
        await download_image(client, "https://cdn.example.net/a", POLICY, resolve=public_resolver)
