"""The OpenAI-compatible presets against a local server answering in each service's shape.

Shapes: xAI's image generation docs (docs.x.ai, "Image Generations": ``aspect_ratio``,
``resolution``, ``response_format: "b64_json"``; clients such as LiteLLM's xai handler strip a
``data:image/...;base64,`` prefix from ``b64_json``); Together's ``/v1/images/generations``
(docs.together.ai: ``width``, ``height``, ``steps``, ``response_format: "base64"``, answer
``data[].b64_json``); Pollinations' OpenAI-compatible ``POST /v1/images/generations``
(github.com/pollinations/pollinations APIDOCS, usable without a key for a first image).
"""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from daemon.config import ImageSettings
from daemon.errors import RateLimitedError
from daemon.providers.backend import ImageRequest
from daemon.providers.registry import make_backend
from tests.providers.conftest import FakeClock, LocalServer, make_image, no_jitter_policy, send

pytestmark = pytest.mark.anyio


def _answer(
    server: LocalServer, seen: list[dict[str, Any]], payload: dict[str, Any], status: int = 200
) -> Any:
    def route(handler: BaseHTTPRequestHandler) -> None:
        # The server has read the body already (server.requests).
        body = json.loads(server.requests[-1][3] or b"{}")
        seen.append({"auth": handler.headers.get("authorization"), "body": body})
        send(handler, status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    return route


async def test_xai_answer_with_a_data_prefix_inside_b64_json(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    seen: list[dict[str, Any]] = []
    b64 = "data:image/png;base64," + base64.b64encode(make_image()).decode()
    local_server.routes["POST /v1/images/generations"] = _answer(
        local_server, seen, {"data": [{"b64_json": b64}]}
    )
    settings = ImageSettings(
        api_url=local_server.url + "/v1", profile="xai", model="grok-imagine-image", api_key="k-1"
    )
    backend = make_backend(settings, client, clock=clock, retry=no_jitter_policy(1))
    images = await backend.generate(ImageRequest("a cat", size="832x1216"))
    assert len(images) == 1 and images[0].format == "png"
    assert seen[0]["body"]["aspect_ratio"] == "2:3" and seen[0]["auth"] == "Bearer k-1"


async def test_pollinations_works_with_no_key(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    seen: list[dict[str, Any]] = []
    b64 = base64.b64encode(make_image()).decode()
    local_server.routes["POST /v1/images/generations"] = _answer(
        local_server, seen, {"data": [{"b64_json": b64}]}
    )
    settings = ImageSettings(api_url=local_server.url + "/v1", profile="pollinations", model="flux")
    backend = make_backend(settings, client, clock=clock, retry=no_jitter_policy(1))
    assert len(await backend.generate(ImageRequest("a cat"))) == 1
    assert seen[0]["auth"] is None and seen[0]["body"]["size"] == "1024x1024"


async def test_together_sends_width_and_height_and_honours_retry_after(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    seen: list[dict[str, Any]] = []
    local_server.routes["POST /v1/images/generations"] = _answer(
        local_server, seen, {"error": {"message": "rate limited"}}, 429
    )
    settings = ImageSettings(
        api_url=local_server.url + "/v1", profile="together", size="1024x768", api_key="k"
    )
    backend = make_backend(settings, client, clock=clock, retry=no_jitter_policy(1))
    with pytest.raises(RateLimitedError):
        await backend.generate(ImageRequest("a cat"))
    body = seen[0]["body"]
    assert (body["width"], body["height"], body["response_format"]) == (1024, 768, "base64")
