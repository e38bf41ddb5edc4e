"""The daemon as a real process: SIGKILL with jobs in every state, restart, nothing lost or
doubled; SIGTERM drains and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from daemon.config import Config, load_config
from daemon.engine.jobs.approval import Approval
from daemon.engine.jobs.pipeline import accept_job
from daemon.engine.store import Job, JobState, Store
from daemon.tavern.chat import read_chat
from tests.engine.conftest import FakeAPI, config_toml, wait_for
from tests.stsim import SimClock, STSim

pytestmark = pytest.mark.slow

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


class Daemon:
    """``python -m daemon run --config ...`` as a child process."""

    def __init__(self, cfg: Path, log: Path) -> None:
        self.cfg = cfg
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
        env.pop("NOTIFY_SOCKET", None)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(self.cfg)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(STOP_TIMEOUT)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


def jobs(config: Config) -> list[Job]:
    async def _list() -> list[Job]:
        store = await Store.open(config.db_path)
        try:
            return await store.list_jobs(limit=10_000)
        finally:
            await store.close()

    return anyio.run(_list)


def accept(config: Config, job_id: str) -> None:
    async def _accept() -> None:
        store = await Store.open(config.db_path)
        try:
            await accept_job(store, Approval(config.state_dir), job_id)
        finally:
            await store.close()

    anyio.run(_accept)


@pytest.fixture
def setup(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI
) -> Iterator[tuple[Config, Daemon]]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config_toml(
            st_root_latest,
            tmp_path / "state",
            fake_api,
            {"limits": {"concurrency": 2, "image_concurrency": 2, "drain_seconds": 1.0}},
        ),
        encoding="utf-8",
    )
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    try:
        yield load_config(cfg, environ={}), daemon
    finally:
        daemon.stop_quietly()


def started(config: Config, daemon: Daemon) -> None:
    daemon.start()
    assert daemon.proc is not None

    def ready() -> bool:
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log.read_text()
        return b'"ready"' in daemon.log.read_bytes() or b"ready " in daemon.log.read_bytes()

    before = daemon.log.read_bytes().count(b"ready")
    wait_for(lambda: ready() and daemon.log.read_bytes().count(b"ready") > before, START_TIMEOUT)


def test_sigkill_with_jobs_in_every_state_then_restart(
    setup: tuple[Config, Daemon], fake_api: FakeAPI
) -> None:
    config, daemon = setup
    assert config.data_root is not None
    root = config.data_root
    fake_api.image_delay = 1.5
    started(config, daemon)
    tabs = []
    clock = SimClock(start=datetime.now(UTC))
    for n in range(6):
        path = root / "default-user" / "chats" / "Alice" / f"Alice - kill{n}.jsonl"
        tab = STSim.create(path, character="Alice", clock=clock)
        tabs.append(tab)
    wait_for(lambda: len({j.chat for j in jobs(config)}) == 0 and _cursors_done(config, 6), 10)
    for n, tab in enumerate(tabs):
        tab.send_user(f"Question {n}?").save()
        tab.reply("Alice", f"Answer number {n}, with a picture.").save()

    # Wait for a mix: pending, imaging and queued; accept one pending job.
    wait_for(lambda: Counter(j.state for j in jobs(config))[JobState.PENDING] >= 2, 30)
    pending = [j for j in jobs(config) if j.state is JobState.PENDING]
    accept(config, pending[0].id)
    states = Counter(j.state for j in jobs(config))
    assert states[JobState.QUEUED] + states[JobState.IMAGING] + states[JobState.PROMPTING] >= 1
    daemon.kill()
    assert config.heartbeat_path.exists()  # a killed daemon leaves a stale heartbeat

    # A reply saved while the daemon is down is caught up from the stored cursor.
    other = next(t for t in tabs if not str(t.path).endswith(pending[0].chat))
    other.send_user("While you were away?").reply("Alice", "Caught up after restart.").save()
    fake_api.image_delay = 0.0
    started(config, daemon)

    def all_done() -> bool:
        current = jobs(config)
        return len(current) == 7 and all(
            j.state in (JobState.PENDING, JobState.COMMITTED) for j in current
        )

    wait_for(all_done, 30)
    final = jobs(config)
    assert len({(j.chat, j.reply.name, j.reply.date) for j in final}) == 7
    assert any("Caught up" in j.excerpt for j in final)
    committed = [j for j in final if j.state is JobState.COMMITTED]
    assert [j.id for j in committed] == [pending[0].id]
    chat, _ = read_chat(root / committed[0].chat)
    assert list(chat.markers()) == [committed[0].id]  # exactly once
    folders = sorted(p.name for p in config.pending_dir.iterdir() if not p.name.startswith("."))
    assert folders == sorted(j.id for j in final if j.state is JobState.PENDING)
    for job in final:
        if job.state is JobState.PENDING:
            assert (config.pending_dir / job.id / job.images[0]).is_file()

    assert daemon.terminate() == 0
    assert not config.heartbeat_path.exists()
    assert b"stopping" in daemon.log.read_bytes()


def _cursors_done(config: Config, count: int) -> bool:
    async def _count() -> int:
        store = await Store.open(config.db_path)
        try:
            known = await store.known_chats()
        finally:
            await store.close()
        return sum(1 for chat in known if "/Alice - kill" in chat)

    return anyio.run(_count) >= count


def test_sigterm_drains_running_jobs_back_to_queue(
    setup: tuple[Config, Daemon], fake_api: FakeAPI
) -> None:
    config, daemon = setup
    assert config.data_root is not None
    fake_api.image_delay = 30.0  # longer than the drain grace: the job is cancelled, requeued
    started(config, daemon)
    path = config.data_root / "default-user" / "chats" / "Alice" / "Alice - drain.jsonl"
    tab = STSim.create(path, character="Alice", clock=SimClock(start=datetime.now(UTC)))
    wait_for(lambda: _cursors_done_named(config, "Alice - drain"), 10)
    tab.send_user("Draw it.").reply("Alice", "A very slow picture.").save()
    wait_for(lambda: any(j.state is JobState.IMAGING for j in jobs(config)), 15)
    began = time.monotonic()
    assert daemon.terminate() == 0
    assert time.monotonic() - began < config.limits.drain_seconds + 5
    [job] = jobs(config)
    assert job.state is JobState.QUEUED and job.prompt is not None


def _cursors_done_named(config: Config, name: str) -> bool:
    async def _known() -> bool:
        store = await Store.open(config.db_path)
        try:
            return any(name in chat for chat in await store.known_chats())
        finally:
            await store.close()

    return anyio.run(_known)
