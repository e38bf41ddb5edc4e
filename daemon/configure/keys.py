"""Which settings are secrets, which cannot change live, and how a secret is shown.

Secrets (API keys, basic-auth pairs) are written to their own files of mode 0600 and named in
the TOML by their ``*_file`` key; their values are never returned: only "set" / "not set" and
the last 4 characters.
"""

from __future__ import annotations

import os
import secrets as _secrets
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

__all__ = [
    "FILE_ONLY",
    "RESTART_KEYS",
    "SECRET_FILES",
    "key_file_path",
    "mask",
    "needs_restart",
    "remove_key_file",
    "write_key_file",
]

SECRET_FILES: Mapping[str, str] = {
    "text.api_key": "text.api_key_file",
    "image.api_key": "image.api_key_file",
    "image.api_auth": "image.api_auth_file",
}
"""Each secret and the key naming the file it is kept in."""

RESTART_KEYS = (
    "data_root",
    "state_dir",
    "web.enabled",
    "web.host",
    "web.port",
    "web.token_file",
    "web.require_token",
    "web.allowed_origins",
    "web.hostnames",
    "detect.users",
    "detect.watch",  # the watcher (inotify or stat poll) is chosen once, at start
    "log",
    "notify",  # the push sender is built at start with its addresses and quiet hours
)
"""Keys (or whole sections) a running daemon cannot take over: it keeps its value and says
"restart to apply" until it is restarted. Everything else applies to the next job."""

FILE_ONLY = (
    "data_root",
    "state_dir",
    "web",
    "log",
    "text.api_key_file",
    "image.api_key_file",
    "image.api_auth_file",
    "image.comfy_workflow",
    "image.allow_private_urls",
)
"""Keys the settings API never changes: the web server's own protection (its address, token,
origins, host names), where the daemon keeps its files, and which files it reads."""

KEY_DIR = "keys"


def needs_restart(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESTART_KEYS)


def file_only(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in FILE_ONLY)


def mask(value: SecretStr | str | None) -> dict[str, object]:
    """What an API or page may show of a secret: whether it is set, and its last 4 characters
    (only for keys long enough that 4 characters say nothing useful about the rest)."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    text = text.strip()
    return {"set": bool(text), "last4": text[-4:] if len(text) >= 16 else ""}


def key_file_path(config_file: Path, secret: str) -> Path:
    """``<config dir>/keys/<secret>`` (``image.api_key``): next to the file that names it."""
    return config_file.parent / KEY_DIR / secret


def write_key_file(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` with mode 0600 (a 0700 folder), through a temp file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{_secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, (value.strip() + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        temp.replace(path)
    except OSError:  # a full disk: no half-written temp file left behind
        temp.unlink(missing_ok=True)
        raise


def remove_key_file(path: Path) -> None:
    path.unlink(missing_ok=True)
