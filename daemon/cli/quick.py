"""``list``, ``show``, ``status`` and ``accept`` at the speed of a few SQLite queries.

A one-shot query used to pay for the whole engine at start-up (pydantic building the config,
anyio, structlog, the async store): about a second, for one ``SELECT``. Here, when the config is
exactly one already found valid (:func:`daemon.configure.locate.checked_view`: its stamp, with
the values a read-only command needs), the state database is opened read-only with
:mod:`sqlite3` and read with the store's own queries (:mod:`daemon.engine.store.reads`); the
output comes from the same functions as the full path's. Anything else (no stamp yet, the
config or the environment changed, no database, an older schema, a locked or damaged file)
returns ``None`` and the caller takes the full path, which also stamps the config.

``accept`` writes: it runs the engine's own accept step
(:func:`daemon.engine.jobs.accepting.accept_blocking`: one compare-and-set transaction, so of
two clients one wins) on a connection opened as the store opens its own, then wakes a running
daemon, which commits the images into the chat, as after the full path's accept.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.configure.view import ConfigView

__all__ = ["QUICK_COMMANDS", "overrides_of", "quick"]

BUSY_TIMEOUT_MS = 5000
"""How long a read waits for the daemon's write lock before giving up (then: the full path)."""


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's config overrides (as the full path passes them to the config)."""
    data_root = getattr(args, "data_root", None)
    return {"data_root": data_root} if data_root is not None else {}


def _connect(db: Path) -> sqlite3.Connection | None:
    from daemon.engine.store.schema import open_read_only

    return open_read_only(db, BUSY_TIMEOUT_MS / 1000)


def _root(data_root: Path | None) -> Path | None:
    """The resolved data root, or None where ``Engine.chat_title`` would have none."""
    from daemon.errors import StImagegenError
    from daemon.tavern import layout

    if data_root is None:
        return None
    with contextlib.suppress(StImagegenError, OSError):
        return layout.resolve_data_root(data_root)
    return None


def _titles(chats: set[str], data_root: Path | None) -> dict[str, str]:
    """What the user calls each chat (as ``Engine.chat_title``: a group chat by its group's
    name, read from the data root; the path's own parts when the data root is unusable)."""
    from daemon.tavern import layout

    # Only a group chat's title needs the data root: a character's is the path's own parts.
    needed = any(chat.split("/")[1:2] != [layout.CHATS_DIR] for chat in chats)
    root = _root(data_root) if needed else None
    return {chat: layout.chat_title(root, chat) for chat in chats}


def _list(args: argparse.Namespace, view: ConfigView, conn: sqlite3.Connection) -> int | None:
    from daemon.cli.jobview import print_jobs
    from daemon.engine.store.reads import select_jobs
    from daemon.jobstate import JobState

    states = [JobState(args.state)] if args.state else []
    jobs = select_jobs(conn, states=states, limit=max(1, args.limit))
    titles = {} if args.json else _titles({job.chat for job in jobs}, view.data_root)
    return print_jobs(jobs, args, titles)


def _show(args: argparse.Namespace, view: ConfigView, conn: sqlite3.Connection) -> int | None:
    from daemon.cli.jobview import print_job
    from daemon.engine.jobs.folders import find_folder
    from daemon.engine.store.reads import find_job

    job = find_job(conn, args.job)  # unknown, ambiguous: the same error as the full path's
    found = find_folder(view.state_dir, job.id)
    if args.json:
        return print_job(job, found, view.pending_dir, as_json=True)
    from datetime import UTC, datetime

    from daemon.engine.jobs.spendsum import summarize

    title = _titles({job.chat}, view.data_root)[job.chat]
    spend = summarize(
        conn,
        daily_budget=view.daily_budget,
        monthly_budget=view.monthly_budget,
        now=datetime.now(UTC),
    )
    return print_job(job, found, view.pending_dir, title=title, spend=spend.line())


def _status(args: argparse.Namespace, view: ConfigView, conn: sqlite3.Connection) -> int | None:
    from datetime import UTC, datetime

    from daemon.cli.statusview import write_status
    from daemon.engine.process.report import base_report, fill_from_store

    at = datetime.now(UTC)
    report = fill_from_store(conn, base_report(view), view, at)
    return write_status(report, args.json)


def _accept(args: argparse.Namespace, view: ConfigView) -> int | None:
    from daemon.cli.jobview import print_accepted
    from daemon.engine.jobs.accepting import accept_blocking, wait_for_commit
    from daemon.engine.process.heartbeat import daemon_status
    from daemon.engine.process.wake import notify_daemon
    from daemon.engine.store.moves import Direct
    from daemon.engine.store.schema import connect
    from daemon.errors import StImagegenError

    probe = _connect(view.db_path)  # there, and of this version (read-only: no migration)
    if probe is None:
        return None
    probe.close()
    try:
        conn = connect(view.db_path)
    except StImagegenError:
        return None  # the full path says what it is
    with contextlib.closing(conn):
        job, _ = accept_blocking(Direct(view.db_path, conn), view.state_dir, args.job, args.keep)
    notify_daemon(view.state_dir)
    running = daemon_status(view.heartbeat_path).running
    return print_accepted(job, running, lambda: wait_for_commit(view.db_path, job.id))


Reader = Callable[[argparse.Namespace, "ConfigView", sqlite3.Connection], "int | None"]

READERS: dict[str, Reader] = {"list": _list, "show": _show, "status": _status}
"""The read-only commands answered here when they can be, on a read-only connection."""

QUICK_COMMANDS = frozenset({*READERS, "accept"})
"""Every command answered here when it can be."""


def quick(args: argparse.Namespace) -> int | None:
    """Run a command of :data:`QUICK_COMMANDS` without the engine; ``None`` when this cannot
    (see above)."""
    from daemon.configure.locate import checked_view

    view = checked_view(args.config, os.environ, overrides_of(args))
    if view is None:
        return None
    if args.command == "accept":
        return _accept(args, view)
    conn = _connect(view.db_path)
    if conn is None:
        return None
    with contextlib.closing(conn):
        try:
            return READERS[args.command](args, view, conn)
        except sqlite3.Error:
            return None  # locked past the timeout, damaged: the full path says what it is
