"""The reaction rule (docs/reaction.md) end to end: a finished reply is acted on at once, a save
made mid-stream makes no job, an edit or a swipe back waits for quiet, a swipe right after a save
supersedes the first job."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.engine.store import JobState
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, MakeConfig, async_wait_for, running
from tests.engine.test_service import (
    FAST,
    jobs_of,
    revised,
    seen,
    started_chat,
    wait_jobs,
    wait_state,
)

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]

HOLD = 3.0
"""settle_seconds for the hold test: longer than two saves a test makes back to back take on a
busy machine, so both land inside one quiet window."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_streamed_reply_is_illustrated_once(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """A save made while the reply streams (ST's placeholder, then half the text would follow)
    makes no job; the finished save makes one, and nothing is superseded."""
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = service.root / "default-user" / "chats" / "Alice" / "Alice - stream.jsonl"
        tab = await started_chat(service, path, character="Alice")
        tab.send_user("Describe the glade.").save()
        tab.reply("Alice", "...")  # StreamingProcessor.onStartStreaming's message
        before = service.processed
        tab.save()  # e.g. an extension saving metadata mid-stream
        await seen(service, path)

        async def read_again() -> bool:
            return service.processed > before and len(service.settler) == 0

        await async_wait_for(read_again, within=10.0)
        assert await jobs_of(service, path) == []
        streaming = tab.messages[-1]
        streaming["mes"] = "The forest glade glows at dawn."
        finished = tab.clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        streaming["gen_finished"] = finished
        tab.save()
        [job] = await wait_jobs(service, path, 1)
        done = await wait_state(service, job.id, JobState.PENDING)
        assert "glows at dawn" in (done.prompt or "")
        assert [j.state for j in await jobs_of(service, path)] == [JobState.PENDING]
        assert fake_api.count("chat/completions") == 1
        assert fake_api.count("images/generations") == 1


async def test_a_swipe_right_after_a_save_supersedes_cleanly(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """The reply's job starts at once; a swipe saved while it runs supersedes it (cancelled,
    never pending) and the new text gets the one image."""
    fake_api.text_delay = 2.0  # the first job is still asking for its prompt when the swipe lands
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = service.root / "default-user" / "chats" / "Alice" / "Alice - swipe.jsonl"
        tab = await started_chat(service, path, character="Alice")
        tab.send_user("Describe the glade.").save()
        tab.reply("Alice", "The glade at dawn.").save()
        [first] = await wait_jobs(service, path, 1)
        await wait_state(service, first.id, JobState.PROMPTING)  # acted on without a quiet time
        tab.swipe("The glade at dusk.").save()
        second = await revised(service, path, first)
        done = await wait_state(service, second.id, JobState.PENDING)
        assert "dusk" in (done.prompt or "")
        old = await service.store.get_job(first.id)
        assert old.state is JobState.SUPERSEDED and not old.images
        assert not (config.state_dir / "pending" / first.id).exists()
        assert fake_api.count("images/generations") == 1


async def test_edits_in_a_row_make_one_job_for_the_last_text(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """An edit is not a new generation: the chat must stay quiet for settle_seconds, so two
    edits saved one after the other give one job, for the second text."""
    config = make_config(st_root_latest, detect={"settle_seconds": HOLD})
    async with running(config, FAST) as service:
        path = service.root / "default-user" / "chats" / "Alice" / "Alice - edit.jsonl"
        tab = await started_chat(service, path, character="Alice")
        tab.send_user("Describe the glade.").save()
        tab.reply("Alice", "The glade at dawn.").save()
        [first] = await wait_jobs(service, path, 1)
        await wait_state(service, first.id, JobState.PENDING)
        index = len(tab.messages) - 1
        tab.edit(index, "The glade at noon.").save()
        tab.edit(index, "The glade at night.").save()
        second = await revised(service, path, first)
        done = await wait_state(service, second.id, JobState.PENDING, within=HOLD + 10.0)
        assert "night" in (done.prompt or "")
        jobs = await jobs_of(service, path)
        assert [j.id for j in jobs] == [first.id, second.id]  # none for "noon"
        assert fake_api.count("images/generations") == 2
