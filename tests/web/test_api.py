"""The JSON API against the real daemon over a real socket: every route, the errors, the race."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from daemon.engine.store import JobState
from daemon.tavern.chat import read_chat
from tests.engine.conftest import FakeAPI, MakeConfig
from tests.web.conftest import IMAGES, Inbox, inbox_for, web_config

pytestmark = pytest.mark.anyio


JSON_TYPE = {"content-type": "application/json"}


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()["error"]
    assert body["code"] and body["message"]
    return str(body["message"])


async def test_list_filters_pages_and_one_job(inbox: Inbox) -> None:
    first = await inbox.pending("north")
    second = await inbox.pending("south")
    async with inbox.client() as c:
        listed = (await c.get("/api/v1/jobs")).json()
        assert [j["id"] for j in listed["jobs"]] == [second.id, first.id]  # newest first
        assert listed["next"] is None
        job = listed["jobs"][1]
        assert job["chat"] == first.chat and job["chat_file"] == "Alice - north"
        assert job["chat_folder"] == "Alice" and job["state"] == "pending"
        assert job["identity"] == {"name": first.reply.name, "send_date": first.reply.date}
        assert [i["index"] for i in job["images"]] == list(range(1, IMAGES + 1))
        assert job["images"][0]["thumb"] == f"/api/v1/jobs/{first.id}/images/1?size=thumb"

        by_chat = (await c.get("/api/v1/jobs", params={"chat": first.chat})).json()
        assert [j["id"] for j in by_chat["jobs"]] == [first.id]
        by_file = (await c.get("/api/v1/jobs", params={"chat_file": "Alice - south"})).json()
        assert [j["id"] for j in by_file["jobs"]] == [second.id]
        nobody = (await c.get("/api/v1/jobs", params={"user": "someone-else"})).json()
        assert nobody == {"jobs": [], "next": None}
        states = (await c.get("/api/v1/jobs?state=committed&state=failed")).json()
        assert states["jobs"] == []
        pending = (await c.get("/api/v1/jobs?state=pending,queued")).json()
        assert len(pending["jobs"]) == 2

        page = (await c.get("/api/v1/jobs", params={"limit": 1})).json()
        assert [j["id"] for j in page["jobs"]] == [second.id] and page["next"] == second.id
        rest = (await c.get("/api/v1/jobs", params={"limit": 1, "before": page["next"]})).json()
        assert [j["id"] for j in rest["jobs"]] == [first.id]

        one = await c.get(f"/api/v1/jobs/{first.id}")
        assert one.json()["id"] == first.id
        # The shortest unique prefix (ids made in one test can share their time part), typed
        # in lower case.
        common = next(i for i, (a, b) in enumerate(zip(first.id, second.id, strict=True)) if a != b)
        prefix = await c.get(f"/api/v1/jobs/{first.id[: common + 1].lower()}")
        assert prefix.status_code == 200, (first.id, prefix.text)
        assert prefix.json()["id"] == first.id

        _error(await c.get("/api/v1/jobs?state=nonsense"), 422)
        _error(await c.get("/api/v1/jobs?limit=0"), 422)
        _error(await c.get("/api/v1/jobs?limit=501"), 422)
        _error(await c.get("/api/v1/jobs?before=..%2F"), 400)


async def test_images_full_and_scaled_thumbnails(inbox: Inbox) -> None:
    job = await inbox.pending()
    folder = inbox.config.pending_dir / job.id
    big = io.BytesIO()
    Image.new("RGB", (1200, 600), (10, 200, 90)).save(big, format="PNG")
    (folder / job.images[1]).write_bytes(big.getvalue())  # image 2: a large one
    async with inbox.client() as c:
        full = await c.get(f"/api/v1/jobs/{job.id}/images/1")
        assert full.status_code == 200 and full.headers["content-type"] == "image/png"
        assert full.content == (folder / job.images[0]).read_bytes()
        thumb = await c.get(f"/api/v1/jobs/{job.id}/images/2?size=thumb")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        with Image.open(io.BytesIO(thumb.content)) as image:
            assert image.size == (384, 192)
        assert len(thumb.content) < len(big.getvalue())
        again = await c.get(f"/api/v1/jobs/{job.id}/images/2?size=thumb")
        assert again.content == thumb.content
        cached = list((inbox.config.state_dir / "thumbs").iterdir())
        assert len(cached) == 1  # made once, then served from the cache
        _error(await c.get(f"/api/v1/jobs/{job.id}/images/0"), 404)
        _error(await c.get(f"/api/v1/jobs/{job.id}/images/{IMAGES + 1}"), 404)
        _error(await c.get(f"/api/v1/jobs/{job.id}/images/abc"), 400)
        _error(await c.get(f"/api/v1/jobs/{job.id}/images/1?size=huge"), 422)


async def test_accept_a_subset_commits_exactly_those_images(inbox: Inbox) -> None:
    job = await inbox.pending("subset")
    folder = inbox.config.pending_dir / job.id
    wanted = [(folder / job.images[n - 1]).read_bytes() for n in (3, 1)]
    async with inbox.client() as c:
        accepted = await c.post(f"/api/v1/jobs/{job.id}/accept", json={"keep": [3, 1]})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["state"] in ("accepted", "committed")
        done = await inbox.wait_state(job.id, JobState.COMMITTED)
        files = [Path(p) for p in done.meta["committed_files"]]
        assert [p.read_bytes() for p in files] == wanted  # exactly those two, in that order
        chat, _ = read_chat(inbox.root / job.chat)
        ours = [m for m in chat.messages if m.marker is not None]
        assert len(ours) == 1
        shown = (await c.get(f"/api/v1/jobs/{job.id}")).json()
        assert [i["name"] for i in shown["images"]] == [p.name for p in files]
        image = await c.get(f"/api/v1/jobs/{job.id}/images/2")
        assert image.content == wanted[1]
        message = (await c.get(f"/api/v1/jobs/{job.id}/message")).json()
        assert message["message"]["extra"]["st_imagegen_job"] == job.id
        assert message["after"]["send_date"] == job.reply.date
        assert ours[0].data == message["message"]


async def test_reject_and_regenerate_with_an_edited_prompt(inbox: Inbox, fake_api: FakeAPI) -> None:
    first = await inbox.pending("gone")
    other = await inbox.pending("again")
    async with inbox.client() as c:
        rejected = await c.post(f"/api/v1/jobs/{first.id}/reject", json={})
        assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
        assert not (inbox.config.pending_dir / first.id).exists()
        _error(await c.get(f"/api/v1/jobs/{first.id}/message"), 409)

        regen = await c.post(
            f"/api/v1/jobs/{other.id}/regen", json={"prompt": "a lighthouse at dawn, oil paint"}
        )
        assert regen.status_code == 201, regen.text
        new = regen.json()
        assert new["id"] != other.id and new["source"] == "regen"
        assert new["prompt"] == "a lighthouse at dawn, oil paint"
        assert new["regen_of"] == other.id
        assert (await inbox.job(other.id)).state is JobState.SUPERSEDED
        done = await inbox.wait_state(new["id"], JobState.PENDING)
        # The earlier images stay on offer after the new ones (issues 12, 24), marked as such.
        assert len(done.images) == 2 * IMAGES
        assert done.meta["image_prompts"][:IMAGES] == ["a lighthouse at dawn, oil paint"] * IMAGES
        shown = (await c.get(f"/api/v1/jobs/{new['id']}")).json()["images"]
        assert [i["earlier"] for i in shown] == [False] * IMAGES + [True] * IMAGES
        assert {i["prompt"] for i in shown[IMAGES:]} == {other.prompt}
        assert fake_api.prompts()[-1].startswith("a lighthouse at dawn, oil paint")

        same = await c.post(f"/api/v1/jobs/{new['id']}/regen", json={})
        assert same.status_code == 201 and same.json()["prompt"] == new["prompt"]
        _error(await c.post(f"/api/v1/jobs/{new['id']}/regen", json={"prompt": "  "}), 422)
        _error(await c.post(f"/api/v1/jobs/{other.id}/regen", json={}), 409)


async def test_generate_for_a_chat_and_message(inbox: Inbox) -> None:
    path = await anyio.to_thread.run_sync(
        lambda: __import__("tests.engine.conftest", fromlist=["write_chat"]).write_chat(
            inbox.root, "manual", ["First light.", "Second light."]
        )
    )
    rel = path.relative_to(inbox.root).as_posix()
    async with inbox.client() as c:
        made = await c.post("/api/v1/generate", json={"chat": rel, "mesid": 2})
        assert made.status_code == 201, made.text
        job = made.json()
        assert job["source"] == "manual" and job["mesid"] == 2 and job["chat"] == rel
        again = await c.post("/api/v1/generate", json={"chat_file": "Alice - manual", "mesid": 2})
        assert again.status_code == 200 and again.json()["id"] == job["id"]
        named = await c.post(
            "/api/v1/generate", json={"chat": "Alice", "chat_file": "Alice - manual", "mesid": 2}
        )
        assert named.status_code == 200 and named.json()["id"] == job["id"]
        forced = await c.post("/api/v1/generate", json={"chat": rel, "mesid": 2, "force": True})
        assert forced.status_code == 201 and forced.json()["id"] != job["id"]
        last = await c.post("/api/v1/generate", json={"chat": rel})
        assert last.status_code == 201 and last.json()["mesid"] == 4
        await inbox.wait_state(job["id"], JobState.PENDING)

        assert "user's message" in _error(
            await c.post("/api/v1/generate", json={"chat": rel, "mesid": 1}), 422
        )
        _error(await c.post("/api/v1/generate", json={"chat": rel, "mesid": 99}), 422)
        _error(await c.post("/api/v1/generate", json={"chat": rel, "mesid": "2"}), 422)
        _error(await c.post("/api/v1/generate", json={"chat": "Nobody"}), 404)
        _error(await c.post("/api/v1/generate", json={"chat_file": "no such chat"}), 404)
        _error(await c.post("/api/v1/generate", json={"chat": "/etc/passwd"}), 400)
        _error(await c.post("/api/v1/generate", json={"chat": "../../etc/x.jsonl"}), 400)


async def _swipe_away(inbox: Inbox, job_id: str) -> None:
    """As the daemon does when the reply is swiped away: superseded, its images shelved."""
    job = await inbox.job(job_id)
    store, approval = inbox.service.store, inbox.service.deps.approval
    gone = await store.supersede(job.reply, "reply changed", keep=False)
    assert [g.id for g in gone] == [job.id]
    assert await anyio.to_thread.run_sync(approval.shelve, job.id)


@pytest.mark.parametrize("face", ["inbox", "extension", "extension-with-user"])
async def test_generate_revives_a_job_swiped_away_and_back(
    inbox: Inbox, fake_api: FakeAPI, face: str
) -> None:
    """Regression: the web API answered 200 with the superseded job and did nothing, where the
    CLI brought it back (tests/engine/test_manual.py); every face now asks the same engine.
    The bodies are the ones the inbox and the extension (extension/lib/protocol.js
    ``generateBody``, with and without the ST user known) send."""
    job = await inbox.pending("swipeback")
    calls = fake_api.count("images/generations")
    await _swipe_away(inbox, job.id)
    assert not (inbox.config.pending_dir / job.id).exists()
    body: dict[str, Any] = {
        "inbox": {"chat": job.chat, "mesid": job.message_index},
        "extension": {"chat": "Alice", "chat_file": "Alice - swipeback", "force": False},
        "extension-with-user": {"chat": job.chat, "force": False},
    }[face]
    body["mesid"] = job.message_index
    async with inbox.client() as c:
        back = await c.post("/api/v1/generate", json=body)
    assert back.status_code == 201, back.text
    assert back.json()["id"] == job.id and back.json()["state"] == "pending"
    revived = await inbox.job(job.id)
    assert revived.state is JobState.PENDING and revived.images == job.images
    assert all((inbox.config.pending_dir / job.id / n).is_file() for n in job.images)
    assert fake_api.count("images/generations") == calls  # its own images, no new call


async def test_meta_serves_the_one_job_vocabulary(inbox: Inbox) -> None:
    from daemon.jobstate import vocabulary

    async with inbox.client() as c:
        got = await c.get("/api/v1/meta")
        page = await c.get("/")
    assert got.status_code == 200
    data = got.json()
    assert {k: v for k, v in data.items() if k not in ("api", "version")} == vocabulary()
    assert data["groups"]["inbox"] == [
        "queued",
        "prompting",
        "imaging",
        "pending",
        "accepted",
        "failed",
    ]
    # The pages carry the same vocabulary for their scripts (common.js reads it).
    assert '<script id="st-meta" type="application/json">' in page.text
    assert '"cancellable":["queued","prompting","imaging"]' in page.text.replace(" ", "")


async def test_errors_are_json_with_the_right_status(inbox: Inbox) -> None:
    job = await inbox.pending()
    async with inbox.client() as c:
        assert "no job" in _error(await c.get("/api/v1/jobs/0123456789ABCDEFGHJKMNPQRS"), 404)
        _error(await c.get("/api/v1/jobs/" + "A" * 300), 400)
        _error(await c.get("/api/v1/jobs/..."), 400)
        _error(await c.get("/api/v1/jobs/%00"), 400)
        _error(await c.get("/api/v1/nowhere"), 404)
        accept = f"/api/v1/jobs/{job.id}/accept"
        _error(await c.post(accept, content=b"keep=1", headers={"content-type": "text/plain"}), 415)
        bad_json = {"content-type": "application/json"}
        _error(await c.post(accept, content=b"{nope", headers=bad_json), 400)
        _error(await c.post(accept, content=b"[1]", headers=bad_json), 400)
        _error(await c.post(accept, json={"keep": [IMAGES + 1]}), 422)
        _error(await c.post(accept, json={"keep": [True]}), 422)
        _error(await c.post(accept, json={"keep": "1,2"}), 422)
        _error(await c.post(accept, content=b"x" * 70_000, headers=bad_json), 413)
        _error(await c.get(accept), 405)  # a GET never acts
        assert (await inbox.job(job.id)).state is JobState.PENDING
        inbox.ctx.draining = lambda: True
        assert "stopping" in _error(await c.post(accept, json={}), 503)
        inbox.ctx.draining = lambda: False
        assert (await c.post(accept, json={})).status_code == 200
        await inbox.wait_state(job.id, JobState.COMMITTED)
        message = _error(await c.post(f"/api/v1/jobs/{job.id}/reject", json={}), 409)
        assert f"cannot reject job {job.id}" in message


async def test_bad_bodies_on_every_job_route_change_nothing(inbox: Inbox) -> None:
    """Each route that takes a body answers a field of the wrong type, a missing one or a huge
    one with a clear error, and no job, pause or token changes; unknown fields are ignored."""
    job = await inbox.pending()
    jobs = f"/api/v1/jobs/{job.id}"
    async with inbox.client() as c:
        listed = (await c.get("/api/v1/jobs")).json()
        paused = (await c.get("/api/v1/pause")).json()
        tokens = (await c.get("/api/v1/users")).json()
        for route, body, status, words in (
            (jobs + "/accept", {"keep": [IMAGES + 1]}, 422, "no image"),
            (jobs + "/accept", {"keep": "1,2"}, 422, "list of image numbers"),
            (jobs + "/regen", {"prompt": 5}, 422, "non-empty text"),
            (jobs + "/regen", {"prompt": "x" * 8001}, 422, "longer than"),
            ("/api/v1/generate", {"mesid": "2"}, 422, "whole number"),
            ("/api/v1/generate", {"force": "yes"}, 422, "true or false"),
            ("/api/v1/generate", {"chat": "x" * 2000}, 400, "not a chat name"),
            ("/api/v1/cancel", {"chat": ["a"]}, 422, "chat path"),
            ("/api/v1/pause", {}, 422, "paused is true or false"),
            ("/api/v1/pause", {"paused": "yes"}, 422, "paused is true or false"),
            ("/api/v1/users", {}, 422, "user handles"),
            ("/api/v1/users", {"handles": ["alice"], "label": 3}, 422, "label is a text"),
            ("/api/v1/users", {"handles": ["a" * 70_000]}, 413, "larger than"),
        ):
            assert words in _error(await c.post(route, json=body), status), route
        for action in ("reject", "restore", "cancel"):
            _error(await c.post(f"{jobs}/{action}", content=b"[]", headers=JSON_TYPE), 400)
        assert await inbox.job(job.id) == job  # not even its updated_at moved
        assert (await c.get("/api/v1/jobs")).json() == listed
        assert (await c.get("/api/v1/pause")).json() == paused
        assert (await c.get("/api/v1/users")).json() == tokens
        ignored = await c.post("/api/v1/pause", json={"paused": False, "colour": "red"})
        assert ignored.status_code == 200 and ignored.json()["all"] is False


async def test_two_clients_accepting_at_once_one_wins(inbox: Inbox) -> None:
    job = await inbox.pending("race")
    answers: list[httpx.Response] = []

    async def accept(keep: list[int]) -> None:
        async with inbox.client() as c:
            answers.append(await c.post(f"/api/v1/jobs/{job.id}/accept", json={"keep": keep}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept, [1])
        tg.start_soon(accept, [2, 3])
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 409)
    assert f"cannot accept job {job.id}: it is" in loser.json()["error"]["message"]
    winner = next(a for a in answers if a.status_code == 200)
    done = await inbox.wait_state(job.id, JobState.COMMITTED)
    assert len(done.meta["committed_files"]) == len(winner.json()["images"])


async def test_the_loser_of_an_accept_hears_the_state_not_its_numbers(inbox: Inbox) -> None:
    """The race above, one step at a time: after an accept kept image 1 only, a late accept of
    images 2 and 3 is a conflict (409, the job's state), not a bad request (422)."""
    job = await inbox.pending("late")
    async with inbox.client() as c:
        first = await c.post(f"/api/v1/jobs/{job.id}/accept", json={"keep": [1]})
        late = await c.post(f"/api/v1/jobs/{job.id}/accept", json={"keep": [2, 3]})
    assert first.status_code == 200
    assert late.status_code == 409, late.text
    assert f"cannot accept job {job.id}: it is" in late.json()["error"]["message"]


Events = list[tuple[str, str, dict[str, Any]]]


async def _events(lines: AsyncIterator[str], count: int, within: float = 5.0) -> Events:
    """The next ``count`` events ``(id, name, data)`` of an open stream (pings skipped)."""
    found: Events = []
    fields: dict[str, str] = {}
    with anyio.fail_after(within):
        async for line in lines:
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if fields:
                found.append((fields.get("id", ""), fields["event"], json.loads(fields["data"])))
                fields = {}
                if len(found) >= count:
                    return found
    return found


async def test_event_stream_tells_each_job_change_and_replays(inbox: Inbox) -> None:
    async with inbox.client() as c, c.stream("GET", "/api/v1/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        [(_, name, hello)] = await _events(lines, 1)
        assert name == "hello" and hello["api"] == 1
        job = await inbox.pending("live")
        seen: Events = []
        while not seen or seen[-1][2]["job"]["state"] != "pending":
            seen += await _events(lines, 1)
        states = [d["job"]["state"] for _, _, d in seen]
        assert states in (
            ["queued", "imaging", "pending"],
            ["queued", "prompting", "imaging", "pending"],
        )
        assert all(d["job"]["id"] == job.id for _, _, d in seen)
        assert seen[0][2]["previous_state"] is None
        assert seen[-1][2]["previous_state"] == "imaging"
        ids = [int(i) for i, _, _ in seen]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    headers = {"Last-Event-ID": seen[0][0]}
    async with inbox.client() as c, c.stream("GET", "/api/v1/events", headers=headers) as stream:
        replay = await _events(stream.aiter_lines(), len(seen))
        assert replay[0][1] == "hello"
        assert [(i, d) for i, _, d in replay[1:]] == [(i, d) for i, _, d in seen[1:]]
    stale = {"Last-Event-ID": "999999"}
    async with inbox.client() as c, c.stream("GET", "/api/v1/events", headers=stale) as stream:
        lines = stream.aiter_lines()
        assert [n for _, n, _ in await _events(lines, 1)] == ["hello"]
        await inbox.pending("after")  # the stream goes on after a replay with nothing to send
        assert (await _events(lines, 1))[0][1] == "job"


async def test_a_change_between_the_page_and_its_stream_is_replayed(inbox: Inbox) -> None:
    """The inbox page says where the stream stood when its jobs were read (``events_after``);
    a stream opened with ``?after=`` that number replays what changed in between (a job made
    while the page loaded), and a reconnection's Last-Event-ID wins over it."""
    async with inbox.client() as c:
        page = (await c.get("/")).text
        found = re.search(r'<script id="initial" type="application/json">(.*?)</script>', page)
        assert found is not None
        after = json.loads(found.group(1))["events_after"]
        assert isinstance(after, int)
        job = await inbox.pending("between")  # the page did not list it
        params = {"after": str(after)}
        async with c.stream("GET", "/api/v1/events", params=params) as stream:
            lines = stream.aiter_lines()
            [(_, name, _)] = await _events(lines, 1)
            assert name == "hello"
            seen: Events = []
            while not seen or seen[-1][2]["job"]["state"] != "pending":
                seen += await _events(lines, 1)
            assert {d["job"]["id"] for _, _, d in seen} == {job.id}
            assert seen[0][2]["previous_state"] is None  # from its very first change
            last = seen[-1][0]
        resumed = {"Last-Event-ID": last}
        async with c.stream("GET", "/api/v1/events", params=params, headers=resumed) as stream:
            lines = stream.aiter_lines()
            assert [n for _, n, _ in await _events(lines, 1)] == ["hello"]
            later = await inbox.pending("later")
            [(_, name, data)] = await _events(lines, 1)  # no replay of the first job
            assert name == "job" and data["job"]["id"] == later.id


async def test_status_has_the_same_facts_as_the_cli(inbox: Inbox) -> None:
    await inbox.pending()
    async with inbox.client() as c:
        status = (await c.get("/api/v1/status")).json()
    assert status["daemon"]["running"] is True
    assert status["counts"]["pending"] == 1 and status["jobs"]["pending"] == 1
    assert status["chats_watched"] == 1 and status["version"]
    assert isinstance(status["errors"], list)
    # The inbox's strip shows the spend: the images made (no price known for the fake model).
    assert status["spend"]["today_images"] == IMAGES and status["spend"]["today_usd"] == 0
    assert status["held"] == []


async def test_keys_never_reach_an_answer(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    fake_api.key = "sk-very-secret-key-123"
    config = web_config(
        make_config,
        tmp_path,
        fake_api,
        text={"api_key": "sk-very-secret-key-123"},
        image={"n": IMAGES, "api_key": "sk-very-secret-key-123"},
    )
    async with inbox_for(config) as inbox:
        job = await inbox.pending()
        async with inbox.client() as c:
            bodies = [
                (await c.get(path)).text
                for path in (
                    "/api/v1/jobs",
                    f"/api/v1/jobs/{job.id}",
                    "/api/v1/status",
                    "/",
                    "/history",
                )
            ]
    assert job.state is JobState.PENDING
    for body in bodies:
        assert "sk-very-secret" not in body


async def test_a_backends_progress_is_in_the_job_and_the_stream(inbox: Inbox) -> None:
    job = await inbox.pending("steps")
    store = inbox.service.store
    await store.transition(job.id, JobState.PENDING, JobState.IMAGING, check=False)
    async with inbox.client() as c, c.stream("GET", "/api/v1/events") as stream:
        lines = stream.aiter_lines()
        await _events(lines, 1)  # hello
        told = {"fraction": 0.4, "text": "step 8/20"}
        await store.transition(
            job.id, JobState.IMAGING, JobState.IMAGING, meta_update={"progress": told}
        )
        [(_, name, data)] = await _events(lines, 1)
    assert name == "job" and data["previous_state"] == "imaging"
    assert data["job"]["progress"] == {
        "step": "imaging",
        "fraction": 0.4,
        "text": "step 8/20",
    }
