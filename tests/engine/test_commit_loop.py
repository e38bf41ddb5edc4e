"""The whole loop through the real daemon (in this process, fake APIs on a local server):
reply saved by the simulated ST -> pending -> accepted -> hidden image message after the reply;
then a stale tab's saves, which the daemon reconciles by itself; and ``generate --wait``
against the running daemon."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.cli.generate import cmd_generate
from daemon.engine.commit.apply import message_urls, served_path
from daemon.engine.jobs.pipeline import accept_job
from daemon.engine.process.service import Service, ServiceTimings
from daemon.engine.store import Job, JobState
from daemon.tavern.chat import parse_chat
from tests.engine.conftest import MakeConfig, async_wait_for, running
from tests.stsim import SimClock, STSim

pytestmark = pytest.mark.anyio

FAST = ServiceTimings(heartbeat=0.2, poll=0.1, drain_grace=2.0)
STEP_TIMEOUT = 15.0
USER = "default-user"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def until(check: Callable[[], Awaitable[Any]]) -> Any:
    return await async_wait_for(check, within=STEP_TIMEOUT)


async def state(service: Service, job_id: str, wanted: JobState) -> Job:
    async def check() -> Job | None:
        job = await service.store.get_job(job_id)
        return job if job.state is wanted else None

    result: Job = await until(check)
    return result


def markers(path: Path) -> list[str]:
    return [m.marker for m in parse_chat(path.read_bytes()).messages if m.marker]


async def processed(service: Service, before: int) -> None:
    async def check() -> bool:
        return service.processed > before and len(service.settler) == 0

    await until(check)


@pytest.mark.parametrize("version", ["1.12", "1.14", "1.18"])
async def test_whole_loop_then_stale_tab(
    st_root_latest: Path, make_config: MakeConfig, version: str
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        root = service.root
        path = root / USER / "chats" / "Alice" / f"Alice - loop {version}.jsonl"
        tab = STSim.create(path, version=version, clock=SimClock(start=datetime.now(UTC)))
        rel = path.relative_to(root).as_posix()

        async def seen() -> bool:
            return await service.store.get_chat(rel) is not None

        await until(seen)
        tab.send_user("Describe the glade.").save()
        tab.reply("Alice", "The forest glade glows at dawn.").save()

        async def queued() -> list[Job]:
            return [j for j in await service.store.list_jobs() if j.chat == rel]

        [job] = await until(queued)
        pending = await state(service, job.id, JobState.PENDING)
        await accept_job(service.store, service.deps.approval, pending.id)
        done = await state(service, job.id, JobState.COMMITTED)

        chat = parse_chat(path.read_bytes())
        ours = chat.find_marker(done.id)
        assert ours is not None
        assert chat.messages[ours.index - 1].mes == "The forest glade glows at dawn."
        assert ours.data["is_system"] is True and ours.data["is_user"] is False
        extra = ours.extra
        assert extra["st_imagegen_job"] == done.id
        assert extra["image"] == extra["media"][0]["url"]  # both formats
        assert extra["inline_image"] is False and extra["media_display"] == "gallery"
        for url in message_urls(ours.data):
            image = served_path(root, USER, url)
            assert image is not None and image.is_file()
            assert url == f"/user/images/Alice/{image.name}"

        # The tab never loaded our message; its next save drops it; the daemon puts it back.
        before = service.processed
        tab.narrator("It starts to rain.").save()
        await processed(service, before)

        async def back() -> bool:
            return markers(path) == [done.id]

        await until(back)
        assert parse_chat(path.read_bytes()).messages[-1].mes == "It starts to rain."

        # The tab reloads and saves: acknowledged.
        tab.load()
        tab.send_user("Lovely.").save()

        async def acknowledged() -> bool:
            entry = await service.store.ledger_get(done.id)
            return entry is not None and entry.acknowledged

        await until(acknowledged)

        # The user deletes it; the tab saves: it stays deleted.
        index = next(i for i, m in enumerate(tab.messages) if m is tab.find_marker(done.id))
        before = service.processed
        tab.delete(index).save()
        await processed(service, before)
        before = service.processed
        tab.send_user("Thanks.").save()
        await processed(service, before)
        assert markers(path) == []


async def test_generate_wait_with_the_daemon_running(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest, mode="manual")
    async with running(config, FAST) as service:

        async def beating() -> bool:
            return config.heartbeat_path.exists()

        await until(beating)
        out, err = io.StringIO(), io.StringIO()
        code = await anyio.to_thread.run_sync(
            lambda: cmd_generate(config, "Alice", None, True, timeout=30, out=out, err=err)
        )
        assert code == 0, err.getvalue()
        assert "running the job in this process" not in err.getvalue()  # the daemon ran it
        [job] = await service.store.list_jobs()
        assert job.state is JobState.PENDING and job.source == "manual"
        assert f"is waiting for approval: {config.pending_dir / job.id}" in out.getvalue()
