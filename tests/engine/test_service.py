"""The daemon in-process, end to end: simulated ST saves -> pending folder -> accept -> chat."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.config import LogSettings
from daemon.engine.jobs.approval import Approval
from daemon.engine.jobs.pipeline import open_job_deps, run_job_once
from daemon.engine.process.service import Service, ServiceTimings
from daemon.engine.store import Job, JobState
from daemon.logs import configure_logging
from daemon.tavern import layout
from daemon.tavern.chat import read_chat
from daemon.tavern.scan import MAX_UNANCHORED_MESSAGES
from tests.engine.conftest import (
    WATCHDOG_RACE,
    FakeAPI,
    MakeConfig,
    async_wait_for,
    job_for,
    running,
    write_chat,
)
from tests.stsim import SimClock, STSim

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]

FAST = ServiceTimings(heartbeat=0.2, poll=60.0, drain_grace=2.0, drop_settle=0.3)
JOB_TIMEOUT = 10.0
PENDING_MARGIN = 5.0  # seconds past the settle time for a reply to reach pending/


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def live_clock() -> SimClock:
    """Dates from now on (the default clock starts in the past: too old to illustrate)."""
    return SimClock(start=datetime.now(UTC))


def create_tab(path: Path, **kwargs: Any) -> STSim:
    return STSim.create(path, clock=live_clock(), **kwargs)


def open_tab(path: Path, **kwargs: Any) -> STSim:
    return STSim.open(path, clock=live_clock(), **kwargs)


async def seen(service: Service, path: Path) -> None:
    """Wait until the service has read ``path`` at least once (its cursor is stored)."""
    rel = path.relative_to(service.root).as_posix()

    async def check() -> bool:
        return await service.store.get_chat(rel) is not None

    await async_wait_for(check, within=JOB_TIMEOUT)


async def started_chat(service: Service, path: Path, **kwargs: Any) -> STSim:
    """A new chat saved with its greeting, once the service has seen it (as ST: the greeting
    is saved when the chat opens, the user's message comes later)."""
    tab = create_tab(path, **kwargs)
    await seen(service, path)
    return tab


def new_chat(root: Path, owner: str = "Alice", name: str = "e2e", **kwargs: Any) -> Path:
    return root / "default-user" / "chats" / owner / f"{owner} - {name}.jsonl"


async def jobs_of(service: Service, chat: Path) -> list[Job]:
    rel = chat.relative_to(service.root).as_posix()
    return sorted(
        [j for j in await service.store.list_jobs(limit=1000) if j.chat == rel],
        key=lambda j: j.id,
    )


async def wait_state(
    service: Service, job_id: str, *states: JobState, within: float = JOB_TIMEOUT
) -> Job:
    async def check() -> Job | None:
        job = await service.store.get_job(job_id)
        return job if job.state in states else None

    result: Job = await async_wait_for(check, within=within)
    return result


async def wait_jobs(service: Service, chat: Path, count: int) -> list[Job]:
    async def check() -> list[Job] | None:
        jobs = await jobs_of(service, chat)
        return jobs if len(jobs) >= count else None

    result: list[Job] = await async_wait_for(check, within=JOB_TIMEOUT)
    return result


async def settle_and_process(service: Service, before: int) -> None:
    """Wait until the service has processed at least one more chat change."""

    async def check() -> bool:
        return service.processed > before and len(service.settler) == 0

    await async_wait_for(check, within=JOB_TIMEOUT)


async def replied(
    service: Service, path: Path, said: str, reply: str, **kwargs: Any
) -> tuple[STSim, Job]:
    """A new chat of Alice's: greeting, a user message, her reply; the reply's job once pending."""
    tab = await started_chat(service, path, character="Alice", **kwargs)
    tab.send_user(said).save()
    tab.reply("Alice", reply).save()
    job = (await wait_jobs(service, path, 1))[0]
    return tab, await wait_state(service, job.id, JobState.PENDING)


async def revised(service: Service, path: Path, first: Job) -> Job:
    """Wait until ``first`` is superseded as changed and its reply's new revision has a job."""
    old = await wait_state(service, first.id, JobState.SUPERSEDED)
    assert old.last_error and "changed" in old.last_error
    new = (await wait_jobs(service, path, 2))[1]
    assert new.reply.date == first.reply.date and new.revision != first.revision
    return new


async def test_reply_becomes_pending_then_accepted_by_folder_move(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        root = service.root
        path = new_chat(root)
        tab = await started_chat(service, path, character="Alice")
        tab.send_user("Describe the glade.").save()
        saved_at = time.monotonic()
        tab.reply("Alice", "The forest glade glows at dawn; Alice smiles.").save()
        jobs = await wait_jobs(service, path, 1)
        assert len(jobs) == 1
        job = await wait_state(service, jobs[0].id, JobState.PENDING)
        folder = config.state_dir / "pending" / job.id
        # Within the settle time plus a little (two fast fake API calls and some polling).
        assert time.monotonic() - saved_at < config.detect.settle_seconds + PENDING_MARGIN
        assert (folder / "job.json").is_file()
        assert job.images and (folder / job.images[0]).is_file()
        info = json.loads((folder / "job.json").read_text())
        assert info["prompt"] == job.prompt and "glows at dawn" in (job.prompt or "")
        assert job.speaker == "Alice" and job.message_index == 2
        # The prompt writer saw the reply (and the card, on by default).
        assert any("glows at dawn" in text for text in fake_api.text_inputs())

        shutil.move(str(folder), str(config.state_dir / "accepted" / job.id))
        done = await wait_state(service, job.id, JobState.ACCEPTED, JobState.COMMITTED)
        assert done.state in (JobState.ACCEPTED, JobState.COMMITTED)
        committed = await wait_state(service, job.id, JobState.COMMITTED)
        chat, _ = read_chat(path)
        ours = chat.find_marker(committed.id)
        assert ours is not None and ours.index == 3 and ours.is_system
        accepted = config.state_dir / "accepted" / job.id

        async def folder_gone() -> bool:  # the committer removes it just after COMMITTED
            return not accepted.exists()

        await async_wait_for(folder_gone, within=JOB_TIMEOUT)
    assert not config.heartbeat_path.exists()  # a clean stop removes the heartbeat


async def test_no_job_for_user_message_greeting_hidden_or_narrator(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="quiet")
        before = service.processed
        tab = create_tab(path, character="Alice")  # greeting: off by default
        await settle_and_process(service, before)
        before = service.processed
        tab.send_user("Hello?").save()
        await settle_and_process(service, before)
        before = service.processed
        tab.narrator("It starts to rain.").save()
        await settle_and_process(service, before)
        before = service.processed
        tab.reply("Alice", "A hidden thought.").hide(len(tab.messages) - 1).save()
        await settle_and_process(service, before)
        assert await jobs_of(service, path) == []
        assert fake_api.count("chat/completions") == 0


async def test_greeting_gets_a_job_when_enabled(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest, detect={"greetings": True})
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="greet")
        create_tab(path, character="Alice", greeting="Welcome to the lighthouse.")
        jobs = await wait_jobs(service, path, 1)
        assert jobs[0].message_index == 0 and "lighthouse" in jobs[0].excerpt
        await wait_state(service, jobs[0].id, JobState.PENDING)


async def test_swipe_supersedes_and_new_revision_gets_a_job(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    fake_api.image_delay = 1.0  # the first job is still running when the swipe arrives
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="swipe")
        tab = await started_chat(service, path, character="Alice")
        tab.send_user("Go on.").save()
        tab.reply("Alice", "First version of the reply.").save()
        first = (await wait_jobs(service, path, 1))[0]
        await wait_state(service, first.id, JobState.IMAGING, JobState.PENDING)
        tab.swipe("Second version, swiped.").save()
        second = await revised(service, path, first)
        done = await wait_state(service, second.id, JobState.PENDING)
        assert "Second version" in (done.prompt or "")
        assert not (config.state_dir / "pending" / first.id).exists()


async def test_swiping_back_brings_the_earlier_swipes_images_back(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """Regression: swipe, swipe back, and the shown reply had no image (its job stayed
    superseded, and `generate` said so with exit 0)."""
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="swipeback")
        tab, first = await replied(service, path, "Go on.", "A lantern over the pier.")
        shown = (config.state_dir / "pending" / first.id / first.images[0]).read_bytes()
        tab.swipe("A heron over the water.").save()
        second = await revised(service, path, first)
        await wait_state(service, second.id, JobState.PENDING)
        calls = fake_api.count("images/generations")

        tab.swipe_to(0).save()
        back = await wait_state(service, first.id, JobState.PENDING)
        await wait_state(service, second.id, JobState.SUPERSEDED)
        assert fake_api.count("images/generations") == calls  # no second API call
        assert back.images == first.images and back.last_error is None
        assert (config.state_dir / "pending" / first.id / first.images[0]).read_bytes() == shown
        assert not (config.state_dir / "pending" / second.id).exists()

        # And forth again: the second swipe's job comes back the same way.
        tab.swipe_to(1).save()
        await wait_state(service, second.id, JobState.PENDING)
        await wait_state(service, first.id, JobState.SUPERSEDED)
        assert fake_api.count("images/generations") == calls
        assert len(await jobs_of(service, path)) == 2  # no new jobs along the way


async def test_continue_and_edit_make_new_revisions(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="cont")
        tab, first = await replied(service, path, "Tell me.", "She begins.")
        tab.continue_(" And she goes on.").save()
        second = (await wait_jobs(service, path, 2))[1]
        await wait_state(service, first.id, JobState.SUPERSEDED)
        await wait_state(service, second.id, JobState.PENDING)
        tab.edit(len(tab.messages) - 1, "She begins, edited.").save()
        third = (await wait_jobs(service, path, 3))[2]
        await wait_state(service, second.id, JobState.SUPERSEDED)
        done = await wait_state(service, third.id, JobState.PENDING)
        assert "edited" in (done.prompt or "")


async def test_regenerate_replaces_the_reply(st_root_latest: Path, make_config: MakeConfig) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="regen")
        tab, first = await replied(service, path, "Again.", "Take one.")
        tab.regenerate("Take two, regenerated.").save()
        jobs = await wait_jobs(service, path, 2)
        gone = await wait_state(service, first.id, JobState.SUPERSEDED)
        assert gone.last_error and "gone" in gone.last_error
        await wait_state(service, jobs[1].id, JobState.PENDING)


