"""A daemon running in-process from a config file it watches (the live-reload tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from daemon.config import ConfigSource
from daemon.configure.live import LiveConfig
from daemon.engine.jobs.pipeline import open_job_deps
from daemon.engine.process.lock import hold_state_lock
from daemon.engine.process.service import Service, ServiceTimings
from daemon.tavern import layout
from daemon.web.server import serve_web
from tests.engine.conftest import SERVICE_START_TIMEOUT, FakeAPI, serve_fake_api

FAST = ServiceTimings(heartbeat=0.2, poll=60.0, drain_grace=2.0, drop_settle=0.3)


@contextlib.asynccontextmanager
async def live_service(path: Path, timings: ServiceTimings = FAST) -> AsyncIterator[Service]:
    """``run`` as the command starts it: config from ``path`` (watched), no environment."""
    source = ConfigSource.find(path, environ={})
    config = source.load()
    assert config.data_root is not None
    root = layout.resolve_data_root(config.data_root)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with hold_state_lock(config.state_dir):
        async with open_job_deps(config, root=root) as deps:
            live = LiveConfig(source, config)
            service = Service(config, root, deps, timings=timings, live=live, web=serve_web)
            async with anyio.create_task_group() as tg:
                ready = anyio.Event()
                tg.start_soon(partial(service.run, ready=ready.set))
                with anyio.fail_after(SERVICE_START_TIMEOUT):
                    await ready.wait()
                try:
                    yield service
                finally:
                    await service.shutdown("test over")


@pytest.fixture
def fake_api() -> Iterator[FakeAPI]:
    with serve_fake_api(FakeAPI()) as api:
        yield api
