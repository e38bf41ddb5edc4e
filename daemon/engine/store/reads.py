"""Read-only queries on any sqlite3 connection (no async, no logging): jobs, the open ledger,
spend.

The store runs them in its worker thread; a read-only command (``list``, ``show``, ``status``)
runs them on a read-only connection of its own without loading the async store.
"""

# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from daemon.engine.store.model import (
    _CROCKFORD_ALIASES,
    FAILING_STATES,
    Job,
    JobState,
    ReplyKey,
    marks,
    parse_stamp,
    stamp,
    states_list,
)
from daemon.errors import AmbiguousError, JobError, NotFoundError

__all__ = [
    "JOB_COLUMNS",
    "SpendTotal",
    "count_states",
    "find_job",
    "job_from_row",
    "jobs_in",
    "open_ledger_counts",
    "recent_errors",
    "reply_from_row",
    "select_jobs",
    "spend_between",
]

JOB_COLUMNS = (
    "id, key, user, chat, character, is_group, speaker, message_index, identity_name, "
    "identity_date, revision, regen, excerpt, source, state, attempts, last_error, prompt, "
    "images, meta, created_at, updated_at, next_attempt_at"
)


def reply_from_row(row: sqlite3.Row) -> ReplyKey:
    """The reply of a ``jobs`` or ``ledger`` row (the same five columns in both)."""
    return ReplyKey(
        row["user"], row["chat"], row["identity_name"], row["identity_date"], row["revision"]
    )


def job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        key=row["key"],
        reply=reply_from_row(row),
        character=row["character"],
        is_group=bool(row["is_group"]),
        speaker=row["speaker"],
        message_index=row["message_index"],
        excerpt=row["excerpt"],
        source=row["source"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        prompt=row["prompt"],
        images=tuple(json.loads(row["images"])),
        created_at=parse_stamp(row["created_at"]),
        updated_at=parse_stamp(row["updated_at"]),
        next_attempt_at=parse_stamp(row["next_attempt_at"]) if row["next_attempt_at"] else None,
        meta=json.loads(row["meta"]),
        regen=row["regen"],
    )


def select_jobs(
    conn: sqlite3.Connection,
    *,
    states: Iterable[JobState] = (),
    chat: str | None = None,
    chat_file: str | None = None,
    user: str | None = None,
    users: Collection[str] | None = None,
    before: str | None = None,
    limit: int = 50,
    character: str | None = None,
) -> list[Job]:
    """Jobs newest first, filtered: any of ``states`` (all when empty), one chat path, or the
    chats whose file stem is ``chat_file`` (ST's chatId), one user, only the ST handles in
    ``users`` (a web user's view), one character (card stem or group id), ids below
    ``before``."""
    where, args = [], []
    if character is not None:
        where.append("character = ?")
        args.append(character)
    wanted = states_list(states)
    if wanted:
        where.append(f"state IN ({marks(len(wanted))})")
        args.extend(wanted)
    if chat is not None:
        where.append("chat = ?")
        args.append(chat)
    if chat_file is not None:
        suffix = f"/{chat_file}.jsonl"  # exact and case-sensitive, unlike LIKE
        where.append("substr(chat, -length(?)) = ?")
        args.extend((suffix, suffix))
    if user is not None:
        where.append("user = ?")
        args.append(user)
    if users is not None:
        wanted_users = sorted(users)
        where.append(f"user IN ({marks(len(wanted_users))})")
        args.extend(wanted_users)
    if before is not None:
        where.append("id < ?")
        args.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    # The ids are chosen first and only the page's rows read whole: ordering the matching rows
    # whole made SQLite copy every one of them (prompt, excerpt, images) into its sorter, so
    # the inbox's first page took 2 ms with 1,000 pending and 0.2 ms with 50; an id is short.
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN "
        f"(SELECT id FROM jobs {clause} ORDER BY id DESC LIMIT ?) ORDER BY id DESC",
        (*args, limit),
    ).fetchall()
    return [job_from_row(r) for r in rows]


