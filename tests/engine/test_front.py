"""The front door: one Engine per process, the same outcome from every face. Cancel of queued
and running jobs (in this process and in a daemon), and the engine of a one-shot process."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from daemon.engine.front import Engine, JobState
from daemon.errors import AmbiguousError, JobStateError, NotFoundError
from tests.engine.conftest import (
    FakeAPI,
    MakeConfig,
    async_wait_for,
    job_for,
    running,
    write_chat,
)
from tests.engine.test_service import FAST, JOB_TIMEOUT

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_one_shot_engine_opens_no_store_for_status(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest)
    async with Engine.open(config) as engine:
        report = await engine.status()
        assert report.store_error == "no jobs yet (the store has not been created)"
    assert not config.db_path.exists()


async def test_typed_errors_for_unknown_and_ambiguous_ids(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest, mode="manual")
    async with Engine.open(config) as engine:
        first = await engine.generate("Alice", 5)
        second = await engine.generate("Alice", 5, force=True)
        assert first.created and second.created and first.job.id != second.job.id
        with pytest.raises(NotFoundError):
            await engine.job("0000000000")
        a, b = first.job.id, second.job.id
        common = a[: next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)]
        assert common  # ids made the same second share their time part
        with pytest.raises(AmbiguousError):
            await engine.job(common)
        with pytest.raises(JobStateError):
            await engine.accept(first.job.id)  # queued: nothing to accept yet


async def test_cancel_a_queued_job(st_root_latest: Path, make_config: MakeConfig) -> None:
    config = make_config(st_root_latest, mode="manual")
    async with Engine.open(config) as engine:
        made = await engine.generate("Alice", 5)
        cancelled = await engine.cancel(made.job.id)
        assert cancelled.state is JobState.REJECTED
        assert cancelled.meta.get("cancelled") is True and cancelled.last_error == "cancelled"
        with pytest.raises(JobStateError):
            await engine.cancel(made.job.id)
        # A cancelled reply can be asked for again, as a new job.
        again = await engine.generate("Alice", 5, force=True)
        assert again.created and again.job.state is JobState.QUEUED
    assert (config.state_dir / "wake" / "ping").is_file()  # a running daemon is told


@pytest.mark.parametrize("where", ["daemon", "cli"])
async def test_cancel_a_running_job_drops_its_result(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI, where: str
) -> None:
    """The image call is held open; the cancel (from the daemon's own engine, as the web API
    does, or from a CLI process's engine) stops the job and no pending folder is left."""
    gate = threading.Event()
    fake_api.image_gate = gate
    config = make_config(st_root_latest, mode="manual")
    try:
        async with running(config, FAST) as service:
            path = await anyio.to_thread.run_sync(write_chat, service.root, "cancel", ["A moon."])
            job = await job_for(service.deps, path)
            service.runner.wake()

            async def calling() -> bool | None:
                current = await service.engine.job(job.id)
                busy = current.state is JobState.IMAGING and fake_api.image_in_flight == 1
                return busy or None

            await async_wait_for(calling, within=JOB_TIMEOUT)
            if where == "daemon":
                done = await service.engine.cancel(job.id)
            else:
                async with Engine.open(config) as cli:
                    done = await cli.cancel(job.id)
            assert done.state is JobState.REJECTED

            async def stopped() -> bool | None:
                return service.runner.running == 0 or None

            await async_wait_for(stopped, within=JOB_TIMEOUT)
            gate.set()
            after = await service.engine.job(job.id)
            assert after.state is JobState.REJECTED and after.images == ()
            assert not (config.pending_dir / job.id).exists()
    finally:
        gate.set()
