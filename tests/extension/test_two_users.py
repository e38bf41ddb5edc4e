"""Two SillyTavern accounts, each with the extension in a real browser (Playwright + Debian's
chromium), against one daemon: both have a chat of the same name with the same character, so
only the server's per-user filtering keeps them apart. Each tab holds its user's own token
(written into that user's install by `extension install --user`), sees only its own jobs live,
and Bob's accept in his tab lands in his chat alone."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import anyio
import pytest
from playwright.async_api import Page, expect

from daemon import __version__
from daemon.engine.store import Job, JobState
from daemon.extension import EXTENSION_NAME, cmd_extension
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for, job_for
from tests.extension.fakest import FakeST, serve
from tests.extension.test_browser import LIVE_MS, file_markers, free_port
from tests.stsim import SimClock, STSim
from tests.web.conftest import Inbox, inbox_for, web_config
from tests.web.test_browser import browser

pytestmark = pytest.mark.anyio

CHAT = "Alice - harbour"
REACH = """async ([mine, theirs]) => {
    const base = '/scripts/extensions/third-party/st-imagegen/lib/settings.js';
    const key = (await import(base)).SETTINGS_KEY;
    const set = globalThis.SillyTavern.getContext().extensionSettings[key];
    const h = { Authorization: `Bearer ${set.token}` };
    const get = path => fetch(`${set.address}/api/v1/${path}`, { headers: h });
    const one = async id => (await get(`jobs/${id}`)).status;
    const list = await (await get('jobs')).json();
    return [await one(mine), await one(theirs), list.jobs.map(j => j.id), !!set.token];
}"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def harbour(root: Path, user: str) -> Path:
    path = root / user / "chats" / "Alice" / f"{CHAT}.jsonl"
    tab = STSim.create(path, character="Alice", clock=SimClock(start=datetime.now(UTC)))
    tab.reply("Alice", f"The lantern of {user} swings over the quay.")
    tab.send_user("Go on.").reply("Alice", f"The harbour lights of {user} come on.")
    tab.save()
    return path


async def _pending(inbox: Inbox, chat: Path) -> Job:
    job = await job_for(inbox.service.deps, chat)
    inbox.service.runner.wake()
    return await inbox.wait_state(job.id, JobState.PENDING)


async def _open(page: Page, st: FakeST) -> None:
    query = urlencode({"chat": CHAT, "settings": json.dumps({})})  # no token typed
    await page.goto(f"{st.url}/?{query}")
    await page.wait_for_function("window.__stReady === true")
    await page.evaluate("window.__stTest.openChat()")
    state = page.locator("#st_imagegen_state")
    await expect(state).to_have_text(f"connected · daemon {__version__}", timeout=LIVE_MS)


async def test_two_accounts_each_see_and_change_only_their_own(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    port = free_port()
    st_ports = [free_port(), free_port()]
    origins = [f"http://127.0.0.1:{p}" for p in st_ports]
    config = web_config(
        make_config, tmp_path, fake_api, web={"port": port, "allowed_origins": origins}
    )
    assert config.data_root is not None
    root = config.data_root
    chats = {user: harbour(root, user) for user in ("alice", "bob")}
    errors: list[str] = []
    async with inbox_for(config) as inbox:
        for user in ("alice", "bob"):
            done = await anyio.to_thread.run_sync(
                partial(cmd_extension, config, "install", user=user, out=io.StringIO())
            )
            assert done == 0
        targets = {u: root / u / "extensions" / EXTENSION_NAME for u in ("alice", "bob")}
        alice_st = FakeST(root, targets["alice"], user="alice", port=st_ports[0])
        bob_st = FakeST(root, targets["bob"], user="bob", port=st_ports[1])
        with serve(alice_st), serve(bob_st):
            async with browser() as b:
                alice = await b.new_page(viewport={"width": 1280, "height": 900})
                bob = await b.new_page(viewport={"width": 1280, "height": 900})
                for page in (alice, bob):
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                await _open(alice, alice_st)
                await _open(bob, bob_st)

                # Bob's job first: had its event reached Alice's tab, it would be there by the
                # time her own job (made after it) shows.
                bobs = await _pending(inbox, chats["bob"])
                bob_preview = bob.locator(f'.st-imagegen-preview[data-job="{bobs.id}"]')
                await expect(bob_preview).to_be_visible(timeout=LIVE_MS)
                alices = await _pending(inbox, chats["alice"])
                alice_preview = alice.locator(f'.st-imagegen-preview[data-job="{alices.id}"]')
                await expect(alice_preview).to_be_visible(timeout=LIVE_MS)
                await expect(
                    alice.locator(f'.st-imagegen-preview[data-job="{bobs.id}"]')
                ).to_have_count(0)
                await expect(
                    bob.locator(f'.st-imagegen-preview[data-job="{alices.id}"]')
                ).to_have_count(0)

                # What each tab's token can reach on the server: its own jobs only.
                for page, mine, theirs in ((alice, alices, bobs), (bob, bobs, alices)):
                    seen = await page.evaluate(
                        REACH,
                        [mine.id, theirs.id],
                    )
                    assert seen == [200, 404, [mine.id], True], seen

                # Bob accepts in his tab: his chat gets the image, Alice's is untouched.
                await bob_preview.locator('[data-action="accept"]').click()
                await inbox.wait_state(bobs.id, JobState.COMMITTED)
                await async_wait_for(
                    lambda: _is(file_markers(chats["bob"])[-1] == bobs.id), within=LIVE_MS / 1000
                )
                assert bobs.id not in file_markers(chats["alice"])
                assert (await inbox.job(alices.id)).state is JobState.PENDING
                await expect(alice_preview).to_be_visible()
    assert not errors, errors


async def _is(value: bool) -> bool:
    return value
