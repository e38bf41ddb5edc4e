"""Where a job's image folder is: ``pending/<id>/`` or one of the drop folders the user moves
it into (``accepted/``, ``rejected/``, ``regenerate/``). Read-only and light: the approval
folders (:mod:`daemon.engine.jobs.approval`) and the read-only ``show`` both find it here."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from daemon.errors import UnsafePathError

__all__ = [
    "DROP_FOLDER_NAMES",
    "check_id",
    "discard_images",
    "find_folder",
    "is_real_dir",
    "kept_images",
]

DROP_FOLDER_NAMES = ("accepted", "rejected", "regenerate")
"""The drop folders under the state dir, in the order a job's folder is looked for."""

IMAGE_NAME = re.compile(r"^image-(\d{1,4})\.([a-z0-9]{1,5})$")
"""An image's file name in a job's folder: ``image-<n>.<format>``."""


def check_id(job_id: str) -> str:
    """A job id safe to use as a folder name (no separators, no dot names, no controls)."""
    if (
        not job_id
        or len(job_id) > 64
        or job_id.startswith(".")
        or any(c in job_id for c in "/\\\x00")
        or not job_id.isprintable()
    ):
        raise UnsafePathError(f"not a job id: {job_id!r}")
    return job_id


def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def find_folder(state_dir: Path, job_id: str) -> Path | None:
    """The job's folder wherever it is now (pending first, then the drop folders), or None."""
    for name in ("pending", *DROP_FOLDER_NAMES):
        path = state_dir / name / check_id(job_id)
        if is_real_dir(path):
            return path
    return None


def kept_images(state_dir: Path, job_id: str) -> list[Path]:
    """The images still in the job's folder (wherever it is), in number order.

    Images the user deleted are not kept; symlinks and other files are never images."""
    folder = find_folder(state_dir, job_id)
    if folder is None:
        return []
    found: list[tuple[int, Path]] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = IMAGE_NAME.match(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    found.append((int(match.group(1)), Path(entry.path)))
    except FileNotFoundError:
        return []
    return [path for _, path in sorted(found)]


def discard_images(state_dir: Path, job_id: str, names: Iterable[str]) -> int:
    """Remove the named images (not kept on accept) from the job's folder; returns how many.

    Only regular image files directly in the folder are touched (never a symlink's target)."""
    folder = find_folder(state_dir, job_id)
    if folder is None:
        return 0
    removed = 0
    for name in names:
        if not IMAGE_NAME.match(name) or name != Path(name).name:
            continue
        path = folder / name
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed
