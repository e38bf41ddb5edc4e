"""``st-imagegen accept``'s quick path against a real running daemon process: two accepts of the
same job racing from two processes end with one accept, the winner returns once the daemon has
committed it (or says it is still to come), and the images are in the chat exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.engine.conftest import FakeAPI, config_toml
from tests.engine.test_cli import cli
from tests.stsim import STSim

BINARY = Path(sys.executable).with_name("st-imagegen")
START_TIMEOUT = 30.0  # from spawn to the first heartbeat
PENDING_TIMEOUT = 60.0  # a new reply to its images waiting (prompt and image from the fake API)
COMMIT_TIMEOUT = 60.0  # accepted to committed into the chat
ACCEPT_TIMEOUT = 60.0  # one `st-imagegen accept` process
STOP_TIMEOUT = 10.0
POLL = 0.05

pytestmark = pytest.mark.slow


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) before {what}")
        time.sleep(POLL)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _states(db: Path) -> dict[str, str]:
    """Job id -> state, read as `st-imagegen list` reads (read-only; none while there is no
    store yet)."""
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return dict(conn.execute("SELECT id, state FROM jobs").fetchall())


def _seen(db: Path) -> set[str]:
    """The chats the daemon has read once (it keeps where each ends)."""
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return {row[0] for row in conn.execute("SELECT chat FROM cursors")}
        except sqlite3.OperationalError:  # the schema is being created
            return set()


_RACER = (
    "import sys\n"
    "from daemon.cli import quick\n"
    "from daemon.cli.commands import main\n"
    "answered = []\n"
    "original = quick.quick\n"
    "def spy(args):\n"
    "    answered.append(True)\n"
    "    result = original(args)\n"
    "    answered[-1] = result is not None\n"
    "    return result\n"
    "quick.quick = spy\n"
    "code = main(sys.argv[1:])\n"
    "print('QUICK', answered == [True], file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def test_accepts_racing_from_two_processes_commit_once(
    st_root_latest: Path,
    tmp_path: Path,
    fake_api: FakeAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_toml(st_root_latest, state, fake_api), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
    c = ["--config", str(cfg)]
    logs = tmp_path / "daemon.log"
    with logs.open("wb") as log:
        daemon = subprocess.Popen(
            [str(BINARY), "run", *c], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        _wait_for("the heartbeat", (state / "heartbeat").exists, START_TIMEOUT, daemon)
        chat = next((st_root_latest / "default-user" / "chats" / "Alice").glob("*.jsonl"))
        rel = chat.relative_to(st_root_latest).as_posix()
        # Its first sight of the chat takes what is there as history: reply after it.
        _wait_for("the chat seen", lambda: rel in _seen(state / "state.db"), START_TIMEOUT, daemon)
        tab = STSim.open(chat, character="Alice", clock=lambda: datetime.now(UTC))
        tab.send_user("Show me the greenhouse at dawn.").save()
        tab.reply(text="*She opens the door.* Look: the first light on the glass.").save()
        db = state / "state.db"
        _wait_for(
            "a pending job", lambda: "pending" in _states(db).values(), PENDING_TIMEOUT, daemon
        )
        (job_id,) = [i for i, s in _states(db).items() if s == "pending"]
        assert cli(capsys, "list", *c)[0] == 0  # validates the config, then stamps it

        racers = [
            subprocess.Popen(
                [sys.executable, "-c", _RACER, "accept", job_id[:12], *c],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(r.wait(ACCEPT_TIMEOUT), *r.communicate()) for r in racers]
        assert all("QUICK True" in err for _, _, err in results), results  # no engine in either
        won = [r for r in results if r[0] == 0]
        lost = [r for r in results if r[0] != 0]
        assert len(won) == 1 and len(lost) == 1, results
        assert won[0][1] == f"accepted {job_id} (1 image)\n"
        assert "not running" not in won[0][2]  # the daemon runs: it commits now
        assert lost[0][0] == 1 and f"cannot accept job {job_id}: it is " in lost[0][2]
        # The winner waited for the daemon's commit, or said it is still to come.
        later = "into its chat yet; it will" in won[0][2]
        assert later or _states(db)[job_id] == "committed", results

        _wait_for("the commit", lambda: _states(db)[job_id] == "committed", COMMIT_TIMEOUT, daemon)
        code, _, err = cli(capsys, "accept", job_id, *c)  # once committed: refused, no change
        assert code == 1 and "it is committed" in err
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=STOP_TIMEOUT) == 0
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        output = logs.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise AssertionError(f"{exc}\n--- daemon output ---\n{output}") from None
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=STOP_TIMEOUT)
    lines = [json.loads(line) for line in chat.read_text(encoding="utf-8").splitlines() if line]
    ours = [m for m in lines if (m.get("extra") or {}).get("st_imagegen_job") == job_id]
    assert len(ours) == 1  # committed once, right after the reply it illustrates
    assert lines.index(ours[0]) == len(lines) - 1
