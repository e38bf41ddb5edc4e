"""The web inbox under test: the real daemon (Service) with its inbox on a free port, over a
real data root and store in tmp_path, the fake prompt and image API at the network boundary."""

# ruff: noqa: F811 - the engine's fixtures are imported here so pytest finds them by name

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from daemon.config import Config
from daemon.engine.process.service import Service, ServiceTimings
from daemon.engine.store import Job, JobState
from daemon.web.context import WebContext
from daemon.web.server import read_address, serve_web
from tests.engine.conftest import (  # noqa: F401 - fixtures used by the web tests
    FakeAPI,
    MakeConfig,
    async_wait_for,
    fake_api,
    job_for,
    make_config,
    running,
    write_chat,
)
from tests.engine.test_commit_support import new_data_root

FAST = ServiceTimings(heartbeat=0.2, poll=0.1, drain_grace=2.0, drop_settle=0.3)
IMAGES = 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Inbox:
    service: Service
    ctx: WebContext
    url: str  # "http://127.0.0.1:<port>" (no trailing slash)
    config: Config

    @property
    def root(self) -> Path:
        return self.service.root

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10.0, **kw)

    async def job(self, job_id: str) -> Job:
        return await self.service.store.get_job(job_id)

    async def wait_state(self, job_id: str, *states: JobState, within: float = 10.0) -> Job:
        async def _reached() -> Job | None:
            job = await self.job(job_id)
            return job if job.state in states else None

        found: Job = await async_wait_for(_reached, within=within)
        return found

    async def pending(self, name: str = "chat", replies: list[str] | None = None) -> Job:
        """A new chat with one reply, a job for it, run by the daemon until pending."""
        path = await anyio.to_thread.run_sync(
            write_chat, self.root, name, replies or [f"The lamp of {name} flickers."]
        )
        job = await job_for(self.service.deps, path)
        self.service.runner.wake()
        return await self.wait_state(job.id, JobState.PENDING)


def web_config(make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI, **extra: Any) -> Config:
    fake_api.images_per_call = IMAGES
    root = new_data_root(tmp_path)
    web = {"port": 0, **extra.pop("web", {})}
    image = {"n": IMAGES, **extra.pop("image", {})}
    return make_config(root, mode="manual", image=image, web=web, **extra)


@contextlib.asynccontextmanager
async def inbox_for(config: Config) -> AsyncIterator[Inbox]:
    async with running(config, FAST, web=serve_web) as service:
        assert service.web is not None, "the inbox did not start"
        address = read_address(config.state_dir)
        assert address is not None
        yield Inbox(service, service.web, str(address["url"]).rstrip("/"), config)


@pytest.fixture
async def inbox(make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI) -> AsyncIterator[Inbox]:
    async with inbox_for(web_config(make_config, tmp_path, fake_api)) as running_inbox:
        yield running_inbox
