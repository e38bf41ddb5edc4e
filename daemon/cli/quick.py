"""``list`` at the speed of one SQLite query.

A one-shot query used to pay for the whole engine at start-up (pydantic building the config,
anyio, structlog, the async store): about a second, for one ``SELECT``. Here, when the config is
exactly one already found valid (:mod:`daemon.configure.locate`'s stamp), the state database is
opened read-only with :mod:`sqlite3` and read with the store's own queries
(:mod:`daemon.engine.store.reads`); the output is the same functions' as the full path's.
Anything else (no stamp yet, the config or the environment changed, no database, an older
schema) returns ``None`` and the caller takes the full path, which also stamps the config.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["overrides_of", "quick"]

BUSY_TIMEOUT_MS = 5000


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's config overrides (as the full path passes them to the config)."""
    data_root = getattr(args, "data_root", None)
    return {"data_root": data_root} if data_root is not None else {}


def _connect(db: Path) -> sqlite3.Connection | None:
    from daemon.engine.store.schema import MIGRATIONS

    if not db.is_file():
        return None
    try:
        # A file: URI by hand (Path.as_uri would load urllib): only these three are special.
        where = str(db.absolute()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        conn = sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error:
        return None
    if version != len(MIGRATIONS):  # the full path migrates it, or says it is too new
        conn.close()
        return None
    return conn


def _titles(chats: set[str], data_root: Path | None) -> dict[str, str]:
    """What the user calls each chat (as ``Engine.chat_title``: a group chat by its group's
    name, read from the data root; the path's own parts when the data root is unusable)."""
    from daemon.errors import StImagegenError
    from daemon.tavern import layout

    root: Path | None = None
    if data_root is not None and any(chat.split("/")[1:2] != [layout.CHATS_DIR] for chat in chats):
        with contextlib.suppress(StImagegenError, OSError):
            root = layout.resolve_data_root(data_root)
    return {chat: layout.chat_title(root, chat) for chat in chats}


def quick(args: argparse.Namespace) -> int | None:
    """Run ``list`` without the engine; ``None`` when this cannot (see above)."""
    from daemon.configure.locate import checked_paths

    found = checked_paths(args.config, os.environ, overrides_of(args))
    if found is None:
        return None
    state_dir, data_root = found
    conn = _connect(state_dir / "state.db")
    if conn is None:
        return None
    from daemon.cli.jobview import print_jobs
    from daemon.engine.store.reads import select_jobs
    from daemon.jobstate import JobState

    with contextlib.closing(conn):
        try:
            states = [JobState(args.state)] if args.state else []
            jobs = select_jobs(conn, states=states, limit=max(1, args.limit))
        except sqlite3.Error:
            return None  # locked past the timeout, damaged: the full path says what it is
    titles = {} if args.json else _titles({job.chat for job in jobs}, data_root)
    return print_jobs(jobs, args, titles)
