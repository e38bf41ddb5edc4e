"""The submit → poll → fetch backend for AI Horde and fal, against fake queues on a real local
socket (shapes and their sources: tests/providers/fake_queues.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from daemon.config import ImageSettings
from daemon.errors import (
    AuthError,
    ContentRefusedError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from daemon.providers.backend import ImageRequest, Progress
from daemon.providers.registry import make_backend
from tests.providers.conftest import FakeClock, no_jitter_policy
from tests.providers.fake_queues import FakeBFL, FakeFal, FakeHorde, FakeReplicate
from tests.providers.fake_service import Reply, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def horde() -> Iterator[FakeHorde]:
    with serve(FakeHorde()) as fake:
        yield fake


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with serve(FakeFal()) as fake:
        yield fake


def make(
    name: str, url: str, client: httpx.AsyncClient, clock: FakeClock, attempts: int = 1, **kw: Any
) -> Any:
    settings = ImageSettings.model_validate({"backend": name, "api_url": url, **kw})
    return make_backend(settings, client, clock=clock, retry=no_jitter_policy(attempts))


async def test_horde_anonymous_queue_position_as_progress_and_kudos(
    horde: FakeHorde, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    told: list[Progress] = []

    async def progress(p: Progress) -> None:
        told.append(p)

    gen = make("horde", horde.url + "/api", client, clock, size="500x770", n=2)
    images = await gen.generate(
        ImageRequest("a lighthouse", negative="blurry", seed=7), progress=progress
    )
    assert len(images) == 2 and (images[0].width, images[0].height) == (12, 18)
    (submit,) = horde.seen("POST", "/api/v2/generate/async")
    assert submit.headers["apikey"] == "0000000000"  # the anonymous key, no key configured
    assert "st-imagegen" in submit.headers["client-agent"]
    body = submit.json
    assert body["prompt"] == "a lighthouse ### blurry"
    assert (body["params"]["width"], body["params"]["height"]) == (448, 768)  # multiples of 64
    assert body["params"]["seed"] == "7" and body["params"]["n"] == 2
    assert told[0].text.startswith("queue position 1")
    assert any("rendering" in p.text for p in told)
    assert sum(i.cost or 0 for i in images) == pytest.approx(12.0)
    assert {i.cost_unit for i in images} == {"kudos"}
    assert clock.sleeps and set(clock.sleeps) == {5.0}  # the Horde's poll interval


async def test_horde_queue_timeout_cancels_there(
    horde: FakeHorde, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    horde.waits = -1  # never done
    gen = make("horde", horde.url + "/api", client, clock, horde={"deadline_seconds": 60})
    with pytest.raises(TransientProviderError, match="queue timeout"):
        await gen.generate(ImageRequest("a lighthouse"))
    (cancel,) = horde.seen("DELETE", "/api/v2/generate/status/req-1")
    assert cancel.headers["apikey"] == "0000000000"
    assert horde.jobs["req-1"].cancelled


async def test_a_given_up_job_is_cancelled_at_the_provider(
    fal: FakeFal, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    fal.waits = 10_000
    gen = make("fal", fal.url, client, clock, api_key=fal.key)
    with anyio.CancelScope() as scope:

        async def give_up(p: Progress) -> None:
            scope.cancel()  # the job is superseded while it waits in the queue

        await gen.generate(ImageRequest("a lighthouse"), progress=give_up)
    assert scope.cancelled_caught
    assert fal.seen("PUT", "/fal-ai/flux/schnell/requests/f-1/cancel")
    assert fal.jobs["f-1"].cancelled


SUBMIT_HELD = 30.0
"""Longest time the fake holds its answer to a submit (the test releases it at once)."""


async def test_a_job_given_up_while_its_submit_is_in_flight_is_cancelled_there(
    fal: FakeFal, client: httpx.AsyncClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit was sent; the job is given up before its answer arrives. The answer is still
    read (the call is shielded), so the paid request is cancelled at the provider instead of
    running on with nobody knowing its id."""
    fal.waits = 10_000
    arrived, release = threading.Event(), threading.Event()
    answer = fal.answer

    def held(seen: Any) -> Reply:
        if seen.method == "POST":  # the submit (fal's cancel is a PUT)
            arrived.set()
            release.wait(SUBMIT_HELD)
        return answer(seen)

    monkeypatch.setattr(fal, "answer", held)
    gen = make("fal", fal.url, client, clock, api_key=fal.key)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gen.generate, ImageRequest("a lighthouse"))
        assert await anyio.to_thread.run_sync(arrived.wait, SUBMIT_HELD)
        tg.cancel_scope.cancel()
        release.set()
    assert fal.seen("PUT", "/fal-ai/flux/schnell/requests/f-1/cancel")
    assert fal.jobs["f-1"].cancelled


