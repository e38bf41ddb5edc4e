"""The inbox's choosing API (issue 24): reject to the trash and restore, cancel, pause, the
inbox page's first page and its count of what is not shown, links to one job."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio
import httpx
import pytest

from daemon.engine.process.pause import set_pause
from daemon.engine.store import Job, JobState
from daemon.jobstate import ReplyKey
from tests.engine.conftest import FakeAPI, job_for, tiny_png, write_chat
from tests.web.conftest import IMAGES, Inbox

pytestmark = pytest.mark.anyio


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


class _Img:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.format = "png"


async def _many_pending(inbox: Inbox, count: int) -> list[Job]:
    """``count`` pending jobs of one chat, straight through the store and the folders."""
    store = inbox.service.store
    approval = inbox.service.deps.approval
    # Paused while they are made, so the daemon does not start one before the test moves it.
    await anyio.to_thread.run_sync(set_pause, inbox.config.state_dir, True, None)
    made = []
    for n in range(count):
        job = await store.create_job(
            reply=ReplyKey(
                "default-user",
                "default-user/chats/Alice/Alice - many.jsonl",
                "Alice",
                f"2026-11-23T12:{n // 60:02d}:{n % 60:02d}.000Z",
                "0:abc",
            ),
            character="Alice",
            is_group=False,
            speaker="Alice",
            message_index=2 * n + 1,
            excerpt=f"reply {n}",
            prompt=f"prompt {n}",
        )
        assert job is not None
        moved = await store.transition(job.id, JobState.QUEUED, JobState.IMAGING)
        assert moved is not None
        await anyio.to_thread.run_sync(approval.write_pending, moved, [_Img(tiny_png())], {})
        done = await store.transition(
            job.id, JobState.IMAGING, JobState.PENDING, images=("image-1.png",)
        )
        assert done is not None
        made.append(done)
    await anyio.to_thread.run_sync(set_pause, inbox.config.state_dir, False, None)
    return made


def _embedded(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="initial" type="application/json">(.*?)</script>', html, re.S)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


async def test_reject_to_the_trash_and_restore(inbox: Inbox) -> None:
    job = await inbox.pending("trash")
    async with inbox.client() as c:
        rejected = (await c.post(f"/api/v1/jobs/{job.id}/reject", json={})).json()
        assert rejected["state"] == "rejected" and rejected["restorable"] is True
        trash = inbox.config.state_dir / ".trash" / job.id
        assert sorted(p.name for p in trash.iterdir() if p.suffix == ".png") == list(job.images)
        assert not (inbox.config.pending_dir / job.id).exists()
        # History still shows the pictures while they are in the trash.
        shown = await c.get(f"/api/v1/jobs/{job.id}/images/1")
        assert shown.status_code == 200 and shown.content == (trash / job.images[0]).read_bytes()

        back = await c.post(f"/api/v1/jobs/{job.id}/restore", json={})
        assert back.status_code == 200, back.text
        assert back.json()["state"] == "pending" and back.json()["restorable"] is False
        assert (inbox.config.pending_dir / job.id / job.images[0]).is_file()
        assert not trash.exists()
        assert "not rejected" in _error(
            await c.post(f"/api/v1/jobs/{job.id}/restore", json={}), 409
        )

        # Accept works on the restored job as on any other.
        done = await c.post(f"/api/v1/jobs/{job.id}/accept", json={"keep": [2]})
        assert done.status_code == 200
        await inbox.wait_state(job.id, JobState.COMMITTED)


async def test_cancel_one_and_all_queued_of_a_chat_and_pause(
    inbox: Inbox, fake_api: FakeAPI
) -> None:
    async with inbox.client() as c:
        paused = (await c.post("/api/v1/pause", json={"paused": True})).json()
        assert paused["all"] is True and paused["since"]
        assert (await c.get("/api/v1/status")).json()["paused"]["all"] is True
        calls = fake_api.count("images/generations")
        made = []
        for name in ("one", "two"):
            path = await anyio.to_thread.run_sync(write_chat, inbox.root, name, [f"{name}."])
            made.append(await job_for(inbox.service.deps, path))
        inbox.service.runner.wake()
        assert await inbox.service.runner.fill() == 0  # paused: nothing starts

        first = await c.post(f"/api/v1/jobs/{made[0].id}/cancel", json={})
        assert first.status_code == 200 and first.json()["cancelled"] is True
        assert "cancel" in _error(await c.post(f"/api/v1/jobs/{made[0].id}/cancel", json={}), 409)
        everything = await c.post("/api/v1/cancel", json={"chat": made[1].chat})
        assert everything.json() == {"cancelled": [made[1].id]}
        assert (await inbox.job(made[1].id)).state is JobState.REJECTED
        assert fake_api.count("images/generations") == calls

        # One chat paused, the others run; resuming it lets its job start. The chat is paused
        # before its job exists: resuming everything first wakes the runner, which would
        # otherwise start the job before the chat's pause arrives.
        await c.post("/api/v1/pause", json={"paused": False})
        rel = "default-user/chats/Alice/Alice - held.jsonl"
        one = (await c.post("/api/v1/pause", json={"paused": True, "chat": rel})).json()
        assert one == {"all": False, "chats": [rel], "since": one["since"]}
        path = await anyio.to_thread.run_sync(write_chat, inbox.root, "held", ["Held."])
        held = await job_for(inbox.service.deps, path)
        assert held.chat == rel
        other = await inbox.pending("free")  # another chat still runs
        assert other.state is JobState.PENDING
        assert (await inbox.job(held.id)).state is JobState.QUEUED
        await c.post("/api/v1/pause", json={"paused": False, "chat": held.chat})
        await inbox.wait_state(held.id, JobState.PENDING)
        _error(await c.post("/api/v1/pause", json={"paused": "yes"}), 422)


async def test_inbox_page_shows_the_first_page_and_counts_the_rest(inbox: Inbox) -> None:
    made = await _many_pending(inbox, 60)
    async with inbox.client() as c:
        page = await c.get("/")
        data = _embedded(page.text)
        jobs = data["jobs"]
        assert isinstance(jobs, list) and len(jobs) == 48
        assert data["total"] == 60 and data["more"] == jobs[-1]["id"]
        rest = (
            await c.get(
                "/api/v1/jobs", params={"state": "pending,failed", "before": jobs[-1]["id"]}
            )
        ).json()
        assert len(rest["jobs"]) == 12
        shown = {j["id"] for j in jobs} | {j["id"] for j in rest["jobs"]}
        assert shown == {j.id for j in made}

        # Filtered to one chat and one character: the counts follow the filter.
        other = await inbox.pending("other")
        only = _embedded((await c.get("/", params={"chat": other.chat})).text)
        assert only["total"] == 1 and [j["id"] for j in only["jobs"]] == [other.id]
        by_char = _embedded((await c.get("/", params={"character": "Nobody"})).text)
        assert by_char["total"] == 0 and by_char["jobs"] == []


async def test_job_links_lead_to_the_card_or_the_history_row(inbox: Inbox) -> None:
    job = await inbox.pending("link")
    async with inbox.client() as c:
        there = await c.get(f"/jobs/{job.id}")
        assert there.status_code == 303 and there.headers["location"] == f"/#job-{job.id}"
        new = (await c.post(f"/api/v1/jobs/{job.id}/regen", json={})).json()
        old = (await c.get(f"/api/v1/jobs/{job.id}")).json()
        assert old["regenerated_as"] == new["id"]
        moved = await c.get(f"/jobs/{job.id}")
        assert moved.headers["location"] == f"/history?job={job.id}#job-{job.id}"
        history = await c.get(f"/history?job={job.id}")
        assert f'href="/jobs/{new["id"]}"' in history.text
        assert history.text.count('class="hcard') == 1
        assert (await c.get("/jobs/ZZZZZZZZZZ")).status_code == 404


async def test_regen_sets_keep_their_own_prompts_in_the_message(inbox: Inbox) -> None:
    first = await inbox.pending("sets")
    async with inbox.client() as c:
        new = (
            await c.post(f"/api/v1/jobs/{first.id}/regen", json={"prompt": "a new sky, ink"})
        ).json()
        await inbox.wait_state(new["id"], JobState.PENDING)
        shown = (await c.get(f"/api/v1/jobs/{new['id']}")).json()
        assert [i["earlier"] for i in shown["images"]] == [False] * IMAGES + [True] * IMAGES
        # Accept one new image and one earlier one: each keeps the prompt that made it.
        keep = [1, IMAGES + 1]
        assert (
            await c.post(f"/api/v1/jobs/{new['id']}/accept", json={"keep": keep})
        ).status_code == 200
        await inbox.wait_state(new["id"], JobState.COMMITTED)
        message = (await c.get(f"/api/v1/jobs/{new['id']}/message")).json()["message"]
        titles = [m["title"] for m in message["extra"]["media"]]
        assert titles == ["a new sky, ink", first.prompt]
        assert message["extra"]["title"] == "a new sky, ink"
