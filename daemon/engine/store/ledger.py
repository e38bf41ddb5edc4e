"""The ``ledger`` table: every image message we committed, watched until a later version of
the chat written by someone else contains it (acknowledged) or it is retired."""

# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from daemon.engine.store.db import Database
from daemon.engine.store.model import (
    JobState,
    LedgerEntry,
    ReplyKey,
    marks,
    now_utc,
    parse_stamp,
    stamp,
    states_list,
    to_json,
)
from daemon.engine.store.reads import reply_from_row
from daemon.errors import StoreError


def _ledger_from_row(row: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        job_id=row["job_id"],
        reply=reply_from_row(row),
        message=json.loads(row["message"]),
        acknowledged=bool(row["acknowledged"]),
        retired=row["retired"],
        created_at=parse_stamp(row["created_at"]),
        updated_at=parse_stamp(row["updated_at"]),
    )


def entry_of(conn: sqlite3.Connection, job_id: str) -> LedgerEntry | None:
    """The job's ledger entry, if any (on a connection: see :class:`~.blocking.Blocking`)."""
    row = conn.execute("SELECT * FROM ledger WHERE job_id = ?", (job_id,)).fetchone()
    return _ledger_from_row(row) if row else None


def entries_of(conn: sqlite3.Connection, chat: str, open_only: bool) -> list[LedgerEntry]:
    """The chat's entries, oldest first; open = neither acknowledged nor retired."""
    clause = " AND acknowledged = 0 AND retired IS NULL" if open_only else ""
    rows = conn.execute(
        f"SELECT * FROM ledger WHERE chat = ?{clause} ORDER BY created_at, job_id", (chat,)
    ).fetchall()
    return [_ledger_from_row(r) for r in rows]


def watched_of(conn: sqlite3.Connection, chat: str) -> list[LedgerEntry]:
    """The chat's entries not retired, oldest first, when at least one of them is open;
    else none (one query: the common case, nothing waiting, reads no entry)."""
    rows = conn.execute(
        "SELECT * FROM ledger WHERE chat = ? AND retired IS NULL AND EXISTS "
        "(SELECT 1 FROM ledger WHERE chat = ? AND acknowledged = 0 AND retired IS NULL) "
        "ORDER BY created_at, job_id",
        (chat, chat),
    ).fetchall()
    return [_ledger_from_row(r) for r in rows]


def add_entry(
    conn: sqlite3.Connection,
    job_id: str,
    reply: ReplyKey,
    message: Mapping[str, Any],
    at: str,
) -> None:
    """Insert a ledger entry unless the job has one (the first stays). StoreError if no job
    has that id."""
    if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
        raise StoreError(f"cannot add job {job_id} to the commit ledger: no such job")
    conn.execute(
        "INSERT INTO ledger (job_id, user, chat, identity_name, identity_date, revision, "
        "message, acknowledged, retired, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, ?) ON CONFLICT (job_id) DO NOTHING",
        (
            job_id,
            reply.user,
            reply.chat,
            reply.name,
            reply.date,
            reply.revision,
            to_json(dict(message)),
            at,
            at,
        ),
    )


def set_entry(
    conn: sqlite3.Connection,
    job_id: str,
    assignment: str,
    args: tuple[Any, ...],
    unless: str,
    at: str,
) -> bool:
    """``UPDATE ledger SET <assignment>`` for the job unless ``unless`` fails; True if it did."""
    cur = conn.execute(
        f"UPDATE ledger SET {assignment}, updated_at = ? WHERE job_id = ? AND {unless}",
        (*args, at, job_id),
    )
    return cur.rowcount > 0


RETIRE = ("retired = ?", "retired IS NULL")
"""The assignment and guard of a retirement (its one argument: the reason)."""
ACKNOWLEDGE = ("acknowledged = 1", "acknowledged = 0")
"""The assignment and guard of an acknowledgement (no argument)."""


