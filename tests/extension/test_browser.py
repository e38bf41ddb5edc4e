"""The extension in a real browser (Playwright + Debian's chromium) on a stand-in SillyTavern
page (fake_st/: ST's chat array, events, popup, slash commands and saveChat, whose saves land
in the real chat file the way ST's server writes them), against the real daemon with its web
API on a fixed port, the fake prompt and image API at the network boundary."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from PIL import Image
from playwright.async_api import Page, expect

from daemon import __version__
from daemon.cli.commands import main
from daemon.engine.store import JobState
from daemon.extension import EXTENSION_NAME, install
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for, job_for
from tests.extension.fakest import FakeST, serve
from tests.stsim import SimClock, STSim
from tests.web.conftest import IMAGES, Inbox, inbox_for, web_config
from tests.web.test_browser import browser

pytestmark = pytest.mark.anyio

LIVE_MS = 8000  # events arrive within a second; room for a loaded machine
RECONNECT_MS = 20000  # the back-off waits up to 8 s by then


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def file_markers(path: Path) -> list[str | None]:
    """The job marker of every message in the chat file (the header line left out)."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    return [(m.get("extra") or {}).get("st_imagegen_job") for m in lines[1:]]


async def tab_markers(page: Page) -> list[str | None]:
    found: list[str | None] = await page.evaluate("window.__stTest.markers()")
    return found


async def wait_tab(page: Page, index: int, job_id: str) -> None:
    await page.wait_for_function(
        "([i, id]) => window.__stTest.markers()[i] === id", arg=[index, job_id], timeout=LIVE_MS
    )


async def toast_seen(page: Page, kind: str, pattern: str) -> None:
    """A toast of ``kind`` whose text matches ``pattern`` (a JS regular expression) was shown."""
    await page.wait_for_function(
        "([k, p]) => window.__st.toasts.some(t => t.kind === k && new RegExp(p).test(t.message))",
        arg=[kind, pattern],
        timeout=LIVE_MS,
    )


