"""``st-imagegen doctor`` and ``st-imagegen healthcheck``: is this setup going to work?

Each check prints one line, PASS, FAIL or SKIP, in plain words, and on FAIL a second line that
says how to fix it. Permissions are tested by doing, not by ``os.access``: a temp file is created
and removed in every folder the daemon writes to, as the user doctor runs as (root passes
``os.access`` for everything). Chats themselves are only read, never touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from daemon.apicheck import (
    CheckResult,
    _fail,
    _pass,
    _skip,
    _warn,
    check_image_api,
    check_prompt_api,
)
from daemon.config import Config
from daemon.engine.front import HEARTBEAT_STALE_SECONDS, daemon_status, damage_found
from daemon.errors import (
    ConfigError,
    NotADataRootError,
)
from daemon.providers.pricing import price_per_image
from daemon.providers.registry import backend_info
from daemon.tavern.layout import (
    ChatRef,
    describe_data_root,
    iter_chats,
    list_users,
    resolve_data_root,
)

__all__ = [
    "HEARTBEAT_MAX_AGE_SECONDS",
    "INOTIFY_WATCHES_FILE",
    "CheckResult",
    "cmd_doctor",
    "cmd_healthcheck",
    "iter_checks",
    "run_checks",
]

INOTIFY_WATCHES_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
"""Linux's per-user limit on inotify watches; watchdog needs one per watched folder."""

HEARTBEAT_MAX_AGE_SECONDS = HEARTBEAT_STALE_SECONDS
"""A heartbeat older than this (three missed beats) means the main loop is stuck or gone."""

DROP_FOLDERS = 3
"""accepted/, rejected/ and regenerate/ are watched too (non-recursively)."""

_SAMPLE = 3  # failing paths named in a message

# --- file system -------------------------------------------------------------------------------


def _try_write(folder: Path) -> str | None:
    """Create and remove a temp file in ``folder``; ``None`` on success, else the reason."""
    probe = folder / f".st-imagegen-doctor.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    try:
        os.write(fd, b"x")
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _who() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _sample(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SAMPLE])
    return shown + (f" and {len(items) - _SAMPLE} more" if len(items) > _SAMPLE else "")


def check_config(config: Config) -> CheckResult:
    from daemon.engine.front import check_default_style

    if config.data_root is None:
        return _fail(
            "config",
            "parsed, but data_root is not set",
            'set data_root = "/path/to/SillyTavern" in config.toml or ST_IMAGEGEN_DATA_ROOT',
        )
    try:
        check_default_style(config)
    except ConfigError as exc:
        return _fail("config", str(exc), "set default_style to one of them, or add [styles.NAME]")
    return _pass(
        "config",
        f"parsed (mode {config.mode}, approval {config.approval}, text.{config.text.mode})",
    )


def check_data_root(config: Config) -> tuple[CheckResult, Path | None]:
    if config.data_root is None:
        return _skip("data root", "not set (see config)"), None
    try:
        root = resolve_data_root(config.data_root)
    except NotADataRootError as exc:
        return _fail(
            "data root",
            f"{config.data_root} is not a SillyTavern data root: {exc}",
            "point data_root at the SillyTavern folder, its data/ folder, or the folder that "
            "holds the user folders (default-user/ ...)",
        ), None
    except OSError as exc:
        return _fail(
            "data root",
            f"{config.data_root} cannot be read: {exc.strerror}",
            f"run st-imagegen as a user that can read {config.data_root}",
        ), None
    users = config.detect.users
    missing = [u for u in users if u not in list_users(root)]
    if missing:
        return _fail(
            "data root",
            f"{root}: detect.users names users that do not exist: {', '.join(missing)}",
            f"use the folder names of SillyTavern's users ({', '.join(list_users(root))}) "
            "or leave detect.users empty for all",
        ), None
    return _pass("data root", f"{root}: {describe_data_root(root, users)}"), root


def _chats(root: Path, config: Config) -> list[ChatRef]:
    return list(iter_chats(root, config.detect.users))


