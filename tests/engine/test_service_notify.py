"""systemd notify protocol, heartbeat, and the observer-death exit, in-process."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from daemon.config import SystemdEnv, systemd_env
from daemon.engine.intake.watch import Watcher
from daemon.engine.process.heartbeat import daemon_status
from daemon.engine.process.notify import Heartbeat, Notifier, read_heartbeat
from daemon.engine.process.service import ServiceTimings, serve
from tests.engine.conftest import WATCHDOG_RACE, MakeConfig, async_wait_for

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        yield str(path), sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_notifier_sends_datagrams(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = Notifier(path, 2_000_000)
    assert notifier.watchdog_interval == 1.0
    assert notifier.ready("watching 3 chats")
    assert notifier.watchdog()
    assert notifier.status("line one\nline two")
    assert notifier.stopping()
    messages = received(sock)
    assert messages[0].splitlines()[0] == "READY=1"
    assert f"MAINPID={os.getpid()}" in messages[0] and "STATUS=watching 3 chats" in messages[0]
    assert messages[1:] == ["WATCHDOG=1", "STATUS=line one line two", "STOPPING=1\nSTATUS=draining"]


def test_notifier_abstract_socket() -> None:
    name = f"st-imagegen-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert Notifier("@" + name).ready()
        assert sock.recv(4096).startswith(b"READY=1")
    finally:
        sock.close()


def test_notifier_without_socket_or_with_a_dead_one(tmp_path: Path) -> None:
    assert not Notifier().ready()
    assert Notifier().watchdog_interval is None
    assert not Notifier(str(tmp_path / "nobody-listens")).watchdog()  # logged, not raised


def test_systemd_env_is_read_in_config() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}
    assert systemd_env(env) == SystemdEnv("@x", 500_000)
    assert systemd_env({**env, "WATCHDOG_PID": "1"}).watchdog_usec == 0
    assert systemd_env({}) == SystemdEnv()


def test_heartbeat_round_trip(tmp_path: Path) -> None:
    beat = Heartbeat(tmp_path / "heartbeat", "9.9")
    beat.write(watching=7, jobs={"pending": 1})
    record = read_heartbeat(tmp_path / "heartbeat")
    assert record is not None
    assert record["pid"] == os.getpid() and record["watching"] == 7 and record["version"] == "9.9"
    assert isinstance(record["time"], float) and abs(record["time"] - time.time()) < 5
    beat.remove()
    assert read_heartbeat(tmp_path / "heartbeat") is None
    (tmp_path / "heartbeat").write_text("{not json")
    assert read_heartbeat(tmp_path / "heartbeat") is None


def test_an_unchanged_beat_only_touches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    beat = Heartbeat(path, "9.9")
    beat.write(watching=7, jobs={})
    first = path.stat()
    written = read_heartbeat(path)
    assert written is not None and written["touched"] is True
    os.utime(path, (first.st_atime - 100, first.st_mtime - 100))  # as if 100 s had passed
    beat.write(watching=7, jobs={})
    touched = path.stat()
    assert touched.st_ino == first.st_ino  # the same file, not a new one renamed in
    assert touched.st_mtime > first.st_mtime - 100
    assert read_heartbeat(path) == written
    beat.write(watching=8, jobs={})  # a change: the record is written anew
    record = read_heartbeat(path)
    assert record is not None and record["watching"] == 8
    assert path.stat().st_ino != first.st_ino
    path.unlink()
    beat.write(watching=8, jobs={})  # removed by hand: the next beat writes it whole
    assert read_heartbeat(path) is not None


def test_status_counts_a_touch_as_a_beat(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    beat = Heartbeat(path, "9.9")
    beat.write(watching=1)
    record = read_heartbeat(path)
    assert record is not None
    later = float(str(record["time"])) + 120
    assert not daemon_status(path, now=later).running
    os.utime(path, (later - 5, later - 5))  # the daemon's beat at later - 5
    status = daemon_status(path, now=later)
    assert status.running and status.age_seconds is not None and status.age_seconds < 6
    # A record that does not say it is touched is judged by its time alone.
    path.write_text(json.dumps({**record, "touched": False}), encoding="utf-8")
    os.utime(path, (later - 5, later - 5))
    assert not daemon_status(path, now=later).running


async def test_serve_speaks_notify_and_beats(
    st_root_latest: Path, make_config: MakeConfig, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    config = make_config(st_root_latest)
    timings = ServiceTimings(heartbeat=0.1, poll=0.1, drain_grace=1.0)
    ready = anyio.Event()
    seen: list[str] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            code = await serve(
                config, ready=ready.set, systemd=SystemdEnv(path, 200_000), timings=timings
            )
            seen.append(f"exit={code}")

        tg.start_soon(run)
        with anyio.fail_after(15):
            await ready.wait()

        async def pinged() -> bool:
            seen.extend(received(sock))
            return any(m == "WATCHDOG=1" for m in seen) and config.heartbeat_path.exists()

        await async_wait_for(pinged, within=5)
        record = read_heartbeat(config.heartbeat_path)
        assert record is not None and record["watching"] == 4 and record["pid"] == os.getpid()
        os.kill(os.getpid(), 15)  # SIGTERM, as systemd stops a service

        async def stopped() -> bool:
            seen.extend(received(sock))
            return "exit=0" in seen

        await async_wait_for(stopped, within=10)
    assert seen[0].startswith("READY=1")
    assert any(m.startswith("STOPPING=1") for m in seen)
    assert not config.heartbeat_path.exists()


async def test_observer_death_exits_non_zero(
    st_root_latest: Path, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watchdog's threads really end (as a crash of theirs would): the guard threads blocked
    in join() report it at once (no alive-check poll) and the daemon exits 1."""
    config = make_config(st_root_latest)
    timings = ServiceTimings(heartbeat=0.1, poll=60.0, drain_grace=0.5)
    ready = anyio.Event()
    watchers: list[Watcher] = []
    real_start = Watcher.start

    def start(self: Watcher) -> None:
        watchers.append(self)
        real_start(self)

    monkeypatch.setattr(Watcher, "start", start)

    async def kill_observer() -> None:
        await ready.wait()
        observer = watchers[0]._observer
        observer.stop()  # the observer thread and its emitters end; nobody else is told
        await anyio.to_thread.run_sync(observer.join)

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_observer)
        with anyio.fail_after(15):
            code = await serve(config, ready=ready.set, timings=timings)
    assert code == 1
