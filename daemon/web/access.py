"""Who a caller is: the admin (the daemon's token, or loopback on a single-user daemon) or a user
bound to one or more SillyTavern handles by a user token.

User tokens live in ``<state_dir>/web-users.json`` (mode 0600) as SHA-256 hashes only: the secret
is shown once, when it is made, and never again. A token is 32 random bytes, so a plain hash is
enough (nothing to brute-force). The file is read again whenever it changes, so a revoked token
stops working at once in a running daemon: :meth:`UserTokens.find` costs a stat per request
(the file is small and read only when it changed).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError

__all__ = [
    "ADMIN",
    "USERS_FILE",
    "Caller",
    "UserToken",
    "UserTokens",
]

USERS_FILE = "web-users.json"
TOKEN_PREFIX = "stu_"  # noqa: S105 - tells a user token from the admin's at a glance, no secret
_HANDLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ID = re.compile(r"^[0-9a-f]{8}$")


@dataclass(frozen=True)
class Caller:
    """The one who makes a request: ``handles`` None is the admin (sees everything)."""

    handles: frozenset[str] | None
    token_id: str  # "admin" or the user token's id: SSE streams are counted per token

    @property
    def admin(self) -> bool:
        return self.handles is None

    def sees(self, user: str) -> bool:
        """May this caller see and act on what belongs to ST handle ``user``?"""
        return self.handles is None or user in self.handles

    def visible_users(self, users: Iterable[str]) -> list[str]:
        return [u for u in users if self.sees(u)]


ADMIN = Caller(None, "admin")


@dataclass(frozen=True)
class UserToken:
    id: str
    handles: tuple[str, ...]
    label: str
    created: float
    digest: str  # sha256 hex of the token

    def to_json(self, *, with_digest: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "handles": list(self.handles),
            "label": self.label,
            "created": self.created,
        }
        if with_digest:
            data["sha256"] = self.digest
        return data


def check_handle(handle: str) -> str:
    if not _HANDLE.match(handle):
        raise ConfigError(f"{handle!r} is not a SillyTavern user handle")
    return handle


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class UserTokens:
    """The user tokens of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / USERS_FILE
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of what _tokens holds
        self._tokens: list[UserToken] = []

    # --- reading ---------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def _read(self) -> list[UserToken]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the user tokens file {str(self.path)!r} is unreadable: {exc}"
            ) from None
        found: list[UserToken] = []
        for item in raw.get("tokens", []) if isinstance(raw, dict) else []:
            try:
                found.append(
                    UserToken(
                        str(item["id"]),
                        tuple(str(h) for h in item["handles"]),
                        str(item.get("label", "")),
                        float(item.get("created", 0)),
                        str(item["sha256"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue  # a hand-edited entry that makes no sense grants nothing
        return found

    def tokens(self) -> list[UserToken]:
        """Every user token (fresh from the file when it changed)."""
        with self._lock:
            stamp = self._stamp()
            if stamp != self._seen:
                self._tokens = self._read() if stamp is not None else []
                self._seen = stamp
            return list(self._tokens)

    def changed(self) -> bool:
        """Has the file changed since it was last read (a stat)?"""
        return self._stamp() != self._seen

    def find(self, given: str) -> UserToken | None:
        """The user token ``given`` is, or None."""
        if not given.startswith(TOKEN_PREFIX):
            return None
        digest = _digest(given)
        match = None
        for token in self.tokens():
            if hmac.compare_digest(digest, token.digest):
                match = token
        return match

    # --- changing (the CLI, the admin's API) -----------------------------------------------

    def create(self, handles: Iterable[str], label: str = "") -> tuple[UserToken, str]:
        """A new token for ``handles``: (its record, the secret to hand over once)."""
        wanted = tuple(dict.fromkeys(check_handle(h) for h in handles))
        if not wanted:
            raise ConfigError("a user token needs at least one SillyTavern handle")
        if len(label) > 200 or any(ord(c) < 32 for c in label):
            raise ConfigError("the label is one line of at most 200 characters")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            current = self._read()
            known = {t.id for t in current}
            new_id = secrets.token_hex(4)
            while new_id in known:
                new_id = secrets.token_hex(4)
            record = UserToken(new_id, wanted, label, time.time(), _digest(secret))
            self._write([*current, record])
        return record, secret

    def revoke(self, token_id: str) -> UserToken | None:
        """Remove a token by id; the removed record, None when there is no such token."""
        with self._lock:
            current = self._read()
            keep = [t for t in current if t.id != token_id]
            if len(keep) == len(current):
                return None
            gone = next(t for t in current if t.id == token_id)
            self._write(keep)
        return gone

    def _write(self, tokens: list[UserToken]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"tokens": [t.to_json(with_digest=True) for t in tokens]}
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (json.dumps(data, indent=1) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            temp.replace(self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        self._seen = None  # read again next time


def is_token_id(text: str) -> bool:
    return bool(_ID.match(text))
