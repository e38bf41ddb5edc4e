"""Prompt assembly: what the LLM is told about appearance, persona and style, and what is
prefixed to its answer so it cannot drop the tags (respx-mocked chat completions)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from daemon.config import TextSettings
from daemon.providers.cleanup import join_tags
from daemon.providers.text import PromptInput, PromptWriter, build_messages
from tests.providers.conftest import FakeClock, no_jitter_policy

pytestmark = pytest.mark.anyio

URL = "https://llm.example.com/v1/chat/completions"

ITEM = PromptInput(
    reply="Alice hands Bob a lantern.",
    speaker="Alice",
    user="Rowan",
    appearance=(("Alice", "silver hair, red eyes, green cloak"), ("Bob", "bald, grey beard")),
    persona="{{user}} wears a red scarf.",
    style_prefix="anime style, cel shading",
    style_suffix="masterpiece",
    negative="photo, realistic",
)


def settings(**kwargs: Any) -> TextSettings:
    base: dict[str, Any] = {"api_url": "https://llm.example.com/v1", "api_key": "sk-x"}
    base.update(kwargs)
    return TextSettings(**base)


def ok(content: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={"choices": [{"message": {"role": "assistant", "content": content}}]},
    )


def make(client: httpx.AsyncClient, clock: FakeClock, **kwargs: Any) -> PromptWriter:
    return PromptWriter(settings(**kwargs), client, clock=clock, retry=no_jitter_policy(1))


def test_the_llm_is_told_the_tags_and_the_persona() -> None:
    messages = build_messages(settings(), ITEM)
    user = messages[1]["content"]
    assert (
        "--- Character Appearance (fixed tags, already added to the prompt: keep the picture "
        "consistent with them, never contradict them, do not repeat them) ---\n"
        "Alice: silver hair, red eyes, green cloak\n"
        "Bob: bald, grey beard\n"
        "--- End of Character Appearance ---"
    ) in user
    assert "--- The User (Rowan; describe them like this if they are in the picture) ---\n" in user
    assert "Rowan wears a red scarf." in user  # {{user}} resolved
    # Both come before the message, and the final instruction stays last.
    assert user.index("Character Appearance") < user.index("MESSAGE TO ILLUSTRATE")
    assert user.index("The User (Rowan") < user.index("MESSAGE TO ILLUSTRATE")
    plain = build_messages(settings(), PromptInput(reply="x", speaker="Alice"))[1]["content"]
    assert "Appearance" not in plain and "The User" not in plain


async def test_tags_are_prefixed_after_the_style(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(URL).mock(return_value=ok("a woman handing a lantern to a man, night"))
    written = await make(
        client, clock, prefix="score_9", suffix="8k", negative_prompt="lowres"
    ).write(ITEM)
    assert written.prompt == (
        "anime style, cel shading, score_9, silver hair, red eyes, green cloak, bald, grey beard, "
        "a woman handing a lantern to a man, night, 8k, masterpiece"
    )
    assert written.negative == "lowres, photo, realistic"


async def test_the_length_cap_cuts_the_llm_text_never_the_tags(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(URL).mock(return_value=ok("word " * 200))
    written = await make(client, clock, max_prompt_chars=140).write(ITEM)
    assert len(written.prompt) <= 140
    assert written.prompt.startswith(
        "anime style, cel shading, silver hair, red eyes, green cloak, bald, grey beard, word"
    )
    assert written.prompt.endswith(", masterpiece")


async def test_template_mode_prefixes_too_and_knows_appearance(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    writer = make(client, clock, mode="template", template="{{char}} ({{appearance}}): {{message}}")
    written = await writer.write(ITEM)
    assert written.prompt.startswith("anime style, cel shading, silver hair, red eyes, green cloak")
    assert "Alice (silver hair, red eyes, green cloak, bald, grey beard): Alice hands" in (
        written.prompt
    )
    assert not router.calls


async def test_no_style_no_tags_is_the_old_prompt(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(return_value=ok("a glade"))
    written = await make(client, clock, prefix="p", suffix="s").write(
        PromptInput(reply="Alice smiles.", speaker="Alice")
    )
    assert (written.prompt, written.negative) == ("p, a glade, s", "")
    assert "Appearance" not in json.loads(route.calls[0].request.content)["messages"][1]["content"]


def test_join_tags_skips_empty_and_repeated_groups() -> None:
    assert join_tags("anime style,", "", "silver hair", "Silver hair ", "x") == (
        "anime style, silver hair, x"
    )
    assert join_tags("", "  ") == ""
