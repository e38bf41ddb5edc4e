"""SSE and downloads over a real HTTP server on 127.0.0.1 (real sockets, real chunking).

The server is the configured image API, so its own host (127.0.0.1) is trusted; the private
address refusal is tested with ``localhost`` (another name for loopback, not the API host) and
with 10.0.0.1, which must be refused before any connection is tried.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import anyio
import httpx
import pytest

from daemon.config import ImageSettings, TextSettings
from daemon.errors import BadResponseError, PermanentProviderError, TransientProviderError
from daemon.providers.images import ImageGenerator
from daemon.providers.text import PromptInput, PromptWriter
from tests.providers.conftest import (
    FakeClock,
    LocalServer,
    make_image,
    no_jitter_policy,
    send,
    stream,
)

pytestmark = pytest.mark.anyio

PNG = make_image("PNG", (8, 6))
JPEG = make_image("JPEG", (9, 9))
ROUTE = "POST /v1/images/generations"


def generator(
    server: LocalServer, client: httpx.AsyncClient, clock: FakeClock, **kwargs: Any
) -> ImageGenerator:
    settings = ImageSettings(
        api_url=server.url + "/v1", api_key="sk-live-5555", **{"sse": True, **kwargs}
    )
    return ImageGenerator(settings, client, clock=clock, retry=no_jitter_policy(1))


def bytewise(body: bytes) -> Iterator[bytes]:
    for i in range(len(body)):
        yield body[i : i + 1]


def serve_png(handler: BaseHTTPRequestHandler) -> None:
    send(handler, 200, PNG, {"Content-Type": "image/png"})


async def test_sse_written_one_byte_at_a_time(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    payload = {
        "data": [
            {"url": local_server.url + "/img/a.png"},
            {"b64_json": base64.b64encode(JPEG).decode()},
        ]
    }
    body = (
        b": keepalive\n\n: keepalive\r\n\r\ndata: : keepalive\r\r"
        b'data: {"status":"processing"}\n\n'
        b"data: " + json.dumps(payload).encode() + b"\r\n\r\ndata: [DONE]\n\n"
    )
    local_server.routes[ROUTE] = lambda h: stream(h, bytewise(body))
    local_server.routes["GET /img/a.png"] = serve_png
    images = await generator(local_server, client, clock, n=2).generate("a red fox")
    assert [(i.format, i.width, i.height) for i in images] == [("png", 8, 6), ("jpeg", 9, 9)]
    assert images[0].data == PNG
    posted = json.loads(local_server.requests[0][3])
    assert posted["sse"] is True and posted["n"] == 2


async def test_error_event_mid_stream(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    body = [
        b": keepalive\n\n",
        b'data: {"status":"queued"}\n\n',
        b'event: error\ndata: {"error":{"message":"Model not found',
        b'"}}\n\n',
        b'data: {"data":[{"url":"http://127.0.0.1/never"}]}\n\n',
    ]
    local_server.routes[ROUTE] = lambda h: stream(h, body)
    with pytest.raises(PermanentProviderError, match="reported a failure: Model not found"):
        await generator(local_server, client, clock).generate("fox")


async def test_stream_cut_before_the_image(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    body = [b": keepalive\n\n", b'data: {"status":"processing"}\n\n', b'data: {"data":[{"ur']
    local_server.routes[ROUTE] = lambda h: stream(h, body)
    with pytest.raises(TransientProviderError, match="ended before the image was ready"):
        await generator(local_server, client, clock).generate("fox")


async def test_stream_over_the_byte_cap(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    keepalives = (b": keepalive\n\n" for _ in range(100_000))
    local_server.routes[ROUTE] = lambda h: stream(h, keepalives, stop=local_server.stop)
    with anyio.fail_after(10):
        with pytest.raises(BadResponseError, match="went over 4096 bytes"):
            await generator(local_server, client, clock, max_response_bytes=4096).generate("fox")


async def test_slow_stream_hits_the_deadline(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    keepalives = (b": keepalive\n\n" for _ in range(200))
    local_server.routes[ROUTE] = lambda h: stream(h, keepalives, pause=0.02, stop=local_server.stop)
    with anyio.fail_after(10):
        with pytest.raises(TransientProviderError, match="did not answer in time"):
            await generator(local_server, client, clock, timeout_seconds=0.6).generate("fox")


def answer_with_url(server: LocalServer, path_or_url: str) -> None:
    url = path_or_url if "://" in path_or_url else server.url + path_or_url
    body = json.dumps({"data": [{"url": url}]}).encode()
    server.routes[ROUTE] = lambda h: send(h, 200, body, {"Content-Type": "application/json"})


def redirect(location: str) -> Any:
    return lambda h: send(h, 302, b"", {"Location": location})


async def test_download_from_the_api_host_and_redirect_on_it(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    answer_with_url(local_server, "/img/start")
    local_server.routes["GET /img/start"] = redirect("/img/a.png")
    local_server.routes["GET /img/a.png"] = serve_png
    images = await generator(local_server, client, clock, sse=False).generate("fox")
    assert images[0].data == PNG
    assert [r[1] for r in local_server.requests] == [
        "/v1/images/generations",
        "/img/start",
        "/img/a.png",
    ]


async def test_redirect_to_another_loopback_name_is_refused(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    answer_with_url(local_server, "/img/start")
    local_server.routes["GET /img/start"] = redirect(
        f"http://localhost:{local_server.port}/img/a.png"
    )
    local_server.routes["GET /img/a.png"] = serve_png
    with pytest.raises(BadResponseError, match=r"localhost is a private, loopback"):
        await generator(local_server, client, clock, sse=False).generate("fox")
    assert [r[1] for r in local_server.requests] == ["/v1/images/generations", "/img/start"]


async def test_redirect_to_localhost_allowed_when_listed(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    answer_with_url(local_server, "/img/start")
    local_server.routes["GET /img/start"] = redirect(
        f"http://localhost:{local_server.port}/img/a.png"
    )
    local_server.routes["GET /img/a.png"] = serve_png
    gen = generator(local_server, client, clock, sse=False, allow_private_urls=["LOCALHOST"])
    assert (await gen.generate("fox"))[0].data == PNG
    assert local_server.requests[-1][2] == f"localhost:{local_server.port}"


async def test_redirect_to_a_private_network_is_refused_before_connecting(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    answer_with_url(local_server, "/img/start")
    local_server.routes["GET /img/start"] = redirect("http://10.0.0.1/latest/meta-data")
    with anyio.fail_after(5):
        with pytest.raises(BadResponseError, match=r"10\.0\.0\.1 is a private"):
            await generator(local_server, client, clock, sse=False).generate("fox")


async def test_result_url_on_a_private_network_is_refused(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    answer_with_url(local_server, "http://192.168.77.1/a.png")
    with anyio.fail_after(5):
        with pytest.raises(BadResponseError, match="private"):
            await generator(local_server, client, clock, sse=False).generate("fox")


async def test_download_over_the_cap(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    answer_with_url(local_server, "/img/big")
    chunks = [PNG] + [b"\0" * 8192 for _ in range(64)]
    local_server.routes["GET /img/big"] = lambda h: stream(
        h, chunks, content_type="image/png", stop=local_server.stop
    )
    with pytest.raises(BadResponseError, match="went over the limit of 65536 bytes"):
        await generator(local_server, client, clock, sse=False, max_download_bytes=65536).generate(
            "fox"
        )


async def test_slow_download_hits_the_deadline(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    answer_with_url(local_server, "/img/slow")
    chunks = [PNG[:16]] + [b"\0" for _ in range(200)]
    local_server.routes["GET /img/slow"] = lambda h: stream(
        h, chunks, content_type="image/png", pause=0.02, stop=local_server.stop
    )
    with anyio.fail_after(10):
        with pytest.raises(
            TransientProviderError, match=r"image download from 127\.0\.0\.1 failed"
        ):
            await generator(local_server, client, clock, sse=False, timeout_seconds=0.6).generate(
                "fox"
            )


async def test_prompt_writer_over_a_real_socket(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    body = json.dumps({"choices": [{"message": {"content": "<think>x</think>a fox"}}]}).encode()
    local_server.routes["POST /v1/chat/completions"] = lambda h: send(
        h, 200, body, {"Content-Type": "application/json"}
    )
    writer = PromptWriter(
        TextSettings(api_url=local_server.url + "/v1/", api_key="sk-live-5555"),
        client,
        clock=clock,
    )
    result = await writer.write(PromptInput(reply="A fox.", speaker="Alice"))
    assert result.prompt == "a fox"
    assert json.loads(local_server.requests[0][3])["model"] == "gpt-4"
