"""1,000 stale saves interleaved with 200 commits over 20 chats, with real threads.

The simulated ST side (one tab per chat) runs in a worker thread: it adds turns (user message,
then reply: a job is accepted for each reply) and saves its in-memory copy again and again,
mostly without our messages (stale), sometimes after a reload. The daemon side commits and
reconciles concurrently in the event loop, as the service does after each settled save.
"""

from __future__ import annotations

import random

import anyio
import anyio.from_thread
import pytest

from daemon.engine.store import JobState
from daemon.tavern.chat import parse_chat
from tests.engine.test_commit_support import (
    USER,
    Harness,
    assert_committed_after_replies,
    chat_path,
    ref_of,
    referenced_images,
)
from tests.stsim import SimClock, STSim

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHATS = 20
TURNS_PER_CHAT = 10  # 200 commits
STALE_SAVES = 1000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_stale_saves_interleaved_with_commits(harness: Harness) -> None:
    h = harness
    rng = random.Random(20261126)
    paths = [chat_path(h.root, name=f"Alice - {i:02d}") for i in range(CHATS)]
    tabs = [STSim.create(p, rng=random.Random(i), clock=SimClock()) for i, p in enumerate(paths)]
    refs = [ref_of(h.root, p) for p in paths]
    created: dict[int, list[str]] = {i: [] for i in range(CHATS)}  # texts the tab wrote
    jobs: dict[int, list[str]] = {i: [] for i in range(CHATS)}
    job_send, job_recv = anyio.create_memory_object_stream[str](1000)
    dirty_send, dirty_recv = anyio.create_memory_object_stream[int](5000)
    reinserted = 0

    async def accept(i: int) -> None:
        job = await h.accepted(paths[i], seed=len(jobs[i]))
        jobs[i].append(job.id)
        await job_send.send(job.id)

    def st_side() -> None:
        plan = ["turn"] * (CHATS * TURNS_PER_CHAT) + ["stale"] * STALE_SAVES
        rng.shuffle(plan)
        turns_left = [TURNS_PER_CHAT] * CHATS
        for n, step in enumerate(plan):
            if step == "turn":
                i = rng.choice([c for c in range(CHATS) if turns_left[c]])
                turns_left[i] -= 1
                tab = tabs[i]
                user, reply = f"user {i}/{n}", f"reply {i}/{n}"
                tab.send_user(user).save()
                tab.reply("Alice", reply).save()
                created[i] += [user, reply]
                anyio.from_thread.run(accept, i)
            else:
                i = rng.randrange(CHATS)
                tab = tabs[i]
                roll = rng.random()
                if roll < 0.1:
                    tab.load()  # F5: the tab now holds what is on disk, ours included
                if roll < 0.4:
                    text = f"narrator {i}/{n}"
                    tab.narrator(text)
                    created[i].append(text)
                else:
                    tab.set_metadata(note_prompt=f"note {n}")  # a metadata-only save
                tab.save()
            anyio.from_thread.run(dirty_send.send, i)

    async def committer() -> None:
        async for job_id in job_recv:
            job = await h.job(job_id)
            done = await h.committer.commit_job(job)
            while done.state is JobState.ACCEPTED:  # postponed (the chat kept changing)
                await anyio.sleep(0.01)
                done = await h.committer.commit_job(done)
            assert done.state is JobState.COMMITTED, done.last_error

    async def reconciler() -> None:
        nonlocal reinserted
        async for i in dirty_recv:
            reinserted += await h.committer.reconcile_chat(refs[i])

    async with job_recv, dirty_recv, anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(committer)
        tg.start_soon(reconciler)
        async with job_send, dirty_send:
            await anyio.to_thread.run_sync(st_side)

    # Settle: each tab saves its (stale) copy once more, then reloads and saves (ST has it).
    for i, tab in enumerate(tabs):
        tab.save()
        reinserted += await h.committer.reconcile_chat(refs[i])
        tab.load()
        tab.save()
        assert await h.committer.reconcile_chat(refs[i]) == 0
    assert await h.store.chats_with_open_ledger() == set()  # every message acknowledged
    assert reinserted > 50  # the race really happened, many times

    for i, path in enumerate(paths):
        chat = parse_chat(path.read_bytes())
        assert not chat.bad_lines
        # Every accepted image exactly once, right after its reply.
        await assert_committed_after_replies(h, path, chat, jobs[i])
        # Every user line, reply and narrator line the tab wrote, once each and in order.
        texts = [m.mes for m in chat.messages if m.marker is None]
        assert texts[0] == "Hello there, User."
        assert texts[1:] == created[i]
    # No orphan images: every file in the folder is referenced by exactly one message.
    folder = h.root / USER / "user" / "images" / "Alice"
    referenced = referenced_images(paths)
    assert sorted(p.name for p in folder.iterdir()) == referenced
    assert len(referenced) == CHATS * TURNS_PER_CHAT
