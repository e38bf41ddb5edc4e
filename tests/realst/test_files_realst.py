"""The daemon's file-level guarantees against a real SillyTavern server's own save API: a tab
that never sees the image keeps saving (``/api/chats/save``, with ST's integrity check) while
the daemon commits; nothing is lost, the image message ends up exactly once, and every one of
ST's saves is accepted (the daemon keeps the integrity slug ST checks).

No extension in this tab: the saves come from a stale tab, the case the daemon alone handles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.engine.store import JobState
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for
from tests.realst import stpage
from tests.realst.stserver import STServer
from tests.realst.test_extension_realst import (
    JOB_S,
    chat_file,
    cli,
    file_markers,
    job_for_reply,
)
from tests.web.conftest import inbox_for
from tests.web.test_browser import browser

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(900)]

SAVES = 12
"""Saves of the stale tab around the commit (each appends one user message)."""

STALE_SAVES = """
async ([avatar, fileName, count, tag]) => {
    const ctx = SillyTavern.getContext();
    // A character chat (its card's avatar), or a group chat (avatar null: fileName is its id).
    const group = !avatar;
    const where = group ? { id: fileName } : {
        ch_name: avatar.replace(/\\.png$/, ''), file_name: fileName, avatar_url: avatar };
    const api = group ? '/api/chats/group' : '/api/chats';
    const post = (url, body) => fetch(url, {
        method: 'POST', headers: ctx.getRequestHeaders(), body: JSON.stringify(body),
    });
    // The tab's copy: read once, before the daemon commits; it never learns of the image.
    const lines = await (await post(`${api}/get`, where)).json();
    const statuses = [];
    for (let i = 0; i < count; i++) {
        lines.push({ name: 'User', is_user: true, is_system: false,
            send_date: new Date().toISOString(), mes: `${tag} ${i}`, extra: {} });
        const answer = await post(`${api}/save`, { ...where, chat: lines });
        statuses.push(answer.status);
    }
    return statuses;
}
"""


def user_notes(path: Path) -> list[str]:
    """The stale tab's messages in the file, in order."""
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    texts = [str(m.get("mes")) for m in lines if m.get("is_user")]
    return [t for t in texts if t.startswith(("during ", "after "))]


async def test_st_saves_while_the_daemon_commits_lose_nothing(
    st: STServer, make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    config = make_config(
        st.data_root,
        web={"port": 0, "allowed_origins": [st.url]},
        detect={"settle_seconds": 0.5, "rescan_seconds": 30.0},
    )
    config_file = tmp_path / "config.toml"
    name = f"Ines{st.version.replace('.', '')}"
    async with inbox_for(config) as inbox, browser() as b:
        # A tab without the extension (an earlier test's copy removed).
        assert await cli(config_file, "extension", "uninstall", "--user", "default-user") == 0
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        await stpage.open_st(page, st.url)
        assert not await page.evaluate("!!window.stImagegen")
        await stpage.connect_chat_api(page, fake_api.base_url)
        avatar = await stpage.create_character(page, name, f"*{name} smiles.*")
        chat_id: str = await page.evaluate("SillyTavern.getContext().getCurrentChatId()")
        path = chat_file(st, avatar, chat_id)
        reply = await stpage.send_message(page, "What is in the crate?")
        job = await job_for_reply(inbox, chat_id, reply, JobState.PENDING)

        statuses: list[int] = []

        async def stale_tab(tag: str) -> None:
            found: list[int] = await page.evaluate(STALE_SAVES, [avatar, chat_id, SAVES, tag])
            statuses.extend(found)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stale_tab, "during")
            assert await cli(config_file, "accept", job.id) == 0
        await inbox.wait_state(job.id, JobState.COMMITTED, within=JOB_S)
        await stale_tab("after")  # ST's next saves, still without the image

        expected = [f"during {i}" for i in range(SAVES)] + [f"after {i}" for i in range(SAVES)]

        async def settled() -> Any:
            return file_markers(path).count(job.id) == 1 and user_notes(path) == expected

        await async_wait_for(settled, within=JOB_S)
        assert statuses == [200] * (2 * SAVES), statuses  # no save refused (integrity)
        # The image message sits right after its reply; ST reads it back once.
        assert file_markers(path)[reply + 1] == job.id
        await page.evaluate("SillyTavern.getContext().reloadCurrentChat()")
        await page.wait_for_function(
            "(n) => SillyTavern.getContext().chat.length === n",
            arg=len(file_markers(path)),
            timeout=stpage.STEP_MS,
        )
        assert (await stpage.chat_markers(page)).count(job.id) == 1


async def test_st_group_saves_while_the_daemon_commits_lose_nothing(
    st: STServer, make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    """The same through ``/api/chats/group/save``: a group chat of two characters."""
    config = make_config(
        st.data_root,
        web={"port": 0, "allowed_origins": [st.url]},
        detect={"settle_seconds": 0.5, "rescan_seconds": 30.0},
    )
    config_file = tmp_path / "config.toml"
    tag = st.version.replace(".", "")
    async with inbox_for(config) as inbox, browser() as b:
        assert await cli(config_file, "extension", "uninstall", "--user", "default-user") == 0
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        await stpage.open_st(page, st.url)
        await stpage.connect_chat_api(page, fake_api.base_url)
        first = await stpage.create_character(page, f"Gil{tag}", "*Gil waves.*")
        second = await stpage.create_character(page, f"Hana{tag}", "*Hana waves.*")
        await stpage.create_group(page, f"Dock{tag}", [first, second])
        await stpage.connect_chat_api(page, fake_api.base_url)
        chat_id: str = await page.evaluate("SillyTavern.getContext().getCurrentChatId()")
        path = st.user_dir / "group chats" / f"{chat_id}.jsonl"
        before: int = await page.evaluate("SillyTavern.getContext().chat.length")
        await page.locator("#send_textarea").fill("What is in the crate?")
        await page.locator("#send_but").click()
        await stpage.wait_reply(page, before + 2)
        job = await job_for_reply(inbox, chat_id, before + 1, JobState.PENDING)

        statuses: list[int] = []

        async def stale_tab(when: str) -> None:
            found: list[int] = await page.evaluate(STALE_SAVES, [None, chat_id, SAVES, when])
            statuses.extend(found)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stale_tab, "during")
            assert await cli(config_file, "accept", job.id) == 0
        await inbox.wait_state(job.id, JobState.COMMITTED, within=JOB_S)
        await stale_tab("after")
        expected = [f"during {i}" for i in range(SAVES)] + [f"after {i}" for i in range(SAVES)]

        async def settled() -> Any:
            return file_markers(path).count(job.id) == 1 and user_notes(path) == expected

        await async_wait_for(settled, within=JOB_S)
        assert statuses == [200] * (2 * SAVES), statuses
