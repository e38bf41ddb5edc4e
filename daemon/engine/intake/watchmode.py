"""Inotify or polling: which way the daemon learns of ST's saves, and why.

inotify reports only changes made through this kernel. On a folder another machine (or the
Windows side of WSL2 or Docker Desktop) writes to, ST's saves raise no event: 9p and drvfs
(``/mnt/c`` in WSL2), NFS, CIFS/SMB, FUSE mounts (Docker Desktop's file sharing, sshfs, rclone),
VirtualBox and virtiofs shares. :func:`choose` looks at the data root's file system type in
``/proc/self/mounts`` first, then (for any other type) confirms with a probe: a file written into
the data root must raise an event within :data:`PROBE_TIMEOUT`. ``detect.watch`` forces either.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "NO_INOTIFY_TYPES",
    "PROBE_TIMEOUT",
    "WatchChoice",
    "choose",
    "fs_type",
    "probe_events",
]

Mode = Literal["inotify", "poll"]

PROBE_TIMEOUT = 2.0
"""Seconds the probe file's event may take to arrive before events count as not delivered."""

MOUNTS = Path("/proc/self/mounts")

NO_INOTIFY_TYPES = frozenset(
    {
        "9p",  # WSL2's /mnt/c (older), Docker Desktop on Windows (WSL2 backend) bind mounts
        "drvfs",  # WSL's Windows drives
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuse",  # and every fuse.* subtype (below)
        "fakeowner",  # Docker Desktop on macOS (VirtioFS with ownership mapping)
        "grpcfuse",
        "virtiofs",
        "vboxsf",
        "prl_fs",
        "vmhgfs",
    }
)
"""File system types where writes from elsewhere raise no inotify event."""


@dataclass(frozen=True, slots=True)
class WatchChoice:
    mode: Mode
    why: str


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...)
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field) >= i + 4:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def fs_type(path: Path, mounts: Path = MOUNTS) -> tuple[str, str] | None:
    """``(type, mount point)`` of the mount holding ``path`` (the longest matching mount point),
    or ``None`` when the mount table cannot be read (not Linux)."""
    try:
        text = mounts.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point, kind = _unescape(parts[1]), parts[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best[1])):
            best = (kind, point)
    return best


def _no_inotify(kind: str) -> bool:
    return kind in NO_INOTIFY_TYPES or kind.startswith("fuse.")


def probe_events(folder: Path, timeout: float = PROBE_TIMEOUT) -> bool | None:
    """Write a probe file into ``folder`` and say whether inotify reported it within
    ``timeout``; ``None`` when the probe cannot be made (the folder is read-only)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    name = f".st-imagegen-probe-{uuid.uuid4().hex[:12]}"
    seen = threading.Event()

    class Probe(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if os.fsdecode(event.src_path).endswith(name):
                seen.set()

    observer = InotifyObserver()
    try:
        observer.schedule(Probe(), str(folder), recursive=False)
        observer.start()
    except OSError:
        return False  # no inotify at all (limit reached, not supported here)
    probe = folder / name
    try:
        try:
            probe.write_bytes(b"st-imagegen checks that file events arrive here\n")
        except OSError:
            return None
        return seen.wait(timeout)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
        observer.stop()
        observer.join(PROBE_TIMEOUT)


def choose(setting: str, root: Path, *, probe: bool = True, mounts: Path = MOUNTS) -> WatchChoice:
    """The watch mode for ``root`` under ``detect.watch`` = ``setting`` and the reason."""
    if setting == "inotify":
        return WatchChoice("inotify", "detect.watch = inotify")
    if setting == "poll":
        return WatchChoice("poll", "detect.watch = poll")
    found = fs_type(root, mounts)
    if found is not None and _no_inotify(found[0]):
        kind, point = found
        return WatchChoice(
            "poll",
            f"the data root is on {kind} ({point}), where saves made elsewhere raise no "
            "inotify event",
        )
    where = f"{found[0]} at {found[1]}" if found else "an unknown file system"
    if probe:
        arrived = probe_events(root)
        if arrived is False:
            return WatchChoice(
                "poll",
                f"a probe file written into the data root ({where}) raised no inotify event "
                f"within {PROBE_TIMEOUT:g} s",
            )
        if arrived is None:
            return WatchChoice("inotify", f"{where}; the data root is read-only: no probe")
        return WatchChoice("inotify", f"{where}; a probe file's event arrived")
    return WatchChoice("inotify", where)
