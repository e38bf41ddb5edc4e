"""A spend cap raised while the daemon runs lets the job it held through at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigSource
from daemon.configure.writer import ConfigWriter
from daemon.engine.store import JobState
from tests.configure.conftest import live_service
from tests.configure.test_live import RELOAD_TIMEOUT, reloaded, write_config
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, async_wait_for
from tests.engine.test_service import jobs_of, new_chat, started_chat, wait_state

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    from tests.engine.test_commit_support import new_data_root

    return new_data_root(tmp_path)


async def test_a_raised_budget_releases_the_held_job_live(
    tmp_path: Path, root: Path, fake_api: FakeAPI
) -> None:
    path = write_config(
        tmp_path, root, fake_api, limits={"daily_budget": 0.25}, prices={"fake-image": 0.5}
    )
    async with live_service(path) as service:
        chat = new_chat(root)
        tab = await started_chat(service, chat, character="Alice")
        tab.send_user("Draw the harbour.").save()
        tab.reply("Alice", "*She points at the boats.* The harbour, at dusk.").save()

        async def held() -> object:
            jobs = await jobs_of(service, chat)
            return (
                jobs and jobs[0].state is JobState.QUEUED and jobs[0].meta.get("held") and jobs[0]
            )

        job = await async_wait_for(held, within=RELOAD_TIMEOUT)
        assert "daily budget reached: 0.00 of 0.25 USD" in job.meta["held"]
        assert not any(r.path.endswith("images/generations") for r in fake_api.requests)
        ConfigWriter(ConfigSource.find(path, environ={})).apply({"limits.daily_budget": 5.0})
        await reloaded(service, 1)
        done = await wait_state(service, job.id, JobState.PENDING)
        assert done.meta.get("held") is None and done.meta["cost"] == "0.5000 USD (estimate)"
