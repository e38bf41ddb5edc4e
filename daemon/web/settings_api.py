"""The settings API under ``/api/v1/settings`` (the admin only; the same token, Origin, Host and
JSON-body rules as the rest of the API). Every change goes through the one checked writer
(:mod:`daemon.configure.writer`) and is applied at once; secrets are accepted, never returned.
The web server's own protection (``web.*``), the state and data folders and the files the
daemon reads stay file-only."""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.config import Config
from daemon.configure.fields import settings_view
from daemon.configure.live import LiveConfig
from daemon.configure.writer import ConfigWriter, plan
from daemon.engine.front import SHIPPED_STYLES as SHIPPED
from daemon.engine.front import all_styles
from daemon.errors import ConfigError, ProviderError
from daemon.providers.presets import image_presets, text_presets
from daemon.providers.text import CardInfo, PromptInput, PromptWriter
from daemon.web.api import FULL_ERRNOS, ApiError, _ctx, caller
from daemon.web.bodies import PreviewBody, SettingsBody, SettingsCheckBody, parsed

__all__ = ["routes"]

SAMPLE_REPLY = (
    "*She pushes the heavy door open and steps into the rain-soaked alley, lantern raised.* "
    "Stay close. Whatever left those tracks is still out here."
)
SAMPLE_CARD = CardInfo(
    name="Mira",
    description="{{char}} is a lamplighter of the old harbour town who keeps {{user}} safe.",
    personality="wary, loyal, dry humour",
    scenario="A rainy night; strange tracks lead from the docks into the alleys.",
)
SAMPLE_CONTEXT = (
    ("You", "Did you hear that? Something moved behind the fish market."),
    ("Mira", "*She lifts her lantern.* Tracks. Fresh ones. Keep your voice down."),
)
SAMPLE_PERSONA = "A tall traveller in a long grey coat, hood up against the rain."
SAMPLE_APPEARANCE = "auburn braid, freckles, oilskin coat, brass lantern"


def _live(request: Request) -> LiveConfig:
    if not caller(request).admin:
        raise ApiError(403, "admin_only", "only the admin's token changes the settings")
    live = _ctx(request).live
    if live is None:
        raise ApiError(503, "no_config_file", "this daemon was started without a config file")
    return live


def _invalid(exc: ConfigError) -> ApiError:
    return ApiError(422, "invalid", str(exc), key=exc.key)


def _styles(config: Config) -> list[dict[str, Any]]:
    own = {k.strip().lower() for k in config.styles}
    return [
        {
            "name": name,
            "origin": "config" if name in own else "shipped",
            "overrides_shipped": name in own and name in SHIPPED,
            "prefix": style.prefix,
            "suffix": style.suffix,
            "negative": style.negative,
            "size": style.size,
            "model": style.model,
            "default": name == config.default_style.strip().lower(),
        }
        for name, style in sorted(all_styles(config).items())
    ]


def _view(live: LiveConfig) -> dict[str, Any]:
    from daemon.providers.registry import BACKENDS

    config = live.current
    return {
        **settings_view(
            config,
            live.source,
            backends=list(BACKENDS),
            styles=sorted(all_styles(config)),
        ),
        "state": live.state(),
        "styles": _styles(config),
        "presets": {
            "image": [p.as_dict() for p in image_presets()],
            "text": [p.as_dict() for p in text_presets()],
        },
    }


async def get_settings(request: Request) -> Response:
    live = _live(request)
    view = await anyio.to_thread.run_sync(_view, live)
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


async def save_settings(request: Request) -> Response:
    live = _live(request)
    body = await parsed(request, SettingsBody.parse)
    writer = ConfigWriter(live.source)
    try:
        change = await anyio.to_thread.run_sync(
            functools.partial(writer.apply, body.changes, secrets_given=body.secrets)
        )
    except ConfigError as exc:
        raise _invalid(exc) from None
    except OSError as exc:
        # Nothing was written (temp file and rename): the file in effect is the old one.
        if exc.errno in FULL_ERRNOS:
            where = live.source.path.parent
            raise ApiError(507, "disk_full", f"the disk is full: free space in {where}") from None
        message = f"the config file cannot be written: {exc.strerror}"
        raise ApiError(503, "not_written", message) from None
    # Applied now (the file watcher would too, a moment later): the next job uses it.
    live.adopt(change.config)
    view = await anyio.to_thread.run_sync(_view, live)
    return JSONResponse({"saved": list(change.changed), **view})


def _candidate(live: LiveConfig, body: SettingsBody) -> Config:
    """The config these unsaved changes would make (nothing written)."""
    return plan(live.source, body.changes, secrets_given=body.secrets)[3]


