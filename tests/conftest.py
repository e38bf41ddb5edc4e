"""Shared fixtures: copies of real SillyTavern data roots in tmp_path; a parse counter."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import daemon.tavern.chat as chat_mod

FIXTURES = Path(__file__).parent / "fixtures"
ST_VERSIONS = ("st-1.12", "st-1.14", "st-1.18")


@pytest.fixture(params=ST_VERSIONS)
def st_root(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A writable copy of one real ST data root (the folder holding ``default-user/``)."""
    dest = tmp_path / "data"
    shutil.copytree(FIXTURES / str(request.param), dest)
    return dest


@pytest.fixture
def st_root_latest(tmp_path: Path) -> Path:
    dest = tmp_path / "data"
    shutil.copytree(FIXTURES / "st-1.18", dest)
    return dest


def count_parsed_lines(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """From now on (until ``monkeypatch.undo()``), every line the chat codec parses as JSON is
    appended to the returned list: tests check how little of a big chat a lookup parses."""
    parsed: list[bytes] = []
    real = chat_mod.parse_line

    def counting(raw: bytes) -> dict[str, Any] | None:
        parsed.append(raw)
        return real(raw)

    monkeypatch.setattr(chat_mod, "parse_line", counting)
    return parsed
