"""Waking a running daemon from another process (the CLI), through the watcher it already runs.

The CLI writes ``<state_dir>/wake/ping`` after it queued or changed a job; the daemon watches
that folder (inotify, no polling), wakes its runner and tells its web inbox what changed. Best
effort: with no daemon running nothing listens, and the daemon's rare safety-net poll and its
start-up read of the store catch up anyway.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["WAKE_DIR", "notify_daemon"]

WAKE_DIR = "wake"


def notify_daemon(state_dir: Path) -> None:
    """Tell a running daemon on ``state_dir`` that jobs changed (never raises)."""
    folder = state_dir / WAKE_DIR
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(folder / "ping", flags, 0o600)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
