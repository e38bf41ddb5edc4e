"""The job runner on a real store, real chat files and a fake API server."""

from __future__ import annotations

import io
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from daemon.config import Config, LogSettings
from daemon.engine.jobs.pipeline import (
    JobDeps,
    Runner,
    accept_job,
    backoff_delay,
    open_job_deps,
    regen_job,
    reject_job,
    run_job_once,
)
from daemon.engine.store import Job, JobState
from daemon.errors import JobError
from daemon.logs import configure_logging
from daemon.tavern import chat as chat_mod
from daemon.tavern import layout
from daemon.tavern.chat import read_chat
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for, job_for, write_chat
from tests.stsim import SimClock, STSim

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def config(st_root_latest: Path, make_config: MakeConfig) -> Config:
    return make_config(st_root_latest, limits={"max_attempts": 3})


@pytest.fixture
async def deps(config: Config) -> AsyncIterator[JobDeps]:
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as d:
        d.rng = random.Random(7)
        yield d


async def test_run_job_once_reaches_pending(deps: JobDeps, fake_api: FakeAPI) -> None:
    path = write_chat(deps.root, "one", ["The lighthouse beam sweeps the bay."])
    job = await job_for(deps, path)
    done = await run_job_once(job, deps)
    assert done.state is JobState.PENDING
    assert done.prompt is not None and "lighthouse beam" in done.prompt
    assert done.images == ("image-1.png",)
    assert (deps.approval.pending_path(job.id) / "image-1.png").is_file()
    assert fake_api.count("chat/completions") == 1 and fake_api.count("images/generations") == 1
    # Running it again does nothing: it is no longer queued.
    again = await run_job_once(done, deps)
    assert again.state is JobState.PENDING and fake_api.count("images/generations") == 1


async def test_one_log_line_per_step_with_the_job_fields(deps: JobDeps, fake_api: FakeAPI) -> None:
    out = io.StringIO()
    configure_logging(LogSettings(level="info", format="json"), stream=out)
    path = write_chat(deps.root, "logged", ["A lantern swings."])
    job = await job_for(deps, path)
    fake_api.fail_image = [503]
    await run_job_once(job, deps)  # prompt, then the image fails: rescheduled
    await deps.store.transition(job.id, JobState.QUEUED, JobState.QUEUED, next_attempt_at=None)
    await run_job_once(await deps.store.get_job(job.id), deps)  # the image, then pending
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    steps = [line for line in lines if line.get("job") == job.id]
    assert [(s["event"], s["state"]) for s in steps] == [
        ("job prompt", "imaging"),
        ("job step failed", "queued"),
        ("job images", "pending"),
    ]
    for step in steps:
        assert step["user"] == "default-user" and step["chat"] == job.chat
        assert step["mesid"] == job.message_index and step["duration"] >= 0
    assert steps[1]["during"] == "image" and steps[1]["retry_in"] > 0
    assert "503" in steps[1]["error"]


