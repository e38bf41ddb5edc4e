"""SQLite job store: jobs, per-chat cursors, the commit ledger and the hashes of our own writes.

WAL mode, ``synchronous=FULL``, ``foreign_keys=ON`` and a busy timeout, so the daemon and the CLI
(separate processes) can share ``state.db``. One connection per :class:`Store`, used from worker
threads (``anyio.to_thread.run_sync``) under a lock; every write is one ``BEGIN IMMEDIATE``
transaction. The schema is versioned with ``PRAGMA user_version`` and :data:`MIGRATIONS`.

Jobs may run twice: every state change is guarded by the expected current state(s), and a job's
idempotency ``key`` (user, chat, message identity, revision, regen counter) is UNIQUE, so a
duplicate event, a rescan or a restart never makes a second job.

All datetimes are timezone-aware UTC. Naive datetimes are refused.
"""

# SQL here is assembled only from constant column lists and "?" placeholders; values are always
# bound parameters, so the f-strings are not an injection vector.
# ruff: noqa: S608

from __future__ import annotations

import enum
import functools
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from daemon.errors import JobError, StoreError
from daemon.tavern.chat import Cursor, MessageIdentity

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "MIGRATIONS",
    "OPEN_STATES",
    "ChatRecord",
    "Job",
    "JobState",
    "LedgerEntry",
    "Store",
    "job_key",
    "new_job_id",
]

T = TypeVar("T")


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting for a worker (also: waiting for a retry at next_attempt_at)
    PROMPTING = "prompting"  # the prompt writer is running
    IMAGING = "imaging"  # the image generator is running
    PENDING = "pending"  # images in pending/<id>/, waiting for the user
    ACCEPTED = "accepted"  # user (or approval=auto) accepted; waiting for commit
    COMMITTED = "committed"  # hidden image message written into the chat
    REJECTED = "rejected"  # user rejected
    SUPERSEDED = "superseded"  # the reply changed (swipe/edit/regenerate/deleted) before commit
    FAILED = "failed"  # permanent failure or attempts exhausted; last_error says why


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.PROMPTING, JobState.IMAGING})
FINAL_STATES = frozenset(
    {JobState.COMMITTED, JobState.REJECTED, JobState.SUPERSEDED, JobState.FAILED}
)
OPEN_STATES = frozenset(set(JobState) - FINAL_STATES)
"""Not final: queued, prompting, imaging, pending, accepted."""

States = JobState | Iterable[JobState]
"""One state, or any collection of them (set, frozenset, list)."""

SUPERSEDABLE_STATES = frozenset(ACTIVE_STATES | {JobState.PENDING})
"""What a changed reply supersedes. Accepted jobs are left to the committer, which checks the
revision itself and marks them with a reason the user can see."""

REGEN_FROM_STATES = frozenset({JobState.PENDING, JobState.FAILED, JobState.REJECTED})

OUR_WRITES_KEPT = 8
"""How many hashes of our own chat writes are remembered per chat."""

BUSY_TIMEOUT_MS = 15_000
"""How long a statement waits for another process's write lock before failing."""


