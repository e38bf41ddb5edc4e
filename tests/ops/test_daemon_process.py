"""The real daemon as a process: systemd's notify protocol, and the Docker image's entry command.

Both start ``st-imagegen run`` from the venv as a subprocess against a copy of a real ST data root
and a fake API on 127.0.0.1, and stop it with SIGTERM as systemd and Docker do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.ops.dockerfile import ImageSpec, parse_dockerfile
from tests.ops.fakeapi import GOOD_KEY, FakeAPI, fake_api
from tests.stsim import STSim

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "st-1.18"
VENV_BIN = Path(sys.executable).parent
BINARY = VENV_BIN / "st-imagegen"

START_TIMEOUT = 30.0  # from spawn to READY / healthy
DOCKER_STOP_TIMEOUT = 10.0  # `docker stop`'s default before SIGKILL
NOTIFY_WATCHDOG_USEC = 400_000  # pings every 0.2 s in the test
POLL = 0.05

pytestmark = pytest.mark.slow


def _wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) before {what}")
        time.sleep(POLL)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _clean_env() -> dict[str, str]:
    """The test's environment without anything that would configure the daemon."""
    drop = ("ST_IMAGEGEN_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@contextmanager
def _daemon(argv: list[str], env: dict[str, str], logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv``; on the way out make sure it is gone (SIGKILL only as a last resort)."""
    with logs.open("wb") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=logs.parent
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _output(logs: Path) -> str:
    return logs.read_text(encoding="utf-8", errors="replace")[-4000:]


def _new_reply(root: Path) -> None:
    """Alice answers in her chat, saved the way ST saves (temp file, then rename)."""
    chat = next((root / "default-user" / "chats" / "Alice").glob("*.jsonl"))
    tab = STSim.open(chat, character="Alice", clock=lambda: datetime.now(UTC))
    tab.send_user("Show me the greenhouse at dawn.").save()
    tab.reply(text="*She opens the door.* Look: the first light on the glass.").save()


# --- systemd notify ----------------------------------------------------------------------------


def _receive_all(sock: socket.socket) -> list[str]:
    messages: list[str] = []
    while True:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, TimeoutError):
            return messages
        messages.append(data.decode())


def test_notify_ready_watchdog_and_stopping(st_root_latest: Path, tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    config = tmp_path / "config.toml"
    unused = "http://127.0.0.1:9/v1"  # no reply arrives, so no API is asked
    config.write_text(
        f'data_root = "{st_root_latest}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[text]\napi_url = "{unused}"\n[image]\napi_url = "{unused}"\n',
        encoding="utf-8",
    )
    env = _clean_env() | {
        "NOTIFY_SOCKET": str(notify),
        "WATCHDOG_USEC": str(NOTIFY_WATCHDOG_USEC),
    }
    received: list[str] = []

    def seen(field: str, times: int = 1) -> Callable[[], bool]:
        def check() -> bool:
            received.extend(_receive_all(sock))
            return sum(field in m.splitlines() for m in received) >= times

        return check

    logs = tmp_path / "daemon.log"
    with sock, _daemon([str(BINARY), "run", "--config", str(config)], env, logs) as proc:
        try:
            _wait_for("READY=1", seen("READY=1"), START_TIMEOUT, proc)
            ready = next(m for m in received if "READY=1" in m.splitlines())
            assert f"MAINPID={proc.pid}" in ready.splitlines()
            # The main loop pings at half of WATCHDOG_USEC: several pings within a second.
            _wait_for("three WATCHDOG=1", seen("WATCHDOG=1", 3), 5.0, proc)
            proc.send_signal(signal.SIGTERM)
            _wait_for("STOPPING=1", seen("STOPPING=1"), DOCKER_STOP_TIMEOUT)
            assert proc.wait(timeout=DOCKER_STOP_TIMEOUT) == 0
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon output ---\n{_output(logs)}") from None
    order = [m.splitlines()[0] for m in received]
    assert order.index("READY=1") < len(order) - 1 - order[::-1].index("STOPPING=1")
    assert not any(f"{GOOD_KEY}" in m for m in received)


# --- Docker's entry command --------------------------------------------------------------------
#
# The image's ENTRYPOINT, CMD, ENV, HEALTHCHECK and STOPSIGNAL are read from the Dockerfile itself.
# Its mount points (/config, /state, /data) and /opt/venv become folders on the host. The process
# runs as the test's own user: the image's USER (uid 1000) cannot be used here because this
# machine's interpreter lives under /root, which only root can enter; the static test checks USER.


def _host_paths(world: Path) -> dict[str, Path]:
    """The image's mount points, as folders on the host."""
    return {"/config": world / "config", "/state": world / "state", "/data": world / "data"}


def _docker_env(spec: ImageSpec, world: Path, api: FakeAPI) -> dict[str, str]:
    """The image's ENV with its paths mapped to the host, plus what compose would add."""
    mounts = _host_paths(world)
    env: dict[str, str] = {}
    for key, value in spec.env.items():
        if key == "PATH":
            # ENV PATH=/opt/venv/bin:$PATH: the image's venv first, then the base PATH.
            assert value.startswith("/opt/venv/bin:"), value
            value = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        elif key == "HOME":
            value = str(world / "home")
        else:
            for inside, outside in mounts.items():
                if value == inside or value.startswith(inside + "/"):
                    value = str(outside) + value[len(inside) :]
        env[key] = value
    secrets = world / "secrets"
    return env | {
        # As examples/compose.yaml passes them (keys as secret files).
        "ST_IMAGEGEN_TEXT__API_URL": api.base_url,
        "ST_IMAGEGEN_TEXT__API_KEY_FILE": str(secrets / "text_api_key"),
        "ST_IMAGEGEN_IMAGE__API_URL": api.base_url,
        "ST_IMAGEGEN_IMAGE__API_KEY_FILE": str(secrets / "image_api_key"),
        "ST_IMAGEGEN_IMAGE__RESPONSE_FORMAT": "b64_json",
        "ST_IMAGEGEN_DETECT__SETTLE_SECONDS": "0.2",
        "LANG": "C.UTF-8",
    }


def _prepare(world: Path) -> None:
    """Lay out /config, /state, /data and the secrets as the image and compose would."""
    mounts = _host_paths(world)
    shutil.copytree(FIXTURE, mounts["/data"])
    for p in [mounts["/data"], *mounts["/data"].rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    mounts["/config"].mkdir()
    # The image ships a comment-only config file so that the environment alone configures it.
    (mounts["/config"] / "config.toml").write_text("# empty on purpose\n", encoding="utf-8")
    mounts["/state"].mkdir()
    mounts["/state"].chmod(0o1777)  # as the image creates it
    (world / "home").mkdir()
    secrets = world / "secrets"
    secrets.mkdir()
    for name in ("text_api_key", "image_api_key"):
        (secrets / name).write_text(GOOD_KEY + "\n", encoding="utf-8")


def _resolve(argv: list[str], env: dict[str, str]) -> list[str]:
    """Find ``argv[0]`` on the image's PATH, as Docker's exec form does."""
    found = shutil.which(argv[0], path=env["PATH"])
    assert found is not None and Path(found).parent == VENV_BIN, found
    return [found, *argv[1:]]


def _healthy(spec: ImageSpec, env: dict[str, str]) -> bool:
    result = subprocess.run(
        _resolve(spec.healthcheck, env),
        env=env,
        capture_output=True,
        timeout=spec.option_seconds("timeout"),
        check=False,
    )
    return result.returncode == 0


def test_docker_entry_command_starts_reports_healthy_and_drains_in_time(tmp_path: Path) -> None:
    spec = parse_dockerfile(REPO / "Dockerfile")
    world = tmp_path / "container"
    world.mkdir()
    with fake_api(image_delay=60.0) as api:
        _prepare(world)
        env = _docker_env(spec, world, api)
        logs = world / "daemon.log"
        assert not _healthy(spec, env), "healthy before the daemon started"
        with _daemon(_resolve(spec.command, env), env, logs) as proc:
            try:
                _wait_for("healthy", lambda: _healthy(spec, env), START_TIMEOUT, proc)
                # A reply arrives; its job is mid-way in a slow image request when we stop.
                _new_reply(world / "data")
                _wait_for(
                    "the image request",
                    lambda: ("POST", "/v1/images/generations") in api.seen(),
                    START_TIMEOUT,
                    proc,
                )
                started = time.monotonic()
                proc.send_signal(getattr(signal, spec.stopsignal))
                code = proc.wait(timeout=DOCKER_STOP_TIMEOUT)
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                raise AssertionError(f"{exc}\n--- daemon output ---\n{_output(logs)}") from None
            assert code == 0, _output(logs)
            assert time.monotonic() - started < DOCKER_STOP_TIMEOUT
        assert not _healthy(spec, env), "still healthy after the daemon stopped"
        assert GOOD_KEY not in logs.read_text(encoding="utf-8", errors="replace")
        # The interrupted job waits, queued, for the next start.
        listed = subprocess.run(
            _resolve([*spec.entrypoint, "list", "--json"], env),
            env=env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        jobs = json.loads(listed.stdout)
        assert [(job["state"], job["speaker"]) for job in jobs] == [("queued", "Alice")], jobs


# --- the README's quick start ------------------------------------------------------------------


def test_quick_start_run_script_starts_and_stops(st_root_latest: Path, tmp_path: Path) -> None:
    if not (REPO / ".venv" / "bin" / "st-imagegen").exists():
        pytest.skip("scripts/run would first create .venv; CI and scripts/test have made it")
    unused = "http://127.0.0.1:9/v1"  # no reply arrives, so no API is asked
    env = _clean_env() | {
        "ST_IMAGEGEN_STATE_DIR": str(tmp_path / "state"),
        "ST_IMAGEGEN_CONFIG": str(tmp_path / "none.toml"),
        "ST_IMAGEGEN_TEXT__API_URL": unused,
        "ST_IMAGEGEN_IMAGE__API_URL": unused,
    }
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    install = tmp_path / "SillyTavern"  # the ST install folder: data/ inside
    install.mkdir()
    st_root_latest.rename(install / "data")
    heartbeat = tmp_path / "state" / "heartbeat"
    logs = tmp_path / "run.log"
    argv = [str(REPO / "scripts" / "run"), "--data-root", str(install)]
    with _daemon(argv, env, logs) as proc:
        try:
            _wait_for("the heartbeat", heartbeat.exists, START_TIMEOUT, proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=DOCKER_STOP_TIMEOUT) == 0
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{_output(logs)}") from None
    assert not heartbeat.exists(), "a clean stop removes the heartbeat"
    events = [
        json.loads(line).get("event") for line in _output(logs).splitlines() if line[:1] == "{"
    ]
    for event in ("watching", "ready", "stopping", "stopped"):  # what the README promises
        assert event in events, f"no {event!r} log line in {events}"
