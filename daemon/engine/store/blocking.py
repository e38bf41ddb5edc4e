"""The store's calls for code already in a worker thread: a step that also reads and writes
files makes its store calls there too, in one thread trip, instead of one trip per call.

Each method is one read or one transaction on the store's connection, under its lock, with
the same rules as the async methods (the conn-level functions are theirs). Never call these
on the event loop: they block. A job change made here is announced by the caller, back on the
loop (:meth:`Jobs.announce`), as listeners expect.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from daemon.engine.store.db import Database
from daemon.engine.store.ledger import (
    ACKNOWLEDGE,
    RETIRE,
    add_entry,
    entry_of,
    set_entry,
    watched_of,
)
from daemon.engine.store.model import Job, JobState, LedgerEntry, States, now_utc, stamp
from daemon.engine.store.moves import job_move
from daemon.engine.store.reads import find_job
from daemon.engine.store.writes import our_hashed_write_in, our_write_in, record_write_in

if TYPE_CHECKING:
    from daemon.tavern.write import FileVersion

__all__ = ["Blocking"]


class _Taken(Exception):
    """The job's ledger entry holds another message: nothing is recorded (rolled back)."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__("the ledger holds another message for this job")
        self.message = message


class Blocking:
    """The store's calls for a worker thread (see the module's docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def job(self, job_id: str) -> Job:
        """By exact id (JobError when unknown)."""
        return self._db.call_blocking(partial(find_job, job_id_or_prefix=job_id), write=False)

    def message_index(self, job_id: str) -> int | None:
        """The job's ``message_index`` (where its reply was), or None for no such job."""

        def _index(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT message_index FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return int(row[0]) if row is not None else None

        return self._db.call_blocking(_index, write=False)

    def entry(self, job_id: str) -> LedgerEntry | None:
        return self._db.call_blocking(partial(entry_of, job_id=job_id), write=False)

    def add_entry(self, job: Job, message: Mapping[str, Any]) -> None:
        """:meth:`Ledger.ledger_add` for ``job`` (unless it has an entry), from a thread."""
        at = stamp(now_utc())
        self._db.call_blocking(
            partial(add_entry, job_id=job.id, reply=job.reply, message=message, at=at), write=True
        )

    def intend(
        self,
        job: Job,
        message: Mapping[str, Any],
        version: FileVersion,
        *,
        now: datetime | None = None,
        durable: bool = True,
    ) -> dict[str, Any] | None:
        """Right before the rename that inserts ``message`` into ``job``'s chat: the job's
        ledger entry (unless it has one) and ``version`` as our write of that chat, in one
        durable transaction, so a crash on either side of the rename is finished by the next
        run (the entry says what to insert; the version says the new file is ours).

        Returns None when recorded. When the entry already holds another message (the first
        recorded wins: another run of the job got there first), nothing is recorded and that
        message is returned: the caller must not rename, and writes that one instead.

        ``durable=False`` when the new file carries our mark (it says "ours" by itself, on
        disk with its bytes): a power cut that loses the entry leaves the job accepted, and
        the next run finds our marker in the chat and rebuilds the entry from it."""
        at = stamp(now or now_utc())

        def _intend(conn: sqlite3.Connection) -> None:
            add_entry(conn, job.id, job.reply, message, at)
            entry = entry_of(conn, job.id)
            if entry is not None and entry.message != message:
                raise _Taken(entry.message)
            record_write_in(conn, job.chat, version, at)

        try:
            self._db.call_blocking(_intend, write=True, durable=durable)
        except _Taken as taken:
            return taken.message
        return None

    def record_write(
        self,
        chat: str,
        version: FileVersion,
        *,
        now: datetime | None = None,
        durable: bool = True,
    ) -> None:
        """:meth:`OurWrites.record_write`, from a worker thread (before a rename);
        ``durable=False`` when the file carries our mark (see :meth:`intend`)."""
        at = stamp(now or now_utc())
        self._db.call_blocking(
            partial(record_write_in, chat=chat, version=version, at=at),
            write=True,
            durable=durable,
        )

    def our_write(self, chat: str, version: FileVersion, content: Callable[[], str]) -> bool:
        """Whether ``version`` of the chat is one we wrote, from a worker thread.
        ``content()`` gives the bytes' sha256; it is called only while writes recorded by
        hash (before schema 3) remain for the chat."""
        known = self._db.call_blocking(
            partial(our_write_in, chat=chat, version=version), write=False
        )
        if known is not None:
            return known
        digest = content()
        return self._db.call_blocking(
            partial(our_hashed_write_in, chat=chat, sha256=digest), write=False
        )

    def watched(self, chat: str) -> list[LedgerEntry]:
        """The chat's entries reconcile judges (:func:`~.ledger.watched_of`)."""
        return self._db.call_blocking(partial(watched_of, chat=chat), write=False)

    def retire(
        self, job_id: str, reason: str, *, now: datetime | None = None, durable: bool = True
    ) -> bool:
        """:meth:`Ledger.ledger_retire`, from a worker thread. ``durable=False`` for a
        judgement the next reconcile makes again from the chat on disk if a power cut loses
        it (see :meth:`Database.call_blocking`)."""
        return self._set(job_id, RETIRE, (reason,), now, durable)

    def acknowledge(
        self, job_id: str, *, now: datetime | None = None, durable: bool = True
    ) -> bool:
        """:meth:`Ledger.ledger_acknowledge`, from a worker thread; ``durable`` as for
        :meth:`retire`."""
        return self._set(job_id, ACKNOWLEDGE, (), now, durable)

    def _set(
        self,
        job_id: str,
        change: tuple[str, str],
        args: tuple[Any, ...],
        now: datetime | None,
        durable: bool = True,
    ) -> bool:
        at = stamp(now or now_utc())
        return self._db.call_blocking(
            partial(
                set_entry,
                job_id=job_id,
                assignment=change[0],
                args=args,
                unless=change[1],
                at=at,
            ),
            write=True,
            durable=durable,
        )

    def transition(
        self,
        job_id: str,
        expected: States,
        new: JobState,
        *,
        durable: bool = True,
        **fields: Any,
    ) -> tuple[Job | None, JobState | None]:
        """:meth:`Jobs.transition` without the announcement: returns the moved job (None when
        it was not in ``expected``) and the state it left, for the caller to announce.
        ``durable=False``: see :meth:`Database.call_blocking`."""
        move = job_move(job_id, expected, new, **fields)
        return self._db.call_blocking(move, write=True, durable=durable)