@dataclass(frozen=True, slots=True)
class Job:
    id: str  # sortable unique id (time-ordered, ULID-like, 26 chars)
    key: str  # idempotency key: user|chat|identity name|identity date|revision (+|regen:N)
    user: str  # ST user handle
    chat: str  # chat path relative to the data root, POSIX style
    character: str  # card file stem, or group id for group chats
    is_group: bool
    speaker: str  # message name (display name of the character/member)
    message_index: int  # ST mesid at detection (a hint)
    identity_name: str
    identity_date: str  # MessageIdentity.first_date
    revision: str  # str(Revision)
    excerpt: str  # first ~200 chars of the reply text
    source: str  # "auto" | "manual" | "regen"
    state: JobState
    attempts: int
    last_error: str | None
    prompt: str | None  # the written prompt (or the user's edited prompt)
    images: tuple[str, ...]  # file names in pending/<id>/ (kept ones after accept)
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    meta: dict[str, Any]  # free-form: provider, model, commit info, ...
    regen: int = 0  # 0 for the first job of a revision; N for its Nth regeneration

    @property
    def short_id(self) -> str:
        return self.id[:10]

    @property
    def identity(self) -> MessageIdentity:
        """The reply this job illustrates (the index is the detection-time hint)."""
        return MessageIdentity(self.message_index, self.identity_name, self.identity_date)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class ChatRecord:
    """What the store remembers of one chat: its cursor and detection state."""

    chat: str
    cursor: Cursor
    data: dict[str, Any]  # detection state (counters), owned by the caller
    first_seen: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One committed image message, remembered for reconcile."""

    job_id: str
    user: str
    chat: str
    identity_name: str
    identity_date: str
    revision: str
    message: dict[str, Any]  # the exact message object we inserted
    acknowledged: bool  # a version written by someone else has contained it
    retired: str | None  # why it is no longer watched (deleted by the user, reply gone, ...)
    created_at: datetime
    updated_at: datetime


# --- ids, keys, times ---------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_id_lock = threading.Lock()
_id_last: tuple[int, int] = (0, 0)


def new_job_id(now_ms: int | None = None) -> str:
    """A 26-char ULID-like id: 48-bit ms time then 80 random bits, Crockford base32.

    Ids sort by creation time; within one millisecond in this process they stay increasing.
    """
    global _id_last
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _id_lock:
        last_ms, last_rand = _id_last
        if ms <= last_ms:
            ms, rand = last_ms, (last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = secrets.randbits(80)
        _id_last = (ms, rand)
    value = (ms << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _escape(part: str) -> str:
    return part.replace("\\", "\\\\").replace("|", "\\|")


def job_key(
    user: str, chat: str, identity_name: str, identity_date: str, revision: str, regen: int = 0
) -> str:
    """The idempotency key of a job; ``|`` inside parts is escaped so keys never collide."""
    base = "|".join(_escape(p) for p in (user, chat, identity_name, identity_date, revision))
    return f"{base}|regen:{regen}" if regen else base


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the store needs timezone-aware times")
    return when.astimezone(UTC)


def _ts(when: datetime) -> str:
    # Fixed width, so text comparison in SQL is time order.
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# --- schema --------------------------------------------------------------------------------------

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
)
"""Ordered schema migrations; migration N (1-based) brings ``user_version`` from N-1 to N."""

_JOB_COLUMNS = (
    "id, key, user, chat, character, is_group, speaker, message_index, identity_name, "
    "identity_date, revision, regen, excerpt, source, state, attempts, last_error, prompt, "
    "images, meta, created_at, updated_at, next_attempt_at"
)

_CREATE_REQUIRED = frozenset(
    {
        "user",
        "chat",
        "character",
        "is_group",
        "speaker",
        "message_index",
        "identity_name",
        "identity_date",
        "revision",
    }
)
_CREATE_OPTIONAL = frozenset(
    {
        "excerpt",
        "source",
        "state",
        "prompt",
        "images",
        "meta",
        "regen",
        "key",
        "id",
        "now",
        "next_attempt_at",
    }
)
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


def _job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        key=row["key"],
        user=row["user"],
        chat=row["chat"],
        character=row["character"],
        is_group=bool(row["is_group"]),
        speaker=row["speaker"],
        message_index=row["message_index"],
        identity_name=row["identity_name"],
        identity_date=row["identity_date"],
        revision=row["revision"],
        excerpt=row["excerpt"],
        source=row["source"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        prompt=row["prompt"],
        images=tuple(json.loads(row["images"])),
        created_at=_dt(row["created_at"]),
        updated_at=_dt(row["updated_at"]),
        next_attempt_at=_dt(row["next_attempt_at"]) if row["next_attempt_at"] else None,
        meta=json.loads(row["meta"]),
        regen=row["regen"],
    )


def _ledger_from_row(row: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        job_id=row["job_id"],
        user=row["user"],
        chat=row["chat"],
        identity_name=row["identity_name"],
        identity_date=row["identity_date"],
        revision=row["revision"],
        message=json.loads(row["message"]),
        acknowledged=bool(row["acknowledged"]),
        retired=row["retired"],
        created_at=_dt(row["created_at"]),
        updated_at=_dt(row["updated_at"]),
    )


def _states(states: States) -> list[str]:
    if isinstance(states, JobState):
        return [states.value]
    return sorted(JobState(s).value for s in states)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _new_job_row(fields: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The ``jobs`` row of a new QUEUED job from :meth:`Store.create_job`'s fields."""
    regen = int(fields.get("regen", 0))
    key = fields.get("key") or job_key(
        fields["user"],
        fields["chat"],
        fields["identity_name"],
        fields["identity_date"],
        fields["revision"],
        regen,
    )
    return {
        "id": fields.get("id") or new_job_id(int(now.timestamp() * 1000)),
        "key": key,
        "user": str(fields["user"]),
        "chat": str(fields["chat"]),
        "character": str(fields["character"]),
        "is_group": int(bool(fields["is_group"])),
        "speaker": str(fields["speaker"]),
        "message_index": int(fields["message_index"]),
        "identity_name": str(fields["identity_name"]),
        "identity_date": str(fields["identity_date"]),
        "revision": str(fields["revision"]),
        "regen": regen,
        "excerpt": str(fields.get("excerpt", "")),
        "source": str(fields.get("source", "auto")),
        "state": JobState(fields.get("state", JobState.QUEUED)).value,
        "attempts": 0,
        "last_error": None,
        "prompt": fields.get("prompt"),
        "images": _json(list(fields.get("images", ()))),
        "meta": _json(dict(fields.get("meta") or {})),
        "created_at": _ts(now),
        "updated_at": _ts(now),
        "next_attempt_at": _ts(fields.get("next_attempt_at") or now),
    }


