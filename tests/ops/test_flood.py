"""The inbox under a connection flood: the real daemon as a process under a 1,024 descriptor limit
(``prlimit``), about 2,000 connections that never finish their request head, for 20 s.

Throughout: every request with the token is answered (the median within 1 s, none held as long
as a starved one would be), a commit started during the flood completes, the systemd watchdog
keeps being pinged (the engine's heartbeat loop is never starved), and the daemon logs fewer
than 100 lines.
"""

from __future__ import annotations

import itertools
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.ops.fakeapi import GOOD_KEY, fake_api
from tests.ops.test_daemon_process import (
    BINARY,
    REPO,
    START_TIMEOUT,
    _clean_env,
    _daemon,
    _output,
    _receive_all,
    _wait_for,
)

pytestmark = pytest.mark.slow

FD_LIMIT = 1024
FLOOD_CONNECTIONS = 2000
FLOOD_SECONDS = 20.0
ANSWER_WITHIN = 1.0  # a token-bearing request's median answer during the flood
STARVED_AFTER = 5.0
"""No answer may take this long: a request starved by the flood waits for the half-open heads
ahead of it to be timed out (``web.header_timeout_seconds``, 5 s). One answer over 1 s alone
is a busy machine (seen at 1.02 s with a second test suite beside), not starvation."""
PROBE_EVERY = 0.25
WATCHDOG_USEC = 1_000_000  # the daemon pings every 0.5 s
WATCHDOG_GAP = 2.5  # longest silence allowed between two pings
COMMIT_WITHIN = 30.0
MAX_LOG_LINES = 100


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_a_connection_flood_cannot_starve_the_inbox_or_the_engine(
    st_root_latest: Path, tmp_path: Path
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < FLOOD_CONNECTIONS + 200:
        pytest.skip(f"the flood needs {FLOOD_CONNECTIONS + 200} descriptors (hard {hard})")
    notify = tmp_path / "notify"
    watchdog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    watchdog.bind(str(notify))
    watchdog.setblocking(False)
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    with fake_api() as api:
        config.write_text(
            f'data_root = "{st_root_latest}"\nstate_dir = "{state}"\nmode = "manual"\n'
            f'[text]\napi_url = "{api.base_url}"\napi_key = "{GOOD_KEY}"\n'
            f'[image]\napi_url = "{api.base_url}"\napi_key = "{GOOD_KEY}"\n'
            'response_format = "b64_json"\n'
            "[web]\nport = 0\nrequire_token = true\n",
            encoding="utf-8",
        )
        env = _clean_env() | {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        argv = ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", str(BINARY), "run"]
        logs = tmp_path / "daemon.log"
        with watchdog, _daemon([*argv, "--config", str(config)], env, logs) as proc:
            try:
                _flood_run(proc, state, watchdog, logs)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- daemon output ---\n{_output(logs)}") from None


def _flood_run(
    proc: subprocess.Popen[bytes], state: Path, watchdog: socket.socket, logs: Path
) -> None:
    address = state / "web.json"
    _wait_for("the inbox", address.exists, START_TIMEOUT, proc)
    url = json.loads(address.read_text(encoding="utf-8"))["url"].rstrip("/")
    port = int(json.loads(address.read_text(encoding="utf-8"))["port"])
    token = (state / "web-token").read_text(encoding="utf-8").strip()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=10.0) as client:
        made = client.post("/api/v1/generate", json={})
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        _wait_for(
            "a pending job",
            lambda: client.get(f"/api/v1/jobs/{job_id}").json()["state"] == "pending",
            COMMIT_WITHIN,
            proc,
        )
    lines_before = len(logs.read_bytes().splitlines())
    _receive_all(watchdog)  # only the pings from now on count
    pings: list[float] = [time.monotonic()]
    slow: list[tuple[float, str]] = []
    took_all: list[float] = []
    accepted = False
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ops.flood",
            str(port),
            str(FLOOD_CONNECTIONS),
            str(FLOOD_SECONDS),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
    ) as flood:
        time.sleep(1.0)  # the flood is up (its connections are opened in a burst)
        started = time.monotonic()
        # A fresh connection for every request ("Connection: close"), as a tab opening the
        # inbox would; one client, so its own set-up is not what is timed.
        fresh = {**auth, "Connection": "close"}
        with httpx.Client(base_url=url, headers=fresh, timeout=STARVED_AFTER) as probe:
            while time.monotonic() - started < FLOOD_SECONDS - 2.0:
                pings.extend(time.monotonic() for m in _receive_all(watchdog) if "WATCHDOG=1" in m)
                begin = time.monotonic()
                try:
                    if not accepted and time.monotonic() - started > 2.0:
                        answer = probe.post(f"/api/v1/jobs/{job_id}/accept", json={})
                        accepted = answer.status_code == 200
                        assert accepted, answer.text
                    else:
                        answer = probe.get("/api/v1/jobs", params={"limit": 5})
                        assert answer.status_code == 200, answer.text
                except httpx.HTTPError as exc:
                    slow.append((round(begin - started, 2), type(exc).__name__))
                took = time.monotonic() - begin
                took_all.append(took)
                if took > STARVED_AFTER:
                    slow.append((round(begin - started, 2), f"{took:.2f} s"))
                time.sleep(PROBE_EVERY)
        out, _ = flood.communicate(timeout=FLOOD_SECONDS + 30)
        opened = int(out.decode().strip() or 0)
        pings.extend(time.monotonic() for m in _receive_all(watchdog) if "WATCHDOG=1" in m)
    assert opened >= FLOOD_CONNECTIONS, opened
    assert not slow, f"failed or slower than {STARVED_AFTER} s: {slow} (flood opened {opened})"
    median = statistics.median(took_all)
    assert median < ANSWER_WITHIN, f"median answer {median:.2f} s: {sorted(took_all)[-5:]}"
    assert accepted
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) > FLOOD_SECONDS and max(gaps) < WATCHDOG_GAP, f"watchdog gaps {gaps}"
    with httpx.Client(base_url=url, headers=auth, timeout=10.0) as client:
        _wait_for(
            "the commit",
            lambda: client.get(f"/api/v1/jobs/{job_id}").json()["state"] == "committed",
            COMMIT_WITHIN,
            proc,
        )
    flood_lines = logs.read_bytes().splitlines()[lines_before:]
    assert len(flood_lines) < MAX_LOG_LINES, b"\n".join(flood_lines[-20:]).decode()
    assert proc.poll() is None
