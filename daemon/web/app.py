"""The Starlette app: API routes, pages, static files, JSON errors, behind :class:`Guard`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from daemon.config import Config
from daemon.engine.front import Engine
from daemon.web import api, characters_api, pages, settings_api
from daemon.web.access import UserTokens
from daemon.web.context import WebContext
from daemon.web.events import EventHub
from daemon.web.security import ASGIApp, Guard, Message, Receive, Rules, Scope, Send
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
    return api.error_response(exc.status, exc.code, exc.message, exc.key)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/") or exc.status_code != 404:
        slug = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return api.error_response(exc.status_code, slug, str(exc.detail))
    return pages.not_found_page(request.url.path)


async def _gone(request: Request, exc: Exception) -> Response:
    """The client left while its body was read: nobody to answer, nothing to log."""
    return Response(status_code=400)


FULL_TEXT = ("database or disk is full", "no space left")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain(exc: BaseException, state_dir: Path) -> tuple[int, str, str]:
    """The answer for an error no route turned into one: ``(status, code, message)``. A full
    disk and text that cannot be stored are the caller's to know about, in words; the rest is
    a 500 (and a log line with its traceback)."""
    for cause in _causes(exc):
        full = isinstance(cause, OSError) and cause.errno in api.FULL_ERRNOS
        if full or any(text in str(cause).lower() for text in FULL_TEXT):
            where = state_dir
            name = getattr(cause, "filename", None)
            if isinstance(name, str) and not Path(name).is_relative_to(state_dir):
                return 507, "disk_full", f"the disk is full: free space for {name}"
            return 507, "state_dir_full", f"the state dir is full: free space in {where}"
        if isinstance(cause, UnicodeError):
            return (
                422,
                "unencodable",
                "the text holds characters that cannot be stored (a lone surrogate: half of an "
                "emoji?)",
            )
    return 500, "internal", "the daemon hit an internal error (see its log)"


class ErrorAnswers:
    """Every error a route did not answer becomes a JSON answer here, before Starlette's last
    handler (which would send it on to uvicorn's log as a traceback): a full disk is a 507, a
    text that cannot be stored a 422, the rest a 500 logged once with its traceback."""

    def __init__(self, app: ASGIApp, state_dir: Callable[[], Path]) -> None:
        self.app = app
        self.state_dir = state_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            status, code, message = explain(exc, self.state_dir())
            path = scope.get("path", "")
            if status == 500:
                log.error("web request failed", path=path, exc_info=exc)
            else:
                log.warning("web request refused", path=path, status=status, reason=message)
            if not started:
                await api.error_response(status, code, message)(scope, receive, send)


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
            *settings_api.routes(),
            *characters_api.routes(),
            *pages.routes(),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            api.ApiError: _api_error,
            HTTPException: _http_error,
            ClientDisconnect: _gone,
        },
        middleware=[Middleware(ErrorAnswers, state_dir=lambda: ctx.config.state_dir)],
    )
    app.state.ctx = ctx
    ctx.users = users
    return Guard(app, Rules.from_config(ctx.config, token, users=users, open_door=open_door))