async def test_fal_submit_poll_fetch(
    fal: FakeFal, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = make("fal", fal.url, client, clock, api_key=fal.key, size="1024x768", n=2)
    images = await gen.generate(ImageRequest("a lighthouse", negative="fog", seed=3))
    assert len(images) == 2
    (submit,) = fal.seen("POST", "/fal-ai/flux/schnell")
    assert submit.headers["authorization"] == f"Key {fal.key}"
    assert submit.json["image_size"] == {"width": 1024, "height": 768}
    assert submit.json["num_images"] == 2 and submit.json["negative_prompt"] == "fog"
    assert len(fal.seen("GET", "/fal-ai/flux/schnell/requests/f-1/status")) == 3


async def test_blanked_images_are_a_content_refusal(
    horde: FakeHorde, fal: FakeFal, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    horde.censored = True
    with pytest.raises(ContentRefusedError, match="blanked"):
        await make("horde", horde.url + "/api", client, clock).generate(ImageRequest("x"))
    fal.nsfw = True
    with pytest.raises(ContentRefusedError):
        await make("fal", fal.url, client, clock, api_key=fal.key).generate(ImageRequest("x"))


async def test_an_impossible_request_fails_at_once(
    horde: FakeHorde, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    horde.impossible = True
    with pytest.raises(PermanentProviderError, match="no worker"):
        await make("horde", horde.url + "/api", client, clock).generate(ImageRequest("x"))
    assert horde.jobs["req-1"].cancelled


async def test_an_expired_result_url_is_a_clear_failure(
    horde: FakeHorde, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    horde.expired_images = True
    with pytest.raises(ProviderError, match="404"):
        await make("horde", horde.url + "/api", client, clock).generate(ImageRequest("x"))


async def test_submit_errors(
    horde: FakeHorde, fal: FakeFal, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    with pytest.raises(AuthError):
        await make("fal", fal.url, client, clock, api_key="wrong").generate(ImageRequest("x"))
    route = "POST /api/v2/generate/async"
    horde.script[route] = [Reply.of({"message": "Too many requests"}, 429)]
    with pytest.raises(RateLimitedError):
        await make("horde", horde.url + "/api", client, clock).generate(ImageRequest("x"))
    horde.script[route] = [Reply.of({"message": "slow down"}, 429, **{"Retry-After": "3"})]
    gen = make("horde", horde.url + "/api", client, clock, attempts=2)
    assert len(await gen.generate(ImageRequest("x"))) == 1
    assert 3.0 in clock.sleeps


async def test_checks(
    horde: FakeHorde, fal: FakeFal, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    assert await make("horde", horde.url + "/api", client, clock).check() is None
    assert await make("fal", fal.url, client, clock, api_key=fal.key).check() is None
    with pytest.raises(AuthError):
        await make("fal", fal.url, client, clock, api_key="nope").check()


async def test_replicate_predictions(client: httpx.AsyncClient, clock: FakeClock) -> None:
    with serve(FakeReplicate()) as rep:
        gen = make(
            "replicate", rep.url + "/v1", client, clock, api_key=rep.key, size="1216x832", n=2
        )
        images = await gen.generate(ImageRequest("a lighthouse", seed=5))
        assert len(images) == 2
        (submit,) = rep.seen("POST", "/v1/models/black-forest-labs/flux-schnell/predictions")
        assert submit.json["input"]["aspect_ratio"] == "3:2"
        assert submit.json["input"]["num_outputs"] == 2 and submit.json["input"]["seed"] == 5
        rep.error = "NSFW content detected. Try running it again, or try a different prompt."
        with pytest.raises(ContentRefusedError, match="NSFW"):
            await gen.generate(ImageRequest("x"))
        rep.error, rep.waits = "", 10_000
        timed = make(
            "replicate",
            rep.url + "/v1",
            client,
            clock,
            api_key=rep.key,
            replicate={"deadline_seconds": 5},
        )
        with pytest.raises(TransientProviderError, match="queue timeout"):
            await timed.generate(ImageRequest("x"))
        assert rep.seen("POST", "/v1/predictions/p3/cancel") and rep.jobs["p3"].cancelled
        assert await gen.check() is None


async def test_bfl_polling_and_moderation(client: httpx.AsyncClient, clock: FakeClock) -> None:
    with serve(FakeBFL()) as bfl:
        gen = make("bfl", bfl.url + "/v1", client, clock, api_key=bfl.key, size="1000x700")
        (image,) = await gen.generate(ImageRequest("a lighthouse"))
        assert (image.width, image.height) == (11, 7)
        (submit,) = bfl.seen("POST", "/v1/flux-pro-1.1")
        assert (submit.json["width"], submit.json["height"]) == (992, 672)  # multiples of 32
        bfl.moderated = True
        with pytest.raises(ContentRefusedError, match="Moderated"):
            await gen.generate(ImageRequest("x"))
        with pytest.raises(AuthError):
            await make("bfl", bfl.url + "/v1", client, clock, api_key="no").generate(
                ImageRequest("x")
            )
        assert await gen.check() is None
