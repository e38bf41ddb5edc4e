"""The HTML pages: the inbox (rendered by ``static/inbox.js`` from the jobs embedded in the page,
then kept live by the event stream) and the history (rendered here). Jinja2 autoescapes every
value; the embedded JSON has ``<`` escaped, so no chat text can close the script element."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from daemon.engine.front import (
    CHOICE_STATES,
    HISTORY_STATES,
    INBOX_STATES,
    WORKING_STATES,
    JobState,
    vocabulary,
)
from daemon.errors import JobError
from daemon.tavern import layout
from daemon.web.access import Caller
from daemon.web.api import ApiError, caller, job_json
from daemon.web.context import WebContext

__all__ = ["HISTORY_STATES", "INBOX_STATES", "routes"]

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
INBOX_PAGE = 48
"""Cards in the first paint; "Show more" fetches the next page (the count says what is left)."""
STRIP_LIMIT = 200
HISTORY_PAGE = 60

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def _safe_json(value: Any) -> str:
    """JSON for a ``<script type="application/json">``: nothing in it can end the element."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    # Every page carries the job vocabulary (GET /api/v1/meta) for its scripts.
    html = _env.get_template(name).render(meta=_safe_json(vocabulary()), **values)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


async def inbox(request: Request) -> Response:
    ctx = _ctx(request)
    who = caller(request)
    if who.admin and ctx.live is not None and ctx.live.setup_needed:
        # Nothing can be drawn yet: the first screen is the setup, not an empty inbox.
        return RedirectResponse("/setup", status_code=303)
    query = request.query_params
    chat = query.get("chat") or None
    character = query.get("character") or None
    # Read before the jobs: the page's stream replays every change after it, so nothing that
    # happens between these reads and the page's subscription is lost.
    events_after = ctx.hub.seq
    choice = await ctx.engine.jobs(
        states=CHOICE_STATES, chat=chat, character=character, users=who.handles, limit=INBOX_PAGE
    )
    working = await ctx.engine.jobs(
        states=WORKING_STATES,
        chat=chat,
        character=character,
        users=who.handles,
        limit=STRIP_LIMIT,
    )
    per_chat = await ctx.engine.chat_counts(CHOICE_STATES, users=who.handles)
    total = sum(
        n
        for c, n in per_chat.items()
        if (chat is None or c == chat) and (character is None or _character_of(c) == character)
    )
    chats = await _chat_choices(ctx, per_chat, chat, who)
    data = {
        "jobs": [job_json(j, ctx.config, ctx.root) for j in (*choice, *working)],
        "total": total,
        "more": choice[-1].id if len(choice) == INBOX_PAGE else None,
        "page": INBOX_PAGE,
        "events_after": events_after,
        "filter": {"chat": chat, "character": character},
        "sillytavern_url": ctx.config.web.sillytavern_url or None,
    }
    characters = sorted({str(c["character"]) for c in chats if c["character"]})
    return _render(
        "inbox.html",
        page="inbox",
        version=ctx.version,
        data=_safe_json(data),
        chats=chats,
        characters=characters,
        chat=chat or "",
        character=character or "",
    )


def _character_of(chat: str) -> str:
    """The card stem of a character chat (``user/chats/<stem>/<file>``); "" for groups."""
    parts = chat.split("/")
    return parts[2] if len(parts) == 4 and parts[1] == "chats" else ""


async def _chat_choices(
    ctx: WebContext, per_chat: dict[str, int], chosen: str | None, who: Caller
) -> list[dict[str, Any]]:
    """The chat filter's options: every chat with jobs, named as the user knows it."""
    every = await ctx.engine.known_chats() | set(per_chat) | ({chosen} if chosen else set())
    known = {c for c in every if who.sees(c.split("/", 1)[0])}
    out = [
        {
            "chat": chat,
            "name": chat_label(ctx.root, chat),
            "character": _character_of(chat),
            "waiting": per_chat.get(chat, 0),
        }
        for chat in known
    ]
    out.sort(key=lambda c: (not per_chat.get(str(c["chat"])), str(c["name"]).lower()))
    return out


def chat_label(root: Path, chat: str) -> str:
    """``Bob · chat file`` for a character chat, the group's own name for a group chat."""
    return layout.chat_title(root, chat)


async def history(request: Request) -> Response:
    ctx = _ctx(request)
    query = request.query_params
    state = query.get("state", "")
    if state and state not in {s.value for s in HISTORY_STATES}:
        raise ApiError(422, "invalid", f"no history state {state!r}")
    chat = query.get("chat", "")
    before = query.get("before", "")
    if before and (not before.isalnum() or len(before) > 26):
        raise ApiError(400, "bad_id", "before must be a job id")
    states = [JobState(state)] if state else list(HISTORY_STATES)
    who = caller(request)
    one = query.get("job", "")
    if one:
        try:
            found = await ctx.engine.job(one, users=who.handles) if one.isalnum() else None
        except JobError:
            found = None
        jobs = [found] if found is not None and len(one) <= 26 else []
    else:
        jobs = await ctx.engine.jobs(
            states=states,
            chat=chat or None,
            users=who.handles,
            before=before or None,
            limit=HISTORY_PAGE,
        )
    known = await ctx.engine.known_chats() | ({chat} if chat else set())
    chats = sorted(c for c in known if who.sees(c.split("/", 1)[0]))
    older = jobs[-1].id if len(jobs) == HISTORY_PAGE else None
    return _render(
        "history.html",
        page="history",
        version=ctx.version,
        jobs=[job_json(j, ctx.config, ctx.root) for j in jobs],
        chats=[(c, chat_label(ctx.root, c)) for c in chats],
        states=[s.value for s in HISTORY_STATES],
        chat=chat,
        state=state,
        older=older,
        sillytavern_url=ctx.config.web.sillytavern_url or None,
    )


async def job_page(request: Request) -> Response:
    """Where one job is shown: its card in the inbox while open, else its History row."""
    ctx = _ctx(request)
    ref = request.path_params["job_id"]
    if not isinstance(ref, str) or not ref.isalnum() or len(ref) > 26:
        raise ApiError(400, "bad_id", "not a job id")
    try:
        job = await ctx.engine.job(ref, users=caller(request).handles)
    except JobError:
        return not_found_page(request.url.path)
    if job.state in INBOX_STATES:
        return RedirectResponse(f"/#job-{job.id}", status_code=303)
    return RedirectResponse(f"/history?job={job.id}#job-{job.id}", status_code=303)


async def service_worker(request: Request) -> Response:
    """The service worker, served from the root so it may act for every page (notifications)."""
    return FileResponse(
        STATIC / "sw.js",
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
    )


async def favicon(request: Request) -> Response:
    return RedirectResponse("/static/icon.svg", status_code=308)


def not_found_page(path: str) -> HTMLResponse:
    return _render("not_found.html", status=404, page="", version="", path=path)


async def setup(request: Request) -> Response:
    ctx = _ctx(request)
    return _render("setup.html", page="setup", version=ctx.version)


async def settings(request: Request) -> Response:
    ctx = _ctx(request)
    return _render("settings.html", page="settings", version=ctx.version)


def routes() -> list[Route]:
    return [
        Route("/", inbox, methods=["GET"]),
        Route("/setup", setup, methods=["GET"]),
        Route("/settings", settings, methods=["GET"]),
        Route("/history", history, methods=["GET"]),
        Route("/jobs/{job_id}", job_page, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/sw.js", service_worker, methods=["GET"]),
    ]