async def _section_candidate(request: Request) -> tuple[str, Config]:
    """``{"section": "image"|"text", "changes", "secrets"}``: the section and the config the
    form's unsaved values would make (422 naming the key when they are invalid)."""
    live = _live(request)
    body = await parsed(request, SettingsCheckBody.parse)
    try:
        config = await anyio.to_thread.run_sync(_candidate, live, body.settings)
    except ConfigError as exc:
        raise _invalid(exc) from None
    return body.section, config


async def test_settings(request: Request) -> Response:
    """The same checks as ``doctor`` for one section, on the form's unsaved values."""
    from daemon.apicheck import check_image_api, check_prompt_api

    section, config = await _section_candidate(request)
    if section == "image":
        result = await anyio.to_thread.run_sync(
            functools.partial(check_image_api, config, skip=False)
        )
    else:
        result = await anyio.to_thread.run_sync(check_prompt_api, config)
    return JSONResponse(
        {"status": result.status, "ok": result.ok, "detail": result.detail, "fix": result.fix}
    )


async def list_models(request: Request) -> Response:
    from daemon.providers.http import make_client
    from daemon.providers.models import ModelsError, image_models, text_models

    section, config = await _section_candidate(request)
    try:
        async with make_client() as client:
            if section == "image":
                models = await image_models(config.image, client)
            else:
                models = await text_models(config.text, client)
    except (ModelsError, ConfigError) as exc:
        raise ApiError(502, "no_models", str(exc)) from None
    return JSONResponse({"models": models})


ANSWER_MARK = "⟨the prompt writer's answer⟩"
"""Where the LLM's answer goes in the previewed image prompt."""


def sample_input(style: dict[str, str], reply: str) -> PromptInput:
    """The sample reply the preview runs through the real prompt writer: a card, two earlier
    messages, a persona and appearance tags, so every option the config sets (card on or off,
    how many earlier messages, the style) shows in what is sent."""
    return PromptInput(
        reply=reply,
        speaker=SAMPLE_CARD.name,
        card=SAMPLE_CARD,
        context=SAMPLE_CONTEXT,
        user="You",
        appearance=((SAMPLE_CARD.name, SAMPLE_APPEARANCE),),
        persona=SAMPLE_PERSONA,
        style_prefix=style.get("prefix", ""),
        style_suffix=style.get("suffix", ""),
        negative=style.get("negative", ""),
    )


def preview_of(writer: PromptWriter, item: PromptInput) -> dict[str, Any]:
    """What the prompt writer ``writer`` sends for ``item``, made by its own code: the LLM
    request's exact body, and the image prompt around the LLM's answer (or, for a template,
    the whole image prompt); ProviderError when nothing usable comes out."""
    if not writer.llm:
        written = writer.finish(writer.template_core(item), item)
        return {
            "llm": False,
            "prompt": written.prompt,
            "before": written.prompt,
            "after": "",
            "answer_mark": None,
            "answer_room": 0,
            "negative": written.negative,
            "request": None,
        }
    written = writer.finish(ANSWER_MARK, item)
    before, mark, after = written.prompt.partition(ANSWER_MARK)
    room = writer.max_prompt_chars - len(written.prompt) + len(ANSWER_MARK)
    return {
        "llm": True,
        "prompt": written.prompt,
        "before": before,
        "after": after if mark else "",
        "answer_mark": ANSWER_MARK,
        "answer_room": max(room, 0),  # an answer longer than this is cut at a word
        "negative": written.negative,
        "request": {"url": writer.url, "body": writer.request_body(item)},
    }


async def preview(request: Request) -> Response:
    """What a style sends for a sample reply, made by the engine's own prompt writer: the exact
    messages to the LLM and the image prompt around its answer, or (a template) the exact
    image prompt."""
    from daemon.engine.front import prompt_writer
    from daemon.providers.http import make_client

    live = _live(request)
    body = await parsed(request, PreviewBody.parse)
    fields = {"prefix": body.prefix, "suffix": body.suffix, "negative": body.negative}
    config = live.current
    item = sample_input(fields, body.reply or SAMPLE_REPLY)
    async with make_client() as client:  # never used: nothing is called
        writer = prompt_writer(config, client)  # the one jobs use for this config
        try:
            shown = preview_of(writer, item)
        except ProviderError as exc:
            raise ApiError(422, "empty_prompt", str(exc)) from None
    shown["sample"] = {
        "speaker": item.speaker,
        "reply": item.reply,
        "card": asdict(SAMPLE_CARD),
        "context": [list(pair) for pair in item.context],
        "persona": item.persona,
        "appearance": [list(pair) for pair in item.appearance],
    }
    return JSONResponse(shown, headers={"Cache-Control": "no-store"})


def routes() -> list[Route]:
    return [
        Route("/api/v1/settings", get_settings, methods=["GET"]),
        Route("/api/v1/settings", save_settings, methods=["POST"]),
        Route("/api/v1/settings/test", test_settings, methods=["POST"]),
        Route("/api/v1/settings/models", list_models, methods=["POST"]),
        Route("/api/v1/settings/preview", preview, methods=["POST"]),
    ]
