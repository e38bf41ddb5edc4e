"""Cleaning replies before sending and answers before using them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.providers.cleanup import (
    ThinkingUnfinished,
    cap_at_word,
    clean_answer,
    clean_reply,
    is_refusal,
    join_prompt,
    strip_think,
)


@pytest.mark.parametrize(
    ("answer", "prompt"),
    [
        ("a red fox in snow", "a red fox in snow"),
        ("<think>let me think\nabout it</think>\na red fox in snow", "a red fox in snow"),
        ("<THINK>x</THINK>a fox<think>more</think> in snow", "a fox in snow"),
        ("prefilled reasoning...</think>\n\na red fox", "a red fox"),
        ("<think>a</think>b</think>a red fox", "a red fox"),
        ("a red fox <think>unfinished", "a red fox"),
        ("<thinking>hmm</thinking>a red fox", "a red fox"),
        ('"a red fox in snow"', "a red fox in snow"),
        ("“a red fox in snow”", "a red fox in snow"),
        ("'a red fox'", "a red fox"),
        ("Sure, here's the prompt:\n\na red fox in snow", "a red fox in snow"),
        ('Sure! Here is an image prompt for the scene:\n"a red fox"', "a red fox"),
        ("Here's a prompt: a red fox, snow", "a red fox, snow"),
        ("Prompt: a red fox", "a red fox"),
        ("**Prompt:** a red fox", "a red fox"),
        ("Image prompt: a red fox", "a red fox"),
        ("```\na red fox\n```", "a red fox"),
        ("```text\na red fox,\nsnow\n```", "a red fox, snow"),
        ('Here you go:\n```\nPrompt: "a red fox"\n```\nEnjoy!', "a red fox"),
        ("a red fox,\n\nsnowy forest,\r\nsoft light", "a red fox, snowy forest, soft light"),
        ("1. a red fox in snow\n2. a fox at night", "a red fox in snow"),
        ("a red fox in snow\n\nNote: I focused on the fox.", "a red fox in snow"),
        ("**a red fox**", "a red fox"),
        ("a red fox\nsnowy forest\nsoft light.", "a red fox, snowy forest, soft light."),
        ("a red fox, snow\n**Negative prompt:** blurry, lowres", "a red fox, snow"),
        ("This is a dark forest scene: tall pines", "This is a dark forest scene: tall pines"),
        ("", ""),
        ("   \n  ", ""),
        ("<think>only thoughts</think>", ""),
    ],
)
def test_clean_answer(answer: str, prompt: str) -> None:
    assert clean_answer(answer) == prompt


@pytest.mark.parametrize("answer", ["<think>still thinking", "  <think>\nabc", "<reasoning>x"])
def test_unclosed_think_at_start_is_no_prompt(answer: str) -> None:
    with pytest.raises(ThinkingUnfinished):
        clean_answer(answer)


def test_strip_think_on_replies_never_raises() -> None:
    assert strip_think("<think>never closed", unclosed_is_error=False) == ""


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I can't create that content.",
        "I cannot write this prompt.",
        "Sorry, I won't do that.",
        "As an AI language model, I must decline.",
        "I’m unable to help with this.",
        "I am unable to comply.",
        "I apologize, but this request violates policy.",
    ],
)
def test_refusals_are_detected(text: str) -> None:
    assert is_refusal(clean_answer(text))


@pytest.mark.parametrize(
    "text", ["a sorry-looking dog in the rain", "Icy mountains at dawn", "I-beam steel bridge"]
)
def test_prompts_are_not_refusals(text: str) -> None:
    assert not is_refusal(text)


def test_clean_reply_strips_think_and_html_and_keeps_paragraphs() -> None:
    reply = (
        "<think>plan the scene</think><p>Alice <b>smiles</b> &amp; waves.</p>"
        "<style>p{color:red}</style><div>The   sun\nrises.</div><br>\n\n\n<i>end</i>"
    )
    assert clean_reply(reply) == "Alice smiles & waves.\nThe sun\nrises.\n\nend"


def test_clean_reply_keeps_angle_brackets_that_are_not_tags() -> None:
    assert clean_reply("3 < 5 and 7 > 2, <3") == "3 < 5 and 7 > 2, <3"


def test_cap_at_word() -> None:
    assert cap_at_word("a red fox in the snow", 100) == "a red fox in the snow"
    assert cap_at_word("a red fox in the snow", 12) == "a red fox in"
    assert cap_at_word("a red fox, in the snow", 10) == "a red fox"
    assert cap_at_word("x" * 50, 10) == "x" * 10


# No per-example deadline: a loaded CI machine must not turn slowness into a failure.
@settings(deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=200))
def test_cap_never_exceeds_the_limit(text: str, limit: int) -> None:
    assert len(cap_at_word(text, limit)) <= limit


@settings(deadline=None)
@given(st.text())
def test_clean_answer_is_total(text: str) -> None:
    try:
        out = clean_answer(text)
    except ThinkingUnfinished:
        return
    assert "\n" not in out
    assert "<think>" not in out.lower()


@pytest.mark.parametrize(
    ("prefix", "suffix", "joined"),
    [
        ("", ", soft light", "a red lantern, soft light"),  # regression: was "lantern , soft"
        ("", "soft light", "a red lantern, soft light"),
        ("anime style,", "", "anime style, a red lantern"),
        ("anime style", "", "anime style, a red lantern"),
        (" masterpiece, ", " ; 4k ", "masterpiece, a red lantern; 4k"),
        ("", "", "a red lantern"),
    ],
)
def test_join_prompt_reads_as_a_user_writes_it(prefix: str, suffix: str, joined: str) -> None:
    assert join_prompt(prefix, "a red lantern", suffix) == joined


def test_join_prompt_drops_the_cores_own_stop_before_a_separator() -> None:
    assert join_prompt("", "a red lantern.", ", soft light") == "a red lantern, soft light"
