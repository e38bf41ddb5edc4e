"""The native Gemini backend against a fake Gemini API on a real local socket (shapes and their
sources: tests/providers/fake_gemini.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from daemon.config import ImageSettings
from daemon.errors import AuthError, ContentRefusedError, PermanentProviderError, RateLimitedError
from daemon.providers.backend import ImageRequest, ReferenceImage
from daemon.providers.registry import make_backend
from tests.providers.conftest import FakeClock, no_jitter_policy
from tests.providers.fake_gemini import FakeGemini
from tests.providers.fake_service import Reply, png, serve

pytestmark = pytest.mark.anyio

GENERATE = "POST /v1beta/models/gemini-2.5-flash-image:generateContent"


@pytest.fixture
def api() -> Iterator[FakeGemini]:
    with serve(FakeGemini()) as fake:
        yield fake


def backend(
    api: FakeGemini, client: httpx.AsyncClient, clock: FakeClock, attempts: int = 1, **kw: Any
) -> Any:
    settings = ImageSettings.model_validate(
        {"backend": "gemini", "api_url": api.url + "/v1beta", "api_key": api.key, **kw}
    )
    return make_backend(settings, client, clock=clock, retry=no_jitter_policy(attempts))


async def test_request_shape_and_the_thought_image_skipped(
    api: FakeGemini, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    ref = ReferenceImage(png(), "image/png", "alice.png")
    gen = backend(api, client, clock, size="1920x1080", gemini={"image_size": "2K"})
    (image,) = await gen.generate(ImageRequest("a harbour at dawn", references=(ref,)))
    assert (image.width, image.height) == (16, 9)  # the final image, not the thought draft
    (call,) = api.seen("POST", "/v1beta/models/gemini-2.5-flash-image:generateContent")
    body = call.json
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "a harbour at dawn"}
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    config = body["generationConfig"]
    assert config["responseModalities"] == ["TEXT", "IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert "key" not in call.query  # the key travels in the header only


async def test_n_is_several_calls(
    api: FakeGemini, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    images = await backend(api, client, clock, n=3).generate(ImageRequest("a harbour"))
    assert len(images) == 3
    assert len(api.seen("POST", "/v1beta/models/gemini-2.5-flash-image:generateContent")) == 3


@pytest.mark.parametrize(
    ("block", "reason"), [("prompt", "PROHIBITED_CONTENT"), ("IMAGE_SAFETY", "IMAGE_SAFETY")]
)
async def test_a_safety_block_is_a_named_failure_never_retried(
    api: FakeGemini, client: httpx.AsyncClient, clock: FakeClock, block: str, reason: str
) -> None:
    api.block = block
    with pytest.raises(ContentRefusedError, match=reason):
        await backend(api, client, clock, attempts=3).generate(ImageRequest("x"))
    assert len(api.seen("POST", "/v1beta/models/gemini-2.5-flash-image:generateContent")) == 1


async def test_no_image_names_the_finish_reason(
    api: FakeGemini, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    api.block = "NO_IMAGE"
    with pytest.raises(PermanentProviderError, match="NO_IMAGE"):
        await backend(api, client, clock).generate(ImageRequest("x"))


async def test_bad_key_and_rate_limits(
    api: FakeGemini, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    with pytest.raises(AuthError, match="aistudio"):
        await backend(api, client, clock, api_key="AIza-wrong").generate(ImageRequest("x"))
    exhausted = {
        "error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}
    }
    api.script[GENERATE] = [Reply.of(exhausted, 429)]
    with pytest.raises(RateLimitedError):
        await backend(api, client, clock).generate(ImageRequest("x"))
    api.script[GENERATE] = [Reply.of(exhausted, 429, **{"Retry-After": "12"})]
    assert len(await backend(api, client, clock, attempts=2).generate(ImageRequest("x"))) == 1
    assert clock.sleeps[-1] == 12.0


async def test_check(api: FakeGemini, client: httpx.AsyncClient, clock: FakeClock) -> None:
    assert await backend(api, client, clock).check() is None
    with pytest.raises(PermanentProviderError):
        await backend(api, client, clock, model="gemini-nope").check()
