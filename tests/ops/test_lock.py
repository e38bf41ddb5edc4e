"""One daemon per state dir: the second `run` exits 1 naming the first; the CLI works beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.engine.process.lock import AlreadyRunningError, hold_state_lock

BINARY = Path(sys.executable).parent / "st-imagegen"
HOLDER = """
import sys, time
from pathlib import Path
from daemon.engine.process.lock import hold_state_lock
with hold_state_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(state: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        with (
            pytest.raises(AlreadyRunningError, match=rf"PID {proc.pid}\b"),
            hold_state_lock(tmp_path),
        ):
            pass
    finally:
        proc.kill()  # kill -9: the kernel drops the flock with the process
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    with hold_state_lock(tmp_path) as path:
        assert path.read_text().strip() == str(os.getpid())


def test_a_second_run_exits_1_and_the_cli_keeps_working(
    st_root_latest: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f'data_root = "{st_root_latest}"\nstate_dir = "{state}"\n'
        '[text]\napi_url = "http://127.0.0.1:9/v1"\n[image]\napi_url = "http://127.0.0.1:9/v1"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ST_IMAGEGEN_", "NOTIFY_"))}
    first = subprocess.Popen(
        [str(BINARY), "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stderr is not None
        for line in first.stderr:  # JSON log lines; "ready" once the lock and the store are held
            if '"ready"' in line:
                break
        second = subprocess.run(
            [str(BINARY), "run", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"daemon (PID {first.pid}) is already running" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        listed = subprocess.run(
            [str(BINARY), "list", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert first.poll() is None  # the first daemon was not disturbed
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert first.stderr is not None
        first.stderr.close()
