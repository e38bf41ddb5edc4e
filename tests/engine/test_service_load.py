"""20 chats receiving replies at the same time, with a slow fake API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.engine.store import JobState
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, MakeConfig, async_wait_for, running
from tests.engine.test_service import FAST, seen
from tests.stsim import SimClock, STSim

pytestmark = [pytest.mark.anyio, pytest.mark.slow, WATCHDOG_RACE]

CHATS = 20
CONCURRENCY = 4


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_twenty_chats_bounds_order_and_nothing_lost(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(
        st_root_latest,
        limits={
            "concurrency": CONCURRENCY,
            "text_concurrency": CONCURRENCY,
            "image_concurrency": CONCURRENCY,
        },
    )
    fake_api.text_delay = 0.05
    fake_api.image_delay = 0.25
    async with running(config, FAST) as service:
        clock = SimClock(start=datetime.now(UTC))
        tabs = []
        for n in range(CHATS):
            owner = "Alice" if n % 2 else "Bob"
            path = service.root / "default-user" / "chats" / owner / f"{owner} - load{n}.jsonl"
            tabs.append(STSim.create(path, character=owner, clock=clock))
        for tab in tabs:
            await seen(service, tab.path)
        for done, round_ in enumerate(("first", "second"), 1):
            for n, tab in enumerate(tabs):
                tab.send_user(f"{round_} question").reply(
                    tab.character, f"chat {n} {round_} reply"
                ).save()

            async def detected(expected: int = done * CHATS) -> bool:
                return len(await service.store.list_jobs(limit=1000)) >= expected

            await async_wait_for(detected, within=60)  # the round's replies are all jobs

        async def all_pending() -> bool:
            found = await service.store.list_jobs(limit=1000)
            return len(found) == 2 * CHATS and all(j.state is JobState.PENDING for j in found)

        await async_wait_for(all_pending, within=60)

    assert fake_api.max_in_flight <= CONCURRENCY
    assert fake_api.max_in_flight >= 2  # it did run jobs side by side
    assert service.runner.max_in_flight <= CONCURRENCY
    prompts = fake_api.prompts()
    assert len(prompts) == 2 * CHATS  # nothing lost, nothing twice
    for n in range(CHATS):  # each reply once; which goes first is the runner's order (test_order)
        for round_ in ("first", "second"):
            assert prompts.count(f"a picture of chat {n} {round_} reply") == 1, (n, round_)
