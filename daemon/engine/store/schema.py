"""The schema and its migrations (the only place tables are defined), and opening a connection.

The schema is versioned with ``PRAGMA user_version``; migration N (1-based) brings it from N-1
to N in one transaction. Add a migration by appending to :data:`MIGRATIONS`; never edit one
that has shipped.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from daemon.engine.store.model import JobState
from daemon.errors import StoreError

BUSY_TIMEOUT_MS = 15_000
"""How long a statement waits for another process's write lock before failing."""


_STATES_SQL = ", ".join(f"'{s.value}'" for s in JobState)

MIGRATIONS: Sequence[str] = (
    # 1: the first schema
    f"""
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL,
        chat TEXT NOT NULL,
        character TEXT NOT NULL,
        is_group INTEGER NOT NULL,
        speaker TEXT NOT NULL,
        message_index INTEGER NOT NULL,
        identity_name TEXT NOT NULL,
        identity_date TEXT NOT NULL,
        revision TEXT NOT NULL,
        regen INTEGER NOT NULL DEFAULT 0,
        excerpt TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({_STATES_SQL})),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        prompt TEXT,
        images TEXT NOT NULL DEFAULT '[]',
        meta TEXT NOT NULL DEFAULT '{{}}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        next_attempt_at TEXT
    );
    CREATE INDEX jobs_state_due ON jobs (state, next_attempt_at);
    CREATE INDEX jobs_reply ON jobs (chat, identity_name, identity_date);
    CREATE INDEX jobs_updated ON jobs (updated_at);
    CREATE TABLE cursors (
        chat TEXT PRIMARY KEY,
        cursor TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{{}}',
        first_seen TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE ledger (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        user TEXT NOT NULL,
        chat TEXT NOT NULL,
        identity_name TEXT NOT NULL,
        identity_date TEXT NOT NULL,
        revision TEXT NOT NULL,
        message TEXT NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        retired TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX ledger_chat ON ledger (chat);
    CREATE TABLE our_writes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chat TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX our_writes_chat ON our_writes (chat, id);
    """,
    # 2: what each image call cost (kept when its job is gone: it was paid for)
    """
    CREATE TABLE spend (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        user TEXT NOT NULL,
        chat TEXT NOT NULL,
        usd REAL NOT NULL,
        images INTEGER NOT NULL,
        estimated INTEGER NOT NULL,
        units TEXT NOT NULL DEFAULT '{}',
        at TEXT NOT NULL
    );
    CREATE INDEX spend_at ON spend (at);
    CREATE INDEX spend_job ON spend (job_id);
    """,
    # 3: our writes known by the file renamed in (inode, size, mtime), not by a hash of it
    """
    ALTER TABLE our_writes ADD COLUMN inode INTEGER;
    ALTER TABLE our_writes ADD COLUMN size INTEGER;
    ALTER TABLE our_writes ADD COLUMN mtime_ns INTEGER;
    """,
)
"""Ordered schema migrations; migration N (1-based) brings ``user_version`` from N-1 to N."""


def damage_found(path: Path, findings: str | list[str]) -> str:
    """What is wrong, as one phrase: the database is damaged, with its first finding and how
    many more there are."""
    lines = [findings] if isinstance(findings, str) else findings
    rows = (row.strip() for text in lines for row in text.splitlines())
    found = [row for row in rows if row and not row.startswith("*** in database")]
    detail = found[0] if found else "malformed"
    if len(found) > 1:
        detail += f" and {len(found) - 1} more problem(s)"
    return f"the state database {str(path)!r} is damaged ({detail})"


def damaged_message(path: Path, findings: str | list[str]) -> str:
    """The one line a user sees for a damaged state database, with the way out."""
    return (
        f"{damage_found(path, findings)}; stop the daemon, move the file "
        f"aside with its -wal and -shm files and start again: only job history and "
        "pending jobs are lost, never chat data (README: Recovering the state database)"
    )


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(
            f"the state database {str(path)!r} stayed locked by another process for over "
            f"{BUSY_TIMEOUT_MS // 1000} s; try again"
        )
    if "not a database" in text or "malformed" in text:
        return StoreError(damaged_message(path, text))
    if "readonly" in text or "unable to open" in text:
        return StoreError(
            f"the state database {str(path)!r} cannot be written: {text} "
            "(check the state dir's permissions)"
        )
    return StoreError(f"state database {str(path)!r}: {text}")


def open_read_only(path: Path, timeout: float) -> sqlite3.Connection | None:
    """A read-only connection to the store at ``path`` when it is there and of this version;
    None otherwise (no file, another version: opening it for real creates or migrates it, or
    says it is too new; a file sqlite cannot open). Nothing is created or written."""
    if not path.is_file():
        return None
    try:
        # A file: URI by hand (Path.as_uri would load urllib): only these three are special.
        where = str(path.absolute()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        conn = sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=timeout)
    except sqlite3.Error:
        return None
    try:
        conn.row_factory = sqlite3.Row
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error:
        version = -1
    if version != len(MIGRATIONS):
        conn.close()
        return None
    return conn


def connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the state dir {str(path.parent)!r}: {exc.strerror}"
        ) from None
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(
            os.fspath(path),
            isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
            check_same_thread=False,  # used from worker threads, always under Store._lock
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(
                f"the state database {str(path)!r} cannot use WAL mode (got {mode!r}); "
                "is the state dir on a network file system?"
            )
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise store_error(path, exc) from exc
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the missing migrations, each in its own transaction with its version bump."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the state database {str(path)!r} has schema version {version}, newer than "
                    f"this st-imagegen knows ({len(MIGRATIONS)}); upgrade st-imagegen"
                )
            if version == len(MIGRATIONS):
                conn.rollback()
                return
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def _statements(script: str) -> list[str]:
    # executescript() would commit our transaction; split on statement ends instead.
    parts, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                parts.append(buf.strip())
            buf = ""
    if buf.strip():
        parts.append(buf.strip())
    return parts
