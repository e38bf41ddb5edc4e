"""A job's move from state to state as one transaction body on any sqlite3 connection, and that
transaction: the store runs them in its worker thread (:class:`~daemon.engine.store.db.Database`),
and a short command runs them on a connection of its own (:class:`Direct`) without loading the
async store, its logging or anyio. Either way the move is the same compare-and-set: a job moves
only from a state in ``expected``, so two processes acting on one job end with one outcome."""

# ruff: noqa: S608

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from daemon.engine.store.model import (
    Job,
    JobState,
    States,
    aware_utc,
    marks,
    now_utc,
    stamp,
    states_list,
    to_json,
)
from daemon.engine.store.reads import JOB_COLUMNS, find_job, job_from_row
from daemon.engine.store.schema import store_error
from daemon.jobstate import check_move

__all__ = ["Direct", "job_move", "transaction"]

T = TypeVar("T")

_TRANSITION_FIELDS = frozenset(
    {
        "attempts",
        "last_error",
        "prompt",
        "images",
        "meta",
        "meta_update",
        "next_attempt_at",
        "message_index",
        "now",
    }
)


def job_move(
    job_id: str, expected: States, new: JobState, *, check: bool = True, **fields: Any
) -> Callable[[sqlite3.Connection], tuple[Job | None, JobState | None]]:
    """The transaction body of :meth:`Jobs.transition`: run on a connection, it returns the
    moved job (``None`` when not in ``expected``) and the state it left. Argument errors are
    raised here, before anything runs."""
    unknown = fields.keys() - _TRANSITION_FIELDS
    if unknown:
        raise TypeError(f"transition: unknown fields {sorted(unknown)}")
    wanted = states_list(expected)
    new_state = JobState(new)
    if check:
        check_move(expected, new_state)
    now = aware_utc(fields.pop("now", None) or now_utc())
    meta_update = fields.pop("meta_update", None)
    sets: dict[str, Any] = {"state": new_state.value, "updated_at": stamp(now)}
    for name, value in fields.items():
        if name == "images":
            sets[name] = to_json(list(value))
        elif name == "meta":
            sets[name] = to_json(dict(value))
        elif name == "next_attempt_at":
            sets[name] = stamp(value) if value is not None else None
        else:
            sets[name] = value

    def _move(conn: sqlite3.Connection) -> tuple[Job | None, JobState | None]:
        row = conn.execute(
            f"SELECT state, meta FROM jobs WHERE id = ? AND state IN ({marks(len(wanted))})",
            (job_id, *wanted),
        ).fetchone()
        if row is None:
            return None, None
        changes = dict(sets)
        if meta_update:
            meta = json.loads(changes["meta"]) if "meta" in changes else json.loads(row["meta"])
            meta.update(meta_update)
            changes["meta"] = to_json(meta)
        assignments = ", ".join(f"{k} = ?" for k in changes)
        found = conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? RETURNING {JOB_COLUMNS}",
            (*changes.values(), job_id),
        ).fetchone()
        return job_from_row(found), JobState(row["state"])

    return _move


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(conn)`` in one ``BEGIN IMMEDIATE`` transaction: committed, or rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


class Direct:
    """The store's blocking job calls (as :class:`~daemon.engine.store.blocking.Blocking`'s
    ``job`` and ``transition``) on a connection this process opened itself with
    :func:`~daemon.engine.store.schema.connect`; sqlite3 errors become the store's errors."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        try:
            return transaction(self._conn, fn) if write else fn(self._conn)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc

    def job(self, job_id: str) -> Job:
        return self._call(functools.partial(find_job, job_id_or_prefix=job_id), write=False)

    def transition(
        self, job_id: str, expected: States, new: JobState, **fields: Any
    ) -> tuple[Job | None, JobState | None]:
        return self._call(job_move(job_id, expected, new, **fields), write=True)
