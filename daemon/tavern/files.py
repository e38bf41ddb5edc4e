"""Opening a file of SillyTavern's tree for reading, with errors a user can act on."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from daemon.errors import TavernError, UnsafePathError

__all__ = ["open_regular", "real_path"]

_O_PATH = getattr(os, "O_PATH", 0)
_PROC_FD = "/proc/self/fd/"
_DELETED = " (deleted)"


def real_path(path: Path | str) -> str:
    """``os.path.realpath(path, strict=True)``: the file's real path, every symlink resolved;
    ``OSError`` (``FileNotFoundError`` for a missing one) when it cannot be resolved.

    Where Linux's ``/proc`` allows, the kernel resolves it: an ``O_PATH`` open and a readlink
    of the descriptor, three system calls instead of an ``lstat`` per path component (chat
    paths are ten components deep, and every chat edit resolves its chat and the data root).
    """
    if _O_PATH:
        fd = os.open(path, _O_PATH | os.O_CLOEXEC)
        try:
            found = os.readlink(f"{_PROC_FD}{fd}")  # noqa: PTH115 - str in, str out
        except OSError:
            found = ""  # no /proc here: resolved the portable way below
        finally:
            os.close(fd)
        if found.startswith("/") and not found.endswith(_DELETED):
            return found
    return os.path.realpath(path, strict=True)


def open_regular(
    path: Path, error: type[TavernError], what: str, kind: str, *, nofollow: bool = False
) -> tuple[int, os.stat_result]:
    """An open read-only descriptor of the regular file ``path`` and its ``fstat``.

    ``what`` names the file in messages ("chat", "card"); ``kind`` is what a folder is not
    ("a chat file"). Anything but a regular file raises ``error`` and leaves nothing open.
    ``nofollow``: ``path`` is an already resolved real path, so a symlink there now means the
    file was swapped since; refused (``O_NOFOLLOW`` where the platform has it).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        # O_NONBLOCK: opening a FIFO named like a chat or card must not hang the daemon.
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise error(f"{str(path)!r} is a directory, not {kind}") from None
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except PermissionError:
        raise error(f"{what} {str(path)!r} is not readable (permission denied)") from None
    except OSError as exc:
        if nofollow and exc.errno == errno.ELOOP:
            raise UnsafePathError(
                f"{what} {str(path)!r} was replaced by a symlink while being read; not followed"
            ) from None
        raise error(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{str(path)!r} is a directory, not {kind}")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{str(path)!r} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st
