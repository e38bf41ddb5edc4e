"""Where the config file is, and the values of a config already found valid, without
building the config (pydantic is most of a one-shot command's start-up).

:func:`remember` stamps a config that validated (a digest of the file's bytes, the
``ST_IMAGEGEN_*`` environment, the command line's overrides and this version) into its state
dir, with its :class:`~daemon.configure.view.ConfigView`; :func:`checked_view` gives that view
back while the same stamp still matches, so a read-only command (``list``, ``show``,
``status``) can skip validation and still refuse exactly what the full config would refuse:
anything changed means a full load (and its error, if any).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.configure.view import ConfigView

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "checked_view",
    "config_file",
    "default_config_path",
    "default_state_dir",
    "remember",
    "scoped_env",
    "snapshot",
]

APP_NAME = "st-imagegen"
ENV_PREFIX = "ST_IMAGEGEN_"
CONFIG_ENV = "ST_IMAGEGEN_CONFIG"
STAMP_FILE = "config-checked"


def default_state_dir() -> Path:
    """The platform state dir (``~/.local/state/st-imagegen`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_state_dir(APP_NAME))


def default_config_path() -> Path:
    """The platform config file (``~/.config/st-imagegen/config.toml`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def _xdg_guess(env: Mapping[str, str], variable: str, fallback: str) -> Path | None:
    """What platformdirs answers on Linux for an XDG folder of ours (``$XDG_STATE_HOME`` or
    ``~/.local/state``, ...), without loading it (it costs a read-only command a third of its
    start-up); None elsewhere. Only a guess: :func:`checked_view` trusts a stamp found through
    it only when the stamped view names the same folder, else the full path decides."""
    if not sys.platform.startswith("linux"):
        return None
    named = Path(env.get(variable, "").strip())
    return (named if named.is_absolute() else Path(fallback).expanduser()) / APP_NAME


def config_file(
    path: Path | None, env: Mapping[str, str], *, guess: bool = False
) -> tuple[Path, bool]:
    """The config file to read and whether it was named (``--config`` or the environment);
    ``guess``: the platform's default file by :func:`_xdg_guess` where it can (a read-only
    command's stamp check: a wrong guess reads other bytes, which match no stamp)."""
    named = env.get(CONFIG_ENV)
    explicit = path is not None or bool(named)
    if path is not None or named:
        return (path or Path(str(named))), explicit
    found = _xdg_guess(env, "XDG_CONFIG_HOME", "~/.config") if guess else None
    return (found / "config.toml" if found else default_config_path()), explicit


def scoped_env(env: Mapping[str, str]) -> dict[str, str]:
    """The ``ST_IMAGEGEN_*`` variables that configure (the config file's own variable aside)."""
    scoped = {k: v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)}
    scoped.pop(CONFIG_ENV, None)
    return scoped


def _stamp(content: bytes, env: Mapping[str, str], overrides: Mapping[str, Any]) -> bytes:
    """A digest of everything a load depends on (never the values themselves: the file and the
    environment may hold API keys)."""
    # BLAKE2 straight from CPython's own module: hashlib would load OpenSSL at start-up.
    from _blake2 import blake2b

    from daemon import __version__

    digest = blake2b(__version__.encode(), digest_size=32)
    texts = [f"{key}={env[key]}" for key in sorted(env)]
    texts += [f"--{key}={overrides[key]}" for key in sorted(overrides)]
    for data in (content, *(text.encode(errors="surrogateescape") for text in texts)):
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest().encode() + b"\n"


def _state_dir_of(
    table: Mapping[str, object] | None, scoped: Mapping[str, str], env: Mapping[str, str]
) -> Path | None:
    if table is None:
        return None
    for key, value in scoped.items():  # the environment wins over the file
        if key.upper() == ENV_PREFIX + "STATE_DIR":
            return Path(value)
    named = table.get("state_dir")
    if named is None:
        return _xdg_guess(env, "XDG_STATE_HOME", "~/.local/state") or default_state_dir()
    return Path(named) if isinstance(named, str) else None


def _read(path: Path, explicit: bool) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None if explicit else b""  # no platform file: defaults and environment
    except OSError:
        return None


def checked_view(
    path: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> ConfigView | None:
    """The view of this config when :func:`remember` stamped exactly this config (file,
    environment, overrides, version); ``None`` otherwise (load it fully)."""
    file, explicit = config_file(path, env, guess=True)
    content = _read(file, explicit)
    if content is None:
        return None
    scoped = scoped_env(env)
    state_dir = _state_dir_of(_table(content, scoped), scoped, env)
    if state_dir is None:
        return None
    try:
        stamped = (state_dir / STAMP_FILE).read_bytes()
    except OSError:
        return None
    view = _view_of_stamp(stamped, _stamp(content, scoped, overrides))
    return view if view is not None and view.state_dir == state_dir else None


def _table(content: bytes, scoped: Mapping[str, str]) -> Mapping[str, object] | None:
    """The config file's top-level table as far as the stamp check needs it (the state dir):
    not parsed at all when it cannot name one (the environment names it, or the text has no
    ``state_dir``: then the platform's). A quoted key spelled with escapes is missed, which
    only means the stamp is looked for in the wrong place, not found, and the full path runs.
    None: not TOML (the full path says why)."""
    if not content or b"state_dir" not in content or ENV_PREFIX + "STATE_DIR" in scoped:
        return {}
    import tomllib

    try:
        return tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def _view_of_stamp(stamped: bytes, digest: bytes) -> ConfigView | None:
    """The view in a stamp file's bytes when they begin with ``digest``, else None."""
    from daemon.configure.view import ConfigView

    if not stamped.startswith(digest):
        return None
    try:
        return ConfigView.from_json(json.loads(stamped[len(digest) :]))
    except ValueError:  # an older stamp, a torn one: load fully (which writes it again)
        return None


def snapshot(
    path: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> tuple[Path, bool, bytes | None, bytes]:
    """What a full load is about to read: the file, whether named, its bytes and the stamp of
    those bytes with this environment and these overrides (taken before the load)."""
    file, explicit = config_file(path, env)
    content = _read(file, explicit)
    return file, explicit, content, _stamp(content or b"", scoped_env(env), overrides)


def remember(
    before: tuple[Path, bool, bytes | None, bytes],
    state_dir: Path,
    view: Callable[[], ConfigView],
) -> None:
    """Stamp the config of ``before`` (:func:`snapshot`), which just validated and names
    ``state_dir``, with its ``view()`` for :func:`checked_view`; only when the file did not
    change during the load, and only when that stamp is not there yet. Best effort: a state dir
    that cannot be written just means full loads every time."""
    file, explicit, content, stamp = before
    if content is None or _read(file, explicit) != content or not state_dir.is_dir():
        return
    target = state_dir / STAMP_FILE
    try:
        if _view_of_stamp(target.read_bytes(), stamp) is not None:
            return  # already stamped: no write for every command
    except OSError:
        pass
    wanted = stamp + json.dumps(view().to_json()).encode() + b"\n"  # in its own order
    temp = state_dir / f".{STAMP_FILE}.{os.getpid()}"
    try:
        temp.write_bytes(wanted)
        temp.replace(target)
    except OSError:
        temp.unlink(missing_ok=True)
