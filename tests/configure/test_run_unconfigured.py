"""`st-imagegen run --data-root PATH` with no API settings: a real process starts, watches,
serves the inbox (the setup screen), prints its address, and `status` points there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

BINARY = Path(sys.executable).parent / "st-imagegen"
START_TIMEOUT = 30.0


def _setup_address(log: str) -> str | None:
    """The address the "not set up yet" line names (the log is JSON lines off a terminal)."""
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if str(record.get("event", "")).startswith("not set up yet"):
            return str(record["open"])
    return None


def test_run_without_any_api_settings_starts_and_says_where_to_set_up(
    st_root_latest: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
    env |= {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),  # no config file there yet
        "ST_IMAGEGEN_STATE_DIR": str(tmp_path / "state"),
        "ST_IMAGEGEN_WEB__PORT": "0",
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BINARY), "run", "--data-root", str(st_root_latest)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            found: str | None = None
            while found is None:
                text = log.read_text(encoding="utf-8", errors="replace")
                found = _setup_address(text)
                assert proc.poll() is None, f"the daemon exited: {text[-2000:]}"
                assert time.monotonic() < deadline, f"no address printed: {text[-2000:]}"
                time.sleep(0.05)
            url = found.rstrip("/")
            assert "web inbox" in text and "watching" in text
            first = httpx.get(url + "/", follow_redirects=False, timeout=10)
            assert first.status_code == 303 and first.headers["location"] == "/setup"
            assert "Set up st-imagegen" in httpx.get(url + "/setup", timeout=10).text
            status = subprocess.run(
                [str(BINARY), "status", "--data-root", str(st_root_latest)],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert f"setup: not set up yet (image service, prompt writer): open {url}/" in (
                status.stdout
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert proc.returncode == 0
