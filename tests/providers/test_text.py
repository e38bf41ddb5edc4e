"""The prompt writer against respx-mocked chat completions APIs (time controlled)."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import anyio
import httpx
import pytest
import respx

from daemon.config import LimitsSettings, TextSettings
from daemon.errors import (
    AuthError,
    BadResponseError,
    ConfigError,
    ContentRefusedError,
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from daemon.providers.text import (
    FINAL_INSTRUCTION,
    CardInfo,
    PromptInput,
    PromptWriter,
    WrittenPrompt,
)
from tests.providers.conftest import FakeClock, InFlight, no_jitter_policy

pytestmark = pytest.mark.anyio

URL = "https://llm.example.com/v1/chat/completions"
SYSTEM = "SYSTEM PROMPT"


def settings(**kwargs: Any) -> TextSettings:
    base: dict[str, Any] = {
        "api_url": "https://llm.example.com/v1",
        "api_key": "sk-test-key-1234",
        "system_prompt": SYSTEM,
    }
    base.update(kwargs)
    return TextSettings(**base)


def answer(content: Any, **message: Any) -> dict[str, Any]:
    finish = message.pop("finish_reason", "stop")
    return {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish,
            }
        ],
    }


def ok(content: Any, **message: Any) -> httpx.Response:
    return httpx.Response(200, json=answer(content, **message))


ITEM = PromptInput(reply="Alice smiles in the glade.", speaker="Alice")


def writer(
    client: httpx.AsyncClient, clock: FakeClock, attempts: int = 3, **kwargs: Any
) -> PromptWriter:
    limits = kwargs.pop("limits", None)
    return PromptWriter(
        settings(**kwargs), client, limits=limits, clock=clock, retry=no_jitter_policy(attempts)
    )


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


# ------------------------------------------------------------------------------ the request


async def test_exact_request_with_card_and_context(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(return_value=ok("a woman in a glade"))
    item = PromptInput(
        reply="<think>plan</think><p>Alice <b>smiles</b> at {{user}}.</p>",
        speaker="Alice",
        card=CardInfo(
            name="Alice",
            description="{{char}} has red hair.",
            personality="cheerful",
            scenario="",
        ),
        context=[("Bob", "first"), ("Alice", "second <i>line</i>"), ("Bob", "third")],
        user="Bob",
    )
    w = writer(client, clock, context_messages=2, temperature=0.4, max_tokens=222)
    result = await w.write(item)
    assert result == WrittenPrompt(prompt="a woman in a glade", negative="")
    user = (
        "--- Character Information ---\n"
        "Name: Alice\n"
        "Description: Alice has red hair.\n"
        "Personality: cheerful\n"
        "--- End of Character Information ---\n\n"
        "--- Earlier Messages (context only; do not illustrate them) ---\n"
        "Alice: second line\n"
        "Bob: third\n"
        "--- End of Earlier Messages ---\n\n"
        "--- MESSAGE TO ILLUSTRATE (from Alice) ---\n"
        "Alice smiles at {{user}}.\n"
        "--- End of Message ---\n\n" + FINAL_INSTRUCTION
    )
    assert sent(route) == {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
        ],
        "temperature": 0.4,
        "max_tokens": 222,
    }
    request = route.calls[0].request
    assert request.headers["authorization"] == "Bearer sk-test-key-1234"
    assert request.headers["content-type"] == "application/json"


async def test_card_left_out_when_disabled_and_no_key_no_header(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(return_value=ok("a fox"))
    w = writer(client, clock, include_character_card=False, api_key="")
    await w.write(PromptInput(reply="hi", speaker="Alice", card=CardInfo("Alice", "desc")))
    content = sent(route)["messages"][1]["content"]
    assert "Character Information" not in content
    assert "Earlier Messages" not in content
    assert "authorization" not in route.calls[0].request.headers


async def test_extra_body_is_merged(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(return_value=ok("a fox"))
    w = writer(client, clock, extra_body={"reasoning_effort": "low", "temperature": 1})
    await w.write(ITEM)
    body = sent(route)
    assert body["reasoning_effort"] == "low"
    assert body["temperature"] == 1


@pytest.mark.parametrize(
    "api_url",
    [
        "https://llm.example.com/v1",
        "https://llm.example.com/v1/",
        "https://llm.example.com/v1/chat/completions",
        "https://llm.example.com/v1/chat/completions/",
        "https://llm.example.com",
    ],
)
async def test_url_forms(
    api_url: str, client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(return_value=ok("a fox"))
    await writer(client, clock, api_url=api_url).write(ITEM)
    assert route.call_count == 1


# ------------------------------------------------------------------------------ answers


@pytest.mark.parametrize(
    ("response", "prompt"),
    [
        (answer("a red fox"), "a red fox"),
        (answer('<think>hmm</think>\n"a red fox"'), "a red fox"),
        (answer("thinking about it</think>a red fox"), "a red fox"),
        (
            answer(
                [
                    {"type": "reasoning", "text": "secret thoughts"},
                    {"type": "text", "text": "a red fox", "thought": True},
                    {"type": "text", "text": "a blue fox"},
                    {"type": "output_text", "text": ", snow"},
                ]
            ),
            "a blue fox, snow",
        ),
        (answer("a red fox", reasoning_content="long chain of thought"), "a red fox"),
        ({"data": answer("a wrapped fox")}, "a wrapped fox"),
        (answer(None, text="a text fox"), "a text fox"),
        (answer("Sure, here's the prompt:\n```\nPrompt: a red fox\n```"), "a red fox"),
        ({"choices": [{"text": "a legacy fox", "finish_reason": "stop"}]}, "a legacy fox"),
    ],
)
async def test_answer_shapes(
    response: dict[str, Any],
    prompt: str,
    client: httpx.AsyncClient,
    clock: FakeClock,
    router: respx.Router,
) -> None:
    router.post(URL).mock(return_value=httpx.Response(200, json=response))
    result = await writer(client, clock).write(ITEM)
    assert result.prompt == prompt


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (
            answer("", finish_reason="length"),
            BadResponseError,
            "whole token budget (max_tokens=300)",
        ),
        (
            answer(None, reasoning_content="I think...", finish_reason="length"),
            BadResponseError,
            "on reasoning",
        ),
        (answer(None, reasoning_content="I think..."), BadResponseError, "only with reasoning"),
        (answer("", reasoning="a fox, thought about"), BadResponseError, "only with reasoning"),
        (
            answer("<think>never finished", finish_reason="length"),
            BadResponseError,
            "never finished",
        ),
        (answer(""), BadResponseError, "empty"),
        (answer("<think>x</think>  "), BadResponseError, "no prompt"),
        (answer(None, refusal="I can't help with that."), ContentRefusedError, "refused"),
        (answer("I'm sorry, but I can't help with that."), ContentRefusedError, "refused"),
        (answer("", finish_reason="content_filter"), ContentRefusedError, "content filter"),
        ({"choices": []}, BadResponseError, "no choices"),
        ({"error": {"message": "upstream exploded"}}, BadResponseError, "upstream exploded"),
        ([1, 2], BadResponseError, "not a JSON object"),
    ],
)
async def test_unusable_answers(
    response: Any,
    error: type[Exception],
    words: str,
    client: httpx.AsyncClient,
    clock: FakeClock,
    router: respx.Router,
) -> None:
    route = router.post(URL).mock(return_value=httpx.Response(200, json=response))
    with pytest.raises(error) as info:
        await writer(client, clock).write(ITEM)
    assert words in str(info.value)
    assert "llm.example.com" in str(info.value)
    assert route.call_count == 1  # never retried


async def test_not_json_is_a_clear_error(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(URL).mock(return_value=httpx.Response(200, text="<html>login</html>"))
    with pytest.raises(BadResponseError, match=r"not JSON.*\[text\] api_url"):
        await writer(client, clock).write(ITEM)


async def test_prompt_is_capped_at_a_word_with_prefix_and_suffix(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(URL).mock(return_value=ok("one two three four five six seven eight nine ten"))
    w = writer(
        client,
        clock,
        prefix="PRE,",
        suffix=", SUF",
        negative_prompt=" blurry ",
        max_prompt_chars=30,
    )
    result = await w.write(ITEM)
    assert result.prompt == "PRE, one two three four, SUF"  # no space before the comma
    assert len(result.prompt) <= 30
    assert result.negative == "blurry"


# ------------------------------------------------------------------------------ fallbacks


def rejects(param: str, message: str) -> httpx.Response:
    return httpx.Response(
        400,
        json={
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": "unsupported_parameter",
            }
        },
    )


async def test_max_tokens_fallback_is_remembered(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(
        side_effect=[
            rejects(
                "max_tokens",
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            ),
            ok("a fox"),
            ok("a second fox"),
        ]
    )
    w = writer(client, clock)
    assert (await w.write(ITEM)).prompt == "a fox"
    assert "max_tokens" in sent(route, 0)
    assert sent(route, 1)["max_completion_tokens"] == 300
    assert "max_tokens" not in sent(route, 1)
    assert (await w.write(ITEM)).prompt == "a second fox"
    assert route.call_count == 3
    assert "max_completion_tokens" in sent(route, 2)
    assert clock.sleeps == []  # a fallback is not a retry


async def test_temperature_fallback_is_remembered(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(
        side_effect=[
            rejects("temperature", "Unsupported value: 'temperature' does not support 0.7"),
            ok("a fox"),
            ok("a fox again"),
        ]
    )
    w = writer(client, clock)
    await w.write(ITEM)
    await w.write(ITEM)
    assert "temperature" in sent(route, 0)
    assert "temperature" not in sent(route, 1)
    assert "temperature" not in sent(route, 2)


async def test_both_fallbacks_in_one_call_without_param_field(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(
        side_effect=[
            httpx.Response(400, json={"error": {"message": "max_tokens is not supported"}}),
            httpx.Response(400, json={"error": "temperature must be 1"}),
            ok("a fox"),
        ]
    )
    w = writer(client, clock)
    assert (await w.write(ITEM)).prompt == "a fox"
    last = sent(route, 2)
    assert "temperature" not in last
    assert last["max_completion_tokens"] == 300
    assert w.budget_field == "max_completion_tokens"
    assert w.send_temperature is False


async def test_fallback_does_not_loop(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(
        side_effect=[
            rejects("max_tokens", "max_tokens unsupported"),
            rejects("max_completion_tokens", "max_completion_tokens unsupported"),
        ]
    )
    with pytest.raises(PermanentProviderError, match="answered 400"):
        await writer(client, clock).write(ITEM)
    assert route.call_count == 2


async def test_other_400_is_permanent_and_not_retried(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(return_value=rejects("messages", "messages too long"))
    with pytest.raises(PermanentProviderError) as info:
        await writer(client, clock).write(ITEM)
    assert not isinstance(info.value, TransientProviderError)
    assert info.value.status == 400
    assert "messages too long" in info.value.body
    assert route.call_count == 1
    assert clock.sleeps == []


# ------------------------------------------------------------------------------ errors, retries


async def test_transient_errors_are_retried_with_backoff(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(
        side_effect=[
            httpx.Response(503, text="busy"),
            httpx.ConnectError("refused"),
            httpx.Response(408),
            ok("a fox"),
        ]
    )
    result = await writer(client, clock, attempts=4).write(ITEM)
    assert result.prompt == "a fox"
    assert route.call_count == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]  # equal jitter with rng 0: half of 1, 2, 4


async def test_transient_errors_give_up_after_the_attempts(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(TransientProviderError, match="did not answer in time"):
        await writer(client, clock, attempts=3).write(ITEM)
    assert route.call_count == 3
    assert len(clock.sleeps) == 2


async def test_429_honours_retry_after_seconds(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), ok("a fox")]
    )
    assert (await writer(client, clock).write(ITEM)).prompt == "a fox"
    assert clock.sleeps == [7.0]


async def test_429_honours_retry_after_http_date(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    when = email.utils.formatdate(clock.wall + 42, usegmt=True)
    router.post(URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": when}), ok("a fox")]
    )
    await writer(client, clock).write(ITEM)
    assert clock.sleeps == [42.0]


async def test_429_with_retry_after_over_the_cap_gives_up_at_once(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"}, json={"error": "slow"})
    )
    w = PromptWriter(
        settings(),
        client,
        clock=clock,
        retry=no_jitter_policy(5, max_retry_after=300.0),
    )
    with pytest.raises(RateLimitedError) as info:
        await w.write(ITEM)
    assert info.value.retry_after == 3600.0
    assert route.call_count == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "error", "hint"),
    [
        (401, AuthError, "check [text] api_key"),
        (403, AuthError, "check [text] api_key"),
        (404, PermanentProviderError, "check [text] api_url and model"),
    ],
)
async def test_permanent_statuses(
    status: int,
    error: type[Exception],
    hint: str,
    client: httpx.AsyncClient,
    clock: FakeClock,
    router: respx.Router,
) -> None:
    route = router.post(URL).mock(
        return_value=httpx.Response(status, json={"error": {"message": "nope"}})
    )
    with pytest.raises(error) as info:
        await writer(client, clock).write(ITEM)
    text = str(info.value)
    assert f"the prompt API at llm.example.com answered {status} (nope)" in text
    assert hint in text
    assert route.call_count == 1


async def test_deadline_per_call_cancels_cleanly(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(30)
        return ok("never")

    router.post(URL).mock(side_effect=hang)
    with anyio.fail_after(5):
        with pytest.raises(TransientProviderError, match="did not answer in time"):
            await writer(client, clock, attempts=1, timeout_seconds=0.05).write(ITEM)


async def test_concurrency_limit(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    slow = InFlight(lambda: ok("a fox"))
    router.post(URL).mock(side_effect=slow)
    w = writer(client, clock, limits=LimitsSettings(text_concurrency=2))
    results: list[str] = []

    async def one() -> None:
        results.append((await w.write(ITEM)).prompt)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    assert results == ["a fox"] * 6
    assert slow.peak == 2


async def test_cancelling_a_write_leaves_the_writer_usable(
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
        return ok("a fox")

    router.post(URL).mock(side_effect=first_hangs)
    w = writer(client, clock, limits=LimitsSettings(text_concurrency=1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.write, ITEM)
        await started.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(5):
        assert (await w.write(ITEM)).prompt == "a fox"  # the limiter slot was released


# ------------------------------------------------------------------------------ template mode


async def test_template_mode_needs_no_api(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    w = writer(
        client,
        clock,
        mode="template",
        api_url="",
        template="{{char}} ({{Description}}; {{personality}}; {{scenario}}) with {{user}}: "
        "{{message}} {{unknown}}",
        prefix="anime style,",
    )
    item = PromptInput(
        reply="<p>She <b>waves</b>.</p>\n\nThen smiles.",
        speaker="Alice",
        card=CardInfo("Alice", "red hair", "cheerful", "a glade"),
        user="Bob",
    )
    result = await w.write(item)
    assert result.prompt == (
        "anime style, Alice (red hair; cheerful; a glade) with Bob: She waves. Then smiles. "
        "{{unknown}}"
    )
    assert len(router.calls) == 0
    await w.check()  # nothing to check
    assert len(router.calls) == 0


async def test_template_mode_without_card_uses_the_speaker(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    w = writer(client, clock, mode="template", api_url="")
    assert (await w.write(ITEM)).prompt == "Alice: Alice smiles in the glade."


async def test_empty_template_result_is_an_error(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    w = writer(client, clock, mode="template", api_url="", template="   ")
    with pytest.raises(BadResponseError, match="empty"):
        await w.write(ITEM)


# ------------------------------------------------------------------------------ check


async def test_check_sends_one_tiny_request(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(URL).mock(return_value=ok(""))  # an empty answer is fine for a check
    await writer(client, clock).check()
    body = sent(route)
    assert body["max_tokens"] == 16
    assert body["messages"] == [{"role": "user", "content": "Reply with the single word OK."}]


async def test_check_reports_a_bad_key(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(URL).mock(return_value=httpx.Response(401, json={"error": "bad key"}))
    with pytest.raises(AuthError, match=r"check \[text\] api_key"):
        await writer(client, clock).check()


async def test_llm_mode_needs_an_url(client: httpx.AsyncClient, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match=r"\[text\] api_url is empty"):
        PromptWriter(settings(api_url=""), client, clock=clock)


async def test_a_value_error_about_max_tokens_is_not_a_fallback(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    error = {
        "message": "max_tokens is too large: 300000. This model supports at most 4096.",
        "param": "max_tokens",
        "code": "invalid_value",
    }
    route = router.post(URL).mock(return_value=httpx.Response(400, json={"error": error}))
    w = writer(client, clock)
    with pytest.raises(PermanentProviderError, match="max_tokens is too large"):
        await w.write(ITEM)
    assert route.call_count == 1
    assert w.budget_field == "max_tokens"


async def test_an_endless_answer_is_cut_and_refused(
    client: httpx.AsyncClient,
    clock: FakeClock,
    router: respx.Router,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("daemon.providers.text.MAX_ANSWER_BYTES", 1000)
    router.post(URL).mock(return_value=httpx.Response(200, text="x" * 5000))
    with pytest.raises(BadResponseError, match="more than 1000 bytes"):
        await writer(client, clock).write(ITEM)
