"""The extension in a real SillyTavern (1.19.0 and 1.12.14 from npm), driven in Chromium: ST's
chat backend is a local fake OpenAI-compatible server set through ST's own connection panel,
so pressing Send makes a real ST generation; the daemon runs for real over ST's data root, the
fake prompt and image API at the network boundary.

Each test runs once per pinned ST version; the servers are shared by the session (conftest)."""

from __future__ import annotations

import io
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image, ImageDraw
from playwright.async_api import Browser, Page, expect

from daemon import __version__
from daemon.cli import main
from daemon.engine.store import JobState
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for
from tests.realst import stpage
from tests.realst.conftest import shot_path
from tests.realst.stserver import STServer
from tests.web.conftest import Inbox, inbox_for
from tests.web.test_browser import browser

# The first test also waits for the session's ST servers to boot (minutes on a busy machine).
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(900)]

LIVE_MS = 20_000
"""A daemon event reaching the tab and the tab acting on it (about a second when idle)."""

JOB_S = 60.0
"""A job run by the daemon through the fake APIs (detect, settle, prompt, image)."""

HOSTILE = '<img src=x onerror="window.__pwned=(window.__pwned||0)+1">'
"""Markup that runs a script if any text reaches the page as HTML."""


def scene(index: int) -> bytes:
    """A 320×240 PNG: sky, sea and a sun (the fake image API's answer, visible in shots)."""
    image = Image.new("RGB", (320, 240), (40, 70, 120))
    draw = ImageDraw.Draw(image)
    for y in range(240):
        shade = (60 + y // 3, 90 + y // 4, 160 - y // 4) if y < 150 else (20, 60 + y // 6, 110)
        draw.line([(0, y), (320, y)], fill=shade)
    x = 80 + 60 * index
    draw.ellipse([x, 60, x + 50, 110], fill=(250, 210, 120))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def file_markers(path: Path) -> list[str | None]:
    """The marker of each message in the file (the header line, where there is one, left out:
    1.12.14's group chat files have none)."""
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]
    if lines and "mes" not in lines[0] and ("chat_metadata" in lines[0] or "user_name" in lines[0]):
        lines = lines[1:]
    return [(m.get("extra") or {}).get("st_imagegen_job") for m in lines]


def chat_file(st: STServer, avatar: str, page_chat_id: str) -> Path:
    return st.user_dir / "chats" / avatar.removesuffix(".png") / f"{page_chat_id}.jsonl"


async def cli(config_file: Path, *args: str) -> int:
    code: int = await anyio.to_thread.run_sync(main, [*args, "--config", str(config_file)])
    return code


@asynccontextmanager
async def daemon_for(
    st: STServer, make_config: MakeConfig, tmp_path: Path, **web: Any
) -> AsyncIterator[tuple[Inbox, Path]]:
    """The daemon over ST's data root (auto mode, manual approval), its web API on a free
    port that allows ST's origin; the extension installed with the CLI once it runs."""
    config = make_config(
        st.data_root,
        web={"port": 0, "allowed_origins": [st.url], **web},
        detect={"settle_seconds": 0.5, "rescan_seconds": 30.0},
    )
    config_file = tmp_path / "config.toml"
    async with inbox_for(config) as inbox:
        assert await cli(config_file, "extension", "install", "--user", "default-user") == 0
        yield inbox, config_file


TOAST_LOG = """
window.__toasts = [];
new MutationObserver(records => {
    for (const r of records) for (const node of r.addedNodes) {
        if (node.nodeType === 1 && node.classList.contains('toast')) {
            window.__toasts.push({ kind: node.className, text: node.textContent });
        }
    }
}).observe(document, { childList: true, subtree: true });
"""
"""Every toast the page shows, recorded as it appears (ST's toasts vanish after seconds)."""


async def toast_seen(page: Page, kind: str, text: str, within_ms: float = LIVE_MS) -> None:
    await page.wait_for_function(
        "([k, t]) => window.__toasts.some(x => x.kind.includes(k) && x.text.includes(t))",
        arg=[kind, text],
        timeout=within_ms,
    )


