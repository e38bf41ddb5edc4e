"""``st-imagegen status``: the heartbeat judgement, the report, text and JSON, the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.cli.commands import main
from daemon.cli.screens import cmd_status, render_status
from daemon.engine.process.notify import Heartbeat
from daemon.engine.process.status import (
    HEARTBEAT_STALE_SECONDS,
    daemon_status,
    gather_status,
    plain_age,
)
from daemon.engine.store import JobState
from tests.engine.test_commit_support import Harness, harness_for, make_config
from tests.stsim import STSim


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def harness(st_root_latest: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness_for(st_root_latest, tmp_path / "state") as h:
        yield h


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- the heartbeat -------------------------------------------------------------------------------


def test_no_heartbeat_means_not_running(tmp_path: Path) -> None:
    status = daemon_status(tmp_path / "heartbeat")
    assert not status.running
    assert status.detail == "not running (no heartbeat)"


def test_fresh_heartbeat_of_a_live_pid_is_running(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    Heartbeat(path, "0.1.0").write(watching=14)
    status = daemon_status(path)
    assert status.running and status.pid == os.getpid() and status.pid_alive is True
    assert status.watching == 14
    assert status.detail.startswith(f"running (pid {os.getpid()}, heartbeat ")
    assert "watching 14 chats" in status.detail


def test_stale_heartbeat_is_not_running(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    Heartbeat(path, "0.1.0").write(watching=1)
    later = time.time() + HEARTBEAT_STALE_SECONDS + 60  # 2 min with the 60 s threshold
    status = daemon_status(path, now=later)
    assert not status.running
    assert status.detail.startswith("not running (last heartbeat 2 min ago")
    assert daemon_status(path, now=time.time() + HEARTBEAT_STALE_SECONDS - 5).running


def test_fresh_heartbeat_of_a_missing_pid_says_so(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    path.write_text(json.dumps({"pid": _dead_pid(), "time": time.time(), "state": "running"}))
    status = daemon_status(path)
    assert status.running and status.pid_alive is False
    assert "does not exist here" in status.detail


def test_draining_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    Heartbeat(path, "0.1.0").write(watching=2, state="draining")
    assert daemon_status(path).detail.startswith("draining (stopping)")
    path.write_text("not json")
    assert daemon_status(path).detail == "not running (heartbeat file unreadable)"
    path.write_text(json.dumps({"pid": 1}))
    assert not daemon_status(path).running


def test_plain_age() -> None:
    assert [plain_age(s) for s in (3, 300, 7200, 5 * 86400)] == ["3 s", "5 min", "2 h", "5 days"]


# --- the report ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_report_counts_errors_and_waiting_messages(harness: Harness) -> None:
    h = harness
    path = h.root / "default-user" / "chats" / "Alice" / "Alice - new.jsonl"
    tab = STSim.create(path)
    tab.send_user("Hi.").save()
    tab.reply("Alice", "Hello!").save()
    committed = await h.accepted(path)
    assert (await h.committer.commit_job(committed)).state is JobState.COMMITTED
    tab.send_user("More?").save()  # the stale tab drops our message with this save
    tab.reply("Alice", "Sure.").save()
    swiped = await h.accepted(path, prompt="another")
    tab.swipe("Something else entirely.").save()
    assert (await h.committer.commit_job(swiped)).state is JobState.SUPERSEDED

    report = await gather_status(h.config, h.store)

    assert report.daemon.running is False
    assert report.data_root == str(h.root)
    assert report.users == ["default-user"]
    assert (report.chats, report.group_chats) == (5, 1)
    assert report.jobs["committed"] == 1 and report.jobs["superseded"] == 1
    # Regression: a supersede (or a regen) is history, not an error; real failures are.
    assert report.errors == []
    failing = await h.accepted(path, index=1, prompt="a third")
    assert await h.store.fail(failing.id, "image API: HTTP 500 three times") is not None
    report = await gather_status(h.config, h.store)
    assert [(e["job"], e["error"]) for e in report.errors] == [
        (failing.id, "image API: HTTP 500 three times")
    ]
    assert report.waiting_messages == 1 and report.waiting_chats == [committed.chat]
    text = render_status(report)
    assert "daemon: not running (no heartbeat)" in text
    assert "watching: 1 user (default-user), 5 chats (1 group chat)" in text
    assert "jobs: 1 committed, 1 superseded, 1 failed" in text
    assert "last errors:" in text and failing.id[:10] in text and swiped.id[:10] not in text
    assert "mode: auto, approval: manual" in text
    assert "waiting for SillyTavern: 1 image message in 1 chat" in text


@pytest.mark.anyio
async def test_waiting_messages_are_reported(harness: Harness) -> None:
    h = harness
    alice = next((h.root / "default-user" / "chats" / "Alice").glob("*.jsonl"))
    job = await h.accepted(alice)
    await h.committer.commit_job(job)
    report = await gather_status(h.config, h.store)
    assert report.waiting_messages == 1
    assert report.waiting_chats == [job.chat]
    assert "waiting for SillyTavern: 1 image message in 1 chat" in render_status(report)


def test_no_store_yet_and_no_data_root(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = make_config(tmp_path / "missing-root", state)
    out = io.StringIO()
    assert cmd_status(config, as_json=False, out=out) == 0
    text = out.getvalue()
    assert "data root: problem:" in text and "does not exist" in text
    assert "jobs: no jobs yet" in text
    assert not config.db_path.exists()  # status never creates the store


def test_cli_status_json(
    st_root_latest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(st_root_latest, tmp_path / "state")
    config.state_dir.mkdir()
    Heartbeat(config.heartbeat_path, "0.1.0").write(watching=5)
    assert main(["status", "--json", "--config", str(tmp_path / "config.toml")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["daemon"]["running"] is True
    assert data["daemon"]["watching"] == 5
    assert data["chats"] == 4 and data["group_chats"] == 1
    assert data["users"] == ["default-user"]
    assert set(data["jobs"]) == {s.value for s in JobState}
    assert data["mode"] == "auto"


def test_cli_status_text(
    st_root_latest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_config(st_root_latest, tmp_path / "state")
    assert main(["status", "--config", str(tmp_path / "config.toml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("daemon: not running (no heartbeat)\n")
    assert "4 chats (1 group chat)" in out
