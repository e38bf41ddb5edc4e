"""What the state dir keeps, and for how long: a daily tick prunes what has served its time.

* finished job rows (rejected, superseded, failed; committed ones whose chat message ST has
  saved) untouched for ``limits.keep_history_days``;
* the shelf (``<state_dir>/.superseded/``: a superseded job's images, kept for a swipe back) after
  a week, and the trash (a rejected job's images, for Undo) after ``limits.trash_days``;
* thumbnails nobody has looked at for :data:`THUMB_DAYS` days.

The images committed into SillyTavern's folders are ST's and are never touched. Each tick logs
one line with what went and how large the state dir is.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from daemon.config import Config
from daemon.engine.jobs.approval import Approval
from daemon.engine.process.report import state_dir_size
from daemon.engine.store import Store

__all__ = ["THUMBS_DIR", "Pruned", "prune_state", "state_dir_size"]

log = structlog.get_logger("st_imagegen.retention")

THUMBS_DIR = "thumbs"
THUMB_DAYS = 30.0
"""Thumbnails unused this long go (a thumbnail is remade when it is asked for again)."""


@dataclass(frozen=True)
class Pruned:
    job_rows: int
    superseded_folders: int
    trash_folders: int
    thumbnails: int
    state_dir_bytes: int


def _prune_files(folder: Path, older_than: float) -> int:
    removed = 0
    cutoff = datetime.now(UTC).timestamp() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink()
                removed += 1
        except OSError:
            continue
    return removed


async def prune_state(
    config: Config, store: Store, approval: Approval, *, now: datetime | None = None
) -> Pruned:
    """One retention pass (the daily tick, and at start); logs one line."""
    at = now or datetime.now(UTC)
    keep = config.limits.keep_history_days
    rows = await store.prune_finished(at - timedelta(days=keep))

    def _files() -> tuple[int, int, int, int]:
        # One thread trip for all the file work: each trip wakes the event loop twice.
        shelf = approval.prune_shelf()
        trash = approval.prune_trash(older_than=config.limits.trash_days * 86400.0)
        thumbs = _prune_files(config.state_dir / THUMBS_DIR, THUMB_DAYS * 86400.0)
        return shelf, trash, thumbs, state_dir_size(config.state_dir)

    shelf, trash, thumbs, size = await anyio.to_thread.run_sync(_files)
    pruned = Pruned(rows, shelf, trash, thumbs, size)
    log.info("retention", keep_history_days=keep, **asdict(pruned))
    return pruned