async def test_group_chat_two_members(st_root_latest: Path, make_config: MakeConfig) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        group = service.root / "default-user" / "group chats" / "1795473024643.jsonl"
        assert group.exists()
        await seen(service, group)  # read (as history) by the startup scan
        tab = open_tab(group, group=True)
        tab.send_user("Both of you, look.").save()
        tab.reply("Alice", "Alice looks at the sea.", avatar="Alice.png").save()
        tab.reply("Bob", "Bob looks at the sky.", avatar="Bob.png").save()
        jobs = await wait_jobs(service, group, 2)
        assert sorted(j.speaker for j in jobs) == ["Alice", "Bob"]
        assert all(j.is_group for j in jobs)
        for job in jobs:
            await wait_state(service, job.id, JobState.PENDING)


async def test_each_st_version(
    st_root: Path, make_config: MakeConfig, request: pytest.FixtureRequest
) -> None:
    """Old chats on disk are read at startup; a new chat in that version's format gets a job."""
    version = str(request.node.callspec.params["st_root"]).removeprefix("st-")
    config = make_config(st_root)
    async with running(config, FAST) as service:
        for chat in layout.iter_chats(service.root):
            await seen(service, chat.path)
        path = new_chat(service.root, name=f"v{version}")
        await replied(service, path, "Old times.", f"A reply from {version}.", version=version)
        assert len(await service.store.list_jobs(limit=100)) == 1  # history made no jobs


