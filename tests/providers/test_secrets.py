"""API keys never reach a log line, an exception, a repr or anything else we can capture."""

from __future__ import annotations

import base64
import json
import logging
import traceback

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from daemon.config import ImageSettings, TextSettings
from daemon.errors import ProviderError
from daemon.providers.images import ImageGenerator
from daemon.providers.text import PromptInput, PromptWriter
from tests.providers.conftest import FakeClock, make_image, no_jitter_policy, public_resolver

pytestmark = pytest.mark.anyio

TEXT_KEY = "sk-TEXT-9f8e7d6c5b4a"
IMAGE_KEY = "sk-IMAGE-1a2b3c4d5e6f"
TEXT_URL = "https://llm.example.com/v1/chat/completions"
IMAGE_URL = "https://img.example.com/v1/images/generations"


def echo(status: int, key: str) -> httpx.Response:
    """An answer that echoes the key back, as some servers do."""
    return httpx.Response(
        status,
        json={"error": {"message": f"Incorrect API key provided: {key}", "param": key}},
        headers={"x-echo": key},
    )


async def test_keys_never_leak(
    client: httpx.AsyncClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    text_settings = TextSettings(api_url="https://llm.example.com/v1", api_key=TEXT_KEY)
    image_settings = ImageSettings(
        api_url="https://img.example.com/v1", api_key=IMAGE_KEY, sse=True, response_format="url"
    )
    writer = PromptWriter(text_settings, client, clock=clock, retry=no_jitter_policy(2))
    gen = ImageGenerator(
        image_settings, client, clock=clock, retry=no_jitter_policy(2), resolve=public_resolver
    )
    item = PromptInput(reply="hello", speaker="Alice")
    png = base64.b64encode(make_image()).decode()
    failures: list[BaseException] = []
    captured: list[str] = []

    text_answers: list[list[httpx.Response | Exception]] = [
        [echo(401, TEXT_KEY)],
        [echo(400, TEXT_KEY)],
        [echo(500, TEXT_KEY), echo(503, TEXT_KEY)],  # retried: the retry is logged
        [httpx.ConnectError(f"cannot reach {TEXT_KEY}?"), httpx.ConnectError("again")],
        [httpx.Response(200, text=f"not json {TEXT_KEY}")],
        [
            httpx.Response(
                200, json={"choices": [{"message": {"content": None, "refusal": TEXT_KEY}}]}
            )
        ],
        [httpx.Response(200, json={"error": {"message": TEXT_KEY}})],
    ]
    image_answers: list[list[httpx.Response | Exception]] = [
        [echo(401, IMAGE_KEY)],
        [echo(429, IMAGE_KEY), echo(502, IMAGE_KEY)],
        [
            httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=f'data: {{"error":{{"message":"bad {IMAGE_KEY}"}}}}\n\n'.encode(),
            )
        ],
        [httpx.Response(200, text=f"<html>{IMAGE_KEY}</html>")],
        [httpx.Response(200, json={"error": {"message": f"nope {IMAGE_KEY}"}})],
        [httpx.Response(200, json={"data": [{"b64_json": "!!" + IMAGE_KEY}]})],
        [httpx.Response(200, json={"data": [{"url": "https://cdn.example.net/a.txt"}]})],
    ]
    with capture_logs() as logs, respx.mock(assert_all_called=False) as router:
        router.get(url__regex=r"https://cdn\.example\.net/.*").mock(
            return_value=httpx.Response(200, text=IMAGE_KEY, headers={"content-type": "text/plain"})
        )
        text_route = router.post(TEXT_URL)
        for answers in text_answers:
            text_route.mock(side_effect=answers)
            with pytest.raises(ProviderError) as info:
                await writer.write(item)
            failures.append(info.value)
        text_route.mock(side_effect=[echo(401, TEXT_KEY)])
        with pytest.raises(ProviderError) as info:
            await writer.check()
        failures.append(info.value)

        image_route = router.post(IMAGE_URL)
        for answers in image_answers:
            image_route.mock(side_effect=answers)
            with pytest.raises(ProviderError) as info:
                await gen.generate("a fox")
            failures.append(info.value)
        router.get("https://img.example.com/v1/models").mock(side_effect=[echo(403, IMAGE_KEY)])
        with pytest.raises(ProviderError) as info:
            await gen.check()
        failures.append(info.value)

        # and a success, for the log lines a good call writes
        image_route.mock(side_effect=[httpx.Response(200, json={"data": [{"b64_json": png}]})])
        assert len(await gen.generate("a fox")) == 1
        text_route.mock(
            side_effect=[httpx.Response(200, json={"choices": [{"message": {"content": "a fox"}}]})]
        )
        assert (await writer.write(item)).prompt == "a fox"
        # the keys really were sent, to the APIs only
        assert text_route.calls[-1].request.headers["authorization"] == f"Bearer {TEXT_KEY}"
        assert image_route.calls[-1].request.headers["authorization"] == f"Bearer {IMAGE_KEY}"

    assert len(failures) == len(text_answers) + len(image_answers) + 2
    for exc in failures:
        assert isinstance(exc, ProviderError)
        captured += [str(exc), repr(exc), exc.body, exc.provider, repr(exc.args)]
        captured.append("".join(traceback.format_exception(exc)))
    captured += [json.dumps(entry, default=repr) for entry in logs]
    captured += [repr(entry) for entry in logs]
    captured.append(caplog.text)
    out = capsys.readouterr()
    captured += [out.out, out.err]
    captured += [repr(writer), repr(gen), repr(text_settings), repr(image_settings)]
    captured += [
        str(text_settings),
        text_settings.model_dump_json(),
        image_settings.model_dump_json(),
    ]
    everything = "\n".join(captured)
    assert any(entry["event"] == "provider_retry" for entry in logs)  # logs were captured
    assert "img.example.com" in everything and "llm.example.com" in everything
    for key in (TEXT_KEY, IMAGE_KEY):
        assert key not in everything
        assert key[3:] not in everything  # not even without its prefix