def _unlistable_folders(root: Path, users: Sequence[str]) -> list[str]:
    """Chat folders the daemon cannot list: their chats would be silently invisible."""
    bad: list[str] = []
    for user in list_users(root, users):
        folders = [root / user / "group chats"]
        chats_dir = root / user / "chats"
        try:
            with os.scandir(chats_dir) as it:
                folders += [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            pass
        except OSError as exc:
            bad.append(f"{chats_dir} ({exc.strerror})")
        for folder in folders:
            try:
                with os.scandir(folder):
                    pass
            except FileNotFoundError:
                pass
            except OSError as exc:
                bad.append(f"{folder} ({exc.strerror})")
    return bad


def check_chats_readable(root: Path, users: Sequence[str], chats: Sequence[ChatRef]) -> CheckResult:
    bad: list[str] = _unlistable_folders(root, users)
    for chat in chats:
        try:
            with chat.path.open("rb") as fh:
                fh.read(4096)
        except OSError as exc:
            bad.append(f"{chat.rel} ({exc.strerror or type(exc).__name__})")
    if bad:
        return _fail(
            "read chats",
            f"{len(bad)} chat(s) or chat folder(s) cannot be read as {_who()}: {_sample(bad)}",
            "run st-imagegen as the user that owns SillyTavern's files (systemd User=, "
            "Docker --user), or fix the files' permissions; a chat must be a regular file",
        )
    if not chats:
        return _pass("read chats", "no chats yet (new chats are picked up when they appear)")
    return _pass("read chats", f"all {len(chats)} chats can be read")


def check_chats_writable(chats: Sequence[ChatRef]) -> CheckResult:
    folders = sorted({chat.path.parent for chat in chats})
    bad = [f"{folder} ({why})" for folder in folders if (why := _try_write(folder)) is not None]
    if bad:
        return _fail(
            "write chats",
            f"cannot create files in {len(bad)} of {len(folders)} chat folders as {_who()}: "
            f"{_sample(bad)}",
            "the daemon replaces a chat by writing a temp file beside it: run it as the owner "
            "of SillyTavern's files; under systemd add the data root to ReadWritePaths=; in "
            "Docker mount the data volume read-write",
        )
    if not folders:
        return _pass("write chats", "no chat folders yet")
    return _pass("write chats", f"can write in all {len(folders)} chat folders")


def check_image_folders(root: Path, chats: Sequence[ChatRef]) -> CheckResult:
    users = sorted({chat.user for chat in chats})
    bad: list[str] = []
    for user in users:
        target = root / user / "user" / "images"
        existing = _nearest_existing(target)
        why = _try_write(existing)
        if why is not None:
            bad.append(f"{existing} ({why})")
    if bad:
        return _fail(
            "write images",
            f"cannot create image files as {_who()}: {_sample(bad)}",
            "images go to <data root>/<user>/user/images/<character>/: make that folder "
            "writable for the daemon's user (same fixes as for chats)",
        )
    if not users:
        return _skip("write images", "no users with chats yet")
    return _pass("write images", f"can write the image folders of {len(users)} user(s)")


def check_state_dir(config: Config) -> CheckResult:
    state = config.state_dir
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(
            "state dir",
            f"{state} cannot be created: {exc.strerror}",
            "set state_dir (ST_IMAGEGEN_STATE_DIR) to a folder the daemon's user can write",
        )
    why = _try_write(state)
    if why is not None:
        return _fail(
            "state dir",
            f"cannot write in {state} as {_who()}: {why}",
            f"make {state} writable for the daemon's user, or set state_dir elsewhere",
        )
    return _pass("state dir", f"{state} is writable")


def check_state_db(config: Config) -> CheckResult:
    """The state database opens read-only and ``PRAGMA quick_check`` finds nothing."""
    path = config.db_path
    if not path.exists():
        return _pass("state database", f"{path} does not exist yet (made at the first start)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        rows = [str(exc)]
    if rows == ["ok"]:
        return _pass("state database", f"{path} is sound (quick_check)")
    return _fail(
        "state database",
        damage_found(path, rows),
        f"stop the daemon, move {path.name} (and {path.name}-wal, {path.name}-shm) aside and "
        "start again; only job history and pending jobs are lost, never chat data (README: "
        "Recovering the state database)",
    )


def _walk_dirs(root: Path) -> Iterator[str]:
    for dirpath, _dirnames, _files in os.walk(root, followlinks=False):
        yield dirpath


def check_inotify(root: Path, watches_file: Path = INOTIFY_WATCHES_FILE) -> CheckResult:
    try:
        limit = int(watches_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return _skip("watch limit", f"{watches_file} not available (not Linux: no such limit)")
    needed = sum(1 for _ in _walk_dirs(root)) + DROP_FOLDERS
    # The limit is per user and shared with every other program that user runs.
    if needed > limit // 2:
        return _fail(
            "watch limit",
            f"{needed} folders to watch, but fs.inotify.max_user_watches is {limit}",
            f"raise it: echo fs.inotify.max_user_watches={max(needed * 4, 65536)} | sudo tee "
            "/etc/sysctl.d/60-st-imagegen.conf && sudo sysctl --system",
        )
    return _pass("watch limit", f"{needed} folders to watch, limit {limit}")


def check_watch(config: Config, root: Path) -> CheckResult:
    """inotify or polling for this data root, and why (the daemon decides the same way)."""
    from daemon.engine.front import watch_mode

    choice = watch_mode(config.detect.watch, root)
    if choice.mode == "inotify":
        return _pass("file watching", f"inotify ({choice.why})")
    return _pass(
        "file watching",
        f"polling: recently saved chats every 0.5 s, all every few seconds ({choice.why})",
    )


def check_spend(config: Config) -> CheckResult | None:
    """What one image costs, as the spend caps will count it; None when there is no cap and
    nothing to say. A cap that cannot count a paid model's price is a warning: it would let
    every job through."""
    limits = config.limits
    capped = limits.daily_budget is not None or limits.monthly_budget is not None
    try:
        price = price_per_image(config.image, config.image.model, config.prices)
    except ConfigError:
        return None  # check_image_api says so
    if price.source == "free":
        return _pass("spend", "images from this backend cost no money") if capped else None
    if not price.known:
        if not capped:
            return None
        model = config.image.model or "the default model"
        return _warn(
            "spend",
            f"no price is known for {model}: the budget cannot count what its images cost",
            f'add it under [prices] ("{config.image.model or "model"}" = USD per image)',
        )
    return _pass("spend", f"about {price.usd:.3f} USD per image ({price.source})")


def check_backend_config(config: Config) -> Iterator[CheckResult]:
    """The backend's own configuration (e.g. a workflow file), as the backend judges it."""
    try:
        info = backend_info(config.image.backend)
    except ConfigError:
        return  # check_image_api says so
    if info.config_checks is None:
        return
    for finding in info.config_checks(config.image, config.text.negative_prompt):
        if finding.level == "fail":
            yield _fail(finding.name, finding.detail, finding.fix)
        elif finding.level == "warn":
            yield _warn(finding.name, finding.detail, finding.fix)
        else:
            yield _pass(finding.name, finding.detail)


# --- the SillyTavern extension -----------------------------------------------------------------


def check_extension(config: Config) -> CheckResult:
    """Installed in SillyTavern, and the same version as this daemon? (Optional: it makes the
    open tab show images live; everything works without it.)"""
    from daemon import __version__
    from daemon.extension import find_installs, version_matches

    name = "ST extension"
    installs = find_installs(config)
    if not installs:
        return _skip(name, "not installed (optional; `st-imagegen extension install` adds it)")
    where = ", ".join(f"{i.label} ({i.version or 'unreadable'})" for i in installs)
    if stale := version_matches(installs):
        return _warn(
            name,
            f"{', '.join(i.label for i in stale)} has another version than the daemon "
            f"{__version__}: {where}",
            "st-imagegen extension install (then reload SillyTavern)",
        )
    return _pass(name, f"{__version__} installed for {where}")


# --- the commands ------------------------------------------------------------------------------


def iter_checks(
    config: Config, *, skip_image: bool = False, watches_file: Path = INOTIFY_WATCHES_FILE
) -> Iterator[CheckResult]:
    """Every check, in the order a user would fix things, each as soon as it is done."""
    yield check_config(config)
    root_result, root = check_data_root(config)
    yield root_result
    if root is None:
        for name in ("read chats", "write chats", "write images"):
            yield _skip(name, "needs a data root")
    else:
        chats = _chats(root, config)
        yield check_chats_readable(root, config.detect.users, chats)
        yield check_chats_writable(chats)
        yield check_image_folders(root, chats)
    yield check_state_dir(config)
    yield check_state_db(config)
    yield (
        _skip("watch limit", "needs a data root")
        if root is None
        else check_inotify(root, watches_file)
    )
    yield _skip("file watching", "needs a data root") if root is None else check_watch(config, root)
    yield check_prompt_api(config)
    yield from check_backend_config(config)
    yield check_image_api(config, skip=skip_image)
    if (spend := check_spend(config)) is not None:
        yield spend
    yield check_extension(config)


def run_checks(
    config: Config, *, skip_image: bool = False, watches_file: Path = INOTIFY_WATCHES_FILE
) -> list[CheckResult]:
    """Every check's result, in order."""
    return list(iter_checks(config, skip_image=skip_image, watches_file=watches_file))


def cmd_doctor(config: Config, skip_image: bool, *, out: TextIO | None = None) -> int:
    """Print every check as it finishes; exit code 0 only when none failed."""
    stream = sys.stdout if out is None else out
    failed: list[CheckResult] = []
    for result in iter_checks(config, skip_image=skip_image):
        print(result.render(), file=stream, flush=True)
        if not result.ok:
            failed.append(result)
    if failed:
        print(f"\n{len(failed)} check(s) failed.", file=stream)
        return 1
    print("\nAll checks passed.", file=stream)
    return 0


def cmd_healthcheck(config: Config, *, now: float | None = None, out: TextIO | None = None) -> int:
    """0 when the running daemon's heartbeat is fresh (Docker HEALTHCHECK), else 1; the same
    judgement as ``status``."""
    stream = sys.stdout if out is None else out
    status = daemon_status(config.heartbeat_path, now=now, stale_after=HEARTBEAT_MAX_AGE_SECONDS)
    print(f"{'healthy' if status.running else 'unhealthy'}: {status.detail}", file=stream)
    return 0 if status.running else 1
