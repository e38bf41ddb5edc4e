"""The OpenRouter backend against a fake OpenRouter on a real local socket (shapes and their
sources: tests/providers/fake_openrouter.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from daemon.config import ImageSettings
from daemon.errors import (
    AuthError,
    ConfigError,
    ContentRefusedError,
    PermanentProviderError,
    RateLimitedError,
)
from daemon.providers.backend import ImageRequest, ReferenceImage
from daemon.providers.openrouter import images_in_message
from daemon.providers.registry import make_backend
from tests.providers.conftest import FakeClock, no_jitter_policy
from tests.providers.fake_openrouter import FakeOpenRouter
from tests.providers.fake_service import Reply, b64png, png, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def api() -> Iterator[FakeOpenRouter]:
    with serve(FakeOpenRouter()) as fake:
        yield fake


def backend(
    api: FakeOpenRouter, client: httpx.AsyncClient, clock: FakeClock, attempts: int = 1, **kw: Any
) -> Any:
    options = kw.pop("openrouter", {})
    settings = ImageSettings.model_validate(
        {
            "backend": "openrouter",
            "api_url": api.url + "/api/v1",
            "api_key": api.key,
            **kw,
            **({"openrouter": options} if options else {}),
        }
    )
    return make_backend(settings, client, clock=clock, retry=no_jitter_policy(attempts))


async def test_chat_image_mode_request_answer_and_cost(
    api: FakeOpenRouter, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(api, client, clock, size="832x1216", n=2)
    ref = ReferenceImage(png(), "image/png", "alice.png")
    images = await gen.generate(ImageRequest("a lighthouse at dusk", references=(ref,)))
    assert len(images) == 2 and all(i.format == "png" for i in images)
    calls = api.seen("POST", "/api/v1/chat/completions")
    assert len(calls) == 2  # n = 2 is two calls: one image per chat answer
    body = calls[0].json
    assert body["model"] == "google/gemini-2.5-flash-image"  # the default model
    assert body["modalities"] == ["image", "text"] and body["usage"] == {"include": True}
    assert body["image_config"] == {"aspect_ratio": "2:3"}
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "a lighthouse at dusk"}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert calls[0].headers["x-title"] == "st-imagegen"
    assert sum(i.cost or 0 for i in images) == pytest.approx(2 * api.cost)
    assert {i.cost_unit for i in images} == {"USD"}


async def test_image_only_models_use_the_images_endpoint(
    api: FakeOpenRouter, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(api, client, clock, model="openai/gpt-image-1", size="1920x1080", n=3)
    images = await gen.generate(ImageRequest("a lighthouse"))
    (call,) = api.seen("POST", "/api/v1/images")
    assert call.json["aspect_ratio"] == "16:9" and call.json["n"] == 3
    assert "size" not in call.json and "response_format" not in call.json
    assert len(images) == 3 and sum(i.cost or 0 for i in images) == pytest.approx(3 * api.cost)
    assert api.seen("POST", "/api/v1/chat/completions") == []


async def test_an_image_in_markdown_content_is_read(
    api: FakeOpenRouter, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    api.content_only = "markdown"
    gen = backend(api, client, clock, model="black-forest-labs/flux.2-pro")
    images = await gen.generate(ImageRequest("a lighthouse"))
    assert len(images) == 1
    assert api.seen("POST", "/api/v1/chat/completions")[0].json["modalities"] == ["image"]


def test_images_are_found_in_every_documented_place() -> None:
    data = f"data:image/png;base64,{b64png()}"
    assert images_in_message({"images": [{"image_url": {"url": data}}]}) == [data]
    assert images_in_message({"content": f"![x]({data})"}) == [data]
    assert images_in_message({"content": f"here: {data}"}) == [data]
    assert images_in_message({"content": "see https://cdn.example/a/b.png?x=1 ok"}) == [
        "https://cdn.example/a/b.png?x=1"
    ]
    assert images_in_message({"content": [{"type": "image_url", "image_url": {"url": data}}]}) == [
        data
    ]
    assert images_in_message({"content": "no picture"}) == []


async def test_a_text_only_answer_is_a_clear_permanent_failure(
    api: FakeOpenRouter, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    api.text_only = True
    with pytest.raises(PermanentProviderError, match=r"without an image.*describe it"):
        await backend(api, client, clock).generate(ImageRequest("a lighthouse"))


async def test_failure_modes(
    api: FakeOpenRouter, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    route = "POST /api/v1/chat/completions"
    api.script[route] = [Reply.of({"error": {"message": "Rate limit exceeded"}}, 429)]
    with pytest.raises(RateLimitedError) as limited:
        await backend(api, client, clock).generate(ImageRequest("a"))
    assert limited.value.retry_after is None
    api.script[route] = [Reply.of({"error": {"message": "slow down"}}, 429, **{"Retry-After": "7"})]
    images = await backend(api, client, clock, attempts=2).generate(ImageRequest("a"))
    assert len(images) == 1 and clock.sleeps[-1] == 7.0  # waited as told, then succeeded
    api.script[route] = [Reply.of({"error": {"message": "Insufficient credits"}}, 402)]
    with pytest.raises(PermanentProviderError, match="out of credits"):
        await backend(api, client, clock).generate(ImageRequest("a"))
    api.script[route] = [
        Reply.of({"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]})
    ]
    with pytest.raises(ContentRefusedError):
        await backend(api, client, clock).generate(ImageRequest("a"))
    with pytest.raises(AuthError, match="api_key"):
        gen = backend(api, client, clock, api_key="sk-or-wrong-key")
        await gen.generate(ImageRequest("a"))


async def test_check_and_the_model_list(
    api: FakeOpenRouter, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(api, client, clock)
    assert await gen.check() is None
    assert "openai/gpt-image-1" in await gen.models()
    warning = await backend(api, client, clock, model="acme/not-an-image-model").check()
    assert warning is not None and "not among" in warning


def test_its_own_settings_are_validated() -> None:
    settings = ImageSettings.model_validate(
        {"backend": "openrouter", "openrouter": {"endpont": "chat"}}
    )
    with pytest.raises(ConfigError, match=r"unknown key 'image\.openrouter\.endpont'"):
        make_backend(settings, httpx.AsyncClient())
