"""The image generator against respx-mocked images APIs: bodies, answers, quirks, errors."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import respx

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import (
    AuthError,
    BadResponseError,
    ContentRefusedError,
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from daemon.providers.images import ImageGenerator, build_body
from daemon.providers.profiles import (
    AIRFORCE,
    GENERIC,
    LOCALAI,
    OPENAI_DALLE2,
    OPENAI_DALLE3,
    OPENAI_GPT_IMAGE,
    guess_profile,
    normalize_aspect_ratio,
    resolve_profile,
)
from tests.providers.conftest import (
    FakeClock,
    InFlight,
    make_image,
    no_jitter_policy,
    public_resolver,
)

pytestmark = pytest.mark.anyio

GENERIC_URL = "https://img.example.com/v1/images/generations"
OPENAI_URL = "https://api.openai.com/v1/images/generations"
AIRFORCE_URL = "https://api.airforce/v1/images/generations"
PNG = make_image("PNG", (8, 6))
JPEG = make_image("JPEG", (10, 4))
WEBP = make_image("WEBP", (5, 5))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def settings(**kwargs: Any) -> ImageSettings:
    base: dict[str, Any] = {"api_url": "https://img.example.com/v1", "api_key": "sk-img-9876"}
    base.update(kwargs)
    return ImageSettings(**base)


def generator(
    client: httpx.AsyncClient,
    clock: FakeClock,
    attempts: int = 3,
    limits: LimitsSettings | None = None,
    **kwargs: Any,
) -> ImageGenerator:
    return ImageGenerator(
        settings(**kwargs),
        client,
        limits=limits,
        clock=clock,
        retry=no_jitter_policy(attempts),
        resolve=public_resolver,
    )


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


def data(*items: dict[str, str]) -> httpx.Response:
    return httpx.Response(200, json={"created": 1, "data": list(items)})


# ------------------------------------------------------------------------------ exact bodies


async def test_generic_body_defaults(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(GENERIC_URL).mock(return_value=data({"b64_json": b64(PNG)}))
    images = await generator(client, clock).generate("a red fox")
    assert [i.format for i in images] == ["png"]
    assert sent(route) == {
        "model": "dall-e-3",
        "prompt": "a red fox",
        "n": 1,
        "size": "1024x1024",
        "response_format": "url",
    }
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-img-9876"


async def test_generic_body_with_everything_set(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(GENERIC_URL).mock(
        return_value=data({"b64_json": b64(PNG)}, {"b64_json": b64(PNG)})
    )
    gen = generator(
        client,
        clock,
        api_key="",
        model="flux",
        n=2,
        size="",
        aspect_ratio="16:9",
        resolution="2k",
        quality="high",
        style="vivid",
        output_format="webp",
        output_compression=80,
        background="opaque",
        moderation="low",
        response_format="b64_json",
        extra_body={"seed": 42, "steps": 20, "n": 2},
    )
    images = await gen.generate("a red fox", negative="blurry")
    assert len(images) == 2
    assert sent(route) == {
        "model": "flux",
        "prompt": "a red fox",
        "n": 2,
        "aspect_ratio": "16:9",
        "resolution": "2k",
        "quality": "high",
        "style": "vivid",
        "output_format": "webp",
        "output_compression": 80,
        "background": "opaque",
        "moderation": "low",
        "response_format": "b64_json",
        "negative_prompt": "blurry",
        "seed": 42,
        "steps": 20,
    }
    assert "authorization" not in route.calls[0].request.headers


async def test_airforce_body(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(AIRFORCE_URL).mock(return_value=data({"b64_json": b64(PNG)}))
    gen = generator(
        client,
        clock,
        api_url="https://api.airforce/v1/",
        model="firefrost",
        aspect_ratio="square_1_1",
        resolution="4k",
        quality="high",
        output_format="png",  # not an airforce field: not sent
        sse=True,
    )
    assert gen.profile is AIRFORCE
    await gen.generate("a red fox", negative="blurry")
    assert sent(route) == {
        "model": "firefrost",
        "prompt": "a red fox",
        "n": 1,
        "size": "1024x1024",
        "aspect_ratio": "1:1",
        "resolution": "4k",
        "quality": "high",
        "response_format": "url",
        "negative_prompt": "blurry",
        "sse": True,
    }


async def test_airforce_without_optional_fields_sends_no_sse(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(AIRFORCE_URL).mock(return_value=data({"b64_json": b64(PNG)}))
    await generator(client, clock, api_url="https://api.airforce/v1", size="").generate("fox")
    assert sent(route) == {"model": "dall-e-3", "prompt": "fox", "n": 1, "response_format": "url"}


async def test_openai_gpt_image_body(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(OPENAI_URL).mock(return_value=data({"b64_json": b64(WEBP)}))
    gen = generator(
        client,
        clock,
        api_url="https://api.openai.com/v1",
        model="gpt-image-1",
        size="1536x1024",
        quality="high",
        output_format="webp",
        output_compression=70,
        background="opaque",
        moderation="low",
        aspect_ratio="16:9",  # not an OpenAI field
        style="vivid",  # dall-e-3 only
        response_format="url",  # gpt-image rejects it: never sent
    )
    assert gen.profile is OPENAI_GPT_IMAGE
    images = await gen.generate("a red fox", negative="blurry")
    assert images[0].format == "webp"
    assert sent(route) == {
        "model": "gpt-image-1",
        "prompt": "a red fox",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "output_format": "webp",
        "output_compression": 70,
        "background": "opaque",
        "moderation": "low",
    }


async def test_dall_e_3_makes_one_call_per_image(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(OPENAI_URL).mock(
        side_effect=[
            data({"b64_json": b64(PNG)}),
            data({"b64_json": b64(JPEG)}),
            data({"b64_json": b64(WEBP)}),
        ]
    )
    gen = generator(
        client,
        clock,
        api_url="https://api.openai.com/v1",
        model="dall-e-3",
        n=3,
        quality="hd",
        style="natural",
        response_format="b64_json",
    )
    assert gen.profile is OPENAI_DALLE3
    images = await gen.generate("a red fox")
    assert [i.format for i in images] == ["png", "jpeg", "webp"]
    assert route.call_count == 3
    for index in range(3):
        assert sent(route, index) == {
            "model": "dall-e-3",
            "prompt": "a red fox",
            "n": 1,
            "size": "1024x1024",
            "quality": "hd",
            "style": "natural",
            "response_format": "b64_json",
        }


async def test_dall_e_2_body(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(OPENAI_URL).mock(
        return_value=data({"b64_json": b64(PNG)}, {"b64_json": b64(PNG)})
    )
    gen = generator(
        client,
        clock,
        api_url="https://api.openai.com/v1",
        model="dall-e-2",
        n=2,
        size="512x512",
        quality="hd",
    )
    assert gen.profile is OPENAI_DALLE2
    assert len(await gen.generate("a red fox")) == 2
    assert sent(route) == {
        "model": "dall-e-2",
        "prompt": "a red fox",
        "n": 2,
        "size": "512x512",
        "response_format": "url",
    }


def test_localai_profile_puts_the_negative_after_a_pipe() -> None:
    assert resolve_profile(settings(profile="localai")) is LOCALAI
    body = build_body(settings(size="256x256", quality="hd"), LOCALAI, "a fox", "blurry", 1)
    assert body == {
        "model": "dall-e-3",
        "prompt": "a fox|blurry",
        "n": 1,
        "size": "256x256",
        "response_format": "url",
    }


def test_profile_guess_and_resolution() -> None:
    assert guess_profile("https://api.openai.com/v1") == "openai"
    assert guess_profile("https://API.AIRFORCE/v1/images/generations") == "airforce"
    assert guess_profile("https://eu.api.airforce/v1") == "airforce"
    assert guess_profile("https://notapi.airforce.evil.com/v1") == "generic"
    assert guess_profile("http://127.0.0.1:8080/v1") == "generic"
    openai = "https://api.openai.com/v1"
    assert resolve_profile(settings(api_url=openai, model="gpt-image-1.5")) is OPENAI_GPT_IMAGE
    assert (
        resolve_profile(settings(api_url=openai, model="chatgpt-image-latest")) is OPENAI_GPT_IMAGE
    )
    assert resolve_profile(settings(api_url=openai, model="dall-e-3")) is OPENAI_DALLE3
    assert resolve_profile(settings(api_url=openai, model="dall-e-2")) is OPENAI_DALLE2
    assert resolve_profile(settings(profile="generic", api_url=openai)) is GENERIC
    assert resolve_profile(settings(profile="airforce")) is AIRFORCE
    assert resolve_profile(settings(profile="openai", model="gpt-image-1")) is OPENAI_GPT_IMAGE


def test_aspect_ratio_forms() -> None:
    assert normalize_aspect_ratio("16:9") == "16:9"
    assert normalize_aspect_ratio("square_1_1") == "1:1"
    assert normalize_aspect_ratio("landscape_16_9") == "16:9"
    assert normalize_aspect_ratio("portrait_9_16") == "9:16"
    assert normalize_aspect_ratio("wide") == "wide"


async def test_unsent_settings_are_warned_about(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        generator(
            client,
            clock,
            api_url="https://api.openai.com/v1",
            model="gpt-image-1",
            aspect_ratio="16:9",
            sse=False,
        )
    warned = [e for e in logs if e["event"] == "image_settings_not_sent"]
    assert warned and warned[0]["settings"] == ["aspect_ratio"]


# ------------------------------------------------------------------------------ JSON answers


async def test_url_answers_are_downloaded_and_all_n_kept(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(
        return_value=data(
            {"url": "https://cdn.example.net/a.png"},
            {"b64_json": b64(JPEG)},  # b64 although url was asked: accepted
            {"url": "https://cdn.example.net/c"},
        )
    )
    a = router.get("https://cdn.example.net/a.png").mock(
        return_value=httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    )
    router.get("https://cdn.example.net/c").mock(
        return_value=httpx.Response(200, content=WEBP, headers={"content-type": "image/webp"})
    )
    images = await generator(client, clock, n=3).generate("a red fox")
    assert [(i.format, i.ext, i.width, i.height) for i in images] == [
        ("png", "png", 8, 6),
        ("jpeg", "jpg", 10, 4),
        ("webp", "webp", 5, 5),
    ]
    assert images[0].data == PNG
    assert "authorization" not in a.calls[0].request.headers  # the key stays with the API


async def test_data_urls_and_prefixed_base64_are_decoded(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(
        return_value=data(
            {"url": "data:image/jpeg;base64," + b64(JPEG)},
            {"b64_json": "data:image/png;base64," + b64(PNG)[:20] + "\n" + b64(PNG)[20:]},
        )
    )
    images = await generator(client, clock, n=2).generate("fox")
    assert [i.format for i in images] == ["jpeg", "png"]


async def test_wrapped_data_is_accepted(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(
        return_value=httpx.Response(200, json={"data": {"data": [{"b64_json": b64(PNG)}]}})
    )
    assert len(await generator(client, clock).generate("fox")) == 1


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (httpx.Response(200, json={"data": []}), "holds no image"),
        (httpx.Response(200, json={"data": [{"revised_prompt": "x"}]}), "holds no image"),
        (httpx.Response(200, text="<html>hi</html>"), "not JSON"),
        (httpx.Response(200, json={"data": [{"b64_json": "@@not base64@@"}]}), "not valid base64"),
        (
            httpx.Response(200, json={"data": [{"b64_json": b64(b"GIF89a but not really")}]}),
            "image 1 of 1 was rejected",
        ),
    ],
)
async def test_unusable_answers(
    response: httpx.Response,
    words: str,
    client: httpx.AsyncClient,
    clock: FakeClock,
    router: respx.Router,
) -> None:
    route = router.post(GENERIC_URL).mock(return_value=response)
    with pytest.raises(BadResponseError) as info:
        await generator(client, clock).generate("fox")
    assert words in str(info.value)
    assert "the image API at img.example.com" in str(info.value)
    assert route.call_count == 1


async def test_error_inside_a_200_answer(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(
        return_value=httpx.Response(200, json={"error": {"message": "Model not found"}})
    )
    with pytest.raises(PermanentProviderError, match="reported a failure: Model not found"):
        await generator(client, clock).generate("fox")


async def test_json_answer_over_the_cap(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    big = {"data": [{"b64_json": "A" * 5000}]}
    router.post(GENERIC_URL).mock(return_value=httpx.Response(200, json=big))
    with pytest.raises(BadResponseError, match="max_response_bytes"):
        await generator(client, clock, max_response_bytes=2048).generate("fox")


async def test_base64_over_the_download_cap(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(return_value=data({"b64_json": "A" * 4000}))
    with pytest.raises(BadResponseError, match="over the limit of 1024 bytes"):
        await generator(client, clock, max_download_bytes=1024).generate("fox")


# ------------------------------------------------------------------------------ errors, retries


async def test_401_names_the_setting(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(GENERIC_URL).mock(
        return_value=httpx.Response(401, json={"error": {"message": "Invalid key"}})
    )
    with pytest.raises(AuthError) as info:
        await generator(client, clock).generate("fox")
    assert str(info.value).startswith(
        "the image API at img.example.com answered 401 (Invalid key): check [image] api_key"
    )
    assert route.call_count == 1


async def test_content_policy_is_not_retried(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(OPENAI_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "error": {
                    "code": "moderation_blocked",
                    "message": "Your request was rejected by the safety system.",
                }
            },
        )
    )
    gen = generator(client, clock, api_url="https://api.openai.com/v1", model="gpt-image-1")
    with pytest.raises(ContentRefusedError, match="content policy"):
        await gen.generate("fox")
    assert route.call_count == 1
    assert clock.sleeps == []


async def test_unknown_parameter_400_is_permanent(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(GENERIC_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "error": {
                    "message": "Unknown parameter: 'response_format'.",
                    "param": "response_format",
                }
            },
        )
    )
    with pytest.raises(PermanentProviderError, match=r"Unknown parameter: 'response_format'"):
        await generator(client, clock).generate("fox")
    assert route.call_count == 1


async def test_5xx_and_429_are_retried(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(GENERIC_URL).mock(
        side_effect=[
            httpx.Response(502),
            httpx.Response(429, headers={"retry-after": "3"}),
            httpx.ConnectTimeout("slow connect"),
            data({"b64_json": b64(PNG)}),
        ]
    )
    images = await generator(client, clock, attempts=4).generate("fox")
    assert len(images) == 1
    assert route.call_count == 4
    assert clock.sleeps == [0.5, 3.0, 2.0]


async def test_429_gives_up_after_the_attempts(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(return_value=httpx.Response(429))
    with pytest.raises(RateLimitedError):
        await generator(client, clock, attempts=2).generate("fox")
    assert clock.sleeps == [0.5]


async def test_min_interval_between_calls(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(return_value=data({"b64_json": b64(PNG)}))
    gen = generator(client, clock, limits=LimitsSettings(min_interval_seconds=10))
    await gen.generate("one")
    clock.now += 4
    await gen.generate("two")
    assert clock.sleeps == [6.0]


async def test_image_concurrency_limit(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    slow = InFlight(lambda: data({"b64_json": b64(PNG)}))
    router.post(GENERIC_URL).mock(side_effect=slow)
    gen = generator(client, clock, limits=LimitsSettings(image_concurrency=1))
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(gen.generate, "fox")
    assert slow.peak == 1 and router.calls.call_count == 4


# ------------------------------------------------------------------------------ SSE via respx


async def chunked(body: bytes, size: int = 1) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def sse_response(body: bytes, size: int = 1) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=chunked(body, size)
    )


def airforce_stream(payload: dict[str, Any]) -> bytes:
    return (
        b": keepalive\n\n: keepalive\r\n\r\ndata: : keepalive\n\n"
        b"data: " + json.dumps(payload).encode() + b"\n\ndata: [DONE]\n\n"
    )


async def test_airforce_sse_one_byte_at_a_time(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    body = airforce_stream({"data": [{"b64_json": b64(PNG)}, {"b64_json": b64(JPEG)}]})
    router.post(AIRFORCE_URL).mock(
        return_value=sse_response(body + b"data: garbage after done\n\n")
    )
    gen = generator(client, clock, api_url="https://api.airforce/v1", sse=True, n=2)
    images = await gen.generate("fox")
    assert [i.format for i in images] == ["png", "jpeg"]


async def test_openai_partial_images_then_completed(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    preview = b64(make_image("PNG", (2, 2), "blue"))
    events = [
        (
            "image_generation.partial_image",
            {
                "type": "image_generation.partial_image",
                "partial_image_index": 0,
                "b64_json": preview,
            },
        ),
        (
            "image_generation.completed",
            {"type": "image_generation.completed", "b64_json": b64(PNG)},
        ),
        (
            "image_generation.partial_image",
            {
                "type": "image_generation.partial_image",
                "partial_image_index": 0,
                "b64_json": preview,
            },
        ),
        (
            "image_generation.completed",
            {"type": "image_generation.completed", "b64_json": b64(WEBP), "usage": {}},
        ),
    ]
    body = b"".join(
        f"event: {name}\r\ndata: {json.dumps(payload)}\r\n\r\n".encode() for name, payload in events
    )
    route = router.post(OPENAI_URL).mock(return_value=sse_response(body, size=7))
    gen = generator(
        client, clock, api_url="https://api.openai.com/v1", model="gpt-image-1", sse=True, n=2
    )
    images = await gen.generate("fox")
    assert [(i.format, i.width) for i in images] == [("png", 8), ("webp", 5)]
    assert sent(route)["stream"] is True


async def test_status_events_then_final(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    body = (
        b'data: {"status":"queued"}\n\n'
        b'data: {"status":"processing","progress":0.5}\n\n'
        b'data: {"status":"succeeded","data":[{"b64_json":"' + b64(PNG).encode() + b'"}]}\n\n'
    )
    router.post(GENERIC_URL).mock(return_value=sse_response(body, size=5))
    assert len(await generator(client, clock, sse=True).generate("fox")) == 1


async def test_multi_line_data_event(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    payload = json.dumps({"data": [{"b64_json": b64(PNG)}]}, indent=1).encode()
    body = b"".join(b"data: " + line + b"\n" for line in payload.split(b"\n")) + b"\n"
    router.post(GENERIC_URL).mock(return_value=sse_response(body, size=3))
    assert len(await generator(client, clock, sse=True).generate("fox")) == 1


@pytest.mark.parametrize(
    ("event", "error", "words"),
    [
        (
            b'event: error\ndata: {"type":"error","error":{"message":"Model not found"}}',
            PermanentProviderError,
            "Model not found",
        ),
        (
            b'data: {"status":"failed","message":"the upstream timed out"}',
            TransientProviderError,
            "timed out",
        ),
        (b'data: {"error":"blocked by content policy"}', ContentRefusedError, "content policy"),
    ],
)
async def test_failure_events(
    event: bytes,
    error: type[Exception],
    words: str,
    client: httpx.AsyncClient,
    clock: FakeClock,
    router: respx.Router,
) -> None:
    body = (
        b": keepalive\n\n"
        + event
        + b"\n\n"
        + b'data: {"data":[{"b64_json":"'
        + b64(PNG).encode()
        + b'"}]}\n\n'
    )
    route = router.post(GENERIC_URL).mock(return_value=sse_response(body, size=4))
    with pytest.raises(error) as info:
        await generator(client, clock, attempts=1, sse=True).generate("fox")
    assert words in str(info.value)
    assert route.call_count == 1


async def test_stream_with_only_provisional_events_is_an_error(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    body = b'data: {"status":"queued"}\n\n: keepalive\n\ndata: {"status":"processing"}\n\n'
    router.post(GENERIC_URL).mock(return_value=sse_response(body, size=8))
    with pytest.raises(TransientProviderError, match="ended before the image was ready"):
        await generator(client, clock, attempts=1, sse=True).generate("fox")


async def test_stream_with_nothing_is_an_error(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(return_value=sse_response(b": keepalive\n\ndata: [DONE]\n\n"))
    with pytest.raises(BadResponseError, match="ended without an image"):
        await generator(client, clock, sse=True).generate("fox")


async def test_stream_over_the_cap(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    body = b": keepalive\n\n" * 400
    router.post(GENERIC_URL).mock(return_value=sse_response(body, size=64))
    with pytest.raises(BadResponseError, match="went over 2048 bytes"):
        await generator(client, clock, sse=True, max_response_bytes=2048).generate("fox")


async def test_sse_asked_but_json_answered(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(return_value=data({"b64_json": b64(PNG)}))
    assert len(await generator(client, clock, sse=True).generate("fox")) == 1


async def test_event_stream_without_being_asked(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    body = airforce_stream({"data": [{"b64_json": b64(PNG)}]})
    router.post(GENERIC_URL).mock(return_value=sse_response(body, size=50))
    assert len(await generator(client, clock).generate("fox")) == 1


# ------------------------------------------------------------------------------ check


async def test_check_lists_models(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.get("https://img.example.com/v1/models").mock(
        return_value=httpx.Response(200, json={"data": [{"id": "dall-e-3"}, {"id": "flux"}]})
    )
    assert await generator(client, clock).check() is None
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-img-9876"


async def test_check_warns_when_the_model_is_not_listed_but_may_exist(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    """Regression: doctor failed on gateways that list only some models (generation worked)."""
    router.get("https://img.example.com/v1/models").mock(
        return_value=httpx.Response(200, json={"data": [{"id": "dall-e-3"}]})
    )
    one = router.get("https://img.example.com/v1/models/flux%2Fschnell")
    one.mock(return_value=httpx.Response(404, json={"detail": "Not Found"}))
    warning = await generator(client, clock, model="flux/schnell").check()
    assert warning is not None and "'flux/schnell' is not in" in warning
    one.mock(return_value=httpx.Response(200, json={"id": "flux/schnell"}))
    assert await generator(client, clock, model="flux/schnell").check() is None


async def test_check_fails_when_the_api_says_the_model_does_not_exist(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.get("https://img.example.com/v1/models").mock(
        return_value=httpx.Response(200, json={"data": [{"id": "dall-e-3"}]})
    )
    router.get("https://img.example.com/v1/models/nope").mock(
        return_value=httpx.Response(
            404,
            json={
                "error": {
                    "message": "The model 'nope' does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
            },
        )
    )
    with pytest.raises(PermanentProviderError, match=r"says the model 'nope' does not exist"):
        await generator(client, clock, model="nope").check()


async def test_check_passes_without_a_models_route(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.get("https://img.example.com/v1/models").mock(return_value=httpx.Response(404))
    await generator(client, clock).check()
    assert route.call_count == 1


async def test_check_reports_a_bad_key(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.get("https://img.example.com/v1/models").mock(return_value=httpx.Response(403))
    with pytest.raises(AuthError, match=r"check \[image\] api_key"):
        await generator(client, clock).check()


async def test_check_reports_a_dead_host(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.get("https://img.example.com/v1/models").mock(side_effect=httpx.ConnectError("no"))
    with pytest.raises(TransientProviderError, match="cannot connect"):
        await generator(client, clock).check()


async def test_fewer_images_than_asked_are_kept_and_logged(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    from structlog.testing import capture_logs

    router.post(GENERIC_URL).mock(return_value=data({"b64_json": b64(PNG)}))
    with capture_logs() as logs:
        images = await generator(client, clock, n=3).generate("fox")
    assert len(images) == 1
    assert next(e for e in logs if e["event"] == "image_count_differs")["got"] == 1


async def test_paid_images_survive_a_later_failed_batch(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(OPENAI_URL).mock(
        side_effect=[
            data({"b64_json": b64(PNG)}),
            httpx.Response(
                400,
                json={"error": {"message": "safety system", "code": "content_policy_violation"}},
            ),
        ]
    )
    gen = generator(client, clock, api_url="https://api.openai.com/v1", model="dall-e-3", n=3)
    images = await gen.generate("fox")
    assert [i.format for i in images] == ["png"]
    assert route.call_count == 2  # the third call is not made after a refusal


async def test_one_bad_image_of_several_is_dropped(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(
        return_value=data({"b64_json": b64(b"not an image at all")}, {"b64_json": b64(JPEG)})
    )
    images = await generator(client, clock, n=2).generate("fox")
    assert [i.format for i in images] == ["jpeg"]


async def test_all_bad_images_raise_the_first_error(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(GENERIC_URL).mock(
        return_value=data({"b64_json": b64(b"junk one")}, {"url": "http://10.0.0.1/a.png"})
    )
    with pytest.raises(BadResponseError, match="image 1 of 2 was rejected"):
        await generator(client, clock, n=2).generate("fox")


async def test_cancelling_a_generation_releases_the_slot(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    started = anyio.Event()
    calls = 0

    async def first_hangs(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await anyio.sleep(30)
        return data({"b64_json": b64(PNG)})

    router.post(GENERIC_URL).mock(side_effect=first_hangs)
    gen = generator(client, clock, limits=LimitsSettings(image_concurrency=1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(gen.generate, "fox")
        await started.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(5):
        assert len(await gen.generate("fox")) == 1


async def test_a_failed_download_is_retried_without_a_new_generation(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    api = router.post(GENERIC_URL).mock(return_value=data({"url": "https://cdn.example.net/a"}))
    cdn = router.get("https://cdn.example.net/a").mock(
        side_effect=[
            httpx.Response(503),
            httpx.ReadError("reset"),
            httpx.Response(200, content=PNG, headers={"content-type": "image/png"}),
        ]
    )
    images = await generator(client, clock).generate("fox")
    assert images[0].data == PNG
    assert (api.call_count, cdn.call_count) == (1, 3)
    assert clock.sleeps == [0.5, 1.0]
