"""The ``jobs`` table: creating jobs idempotently and moving them between states.

Jobs may run twice: every state change is guarded by the expected current state(s), and a job's
idempotency ``key`` (user, chat, message identity, revision, regen counter) is UNIQUE, so a
duplicate event, a rescan or a restart never makes a second job.
"""

# ruff: noqa: S608

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from daemon.engine.store import reads
from daemon.engine.store.db import Database
from daemon.engine.store.model import (
    ACTIVE_STATES,
    OPEN_STATES,
    REGEN_FROM_STATES,
    SUPERSEDABLE_STATES,
    Job,
    JobState,
    States,
    aware_utc,
    marks,
    new_job_id,
    now_utc,
    parse_stamp,
    stamp,
    states_list,
    to_json,
)
from daemon.engine.store.moves import job_move
from daemon.engine.store.reads import JOB_COLUMNS, find_job, job_from_row, select_jobs
from daemon.errors import JobError
from daemon.jobstate import RUNNING_STATES, ReplyKey, check_move

JobListener = Callable[[Job, JobState | None], None]
"""Told ``(job, previous state or None)`` after each change; see :meth:`Jobs.add_job_listener`."""

_JOB_COLUMNS = JOB_COLUMNS

_CREATE_REQUIRED = frozenset(
    {
        "reply",
        "character",
        "is_group",
        "speaker",
        "message_index",
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
_job_from_row = job_from_row


def _new_job_row(fields: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The ``jobs`` row of a new QUEUED job from :meth:`Store.create_job`'s fields."""
    regen = int(fields.get("regen", 0))
    reply = fields["reply"]
    if not isinstance(reply, ReplyKey):
        raise TypeError(f"create_job: reply must be a ReplyKey, not {type(reply).__name__}")
    return {
        "id": fields.get("id") or new_job_id(int(now.timestamp() * 1000)),
        "key": fields.get("key") or reply.key(regen),
        "user": reply.user,
        "chat": reply.chat,
        "character": str(fields["character"]),
        "is_group": int(bool(fields["is_group"])),
        "speaker": str(fields["speaker"]),
        "message_index": int(fields["message_index"]),
        "identity_name": reply.name,
        "identity_date": reply.date,
        "revision": reply.revision,
        "regen": regen,
        "excerpt": str(fields.get("excerpt", "")),
        "source": str(fields.get("source", "auto")),
        "state": JobState(fields.get("state", JobState.QUEUED)).value,
        "attempts": 0,
        "last_error": None,
        "prompt": fields.get("prompt"),
        "images": to_json(list(fields.get("images", ()))),
        "meta": to_json(dict(fields.get("meta") or {})),
        "created_at": stamp(now),
        "updated_at": stamp(now),
        "next_attempt_at": stamp(fields.get("next_attempt_at") or now),
    }


class Jobs(Database):
    """Jobs: idempotent creation, guarded state changes, the queries the runner and CLI use."""

    _job_listeners: tuple[JobListener, ...] = ()

    def add_job_listener(self, listener: JobListener) -> Callable[[], None]:
        """Call ``listener(job, previous_state)`` after every job change made through this store
        (in the changing task, once committed; previous is None for new jobs and for changes
        announced from other processes), so the web inbox hears of changes at once instead of
        polling. Returns its remover."""
        self._job_listeners = (*self._job_listeners, listener)

        def remove() -> None:
            self._job_listeners = tuple(f for f in self._job_listeners if f is not listener)

        return remove

    def _changed(self, job: Job | None, previous: JobState | None = None) -> None:
        if job is None:
            return
        for listener in self._job_listeners:
            try:
                listener(job, previous)
            except Exception:  # a listener's bug must not undo or fail a committed change
                structlog.get_logger("st_imagegen.store").exception("job listener failed")

    async def create_job(self, **fields: Any) -> Job | None:
        """Insert a queued job; ``None`` if a job with the same ``key`` exists (idempotent).

        Required: reply (a :class:`~daemon.jobstate.ReplyKey`), character, is_group, speaker,
        message_index. Optional: excerpt (""), source ("auto"), state (queued), prompt, images,
        meta, regen (0), key (``reply.key(regen)``), id, now, next_attempt_at (now). A job
        created with a prompt skips the prompt step.
        """
        missing = _CREATE_REQUIRED - fields.keys()
        unknown = fields.keys() - _CREATE_REQUIRED - _CREATE_OPTIONAL
        problems = [f"missing {sorted(missing)}"] if missing else []
        if unknown:
            problems.append(f"unknown fields {sorted(unknown)}")
        if problems:
            raise TypeError(f"create_job: {', '.join(problems)}")
        row = _new_job_row(fields, aware_utc(fields.get("now") or now_utc()))

        def _insert(conn: sqlite3.Connection) -> Job | None:
            cur = conn.execute(
                f"INSERT INTO jobs ({', '.join(row)}) VALUES ({marks(len(row))}) "
                f"ON CONFLICT (key) DO NOTHING RETURNING {_JOB_COLUMNS}",
                tuple(row.values()),
            )
            found = cur.fetchone()
            return _job_from_row(found) if found else None

        job = await self._run(_insert, write=True)
        self._changed(job)
        return job

    async def find_job(self, key: str) -> Job | None:
        """The job with this idempotency key, if any."""

        def _find(conn: sqlite3.Connection) -> Job | None:
            found = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE key = ?", (key,)
            ).fetchone()
            return _job_from_row(found) if found else None

        return await self._run(_find, write=False)

    async def get_job(self, job_id_or_prefix: str, *, users: Collection[str] | None = None) -> Job:
        """By id or unique prefix; JobError when unknown or ambiguous (see
        :func:`~daemon.engine.store.reads.find_job`)."""
        return await self._run(
            functools.partial(find_job, job_id_or_prefix=job_id_or_prefix, users=users),
            write=False,
        )

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int = 100, chat: str | None = None
    ) -> list[Job]:
        """Jobs, newest first (one state, one chat: the CLI's list)."""
        states = (JobState(state),) if state is not None else ()
        return await self.query_jobs(states=states, chat=chat, limit=limit)

    async def query_jobs(
        self,
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
        """Jobs newest first, filtered (the web API's list; see
        :func:`~daemon.engine.store.reads.select_jobs`)."""
        query = functools.partial(
            select_jobs,
            states=tuple(states),
            chat=chat,
            chat_file=chat_file,
            user=user,
            users=users,
            before=before,
            limit=limit,
            character=character,
        )
        return await self._run(query, write=False)

    async def jobs_in(self, states: Iterable[JobState], *, limit: int = 1000) -> list[Job]:
        """Jobs in any of ``states``, oldest first."""
        return await self._run(
            functools.partial(reads.jobs_in, states=tuple(states), limit=limit), write=False
        )

    async def jobs_for(self, reply: ReplyKey) -> list[Job]:
        """Every job of ``reply``'s message in its chat (any revision, any state), oldest
        first."""

        def _list(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE chat = ? AND identity_name = ? "
                "AND identity_date = ? ORDER BY id",
                (reply.chat, reply.name, reply.date),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(_list, write=False)

    async def due_jobs(self, now: datetime, limit: int, *, newest: bool = False) -> list[Job]:
        """Queued jobs whose next_attempt_at is due, oldest first (``newest``: the newest
        ``limit`` of them, newest first)."""
        at = stamp(now)
        direction = "DESC" if newest else "ASC"

        def _due(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' "
                f"AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY id {direction} "
                "LIMIT ?",
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
            return parse_stamp(row[0]) if row and row[0] else None

        return await self._run(_next, write=False)

    async def next_wake_at(self) -> datetime | None:
        """When the runner next has something to do: the earliest queued job's due time, or an
        accepted one's commit (retry) time, if any. Reads only those rows (index on state)."""

        def _next(conn: sqlite3.Connection) -> datetime | None:
            row = conn.execute(
                "SELECT MIN(COALESCE(next_attempt_at, updated_at)) FROM jobs "
                "WHERE state IN ('queued', 'accepted')"
            ).fetchone()
            return parse_stamp(row[0]) if row and row[0] else None

        return await self._run(_next, write=False)

    async def changed_since(self, since: datetime, *, limit: int = 500) -> list[Job]:
        """Jobs updated after ``since``, oldest change first (index on updated_at): how the
        daemon hears of changes another process (the CLI) made."""

        def _list(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE updated_at > ? "
                "ORDER BY updated_at, id LIMIT ?",
                (stamp(since), limit),
            ).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(_list, write=False)

    def announce(self, job: Job | None, previous: JobState | None = None) -> None:
        """Tell the job listeners of a change made elsewhere (another process), or made from a
        worker thread through :class:`~daemon.engine.store.blocking.Blocking` (announced back
        in the event loop)."""
        self._changed(job, previous)

    async def transition(
        self,
        job_id: str,
        expected: States,
        new: JobState,
        *,
        check: bool = True,
        **fields: Any,
    ) -> Job | None:
        """Move a job to ``new`` only if its state is in ``expected``; ``None`` otherwise.

        The move must be one :data:`daemon.jobstate.TRANSITIONS` allows (IllegalMoveError
        otherwise; ``check=False`` only for tests that build a job's state by hand). Fields:
        attempts, last_error, prompt, images, meta (replaces), meta_update (merged into meta),
        next_attempt_at, message_index, now. ``None`` also for an unknown id.
        """
        move = job_move(job_id, expected, new, check=check, **fields)
        moved, previous = await self._run(move, write=True)
        self._changed(moved, previous)
        return moved

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
        check_move(expected, JobState.QUEUED)
        if max_attempts is not None:
            check_move(expected, JobState.FAILED)
        wanted = states_list(expected)
        at = aware_utc(now or now_utc())
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        due = at + timedelta(seconds=max(0.0, seconds))

        previous: list[JobState] = []

        def _resched(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                f"SELECT state, attempts FROM jobs WHERE id = ? AND state IN "
                f"({marks(len(wanted))})",
                (job_id, *wanted),
            ).fetchone()
            if row is None:
                return None
            previous.append(JobState(row["state"]))
            attempts = row["attempts"] + 1
            if max_attempts is not None and attempts >= max_attempts:
                state, message, next_at = (
                    JobState.FAILED.value,
                    f"gave up after {attempts} attempts: {error}",
                    None,
                )
            else:
                state, message, next_at = JobState.QUEUED.value, error, stamp(due)
            found = conn.execute(
                "UPDATE jobs SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?, "
                f"updated_at = ? WHERE id = ? RETURNING {_JOB_COLUMNS}",
                (state, attempts, message, next_at, stamp(at), job_id),
            ).fetchone()
            return _job_from_row(found)

        again = await self._run(_resched, write=True)
        self._changed(again, previous[0] if previous else None)
        return again

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
        check_move(expected, JobState.SUPERSEDED)
        old = await self.get_job(job_id)
        wanted = states_list(expected)
        at = aware_utc(now or now_utc())

        superseded: list[tuple[Job, JobState]] = []

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
                    current.reply.name,
                    current.reply.date,
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
                f"INSERT INTO jobs ({', '.join(values)}) VALUES ({marks(len(values))}) "
                f"RETURNING {_JOB_COLUMNS}",
                tuple(values.values()),
            ).fetchone()
            gone = conn.execute(
                "UPDATE jobs SET state = 'superseded', last_error = ?, next_attempt_at = NULL, "
                f"updated_at = ? WHERE id = ? RETURNING {_JOB_COLUMNS}",
                (f"regenerated as job {new_id}", stamp(at), current.id),
            ).fetchone()
            superseded.append((_job_from_row(gone), current.state))
            return _job_from_row(created)

        new = await self._run(_regen, write=True)
        self._changed(*superseded[0])
        self._changed(new)
        return new

    async def supersede(
        self, reply: ReplyKey, reason: str, *, keep: bool = True, now: datetime | None = None
    ) -> list[Job]:
        """Supersede queued, running and pending jobs of ``reply``'s message whose revision is
        not ``reply.revision`` (``keep=False``: whatever their revision). Accepted and final
        jobs are left alone: the committer checks the revision of accepted ones itself."""
        check_move(SUPERSEDABLE_STATES, JobState.SUPERSEDED)
        at = stamp(now or now_utc())
        states = states_list(SUPERSEDABLE_STATES)

        where = (
            "user = ? AND chat = ? AND identity_name = ? AND identity_date = ? "
            f"AND state IN ({marks(len(states))}) AND (? IS NULL OR revision != ?)"
        )
        kept = reply.revision if keep else None
        params = (reply.user, reply.chat, reply.name, reply.date, *states, kept, kept)
        return await self._supersede_where(where, params, reason, at)

    async def _supersede_where(
        self, where: str, params: tuple[Any, ...], reason: str, at: str
    ) -> list[Job]:
        previous: dict[str, JobState] = {}

        def _sup(conn: sqlite3.Connection) -> list[Job]:
            # The states before, in the same transaction: listeners hear what each job was.
            for row in conn.execute(f"SELECT id, state FROM jobs WHERE {where}", params):
                previous[row["id"]] = JobState(row["state"])
            rows = conn.execute(
                "UPDATE jobs SET state = 'superseded', last_error = ?, next_attempt_at = NULL, "
                f"updated_at = ? WHERE {where} RETURNING {_JOB_COLUMNS}",
                (reason, at, *params),
            ).fetchall()
            return sorted((_job_from_row(r) for r in rows), key=lambda j: j.id)

        gone = await self._run(_sup, write=True)
        for job in gone:
            self._changed(job, previous.get(job.id))
        return gone

    async def supersede_chat(
        self, chat: str, reason: str, *, now: datetime | None = None
    ) -> list[Job]:
        """Supersede every queued, running and pending job of a chat (the chat is gone)."""
        at = stamp(now or now_utc())
        states = states_list(SUPERSEDABLE_STATES)

        where = f"chat = ? AND state IN ({marks(len(states))})"
        return await self._supersede_where(where, (chat, *states), reason, at)

    async def resume_after_crash(self, *, now: datetime | None = None) -> int:
        """Jobs left in PROMPTING/IMAGING go back to QUEUED, due now; returns how many.

        Only the daemon calls this, once at start (a CLI process must not: the daemon may be
        running those jobs)."""
        check_move(RUNNING_STATES, JobState.QUEUED)
        at = stamp(now or now_utc())
        running = states_list(RUNNING_STATES)

        def _resume(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE jobs SET state = 'queued', next_attempt_at = ?, updated_at = ? "
                f"WHERE state IN ({marks(len(running))})",
                (at, at, *running),
            )
            return cur.rowcount

        return await self._run(_resume, write=True)

    async def release_held(self, *, now: datetime | None = None) -> int:
        """Queued jobs held by a spend cap (meta ``held``) become due now, so a cap raised
        while the daemon was stopped takes effect at once (a job still over a cap is held
        again); returns how many. Only the daemon calls this, at start."""
        at = stamp(now or now_utc())

        def _release(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE jobs SET next_attempt_at = ? WHERE state = 'queued' "
                "AND json_extract(meta, '$.held') IS NOT NULL",
                (at,),
            )
            return cur.rowcount

        return await self._run(_release, write=True)

    async def chat_counts(
        self, states: Iterable[JobState], *, users: Collection[str] | None = None
    ) -> dict[str, int]:
        """How many jobs in any of ``states`` each chat has (chats with none left out);
        ``users``: only theirs."""
        wanted = states_list(states)
        only, only_args = "", tuple[str, ...]()
        if users is not None:
            mine = sorted(users)
            only, only_args = f"AND user IN ({marks(len(mine))}) ", tuple(mine)

        def _counts(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                f"SELECT chat, COUNT(*) FROM jobs WHERE state IN ({marks(len(wanted))}) "
                f"{only}GROUP BY chat",
                (*wanted, *only_args),
            )
            return {str(row[0]): int(row[1]) for row in rows}

        return await self._run(_counts, write=False)

    async def counts(self, *, users: Collection[str] | None = None) -> dict[JobState, int]:
        """Jobs per state (every state present, zeros included); ``users``: only theirs."""
        return await self._run(functools.partial(reads.count_states, users=users), write=False)

    async def recent_errors(self, limit: int = 5) -> list[Job]:
        """Real failures, most recently updated first (see :func:`reads.recent_errors`)."""
        return await self._run(functools.partial(reads.recent_errors, limit=limit), write=False)
