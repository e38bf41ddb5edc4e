"""Driving a real SillyTavern page the way a user does, through ST's own UI and its own
client-side API (``SillyTavern.getContext()``, ST's jQuery-bound form controls), never by
editing ST's files. Every wait names its timeout."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

LOAD_MS = 180_000
"""ST's first page load: ~100 scripts and the settings, slow on a busy 2-core machine."""

STEP_MS = 60_000
"""One UI step that involves ST's server (connect, create a character, open a chat)."""

REPLY_MS = 90_000
"""Send → the generated reply shown (the fake chat API answers at once)."""


async def open_st(page: Page, url: str) -> None:
    """Load ST and get past the first-run persona popup (1.12.14 and 1.19.0 both show it)."""
    await page.goto(url, timeout=LOAD_MS)
    await page.wait_for_function(
        "!document.getElementById('preloader') && !!window.SillyTavern?.getContext",
        timeout=LOAD_MS,
    )
    onboarding = page.locator("dialog[open]:has(.onboarding) .popup-button-ok")
    if await onboarding.count():
        await onboarding.first.click(timeout=STEP_MS)
        await page.locator("dialog[open]:has(.onboarding)").wait_for(
            state="detached", timeout=STEP_MS
        )


async def connect_chat_api(page: Page, base_url: str, model: str = "fake-llm") -> None:
    """Chat Completion → Custom (OpenAI-compatible) at ``base_url``, no streaming, Connect:
    ST's connection panel, its controls set and their change handlers run (what typing and
    picking in the panel does), then ST's own Connect button."""
    await page.evaluate(
        """([url, model]) => {
            const $ = window.jQuery;
            $('#main_api').val('openai').trigger('change');
            $('#chat_completion_source').val('custom').trigger('change');
            $('#custom_api_url_text').val(url).trigger('input');
            $('#custom_model_id').val(model).trigger('input');
            $('#stream_toggle').prop('checked', false).trigger('change');
            $('#api_button_openai').trigger('click');
        }""",
        [base_url, model],
    )
    await page.wait_for_function(
        "SillyTavern.getContext().onlineStatus && SillyTavern.getContext().onlineStatus !== "
        "'no_connection'",
        timeout=STEP_MS,
    )


async def create_character(page: Page, name: str, greeting: str) -> str:
    """A character made through ST's create endpoint (the form ST's "Create" panel posts),
    then opened: its chat starts with the greeting. Returns the avatar file name."""
    avatar: str = await page.evaluate(
        """async ([name, greeting]) => {
            const ctx = SillyTavern.getContext();
            const form = new FormData();
            const fields = {
                ch_name: name, first_mes: greeting, description: `${name} lives by the sea.`,
                personality: '', scenario: '', mes_example: '', creator_notes: '',
                system_prompt: '', post_history_instructions: '', tags: '', creator: '',
                character_version: '',
                talkativeness: '0.5', fav: 'false', world: '', depth_prompt_prompt: '',
                depth_prompt_depth: '4', depth_prompt_role: 'system', extensions: '{}',
            };
            for (const [key, value] of Object.entries(fields)) form.append(key, value);
            const headers = ctx.getRequestHeaders();
            delete headers['Content-Type'];
            const answer = await fetch(
                '/api/characters/create', { method: 'POST', headers, body: form });
            if (!answer.ok) throw new Error(`create: HTTP ${answer.status}`);
            return (await answer.text()).trim();
        }""",
        [name, greeting],
    )
    await open_character(page, avatar)
    return avatar