class Ledger(Database):
    """The commit ledger (for reconcile)."""

    async def ledger_add(
        self,
        *,
        job_id: str,
        reply: ReplyKey,
        message: Mapping[str, Any],
        now: datetime | None = None,
    ) -> None:
        """Remember a committed message; idempotent per ``job_id`` (the first entry stays).

        StoreError if no job has that id."""
        at = stamp(now or now_utc())
        await self._run(
            partial(add_entry, job_id=job_id, reply=reply, message=message, at=at), write=True
        )

    async def ledger_get(self, job_id: str) -> LedgerEntry | None:
        return await self._run(partial(entry_of, job_id=job_id), write=False)

    async def ledger_for_chat(self, chat: str, *, open_only: bool = True) -> list[LedgerEntry]:
        """The chat's entries, oldest first; open = neither acknowledged nor retired."""
        return await self._run(partial(entries_of, chat=chat, open_only=open_only), write=False)

    async def ledger_acknowledge(self, job_id: str, *, now: datetime | None = None) -> bool:
        """A version written by someone else contained the message; True if it changed."""
        return await self._ledger_set(job_id, ACKNOWLEDGE[0], (), ACKNOWLEDGE[1], now)

    async def ledger_retire(self, job_id: str, reason: str, *, now: datetime | None = None) -> bool:
        """Stop watching the message (deleted by the user, reply gone); True if it changed."""
        return await self._ledger_set(job_id, RETIRE[0], (reason,), RETIRE[1], now)

    async def ledger_set_message(
        self, job_id: str, message: Mapping[str, Any], *, now: datetime | None = None
    ) -> bool:
        """Replace the remembered message (more image swipes were added to it). It is open
        again until a save of someone else's holds the new version: a stale tab that saves the
        old one is repaired by reconcile, as a dropped message is."""
        return await self._ledger_set(
            job_id,
            "message = ?, acknowledged = 0",
            (to_json(dict(message)),),
            "retired IS NULL",
            now,
        )

    async def _ledger_set(
        self,
        job_id: str,
        assignment: str,
        args: tuple[Any, ...],
        unless: str,
        now: datetime | None,
    ) -> bool:
        at = stamp(now or now_utc())
        return await self._run(
            partial(
                set_entry, job_id=job_id, assignment=assignment, args=args, unless=unless, at=at
            ),
            write=True,
        )

    async def chats_with_open_ledger(self) -> set[str]:
        def _chats(conn: sqlite3.Connection) -> set[str]:
            return {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT chat FROM ledger WHERE acknowledged = 0 AND retired IS NULL"
                )
            }

        return await self._run(_chats, write=False)

    async def prune_finished(self, before: datetime, *, limit: int = 5000) -> int:
        """Delete finished jobs last changed before ``before`` (``limits.keep_history_days``):
        rejected, superseded and failed ones, and committed ones whose ledger entry is closed
        (ST saved the message; an open entry is still needed to repair a chat). Here, not in
        ``jobs.py``, because it reads the ledger to know which committed jobs may go. At most
        ``limit`` per call; returns how many went. The images committed into ST's folders are
        not the store's and are not touched."""
        finished = states_list((JobState.REJECTED, JobState.SUPERSEDED, JobState.FAILED))
        committed = JobState.COMMITTED.value
        cutoff = stamp(before)

        def _prune(conn: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM jobs WHERE updated_at < ? AND (state IN "
                    f"({marks(len(finished))}) OR (state = ? AND NOT EXISTS (SELECT 1 FROM "
                    "ledger WHERE ledger.job_id = jobs.id AND ledger.acknowledged = 0 AND "
                    "ledger.retired IS NULL))) LIMIT ?",
                    (cutoff, *finished, committed, limit),
                )
            ]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                conn.execute(f"DELETE FROM ledger WHERE job_id IN ({marks(len(chunk))})", chunk)
                conn.execute(f"DELETE FROM jobs WHERE id IN ({marks(len(chunk))})", chunk)
            return len(ids)

        return await self._run(_prune, write=True)
