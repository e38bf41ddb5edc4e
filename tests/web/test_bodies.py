"""The API's typed request bodies: each route's body type takes good JSON, refuses bad JSON
with the status and message the API answers, and every route reads its body through one."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from daemon.web.bodies import (
    MAX_PROMPT,
    AcceptBody,
    BodyError,
    CancelQueuedBody,
    EmptyBody,
    GenerateBody,
    PauseBody,
    RegenBody,
    UserTokenBody,
)

API = Path(__file__).resolve().parents[2] / "daemon" / "web" / "api.py"


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


def test_every_route_reads_its_body_through_a_type() -> None:
    """``_body`` (the raw JSON object) is read only by ``_parsed``, which hands it to a type."""
    tree = ast.parse(API.read_text(encoding="utf-8"))
    readers = {
        func.name
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(func)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "_body"
    }
    assert readers == {"_parsed"}
