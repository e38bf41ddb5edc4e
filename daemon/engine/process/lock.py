"""One daemon per state dir: an exclusive ``flock`` on ``<state_dir>/daemon.lock``.

Two daemons on one state would pay the APIs twice and race each other's commits. The lock is held
for the process's life and released by the kernel on any exit (kill -9 included), so a stale lock
file never blocks a restart. CLI commands never take it: they work beside a running daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from daemon.errors import StImagegenError

__all__ = ["LOCK_NAME", "AlreadyRunningError", "daemon_running", "hold_state_lock"]

LOCK_NAME = "daemon.lock"


class AlreadyRunningError(StImagegenError):
    """Another daemon holds this state dir."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


@contextlib.contextmanager
def hold_state_lock(state_dir: Path) -> Iterator[Path]:
    """Hold the state dir's lock until the block ends; AlreadyRunningError when another has it."""
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            who = f"PID {pid}" if pid else "another process"
            raise AlreadyRunningError(
                f"another st-imagegen daemon ({who}) is already running on the state dir "
                f"{str(state_dir)!r}; stop it first (the CLI commands work beside it)"
            ) from None
        # The PID is for the message above only; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


def daemon_running(state_dir: Path) -> bool:
    """Whether a daemon holds ``state_dir``'s lock now (files it left after a kill -9 lie)."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False