async def test_context_and_card_reach_the_prompt_writer(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(st_root_latest, text={"context_messages": 2})
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        path = write_chat(deps.root, "ctx", ["Earlier reply about ravens.", "Now the storm."])
        job = await job_for(deps, path)
        await run_job_once(job, deps)
    sent = fake_api.text_inputs()[-1]
    assert "Earlier reply about ravens." in sent
    assert "Character Information" in sent and "Name: Alice" in sent


async def test_context_skips_hidden_and_our_lines_and_never_parses_the_whole_chat(
    st_root_latest: Path,
    make_config: MakeConfig,
    fake_api: FakeAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(st_root_latest, text={"context_messages": 3})
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        path = deps.root / "default-user" / "chats" / "Alice" / "Alice - ctx2.jsonl"
        tab = STSim.create(path, character="Alice", clock=SimClock(start=datetime.now(UTC)))
        for n in range(40):  # history far above the context window
            tab.send_user(f"old question {n}").reply("Alice", f"old answer {n}")
        tab.send_user("Visible question.").reply("Alice", "Visible answer.")
        tab.send_user("Hidden aside.")
        tab.hide(len(tab.messages) - 1)
        tab.reply("Alice", "Now the storm.")
        tab.save()
        job = await job_for(deps, path)

        def no_full_parse(data: bytes) -> None:
            raise AssertionError("a job step parsed the whole chat")

        monkeypatch.setattr(chat_mod, "_parse_full", no_full_parse)
        done = await run_job_once(job, deps)
    assert done.state is JobState.PENDING
    sent = fake_api.text_inputs()[-1]
    assert "Now the storm." in sent
    assert "Visible question." in sent and "Visible answer." in sent
    assert "old answer 39" in sent  # the third visible message above the reply
    assert "Hidden aside." not in sent and "old question 39" not in sent


async def test_transient_failure_is_rescheduled_in_the_store(
    deps: JobDeps, fake_api: FakeAPI
) -> None:
    path = write_chat(deps.root, "flaky", ["Rain on the window."])
    job = await job_for(deps, path)
    fake_api.fail_image = [503]
    before = datetime.now(UTC)
    retried = await run_job_once(job, deps)
    assert retried.state is JobState.QUEUED
    assert retried.attempts == 1 and retried.last_error and "503" in retried.last_error
    assert retried.next_attempt_at is not None and retried.next_attempt_at > before
    assert retried.prompt is not None  # saved: the retry skips the prompt step
    assert await deps.store.due_jobs(before, 10) == []
    due = await deps.store.due_jobs(retried.next_attempt_at + timedelta(seconds=1), 10)
    assert [j.id for j in due] == [job.id]
    done = await run_job_once(due[0], deps)
    assert done.state is JobState.PENDING
    assert fake_api.count("chat/completions") == 1  # not asked twice


async def test_attempts_are_capped(deps: JobDeps, fake_api: FakeAPI) -> None:
    path = write_chat(deps.root, "down", ["The sea is calm."])
    job = await job_for(deps, path)
    fake_api.fail_image = [500] * 10
    current = job
    for _ in range(deps.config.limits.max_attempts):
        current = await run_job_once(current, deps)
        if current.state is JobState.FAILED:
            break
    assert current.state is JobState.FAILED
    assert current.last_error is not None and "gave up after 3 attempts" in current.last_error


async def test_permanent_failure_fails_with_the_reason(deps: JobDeps, fake_api: FakeAPI) -> None:
    path = write_chat(deps.root, "denied", ["A quiet harbour."])
    job = await job_for(deps, path)
    fake_api.fail_text = [401]
    failed = await run_job_once(job, deps)
    assert failed.state is JobState.FAILED
    assert failed.last_error is not None and failed.last_error.startswith("prompt:")
    assert fake_api.count("images/generations") == 0


async def test_a_bug_fails_the_job_visibly_instead_of_retrying(
    deps: JobDeps, fake_api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> list[object]:
        raise KeyError("a bug of ours")  # not a provider error: no retry would help

    monkeypatch.setattr(deps.images, "generate", broken)
    job = await job_for(deps, write_chat(deps.root, "bug", ["A cracked bell."]))
    failed = await run_job_once(job, deps)
    assert failed.state is JobState.FAILED and failed.next_attempt_at is None
    assert failed.last_error is not None
    assert failed.last_error.startswith("image: internal error: KeyError")


async def test_reply_gone_supersedes(deps: JobDeps, fake_api: FakeAPI) -> None:
    path = write_chat(deps.root, "gone", ["Soon deleted."])
    job = await job_for(deps, path)
    tab = STSim.open(path, clock=SimClock(start=datetime.now(UTC)))
    tab.delete(len(tab.messages) - 1).save()
    done = await run_job_once(job, deps)
    assert done.state is JobState.SUPERSEDED and done.last_error and "gone" in done.last_error
    assert fake_api.count("chat/completions") == 0


async def test_cancel_mid_step_requeues(deps: JobDeps, fake_api: FakeAPI) -> None:
    path = write_chat(deps.root, "slow", ["A slow painting."])
    job = await job_for(deps, path)
    fake_api.image_delay = 5.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_job_once, job, deps)

        async def imaging() -> bool:
            return (await deps.store.get_job(job.id)).state is JobState.IMAGING

        await async_wait_for(imaging, within=5)
        tg.cancel_scope.cancel()
    back = await deps.store.get_job(job.id)
    assert back.state is JobState.QUEUED and back.attempts == 0
    assert back.prompt is not None


async def test_auto_approval_commits(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(st_root_latest, approval="auto")
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        path = write_chat(deps.root, "auto", ["A committed sunrise."])
        job = await job_for(deps, path)
        done = await run_job_once(job, deps)
        assert done.state is JobState.COMMITTED
        chat, _ = read_chat(path)
        assert chat.find_marker(job.id) is not None


async def test_accept_keep_reject_and_regen(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(st_root_latest, image={"n": 3})
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        await _accept_keep_reject_and_regen(deps, fake_api)


async def _accept_keep_reject_and_regen(deps: JobDeps, fake_api: FakeAPI) -> None:
    path = write_chat(deps.root, "acts", ["First.", "Second.", "Third."])
    jobs = [await job_for(deps, path, i) for i in range(3)]
    for job in jobs:
        assert (await run_job_once(job, deps)).state is JobState.PENDING
    store, approval = deps.store, deps.approval

    with pytest.raises(JobError, match="no image 4"):
        await accept_job(store, approval, jobs[0].id, keep=[4])
    accepted = await accept_job(store, approval, jobs[0].id[:12], keep=[1, 3])
    assert accepted.state is JobState.ACCEPTED
    assert accepted.images == ("image-1.png", "image-3.png")
    with pytest.raises(JobError, match="accepted"):
        await accept_job(store, approval, jobs[0].id)

    (approval.pending_path(jobs[1].id) / "image-2.png").unlink()  # deleted by the user
    kept = await accept_job(store, approval, jobs[1].id)
    assert kept.images == ("image-1.png", "image-3.png")

    rejected = await reject_job(store, approval, jobs[2].id)
    assert rejected.state is JobState.REJECTED
    assert not approval.pending_path(jobs[2].id).exists()
    new = await regen_job(store, approval, jobs[2].id, prompt="a new prompt")
    assert new.id != jobs[2].id and new.state is JobState.QUEUED and new.prompt == "a new prompt"
    assert new.regen == 1 and new.meta["regen_of"] == jobs[2].id
    written = fake_api.count("chat/completions")
    done = await run_job_once(new, deps)
    assert done.state is JobState.PENDING
    assert fake_api.prompts()[-1] == "a new prompt"
    assert fake_api.count("chat/completions") == written  # a job with a prompt skips that step
    old = await store.get_job(jobs[2].id)
    assert old.state is JobState.SUPERSEDED and old.last_error and new.id in old.last_error
    again = await regen_job(store, approval, new.id)
    assert again.prompt == "a new prompt" and again.regen == 2

    with pytest.raises(JobError, match="no job"):
        await accept_job(store, approval, "ZZZZZZZZ")
    with pytest.raises(JobError, match="empty"):
        await regen_job(store, approval, again.id, prompt="  ")


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 5.0, 600.0, rng) for n in range(1, 12)]
    assert 5.0 <= delays[0] <= 6.25
    assert 10.0 <= delays[1] <= 12.5
    assert all(d <= 600.0 for d in delays) and delays[-1] == 600.0


async def test_runner_bounds_concurrency_and_keeps_chat_order(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(
        st_root_latest, limits={"concurrency": 3, "image_concurrency": 8, "text_concurrency": 8}
    )
    fake_api.image_delay = 0.15
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        order: list[tuple[str, str]] = []
        jobs: list[Job] = []
        for c in range(5):
            path = write_chat(deps.root, f"run{c}", [f"chat {c} reply {i}" for i in range(3)])
            for i in range(3):
                jobs.append(await job_for(deps, path, i))
        runner = Runner(deps, poll_interval=0.05, on_done=lambda j: order.append((j.chat, j.id)))
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)

            async def all_pending() -> bool:
                states = [(await deps.store.get_job(j.id)).state for j in jobs]
                return all(s is JobState.PENDING for s in states)

            await async_wait_for(all_pending, within=30)
            await runner.drain(1.0)
        assert runner.max_in_flight <= 3 and fake_api.max_image_in_flight <= 3
        assert fake_api.max_image_in_flight >= 2  # it did run in parallel
        for chat in {j.chat for j in jobs}:
            done = [job_id for c, job_id in order if c == chat]
            # Newest first within a chat (daemon.engine.jobs.order): the reply on screen first.
            assert done == sorted((j.id for j in jobs if j.chat == chat), reverse=True)


async def test_runner_cancel_and_drain_requeue(deps: JobDeps, fake_api: FakeAPI) -> None:
    fake_api.image_delay = 10.0
    path_a = write_chat(deps.root, "ca", ["A long render."])
    path_b = write_chat(deps.root, "cb", ["Another long render."])
    a = await job_for(deps, path_a)
    b = await job_for(deps, path_b)
    runner = Runner(deps, poll_interval=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)

        async def both_imaging() -> bool:
            states = {(await deps.store.get_job(j.id)).state for j in (a, b)}
            return states == {JobState.IMAGING}

        await async_wait_for(both_imaging, within=10)
        gone = await deps.store.supersede(a.reply, "test supersede", keep=False)
        assert [j.id for j in gone] == [a.id]
        assert runner.cancel(a.id)

        async def one_running() -> bool:
            return runner.running == 1

        await async_wait_for(one_running, within=5)
        cancelled = await runner.drain(0.2)
        assert cancelled == 1
    assert (await deps.store.get_job(a.id)).state is JobState.SUPERSEDED
    assert (await deps.store.get_job(b.id)).state is JobState.QUEUED  # resumed at next start
    assert not deps.approval.pending_path(a.id).exists()


async def test_accept_commits_exactly_the_kept_images_in_the_users_order(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """Regression: ``accept --keep`` committed every image in the folder, not the kept ones."""
    from daemon.engine.commit.apply import message_urls

    config = make_config(st_root_latest, image={"n": 3})
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        path = write_chat(deps.root, "kept", ["A lantern.", "A river."])
        first, second = [await job_for(deps, path, i) for i in range(2)]
        for job in (first, second):
            assert (await run_job_once(job, deps)).state is JobState.PENDING
        shown = (await deps.store.get_job(first.id)).images
        assert len(shown) == 3
        pending = {n: (deps.approval.pending_path(first.id) / n).read_bytes() for n in shown}

        accepted = await accept_job(deps.store, deps.approval, first.id, keep=[3, 1, 3])
        assert accepted.images == ("image-3.png", "image-1.png")  # the user's order, once each
        assert accepted.meta["not_kept"] == ["image-2.png"]
        folder = deps.approval.pending_path(first.id)
        assert sorted(p.name for p in folder.iterdir() if p.suffix == ".png") == [
            "image-1.png",
            "image-3.png",
        ]
        (folder / "image-2.png").write_bytes(pending["image-2.png"])  # put back by hand: ignored
        done = await run_job_once(accepted, deps)
        assert done.state is JobState.COMMITTED

        chat, _ = read_chat(path)
        message = chat.find_marker(first.id)
        assert message is not None
        urls = message_urls(message.data)
        assert len(urls) == 2
        images_dir = deps.root / "default-user" / "user" / "images"
        written = [images_dir / url.removeprefix("/user/images/") for url in urls]
        assert [p.read_bytes() for p in written] == [pending["image-3.png"], pending["image-1.png"]]
        on_disk = [p for p in images_dir.rglob("*") if p.is_file() and first.id in p.name]
        assert sorted(on_disk) == sorted(written)  # nothing else of this job reached the folder

        # The drop-folder way: the user deletes an image and accepts the rest.
        (deps.approval.pending_path(second.id) / "image-1.png").unlink()
        kept = await accept_job(deps.store, deps.approval, second.id)
        assert kept.images == ("image-2.png", "image-3.png")
        assert kept.meta["not_kept"] == ["image-1.png"]
        assert (await run_job_once(kept, deps)).state is JobState.COMMITTED
        chat, _ = read_chat(path)
        message = chat.find_marker(second.id)
        assert message is not None and len(message_urls(message.data)) == 2


async def test_a_characters_avatar_goes_to_the_image_api_as_a_reference(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """The switch on: the card (the avatar ST shows) reaches the image request; off: nothing."""
    import base64

    card = (st_root_latest / "default-user" / "characters" / "Alice.png").read_bytes()
    config = make_config(
        st_root_latest, image={"reference_images": True, "reference_field": "image_urls"}
    )
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        path = write_chat(deps.root, "refs", ["Alice waves by the lantern."])
        job = await job_for(deps, path)
        done = await run_job_once(job, deps)
        assert done.state is JobState.PENDING
        assert done.meta["references"] == [
            str(deps.root / "default-user" / "characters" / "Alice.png")
        ]
        (sent,) = [r.body for r in fake_api.requests if r.path.endswith("images/generations")]
        assert sent["image_urls"] == ["data:image/png;base64," + base64.b64encode(card).decode()]

    off = make_config(st_root_latest, image={"reference_field": "image_urls"})
    assert off.data_root is not None
    async with open_job_deps(off, root=layout.resolve_data_root(off.data_root)) as deps:
        path = write_chat(deps.root, "norefs", ["Alice sleeps."])
        assert (await run_job_once(await job_for(deps, path), deps)).meta["references"] == []
        last = [r.body for r in fake_api.requests if r.path.endswith("images/generations")][-1]
        assert "image_urls" not in last
