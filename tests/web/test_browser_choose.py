"""The inbox as a place to look and choose (issue 24), in a real browser: the grid across chats,
the viewer, undo and restore, cancel and pause, bulk reject, keyboard triage, touch targets,
the daemon stopping under an open page. Screenshots go to docs/ with ST_IMAGEGEN_SCREENSHOTS
set (looked at by hand)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image, ImageDraw
from playwright.async_api import Page, expect

from daemon.engine.store import Job, JobState
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for, job_for, write_chat
from tests.engine.test_commit_support import group_path
from tests.stsim import STSim
from tests.web.conftest import IMAGES, Inbox, inbox_for, web_config
from tests.web.test_browser import LIVE_WITHIN_MS, browser, open_page

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parents[2] / "docs"
SHOTS_ENV = "ST_IMAGEGEN_SCREENSHOTS"
"""Set (to anything) to write the screenshots into docs/; by default they go to tmp_path, so a
test run does not change tracked files."""


def shots(tmp_path: Path) -> Path:
    return DOCS if os.environ.get(SHOTS_ENV) else tmp_path


COLOURS = [(214, 120, 72), (72, 140, 200), (120, 180, 96), (180, 96, 170)]


def picture(i: int) -> bytes:
    """A portrait picture with something in it, so the screenshots show the layout truly."""
    w, h = 512, 704
    img = Image.new("RGB", (w, h), COLOURS[i % len(COLOURS)])
    draw = ImageDraw.Draw(img)
    for band in range(0, h, 32):
        shade = 255 - band * 200 // h
        draw.rectangle((0, band, w, band + 16), fill=(shade // 3, shade // 4, shade // 2))
    draw.ellipse((w // 4, h // 5, 3 * w // 4, h // 5 + w // 2), fill=(240, 220, 190))
    draw.rectangle((w // 5, h // 2 + 40, 4 * w // 5, h - 40), fill=(60, 60, 90))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def pending_in(inbox: Inbox, name: str, reply: str, owner: str = "Alice") -> Job:
    path = await anyio.to_thread.run_sync(lambda: write_chat(inbox.root, name, [reply], owner))
    job = await job_for(inbox.service.deps, path)
    inbox.service.runner.wake()
    return await inbox.wait_state(job.id, JobState.PENDING)


async def group_pending(inbox: Inbox, group_id: str, name: str) -> Job:
    """A group chat of the group ``name`` (groups/<id>.json) with one reply, run to pending."""

    def write() -> Path:
        path = group_path(inbox.root, group_id)
        tab = STSim.create(path, group=True, greeting="Welcome.")
        tab.send_user("Where are we?").save()
        tab.reply("Bob", "By the gate.").save()
        tab.send_user("And now?").save()
        tab.reply("Bob", "The *lighthouse* garden hums with bees.").save()
        groups = inbox.root / "default-user" / "groups"
        groups.mkdir(parents=True, exist_ok=True)
        doc = {"id": group_id, "name": name, "members": ["Bob.png"], "chat_id": group_id}
        (groups / f"{group_id}.json").write_text(json.dumps(doc), encoding="utf-8")
        return path

    path = await anyio.to_thread.run_sync(write)
    job = await job_for(inbox.service.deps, path, character=group_id, is_group=True)
    inbox.service.runner.wake()
    return await inbox.wait_state(job.id, JobState.PENDING)


async def cards_in_first_row(page: Page) -> int:
    tops: list[float] = await page.eval_on_selector_all(
        "#grid .card", "cards => cards.map(c => c.getBoundingClientRect().top)"
    )
    return sum(1 for t in tops if abs(t - tops[0]) < 2)


async def small_targets(page: Page, scope: str) -> list[dict[str, Any]]:
    """Visible buttons, links and inputs in ``scope`` smaller than 44 × 44 px."""
    found: list[dict[str, Any]] = await page.eval_on_selector_all(
        f"{scope} button, {scope} a, {scope} select, {scope} label.select",
        """els => els.filter(e => e.offsetParent !== null).map(e => {
             const r = e.getBoundingClientRect();
             return {what: e.outerHTML.slice(0, 80), w: r.width, h: r.height};
           }).filter(r => r.w < 44 || r.h < 44)""",
    )
    return found


async def test_grid_viewer_group_names_and_phone(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    fake_api.picture = picture
    config = web_config(make_config, tmp_path, fake_api)
    async with inbox_for(config) as inbox, browser() as b:
        jobs = [
            await pending_in(inbox, "harbour", "The harbour <b>lights</b> come on.", "Alice"),
            await pending_in(inbox, "forge", '*He lifts the hammer.* "Ready?"', "Bob"),
            await pending_in(inbox, "orchard", "Apples fall in the orchard.", "Carol"),
            await group_pending(inbox, "1795473024643", "Lighthouse Garden"),
        ]
        page = await open_page(b, inbox, width=1440)
        await page.set_viewport_size({"width": 1440, "height": 900})
        await expect(page.locator("#grid .card")).to_have_count(4)
        assert await cards_in_first_row(page) >= 3
        group_card = page.locator(f'.card[data-id="{jobs[3].id}"]')
        await expect(group_card.locator(".chatname")).to_have_text(
            "Lighthouse Garden · 1795473024643"
        )
        # The reply as ST shows it: *…* in italics, HTML as text.
        forge = page.locator(f'.card[data-id="{jobs[1].id}"]')
        await expect(forge.locator(".excerpt em")).to_have_text("He lifts the hammer.")
        harbour = page.locator(f'.card[data-id="{jobs[0].id}"]')
        await expect(harbour.locator(".excerpt")).to_have_text("The harbour <b>lights</b> come on.")
        cover = harbour.locator(".cover .look img")
        await expect(cover).to_have_js_property("complete", True)
        box = await cover.bounding_box()
        assert box is not None and box["width"] >= 240 and box["height"] >= 240
        # Sized to the picture's aspect (portrait 512 × 704), not cropped to a square.
        assert abs(box["height"] / box["width"] - 704 / 512) < 0.05
        await page.wait_for_timeout(200)  # let the thumbnails paint for the screenshot
        await page.screenshot(path=str(shots(tmp_path) / "inbox-desktop.png"))

        # The viewer: click opens it on that image; → walks the images, then the next job.
        await harbour.locator(".cover .look").click()
        viewer = page.locator("#viewer")
        await expect(viewer).to_be_visible()
        await expect(viewer.locator(".v-img")).to_have_js_property("naturalWidth", 512)
        await expect(viewer.locator(".v-count")).to_have_text("image 1 of 3 · job 4 of 4")
        await expect(viewer.locator(".v-prompt")).to_have_text(jobs[0].prompt or "")
        await page.keyboard.press("ArrowRight")
        await expect(viewer.locator(".v-count")).to_have_text("image 2 of 3 · job 4 of 4")
        await page.keyboard.press("ArrowLeft")
        await page.keyboard.press("ArrowLeft")
        await expect(viewer.locator(".v-count")).to_have_text("image 3 of 3 · job 3 of 4")
        await expect(viewer.locator(".v-who")).to_have_text(f"Bob #{jobs[1].message_index}")
        await page.screenshot(path=str(shots(tmp_path) / "inbox-viewer-desktop.png"))
        # Pick inside the viewer and accept: only that image is kept; the viewer moves on.
        await page.keyboard.press(" ")
        await expect(viewer.locator('[data-vact="pick"]')).to_have_attribute("aria-pressed", "true")
        await page.keyboard.press("a")
        done = await inbox.wait_state(jobs[1].id, JobState.ACCEPTED, JobState.COMMITTED)
        assert done.images == (jobs[1].images[2],)
        await expect(viewer.locator(".v-who")).not_to_have_text(f"Bob #{jobs[1].message_index}")
        await page.keyboard.press("Escape")
        await expect(viewer).to_be_hidden()
        await inbox.wait_state(jobs[1].id, JobState.COMMITTED, within=30.0)
        await expect(page.locator("#toast")).to_contain_text(
            f"1 image added after Bob's #{jobs[1].message_index}", timeout=LIVE_WITHIN_MS
        )

        # A phone: one column, touch targets of 44 px, the viewer swipes.
        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(page.locator("#grid .card")).to_have_count(3)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        assert await small_targets(page, "#grid") == []
        assert await small_targets(page, ".tools") == []
        assert await small_targets(page, ".tabs") == []
        await page.screenshot(path=str(shots(tmp_path) / "inbox-phone.png"))
        await group_card.locator(".cover .look").click()
        await expect(viewer.locator(".v-count")).to_have_text("image 1 of 3 · job 1 of 3")
        assert await small_targets(page, "#viewer") == []
        stage = await viewer.locator(".v-stage").bounding_box()
        assert stage is not None
        y = stage["y"] + stage["height"] / 2
        await page.mouse.move(stage["x"] + stage["width"] - 60, y)
        await page.mouse.down()
        await page.mouse.move(stage["x"] + 60, y, steps=5)
        await page.mouse.up()
        await expect(viewer.locator(".v-count")).to_have_text("image 2 of 3 · job 1 of 3")
        await page.screenshot(path=str(shots(tmp_path) / "inbox-viewer-phone.png"))
        await page.keyboard.press("Escape")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_keyboard_triage_of_twenty_jobs_with_r_and_a(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api, image={"n": 1})
    fake_api.images_per_call = 1
    async with inbox_for(config) as inbox, browser() as b:
        made = [await pending_in(inbox, f"c{i:02d}", f"Reply {i}.") for i in range(20)]
        page = await open_page(b, inbox, width=1440)
        await expect(page.locator("#grid .card")).to_have_count(20)
        await page.locator("#grid .card").first.focus()
        for key in "rrrrrrrrrraaaaaaaaaa":
            await page.keyboard.press(key)
        newest_first = sorted(made, key=lambda j: j.id, reverse=True)
        for job in newest_first[:10]:
            await inbox.wait_state(job.id, JobState.REJECTED)
        for job in newest_first[10:]:
            await inbox.wait_state(job.id, JobState.COMMITTED, JobState.ACCEPTED)
        await expect(page.locator("#grid .card")).to_have_count(0, timeout=LIVE_WITHIN_MS)
        assert page.errors == []  # type: ignore[attr-defined]


async def test_cancel_queued_and_running_pause_and_bulk_reject(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api)
    async with inbox_for(config) as inbox, browser() as b:
        page = await open_page(b, inbox, width=1440)
        await expect(page.locator("#live")).to_have_text("connected")
        # Pause everything: a new job waits in the strip, no API call is made for it.
        await page.locator("#pause").click()
        await expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#paused-badge")).to_have_text("paused")
        calls = fake_api.count("images/generations")
        path = await anyio.to_thread.run_sync(write_chat, inbox.root, "held", ["Held reply."])
        held = await job_for(inbox.service.deps, path)
        inbox.service.runner.wake()
        chip = page.locator(f'#strip .chip[data-id="{held.id}"]')
        await expect(chip).to_be_visible(timeout=LIVE_WITHIN_MS)
        await chip.locator('button[data-act="cancel"]').click()
        await inbox.wait_state(held.id, JobState.REJECTED)
        await expect(chip).to_have_count(0, timeout=LIVE_WITHIN_MS)
        assert (await inbox.job(held.id)).meta["cancelled"] is True
        assert fake_api.count("images/generations") == calls  # never drawn

        # Resume; a running job (a slow image) is cancelled and its result dropped.
        await page.locator("#pause").click()
        await expect(page.locator("#pause")).to_have_attribute("aria-pressed", "false")
        fake_api.image_delay = 2.0
        path = await anyio.to_thread.run_sync(write_chat, inbox.root, "slow", ["Slow reply."])
        slow = await job_for(inbox.service.deps, path)
        inbox.service.runner.wake()
        await inbox.wait_state(slow.id, JobState.IMAGING)
        chip = page.locator(f'#strip .chip[data-id="{slow.id}"]')
        await chip.locator('button[data-act="cancel"]').click()
        await inbox.wait_state(slow.id, JobState.REJECTED)

        async def runner_free() -> bool | None:
            return True if inbox.service.runner.running == 0 else None

        await async_wait_for(runner_free, within=10.0)
        assert not (inbox.config.pending_dir / slow.id).exists()
        assert (await inbox.job(slow.id)).state is JobState.REJECTED
        fake_api.image_delay = 0.0

        # Bulk: all pending of one chat rejected at once, then undone.
        path = await anyio.to_thread.run_sync(write_chat, inbox.root, "many", ["One.", "Two."])
        first = await job_for(inbox.service.deps, path, index=-2)
        more = await job_for(inbox.service.deps, path, index=-1)
        inbox.service.runner.wake()
        await inbox.wait_state(first.id, JobState.PENDING)
        await inbox.wait_state(more.id, JobState.PENDING)
        other = await pending_in(inbox, "other", "Elsewhere.")
        await page.goto(f"{inbox.url}/?chat={first.chat}")
        await expect(page.locator("#grid .card")).to_have_count(2)
        await page.locator("#select-mode").click()
        await page.locator('button[data-bulk="chat-reject"]').click()
        await inbox.wait_state(first.id, JobState.REJECTED)
        await inbox.wait_state(more.id, JobState.REJECTED)
        assert (await inbox.job(other.id)).state is JobState.PENDING
        await expect(page.locator("#toast")).to_contain_text("Rejected 2 jobs")
        await page.locator("#toast .toast-action").click()
        await inbox.wait_state(first.id, JobState.PENDING)
        await inbox.wait_state(more.id, JobState.PENDING)
        await expect(page.locator("#grid .card")).to_have_count(2)

        # Bulk accept of the selected: the check boxes pick the jobs, one button accepts them.
        for job in (first, more):
            await page.locator(f'.card[data-id="{job.id}"] .select input').check()
        await expect(page.locator("#bulk-count")).to_have_text("2 selected")
        await page.locator('button[data-bulk="accept"]').click()
        for job in (first, more):
            await inbox.wait_state(job.id, JobState.ACCEPTED, JobState.COMMITTED)
        await expect(page.locator("#grid .card")).to_have_count(0, timeout=LIVE_WITHIN_MS)
        assert page.errors == []  # type: ignore[attr-defined]


async def test_restore_from_history_and_regenerated_link(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api)
    async with inbox_for(config) as inbox, browser() as b:
        job = await pending_in(inbox, "trash", "Into the trash.")
        regen_from = await pending_in(inbox, "again", "Once more.")
        async with inbox.client() as c:
            assert (await c.post(f"/api/v1/jobs/{job.id}/reject", json={})).status_code == 200
            new = (await c.post(f"/api/v1/jobs/{regen_from.id}/regen", json={})).json()
        assert (inbox.config.state_dir / ".trash" / job.id).is_dir()
        page = await open_page(b, inbox, "/history")
        row = page.locator(f'.hcard[data-id="{job.id}"]')
        await expect(row.locator("img")).to_have_js_property("naturalWidth", 8)
        await row.locator('button[data-act="restore"]').click()
        back = await inbox.wait_state(job.id, JobState.PENDING)
        assert len(back.images) == IMAGES
        await expect(row.locator('button[data-act="restore"]')).to_have_count(0)
        old = page.locator(f'.hcard[data-id="{regen_from.id}"]')
        link = old.locator("a.regen-link")
        await expect(link).to_have_attribute("href", f"/jobs/{new['id']}")
        await expect(old.locator(".error")).to_have_count(0)
        await link.click()
        await page.wait_for_url(f"**/#job-{new['id']}")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_daemon_stopped_under_an_open_page(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api)
    async with browser() as b:
        async with inbox_for(config) as inbox:
            job = await pending_in(inbox, "stop", "Before the stop.")
            page = await open_page(b, inbox, width=1440)
            card = page.locator(f'.card[data-id="{job.id}"]')
            await expect(card.locator('button[data-act="accept"]')).to_be_enabled()
        # The daemon (and its inbox) are gone: the header says so, actions are disabled.
        await expect(page.locator("#live")).to_contain_text("daemon down since", timeout=15000)
        await expect(page.locator("#status")).to_have_attribute("data-state", "down")
        await expect(card.locator('button[data-act="accept"]')).to_be_disabled()
        await card.focus()
        await page.keyboard.press("a")
        await expect(page.locator("#toast")).to_contain_text("not reachable")
        assert "Failed to fetch" not in (await page.locator("#toast").text_content() or "")
        # The daemon comes back on the same address: the page reconnects by itself.
        port = int(inbox.url.rsplit(":", 1)[1])
        again = config.model_copy(update={"web": config.web.model_copy(update={"port": port})})
        async with inbox_for(again):
            await expect(page.locator("#live")).to_have_text("connected", timeout=20000)
            await expect(card.locator('button[data-act="accept"]')).to_be_enabled()
            await card.locator('button[data-act="accept"]').click()
            await expect(card).to_have_count(0, timeout=LIVE_WITHIN_MS)


async def test_installable_and_notifies_while_in_the_background(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api)
    async with inbox_for(config) as inbox, browser() as b:
        page = await open_page(b, inbox, width=1440)
        await page.context.grant_permissions(["notifications"], origin=inbox.url)
        manifest = await page.evaluate(
            "fetch(document.querySelector('link[rel=manifest]').href).then(r => r.json())"
        )
        assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
        for icon in manifest["icons"][:2]:
            size = int(icon["sizes"].split("x")[0])
            loaded = await page.evaluate(
                """src => new Promise(ok => { const i = new Image(); i.onload = () =>
                   ok(i.naturalWidth); i.onerror = () => ok(0); i.src = src; })""",
                icon["src"],
            )
            assert loaded == size
        worker = await page.evaluate("navigator.serviceWorker.ready.then(r => r.active.scriptURL)")
        assert worker == f"{inbox.url}/sw.js"
        # In the background (another tab in front): a notification, through the worker.
        await page.evaluate(
            """() => {
              window.__notes = [];
              ServiceWorkerRegistration.prototype.showNotification = function (title, o) {
                window.__notes.push({ title, body: o.body, url: o.data.url });
                return Promise.resolve();
              };
              Object.defineProperty(document, "visibilityState", { get: () => "hidden" });
            }"""
        )
        job = await pending_in(inbox, "away", "While you were away.")

        async def told() -> list[dict[str, str]] | None:
            found: list[dict[str, str]] = await page.evaluate("window.__notes")
            return found or None

        notes = await async_wait_for(told, within=LIVE_WITHIN_MS / 1000)
        assert notes == [
            {
                "title": f"{IMAGES} pictures for Alice's #{job.message_index}",
                "body": f"Alice's #{job.message_index} · Alice · Alice - away",
                "url": f"/jobs/{job.id}",
            }
        ]
        assert page.errors == []  # type: ignore[attr-defined]
