"""Real SillyTavern servers for tests/realst: every pinned version started once, in parallel,
each on a free loopback port with a fresh data root, stopped at the end.

Without ``REAL_SILLYTAVERN`` (set by ``.ci/run``, which installs the servers) the tests
are skipped with that reason; with it set, a missing or broken server is a failure, never a
skip."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import fake_api, make_config  # noqa: F401 - fixtures
from tests.realst.stserver import ENV_VAR, VERSIONS, STServer, cache_dir, server_dir

TIMINGS = "realst-timings.json"
"""Written into the session's temp folder: how long each server took to start."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cache_dir() is not None:
        return
    skip = pytest.mark.skip(
        reason=f"{ENV_VAR} is not set: no real SillyTavern servers (.ci/run installs them)"
    )
    for item in items:
        if "tests/realst/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="package")  # stopped once tests/realst is done, not at the session's end
def st_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, STServer]]:
    cache = cache_dir()
    assert cache is not None, f"{ENV_VAR} is not set"
    base = tmp_path_factory.mktemp("sillytavern")
    servers: dict[str, STServer] = {}
    for version in VERSIONS:
        folder = server_dir(cache, version)
        assert (folder / "server.js").is_file(), (
            f"SillyTavern {version} is not installed at {folder} (.ci/run installs it)"
        )
        servers[version] = STServer(
            version, folder, base / version / "data", base / f"sillytavern-{version}.log"
        )
    try:
        for server in servers.values():  # all spawned first: they boot side by side
            server.start()
        for server in servers.values():
            server.wait_ready()
        timings = {v: round(s.started_in, 1) for v, s in servers.items()}
        (base / TIMINGS).write_text(json.dumps(timings) + "\n", encoding="utf-8")
        print(f"\nSillyTavern servers ready (seconds from spawn): {timings}", file=sys.stderr)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(params=VERSIONS)
def st(request: pytest.FixtureRequest, st_servers: dict[str, STServer]) -> STServer:
    """One real SillyTavern server (each test runs on every pinned version)."""
    server: STServer = st_servers[request.param]
    return server


SHOTS_VAR = "REAL_SILLYTAVERN_SCREENSHOTS"
"""A folder for the screenshots (the docs' are taken with it set to docs/); else tmp_path."""


def shot_path(tmp_path: Path, name: str) -> Path:
    folder = os.environ.get(SHOTS_VAR, "").strip()
    return (Path(folder) if folder else tmp_path) / name
