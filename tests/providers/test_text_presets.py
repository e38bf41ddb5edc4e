"""The prompt-writer presets: valid [text] settings, the right endpoint, and a prompt written
through each against a local chat server answering in the OpenAI chat shape (Gemini's
OpenAI-compatible endpoint: ai.google.dev/gemini-api/docs/openai, ``reasoning_effort``;
OpenRouter's chat completions: openrouter.ai/docs/api-reference, ``reasoning``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from daemon.config import TextSettings
from daemon.providers.http import endpoint_url
from daemon.providers.registry import BACKENDS
from daemon.providers.text import PromptInput, PromptWriter
from daemon.providers.text_presets import TEXT_PRESETS, describe_text_presets
from tests.providers.conftest import FakeClock, no_jitter_policy
from tests.providers.fake_service import FakeService, Reply, Seen, serve

pytestmark = pytest.mark.anyio


class FakeChat(FakeService):
    def answer(self, seen: Seen) -> Reply:
        if seen.method == "POST" and seen.path.endswith("/chat/completions"):
            return Reply.of(
                {
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "a foggy harbour"},
                            "finish_reason": "stop",
                        }
                    ]
                }
            )
        return super().answer(seen)


def test_presets_are_plain_data_naming_real_image_presets() -> None:
    described = json.loads(json.dumps(describe_text_presets()))
    assert {d["name"] for d in described} == {"openrouter", "gemini-openai"}
    image_presets = {p.name for info in BACKENDS.values() for p in info.presets}
    for preset in TEXT_PRESETS.values():
        assert preset.image_preset in image_presets
        assert "api_key" not in preset.text


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("openrouter", "/api/v1/chat/completions"),
        ("gemini-openai", "/v1beta/openai/chat/completions"),
    ],
)
async def test_each_preset_writes_a_prompt(
    name: str, path: str, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    preset = TEXT_PRESETS[name]
    assert (
        urlsplit(endpoint_url(str(preset.text["api_url"]), "chat/completions", "text")).path == path
    )
    with serve(FakeChat()) as fake:
        base = str(preset.text["api_url"])
        local = fake.url + urlsplit(base).path  # the same path, on the local server
        settings = TextSettings(**{**preset.text, "api_url": local, "api_key": "k-123"})
        writer = PromptWriter(settings, client, retry=no_jitter_policy(1))
        written = await writer.write(PromptInput(reply="Fog over the harbour.", speaker="Alice"))
        assert "foggy harbour" in written.prompt
        (call,) = fake.seen("POST", path)
        body: dict[str, Any] = call.json
        assert body["model"] == preset.text["model"]
        for key, value in preset.text["extra_body"].items():
            assert body[key] == value