def find_job(
    conn: sqlite3.Connection, job_id_or_prefix: str, *, users: Collection[str] | None = None
) -> Job:
    """By id or unique prefix; JobError when unknown or ambiguous.

    Prefixes are case-insensitive and read the way Crockford base32 is (O as 0, I and L as 1),
    so an id copied by hand still matches. ``users``: only jobs of these ST handles exist (a
    web user's view: another user's job is "no job", never ambiguous)."""
    raw = job_id_or_prefix.strip()
    if not raw:
        raise JobError("no job id given")
    prefix = raw.upper().translate(_CROCKFORD_ALIASES)
    only, only_args = "", tuple[str, ...]()
    if users is not None:
        wanted = sorted(users)
        only, only_args = f" AND user IN ({marks(len(wanted))})", tuple(wanted)
    found: list[Job] = []
    for exact_id in dict.fromkeys((raw, prefix)):
        exact = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?{only}", (exact_id, *only_args)
        ).fetchone()
        if exact:
            return job_from_row(exact)
    # A range, not LIKE: no wildcard characters to escape in what the user typed.
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE id >= ? AND id < ?{only} ORDER BY id LIMIT 6",
        (prefix, prefix + "\U0010ffff", *only_args),
    ).fetchall()
    found = [job_from_row(r) for r in rows]
    if not found:
        raise NotFoundError(f"no job {job_id_or_prefix!r} (see `st-imagegen list`)")
    if len(found) > 1:
        shown = ", ".join(j.id for j in found[:5])
        more = "" if len(found) <= 5 else ", …"
        raise AmbiguousError(
            f"job id {job_id_or_prefix!r} is ambiguous: it starts {shown}{more}; "
            "give more characters"
        )
    return found[0]


def jobs_in(
    conn: sqlite3.Connection, states: Iterable[JobState], *, limit: int = 1000
) -> list[Job]:
    """Jobs in any of ``states``, oldest first."""
    wanted = states_list(states)
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({marks(len(wanted))}) ORDER BY id LIMIT ?",
        (*wanted, limit),
    ).fetchall()
    return [job_from_row(r) for r in rows]


def count_states(
    conn: sqlite3.Connection, *, users: Collection[str] | None = None
) -> dict[JobState, int]:
    """Jobs per state (every state present, zeros included); ``users``: only theirs."""
    only, only_args = "", tuple[str, ...]()
    if users is not None:
        wanted = sorted(users)
        only, only_args = f"WHERE user IN ({marks(len(wanted))}) ", tuple(wanted)
    result = dict.fromkeys(JobState, 0)
    for row in conn.execute(f"SELECT state, COUNT(*) FROM jobs {only}GROUP BY state", only_args):
        result[JobState(row[0])] = row[1]
    return result


def recent_errors(conn: sqlite3.Connection, limit: int = 5) -> list[Job]:
    """Real failures, most recently updated first (for ``status``): failed jobs and jobs
    waiting to retry after one. A superseded or rejected job's reason is history, not an
    error, and a job that went on to succeed is no longer failing."""
    failing = states_list(FAILING_STATES)
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE last_error IS NOT NULL "
        f"AND state IN ({marks(len(failing))}) "
        "ORDER BY updated_at DESC, id DESC LIMIT ?",
        (*failing, limit),
    ).fetchall()
    return [job_from_row(r) for r in rows]


def open_ledger_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Chat -> how many of its committed image messages no version ST saved holds yet (the
    open ledger entries: neither acknowledged nor retired), in chat order."""
    rows = conn.execute(
        "SELECT chat, COUNT(*) FROM ledger WHERE acknowledged = 0 AND retired IS NULL "
        "GROUP BY chat ORDER BY chat"
    ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


@dataclass(frozen=True)
class SpendTotal:
    """A sum over a time window: USD, images, whether any part is an estimate, other units."""

    usd: float = 0.0
    images: int = 0
    estimated: bool = False
    units: Mapping[str, float] = field(default_factory=dict)


def spend_between(
    conn: sqlite3.Connection,
    start: datetime,
    end: datetime,
    *,
    chat: str | None = None,
    job_id: str | None = None,
    users: Collection[str] | None = None,
) -> SpendTotal:
    """The sum of the spend records in ``[start, end)``, of one chat or one job if given, of
    the chats of ST handles ``users`` if given (a user token's caller: none is nothing)."""
    where = "at >= ? AND at < ?"
    args: list[object] = [stamp(start), stamp(end)]
    if users is not None:
        handles = sorted(set(users))
        if not handles:
            return SpendTotal()
        where += f" AND user IN ({marks(len(handles))})"
        args.extend(handles)
    if chat is not None:
        where += " AND chat = ?"
        args.append(chat)
    if job_id is not None:
        where += " AND job_id = ?"
        args.append(job_id)
    rows = conn.execute(
        f"SELECT usd, images, estimated, units FROM spend WHERE {where}", args
    ).fetchall()
    units: dict[str, float] = {}
    for row in rows:
        for unit, amount in json.loads(row["units"] or "{}").items():
            units[unit] = units.get(unit, 0.0) + float(amount)
    return SpendTotal(
        usd=sum(float(r["usd"]) for r in rows),
        images=sum(int(r["images"]) for r in rows),
        estimated=any(r["estimated"] for r in rows),
        units=units,
    )
