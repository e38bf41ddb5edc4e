"""Spend under the user's control, on a real store, real chats and a fake image API: each job's
cost is recorded (estimated from a per-model price, or as the service reports it), and the
caps hold a job before its paid call, in a clear state, until the window ends, the cap is
raised (a restart), or the job is approved once; two jobs racing for the last of a budget
never both call."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.engine.jobs.budget import HELD_KEY, day_window, month_window, spend_summary
from daemon.engine.jobs.pipeline import JobDeps, open_job_deps, run_job_once
from daemon.engine.store import Job, JobState
from daemon.errors import JobStateError
from daemon.tavern import layout
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for, job_for, write_chat
from tests.providers.fake_openrouter import FakeOpenRouter
from tests.providers.fake_service import serve

pytestmark = pytest.mark.anyio

PRICE = 0.5  # USD per image of the fake model, as the user set it in [prices]
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _limits(**caps: Any) -> dict[str, Any]:
    return {"max_attempts": 3, "image_concurrency": 4, **caps}


@contextlib.asynccontextmanager
async def _deps(
    make_config: MakeConfig, root: Path, clock: Clock, **caps: Any
) -> AsyncIterator[JobDeps]:
    config = make_config(root, limits=_limits(**caps), prices={"fake-image": PRICE})
    assert config.data_root is not None
    async with open_job_deps(config, root=layout.resolve_data_root(config.data_root)) as deps:
        deps.rng = random.Random(7)
        deps.clock = clock
        yield deps


Opened = Callable[..., Any]


@pytest.fixture
def opened(make_config: MakeConfig, st_root_latest: Path) -> Opened:
    def open_(clock: Clock, **caps: Any) -> Any:
        return _deps(make_config, st_root_latest, clock, **caps)

    return open_


async def _jobs(deps: JobDeps, chat: str, count: int) -> list[Job]:
    path = write_chat(deps.root, chat, [f"Reply {i} about the harbour." for i in range(count)])
    return [await job_for(deps, path, i) for i in range(count)]


async def test_each_job_records_its_estimated_cost(opened: Opened, fake_api: FakeAPI) -> None:
    clock = Clock(NOON)
    async with opened(clock) as deps:
        (job,) = await _jobs(deps, "cost", 1)
        done = await run_job_once(job, deps)
        assert done.state is JobState.PENDING
        assert done.meta["cost"] == "0.5000 USD (estimate)"
        summary = await spend_summary(deps.config, deps.store, clock())
        assert (summary.today.usd, summary.today.images, summary.today.estimated) == (
            PRICE,
            1,
            True,
        )
        assert summary.month.usd == PRICE and "partly estimated" in summary.line()


async def test_the_daily_budget_holds_a_job_until_the_next_day(
    opened: Opened, fake_api: FakeAPI
) -> None:
    clock = Clock(NOON)
    async with opened(clock, daily_budget=1.0) as deps:
        jobs = await _jobs(deps, "daily", 3)
        for job in jobs[:2]:
            assert (await run_job_once(job, deps)).state is JobState.PENDING
        held = await run_job_once(jobs[2], deps)
        assert held.state is JobState.QUEUED
        assert (
            held.meta[HELD_KEY] == "daily budget reached: 1.00 of 1.00 USD (this job: about 0.50)"
        )
        assert "limits.daily_budget" in held.meta["held_fix"]
        assert held.next_attempt_at == day_window(clock())[1]  # back at local midnight
        assert fake_api.count("images/generations") == 2  # no call for the held job
        assert held.attempts == jobs[2].attempts  # holding is not a failure
        clock.now = day_window(NOON)[1] + timedelta(minutes=1)  # a new day
        released = await run_job_once(held, deps)
        assert released.state is JobState.PENDING and released.meta.get(HELD_KEY) is None
        assert fake_api.count("images/generations") == 3


async def test_a_raised_cap_releases_a_held_job_across_a_restart(
    opened: Opened, fake_api: FakeAPI
) -> None:
    clock = Clock(NOON)
    async with opened(clock, monthly_budget=0.5) as deps:
        (first, second) = await _jobs(deps, "monthly", 2)
        assert (await run_job_once(first, deps)).state is JobState.PENDING
        held = await run_job_once(second, deps)
        assert held.state is JobState.QUEUED and "monthly budget reached" in held.meta[HELD_KEY]
        assert held.next_attempt_at == month_window(clock())[1]
    # The user raises the cap and restarts: the daemon checks held jobs again at start
    # (a running daemon does the same when it reloads a changed config file).
    async with opened(clock, monthly_budget=5.0) as deps:
        assert await deps.store.release_held(now=clock()) == 1
        due = await deps.store.due_jobs(clock() + timedelta(seconds=1), 10)
        assert [j.id for j in due] == [held.id]
        assert (await run_job_once(due[0], deps)).state is JobState.PENDING
        assert await deps.store.release_held() == 0


async def test_the_per_chat_image_cap_holds_only_that_chat(
    opened: Opened, fake_api: FakeAPI
) -> None:
    clock = Clock(NOON)
    async with opened(clock, chat_daily_images=1) as deps:
        a1, a2 = await _jobs(deps, "capA", 2)
        (b1,) = await _jobs(deps, "capB", 1)
        assert (await run_job_once(a1, deps)).state is JobState.PENDING
        held = await run_job_once(a2, deps)
        assert held.meta[HELD_KEY] == "this chat's daily image cap reached: 1 of 1 images"
        assert (await run_job_once(b1, deps)).state is JobState.PENDING


async def test_an_approved_job_passes_the_cap_once(opened: Opened, fake_api: FakeAPI) -> None:
    clock = Clock(NOON)
    async with opened(clock, daily_budget=0.0) as deps:
        (job,) = await _jobs(deps, "approve", 1)
        held = await run_job_once(job, deps)
        assert held.state is JobState.QUEUED
        approved = await deps.store.transition(
            held.id, JobState.QUEUED, JobState.QUEUED, meta_update={"budget_approved": True}
        )
        assert approved is not None
        done = await run_job_once(approved, deps)
        assert done.state is JobState.PENDING and done.meta.get("budget_approved") is None


async def test_two_jobs_racing_for_the_last_budget_make_one_call(
    opened: Opened, fake_api: FakeAPI
) -> None:
    clock = Clock(NOON)
    fake_api.image_gate = threading.Event()
    async with opened(clock, daily_budget=0.5) as deps:
        a, b = await _jobs(deps, "race", 2)
        results: dict[str, Job] = {}

        async def run(job: Job) -> None:
            results[job.id] = await run_job_once(job, deps)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, a)
                tg.start_soon(run, b)

                async def one_held() -> bool:
                    return any(j.state is JobState.QUEUED for j in results.values())

                await async_wait_for(one_held, within=20)  # the other call is in flight
                fake_api.image_gate.set()
        finally:
            fake_api.image_gate.set()
        states = sorted(j.state.value for j in results.values())
        assert states == ["pending", "queued"]
        assert fake_api.count("images/generations") == 1
        summary = await spend_summary(deps.config, deps.store, clock())
        assert summary.today.usd == PRICE  # never past the cap


async def test_a_reported_cost_wins_over_the_estimate(
    make_config: MakeConfig, st_root_latest: Path, fake_api: FakeAPI
) -> None:
    with serve(FakeOpenRouter()) as router:
        config = make_config(
            st_root_latest,
            image={
                "backend": "openrouter",
                "api_url": router.url + "/api/v1",
                "api_key": router.key,
                "model": "google/gemini-2.5-flash-image",
            },
        )
        assert config.data_root is not None
        root = layout.resolve_data_root(config.data_root)
        async with open_job_deps(config, root=root) as deps:
            (job,) = await _jobs(deps, "reported", 1)
            done = await run_job_once(job, deps)
            assert done.state is JobState.PENDING
            assert done.meta["cost"] == f"{router.cost:.4f} USD"  # no "(estimate)"
            summary = await spend_summary(config, deps.store, datetime.now(UTC))
            assert summary.today.usd == pytest.approx(router.cost)
            assert not summary.today.estimated


async def test_status_show_and_spend_say_what_was_spent_and_what_waits(
    opened: Opened, fake_api: FakeAPI
) -> None:
    from daemon.cli.screens import render_status
    from daemon.engine.front import Engine
    from daemon.engine.process.status import gather_status

    clock = Clock(datetime.now(UTC))
    async with opened(clock, daily_budget=0.5) as deps:
        first, second = await _jobs(deps, "shown", 2)
        await run_job_once(first, deps)
        held = await run_job_once(second, deps)
        report = await gather_status(deps.config, deps.store, now=clock())
        text = render_status(report)
        assert "spend: today 0.50 USD (1 images) of 0.50" in text
        assert "held back: 1 job" in text and held.id[:10] in text
        assert report.to_json()["held"][0]["reason"].startswith("daily budget reached")
        # The backend as it describes itself (the fake API is a generic OpenAI-compatible one).
        assert report.image_backend["capabilities"]["cost"] == "estimated"
        assert "image backend: OpenAI-compatible images API (any size, 10 images per call, " in text
        assert text.rstrip().count("cost estimated") == 1
        config = deps.config
    async with Engine.open(config) as engine:
        assert (await engine.spend()).today.usd == PRICE
        approved = await engine.approve_spend(held.id[:12])
        assert approved.meta["budget_approved"] is True
        with pytest.raises(JobStateError, match="not held"):
            await engine.approve_spend(first.id)


async def test_generate_wait_says_why_a_job_waits(opened: Opened, fake_api: FakeAPI) -> None:
    import io

    from daemon.cli.generate import _Progress

    clock = Clock(NOON)
    async with opened(clock, daily_budget=0.0) as deps:
        (job,) = await _jobs(deps, "wait", 1)
        held = await run_job_once(job, deps)
        out, err = io.StringIO(), io.StringIO()
        progress = _Progress(out, err, job)
        progress.watch(held)
        progress.watch(held)  # said once, not at every look
        said = err.getvalue()
        assert said.count("waits: daily budget reached: 0.00 of 0.00 USD") == 1
        assert "spend approve" in said


def test_the_config_example_shows_caps_and_prices_that_load(tmp_path: Path) -> None:
    from daemon.config import load_config
    from daemon.configure.example import config_example

    def uncommented(start: str) -> str:
        (line,) = [x for x in config_example().splitlines() if x.startswith(start)]
        return line.removeprefix("# ").split("   (")[0]

    assert "# [prices]" in config_example().splitlines()  # a table of numbers, not of tables
    path = tmp_path / "caps.toml"
    path.write_text(
        "[limits]\n"
        + uncommented("# daily_budget =")
        + "\n"
        + uncommented("# chat_daily_images =")
        + "\n"
        + "[prices]\n"
        + uncommented('# "gpt-image-1" =')
        + "\n",
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    assert config.limits.daily_budget == 2 and config.limits.chat_daily_images == 2
    assert config.prices == {"gpt-image-1": 0.042}