async def test_renamed_chat_makes_no_new_jobs(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="before-rename")
        await replied(service, path, "Hi.", "Hello.")
        renamed = path.with_name("Alice - after-rename.jsonl")
        before = service.processed
        shutil.copyfile(path, renamed)  # ST renames by copy + unlink
        path.unlink()
        await settle_and_process(service, before)
        await anyio.sleep(config.detect.settle_seconds)
        await settle_and_process(service, service.processed - 1)
        assert await jobs_of(service, renamed) == []
        assert len(await service.store.list_jobs(limit=100)) == 1


async def test_new_user_folder_while_running(st_root_latest: Path, make_config: MakeConfig) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = service.root / "second-user" / "chats" / "Bob" / "Bob - new.jsonl"
        tab = await started_chat(service, path, character="Bob")
        tab.send_user("Hi Bob.").save()
        tab.reply("Bob", "Bob waves from a new user folder.").save()
        job = (await wait_jobs(service, path, 1))[0]
        assert job.user == "second-user"
        await wait_state(service, job.id, JobState.PENDING)


async def test_reject_and_regenerate_by_folder_move(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="folders")
        tab, first = await replied(service, path, "One.", "Reply one.")
        tab.send_user("Two.").reply("Alice", "Reply two.").save()
        second = (await wait_jobs(service, path, 2))[1]
        await wait_state(service, second.id, JobState.PENDING)

        pending = config.state_dir / "pending"
        shutil.move(str(pending / first.id), str(config.state_dir / "rejected" / first.id))
        await wait_state(service, first.id, JobState.REJECTED)

        (pending / second.id / "prompt.txt").write_text("a lighthouse in fog\n")
        shutil.move(str(pending / second.id), str(config.state_dir / "regenerate" / second.id))
        old = await wait_state(service, second.id, JobState.SUPERSEDED)
        assert old.last_error and "regenerated as" in old.last_error
        jobs = await wait_jobs(service, path, 3)
        new = await wait_state(service, jobs[2].id, JobState.PENDING)
        assert new.prompt == "a lighthouse in fog" and fake_api.prompts()[-1] == new.prompt

        async def folders_gone() -> bool:
            return not any(
                (config.state_dir / d / j).exists()
                for d in ("rejected", "regenerate")
                for j in (first.id, second.id)
            )

        await async_wait_for(folders_gone, within=JOB_TIMEOUT)


