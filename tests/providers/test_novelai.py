"""The NovelAI backend against a fake NovelAI on a real local socket (shapes and their sources:
tests/providers/fake_novelai.py), and the ZIP caps on hostile archives."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from daemon.config import ImageSettings
from daemon.errors import BadResponseError, PermanentProviderError, TransientProviderError
from daemon.providers.backend import ImageRequest, SceneCharacter
from daemon.providers.novelai import ZipRefused, free_size, unzip_images
from daemon.providers.registry import make_backend
from tests.providers.conftest import FakeClock, no_jitter_policy
from tests.providers.fake_novelai import FakeNovelAI, zip_of
from tests.providers.fake_service import Reply, png, serve

pytestmark = pytest.mark.anyio

GENERATE = "POST /ai/generate-image"


@pytest.fixture
def api() -> Iterator[FakeNovelAI]:
    with serve(FakeNovelAI()) as fake:
        yield fake


def backend(
    api: FakeNovelAI, client: httpx.AsyncClient, clock: FakeClock, attempts: int = 1, **kw: Any
) -> Any:
    options = {"account_url": api.url, **kw.pop("novelai", {})}
    settings = ImageSettings.model_validate(
        {"backend": "novelai", "api_url": api.url, "api_key": api.key, "novelai": options, **kw}
    )
    return make_backend(settings, client, clock=clock, retry=no_jitter_policy(attempts))


SCENE = ImageRequest(
    "1girl, 1boy, harbour, dusk",
    negative="lowres",
    size="832x1216",
    seed=1234,
    characters=(
        SceneCharacter("Alice", "girl, silver hair, red coat", "hat"),
        SceneCharacter("Bob", "boy, black hair, sailor uniform"),
        SceneCharacter("Narrator", ""),  # no tags: no caption
    ),
)


async def test_v4_prompt_with_a_caption_per_character(
    api: FakeNovelAI, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(api, client, clock, steps=28, cfg_scale=5.0, sampler="k_dpmpp_2m")
    images = await gen.generate(SCENE)
    assert len(images) == 1 and (images[0].width, images[0].height) == (13, 19)
    (call,) = api.seen("POST", "/ai/generate-image")
    body = call.json
    assert body["model"] == "nai-diffusion-4-5-full" and body["action"] == "generate"
    p = body["parameters"]
    assert (p["width"], p["height"], p["steps"], p["scale"], p["seed"]) == (
        832,
        1216,
        28,
        5.0,
        1234,
    )
    assert p["sampler"] == "k_dpmpp_2m" and p["negative_prompt"] == "lowres"
    caption = p["v4_prompt"]["caption"]
    assert caption["base_caption"] == "1girl, 1boy, harbour, dusk"
    assert [c["char_caption"] for c in caption["char_captions"]] == [
        "girl, silver hair, red coat",
        "boy, black hair, sailor uniform",
    ]
    assert p["v4_prompt"]["use_order"] is True
    negatives = p["v4_negative_prompt"]["caption"]
    assert negatives["base_caption"] == "lowres"
    assert [c["char_caption"] for c in negatives["char_captions"]] == ["hat", ""]
    assert [c["prompt"] for c in p["characterPrompts"]] == [
        "girl, silver hair, red coat",
        "boy, black hair, sailor uniform",
    ]


async def test_free_only_keeps_each_call_free(
    api: FakeNovelAI, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(api, client, clock, size="1216x1600", steps=40, n=2, novelai={"free_only": True})
    images = await gen.generate(ImageRequest("a harbour"))
    calls = api.seen("POST", "/ai/generate-image")
    assert len(images) == 2 and len(calls) == 2  # one image per call
    for call in calls:
        p = call.json["parameters"]
        assert p["width"] * p["height"] <= 1024 * 1024 and p["steps"] == 28
        assert p["n_samples"] == 1 and p["width"] % 64 == 0 and p["height"] % 64 == 0
    assert free_size(832, 1216) == (832, 1216)


async def test_busy_answers_are_retried_and_anlas_is_not(
    api: FakeNovelAI, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    api.script[GENERATE] = [
        Reply.of({"statusCode": 429, "message": "Concurrent generation is locked"}, 429),
        Reply.of({"statusCode": 500, "message": "Internal server error"}, 500),
    ]
    assert len(await backend(api, client, clock, attempts=3).generate(SCENE)) == 1
    assert len(clock.sleeps) == 2
    locked = Reply.of({"statusCode": 429, "message": "Concurrent generation is locked"}, 429)
    api.script[GENERATE] = [locked]
    with pytest.raises(TransientProviderError, match=r"(?i)concurrent"):
        await backend(api, client, clock, attempts=1).generate(SCENE)
    api.script[GENERATE] = [Reply.of({"statusCode": 402, "message": "Insufficient Anlas"}, 402)]
    with pytest.raises(PermanentProviderError, match="Anlas"):
        await backend(api, client, clock, attempts=3).generate(SCENE)


async def test_a_zip_bomb_answer_is_refused(
    api: FakeNovelAI, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    bomb = zip_of({"image_0.png": b"\0" * 5_000_000}, zipfile.ZIP_DEFLATED)
    api.script[GENERATE] = [Reply(200, bomb, {"Content-Type": "application/x-zip-compressed"})]
    with pytest.raises(BadResponseError, match="ZIP bomb"):
        await backend(api, client, clock).generate(SCENE)
    api.script[GENERATE] = [Reply(200, b"<html>oops</html>", {"Content-Type": "text/html"})]
    with pytest.raises(BadResponseError, match="not a ZIP"):
        await backend(api, client, clock).generate(SCENE)


def test_zip_caps() -> None:
    caps = {"max_entries": 2, "max_entry_bytes": 10_000, "max_total_bytes": 15_000, "max_ratio": 50}
    many = zip_of({f"image_{i}.png": png() for i in range(3)})
    with pytest.raises(ZipRefused, match="3 files"):
        unzip_images(many, **caps)
    big = zip_of({"image_0.png": b"x" * 9_000, "image_1.png": b"y" * 9_000})
    with pytest.raises(ZipRefused, match="inflate to"):
        unzip_images(big, **caps)
    only_text = zip_of({"readme.txt": b"hello"})
    with pytest.raises(ZipRefused, match="no image"):
        unzip_images(only_text, **caps)
    good = zip_of({"image_1.png": png(2, 2), "image_0.png": png(1, 1)})
    assert unzip_images(good, **caps) == [png(1, 1), png(2, 2)]


async def test_check_reads_the_account(
    api: FakeNovelAI, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(api, client, clock)
    assert await gen.check() is None and "10000 Anlas" in gen.summary
    api.tier = 0
    assert "no active subscription" in str(await backend(api, client, clock).check())
