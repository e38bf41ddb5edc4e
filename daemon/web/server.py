"""Run the inbox under uvicorn inside the daemon's task group, and tell ``web-url`` where it is.

The socket is bound here (so ``web.port = 0`` works and the address is known before the first
request); the address goes to ``<state_dir>/web.json`` (no token in it) while the inbox runs.
A port that cannot be bound is logged and the daemon goes on without its inbox: illustrating
chats matters more than the page. uvicorn's own signal handling is off (the daemon's drain
owns SIGTERM), and its access log too (a ``?token=`` link must never reach a log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog
import uvicorn
from anyio.abc import TaskStatus

from daemon.config import Config
from daemon.engine.front import Engine
from daemon.logs import register_secret
from daemon.tavern import layout
from daemon.web.access import UserTokens
from daemon.web.app import build_app, make_context
from daemon.web.context import WebContext
from daemon.web.gate import (
    Gate,
    connection_cap,
    limit_noisy_loggers,
    protocol_class,
)
from daemon.web.security import load_token, needs_token, token_required

__all__ = ["URL_FILE", "WebAddress", "bind_socket", "serve_web", "web_url"]

log = structlog.get_logger("st_imagegen.web")

URL_FILE = "web.json"
USERS_RECHECK = 10.0
SHUTDOWN_SECONDS = 2
"""How long open requests (event streams end at once) may take when the daemon stops."""


@dataclass(frozen=True)
class WebAddress:
    url: str  # ends with "/"
    host: str
    port: int
    token_required: bool


class _Server(uvicorn.Server):
    """uvicorn without its 10-a-second tick: its main loop wakes every 0.1 s to refresh the
    Date header and look at ``should_exit``, which keeps an idle daemon awake for nothing.
    Here there is no Date header and ``should_exit`` is an event the loop waits on."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit = anyio.Event()
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the (date-less) default headers, once
        await self._exit.wait()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon handles SIGTERM/SIGINT and stops us through should_exit


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket for ``host:port``; OSError when impossible."""
    infos = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.set_inheritable(False)
        return sock
    raise last or OSError(f"no address for {host!r}")


def _url_host(config: Config, bound: str) -> str:
    host = config.web.host.strip("[]")
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming the wildcard, not binding it
        host = config.web.hostnames[0] if config.web.hostnames else "127.0.0.1"
    elif host != "localhost" and ":" in bound and ":" in host:
        host = bound
    return f"[{host}]" if ":" in host else host


def _write_address(path: Path, address: WebAddress) -> None:
    data = {
        "url": address.url,
        "host": address.host,
        "port": address.port,
        "token_required": address.token_required,
        "pid": os.getpid(),
        "time": time.time(),
    }
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    temp.replace(path)


def read_address(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / URL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None


def web_url(config: Config) -> tuple[str, bool]:
    """The address to open (``?token=`` added when one is needed) and whether the daemon's
    inbox is up (its ``web.json`` exists and a daemon holds the state dir: a file left by a
    killed daemon is not believed); else the configured address."""
    from daemon.engine.front import daemon_running

    found = read_address(config.state_dir) if daemon_running(config.state_dir) else None
    if found is not None:
        url = str(found["url"])
    else:
        port = config.web.port or 8765
        url = f"http://{_url_host(config, '')}:{port}/"
    if needs_token(config.web, len(watched_users(config))):
        url += f"?token={load_token(config)}"
    return url, found is not None


def watched_users(config: Config, root: Path | None = None) -> list[str]:
    """The ST handles the daemon watches (blocking: lists the data root)."""
    if root is None:
        if config.data_root is None:
            return []
        try:
            root = layout.resolve_data_root(config.data_root)
        except Exception:  # a CLI helper: a broken root is reported by the commands
            return []
    return layout.list_users(root, config.detect.users)


class _HandleCount:
    """How many ST users are watched, looked up at most every :data:`USERS_RECHECK` seconds
    (a new ST account appears while the daemon runs: the loopback door closes then)."""

    def __init__(self, config: Config, root: Path) -> None:
        self.config = config
        self.root = root
        self.at = -math.inf
        self.count = 0

    def refresh(self) -> int:
        self.count = len(watched_users(self.config, self.root))
        self.at = time.monotonic()
        return self.count

    def open_door(self) -> bool:
        if time.monotonic() - self.at > USERS_RECHECK:
            self.refresh()  # a listdir of the data root: cheap, and rare
        return not needs_token(self.config.web, self.count)


def _quiet_uvicorn() -> None:
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    logging.getLogger("uvicorn.access").disabled = True


async def _prepare_access(config: Config, root: Path) -> tuple[str, UserTokens, _HandleCount, int]:
    """The admin's token, the user tokens and how many ST users are watched (said in the log
    when that makes loopback ask for a token)."""
    web = config.web
    # The admin's token always exists: loopback may need it as soon as a second ST user appears.
    token = await anyio.to_thread.run_sync(load_token, config)  # ConfigError: refuse
    register_secret(token)
    users = UserTokens(config.state_dir)
    await anyio.to_thread.run_sync(users.tokens)  # a broken file is said at start
    handles = _HandleCount(config, root)
    handle_count = await anyio.to_thread.run_sync(handles.refresh)
    if not token_required(web) and needs_token(web, handle_count):
        log.warning(
            "several SillyTavern users are watched: the inbox asks for a token even on "
            "loopback, so each sees only their own (`st-imagegen users token HANDLE` makes "
            "one; web.require_token = false shares one inbox for a household)",
            users=handle_count,
        )
    return token, users, handles, handle_count


async def serve_web(
    engine: Engine,
    *,
    draining: Callable[[], bool],
    stop_running: Callable[[str, str], bool] | None = None,
    ping_seconds: float = 15.0,
    task_status: TaskStatus[WebContext | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the inbox over ``engine`` until cancelled (then stop it within
    :data:`SHUTDOWN_SECONDS`); the daemon's ``Face``, composed by the ``run`` command."""
    config = engine.config
    root = await engine.root()
    web = config.web
    token, users, handles, handle_count = await _prepare_access(config, root)
    try:
        sock = bind_socket(web.host, web.port)
    except OSError as exc:
        log.error(
            "web inbox not started: cannot listen there; set web.port (or web.enabled = false)",
            host=web.host,
            port=web.port,
            error=exc.strerror or str(exc),
        )
        task_status.started(None)
        return
    ctx = make_context(config, root, engine)
    ctx.draining, ctx.ping_seconds = draining, ping_seconds
    await anyio.to_thread.run_sync(ctx.thumbs.sweep)
    _quiet_uvicorn()
    limit_noisy_loggers()
    gate = Gate(connection_cap(web.max_connections), web.header_timeout_seconds)
    ctx.gate = gate
    server = _Server(
        uvicorn.Config(
            build_app(ctx, token, users=users, open_door=handles.open_door),
            http=protocol_class(gate),
            timeout_keep_alive=int(max(1, web.header_timeout_seconds)),
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            date_header=False,
            ws="none",
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        )
    )
    bound_host, bound_port = sock.getsockname()[:2]
    address = WebAddress(
        f"http://{_url_host(config, bound_host)}:{bound_port}/",
        bound_host,
        bound_port,
        needs_token(web, handle_count),
    )
    ctx.url = address.url
    url_file = config.state_dir / URL_FILE
    remove_listener = engine.on_job_changed(ctx.hub.job_changed)

    def config_changed(state: dict[str, Any]) -> None:
        ctx.status_cache.clear()
        ctx.hub.publish("config", state)

    remove_config_listener = engine.on_config_changed(config_changed)

    async def _run() -> None:
        with anyio.CancelScope(shield=True):  # stopped through should_exit, never mid-request
            await server.serve(sockets=[sock])

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run)
            while not server.started:
                if server.should_exit:  # startup failed
                    break
                await anyio.sleep(0.01)
            if server.started:
                protocol = server.config.http_protocol_class

                def factory() -> asyncio.Protocol:
                    return protocol(  # type: ignore[call-arg]
                        config=server.config,
                        server_state=server.server_state,
                        app_state=server.lifespan.state,
                    )

                gate.serve(asyncio.get_running_loop(), sock, factory)
            await anyio.to_thread.run_sync(_write_address, url_file, address)
            log.info(
                "web inbox",
                url=address.url,
                token=address.token_required,
                max_connections=gate.cap,
            )
            task_status.started(ctx)
            try:
                await anyio.sleep_forever()
            finally:
                gate.close()
                remove_listener()
                remove_config_listener()
                ctx.hub.close()
                server.should_exit = True
    finally:
        with contextlib.suppress(OSError):
            url_file.unlink()
        sock.close()
