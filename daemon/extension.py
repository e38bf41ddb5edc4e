"""``st-imagegen extension install|uninstall``: the SillyTavern UI extension the package ships.

The extension's files (``extension/`` in the source tree, ``daemon/st_extension`` inside the
package) are copied into SillyTavern, where ST serves them as a third-party extension: per user
into ``data/<user>/extensions/st-imagegen/`` (ST 1.12+), or for every user into
``public/scripts/extensions/third-party/st-imagegen/`` of the ST install folder. A copy is made
in a temp folder beside the target and renamed into place, so ST never serves half a copy.
Only a folder whose ``manifest.json`` names st-imagegen is ever replaced or removed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO

from daemon import __version__
from daemon.config import Config
from daemon.errors import ExtensionError, NotADataRootError
from daemon.tavern.layout import list_users, resolve_data_root

__all__ = [
    "EXTENSION_NAME",
    "Install",
    "cmd_extension",
    "find_installs",
    "install",
    "shipped_files",
    "shipped_version",
    "uninstall",
]

EXTENSION_NAME = "st-imagegen"
"""The folder name in ST (also the extension's settings key and its id in ST's manager)."""

SHIPPED = ("manifest.json", "index.js", "style.css", "lib")
"""What is copied: the extension itself, not its tests or package.json."""

GLOBAL_PARTS = ("public", "scripts", "extensions", "third-party")

INSTALLED_FILE = Path("lib") / "installed.js"
"""Rewritten in the installed copy: the daemon's address, the extension's default for it."""


@dataclass(frozen=True)
class Install:
    """One installed copy: where, for whom (``None``: every user) and its version."""

    path: Path
    user: str | None
    version: str | None  # None: the manifest cannot be read

    @property
    def label(self) -> str:
        return f"user {self.user}" if self.user else "all users"


def source_dir() -> Path:
    """The extension's files inside the installed package (or the source tree)."""
    found = Path(str(resources.files("daemon") / "st_extension"))
    if not (found / "manifest.json").is_file():
        raise ExtensionError(
            f"the extension's files are missing from this installation ({str(found)!r}); "
            "reinstall st-imagegen"
        )
    return found


