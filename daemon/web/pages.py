"""The HTML pages: the inbox (rendered by ``static/inbox.js`` from the jobs embedded in the page,
then kept live by the event stream) and the history (rendered here). Jinja2 autoescapes every
value; the embedded JSON has ``<`` escaped, so no chat text can close the script element."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from daemon.engine.front import HISTORY_STATES, INBOX_STATES, JobState, vocabulary
from daemon.web.api import ApiError, caller, job_json
from daemon.web.context import WebContext

__all__ = ["HISTORY_STATES", "INBOX_STATES", "routes"]

TEMPLATES = Path(__file__).parent / "templates"
INBOX_LIMIT = 500
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
    jobs = await ctx.engine.jobs(states=INBOX_STATES, users=who.handles, limit=INBOX_LIMIT)
    data = {
        "jobs": [job_json(j, ctx.config) for j in jobs],
        "sillytavern_url": ctx.config.web.sillytavern_url or None,
    }
    return _render(
        "inbox.html",
        page="inbox",
        version=ctx.version,
        data=_safe_json(data),
    )


def _chat_label(chat: str) -> str:
    parts = chat.split("/")
    stem = parts[-1].removesuffix(".jsonl")
    owner = parts[2] if len(parts) == 4 else "group"
    return f"{owner} · {stem}"


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
        jobs=[job_json(j, ctx.config) for j in jobs],
        chats=[(c, _chat_label(c)) for c in chats],
        states=[s.value for s in HISTORY_STATES],
        chat=chat,
        state=state,
        older=older,
        sillytavern_url=ctx.config.web.sillytavern_url or None,
    )


async def favicon(request: Request) -> Response:
    return RedirectResponse("/static/icon.svg", status_code=308)


def not_found_page(path: str) -> HTMLResponse:
    return _render("not_found.html", status=404, page="", version="", path=path)


def routes() -> list[Route]:
    return [
        Route("/", inbox, methods=["GET"]),
        Route("/history", history, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
    ]
