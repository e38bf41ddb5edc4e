"""Is the daemon running? Its heartbeat file in the state dir says (rewritten, or only touched
when nothing else changed, every :data:`~daemon.engine.process.service.HEARTBEAT_INTERVAL`
seconds; removed on a clean stop): a
heartbeat older than :data:`HEARTBEAT_STALE_SECONDS` means it is gone. Read-only and light (the
command line's ``accept`` asks it too)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HEARTBEAT_STALE_SECONDS",
    "DaemonStatus",
    "daemon_status",
    "plain_age",
    "read_heartbeat",
]

HEARTBEAT_STALE_SECONDS = 60.0
"""A heartbeat older than this (three missed 20 s beats) means the daemon is not running."""


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What the heartbeat file says about the daemon."""

    running: bool
    detail: str  # one plain sentence
    pid: int | None = None
    age_seconds: float | None = None
    state: str | None = None  # "running" | "draining" | ...
    watching: int | None = None
    version: str | None = None
    pid_alive: bool | None = None  # None: unknown (no pid, or another pid namespace)
    config: dict[str, Any] | None = None  # the daemon's config state (problem, restart, setup)


def _pid_alive(pid: int) -> bool | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return None
    return True


def plain_age(seconds: float) -> str:
    """``"3 s"``, ``"4 min"``, ``"2 h"``, ``"5 days"``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def daemon_status(
    heartbeat: Path,
    *,
    now: float | None = None,
    stale_after: float = HEARTBEAT_STALE_SECONDS,
) -> DaemonStatus:
    """Judge the daemon by its heartbeat file: fresh means running.

    A fresh heartbeat whose pid does not exist on this machine is still "running" when the
    daemon may live in another pid namespace (a second container sharing the state volume);
    the detail says so."""
    record = read_heartbeat(heartbeat)
    if record is None:
        exists = heartbeat.exists()
        return DaemonStatus(
            False,
            "not running (heartbeat file unreadable)" if exists else "not running (no heartbeat)",
        )
    when = record.get("time")
    pid_value = record.get("pid")
    pid = pid_value if isinstance(pid_value, int) and pid_value > 0 else None
    state_value = record.get("state")
    state = state_value if isinstance(state_value, str) else None
    watching_value = record.get("watching")
    watching = watching_value if isinstance(watching_value, int) else None
    version_value = record.get("version")
    version = version_value if isinstance(version_value, str) else None
    config_value = record.get("config")
    config_state = config_value if isinstance(config_value, dict) else None
    if not isinstance(when, (int, float)) or isinstance(when, bool):
        return DaemonStatus(False, "not running (heartbeat without a time)", pid=pid)
    if record.get("touched") is True:  # a beat that changed nothing only touches the file
        with contextlib.suppress(OSError):
            when = max(float(when), heartbeat.stat().st_mtime)
    age = (time.time() if now is None else now) - float(when)
    alive = _pid_alive(pid) if pid is not None else None
    common: dict[str, Any] = {
        "pid": pid,
        "age_seconds": round(age, 3),
        "state": state,
        "watching": watching,
        "version": version,
        "pid_alive": alive,
        "config": config_state,
    }
    if age > stale_after:
        return DaemonStatus(False, f"not running (last heartbeat {plain_age(age)} ago)", **common)
    if alive is False and pid is not None:
        detail = (
            f"running elsewhere? heartbeat {plain_age(age)} ago from pid {pid}, "
            "which does not exist here (another container?)"
        )
        return DaemonStatus(True, detail, **common)
    parts = [f"pid {pid}" if pid is not None else "pid unknown"]
    parts.append(f"heartbeat {plain_age(age)} ago")
    if watching is not None:
        parts.append(f"watching {watching} chat{'s' if watching != 1 else ''}")
    label = "draining (stopping)" if state == "draining" else "running"
    return DaemonStatus(True, f"{label} ({', '.join(parts)})", **common)


def read_heartbeat(path: Path) -> dict[str, object] | None:
    """The last heartbeat record, or ``None`` when absent or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
