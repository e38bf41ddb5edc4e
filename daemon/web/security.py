"""Who may talk to the inbox: the token, the Host header (DNS rebinding), Origin (CSRF), CORS.

Rules (docs/http-api.md): a token is needed when the inbox is bound to a non-loopback address,
when ``web.require_token`` is set, or when the daemon watches several SillyTavern users (unless
``web.require_token = false`` says the household shares one inbox); it comes as
``Authorization: Bearer`` or as the HttpOnly, SameSite=Strict cookie that ``GET /?token=``
sets. The token names the caller (:mod:`daemon.web.access`): the admin's token sees everything,
a user token only its ST handles; the caller goes to the app in ``scope[CALLER]``.

A POST whose Origin is neither the inbox's own nor one of ``web.allowed_origins`` is refused;
POST bodies must be JSON (a foreign page then needs a CORS preflight, which only allowed
origins pass). The Host header must name the inbox:
an IP literal (a rebinding attack needs a DNS name), ``localhost``, ``web.host`` or one of
``web.hostnames``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from daemon.config import Config, WebSettings
from daemon.errors import ConfigError
from daemon.web.access import ADMIN, Caller, UserTokens

__all__ = [
    "CALLER",
    "COOKIE",
    "TOKEN_FILE",
    "Guard",
    "Rules",
    "is_loopback",
    "load_token",
    "token_required",
]

CALLER = "st_imagegen.caller"
COOKIE = "st_imagegen_token"
TOKEN_FILE = "web-token"  # noqa: S105 - a file name, not a secret
COOKIE_MAX_AGE = 400 * 86400  # browsers cap cookie lifetimes at 400 days
MAX_TOKEN_CHARS = 512

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_required(settings: WebSettings) -> bool:
    """A token is needed whoever watches what: not on loopback, or ``require_token = true``."""
    return settings.require_token is True or not is_loopback(settings.host)


def needs_token(settings: WebSettings, handles: int) -> bool:
    """Is a token needed with ``handles`` ST users watched? Several users need tokens even on
    loopback (each sees only their own) unless ``require_token = false`` says otherwise."""
    if token_required(settings):
        return True
    return settings.require_token is None and handles > 1


def load_token(config: Config, *, create: bool = True) -> str:
    """The inbox token: ``web.token_file``, else ``<state_dir>/web-token`` (made with mode
    0600 on first use when ``create``). ConfigError when it cannot be had."""
    path = config.web.token_file
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"web.token_file {str(path)!r} cannot be read: {exc.strerror or exc}"
            ) from None
        if not token:
            raise ConfigError(f"web.token_file {str(path)!r} is empty")
        if len(token) > MAX_TOKEN_CHARS:
            raise ConfigError(f"web.token_file {str(path)!r} holds more than a token")
        return token
    path = config.state_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"the web token {str(path)!r} cannot be read: {exc.strerror}") from None
    if not create:
        raise ConfigError(f"no web token yet ({str(path)!r}); `st-imagegen run` makes one")
    return _create_token(path)


def _create_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # never replaces a token another process made meanwhile
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        temp.unlink(missing_ok=True)
    return token


@dataclass(frozen=True)
class Rules:
    """What :class:`Guard` enforces, fixed at start."""

    token: str | None  # the admin's; None: no token needed, every caller is the admin
    hostnames: frozenset[str]  # lower case, without port or brackets
    allowed_origins: frozenset[str]
    users: UserTokens | None = None  # user tokens (None: only the admin's)
    open_door: Callable[[], bool] | None = None  # True: no token needed right now (loopback,
    # one user); None: ``token`` decides alone

    @classmethod
    def from_config(
        cls,
        config: Config,
        token: str | None,
        *,
        users: UserTokens | None = None,
        open_door: Callable[[], bool] | None = None,
    ) -> Rules:
        web = config.web
        names = {"localhost", web.host.strip("[]").lower(), *(h.lower() for h in web.hostnames)}
        origins = frozenset(o.rstrip("/").lower() for o in web.allowed_origins)
        return cls(token, frozenset(n for n in names if n), origins, users, open_door)

    @property
    def tokens_used(self) -> bool:
        return self.token is not None

    def caller(self, given: str | None, *, door: bool = True) -> Caller | None:
        """Who ``given`` (a token, or None) is; None: refused. ``door`` False: only a real
        token counts (a login link)."""
        if self.token is None:
            return ADMIN
        if given and len(given) <= MAX_TOKEN_CHARS:
            if hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode()):
                return ADMIN
            found = self.users.find(given) if self.users is not None else None
            if found is not None:
                return Caller(frozenset(found.handles), found.id)
        if door and self.open_door is not None and self.open_door():
            return ADMIN
        return None

    def host_ok(self, host: str) -> bool:
        name = _host_name(host)
        if not name or len(host) > 300:
            return False
        if name in self.hostnames:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def token_ok(self, given: str | None) -> bool:
        return self.caller(given) is not None


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        if name not in out:  # the first one counts
            out[name] = raw_value.decode("latin-1")
    return out


def _given_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:  # a broken cookie header is simply no token
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


async def _send_json(send: Send, status: int, code: str, message: str, extra: list[Any]) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]
"""On every answer: no sniffing, no token in a Referer, no framing, no inline or foreign code
(prompts and chat text are escaped; this is the second wall)."""

_LOGIN_PAGE = (
    "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
    "<title>st-imagegen: token needed</title><body style='font:16px system-ui;margin:2em'>"
    "<h1>This inbox needs its token</h1><p>Open the address that <code>st-imagegen web-url"
    "</code> prints on the machine running the daemon (it ends in <code>?token=…</code>).</p>"
)


class Guard:
    """ASGI middleware applying :class:`Rules` to every HTTP request before the app sees it."""

    def __init__(self, app: ASGIApp, rules: Rules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        method = scope["method"]
        path: str = scope.get("path", "")
        is_api = path.startswith("/api/")
        origin = headers.get("origin", "").rstrip("/").lower()
        cors = self._cors_headers(origin)
        if not self.rules.host_ok(headers.get("host", "")):
            await _send_json(
                send, 421, "misdirected", "this Host is not the inbox's (see web.hostnames)", []
            )
            return
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '').lower()}"
        if method == "OPTIONS":
            if not cors:
                await _send_json(send, 403, "forbidden_origin", "this origin may not call", [])
                return
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        if method not in ("GET", "HEAD", "POST"):
            await _send_json(send, 405, "method_not_allowed", f"{method} is not served", cors)
            return
        if method == "POST" and origin and origin != own and not cors:
            await _send_json(
                send, 403, "forbidden_origin", f"requests from {origin} are not allowed", []
            )
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if self.rules.token is not None and method == "GET" and not is_api and "token=" in query:
            await self._login(scope, send, query)
            return
        caller = self.rules.caller(_given_token(headers))
        if caller is not None:
            scope[CALLER] = caller
        elif not path.startswith("/static/"):
            if is_api:
                await _send_json(send, 401, "unauthorized", "a valid token is needed", cors)
            else:
                body = _LOGIN_PAGE.encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
            return
        extra = [*SECURITY_HEADERS, *cors]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        if not origin or origin not in self.rules.allowed_origins:
            return []
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", b"GET, POST"),
            (b"access-control-allow-headers", b"Authorization, Content-Type, Last-Event-ID"),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
        ]

    async def _login(self, scope: Scope, send: Send, query: str) -> None:
        """``?token=`` link: set the cookie and send the browser to the address without it."""
        pairs = parse_qsl(query, keep_blank_values=True)
        given = next((v for k, v in pairs if k == "token"), None)
        if not given or self.rules.caller(given, door=False) is None:
            await _send_json(send, 401, "unauthorized", "the token in this link is wrong", [])
            return
        rest = urlencode([(k, v) for k, v in pairs if k != "token"])
        target = (scope.get("path") or "/") + (f"?{rest}" if rest else "")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        cookie = f"{COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE}"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", target.encode("latin-1", "replace")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
