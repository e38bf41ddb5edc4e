"""Each SillyTavern user sees only their own: two handles, a user token each, the real daemon on
a real socket. Alice never sees, fetches, streams or changes anything of Bob's (by id, prefix,
path, chat name, event or thumbnail); the admin sees both."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from daemon.cli.commands import main
from daemon.engine.store import Job, JobState
from daemon.web.access import UserTokens
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for, job_for
from tests.stsim import SimClock, STSim
from tests.web.conftest import Inbox, inbox_for, web_config

TOKEN_SHOWN_MS = 30_000  # one POST and a re-render; room for a loaded machine

pytestmark = pytest.mark.anyio

STREAM_WITHIN = 10.0
"""How long an event may take to reach a stream."""


def user_chat(root: Path, user: str, name: str, text: str, owner: str = "Alice") -> Path:
    path = root / user / "chats" / owner / f"{owner} - {name}.jsonl"
    tab = STSim.create(path, character=owner, clock=SimClock(start=datetime.now(UTC)))
    tab.send_user("Go on.").reply(owner, text)
    tab.save()
    return path


@dataclass
class Two:
    inbox: Inbox
    admin: str
    alice: str
    bob: str
    alice_job: Job
    bob_job: Job
    bob_chat: str  # relative to the data root

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.inbox.client(headers=headers)


async def _pending(inbox: Inbox, user: str, name: str) -> Job:
    path = await anyio.to_thread.run_sync(
        user_chat, inbox.root, user, name, f"The secret lamp of {user} flickers."
    )
    job = await job_for(inbox.service.deps, path)
    inbox.service.runner.wake()
    return await inbox.wait_state(job.id, JobState.PENDING)


@contextlib.asynccontextmanager
async def two_users(
    make_config: MakeConfig,
    tmp_path: Path,
    fake_api: FakeAPI,
    prices: dict[str, float] | None = None,
    limits: dict[str, Any] | None = None,
    **web: Any,
) -> AsyncIterator[Two]:
    extra: dict[str, Any] = {"prices": prices} if prices else {}
    if limits:
        extra["limits"] = limits
    config = web_config(make_config, tmp_path, fake_api, web=web, **extra)
    root = config.data_root
    assert root is not None
    for user in ("alice", "bob"):
        (root / user / "chats").mkdir(parents=True)
    tokens = UserTokens(config.state_dir)
    _, alice = tokens.create(["alice"], "alice's tab")
    _, bob = tokens.create(["bob"])
    async with inbox_for(config) as inbox:
        admin = (config.state_dir / "web-token").read_text().strip()
        alice_job = await _pending(inbox, "alice", "garden")
        bob_job = await _pending(inbox, "bob", "cellar")
        yield Two(inbox, admin, alice, bob, alice_job, bob_job, bob_job.chat)


@pytest.fixture
async def two(make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI) -> AsyncIterator[Two]:
    async with two_users(make_config, tmp_path, fake_api) as found:
        yield found


async def test_several_users_need_a_token_even_on_loopback(two: Two) -> None:
    async with two.client(None) as nobody:
        assert (await nobody.get("/api/v1/jobs")).status_code == 401
        assert (await nobody.get("/")).status_code == 401
        refused = await nobody.post(f"/api/v1/jobs/{two.bob_job.id}/accept", json={})
        assert refused.status_code == 401
    assert (await two.inbox.job(two.bob_job.id)).state is JobState.PENDING


async def test_alice_sees_and_touches_only_her_own(two: Two) -> None:
    bob_id = two.bob_job.id
    differ = next(
        i for i, (a, b) in enumerate(zip(bob_id, two.alice_job.id, strict=True)) if a != b
    )
    prefix = bob_id[: differ + 1]  # names only Bob's job
    async with two.client(two.alice) as alice:
        listed = (await alice.get("/api/v1/jobs")).json()["jobs"]
        assert [j["id"] for j in listed] == [two.alice_job.id]
        assert (await alice.get("/api/v1/jobs", params={"user": "bob"})).json()["jobs"] == []
        for path in (
            f"/api/v1/jobs/{bob_id}",
            f"/api/v1/jobs/{prefix}",  # a prefix neither matches nor says "ambiguous"
            f"/api/v1/jobs/{bob_id}/images/1",
            f"/api/v1/jobs/{bob_id}/images/1?size=thumb",
            f"/api/v1/jobs/{bob_id}/message",
        ):
            answer = await alice.get(path)
            assert answer.status_code == 404, path  # not 403: not even that it exists
            ghost = await alice.get(path.replace(prefix, "7ZZZZZ"))
            assert answer.text.replace(prefix, "7ZZZZZ") == ghost.text  # same as no job
        for action in ("accept", "reject", "regen"):
            answer = await alice.post(f"/api/v1/jobs/{bob_id}/{action}", json={})
            assert answer.status_code == 404, action
        for body in (
            {"chat": two.bob_chat},
            {"chat": two.bob_chat, "mesid": 1, "force": True},
            {"chat_file": Path(two.bob_chat).stem},
            {"chat": "bob/chats/Alice/nothing here.jsonl"},
        ):
            answer = await alice.post("/api/v1/generate", json=body)
            assert answer.status_code == 404, body
            assert answer.json()["error"]["code"] == "not_found"
            assert "secret lamp" not in answer.text and "messages" not in answer.text
        status = (await alice.get("/api/v1/status")).json()
        assert status["users"] == ["alice"] and status["data_root"] is None
        assert status["jobs"]["pending"] == 1
        page = (await alice.get("/")).text
        assert two.alice_job.id in page and bob_id not in page and "cellar" not in page
        history = (await alice.get("/history")).text
        assert "cellar" not in history
        own = await alice.get(f"/api/v1/jobs/{two.alice_job.id}/images/1?size=thumb")
        assert own.status_code == 200
    bob_job = await two.inbox.job(bob_id)
    assert bob_job.state is JobState.PENDING and bob_job.attempts == two.bob_job.attempts
    assert len(await two.inbox.service.store.query_jobs(users=["bob"])) == 1  # nothing new

    async with two.client(two.admin) as admin:
        ids = {j["id"] for j in (await admin.get("/api/v1/jobs")).json()["jobs"]}
        assert ids == {two.alice_job.id, bob_id}
        assert (await admin.get(f"/api/v1/jobs/{bob_id}/images/1?size=thumb")).status_code == 200


async def _events(
    client: httpx.AsyncClient, seen: list[dict[str, Any]], ready: anyio.Event
) -> None:
    async with client.stream("GET", "/api/v1/events") as stream:
        name = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                if name == "hello":
                    ready.set()
                else:
                    seen.append(json.loads(line[6:]))


async def _true(value: bool) -> bool:
    return value


async def test_events_of_bob_never_reach_alices_stream(two: Two) -> None:
    alice_saw: list[dict[str, Any]] = []
    admin_saw: list[dict[str, Any]] = []
    async with (
        two.client(two.alice) as alice,
        two.client(two.bob) as bob,
        two.client(two.admin) as admin,
        anyio.create_task_group() as tg,
    ):
        alice_ready, admin_ready = anyio.Event(), anyio.Event()
        tg.start_soon(_events, alice, alice_saw, alice_ready)
        tg.start_soon(_events, admin, admin_saw, admin_ready)
        with anyio.fail_after(STREAM_WITHIN):
            await alice_ready.wait()
            await admin_ready.wait()
        assert (await bob.post(f"/api/v1/jobs/{two.bob_job.id}/reject", json={})).status_code == 200
        answer = await alice.post(f"/api/v1/jobs/{two.alice_job.id}/reject", json={})
        assert answer.status_code == 200

        def _has(events: list[dict[str, Any]], job_id: str) -> bool:
            return any(e.get("job", {}).get("id") == job_id for e in events)

        await async_wait_for(
            lambda: _true(_has(alice_saw, two.alice_job.id) and _has(admin_saw, two.alice_job.id)),
            within=STREAM_WITHIN,
        )
        tg.cancel_scope.cancel()
    # Alice's rejection came after Bob's: had Bob's event reached her stream, it would be here.
    assert not _has(alice_saw, two.bob_job.id)
    assert _has(admin_saw, two.bob_job.id)
    assert all(e["job"]["user"] == "alice" for e in alice_saw)

    # A reconnect that replays missed events filters them too.
    async with two.client(two.alice) as alice:
        headers = {"Last-Event-ID": "0"}
        async with alice.stream("GET", "/api/v1/events", headers=headers) as stream:
            text = ""
            async for chunk in stream.aiter_text():
                text += chunk
                if two.alice_job.id in text or "reset" in text:
                    break
    assert two.bob_job.id not in text


async def test_bobs_accept_cannot_come_from_alice_and_the_admin_does_both(two: Two) -> None:
    async with two.client(two.alice) as alice, two.client(two.bob) as bob:
        stolen = await alice.post(f"/api/v1/jobs/{two.bob_job.id}/accept", json={"keep": [1]})
        assert stolen.status_code == 404
        assert (await two.inbox.job(two.bob_job.id)).state is JobState.PENDING
        mine = await bob.post(f"/api/v1/jobs/{two.bob_job.id}/accept", json={"keep": [1]})
        assert mine.status_code == 200
    await two.inbox.wait_state(two.bob_job.id, JobState.COMMITTED)
    async with two.client(two.admin) as admin:
        assert (await admin.get(f"/api/v1/jobs/{two.bob_job.id}/message")).status_code == 200
        done = await admin.post(f"/api/v1/jobs/{two.alice_job.id}/reject", json={})
        assert done.status_code == 200


async def test_a_revoked_token_stops_at_once_and_tokens_are_listed_without_secret(
    two: Two, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = str(tmp_path / "config.toml")
    assert main(["users", "list", "--json", "--config", config_file]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {tuple(t["handles"]) for t in listed} == {("alice",), ("bob",)}
    text = json.dumps(listed) + (two.inbox.config.state_dir / "web-users.json").read_text()
    assert two.alice not in text and two.bob not in text  # only hashes are kept
    alice_id = next(t["id"] for t in listed if t["handles"] == ["alice"])
    async with two.client(two.alice) as alice:
        assert (await alice.get("/api/v1/jobs")).status_code == 200
        assert main(["users", "revoke", alice_id, "--config", config_file]) == 0
        assert (await alice.get("/api/v1/jobs")).status_code == 401
    assert main(["users", "token", "alice", "--config", config_file]) == 0
    fresh = capsys.readouterr().out.strip().splitlines()[-1]
    async with two.client(fresh) as alice:
        assert [j["id"] for j in (await alice.get("/api/v1/jobs")).json()["jobs"]] == [
            two.alice_job.id
        ]
        # Only the admin manages tokens.
        assert (await alice.get("/api/v1/users")).status_code == 403
        assert (await alice.post("/api/v1/users", json={"handles": ["bob"]})).status_code == 403


async def test_the_admin_makes_and_revokes_user_tokens_through_the_api(two: Two) -> None:
    async with two.client(two.admin) as admin:
        made = await admin.post("/api/v1/users", json={"handles": ["bob"], "label": "phone"})
        assert made.status_code == 201
        token, token_id = made.json()["token"], made.json()["id"]
        listed = (await admin.get("/api/v1/users")).json()["tokens"]
        assert token_id in {t["id"] for t in listed} and token not in json.dumps(listed)
        bad = await admin.post("/api/v1/users", json={"handles": ["../etc"]})
        assert bad.status_code == 422
        async with two.client(token) as phone:
            assert (await phone.get(f"/api/v1/jobs/{two.bob_job.id}")).status_code == 200
            assert (
                await admin.post(f"/api/v1/users/{token_id}/revoke", json={})
            ).status_code == 200
            assert (await phone.get(f"/api/v1/jobs/{two.bob_job.id}")).status_code == 401


async def test_a_household_may_share_one_inbox_on_loopback(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    async with two_users(make_config, tmp_path, fake_api, require_token=False) as two:
        async with two.client(None) as anyone:
            ids = {j["id"] for j in (await anyone.get("/api/v1/jobs")).json()["jobs"]}
            assert ids == {two.alice_job.id, two.bob_job.id}
        async with two.client(two.alice) as alice:  # a user token still limits its bearer
            assert (await alice.get(f"/api/v1/jobs/{two.bob_job.id}")).status_code == 404


async def test_one_user_on_loopback_needs_no_token(inbox: Inbox) -> None:
    job = await inbox.pending()
    async with inbox.client() as c:
        assert (await c.get(f"/api/v1/jobs/{job.id}")).status_code == 200


async def test_the_pause_switch_names_only_the_callers_own_chats(two: Two) -> None:
    async with two.client(two.admin) as admin, two.client(two.alice) as alice:
        paused = await admin.post("/api/v1/pause", json={"paused": True, "chat": two.bob_chat})
        assert paused.status_code == 200 and two.bob_chat in paused.text
        seen = (await alice.get("/api/v1/pause")).json()
        assert seen["chats"] == [] and "cellar" not in json.dumps(seen)
        status = (await alice.get("/api/v1/status")).json()
        text = json.dumps(status)
        assert "cellar" not in text, text[max(0, text.find("cellar") - 300) :][:400]
        theirs = await alice.post("/api/v1/pause", json={"paused": False, "chat": two.bob_chat})
        assert theirs.status_code == 404
        everything = await alice.post("/api/v1/pause", json={"paused": True})
        assert everything.status_code == 403
        mine = await alice.post("/api/v1/pause", json={"paused": True, "chat": two.alice_job.chat})
        assert mine.status_code == 200 and mine.json()["chats"] == [two.alice_job.chat]
        assert two.bob_chat in (await admin.get("/api/v1/pause")).text


async def test_a_revoked_tokens_open_event_stream_ends(two: Two) -> None:
    two.inbox.ctx.ping_seconds = 0.2  # the check runs at each ping
    async with two.client(two.admin) as admin:
        listed = (await admin.get("/api/v1/users")).json()["tokens"]
        alice_id = next(t["id"] for t in listed if t["handles"] == ["alice"])
        async with two.client(two.alice) as alice, alice.stream("GET", "/api/v1/events") as s:
            assert s.status_code == 200
            lines = s.aiter_lines()
            assert (await anext(lines)).startswith("id:")
            assert (
                await admin.post(f"/api/v1/users/{alice_id}/revoke", json={})
            ).status_code == 200
            with anyio.fail_after(STREAM_WITHIN):
                async for _line in lines:
                    pass  # ends: the server closed the stream
    assert not two.inbox.ctx.streams


async def test_the_admin_makes_and_revokes_a_token_on_the_settings_page(two: Two) -> None:
    from playwright.async_api import expect

    from tests.web.test_browser import browser

    async with browser() as b:
        page = await b.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{two.inbox.url}/settings?token={two.admin}")
        box = page.locator("#users-box")
        await box.locator('input[name="handles"]').fill("bob")
        await box.locator('input[name="label"]').fill("bob's phone")
        await box.locator('button[type="submit"]').click()
        token_input = page.locator("#user-token")
        # expect(), not wait_for_function(): the page's CSP refuses the eval the latter needs.
        await expect(token_input).to_have_value(re.compile(r".{21,}"), timeout=TOKEN_SHOWN_MS)
        token = await token_input.input_value()
        row = box.locator("#user-list li", has_text="bob's phone")
        await row.wait_for()
        async with two.client(token) as phone:
            listed = (await phone.get("/api/v1/jobs")).json()["jobs"]
            assert [j["id"] for j in listed] == [two.bob_job.id]
            await row.locator("button", has_text="Revoke").click()
            await row.wait_for(state="detached")
            assert (await phone.get("/api/v1/jobs")).status_code == 401
        assert not errors, errors


async def test_each_user_sees_the_spend_of_their_own_chats_and_the_admin_all(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """The spend figures of ``status`` (the inbox header) are the caller's: Alice's share, not
    the daemon's total, and without the daemon's caps; the admin sees the total and the caps."""
    price = 0.25
    async with two_users(make_config, tmp_path, fake_api, prices={"fake-image": price}) as two:
        store = two.inbox.service.store
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)
        everyone = await store.spend_between(start, end)
        alices = await store.spend_between(start, end, users=["alice"])
        assert everyone.images == 2 * alices.images > 0  # both calls recorded, one each
        seen: dict[str, dict[str, Any]] = {}
        for name, token in (("admin", two.admin), ("alice", two.alice), ("bob", two.bob)):
            async with two.client(token) as c:
                answer = await c.get("/api/v1/status")
                assert answer.status_code == 200
                seen[name] = answer.json()["spend"]
        for user in ("alice", "bob"):
            own = seen[user]
            assert own["today_images"] == own["month_images"] == alices.images
            assert own["today_usd"] == pytest.approx(price * alices.images)
            assert own["daily_budget"] is None and own["monthly_budget"] is None
            assert f"today {price * alices.images:.2f} USD" in own["line"]
        assert seen["admin"]["today_images"] == everyone.images
        assert seen["admin"]["today_usd"] == pytest.approx(price * everyone.images)


async def test_a_budget_hold_tells_a_user_why_without_the_daemons_spend(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """A job held by the daily budget: its owner learns the budget is reached, not how much
    the whole daemon spent against which cap; the admin sees the figures."""
    from tests.web.conftest import IMAGES

    price = 0.25
    cap = price * IMAGES * 2  # room for the two jobs the fixture makes, not a third
    async with two_users(
        make_config, tmp_path, fake_api, prices={"fake-image": price}, limits={"daily_budget": cap}
    ) as two:
        inbox = two.inbox
        path = await anyio.to_thread.run_sync(
            user_chat, inbox.root, "alice", "attic", "Dust dances in the attic light."
        )
        job = await job_for(inbox.service.deps, path)
        inbox.service.runner.wake()

        async def held() -> bool:
            return bool((await inbox.job(job.id)).meta.get("held"))

        await async_wait_for(held, within=STREAM_WITHIN)
        figures = f"of {cap:.2f} USD"
        async with two.client(two.alice) as alice, two.client(two.admin) as admin:
            mine = (await alice.get(f"/api/v1/jobs/{job.id}")).json()
            assert "daily budget is reached" in mine["progress"]["text"]
            assert figures not in json.dumps(mine)
            status = (await alice.get("/api/v1/status")).json()
            assert status["held"] and figures not in json.dumps(status["held"])
            listed = (await alice.get("/api/v1/jobs")).text
            assert figures not in listed
            theirs = (await admin.get(f"/api/v1/jobs/{job.id}")).json()
            assert figures in theirs["progress"]["text"]
        # Its events (replayed from the start) say the same.
        async with two.client(two.alice) as alice:
            headers = {"Last-Event-ID": "0"}
            text = ""
            with anyio.fail_after(STREAM_WITHIN):
                async with alice.stream("GET", "/api/v1/events", headers=headers) as stream:
                    async for chunk in stream.aiter_text():
                        text += chunk
                        if "daily budget is reached" in text:
                            break
            assert figures not in text