# --- the store -----------------------------------------------------------------------------------


class Store:
    """The job store. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating and migrating as needed) the store at ``path``."""
        conn = await anyio.to_thread.run_sync(_connect, path)
        return cls(path, conn)

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(_close)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # plumbing

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        return await anyio.to_thread.run_sync(functools.partial(self._call, fn, write))

    def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"the state store {str(self.path)!r} is closed")
            try:
                if not write:
                    return fn(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.commit()
                except BaseException:
                    if conn.in_transaction:
                        conn.rollback()
                    raise
                return result
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc

    # jobs

    async def create_job(self, **fields: Any) -> Job | None:
        """Insert a queued job; ``None`` if a job with the same ``key`` exists (idempotent).

        Required: user, chat, character, is_group, speaker, message_index, identity_name,
        identity_date, revision. Optional: excerpt (""), source ("auto"), state (queued),
        prompt, images, meta, regen (0), key (computed by :func:`job_key`), id, now,
        next_attempt_at (now). A job created with a prompt skips the prompt step.
        """
        missing = _CREATE_REQUIRED - fields.keys()
        unknown = fields.keys() - _CREATE_REQUIRED - _CREATE_OPTIONAL
        problems = [f"missing {sorted(missing)}"] if missing else []
        if unknown:
            problems.append(f"unknown fields {sorted(unknown)}")
        if problems:
            raise TypeError(f"create_job: {', '.join(problems)}")
        row = _new_job_row(fields, _utc(fields.get("now") or _now()))

        def _insert(conn: sqlite3.Connection) -> Job | None:
            cur = conn.execute(
                f"INSERT INTO jobs ({', '.join(row)}) VALUES ({_marks(len(row))}) "
                f"ON CONFLICT (key) DO NOTHING RETURNING {_JOB_COLUMNS}",
                tuple(row.values()),
            )
            found = cur.fetchone()
            return _job_from_row(found) if found else None

        return await self._run(_insert, write=True)

    async def find_job(self, key: str) -> Job | None:
        """The job with this idempotency key, if any."""

        def _find(conn: sqlite3.Connection) -> Job | None:
            found = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE key = ?", (key,)
            ).fetchone()
            return _job_from_row(found) if found else None

        return await self._run(_find, write=False)

    async def get_job(self, job_id_or_prefix: str) -> Job:
        """By id or unique prefix; JobError when unknown or ambiguous.

        Prefixes are case-insensitive and read the way Crockford base32 is (O as 0, I and L
        as 1), so an id copied by hand still matches."""
        raw = job_id_or_prefix.strip()
        if not raw:
            raise JobError("no job id given")
        prefix = raw.upper().translate(_CROCKFORD_ALIASES)

        def _get(conn: sqlite3.Connection) -> list[Job]:
            for exact_id in dict.fromkeys((raw, prefix)):
                exact = conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (exact_id,)
                ).fetchone()
                if exact:
                    return [_job_from_row(exact)]
            # A range, not LIKE: no wildcard characters to escape in what the user typed.
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 6",
                (prefix, prefix + "\U0010ffff"),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        found = await self._run(_get, write=False)
        if not found:
            raise JobError(f"no job {job_id_or_prefix!r} (see `st-imagegen list`)")
        if len(found) > 1:
            shown = ", ".join(j.id for j in found[:5])
            more = "" if len(found) <= 5 else ", …"
            raise JobError(
                f"job id {job_id_or_prefix!r} is ambiguous: it starts {shown}{more}; "
                "give more characters"
            )
        return found[0]

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int = 100, chat: str | None = None
    ) -> list[Job]:
        """Jobs, newest first."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(JobState(state).value)
        if chat is not None:
            where.append("chat = ?")
            args.append(chat)
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def _list(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs {clause} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(_list, write=False)

    async def jobs_in(self, states: Iterable[JobState], *, limit: int = 1000) -> list[Job]:
        """Jobs in any of ``states``, oldest first."""
        wanted = _states(states)

        def _list(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({_marks(len(wanted))}) "
                "ORDER BY id LIMIT ?",
                (*wanted, limit),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(_list, write=False)

    async def jobs_for_reply(self, chat: str, identity_name: str, identity_date: str) -> list[Job]:
        """Every job of one reply (any revision, any state), oldest first."""

        def _list(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE chat = ? AND identity_name = ? "
                "AND identity_date = ? ORDER BY id",
                (chat, identity_name, identity_date),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(_list, write=False)

    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        """Queued jobs whose next_attempt_at is due, oldest first."""
        at = _ts(now)

        def _due(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY id LIMIT ?",
                (at, limit),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(_due, write=False)

    async def next_due_at(self) -> datetime | None:
        """When the earliest queued job becomes due (for a runner's sleep), if any."""

        def _next(conn: sqlite3.Connection) -> datetime | None:
            row = conn.execute(
                "SELECT MIN(COALESCE(next_attempt_at, created_at)) FROM jobs WHERE state = 'queued'"
            ).fetchone()
            return _dt(row[0]) if row and row[0] else None

        return await self._run(_next, write=False)

    async def transition(
        self,
        job_id: str,
        expected: States,
        new: JobState,
        **fields: Any,
    ) -> Job | None:
        """Move a job to ``new`` only if its state is in ``expected``; ``None`` otherwise.

        Fields: attempts, last_error, prompt, images, meta (replaces), meta_update (merged into
        meta), next_attempt_at, message_index, now. ``None`` also for an unknown id.
        """
        unknown = fields.keys() - _TRANSITION_FIELDS
        if unknown:
            raise TypeError(f"transition: unknown fields {sorted(unknown)}")
        wanted = _states(expected)
        new_state = JobState(new)
        now = _utc(fields.pop("now", None) or _now())
        meta_update = fields.pop("meta_update", None)
        sets: dict[str, Any] = {"state": new_state.value, "updated_at": _ts(now)}
        for name, value in fields.items():
            if name == "images":
                sets[name] = _json(list(value))
            elif name == "meta":
                sets[name] = _json(dict(value))
            elif name == "next_attempt_at":
                sets[name] = _ts(value) if value is not None else None
            else:
                sets[name] = value

        def _move(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                f"SELECT state, meta FROM jobs WHERE id = ? AND state IN ({_marks(len(wanted))})",
                (job_id, *wanted),
            ).fetchone()
            if row is None:
                return None
            if meta_update:
                meta = json.loads(sets["meta"]) if "meta" in sets else json.loads(row["meta"])
                meta.update(meta_update)
                sets["meta"] = _json(meta)
            assignments = ", ".join(f"{k} = ?" for k in sets)
            found = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? RETURNING {_JOB_COLUMNS}",
                (*sets.values(), job_id),
            ).fetchone()
            return _job_from_row(found)

        return await self._run(_move, write=True)

    async def reschedule(
        self,
        job_id: str,
        error: str,
        delay: float | timedelta,
        *,
        expected: States = ACTIVE_STATES,
        max_attempts: int | None = None,
        now: datetime | None = None,
    ) -> Job | None:
        """A transient failure: back to QUEUED with attempts+1, due after ``delay``.

        With ``max_attempts``, the attempt that reaches it fails the job instead ("gave up after
        N attempts: <error>"). ``None`` if the job is not in ``expected``.
        """
        wanted = _states(expected)
        at = _utc(now or _now())
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        due = at + timedelta(seconds=max(0.0, seconds))

        def _resched(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                f"SELECT attempts FROM jobs WHERE id = ? AND state IN ({_marks(len(wanted))})",
                (job_id, *wanted),
            ).fetchone()
            if row is None:
                return None
            attempts = row["attempts"] + 1
            if max_attempts is not None and attempts >= max_attempts:
                state, message, next_at = (
                    JobState.FAILED.value,
                    f"gave up after {attempts} attempts: {error}",
                    None,
                )
            else:
                state, message, next_at = JobState.QUEUED.value, error, _ts(due)
            found = conn.execute(
                "UPDATE jobs SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?, "
                f"updated_at = ? WHERE id = ? RETURNING {_JOB_COLUMNS}",
                (state, attempts, message, next_at, _ts(at), job_id),
            ).fetchone()
            return _job_from_row(found)

        return await self._run(_resched, write=True)

    async def fail(
        self,
        job_id: str,
        error: str,
        *,
        expected: States = OPEN_STATES,
        now: datetime | None = None,
    ) -> Job | None:
        """A permanent failure: FAILED with ``error`` as the reason (from any open state)."""
        return await self.transition(
            job_id, expected, JobState.FAILED, last_error=error, next_attempt_at=None, now=now
        )

    async def regenerate(
        self,
        job_id: str,
        *,
        prompt: str | None = None,
        expected: States = REGEN_FROM_STATES,
        now: datetime | None = None,
    ) -> Job:
        """Replace a job by a new one for the same reply and revision (``regen`` counter + 1).

        The new job is QUEUED with ``source="regen"`` and ``prompt`` (or the old job's prompt;
        a job with a prompt skips the prompt step); the old one becomes SUPERSEDED ("regenerated
        as <id>"), atomically. JobError when the job is unknown or not in ``expected``.
        """
        old = await self.get_job(job_id)
        wanted = _states(expected)
        at = _utc(now or _now())

        def _regen(conn: sqlite3.Connection) -> Job:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (old.id,)
            ).fetchone()
            current = _job_from_row(row)
            if current.state.value not in wanted:
                raise JobError(
                    f"job {current.id} is {current.state.value}; only "
                    f"{', '.join(wanted)} jobs can be regenerated"
                )
            top = conn.execute(
                "SELECT MAX(regen) FROM jobs WHERE chat = ? AND identity_name = ? "
                "AND identity_date = ? AND revision = ? AND user = ?",
                (
                    current.chat,
                    current.identity_name,
                    current.identity_date,
                    current.revision,
                    current.user,
                ),
            ).fetchone()[0]
            regen = int(top or 0) + 1
            meta = dict(current.meta)
            meta["regen_of"] = current.id
            values = _new_job_row(
                {
                    **{name: getattr(current, name) for name in _CREATE_REQUIRED},
                    "excerpt": current.excerpt,
                    "source": "regen",
                    "regen": regen,
                    "prompt": prompt if prompt is not None else current.prompt,
                    "meta": meta,
                },
                at,
            )
            new_id = values["id"]
            created = conn.execute(
                f"INSERT INTO jobs ({', '.join(values)}) VALUES ({_marks(len(values))}) "
                f"RETURNING {_JOB_COLUMNS}",
                tuple(values.values()),
            ).fetchone()
            conn.execute(
                "UPDATE jobs SET state = 'superseded', last_error = ?, next_attempt_at = NULL, "
                "updated_at = ? WHERE id = ?",
                (f"regenerated as job {new_id}", _ts(at), current.id),
            )
            return _job_from_row(created)

        return await self._run(_regen, write=True)

    async def supersede(
        self,
        user: str,
        chat: str,
        identity_name: str,
        identity_date: str,
        keep_revision: str | None,
        reason: str,
        *,
        now: datetime | None = None,
    ) -> list[Job]:
        """Supersede queued, running and pending jobs of that reply whose revision differs from
        ``keep_revision`` (all of them when it is ``None``). Accepted and final jobs are left
        alone: the committer checks the revision of accepted ones itself."""
        at = _ts(now or _now())
        states = _states(SUPERSEDABLE_STATES)

        def _sup(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                "UPDATE jobs SET state = 'superseded', last_error = ?, next_attempt_at = NULL, "
                "updated_at = ? WHERE user = ? AND chat = ? AND identity_name = ? "
                f"AND identity_date = ? AND state IN ({_marks(len(states))}) "
                f"AND (? IS NULL OR revision != ?) RETURNING {_JOB_COLUMNS}",
                (
                    reason,
                    at,
                    user,
                    chat,
                    identity_name,
                    identity_date,
                    *states,
                    keep_revision,
                    keep_revision,
                ),
            ).fetchall()
            return sorted((_job_from_row(r) for r in rows), key=lambda j: j.id)

        return await self._run(_sup, write=True)

    async def supersede_chat(
        self, chat: str, reason: str, *, now: datetime | None = None
    ) -> list[Job]:
        """Supersede every queued, running and pending job of a chat (the chat is gone)."""
        at = _ts(now or _now())
        states = _states(SUPERSEDABLE_STATES)

        def _sup(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                "UPDATE jobs SET state = 'superseded', last_error = ?, next_attempt_at = NULL, "
                f"updated_at = ? WHERE chat = ? AND state IN ({_marks(len(states))}) "
                f"RETURNING {_JOB_COLUMNS}",
                (reason, at, chat, *states),
            ).fetchall()
            return sorted((_job_from_row(r) for r in rows), key=lambda j: j.id)

        return await self._run(_sup, write=True)

    async def resume_after_crash(self, *, now: datetime | None = None) -> int:
        """Jobs left in PROMPTING/IMAGING go back to QUEUED, due now; returns how many.

        Only the daemon calls this, once at start (a CLI process must not: the daemon may be
        running those jobs)."""
        at = _ts(now or _now())

        def _resume(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE jobs SET state = 'queued', next_attempt_at = ?, updated_at = ? "
                "WHERE state IN ('prompting', 'imaging')",
                (at, at),
            )
            return cur.rowcount

        return await self._run(_resume, write=True)

    async def counts(self) -> dict[JobState, int]:
        """Jobs per state (every state present, zeros included)."""

        def _counts(conn: sqlite3.Connection) -> dict[JobState, int]:
            result = dict.fromkeys(JobState, 0)
            for row in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                result[JobState(row[0])] = row[1]
            return result

        return await self._run(_counts, write=False)

    async def recent_errors(self, limit: int = 5) -> list[Job]:
        """Jobs with a last error, most recently updated first (for ``status``)."""

        def _errors(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE last_error IS NOT NULL "
                "ORDER BY updated_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(_errors, write=False)

    # cursors

    async def get_cursor(self, chat: str) -> Cursor | None:
        record = await self.get_chat(chat)
        return record.cursor if record else None

    async def get_chat(self, chat: str) -> ChatRecord | None:
        """The chat's cursor, detection state and first-seen time; ``None`` if never seen."""

        def _get(conn: sqlite3.Connection) -> ChatRecord | None:
            row = conn.execute(
                "SELECT chat, cursor, data, first_seen, updated_at FROM cursors WHERE chat = ?",
                (chat,),
            ).fetchone()
            if row is None:
                return None
            return ChatRecord(
                chat=row["chat"],
                cursor=Cursor.from_json(row["cursor"]),
                data=json.loads(row["data"]),
                first_seen=_dt(row["first_seen"]),
                updated_at=_dt(row["updated_at"]),
            )

        return await self._run(_get, write=False)

    async def set_cursor(
        self,
        chat: str,
        cursor: Cursor,
        *,
        data: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Store the chat's cursor (and detection state; ``None`` keeps the stored one)."""
        at = _ts(now or _now())
        data_json = _json(dict(data)) if data is not None else None

        def _set(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cursors (chat, cursor, data, first_seen, updated_at) "
                "VALUES (?, ?, COALESCE(?, '{}'), ?, ?) ON CONFLICT (chat) DO UPDATE SET "
                "cursor = excluded.cursor, data = COALESCE(?, cursors.data), "
                "updated_at = excluded.updated_at",
                (chat, cursor.to_json(), data_json, at, at, data_json),
            )

        await self._run(_set, write=True)

    async def forget_chat(self, chat: str) -> bool:
        """Drop a chat's cursor (the file is gone); True if there was one."""

        def _forget(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM cursors WHERE chat = ?", (chat,)).rowcount > 0

        return await self._run(_forget, write=True)

    async def known_chats(self) -> set[str]:
        def _known(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute("SELECT chat FROM cursors")}

        return await self._run(_known, write=False)

    # the commit ledger

    async def ledger_add(
        self,
        *,
        job_id: str,
        user: str,
        chat: str,
        identity_name: str,
        identity_date: str,
        revision: str,
        message: Mapping[str, Any],
        now: datetime | None = None,
    ) -> None:
        """Remember a committed message; idempotent per ``job_id`` (the first entry stays).

        StoreError if no job has that id."""
        at = _ts(now or _now())
        text = _json(dict(message))

        def _add(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise StoreError(f"cannot add job {job_id} to the commit ledger: no such job")
            conn.execute(
                "INSERT INTO ledger (job_id, user, chat, identity_name, identity_date, revision, "
                "message, acknowledged, retired, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, ?) ON CONFLICT (job_id) DO NOTHING",
                (job_id, user, chat, identity_name, identity_date, revision, text, at, at),
            )

        await self._run(_add, write=True)

    async def ledger_get(self, job_id: str) -> LedgerEntry | None:
        def _get(conn: sqlite3.Connection) -> LedgerEntry | None:
            row = conn.execute("SELECT * FROM ledger WHERE job_id = ?", (job_id,)).fetchone()
            return _ledger_from_row(row) if row else None

        return await self._run(_get, write=False)

    async def ledger_for_chat(self, chat: str, *, open_only: bool = True) -> list[LedgerEntry]:
        """The chat's entries, oldest first; open = neither acknowledged nor retired."""
        clause = " AND acknowledged = 0 AND retired IS NULL" if open_only else ""

        def _list(conn: sqlite3.Connection) -> list[LedgerEntry]:
            rows = conn.execute(
                f"SELECT * FROM ledger WHERE chat = ?{clause} ORDER BY created_at, job_id",
                (chat,),
            ).fetchall()
            return [_ledger_from_row(r) for r in rows]

        return await self._run(_list, write=False)

    async def ledger_acknowledge(self, job_id: str, *, now: datetime | None = None) -> bool:
        """A version written by someone else contained the message; True if it changed."""
        return await self._ledger_set(job_id, "acknowledged = 1", (), "acknowledged = 0", now)

    async def ledger_retire(self, job_id: str, reason: str, *, now: datetime | None = None) -> bool:
        """Stop watching the message (deleted by the user, reply gone); True if it changed."""
        return await self._ledger_set(job_id, "retired = ?", (reason,), "retired IS NULL", now)

    async def _ledger_set(
        self,
        job_id: str,
        assignment: str,
        args: tuple[Any, ...],
        unless: str,
        now: datetime | None,
    ) -> bool:
        at = _ts(now or _now())

        def _set(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"UPDATE ledger SET {assignment}, updated_at = ? WHERE job_id = ? AND {unless}",
                (*args, at, job_id),
            )
            return cur.rowcount > 0

        return await self._run(_set, write=True)

    async def chats_with_open_ledger(self) -> set[str]:
        def _chats(conn: sqlite3.Connection) -> set[str]:
            return {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT chat FROM ledger WHERE acknowledged = 0 AND retired IS NULL"
                )
            }

        return await self._run(_chats, write=False)

    # our own writes

    async def record_write(self, chat: str, sha256: str, *, now: datetime | None = None) -> None:
        """Remember the hash of bytes WE wrote to a chat (the last few per chat are kept)."""
        at = _ts(now or _now())

        def _record(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO our_writes (chat, sha256, at) VALUES (?, ?, ?)", (chat, sha256, at)
            )
            conn.execute(
                "DELETE FROM our_writes WHERE chat = ? AND id NOT IN "
                "(SELECT id FROM our_writes WHERE chat = ? ORDER BY id DESC LIMIT ?)",
                (chat, chat, OUR_WRITES_KEPT),
            )

        await self._run(_record, write=True)

    async def is_our_write(self, chat: str, sha256: str) -> bool:
        def _is(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM our_writes WHERE chat = ? AND sha256 = ? LIMIT 1", (chat, sha256)
            ).fetchone()
            return row is not None

        return await self._run(_is, write=False)

    # maintenance

    async def schema_version(self) -> int:
        def _version(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

        return await self._run(_version, write=False)


# --- connecting and migrating -------------------------------------------------------------------


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(
            f"the state database {str(path)!r} stayed locked by another process for over "
            f"{BUSY_TIMEOUT_MS // 1000} s; try again"
        )
    if "not a database" in text or "malformed" in text:
        return StoreError(f"the state database {str(path)!r} is damaged or not a database: {text}")
    if "readonly" in text or "unable to open" in text:
        return StoreError(
            f"the state database {str(path)!r} cannot be written: {text} "
            "(check the state dir's permissions)"
        )
    return StoreError(f"state database {str(path)!r}: {text}")


def _connect(path: Path) -> sqlite3.Connection:
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
        raise _store_error(path, exc) from exc
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