def _read(paths: list[str]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


async def slash(page: Page, command: str) -> Any:
    return await page.evaluate("c => window.__stTest.executeSlashCommands(c)", command)


async def cli(config_file: Path, *args: str) -> int:
    code: int = await anyio.to_thread.run_sync(main, [*args, "--config", str(config_file)])
    return code


def harbour_chat(root: Path) -> Path:
    """0 greeting, 1 reply, 2 user, 3 reply: a chat whose message 1 is a character reply."""
    path = root / "default-user" / "chats" / "Alice" / "Alice - harbour.jsonl"
    tab = STSim.create(path, character="Alice", clock=SimClock(start=datetime.now(UTC)))
    tab.reply("Alice", "The lantern swings over the quay.")
    tab.send_user("Go on.").reply("Alice", "The harbour lights come on, one by one.")
    tab.save()
    return path


async def pending_images(inbox: Inbox, job_id: str) -> list[bytes]:
    job = await inbox.job(job_id)
    folder = inbox.config.pending_dir / job.id
    return [(folder / name).read_bytes() for name in job.images]


async def test_live_preview_insert_cli_accept_genimage_and_daemon_restart(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    port = free_port()
    probe = FakeST(tmp_path, tmp_path)
    with serve(probe):  # only to learn a free port for ST's origin, then reused below
        st_port = probe.port
    origin = f"http://127.0.0.1:{st_port}"
    config = web_config(
        make_config, tmp_path, fake_api, web={"port": port, "allowed_origins": [origin]}
    )
    config_file = tmp_path / "config.toml"
    assert config.data_root is not None
    root = config.data_root
    chat = harbour_chat(root)
    target = root / "default-user" / "extensions" / EXTENSION_NAME
    install(target)  # what `st-imagegen extension install` puts there; ST serves that copy
    settings = {"st-imagegen": {"address": f"http://127.0.0.1:{port}"}}
    query = urlencode({"chat": "Alice - harbour", "settings": json.dumps(settings)})
    errors: list[str] = []

    with serve(FakeST(root, target, port=st_port)) as st:
        async with browser() as b:
            page = await b.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            async with inbox_for(config) as inbox:
                await page.goto(f"{st.url}/?{query}")
                await page.wait_for_function("window.__stReady === true")
                await page.evaluate("window.__stTest.openChat()")
                await page.evaluate("window.__sameDocument = true")
                state = page.locator("#st_imagegen_state")
                await expect(state).to_have_text(f"connected · daemon {__version__}")

                # 1. A job turning pending pops up live, with its images and the seed's buttons.
                first = await job_for(inbox.service.deps, chat)
                inbox.service.runner.wake()
                first = await inbox.wait_state(first.id, JobState.PENDING)
                assert first.prompt
                preview = page.locator(f'.st-imagegen-preview[data-job="{first.id}"]')
                await expect(preview).to_be_visible(timeout=LIVE_MS)
                await expect(preview.locator('img[src^="blob:"]')).to_have_count(IMAGES)
                for name in ("accept", "accept-chosen", "regen", "regen-edited", "reject"):
                    await expect(preview.locator(f'[data-action="{name}"]')).to_be_visible()
                await expect(preview.locator(".st-imagegen-prompt")).to_have_value(first.prompt)
                shot = tmp_path / "extension-popup.png"
                await page.screenshot(path=str(shot))
                with Image.open(shot) as image:
                    assert image.size == (1280, 900)

                # 2. Accept in the popup: the message is in the tab's chat and the file once,
                # right after its reply, and the tab's own save carried it.
                saves = len(st.saves)
                await preview.locator('[data-action="accept"]').click()
                await inbox.wait_state(first.id, JobState.COMMITTED)
                await wait_tab(page, 4, first.id)
                await expect(preview).to_have_count(0)
                await async_wait_for(lambda: _true(len(st.saves) > saves))
                assert await tab_markers(page) == [None, None, None, None, first.id]
                assert file_markers(chat) == [None, None, None, None, first.id]
                await expect(page.locator('#chat .mes[mesid="4"] .mes_img')).to_have_attribute(
                    "src", f"/user/images/Alice/{Path(_files(await inbox.job(first.id))[0]).name}"
                )

                async def acknowledged(job_id: str = first.id) -> bool:
                    entry = await inbox.service.store.ledger_get(job_id)
                    return bool(entry and entry.acknowledged)

                # (The tab's save is byte for byte the daemon's write here, so the daemon
                # cannot tell it from its own yet; the next differing save acknowledges it.)

                # 3. /genimage mesid=1 makes a job for that reply, with progress toasts; the
                # prompt is edited in the popup and regenerated.
                made = await slash(page, "/genimage mesid=1")
                second = await inbox.job(made["pipe"])
                assert second.message_index == 1 and second.source == "manual"
                await inbox.wait_state(second.id, JobState.PENDING)
                # The tab's one toast for the job follows it to review. (Its first words are
                # wherever the job is when /genimage's answer arrives: "queued" on an idle
                # machine, a later step when the job's events overtook the answer.)
                await toast_seen(
                    page, "success", "^Image for message #1(, swipe 1)?: ready for review"
                )
                preview = page.locator(f'.st-imagegen-preview[data-job="{second.id}"]')
                await expect(preview).to_be_visible(timeout=LIVE_MS)
                await preview.locator(".st-imagegen-prompt").fill("a lantern at dusk, oil paint")
                await preview.locator('[data-action="regen-edited"]').click()

                async def regenerated() -> Any:
                    jobs = await inbox.service.store.query_jobs(states=[JobState.PENDING])
                    return next((j for j in jobs if j.meta.get("regen_of") == second.id), None)

                third = await async_wait_for(regenerated)
                assert third.prompt == "a lantern at dusk, oil paint"
                await expect(page.locator(f'[data-job="{third.id}"]')).to_be_visible(
                    timeout=LIVE_MS
                )

                # 4. Accepted on the command line: it appears in the open tab, no reload,
                # right after reply 1 (mid-chat), and the popup goes away.
                assert await cli(config_file, "accept", third.id) == 0
                await wait_tab(page, 2, third.id)
                await expect(page.locator(".st-imagegen-preview")).to_have_count(0)
                assert await page.evaluate("window.__sameDocument") is True
                assert await page.evaluate("window.__st.chatChanged") == 1  # never reloaded
                expected = [None, None, third.id, None, None, first.id]
                assert await tab_markers(page) == expected
                await async_wait_for(lambda: _true(file_markers(chat) == expected))
                await expect(page.locator('#chat .mes[mesid="2"]')).to_have_attribute(
                    "is_system", "true"
                )
                await expect(page.locator('#chat .mes[mesid="5"]')).to_have_attribute(
                    "is_system", "true"
                )

                # 5. The tab's next save keeps it: no duplicate, nothing lost.
                await page.evaluate("window.__stTest.sendUser('And then?')")
                expected = [*expected, None]
                assert file_markers(chat) == expected
                await async_wait_for(acknowledged)  # the daemon saw ST's save carry both
                await async_wait_for(lambda: acknowledged(third.id))

                # 6. The message button on a new reply, then Accept chosen (images 1 and 3).
                await page.evaluate("window.__stTest.reply('The bell rings twice.')")
                await page.locator('#chat .mes[mesid="7"] .st-imagegen-gen').click()

                async def made_for_7() -> Any:
                    jobs = await inbox.service.store.query_jobs(states=[JobState.PENDING])
                    return next((j for j in jobs if j.message_index == 7), None)

                fourth = await async_wait_for(made_for_7)
                wanted = await pending_images(inbox, fourth.id)
                preview = page.locator(f'.st-imagegen-preview[data-job="{fourth.id}"]')
                await expect(preview.locator('img[src^="blob:"]')).to_have_count(
                    IMAGES, timeout=LIVE_MS
                )
                await preview.locator('input[data-index="2"]').uncheck()
                await preview.locator('[data-action="accept-chosen"]').click()
                done = await inbox.wait_state(fourth.id, JobState.COMMITTED)
                assert _read(_files(done)) == [wanted[0], wanted[2]]
                await wait_tab(page, 8, fourth.id)
                expected = [*expected, None, fourth.id]
                await async_wait_for(lambda: _true(file_markers(chat) == expected))

                # 7. A pending job while the daemon goes away.
                await page.evaluate("window.__stTest.reply('Rain starts on the quay.')")
                made = await slash(page, "/genimage")
                fifth = await inbox.wait_state(made["pipe"], JobState.PENDING)
                assert fifth.message_index == 9
                await expect(page.locator(f'[data-job="{fifth.id}"]')).to_be_visible(
                    timeout=LIVE_MS
                )

            # The daemon is down: ST keeps working, the extension says so once and retries.
            await expect(state).to_contain_text("disconnected", timeout=LIVE_MS)
            await toast_seen(page, "warning", "is not reachable")
            assert await slash(page, "/genimage mesid=9") == {"pipe": ""}
            await toast_seen(page, "error", "is not reachable")
            assert await cli(config_file, "accept", fifth.id) == 0  # accepted while it is down

            # 8. Back up: it commits the job, the extension reconnects and catches up, once.
            async with inbox_for(config) as inbox:
                await inbox.wait_state(fifth.id, JobState.COMMITTED)
                await expect(state).to_have_text(
                    f"connected · daemon {__version__}", timeout=RECONNECT_MS
                )
                await wait_tab(page, 10, fifth.id)
                expected = [*expected, None, fifth.id]
                assert await tab_markers(page) == expected
                await async_wait_for(lambda: _true(file_markers(chat) == expected))
                await expect(page.locator(".st-imagegen-preview")).to_have_count(0)
                assert await page.evaluate("window.__sameDocument") is True
            assert st.refused == 0
    assert errors == []


def _files(job: Any) -> list[str]:
    files: list[str] = job.meta["committed_files"]
    return files


async def _true(value: bool) -> bool:
    return value
