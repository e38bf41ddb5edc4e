"""SQLite job store: jobs, per-chat cursors, and the commit ledger.

CONTRACT STUB (to be implemented by the engine-data helper). Signatures are the agreed API;
bodies raise NotImplementedError until implemented.

WAL mode, ``synchronous=FULL``, one connection used from one worker thread; every public method
is async and runs its SQL off the event loop (``anyio.to_thread.run_sync`` with a lock).
Jobs may run twice: every state transition is guarded by the expected current state(s).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.tavern.chat import Cursor


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


@dataclass(frozen=True, slots=True)
class Job:
    id: str  # sortable unique id (time-ordered, e.g. ULID-like, 26 chars)
    key: str  # idempotency key: user|chat|identity key|revision (+|regen:N)
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


class Store:
    """The job store. Open with :meth:`open`; close with :meth:`close`."""

    @classmethod
    async def open(cls, path: Path) -> Store:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # jobs
    async def create_job(self, **fields: Any) -> Job | None:
        """Insert a queued job; ``None`` if a job with the same ``key`` exists (idempotent)."""
        raise NotImplementedError

    async def get_job(self, job_id_or_prefix: str) -> Job:
        """By id or unique prefix; JobError when unknown or ambiguous."""
        raise NotImplementedError

    async def list_jobs(self, *, state: JobState | None = None, limit: int = 100) -> list[Job]:
        raise NotImplementedError

    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        """Queued jobs whose next_attempt_at is due, oldest first."""
        raise NotImplementedError

    async def transition(
        self,
        job_id: str,
        expected: frozenset[JobState] | JobState,
        new: JobState,
        **fields: Any,
    ) -> Job | None:
        """Move a job to ``new`` only if its state is in ``expected``; ``None`` otherwise."""
        raise NotImplementedError

    async def supersede(
        self,
        user: str,
        chat: str,
        identity_name: str,
        identity_date: str,
        keep_revision: str | None,
        reason: str,
    ) -> list[Job]:
        """Supersede non-final, non-committed jobs of that reply whose revision != keep_revision."""
        raise NotImplementedError

    async def resume_after_crash(self) -> int:
        """Jobs left in PROMPTING/IMAGING go back to QUEUED; returns how many."""
        raise NotImplementedError

    async def counts(self) -> dict[JobState, int]:
        raise NotImplementedError

    # cursors
    async def get_cursor(self, chat: str) -> Cursor | None:
        raise NotImplementedError

    async def set_cursor(self, chat: str, cursor: Cursor) -> None:
        raise NotImplementedError

    async def known_chats(self) -> set[str]:
        raise NotImplementedError
