"""Where a job's image folder is: ``pending/<id>/`` or one of the drop folders the user moves
it into (``accepted/``, ``rejected/``, ``regenerate/``). Read-only and light: the approval
folders (:mod:`daemon.engine.jobs.approval`) and the read-only ``show`` both find it here."""

from __future__ import annotations

import stat
from pathlib import Path

from daemon.errors import UnsafePathError

__all__ = ["DROP_FOLDER_NAMES", "check_id", "find_folder", "is_real_dir"]

DROP_FOLDER_NAMES = ("accepted", "rejected", "regenerate")
"""The drop folders under the state dir, in the order a job's folder is looked for."""


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