async def st_page(b: Browser, st: STServer, fake_api: FakeAPI, errors: list[str]) -> Page:
    fake_api.picture = scene  # an image one can see in the screenshots
    page = await b.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.add_init_script(TOAST_LOG)
    await stpage.open_st(page, st.url)
    await stpage.connect_chat_api(page, fake_api.base_url)
    return page


async def job_for_reply(inbox: Inbox, chat: str, mesid: int, *states: JobState) -> Any:
    async def found() -> Any:
        jobs = await inbox.service.store.query_jobs(states=states)
        return next(
            (j for j in jobs if j.chat.endswith(f"{chat}.jsonl") and j.message_index == mesid), None
        )

    return await async_wait_for(found, within=JOB_S)


def image_under(page: Page, mesid: int) -> Any:
    """The image of the image message shown as message ``mesid`` (1.12: .mes_img; 1.19: the
    media gallery; both an <img> served from /user/images/)."""
    return page.locator(f'#chat .mes[mesid="{mesid}"] img[src*="/user/images/"]').first


async def test_send_popup_accept_live_save_reload_genimage_hostile(
    st: STServer, make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """The headline path in a real ST, on both versions: install with the CLI; Send; the
    popup; Accept; the image under the reply without reload; ST's next own save keeps it once;
    reload shows it once; /genimage on a reply whose job was rejected makes a new one; hostile
    text (a reply, a prompt, an API error body) never runs."""
    errors: list[str] = []
    timings: dict[str, float] = {}
    name = f"Mira{st.version.replace('.', '')}"
    async with daemon_for(st, make_config, tmp_path) as (inbox, _), browser() as b:
        page = await st_page(b, st, fake_api, errors)
        await page.evaluate("window.__sameDocument = true")

        # The installed copy knows the daemon's real address: connected without typing.
        state = page.locator("#st_imagegen_state")
        await expect(state).to_have_text(f"connected · daemon {__version__}", timeout=LIVE_MS)
        await expect(page.locator("#st_imagegen_address")).to_have_value(inbox.url)

        avatar = await stpage.create_character(page, name, f"*{name} waves.* Hello!")
        chat_id: str = await page.evaluate("SillyTavern.getContext().getCurrentChatId()")
        path = chat_file(st, avatar, chat_id)

        # 1. Send → ST's real reply → the daemon's job → the popup, live. The fake API puts
        # markup into ST's reply and into the daemon's prompt.
        fake_api.text_suffix = f" {HOSTILE}"
        reply = await stpage.send_message(page, "Describe the harbour.")
        shown = time.monotonic()
        first = await job_for_reply(inbox, chat_id, reply, JobState.PENDING)
        preview = page.locator(f'.st-imagegen-preview[data-job="{first.id}"]')
        await expect(preview).to_be_visible(timeout=LIVE_MS)
        timings["reply shown → popup shown (s)"] = round(time.monotonic() - shown, 2)
        await expect(preview.locator('img[src^="blob:"]').first).to_be_visible(timeout=LIVE_MS)
        await expect(preview.locator(".st-imagegen-prompt")).to_have_value(first.prompt)
        assert HOSTILE in first.prompt  # the markup really travelled into the popup
        await page.screenshot(path=str(shot_path(tmp_path, f"realst-{st.version}-popup.png")))

        # 2. Accept → the image under the reply in this tab, without reload.
        clicked = time.monotonic()
        await preview.locator('[data-action="accept"]').click()
        await expect(image_under(page, reply + 1)).to_be_visible(timeout=LIVE_MS)
        timings["Accept click → image visible (s)"] = round(time.monotonic() - clicked, 2)
        assert await page.evaluate("window.__sameDocument") is True
        await inbox.wait_state(first.id, JobState.COMMITTED, within=JOB_S)
        assert (await stpage.chat_markers(page)).count(first.id) == 1
        await page.screenshot(path=str(shot_path(tmp_path, f"realst-{st.version}-inserted.png")))

        # 3. ST's next own save (the next Send) keeps the image message exactly once, and
        # ST's integrity check accepts it (no "chat was modified" refusal).
        second_reply = await stpage.send_message(page, "And the lighthouse?")
        assert second_reply == reply + 3

        async def saved_with_next_reply() -> bool:
            return len(file_markers(path)) >= second_reply

        await async_wait_for(saved_with_next_reply, within=JOB_S)
        assert file_markers(path).count(first.id) == 1
        assert (await stpage.chat_markers(page)).count(first.id) == 1
        assert not await page.locator("dialog[open]:has-text('modified')").count()

        # 4. /genimage on a reply whose job the user rejected: a new job, not "rejected".
        auto = await job_for_reply(inbox, chat_id, second_reply, JobState.PENDING)
        preview = page.locator(f'.st-imagegen-preview[data-job="{auto.id}"]')
        await expect(preview).to_be_visible(timeout=LIVE_MS)
        await preview.locator('[data-action="reject"]').click()
        await inbox.wait_state(auto.id, JobState.REJECTED, within=JOB_S)
        await expect(preview).to_have_count(0, timeout=LIVE_MS)
        await stpage.slash(page, f"/genimage mesid={second_reply}")

        async def new_job() -> Any:
            jobs = await inbox.service.store.query_jobs()
            return next(
                (
                    j
                    for j in jobs
                    if j.chat.endswith(f"{chat_id}.jsonl")
                    and j.message_index == second_reply
                    and j.id != auto.id
                ),
                None,
            )

        again = await async_wait_for(new_job, within=JOB_S)
        await inbox.wait_state(again.id, JobState.PENDING, within=JOB_S)
        preview = page.locator(f'.st-imagegen-preview[data-job="{again.id}"]')
        await expect(preview).to_be_visible(timeout=LIVE_MS)
        await preview.locator('[data-action="accept"]').click()
        await expect(image_under(page, second_reply + 1)).to_be_visible(timeout=LIVE_MS)

        # 5. An API error body with markup, in a toast (a forced job that fails).
        fake_api.fail_image = [400] * 10
        fake_api.fail_message = f"bad request {HOSTILE}"
        await stpage.slash(page, f"/genimage mesid={reply} force=true")
        await toast_seen(page, "toast-error", "bad request <img", within_ms=JOB_S * 1000)
        fake_api.fail_image = []

        # 5b. Plain /genimage takes the chat's last reply; that one has its image already, so a
        # toast says so and names force=true instead of paying for another.
        await stpage.slash(page, "/genimage")
        await toast_seen(
            page,
            "toast-info",
            f"/genimage mesid={second_reply} force=true",
            within_ms=JOB_S * 1000,
        )

        # 6. Reload: the images are read from the file, each once.
        await page.reload()
        await stpage.open_st(page, st.url)
        await stpage.open_character(page, avatar)
        await expect(image_under(page, reply + 1)).to_be_visible(timeout=LIVE_MS)
        markers = await stpage.chat_markers(page)
        assert markers.count(first.id) == 1 and markers.count(again.id) == 1
        assert file_markers(path).count(first.id) == 1

        # Nothing daemon- or user-supplied ever ran as HTML in ST's page.
        assert await page.evaluate("window.__pwned === undefined")
        assert not await page.locator("#toast-container img").count()
        assert await page.evaluate(
            "window.__toasts.every(t => !/HTTP 401|01[A-Z0-9]{24}/.test(t.text))"
        )
        assert not [e for e in errors if "st-imagegen" in e or "__pwned" in e], errors
    print(f"\nSillyTavern {st.version}: {timings}", file=sys.stderr)
    for key, value in timings.items():
        assert re.match(r"^[^:]+$", key) and value >= 0


_DRAWERS_JS = """() => {
    const ext = document.getElementById('rm_extensions_block');
    const ours = document.querySelector('.st-imagegen-settings .inline-drawer-content');
    const sliding = ext.classList.contains('resizing')
        || (ours !== null && window.jQuery !== undefined && jQuery(ours).is(':animated'));
    return {
        ext: ext.classList.contains('openDrawer'),
        ours: ours !== null && getComputedStyle(ours).display !== 'none',
        sliding,
    };
}"""
_STILL_JS = f"() => !({_DRAWERS_JS})().sliding"


async def open_our_settings(page: Page) -> int:
    """Open ST's Extensions drawer and our drawer in it the way a user does: look at what is
    shown, click what is closed, and click again when a click was lost (ST ignores a click on
    a drawer while one is sliding). Returns how many clicks it took (2 when none was lost)."""
    token_box = page.locator("#st_imagegen_token")
    deadline = time.monotonic() + LIVE_MS / 1000
    clicks = 0
    while not await token_box.is_visible():
        if time.monotonic() > deadline:
            await expect(token_box).to_be_visible(timeout=1)  # Playwright's own report
        await page.wait_for_function(_STILL_JS, timeout=LIVE_MS)
        shown = await page.evaluate(_DRAWERS_JS)
        if not shown["ext"]:
            await page.locator("#extensions-settings-button .drawer-toggle").click()
        elif not shown["ours"]:
            await page.locator(".st-imagegen-settings .inline-drawer-toggle").click()
        else:
            break  # both open and still: the box must show
        clicks += 1
    await expect(token_box).to_be_visible(timeout=LIVE_MS)
    return clicks


async def close_popup(page: Page, job_id: str) -> None:
    """The user closes the preview popup (its Close button), e.g. to swipe."""
    dialog = page.locator(f'dialog[open]:has(.st-imagegen-preview[data-job="{job_id}"])')
    await dialog.locator(".popup-button-ok").click(timeout=LIVE_MS)
    await expect(dialog).to_have_count(0, timeout=LIVE_MS)


async def test_token_swipe_back_cli_accept_and_menu_button(
    st: STServer, make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """A token-protected daemon (the tab says what to paste where; pasted, it connects); a
    popup closed to swipe right comes back after swiping back; an accept on the command line
    appears live; the message menu's button asks for an image."""
    from daemon.web.security import load_token

    errors: list[str] = []
    name = f"Noor{st.version.replace('.', '')}"
    async with (
        daemon_for(st, make_config, tmp_path, require_token=True) as (inbox, config_file),
        browser() as b,
    ):
        page = await st_page(b, st, fake_api, errors)
        await page.evaluate("window.__sameDocument = true")

        # Token mode: the install gave this user's copy its own token, so it connects as is;
        # with the token field emptied, the tab says what to paste where (not "HTTP 401"), and
        # the token `st-imagegen web-url` shows, pasted, connects again.
        state = page.locator("#st_imagegen_state")
        await expect(state).to_have_text(f"connected · daemon {__version__}", timeout=LIVE_MS)
        clicks = await open_our_settings(page)
        if clicks != 2:
            print(f"settings drawers opened in {clicks} clicks (a click was lost)")
        token_box = page.locator("#st_imagegen_token")
        await token_box.fill("")
        hint = "this daemon needs a token: run `st-imagegen web-url`"
        await toast_seen(page, "toast-warning", hint)
        await expect(page.locator("#st_imagegen_error")).to_contain_text(hint)
        await token_box.fill(load_token(inbox.config, create=False))
        await expect(state).to_have_text(f"connected · daemon {__version__}", timeout=LIVE_MS)
        panel = page.locator(".st-imagegen-settings")
        await panel.screenshot(path=str(shot_path(tmp_path, f"realst-{st.version}-settings.png")))
        await page.locator("#extensions-settings-button .drawer-toggle").click()

        avatar = await stpage.create_character(page, name, f"*{name} nods.* Welcome.")
        chat_id: str = await page.evaluate("SillyTavern.getContext().getCurrentChatId()")
        path = chat_file(st, avatar, chat_id)

        # Swipe right and back: the first job's popup, closed to swipe, is offered again.
        reply = await stpage.send_message(page, "Tell me about the market.")
        first = await job_for_reply(inbox, chat_id, reply, JobState.PENDING)
        await expect(page.locator(f'[data-job="{first.id}"]')).to_be_visible(timeout=LIVE_MS)
        await close_popup(page, first.id)
        await page.locator(f'#chat .mes[mesid="{reply}"] .swipe_right').click()
        await page.wait_for_function(
            "(i) => SillyTavern.getContext().chat[i].swipe_id === 1",
            arg=reply,
            timeout=stpage.REPLY_MS,
        )
        await stpage.wait_reply(page, reply)
        await inbox.wait_state(first.id, JobState.SUPERSEDED, within=JOB_S)

        async def second_swipe_job() -> Any:
            jobs = await inbox.service.store.query_jobs(states=[JobState.PENDING])
            return next((j for j in jobs if j.id != first.id and j.message_index == reply), None)

        second = await async_wait_for(second_swipe_job, within=JOB_S)
        await expect(page.locator(f'[data-job="{second.id}"]')).to_be_visible(timeout=LIVE_MS)
        await close_popup(page, second.id)
        await page.locator(f'#chat .mes[mesid="{reply}"] .swipe_left').click()
        await inbox.wait_state(first.id, JobState.PENDING, within=JOB_S)
        back = page.locator(f'.st-imagegen-preview[data-job="{first.id}"]')
        await expect(back).to_be_visible(timeout=LIVE_MS)
        await expect(back.locator('img[src^="blob:"]').first).to_be_visible(timeout=LIVE_MS)

        # Accepted on the command line: live in the tab, under the reply, the popup gone.
        assert await cli(config_file, "accept", first.id) == 0
        await expect(image_under(page, reply + 1)).to_be_visible(timeout=LIVE_MS)
        await expect(back).to_have_count(0, timeout=LIVE_MS)
        assert await page.evaluate("window.__sameDocument") is True
        assert file_markers(path).count(first.id) == 1
        assert (await stpage.chat_markers(page)).count(first.id) == 1

        # The message menu's button (not ST's paintbrush): a job for the greeting.
        greeting = page.locator('#chat .mes[mesid="0"]')
        await greeting.hover()
        await greeting.locator(".extraMesButtonsHint").click()
        button = greeting.locator(".st-imagegen-gen")
        await expect(button).to_be_visible(timeout=LIVE_MS)
        assert "fa-paintbrush" not in (await button.get_attribute("class") or "")
        await button.click()
        made = await job_for_reply(inbox, chat_id, 0)
        assert made.source == "manual"
        await expect(page.locator(f'[data-job="{made.id}"]')).to_be_visible(timeout=JOB_S * 1000)
        assert not [e for e in errors if "st-imagegen" in e], errors


async def test_group_chat_of_two_characters(
    st: STServer, make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """A group of two characters (ST's list activation: both reply): each reply's popup in
    turn, each image live under its own reply, ST's next group save keeps both once."""
    errors: list[str] = []
    tag = st.version.replace(".", "")
    async with daemon_for(st, make_config, tmp_path) as (inbox, _), browser() as b:
        page = await st_page(b, st, fake_api, errors)
        first = await stpage.create_character(page, f"Ada{tag}", "*Ada nods.*")
        second = await stpage.create_character(page, f"Bo{tag}", "*Bo grins.*")
        group_id = await stpage.create_group(page, f"Crew{tag}", [first, second])
        await stpage.connect_chat_api(page, fake_api.base_url)
        chat_id: str = await page.evaluate("SillyTavern.getContext().getCurrentChatId()")
        path = st.user_dir / "group chats" / f"{chat_id}.jsonl"
        assert group_id

        before: int = await page.evaluate("SillyTavern.getContext().chat.length")
        await page.locator("#send_textarea").fill("What do you both see?")
        await page.locator("#send_but").click()
        await stpage.wait_reply(page, before + 2)  # user message, then two replies
        replies = [before + 1, before + 2]
        jobs = [await job_for_reply(inbox, chat_id, r, JobState.PENDING) for r in replies]
        for job in jobs:
            preview = page.locator(f'.st-imagegen-preview[data-job="{job.id}"]')
            await expect(preview).to_be_visible(timeout=LIVE_MS)
            assert job.is_group and job.speaker in (f"Ada{tag}", f"Bo{tag}")
            await preview.locator('[data-action="accept"]').click()
            await inbox.wait_state(job.id, JobState.COMMITTED, within=JOB_S)
            await expect(preview).to_have_count(0, timeout=LIVE_MS)
        await page.wait_for_function(
            """(ids) => ids.every(id => SillyTavern.getContext().chat
                .filter(m => m?.extra?.st_imagegen_job === id).length === 1)""",
            arg=[j.id for j in jobs],
            timeout=LIVE_MS,
        )
        markers = await stpage.chat_markers(page)
        # Each image right after its own reply (the second shifted by the first insert).
        assert markers[replies[0] + 1] == jobs[0].id and markers[replies[1] + 2] == jobs[1].id
        await expect(image_under(page, replies[1] + 2)).to_be_visible(timeout=LIVE_MS)

        await stpage.slash(page, "/comment a note, saved by ST with the group chat")

        async def saved() -> bool:
            found = file_markers(path)
            return len(found) >= len(markers) + 1 and all(found.count(j.id) == 1 for j in jobs)

        await async_wait_for(saved, within=JOB_S)
        assert not [e for e in errors if "st-imagegen" in e], errors


RECONNECT_MS = 45_000
"""The extension's back-off reaches 8–16 s after a few failed attempts; room for a busy machine."""


async def test_daemon_stopped_and_restarted_under_the_open_tab(
    st: STServer, make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """The daemon goes away under an open ST tab: one warning, ST keeps working (a Send
    still makes a reply); the daemon comes back on the same address: "reconnected", and the
    reply written meanwhile gets its popup and its image, live."""
    from tests.realst.stserver import free_port

    errors: list[str] = []
    name = f"Ravi{st.version.replace('.', '')}"
    port = free_port()  # the same address before and after the restart
    config = make_config(
        st.data_root,
        web={"port": port, "allowed_origins": [st.url]},
        detect={"settle_seconds": 0.5, "rescan_seconds": 30.0},
    )
    config_file = tmp_path / "config.toml"
    async with browser() as b:
        async with inbox_for(config):
            assert await cli(config_file, "extension", "install", "--user", "default-user") == 0
            page = await st_page(b, st, fake_api, errors)
            state = page.locator("#st_imagegen_state")
            await expect(state).to_have_text(f"connected · daemon {__version__}", timeout=LIVE_MS)
            avatar = await stpage.create_character(page, name, f"*{name} bows.*")
            chat_id: str = await page.evaluate("SillyTavern.getContext().getCurrentChatId()")
        # Stopped: the tab warns once and ST works on.
        await toast_seen(page, "toast-warning", "is not reachable", within_ms=RECONNECT_MS)
        reply = await stpage.send_message(page, "Is anyone there?")
        async with inbox_for(config) as inbox:
            await toast_seen(
                page, "toast-info", "reconnected to the daemon", within_ms=RECONNECT_MS
            )
            job = await job_for_reply(inbox, chat_id, reply, JobState.PENDING)
            preview = page.locator(f'.st-imagegen-preview[data-job="{job.id}"]')
            await expect(preview).to_be_visible(timeout=LIVE_MS)
            await preview.locator('[data-action="accept"]').click()
            await expect(image_under(page, reply + 1)).to_be_visible(timeout=LIVE_MS)
            assert file_markers(chat_file(st, avatar, chat_id)).count(job.id) == 1
            # One warning for the outage, not one per retry.
            assert (
                await page.evaluate(
                    "window.__toasts.filter(t => t.text.includes('is not reachable')).length"
                )
                == 1
            )
        assert not [e for e in errors if "st-imagegen" in e], errors
