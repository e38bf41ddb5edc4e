"""The Starlette app: API routes, pages, static files, JSON errors, behind :class:`Guard`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from daemon.config import Config
from daemon.engine.front import Engine
from daemon.web import api, pages
from daemon.web.access import UserTokens
from daemon.web.context import WebContext
from daemon.web.events import EventHub
from daemon.web.security import ASGIApp, Guard, Rules
from daemon.web.thumbs import Thumbs

__all__ = ["build_app", "make_context"]

log = structlog.get_logger("st_imagegen.web")

STATIC = Path(__file__).parent / "static"


def make_context(config: Config, root: Path, engine: Engine) -> WebContext:
    """The routes' shared state; the caller attaches ``ctx.hub.job_changed`` to the engine."""
    from daemon import __version__

    hub = EventHub(lambda job: api.job_json(job, engine.config, root))
    thumbs = Thumbs(config.state_dir / "thumbs")
    return WebContext(root, engine, hub, thumbs, __version__)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, api.ApiError)
    return api.error_response(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/") or exc.status_code != 404:
        slug = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return api.error_response(exc.status_code, slug, str(exc.detail))
    return pages.not_found_page(request.url.path)


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("web request failed", path=request.url.path, exc_info=exc)
    return api.error_response(500, "internal", "the daemon hit an internal error (see its log)")


def build_app(
    ctx: WebContext,
    token: str | None,
    *,
    users: UserTokens | None = None,
    open_door: Callable[[], bool] | None = None,
) -> ASGIApp:
    """The whole inbox as one ASGI app; ``token`` None: no token needed (every caller is the
    admin); else the admin's token, ``users`` the user tokens and ``open_door`` whether a
    caller without a token is the admin right now."""
    app = Starlette(
        routes=[
            *api.routes(),
            *pages.routes(),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            api.ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _crash,
        },
    )
    app.state.ctx = ctx
    ctx.users = users
    return Guard(app, Rules.from_config(ctx.config, token, users=users, open_door=open_door))