async def test_folder_action_on_a_superseded_job_is_refused(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="refused")
        _, job = await replied(service, path, "Hi.", "Original.")
        # Superseded elsewhere (as by a swipe), while its folder is still in pending/.
        gone = await service.store.supersede(job.reply, "the reply changed", keep=False)
        assert [j.id for j in gone] == [job.id]
        shutil.move(str(config.state_dir / "pending" / job.id), str(config.state_dir / "accepted"))

        async def refused() -> bool:
            return (config.state_dir / "pending" / job.id / "REFUSED.txt").exists()

        await async_wait_for(refused, within=JOB_TIMEOUT)
        note = (config.state_dir / "pending" / job.id / "REFUSED.txt").read_text()
        assert "superseded" in note
        assert (await service.store.get_job(job.id)).state is JobState.SUPERSEDED


async def test_missed_events_are_caught_by_the_rescan(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="overflow")
        tab = await started_chat(service, path, character="Alice")
        service.watcher.bridge.closed = True  # from now on every event is lost, as in an overflow
        tab.send_user("Anyone?").reply("Alice", "Seen only by the rescan.").save()
        await anyio.sleep(config.detect.settle_seconds * 2)
        assert await jobs_of(service, path) == []
        service.watcher.bridge.rescan_needed.set()  # what a full queue sets, and then
        service.watcher.bridge.signal()  # wakes the pump
        job = (await wait_jobs(service, path, 1))[0]
        assert "rescan" in job.excerpt
        await wait_state(service, job.id, JobState.PENDING)
        assert not service.watcher.rescan_needed


