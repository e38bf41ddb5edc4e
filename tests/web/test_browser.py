"""The inbox in a real browser: Playwright (PyPI) driving Debian's chromium against the real
daemon. Never `playwright install`: the browser is /usr/bin/chromium."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from PIL import Image
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from daemon.engine.store import Job, JobState
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for
from tests.web.conftest import IMAGES, Inbox, inbox_for, web_config

pytestmark = pytest.mark.anyio

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LIVE_WITHIN_MS = 5000  # the event stream delivers within a second; room for a loaded machine
JOB_WITHIN_S = 30.0  # a job through the fake APIs, on a loaded machine

if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(b: Browser, inbox: Inbox, path: str = "/", width: int = 1280) -> Page:
    page = await b.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(inbox.url + path)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _committed_bytes(job: Job) -> list[bytes]:
    return [Path(p).read_bytes() for p in job.meta["committed_files"]]


def _bytes(inbox: Inbox, job: Job, n: int) -> bytes:
    return (inbox.config.pending_dir / job.id / job.images[n - 1]).read_bytes()


async def test_inbox_live_pick_accept_edit_regen_and_reject(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api)
    async with inbox_for(config) as inbox, browser() as b:
        first = await inbox.pending("harbour", ["The harbour <b>lights</b> come on."])
        page = await open_page(b, inbox)
        first_card = page.locator(f'.card[data-id="{first.id}"]')
        await expect(first_card).to_be_visible()
        await expect(first_card.locator(".thumb")).to_have_count(IMAGES)
        await expect(first_card.locator(".excerpt")).to_have_text(
            "The harbour <b>lights</b> come on."
        )
        await expect(page.locator("#live")).to_have_text("connected")
        await expect(page.locator("#status .status-text")).to_contain_text("1 pending")
        # The spend of the day (no price is known for the fake model: 0.00 USD).
        await expect(page.locator("#status .status-text")).to_contain_text(
            f"today {IMAGES} images, 0.00 USD"
        )
        await page.evaluate("window.__sameDocument = true")

        # A new job appears by itself (event stream, no reload).
        second = await inbox.pending("tower", ["The tower bell rings twice."])
        second_card = page.locator(f'.card[data-id="{second.id}"]')
        await expect(second_card).to_be_visible(timeout=LIVE_WITHIN_MS)
        assert await page.evaluate("window.__sameDocument") is True
        names = page.locator("#grid .card .chatname")
        await expect(names).to_have_count(2)
        await expect(names.first).to_contain_text("Alice - tower")  # newest first

        await expect(page.locator("#status .status-text")).to_contain_text("2 pending")
        await expect(page.locator("#pending-count")).to_have_text("2")
        await page.screenshot(path=str(tmp_path / "inbox-desktop.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(tmp_path / "inbox-phone.png"), full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 900})
        for name, width in (("inbox-desktop.png", 1280), ("inbox-phone.png", 390)):
            with Image.open(tmp_path / name) as shot:
                assert shot.size[0] == width

        # Pick images 1 and 3 of the second job and accept exactly those. A thumbnail shows
        # its image on the card; only the ✓ picks it (looking never picks).
        wanted = [_bytes(inbox, second, 1), _bytes(inbox, second, 3)]
        thumbs = second_card.locator(".thumb")
        pick = second_card.locator(".cover .pick")
        await thumbs.nth(0).click()
        await expect(thumbs.nth(0)).to_have_attribute("aria-pressed", "false")
        await pick.click()
        await thumbs.nth(2).click()
        await pick.click()
        await thumbs.nth(1).click()
        await pick.click()
        await pick.click()  # toggled off again
        await expect(thumbs.nth(0)).to_have_attribute("aria-pressed", "true")
        await expect(thumbs.nth(1)).to_have_attribute("aria-pressed", "false")
        accept = second_card.locator('button[data-act="accept"]')
        await expect(accept).to_have_text("Accept picked (2)")
        await _pictures_loaded(page, second.id)  # none still on its way when the job moves on
        await accept.click()
        done = await inbox.wait_state(second.id, JobState.COMMITTED)
        await expect(second_card).to_have_count(0, timeout=LIVE_WITHIN_MS)
        files = [Path(p) for p in done.meta["committed_files"]]
        assert [p.read_bytes() for p in files] == wanted
        chat_text = (inbox.root / second.chat).read_text(encoding="utf-8")
        assert chat_text.count("st_imagegen_job") == 1
        for p in files:
            assert p.name in chat_text

        # Edit the first job's prompt in place and regenerate with it.
        await first_card.locator('button[data-act="edit"]').click()
        area = first_card.locator("textarea")
        await expect(area).to_have_value(first.prompt or "")
        await area.fill("a harbour at night, lanterns, watercolour")
        await _pictures_loaded(page, first.id)
        await first_card.locator('button[data-act="regen-edited"]').click()
        await expect(first_card).to_have_count(0, timeout=LIVE_WITHIN_MS)

        # The new job is a card once the daemon has drawn it (a job's run, not the page's
        # reaction, which is what LIVE_WITHIN_MS bounds).
        async def regenerated() -> Job | None:
            jobs = await inbox.service.store.query_jobs(states=[JobState.PENDING])
            return next((j for j in jobs if j.meta.get("regen_of") == first.id), None)

        new_id = (await async_wait_for(regenerated, within=JOB_WITHIN_S)).id
        new_card = page.locator(f'.card[data-id="{new_id}"]')
        await expect(new_card).to_contain_text("lanterns, watercolour", timeout=LIVE_WITHIN_MS)
        # The first job's images stay on offer after the new ones (image swipes, issue 12),
        # marked as the earlier set and not picked.
        await expect(new_card.locator(".thumb")).to_have_count(2 * IMAGES, timeout=LIVE_WITHIN_MS)
        await expect(new_card.locator(".thumb.old")).to_have_count(IMAGES)
        await expect(new_card.locator(".thumb img").first).to_have_js_property("complete", True)
        await expect(new_card.locator('button[data-act="accept"]')).to_have_text(
            f"Accept picked ({IMAGES})"
        )
        assert "a harbour at night, lanterns, watercolour" in fake_api.prompts()[-1]
        assert (await inbox.job(first.id)).state is JobState.SUPERSEDED

        # Keyboard: the regenerated card has the focus; r rejects it, Undo brings it back.
        await _pictures_loaded(page, new_id)
        await expect(new_card).to_be_focused()
        await page.keyboard.press("r")
        await inbox.wait_state(new_id, JobState.REJECTED)
        await expect(new_card).to_have_count(0, timeout=LIVE_WITHIN_MS)
        await expect(page.locator("#empty")).to_be_visible()
        await page.locator("#toast .toast-action").click()
        back = await inbox.wait_state(new_id, JobState.PENDING)
        assert len(back.images) == 2 * IMAGES
        await expect(new_card.locator(".thumb")).to_have_count(2 * IMAGES, timeout=LIVE_WITHIN_MS)
        await expect(new_card).to_be_focused()
        await page.keyboard.press("r")
        await inbox.wait_state(new_id, JobState.REJECTED)
        assert page.errors == []  # type: ignore[attr-defined]


async def test_an_answer_older_than_the_stream_does_not_undo_it(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """The answer to a regenerate or an accept can reach the page after the event stream has
    told later changes (the new job drawn and pending; the accepted one committed). Held back
    here until then, it must not put the job back the way it was when answered (a queued chip
    for a card with pictures, an "accepted" chip that never goes)."""
    config = web_config(make_config, tmp_path, fake_api)
    async with inbox_for(config) as inbox, browser() as b:
        first = await inbox.pending("held")
        page = await open_page(b, inbox)
        await expect(page.locator("#live")).to_have_text("connected")
        release = {"regen": anyio.Event(), "accept": anyio.Event()}

        async def hold(route: Route) -> None:
            answer = await route.fetch()
            await release[route.request.url.rsplit("/", 1)[-1]].wait()
            await route.fulfill(response=answer)

        await page.route("**/api/v1/jobs/*/regen", hold)
        await page.route("**/api/v1/jobs/*/accept", hold)
        # Routing turns the browser's cache off (Playwright), so a card redrawn as busy fetches
        # its pictures again, racing the action that moves them (the regenerate hands them to
        # the new job): a 404 for those pictures is expected here, and nothing else.
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)

        await page.locator(f'.card[data-id="{first.id}"] button[data-act="regen"]').click()

        async def regenerated() -> Job | None:
            jobs = await inbox.service.store.query_jobs(states=[JobState.PENDING])
            return next((j for j in jobs if j.meta.get("regen_of") == first.id), None)

        new = await async_wait_for(regenerated, within=JOB_WITHIN_S)
        card = page.locator(f'.card[data-id="{new.id}"]')
        await expect(card.locator(".thumb")).to_have_count(2 * IMAGES, timeout=LIVE_WITHIN_MS)
        release["regen"].set()
        await expect(page.locator("#toast")).to_contain_text("Regenerating")
        await _frames(page)
        assert await _state_on_page(page, new.id) == "pending"
        await expect(card.locator(".thumb")).to_have_count(2 * IMAGES)
        await expect(page.locator("#working")).to_be_hidden()

        await card.locator('button[data-act="accept"]').click()
        await inbox.wait_state(new.id, JobState.COMMITTED, within=JOB_WITHIN_S)
        await expect(card).to_have_count(0, timeout=LIVE_WITHIN_MS)
        release["accept"].set()
        await expect(page.locator("#toast")).to_contain_text("added after")
        await _frames(page)
        assert await _state_on_page(page, new.id) is None
        await expect(page.locator("#working")).to_be_hidden()
        await expect(page.locator("#empty")).to_be_visible()
        moved = (f"/api/v1/jobs/{first.id}/images/", f"/api/v1/jobs/{new.id}/images/")
        assert all(any(m in url for m in moved) for url in missing), missing
        not_found = "Failed to load resource: the server responded with a status of 404"
        errors: list[str] = page.errors  # type: ignore[attr-defined]
        assert [e for e in errors if not e.startswith(not_found)] == []
        assert len(errors) <= len(missing)


async def _pictures_loaded(page: Page, job_id: str) -> None:
    await page.wait_for_function(
        """(id) => {
            const imgs = [...document.querySelectorAll(`.card[data-id="${id}"] img`)];
            return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
        }""",
        arg=job_id,
        timeout=LIVE_WITHIN_MS,
    )


async def _frames(page: Page) -> None:
    """Two animation frames: whatever the page scheduled before is drawn."""
    await page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


async def _state_on_page(page: Page, job_id: str) -> str | None:
    state: str | None = await page.evaluate(
        "(id) => window.stImagegenInbox.jobs.get(id)?.state ?? null", job_id
    )
    return state


async def test_phone_width_keys_progress_failure_and_escaping(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(make_config, tmp_path, fake_api)
    async with inbox_for(config) as inbox, browser() as b:
        hostile = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
        job = await inbox.pending("keys", [hostile])
        page = await open_page(b, inbox, width=390)
        job_card = page.locator(f'.card[data-id="{job.id}"]')
        await expect(job_card.locator(".excerpt")).to_have_text(hostile)
        assert await page.evaluate("window.__xss === undefined")
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390  # nothing sticks out sideways on a phone
        box = await job_card.locator('button[data-act="accept"]').bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390

        # Arrow keys and digits: focus the card, pick image 2 with → space, accept with a.
        wanted = _bytes(inbox, job, 2)
        await page.locator("body").click(position={"x": 5, "y": 400})
        await page.keyboard.press("ArrowDown")
        await expect(job_card).to_be_focused()
        await page.keyboard.press("ArrowRight")
        await page.keyboard.press(" ")
        await expect(job_card.locator(".thumb").nth(1)).to_have_attribute("aria-pressed", "true")
        await page.keyboard.press("a")
        done = await inbox.wait_state(job.id, JobState.COMMITTED)
        assert _committed_bytes(done) == [wanted]

        # A slow image shows the job in progress, live.
        fake_api.image_delay = 1.5
        path_job = await _queued(inbox, "slow")
        slow_chip = page.locator(f'#strip .chip[data-id="{path_job.id}"]')
        await expect(slow_chip.locator(".progress")).to_contain_text("drawing")
        slow_card = page.locator(f'.card[data-id="{path_job.id}"]')
        await expect(slow_card.locator(".thumb")).to_have_count(IMAGES, timeout=LIVE_WITHIN_MS)
        fake_api.image_delay = 0.0

        # A failed job shows its error and retries with g (the same prompt).
        await inbox.service.store.fail(
            path_job.id, "image: the API said no", expected=JobState.PENDING
        )
        await expect(slow_card.locator(".error")).to_have_text("image: the API said no")
        await expect(slow_card.locator('button[data-act="regen"]')).to_have_text("Retry")
        await slow_card.focus()
        await page.keyboard.press("g")
        await expect(slow_card).to_have_count(0, timeout=LIVE_WITHIN_MS)
        retried = [j for j in await inbox.service.store.list_jobs() if j.source == "regen"]
        assert len(retried) == 1 and retried[0].meta["regen_of"] == path_job.id
        await inbox.wait_state(retried[0].id, JobState.PENDING)
        await page.screenshot(path=str(tmp_path / "inbox-phone-keys.png"))
        assert page.errors == []  # type: ignore[attr-defined]


async def _queued(inbox: Inbox, name: str) -> Job:
    from tests.engine.conftest import job_for, write_chat

    path = await anyio.to_thread.run_sync(write_chat, inbox.root, name, [f"{name} reply"])
    job = await job_for(inbox.service.deps, path)
    inbox.service.runner.wake()
    return job


async def test_history_filters_by_chat_and_state_and_links_to_st(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = web_config(
        make_config, tmp_path, fake_api, web={"sillytavern_url": "http://127.0.0.1:8000"}
    )
    async with inbox_for(config) as inbox, browser() as b:
        kept = await inbox.pending("kept")
        dropped = await inbox.pending("dropped")
        broken = await inbox.pending("broken")
        async with inbox.client() as c:
            assert (await c.post(f"/api/v1/jobs/{kept.id}/accept", json={})).status_code == 200
            assert (await c.post(f"/api/v1/jobs/{dropped.id}/reject", json={})).status_code == 200
        await inbox.service.store.fail(broken.id, "prompt: refused", expected=JobState.PENDING)
        await inbox.wait_state(kept.id, JobState.COMMITTED)
        page = await open_page(b, inbox, "/history")
        rows = page.locator(".hcard")
        await expect(rows).to_have_count(3)
        committed = page.locator(f'.hcard[data-id="{kept.id}"]')
        await expect(committed.locator("img")).to_have_js_property("naturalWidth", 8)
        await expect(committed.locator(".more")).to_have_text(f"+{IMAGES - 1}")
        link = committed.locator("a.st-link")
        await expect(link).to_have_attribute("href", "http://127.0.0.1:8000")

        # More variants of a committed image: a job whose images become swipes of its message.
        await committed.locator('button[data-act="variants"]').click()
        await expect(committed.locator('button[data-act="variants"]')).to_have_text(
            "Queued: see the inbox"
        )
        variants = [
            j for j in await inbox.service.store.list_jobs() if j.meta.get("swipe_of") == kept.id
        ]
        assert len(variants) == 1
        await inbox.wait_state(variants[0].id, JobState.PENDING)

        await page.select_option('select[name="state"]', "rejected")
        await page.wait_for_url("**/history?*state=rejected*")
        await expect(rows).to_have_count(1)
        await expect(page.locator(f'.hcard[data-id="{dropped.id}"]')).to_be_visible()

        await page.select_option('select[name="state"]', "")
        await page.select_option('select[name="chat"]', broken.chat)
        await page.wait_for_url("**chat=*")
        await expect(rows).to_have_count(1)
        failed = page.locator(f'.hcard[data-id="{broken.id}"]')
        await expect(failed.locator(".error")).to_have_text("prompt: refused")
        await expect(failed.locator(".badge")).to_have_text("failed")
        assert page.errors == []  # type: ignore[attr-defined]
