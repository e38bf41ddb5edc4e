"""Accepting a pending job: PENDING -> ACCEPTED with the images kept, as one blocking step on
the store's job calls. The engine runs it in one worker-thread trip on its store
(:func:`daemon.engine.jobs.pipeline.accept_job`); ``st-imagegen accept`` runs the same step on
a connection of its own when the config is known valid (:mod:`daemon.cli.quick`). The move is
the store's compare-and-set: of two clients accepting one job, one wins and the other gets
"cannot accept job …: it is accepted"; the commit into the chat is the daemon's, once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

from daemon.engine.jobs.folders import discard_images, kept_images
from daemon.errors import JobError, JobStateError
from daemon.jobstate import Job, JobState, States

__all__ = [
    "COMMIT_WAIT_SECONDS",
    "JobCalls",
    "accept_blocking",
    "check_actionable",
    "raise_state",
    "state_message",
    "wait_for_commit",
]

COMMIT_WAIT_SECONDS = 10.0
"""How long ``st-imagegen accept`` waits for a running daemon to write the images into the
chat before it says the commit is still to come (it usually takes well under a second)."""

COMMIT_POLL_SECONDS = 0.05
"""How often that wait reads the job's state (a read-only query)."""


class JobCalls(Protocol):
    """The store's blocking job calls (``Store.blocking``, or ``moves.Direct``)."""

    def job(self, job_id: str) -> Job: ...

    def transition(
        self, job_id: str, expected: States, new: JobState, **fields: Any
    ) -> tuple[Job | None, JobState | None]: ...


def state_message(job: Job, action: str) -> str:
    why = f" ({job.last_error})" if job.last_error else ""
    return f"cannot {action} job {job.id}: it is {job.state.value}{why}"


def check_actionable(job: Job, action: str) -> None:
    if job.state is not JobState.PENDING:
        raise JobStateError(state_message(job, action))


def raise_state(job: Job, action: str) -> NoReturn:
    raise JobStateError(state_message(job, action))


def accept_blocking(
    calls: JobCalls, state_dir: Path, job_ref: str, keep: Sequence[int] | None = None
) -> tuple[Job, JobState | None]:
    """PENDING -> ACCEPTED, keeping only images ``keep`` (1-based, in the user's order) when
    given, else every image still in the job's folder; returns the accepted job and the state
    it left, for the caller to announce (blocking: never on the event loop).

    Images the user deleted from the folder are not kept either. The images not kept are
    removed from the folder and remembered in ``meta["not_kept"]``; the committer commits
    exactly ``job.images``, in that order.
    """
    job = calls.job(job_ref)
    check_actionable(job, "accept")
    present = [p.name for p in kept_images(state_dir, job.id)]
    if keep:
        wanted = list(dict.fromkeys(keep))
        bad = [n for n in wanted if n < 1 or n > len(job.images)]
        if bad:
            raise JobError(
                f"job {job.id} has images 1..{len(job.images)}; no image {bad[0]} to keep"
            )
        chosen = [job.images[n - 1] for n in wanted if job.images[n - 1] in present]
    else:
        chosen = present
    if not chosen:
        current = calls.job(job.id)
        if current.state is not JobState.PENDING:  # another client won: say what happened
            raise_state(current, "accept")
        raise JobError(f"job {job.id} has no images left to accept (reject it instead)")
    not_kept = [name for name in dict.fromkeys((*job.images, *present)) if name not in chosen]
    meta: dict[str, Any] = {"not_kept": not_kept}
    prompts = job.meta.get("image_prompts")
    if isinstance(prompts, list):  # each kept image keeps the prompt that made it
        own = {name: prompts[i] for i, name in enumerate(job.images) if i < len(prompts)}
        meta["image_prompts"] = [own.get(name, job.prompt) for name in chosen]
        meta["earlier_count"] = 0
    moved, previous = calls.transition(
        job.id,
        JobState.PENDING,
        JobState.ACCEPTED,
        images=tuple(chosen),
        meta_update=meta,
        next_attempt_at=None,
        last_error=None,
    )
    if moved is None:
        raise_state(calls.job(job.id), "accept")
    discard_images(state_dir, job.id, not_kept)
    return moved, previous


def wait_for_commit(db_path: Path, job_id: str) -> Job | None:
    """The job once a running daemon has acted on the accept (committed, or not committable:
    superseded, failed, rejected), or as it still stands after :data:`COMMIT_WAIT_SECONDS`;
    None when the store cannot be read (blocking: read-only queries, never a write)."""
    from daemon.engine.store.reads import find_job
    from daemon.engine.store.schema import open_read_only

    deadline = time.monotonic() + COMMIT_WAIT_SECONDS
    conn = open_read_only(db_path, timeout=COMMIT_WAIT_SECONDS)
    if conn is None:
        return None
    with contextlib.closing(conn):
        try:
            job = find_job(conn, job_id)
            while job.state is JobState.ACCEPTED and time.monotonic() < deadline:
                time.sleep(COMMIT_POLL_SECONDS)
                job = find_job(conn, job_id)
        except (sqlite3.Error, JobError):
            return None
    return job