async def test_a_restart_takes_folders_it_already_acted_on_as_done(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    # The daemon is not started: handle_drops() is called directly, and a new Approval is what
    # a restarted daemon has (it has seen no folder arrive yet).
    config = make_config(st_root_latest)
    root = layout.resolve_data_root(st_root_latest)
    async with open_job_deps(config, root=root) as deps:
        deps.committer = None  # accepted jobs stay accepted (the commit is not under test)
        service = Service(config, root, deps, timings=replace(FAST, drop_settle=0.0))
        await service.watcher.aclose()  # never started; only its streams need closing
        path = write_chat(root, "restart", ["One.", "Two.", "Three.", "Four."])
        jobs = [await run_job_once(await job_for(deps, path, n), deps) for n in range(4)]
        assert all(j.state is JobState.PENDING for j in jobs)
        accepted, committed, rejected, regenerated = jobs
        state = config.state_dir

        def drop(job: Job, action: str) -> None:
            shutil.move(str(state / "pending" / job.id), str(state / action / job.id))

        drop(accepted, "accepted")
        assert await service.handle_drops() == 1
        # Done before the stop, but the folder was still there: commit, reject, regenerate
        # happened, the process died before the folder was removed.
        await deps.store.transition(committed.id, JobState.PENDING, JobState.COMMITTED, check=False)
        drop(committed, "accepted")
        await deps.store.transition(rejected.id, JobState.PENDING, JobState.REJECTED)
        drop(rejected, "rejected")
        new = await deps.store.regenerate(regenerated.id)
        drop(regenerated, "regenerate")

        deps.approval = Approval(state)  # the restart
        assert await service.handle_drops() == 4
        assert list((state / "pending").iterdir()) == []  # nothing refused back to pending/
        assert (state / "accepted" / accepted.id / "image-1.png").is_file()  # the commit's
        for job in (committed, rejected, regenerated):
            assert deps.approval.find(job.id) is None
        expect = [JobState.ACCEPTED, JobState.COMMITTED, JobState.REJECTED, JobState.SUPERSEDED]
        assert [(await deps.store.get_job(j.id)).state for j in jobs] == expect
        same = await deps.store.jobs_for(new.reply)
        assert [j.id for j in same] == [regenerated.id, new.id]  # no second regeneration
        assert (await deps.store.get_job(new.id)).state is JobState.QUEUED


async def test_an_edit_is_seen_even_when_the_tail_scan_loses_its_cursor(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    # Past MAX_UNANCHORED_MESSAGES new lines the tail scan gives up and reads the whole chat
    # without placing its cursor; the stored cursor, passed on as `previous`, still tells that
    # the reply was edited.
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="lost")
        tab, first = await replied(service, path, "Begin.", "The first telling.")
        tab.edit(len(tab.messages) - 1, "The first telling, edited.")
        for n in range(MAX_UNANCHORED_MESSAGES + 1):
            tab.send_user(f"note {n}")  # user lines: no jobs of their own
        tab.save()
        await revised(service, path, first)
        assert len(await jobs_of(service, path)) == 2


async def test_a_same_size_edit_while_stopped_is_caught_up_at_start(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    config = make_config(st_root_latest)
    path = new_chat(st_root_latest, name="downtime")
    async with running(config, FAST) as service:
        tab, first = await replied(service, path, "Begin.", "The first telling.")
    size = path.stat().st_size
    tab.edit(len(tab.messages) - 1, "The first tellinG.").save()  # one letter: same size
    assert path.stat().st_size == size
    async with running(config, FAST) as service:
        await revised(service, path, first)


async def test_each_job_step_is_one_log_line_with_the_job_fields(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    out = io.StringIO()
    configure_logging(LogSettings(level="info", format="json"), stream=out)
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="logged")
        tab, first = await replied(service, path, "Look.", "A gull over the pier.")
        tab.swipe("A heron over the pier.").save()
        await revised(service, path, first)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    steps = [(s["event"], s["state"]) for s in lines if s.get("job") == first.id]
    assert steps[:3] == [
        ("job queued", "queued"),
        ("job prompt", "imaging"),
        ("job images", "pending"),
    ]
    assert ("job superseded", "superseded") in steps
    for step in (s for s in lines if s.get("job") == first.id):
        assert step["user"] == "default-user" and step["chat"] == first.chat
        assert step["mesid"] == first.message_index


async def test_a_live_reply_with_a_wrong_clock_is_illustrated_and_every_skip_explained(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    """Regression: a live reply dated days ago (a browser with a wrong clock) was skipped as
    too old, with no log line."""
    from datetime import timedelta

    from daemon.cli.screens import render_why as render

    out = io.StringIO()
    configure_logging(LogSettings(level="info", format="json"), stream=out)
    config = make_config(st_root_latest, detect={"min_length": 12, "catchup_max_age": "1h"})
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="clock")
        wrong = SimClock(start=datetime.now(UTC) - timedelta(days=3))
        tab = STSim.create(path, clock=wrong, character="Alice")
        await seen(service, path)
        tab.send_user("Look.").save()
        tab.reply("Alice", "A lantern over the old pier.").save()
        (job,) = await wait_jobs(service, path, 1)
        await wait_state(service, job.id, JobState.PENDING)
        before = service.processed
        tab.send_user("And?").save()
        tab.reply("Alice", "Yes.").save()  # shorter than min_length
        await settle_and_process(service, before)
        rel = path.relative_to(service.root).as_posix()

        async def logged() -> list[dict[str, Any]] | None:
            lines = [json.loads(x) for x in out.getvalue().splitlines() if x.startswith("{")]
            found = [x for x in lines if x["event"] == "skipped" and x.get("chat") == rel]
            return found if len(found) >= 3 else None

        skips = await async_wait_for(logged, within=JOB_TIMEOUT)
        reasons = {(s["mesid"], s["reason"]) for s in skips}
        assert {(1, "user message"), (3, "user message"), (4, "shorter than min_length")} <= reasons
        assert all(s["level"] == "info" for s in skips)

        short = await service.engine.why(str(path), 4)
        assert render(short).startswith(f"message 4 (Alice) in {rel}: no job: shorter than")
        user_line = render(await service.engine.why(str(path), 3))
        assert "no job: user message" in user_line
        with_job = render(await service.engine.why(str(path), 2))
        assert f"{job.short_id}  pending" in with_job and "for this text" in with_job


# --- idle means idle: woken by events and timers, not polls (FAST polls only once a minute) ----


def _cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ST_IMAGEGEN_", "NOTIFY_"))}
    binary = str(Path(sys.executable).parent / "st-imagegen")
    return subprocess.run(
        [binary, *args, "--config", str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_job_queued_by_the_cli_starts_at_once_and_its_changes_reach_the_inbox(
    st_root_latest: Path, make_config: MakeConfig, tmp_path: Path
) -> None:
    """`generate` in another process wakes the daemon through the wake folder (regression:
    the runner found such jobs only by polling the store every second)."""
    config = make_config(st_root_latest, mode="manual")
    seen: list[tuple[str, str]] = []
    async with running(config, FAST) as service:
        service.store.add_job_listener(lambda job, _: seen.append((job.id, job.state.value)))
        path = new_chat(service.root, name="cli")
        tab = await started_chat(service, path, character="Alice")
        tab.send_user("Paint it.").save()
        tab.reply("Alice", "A lighthouse in the fog.").save()
        await settle_and_process(service, service.processed)
        rel = path.relative_to(service.root).as_posix()
        done = await anyio.to_thread.run_sync(
            lambda: _cli(tmp_path / "config.toml", "generate", "--chat", rel)
        )
        assert done.returncode == 0, done.stderr
        (job,) = await wait_jobs(service, path, 1)
        pending = await wait_state(service, job.id, JobState.PENDING)  # far within the poll

        rejected = await anyio.to_thread.run_sync(
            lambda: _cli(tmp_path / "config.toml", "reject", pending.id)
        )
        assert rejected.returncode == 0, rejected.stderr

        async def heard() -> bool:  # the CLI's change, announced to this process's listeners
            return (job.id, "rejected") in seen

        await async_wait_for(heard, within=JOB_TIMEOUT)


async def test_a_backed_off_job_runs_at_its_retry_time(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    fake_api.fail_image = [503]  # one transient failure, then success
    config = make_config(st_root_latest, limits={"retry_base_seconds": 1.0})
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="retry")
        _, job = await replied(service, path, "Again?", "The tide comes in.")
        assert job.attempts >= 1  # it failed once and was retried by the timer, not a poll
        assert fake_api.count("images/generations") == 2


async def test_a_folder_copied_into_accepted_is_taken_once_it_settles(
    st_root_latest: Path, make_config: MakeConfig
) -> None:
    """A copy (not a move) keeps changing for a while; no event comes when it stops, so a
    timer set for its settle time looks again."""
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="copied")
        _, job = await replied(service, path, "Show me.", "A kite over the dunes.")
        folder = config.state_dir / "pending" / job.id
        target = config.state_dir / "accepted" / job.id
        shutil.copytree(folder, target)  # fresh times: not settled yet
        shutil.rmtree(folder)
        await wait_state(service, job.id, JobState.COMMITTED)
