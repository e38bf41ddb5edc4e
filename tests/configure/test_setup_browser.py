"""Set up and steer the daemon from a real browser (Playwright + Debian's chromium): from an
unconfigured daemon to a pending image with no restart, a style made in the page, a hand edit
and a broken file picked up live, and the key never shown anywhere."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Page, Response, expect

from daemon.engine.store import JobState
from tests.configure.conftest import live_service
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, async_wait_for, serve_fake_api
from tests.engine.test_service import jobs_of, new_chat, started_chat, wait_state
from tests.web.test_browser import CHROMIUM, browser

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE, pytest.mark.slow]

GOOD_KEY = "sk-setup-test-0123456789-GOODKEY"
WRONG_KEY = "sk-setup-test-9999999999-WRONGKY"
UI_TIMEOUT_MS = 15_000  # a Test or a model list is one request to the loopback fake API
JOB_TIMEOUT = 20.0
NEXT_FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"

if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def keyed_api() -> object:
    with serve_fake_api(FakeAPI(key=GOOD_KEY, models=("fake-image", "fake-llm", "gpt-4"))) as api:
        yield api


def unconfigured(tmp_path: Path) -> Path:
    from tests.engine.test_commit_support import new_data_root

    root = new_data_root(tmp_path)
    path = tmp_path / "config" / "config.toml"
    path.parent.mkdir()
    path.write_text(
        "# written by hand: kept through every save\n"
        f"data_root = {json.dumps(str(root))}\n"
        f"state_dir = {json.dumps(str(tmp_path / 'state'))}\n"
        "\n[detect]\nsettle_seconds = 0.2\n\n[web]\nport = 0\n",
        encoding="utf-8",
    )
    return path


async def shots(page: Page, folder: Path, name: str) -> None:
    """Desktop and phone width, full page; checked to be the widths asked for."""
    for suffix, size in (("desktop", (1280, 900)), ("phone", (390, 844))):
        await page.set_viewport_size({"width": size[0], "height": size[1]})
        await page.evaluate(NEXT_FRAME)  # laid out and painted at the new width
        await page.screenshot(path=str(folder / f"{name}-{suffix}.png"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})
    for suffix, width in (("desktop", 1280), ("phone", 390)):
        with Image.open(folder / f"{name}-{suffix}.png") as shot:
            assert shot.size[0] == width


async def test_setup_then_steer_from_the_browser_with_no_restart(
    tmp_path: Path,
    keyed_api: FakeAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = unconfigured(tmp_path)
    answers: list[str] = []
    pages: list[str] = []

    async def keep(response: Response) -> None:
        if "/api/" in response.url and "/events" not in response.url:
            try:
                answers.append(await response.text())
            except Exception:  # a redirect or an aborted request has no body
                return

    async with live_service(path) as service, browser() as b:
        assert service.web is not None
        url = service.web.url.rstrip("/")
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", keep)

        # An unconfigured daemon opens on the setup screen; the status says so.
        await page.goto(url + "/")
        await expect(page).to_have_url(url + "/setup")
        await expect(page.locator("#status .status-text")).to_contain_text("not set up yet")
        await shots(page, tmp_path, "setup")

        image = page.locator('.step[data-section="image"]')
        await image.locator('.preset[data-name="custom"]').click()
        await page.fill("#image-url", keyed_api.base_url)
        await page.fill("#image-key", WRONG_KEY)
        await page.click("#image-test")
        result = page.locator("#image-result")
        await expect(result).to_have_attribute("data-kind", "fail", timeout=UI_TIMEOUT_MS)
        await expect(result).to_contain_text("refused the key")
        await page.fill("#image-key", GOOD_KEY)
        await page.click("#image-test")
        await expect(result).to_have_attribute("data-kind", "ok", timeout=UI_TIMEOUT_MS)
        await expect(result).to_contain_text("Works")
        # The service's own /models fills the dropdown.
        options = page.locator("#image-model option")
        await expect(options.filter(has_text="fake-image")).to_have_count(1, timeout=UI_TIMEOUT_MS)
        await page.select_option("#image-model", "fake-image")

        writer = page.locator('.step[data-section="text"]')
        await writer.locator('.preset[data-name="custom"]').click()
        await page.fill("#text-url", keyed_api.base_url)
        await page.fill("#text-key", GOOD_KEY)
        await page.click("#text-load-models")
        await expect(page.locator("#text-model option").filter(has_text="fake-llm")).to_have_count(
            1, timeout=UI_TIMEOUT_MS
        )
        await page.select_option("#text-model", "fake-llm")
        # Test: success, then a clear failure once the key is wrong.
        await page.click("#text-test")
        text_result = page.locator("#text-result")
        await expect(text_result).to_have_attribute("data-kind", "ok", timeout=UI_TIMEOUT_MS)
        await page.fill("#text-key", WRONG_KEY)
        await page.click("#text-test")
        await expect(text_result).to_have_attribute("data-kind", "fail", timeout=UI_TIMEOUT_MS)
        await expect(text_result).to_contain_text("refused the key")
        await page.fill("#text-key", GOOD_KEY)
        await page.check('input[name="approval"][value="manual"]')
        await page.click("#save-setup")
        await expect(page.locator("#save-result")).to_have_attribute(
            "data-kind", "ok", timeout=UI_TIMEOUT_MS
        )
        pages.append(await page.content())

        # Written safely: comments kept, keys only in 0600 key files.
        saved = path.read_text(encoding="utf-8")
        assert saved.startswith("# written by hand: kept through every save\n")
        assert GOOD_KEY not in saved and "api_key_file" in saved
        for name in ("image.api_key", "text.api_key"):
            key_file = path.parent / "keys" / name
            assert key_file.read_text(encoding="utf-8").strip() == GOOD_KEY
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert service.runner.setup_hold is None

        # A reply saved the way ST saves becomes a pending image: no restart.
        chat = new_chat(service.root)
        tab = await started_chat(service, chat, character="Alice")
        tab.send_user("Where are we?").save()
        tab.reply("Alice", "*She lifts the lantern.* The old lighthouse, at last.").save()

        async def first_job() -> object:
            jobs = await jobs_of(service, chat)
            return jobs and jobs[0]

        job = await async_wait_for(first_job, within=JOB_TIMEOUT)
        done = await wait_state(service, job.id, JobState.PENDING, within=JOB_TIMEOUT)
        assert done.meta["image_model"] == "fake-image" and done.meta["text_model"] == "fake-llm"

        # A style made in the page, with the exact prompt shown, changes the next job.
        await page.goto(url + "/settings")
        await expect(page.locator("#style-list .style-item").first).to_be_visible()
        await page.fill('#style-edit input[name="name"]', "noir")
        await page.fill('#style-edit input[name="prefix"]', "film noir, high contrast")
        await page.fill('#style-edit input[name="negative"]', "colour")
        await expect(page.locator("#preview-prompt")).to_contain_text(
            "film noir, high contrast", timeout=UI_TIMEOUT_MS
        )
        await page.click('#style-edit button[type="submit"]')
        await expect(page.locator('.style-item[data-style="noir"]')).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        styles = page.locator('form[data-group="styles"]')
        await styles.locator("select").select_option("noir")
        await styles.locator('button[type="submit"]').click()
        await expect(styles.locator(".result")).to_have_attribute(
            "data-kind", "ok", timeout=UI_TIMEOUT_MS
        )
        assert service.config.default_style == "noir"
        tab.send_user("And the door?").save()
        tab.reply("Alice", "*She pushes the door.* It opens onto the stairs.").save()

        async def second_job() -> object:
            jobs = await jobs_of(service, chat)
            return len(jobs) > 1 and jobs[1]

        second = await async_wait_for(second_job, within=JOB_TIMEOUT)
        second = await wait_state(service, second.id, JobState.PENDING, within=JOB_TIMEOUT)
        assert second.meta["style"] == "noir"
        assert keyed_api.prompts()[-1].startswith("film noir, high contrast")
        await shots(page, tmp_path, "settings")
        pages.append(await page.content())

        # A hand edit of the file is picked up, and the open page follows.
        reloads = service.live.reloads if service.live else 0
        edited = path.read_text(encoding="utf-8").replace(
            'default_style = "noir"', 'default_style = "anime"'
        )
        path.write_text(edited, encoding="utf-8")

        async def picked_up() -> bool:
            return service.config.default_style == "anime"

        await async_wait_for(picked_up, within=JOB_TIMEOUT)
        assert service.live is not None and service.live.reloads > reloads
        await expect(styles.locator("select")).to_have_value("anime", timeout=UI_TIMEOUT_MS)

        # A broken file keeps the last good config and the page says where.
        lines = edited.splitlines()
        path.write_text(edited + "[styles.noir]\n", encoding="utf-8")
        banner = page.locator("#config-problem")
        await expect(banner).to_be_visible(timeout=UI_TIMEOUT_MS)
        await expect(banner).to_contain_text(f"line {len(lines) + 1}")
        assert service.config.default_style == "anime"
        await expect(page.locator("#status .status-text")).to_contain_text(
            "config file not applied", timeout=UI_TIMEOUT_MS
        )
        await shots(page, tmp_path, "settings-broken")
        pages.append(await page.content())
        assert errors == []

    # The key is in no page, no API answer and no log line.
    logged = "\n".join(r.getMessage() + json.dumps(str(r.msg)) for r in caplog.records)
    for where, texts in (("page", pages), ("API answer", answers), ("log", [logged])):
        for text in texts:
            assert GOOD_KEY not in text and WRONG_KEY not in text, where
            assert GOOD_KEY[-8:] not in text or where == "API answer", where
    assert any('"last4"' in a for a in answers)


async def test_characters_are_picked_with_their_avatars_and_saved_live(
    tmp_path: Path, st_root_latest: Path, keyed_api: FakeAPI
) -> None:
    from tests.configure.test_settings_api import write

    path = write(tmp_path, st_root_latest, keyed_api)
    async with live_service(path) as service, browser() as b:
        assert service.web is not None
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(service.web.url + "settings")
        await expect(page.locator(".char")).to_have_count(2, timeout=UI_TIMEOUT_MS)
        excluded = page.locator('[data-key="detect.exclude_characters"]')
        chip = excluded.locator('.pick-char[data-name="Bob"]')
        await expect(chip.locator("img")).to_have_attribute(
            "src", "/api/v1/characters/default-user/Bob/avatar"
        )
        await chip.click()
        await expect(chip).to_have_attribute("aria-pressed", "true")
        await expect(excluded.locator("input")).to_have_value("Bob")
        group = page.locator('form[data-group="detect"]')
        await group.locator('button[type="submit"]').click()
        await expect(group.locator(".result")).to_have_attribute(
            "data-kind", "ok", timeout=UI_TIMEOUT_MS
        )
        assert service.config.detect.exclude_characters == ["Bob"]
        # Alice's fixed look, saved from her card row, is what the next job would use.
        alice = page.locator('.char[data-character="Alice"]')
        await alice.locator("input").first.fill("silver hair, blue cloak")
        await alice.locator("button.primary").click()
        await expect(alice.locator(".hint").first).to_contain_text(
            "silver hair, blue cloak (from set here)", timeout=UI_TIMEOUT_MS
        )
        await shots(page, tmp_path, "characters")
