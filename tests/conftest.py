"""Shared fixtures: copies of real SillyTavern data roots in tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
