"""Bounded by default: ``limits.max_pending`` holds new jobs (no paid call, no folder) while too
many images wait for a decision, says so in the job the inbox shows, and lets them go once some
are decided, also across a restart."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from daemon.engine.jobs.pipeline import TOO_MANY_PENDING
from daemon.engine.store import JobState
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for, job_for, write_chat
from tests.web.conftest import Inbox, inbox_for, web_config

pytestmark = pytest.mark.anyio

HELD_WITHIN = 20.0  # the held job looks again every 15 s (or when the runner is woken)


async def test_max_pending_holds_new_jobs_until_a_decision_across_a_restart(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api, limits={"max_pending": 2})
    async with inbox_for(config) as inbox:
        first = await inbox.pending("one")
        await inbox.pending("two")
        calls = len(fake_api.seen())
        path = await anyio.to_thread.run_sync(write_chat, inbox.root, "three", ["A third lamp."])
        third = await job_for(inbox.service.deps, path)
        inbox.service.runner.wake()

        async def _held() -> bool:
            job = await inbox.job(third.id)
            return job.state is JobState.QUEUED and TOO_MANY_PENDING in str(job.meta.get("held"))

        await async_wait_for(_held, within=HELD_WITHIN)
        async with inbox.client() as client:
            shown = (await client.get(f"/api/v1/jobs/{third.id}")).json()
        assert shown["state"] == "queued" and TOO_MANY_PENDING in shown["progress"]["text"]
        assert await inbox.service.engine.job_folder(third.id) is None
        assert len(fake_api.seen()) == calls  # nothing paid for it: no prompt, no image
    # Restarted: still held (two still wait), then a decision lets it go.
    async with inbox_for(config) as inbox:
        assert await _still_held(inbox, third.id)
        async with inbox.client() as client:
            answer = await client.post(f"/api/v1/jobs/{first.id}/reject", json={})
            assert answer.status_code == 200
        inbox.service.runner.wake()
        done = await inbox.wait_state(third.id, JobState.PENDING, within=HELD_WITHIN + 10)
        assert not done.meta.get("held")


async def _still_held(inbox: Inbox, job_id: str) -> bool:
    job = await inbox.job(job_id)
    return job.state is JobState.QUEUED and TOO_MANY_PENDING in str(job.meta.get("held"))


async def test_retention_prunes_old_history_at_start_and_never_committed_images(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    import dataclasses
    import io
    import os
    import sqlite3
    import time

    from daemon.config import LogSettings
    from daemon.logs import configure_logging

    # The log goes where this test reads it, whatever an earlier test set up (in a whole run
    # the last set-up was another test's: the line never reached this test's stdout).
    logged = io.StringIO()
    configure_logging(LogSettings(level="info", format="console"), stream=logged)
    from datetime import UTC, datetime, timedelta

    from daemon.engine.process.status import gather_status
    from daemon.engine.store.model import stamp
    from tests.engine.conftest import running
    from tests.web.conftest import FAST

    config = web_config(make_config, tmp_path, fake_api, approval="manual")
    async with inbox_for(config) as inbox:
        old_reject, new_reject, committed, open_commit = [
            await inbox.pending(name) for name in ("old", "new", "done", "fresh")
        ]
        async with inbox.client() as client:
            for job in (old_reject, new_reject):
                assert (await client.post(f"/api/v1/jobs/{job.id}/reject", json={})).is_success
            for job in (committed, open_commit):
                assert (await client.post(f"/api/v1/jobs/{job.id}/accept", json={})).is_success
        for job in (committed, open_commit):
            await inbox.wait_state(job.id, JobState.COMMITTED, within=30)
        files = (await inbox.job(committed.id)).meta["committed_files"]
    # Age them by hand, as 200 days would: the store's clock, the shelf's and the thumbnails'.
    long_ago = stamp(datetime.now(UTC) - timedelta(days=200))
    with sqlite3.connect(config.db_path) as db:
        for job in (old_reject, committed, open_commit):
            db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (long_ago, job.id))
        db.execute("UPDATE ledger SET acknowledged = 1 WHERE job_id = ?", (committed.id,))
        db.execute("UPDATE ledger SET acknowledged = 0 WHERE job_id = ?", (open_commit.id,))
    old = time.time() - 200 * 86400
    shelf = config.state_dir / ".superseded" / "01OLDSHELVEDJOB00000000000"
    shelf.mkdir(parents=True)
    (shelf / "image-1.png").write_bytes(b"x")
    os.utime(shelf, (old, old))
    thumbs = config.state_dir / "thumbs"
    thumbs.mkdir(exist_ok=True)
    (thumbs / "stale.webp").write_bytes(b"x")
    os.utime(thumbs / "stale.webp", (old, old))
    (thumbs / "fresh.webp").write_bytes(b"x")

    # Restarted: the first pass runs at once here (a minute after start in production).
    timings = dataclasses.replace(FAST, retention_first=0.0)
    async with running(config, timings) as service:
        store = service.store

        async def _pruned() -> bool:
            return old_reject.id not in {j.id for j in await store.query_jobs(limit=50)}

        await async_wait_for(_pruned, within=HELD_WITHIN)
        left = {j.id for j in await store.query_jobs(limit=50)}
        report = await gather_status(config, store)
    assert old_reject.id not in left and committed.id not in left
    assert new_reject.id in left  # recent history stays
    assert open_commit.id in left  # its message may still need repairing in the chat
    assert await anyio.to_thread.run_sync(_all_files, files)  # ST's images are ST's
    assert not shelf.exists() and not (thumbs / "stale.webp").exists()
    assert (thumbs / "fresh.webp").exists()
    assert report.state_dir_bytes is not None and report.state_dir_bytes > 0
    out = logged.getvalue()
    lines = [line for line in out.splitlines() if "retention" in line and "job_rows" in line]
    assert len(lines) == 1 and "job_rows=2" in lines[0], lines


def _all_files(paths: list[str]) -> bool:
    return all(Path(p).is_file() for p in paths)