async def open_character(page: Page, avatar: str) -> None:
    """Select the character (ST opens its latest chat) and wait for the chat to be shown."""
    await page.evaluate(
        """async (avatar) => {
            const ctx = SillyTavern.getContext();
            await ctx.getCharacters();
            const id = ctx.characters.findIndex(c => c.avatar === avatar);
            if (id < 0) throw new Error(`no character ${avatar}`);
            await ctx.selectCharacterById(id);
        }""",
        avatar,
    )
    await page.wait_for_function(
        """(avatar) => {
            const ctx = SillyTavern.getContext();
            return ctx.characters[ctx.characterId]?.avatar === avatar && ctx.chat.length > 0
                && document.querySelectorAll('#chat .mes').length === ctx.chat.length;
        }""",
        arg=avatar,
        timeout=STEP_MS,
    )


async def send_message(page: Page, text: str) -> int:
    """Type ``text`` and press Send; returns the index of the reply once ST shows it and is
    done generating."""
    before: int = await page.evaluate("SillyTavern.getContext().chat.length")
    await page.locator("#send_textarea").fill(text, timeout=STEP_MS)
    await page.locator("#send_but").click(timeout=STEP_MS)
    await wait_reply(page, before + 1)
    return before + 1


async def wait_reply(page: Page, index: int) -> None:
    """Until message ``index`` is a shown character reply and ST is idle again."""
    await page.wait_for_function(
        """(i) => {
            const ctx = SillyTavern.getContext();
            const m = ctx.chat[i];
            const stop = document.getElementById('mes_stop');
            const generating = stop && getComputedStyle(stop).display !== 'none';
            return !!m && !m.is_user && !!m.mes && !generating
                && !!document.querySelector(`#chat .mes[mesid="${i}"]`);
        }""",
        arg=index,
        timeout=REPLY_MS,
    )


async def chat_markers(page: Page) -> list[str | None]:
    """The st-imagegen marker of each message in ST's memory (None for other messages)."""
    found: list[str | None] = await page.evaluate(
        "SillyTavern.getContext().chat.map(m => m?.extra?.st_imagegen_job ?? null)"
    )
    return found


async def slash(page: Page, command: str) -> Any:
    """Run a slash command through ST's own executor, the one its input box hands a typed
    ``/command`` to. Not by typing and clicking Send: a Send that lands while ST is still busy
    with the previous turn was seen to go out as a chat message (a real reply followed)."""
    await page.evaluate(
        "async (command) => { await SillyTavern.getContext()"
        ".executeSlashCommandsWithOptions(command, { handleParserErrors: true }); }",
        command,
    )
    return None


async def create_group(page: Page, name: str, members: list[str]) -> str:
    """A group of ``members`` (avatar file names) made through ST's group endpoint, every
    member replying in list order; opened after a reload (connect the chat API again after
    this). Returns the group id."""
    group_id: str = await page.evaluate(
        """async ([name, members]) => {
            const ctx = SillyTavern.getContext();
            const answer = await fetch('/api/groups/create', {
                method: 'POST', headers: ctx.getRequestHeaders(),
                body: JSON.stringify({
                    name, members, avatar_url: '', allow_self_responses: false,
                    activation_strategy: 1, generation_mode: 0, disabled_members: [],
                    chat_metadata: {}, fav: false,
                }),
            });
            if (!answer.ok) throw new Error(`group create: HTTP ${answer.status}`);
            return String((await answer.json()).id);
        }""",
        [name, members],
    )
    # ST reads its groups at startup: reload, then pick the group in the character list.
    await page.reload(timeout=LOAD_MS)
    await open_st(page, page.url)
    await page.wait_for_function(
        '(id) => !!document.querySelector(`.group_select[data-grid="${id}"]`)',
        arg=group_id,
        timeout=STEP_MS,
    )
    await page.evaluate(
        "(id) => window.jQuery(`.group_select[data-grid=\"${id}\"]`).first().trigger('click')",
        group_id,
    )
    await page.wait_for_function(
        """(id) => {
            const ctx = SillyTavern.getContext();
            return String(ctx.groupId) === id && ctx.chat.length > 0
                && document.querySelectorAll('#chat .mes').length === ctx.chat.length;
        }""",
        arg=group_id,
        timeout=STEP_MS,
    )
    return group_id