def shipped_files(source: Path | None = None) -> list[Path]:
    """The files an install copies, relative to the extension folder, sorted."""
    base = source or source_dir()
    out: list[Path] = []
    for name in SHIPPED:
        path = base / name
        if path.is_dir():
            out += [p.relative_to(base) for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.is_file():
            out.append(Path(name))
    return sorted(out)


def _manifest_version(folder: Path) -> str | None:
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def shipped_version(source: Path | None = None) -> str:
    version = _manifest_version(source or source_dir())
    if version is None:
        raise ExtensionError("the shipped extension has no readable manifest.json version")
    return version


def _is_ours(folder: Path) -> bool:
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("display_name") == EXTENSION_NAME


# --- where ----------------------------------------------------------------------------------


def data_root(config: Config) -> Path:
    if config.data_root is None:
        raise ExtensionError(
            "data_root is not set: give --data-root (the SillyTavern folder) or set it in "
            "the config"
        )
    try:
        return resolve_data_root(config.data_root)
    except NotADataRootError as exc:
        raise ExtensionError(str(exc)) from None


def install_folder(config: Config, given: Path | None) -> Path:
    """SillyTavern's install folder (the one with ``public/``): ``given``, else data_root or
    its parent when that is ``<install>/data``."""
    candidates = [given] if given is not None else []
    if given is None and config.data_root is not None:
        raw = Path(config.data_root).expanduser()
        candidates += [raw, raw.parent]
        try:
            root = resolve_data_root(raw)
            candidates += [root.parent]
        except NotADataRootError:
            pass
    for folder in candidates:
        if folder is not None and (folder.joinpath(*GLOBAL_PARTS[:3])).is_dir():
            return folder.resolve()
    where = str(given) if given is not None else "data_root's folder and its parent"
    raise ExtensionError(
        f"no SillyTavern install folder (with public/scripts/extensions/) at {where}; "
        "give it with --st-folder, or install per user (--user)"
    )


def user_target(root: Path, user: str) -> Path:
    if user not in list_users(root):
        known = ", ".join(list_users(root)) or "none"
        raise ExtensionError(f"no SillyTavern user {user!r} under {str(root)!r} (users: {known})")
    return root / user / "extensions" / EXTENSION_NAME


def global_target(st_folder: Path) -> Path:
    return st_folder.joinpath(*GLOBAL_PARTS) / EXTENSION_NAME


def targets(
    config: Config, user: str | None, all_users: bool, st_folder: Path | None
) -> list[tuple[Path, str | None]]:
    """Where to install: ``(folder, user or None)``. Neither flag: every watched user."""
    if all_users:
        return [(global_target(install_folder(config, st_folder)), None)]
    root = data_root(config)
    users = [user] if user else list_users(root, config.detect.users)
    if not users:
        raise ExtensionError(f"no SillyTavern user folders under {str(root)!r}")
    return [(user_target(root, u), u) for u in users]


def find_installs(config: Config) -> list[Install]:
    """Every copy of the extension SillyTavern would load (per user and global)."""
    found: list[Install] = []
    try:
        root = data_root(config)
    except ExtensionError:
        return found
    for user in list_users(root, config.detect.users):
        folder = root / user / "extensions" / EXTENSION_NAME
        if (folder / "manifest.json").is_file():
            found.append(Install(folder, user, _manifest_version(folder)))
    try:
        folder = global_target(install_folder(config, None))
    except ExtensionError:
        return found
    if (folder / "manifest.json").is_file():
        found.append(Install(folder, None, _manifest_version(folder)))
    return found


# --- doing ----------------------------------------------------------------------------------


def _owner_like(path: Path, like: Path) -> None:
    """As root, give ``path`` the owner of ``like`` (SillyTavern's files are usually not
    root's; ST must be able to update or delete its extension)."""
    if os.geteuid() != 0:
        return
    info = like.stat()
    for item in [path, *path.rglob("*")]:
        os.chown(item, info.st_uid, info.st_gid, follow_symlinks=False)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def installed_js(address: str, token: str = "") -> str:
    """``lib/installed.js`` of an installed copy: the daemon's address, and for a copy in one
    user's own ``data/<handle>/extensions/`` (which ST serves to that account only) that user's
    token. A copy for all users never holds one: it is served to anyone who can reach ST."""
    data: dict[str, str] = {"address": address}
    if token:
        data["token"] = token
    text = json.dumps(data, ensure_ascii=True)
    return (
        "// Written by `st-imagegen extension install`: the daemon's address at install time.\n"
        f"export const INSTALLED = Object.freeze({text});\n"
    )


INSTALL_LABEL = "extension install"
"""The label of the user tokens an install writes (a new install replaces the user's old one)."""


def install_token(config: Config, user: str) -> str:
    """A fresh user token for ``user``'s own install; the one an earlier install wrote for
    them is revoked (a copy replaced is a copy whose token nobody holds any more)."""
    from daemon.web.access import UserTokens

    tokens = UserTokens(config.state_dir)
    for old in tokens.tokens():
        if old.label == INSTALL_LABEL and old.handles == (user,):
            tokens.revoke(old.id)
    _, secret = tokens.create([user], INSTALL_LABEL)
    return secret


def daemon_address(config: Config) -> str:
    """The address the extension should call: the running daemon's, else the configured one
    (``web.port`` 0, any free port, falls back to the default port), without the token."""
    from daemon.web.server import web_url

    url, _running = web_url(config)
    return url.split("?", 1)[0].rstrip("/")


def install(
    target: Path, source: Path | None = None, address: str = "", token: str = ""
) -> str | None:
    """Copy the extension to ``target`` (replacing an earlier copy of ours); returns the
    version it replaced, or None for a fresh install. ``address``: the daemon's, written into
    the copy as the extension's default; ``token``: the user's (a per-user copy only)."""
    base = source or source_dir()
    files = shipped_files(base)
    previous: str | None = None
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not target.is_dir() or not _is_ours(target):
            raise ExtensionError(
                f"{str(target)!r} exists and is not st-imagegen's extension; move it away first"
            )
        if (target / ".git").exists():
            raise ExtensionError(
                f"{str(target)!r} is a git checkout (installed through SillyTavern?); update it "
                "there, or remove it and run this again"
            )
        previous = _manifest_version(target) or "unknown"
    owner = _nearest_existing(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{EXTENSION_NAME}.{secrets.token_hex(4)}")
    old = target.with_name(f".{EXTENSION_NAME}.old.{secrets.token_hex(4)}")
    try:
        for rel in files:
            (temp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base / rel, temp / rel)
        if address:
            (temp / INSTALLED_FILE).write_text(installed_js(address, token), encoding="utf-8")
        _owner_like(temp, owner)
        if previous is not None:
            target.rename(old)  # two renames: the folder is never half old, half new
        temp.rename(target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        if previous is not None and old.exists() and not target.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return previous


def uninstall(target: Path) -> bool:
    """Remove our copy at ``target``; False when there was none."""
    if not target.exists() and not target.is_symlink():
        return False
    if target.is_symlink() or not target.is_dir() or not _is_ours(target):
        raise ExtensionError(f"{str(target)!r} is not st-imagegen's extension; left alone")
    shutil.rmtree(target)
    return True


# --- the command ----------------------------------------------------------------------------


def _next_steps(config: Config, address: str, *, tokens_written: bool = False) -> Iterator[str]:
    web = config.web
    yield "Next:"
    yield "  1. Reload SillyTavern in the browser (F5)."
    yield (
        f"  2. The extension calls the daemon at {address} (Extensions, the stacked-blocks "
        "icon → st-imagegen → Daemon address; change it there if you reach the daemon "
        "another way)."
    )
    origins = ", ".join(web.allowed_origins) or "(none)"
    yield (
        f"  3. SillyTavern's own address must be in web.allowed_origins (now: {origins}); "
        "add it there if you open ST another way."
    )
    host = web.host.strip("[]")
    if tokens_written:
        yield (
            "  4. Each install holds its own user's token (that user sees only their own "
            "chats' images); `st-imagegen users list` shows them."
        )
    elif web.require_token or host not in ("127.0.0.1", "localhost", "::1"):
        yield (
            "  4. This daemon needs a token: run `st-imagegen web-url` and paste the part "
            "after `?token=` into Extensions → st-imagegen → Token."
        )
    if not web.enabled:
        yield "  web.enabled is false: the extension needs the daemon's web API; turn it on."


def _tokens_per_install(config: Config, user: str | None) -> bool:
    """Does each per-user copy get its user's token? When the daemon needs tokens and the
    install names its user, or when several users are watched (each tab its own)."""
    from daemon.web.security import needs_token, token_required
    from daemon.web.server import watched_users

    if not config.web.enabled:
        return False
    handles = len(watched_users(config))
    if user is not None:
        return needs_token(config.web, handles)
    return not token_required(config.web) and needs_token(config.web, handles)


def cmd_extension(
    config: Config,
    action: str,
    *,
    user: str | None = None,
    all_users: bool = False,
    st_folder: Path | None = None,
    out: TextIO | None = None,
) -> int:
    stream = sys.stdout if out is None else out
    where = targets(config, user, all_users, st_folder)
    if action == "install":
        version = shipped_version()
        address = daemon_address(config)
        per_user = _tokens_per_install(config, user)
        for target, who in where:
            token = install_token(config, who) if per_user and who else ""
            previous = install(target, address=address, token=token)
            label = f"user {who}" if who else "all users"
            change = "installed" if previous is None else f"updated from {previous}"
            print(f"{EXTENSION_NAME} {version} {change} for {label}: {target}", file=stream)
        for line in _next_steps(config, address, tokens_written=per_user and user is not None):
            print(line, file=stream)
        return 0
    if action == "uninstall":
        for target, who in where:
            label = f"user {who}" if who else "all users"
            if uninstall(target):
                print(f"removed for {label}: {target}", file=stream)
            else:
                print(f"not installed for {label} ({target})", file=stream)
        print("Reload SillyTavern (F5) to unload it.", file=stream)
        return 0
    raise ExtensionError(f"unknown action {action!r}: install or uninstall")


def version_matches(installs: Sequence[Install]) -> list[Install]:
    """The installs whose version is not the daemon's."""
    return [i for i in installs if i.version != __version__]
