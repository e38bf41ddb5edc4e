"""The API's typed request bodies: each route's body type takes good JSON, refuses bad JSON
with the status and message the API answers (that every route reads its body through one is
held by ``tests/ops/test_structure.py``)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from daemon.web.bodies import (
    MAX_CHANGES,
    MAX_PROMPT,
    MAX_TEXT,
    MAX_UPLOAD_BYTES,
    MAX_VALUE_CHARS,
    AcceptBody,
    BodyError,
    CancelQueuedBody,
    CharacterBody,
    EmptyBody,
    GenerateBody,
    PauseBody,
    PreviewBody,
    ReferenceBody,
    RegenBody,
    SettingsBody,
    SettingsCheckBody,
    UserTokenBody,
)


def test_good_bodies_become_typed_values() -> None:
    assert AcceptBody.parse({}).keep is None
    assert AcceptBody.parse({"keep": [1, 3]}).keep == (1, 3)
    assert RegenBody.parse({"prompt": "a lighthouse"}).prompt == "a lighthouse"
    assert GenerateBody.parse({"chat": "Alice", "chat_file": "c", "mesid": 2}) == GenerateBody(
        "Alice", "c", 2, False
    )
    assert PauseBody.parse({"paused": True}) == PauseBody(True, None)
    assert CancelQueuedBody.parse({"chat": "u/chats/A/a.jsonl"}).chat == "u/chats/A/a.jsonl"
    assert UserTokenBody.parse({"handles": "bob"}) == UserTokenBody(("bob",), "")
    assert EmptyBody.parse({"anything": 1}) == EmptyBody()


@pytest.mark.parametrize(
    ("parse", "data", "status", "words"),
    [
        (AcceptBody.parse, {"keep": []}, 422, "keep is a list"),
        (AcceptBody.parse, {"keep": [True]}, 422, "keep is a list"),
        (RegenBody.parse, {"prompt": "  "}, 422, "non-empty"),
        (RegenBody.parse, {"prompt": "x" * (MAX_PROMPT + 1)}, 422, "longer than"),
        (GenerateBody.parse, {"mesid": "2"}, 422, "whole number"),
        (GenerateBody.parse, {"mesid": -1}, 422, "starts at 0"),
        (GenerateBody.parse, {"force": "yes"}, 422, "true or false"),
        (GenerateBody.parse, {"chat": "/etc/passwd"}, 400, "relative to the data root"),
        (GenerateBody.parse, {"chat_file": "a\x00b"}, 400, "not a chat name"),
        (PauseBody.parse, {"paused": 1}, 422, "true or false"),
        (CancelQueuedBody.parse, {"chat": ""}, 422, "chat path"),
        (UserTokenBody.parse, {"handles": []}, 422, "user handles"),
        (UserTokenBody.parse, {"handles": ["a"], "label": 3}, 422, "label is a text"),
    ],
)
def test_bad_bodies_are_refused_with_the_apis_answer(
    parse: Any, data: dict[str, Any], status: int, words: str
) -> None:
    with pytest.raises(BodyError) as refused:
        parse(data)
    assert refused.value.status == status and words in refused.value.message


def test_accept_checks_the_numbers_against_the_job() -> None:
    AcceptBody.parse({"keep": [1, 2]}).check_against("J", 2)
    with pytest.raises(BodyError, match="no image 3"):
        AcceptBody.parse({"keep": [3]}).check_against("J", 2)


def test_the_settings_and_character_bodies_become_typed_values() -> None:
    saved = SettingsBody.parse({"changes": {"mode": "manual"}, "secrets": {"image.api_key": "k"}})
    assert saved == SettingsBody({"mode": "manual"}, {"image.api_key": "k"})
    assert SettingsBody.parse({}) == SettingsBody({}, {})
    check = SettingsCheckBody.parse({"section": "text", "changes": {"text.model": "m"}})
    assert check.section == "text" and check.settings.changes == {"text.model": "m"}
    preview = PreviewBody.parse({"style": {"prefix": " ink ", "negative": None}, "reply": ""})
    assert preview == PreviewBody("ink", "", "", None)
    character = CharacterBody.parse({"appearance": "red hair", "references": "default"})
    assert character == CharacterBody("red hair", None, None, "default")
    encoded = base64.b64encode(b"\x89PNG bytes").decode()
    assert ReferenceBody.parse({"data_base64": encoded}).image == b"\x89PNG bytes"


@pytest.mark.parametrize(
    ("parse", "data", "status", "words"),
    [
        (SettingsBody.parse, {"changes": []}, 422, "JSON objects"),
        (SettingsBody.parse, {"secrets": "k"}, 422, "JSON objects"),
        (SettingsBody.parse, {"changes": None}, 422, "JSON objects"),
        (SettingsBody.parse, {"changes": {"x" * 201: 1}}, 422, "dotted names"),
        (SettingsBody.parse, {"changes": {"mode": "x" * (MAX_VALUE_CHARS + 1)}}, 422, "longer"),
        (
            SettingsBody.parse,
            {"changes": {str(n): n for n in range(MAX_CHANGES + 1)}},
            413,
            "at most",
        ),
        (SettingsBody.parse, {"secrets": {"mode": "manual"}}, 422, "not a key"),
        (SettingsBody.parse, {"secrets": {"image.api_key": 3}}, 422, "not a key"),
        (SettingsCheckBody.parse, {}, 422, "image or text"),
        (SettingsCheckBody.parse, {"section": "web"}, 422, "image or text"),
        (SettingsCheckBody.parse, {"section": "text", "changes": 1}, 422, "JSON objects"),
        (PreviewBody.parse, {"style": "ink"}, 422, "style is an object"),
        (PreviewBody.parse, {"reply": 3}, 422, "reply a text"),
        (PreviewBody.parse, {"reply": "x" * (MAX_TEXT + 1)}, 422, "reply a text"),
        (PreviewBody.parse, {"style": {"prefix": 3}}, 422, "prefix is a text"),
        (CharacterBody.parse, {"appearance": ["red"]}, 422, "appearance is a text"),
        (CharacterBody.parse, {"negative": "x" * (MAX_TEXT + 1)}, 422, "at most 4000"),
        (CharacterBody.parse, {"style": 1}, 422, "style is a text"),
        (CharacterBody.parse, {"references": True}, 422, "on, off or default"),
        (ReferenceBody.parse, {}, 422, "data_base64 holds"),
        (ReferenceBody.parse, {"data_base64": "not base64!"}, 422, "not base64"),
        (
            ReferenceBody.parse,
            {"data_base64": base64.b64encode(b"\0" * (MAX_UPLOAD_BYTES + 1)).decode()},
            413,
            "larger than",
        ),
    ],
)
def test_bad_settings_and_character_bodies_are_refused(
    parse: Any, data: dict[str, Any], status: int, words: str
) -> None:
    with pytest.raises(BodyError) as refused:
        parse(data)
    assert refused.value.status == status and words in refused.value.message


def test_fields_a_type_does_not_know_are_ignored() -> None:
    """An older or newer client may send more: the known fields count, the rest is dropped."""
    assert SettingsBody.parse({"changes": {}, "colour": "red"}) == SettingsBody({}, {})
    assert CharacterBody.parse({"mood": 1}) == CharacterBody(None, None, None, None)
    assert PreviewBody.parse({"style": {"size": "1x1"}}) == PreviewBody("", "", "", None)
