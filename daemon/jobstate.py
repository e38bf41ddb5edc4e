"""The job's vocabulary and state machine, defined once: the states, their groups, the moves
allowed between them, the words shown for them, and :class:`Job`, the record every room passes.

It sits below the store and the logs (both use it) and above nothing but the chat's identity
type (imported only when a job's identity is asked for: short commands stay light). The store
refuses a move the table does not allow (:func:`check_move`); the clients (the inbox, the
extension) get the same names, groups and labels from ``GET /api/v1/meta``
(:func:`vocabulary`), not from copies of their own.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.tavern.chat import Message, MessageIdentity

__all__ = [
    "ACTIVE_STATES",
    "CANCELLABLE_STATES",
    "CHOICE_STATES",
    "FAILING_STATES",
    "FINAL_STATES",
    "GROUPS",
    "HISTORY_STATES",
    "INBOX_STATES",
    "LABELS",
    "OPEN_STATES",
    "PROGRESS_TEXT",
    "REGEN_FROM_STATES",
    "REJECTABLE_STATES",
    "RUNNING_STATES",
    "SUPERSEDABLE_STATES",
    "TRANSITIONS",
    "WAIT_STOP_STATES",
    "WORKING_STATES",
    "IllegalMoveError",
    "Job",
    "JobState",
    "ReplyKey",
    "States",
    "check_move",
    "vocabulary",
]


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting for a worker (also: waiting for a retry at next_attempt_at)
    PROMPTING = "prompting"  # the prompt writer is running
    IMAGING = "imaging"  # the image generator is running
    PENDING = "pending"  # images in pending/<id>/, waiting for the user
    ACCEPTED = "accepted"  # user (or approval=auto) accepted; waiting for commit
    COMMITTED = "committed"  # hidden image message written into the chat
    REJECTED = "rejected"  # user rejected (or cancelled before the images were ready)
    SUPERSEDED = "superseded"  # the reply changed (swipe/edit/regenerate/deleted) before commit
    FAILED = "failed"  # permanent failure or attempts exhausted; last_error says why


States = JobState | Iterable[JobState]
"""One state, or any collection of them (set, frozenset, list)."""

_S = JobState

# --- groups --------------------------------------------------------------------------------------

ACTIVE_STATES = frozenset({_S.QUEUED, _S.PROMPTING, _S.IMAGING})
"""Queued or running: no images yet."""

RUNNING_STATES = frozenset({_S.PROMPTING, _S.IMAGING})
"""A step is running (a crash leaves jobs here: they go back to queued at start)."""

FINAL_STATES = frozenset({_S.COMMITTED, _S.REJECTED, _S.SUPERSEDED, _S.FAILED})
"""Nothing more happens to the job by itself."""

OPEN_STATES = frozenset(set(JobState) - FINAL_STATES)
"""Not final: queued, prompting, imaging, pending, accepted."""

SUPERSEDABLE_STATES = frozenset(ACTIVE_STATES | {_S.PENDING})
"""What a changed reply supersedes. Accepted jobs are left to the committer, which checks the
revision itself and marks them with a reason the user can see."""

REGEN_FROM_STATES = frozenset({_S.PENDING, _S.FAILED, _S.REJECTED})
"""Where a regenerate replaces the job by a new one (a committed job gets a variant instead)."""

REJECTABLE_STATES = frozenset({_S.PENDING, _S.ACCEPTED, _S.FAILED})
"""Where reject applies: images on offer, accepted but not yet committed, or failed."""

CANCELLABLE_STATES = ACTIVE_STATES
"""Where cancel applies: queued or running, before any image is on offer."""

FAILING_STATES = frozenset(ACTIVE_STATES | {_S.ACCEPTED, _S.FAILED})
"""Where a ``last_error`` is a real failure (failed, or waiting to retry after one); in the other
states it is history (why a job was superseded or not committed) or was overcome."""

WAIT_STOP_STATES = frozenset(FINAL_STATES | {_S.PENDING})
"""Where ``generate --wait`` stops: the images wait for the user, or the job is done."""

INBOX_STATES = (_S.QUEUED, _S.PROMPTING, _S.IMAGING, _S.PENDING, _S.ACCEPTED, _S.FAILED)
"""What the inbox lists (in this order of states when it groups them)."""

HISTORY_STATES = (_S.COMMITTED, _S.REJECTED, _S.FAILED, _S.SUPERSEDED)
"""What the history page lists."""

CHOICE_STATES = (_S.PENDING, _S.FAILED)
"""The inbox's grid: jobs waiting for the user's decision."""

WORKING_STATES = (_S.QUEUED, _S.PROMPTING, _S.IMAGING, _S.ACCEPTED)
"""The inbox's strip above the grid: jobs under way."""

GROUPS: Mapping[str, frozenset[JobState] | tuple[JobState, ...]] = {
    "active": ACTIVE_STATES,
    "running": RUNNING_STATES,
    "final": FINAL_STATES,
    "open": OPEN_STATES,
    "supersedable": SUPERSEDABLE_STATES,
    "regen_from": REGEN_FROM_STATES,
    "rejectable": REJECTABLE_STATES,
    "cancellable": CANCELLABLE_STATES,
    "failing": FAILING_STATES,
    "wait_stop": WAIT_STOP_STATES,
    "inbox": INBOX_STATES,
    "choice": CHOICE_STATES,
    "working": WORKING_STATES,
    "history": HISTORY_STATES,
}

# --- the moves -----------------------------------------------------------------------------------

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # prompt, image (a job with a prompt skips to imaging), a retry later (reschedule), a
    # changed reply, a permanent failure, a cancel
    _S.QUEUED: frozenset(
        {_S.QUEUED, _S.PROMPTING, _S.IMAGING, _S.SUPERSEDED, _S.FAILED, _S.REJECTED}
    ),
    # on to the image; back to queued (drain, crash, retry); changed reply; failure; cancel
    _S.PROMPTING: frozenset({_S.IMAGING, _S.QUEUED, _S.SUPERSEDED, _S.FAILED, _S.REJECTED}),
    # progress reports (imaging -> imaging); images on offer, or accepted at once with
    # approval = "auto"; back to queued; changed reply; failure; cancel
    _S.IMAGING: frozenset(
        {_S.IMAGING, _S.PENDING, _S.ACCEPTED, _S.QUEUED, _S.SUPERSEDED, _S.FAILED, _S.REJECTED}
    ),
    # accept, reject, a changed reply or a regenerate, earlier images carried (pending ->
    # pending), a failure
    _S.PENDING: frozenset({_S.PENDING, _S.ACCEPTED, _S.REJECTED, _S.SUPERSEDED, _S.FAILED}),
    # committed; a commit retry later (accepted -> accepted); reject before the commit; not
    # committable (the reply changed: superseded; or failed)
    _S.ACCEPTED: frozenset({_S.ACCEPTED, _S.COMMITTED, _S.REJECTED, _S.SUPERSEDED, _S.FAILED}),
    _S.COMMITTED: frozenset(),  # more images of it are a new (variant) job
    # regenerated; restored from the trash (undo): to pending, or failed for a dismissed one
    _S.REJECTED: frozenset({_S.SUPERSEDED, _S.PENDING, _S.FAILED}),
    # a swipe back: its images return from the shelf (pending), or it runs again (queued)
    _S.SUPERSEDED: frozenset({_S.PENDING, _S.QUEUED}),
    _S.FAILED: frozenset({_S.REJECTED, _S.SUPERSEDED}),  # rejected, or regenerated
}
"""Every move a job may make: ``TRANSITIONS[from]`` is the set of states it may go to."""


class IllegalMoveError(ValueError):
    """A move the state machine does not allow: a bug in the caller, never the user's doing."""


def check_move(expected: States, new: JobState) -> None:
    """Refuse (IllegalMoveError) a move from any of ``expected`` to ``new`` not in the table."""
    sources = (expected,) if isinstance(expected, JobState) else tuple(expected)
    bad = sorted(JobState(s).value for s in sources if new not in TRANSITIONS[JobState(s)])
    if bad:
        raise IllegalMoveError(f"no job moves from {', '.join(bad)} to {JobState(new).value}")


# --- words ---------------------------------------------------------------------------------------

LABELS: Mapping[JobState, str] = {
    _S.QUEUED: "queued",
    _S.PROMPTING: "writing the prompt",
    _S.IMAGING: "drawing the image",
    _S.PENDING: "ready for review",
    _S.ACCEPTED: "accepted, writing into the chat",
    _S.COMMITTED: "committed",
    _S.REJECTED: "rejected",
    _S.SUPERSEDED: "superseded",
    _S.FAILED: "failed",
}
"""A few plain words for each state (the clients show these)."""

PROGRESS_TEXT: Mapping[JobState, str] = {
    _S.QUEUED: "waiting for its turn",
    _S.PROMPTING: "writing the prompt",
    _S.IMAGING: "drawing",
    _S.ACCEPTED: "writing into the chat",
}
"""The progress line of a job that is under way (the API's ``progress.text`` default)."""


def _ordered(members: frozenset[JobState] | tuple[JobState, ...]) -> list[str]:
    """A tuple keeps its own order (the inbox's, the history's); a set the states' order."""
    if isinstance(members, tuple):
        return [s.value for s in members]
    return [s.value for s in JobState if s in members]


def vocabulary() -> dict[str, Any]:
    """States, groups, labels and moves as JSON (``GET /api/v1/meta``)."""
    return {
        "states": [s.value for s in JobState],
        "groups": {name: _ordered(members) for name, members in GROUPS.items()},
        "labels": {s.value: text for s, text in LABELS.items()},
        "progress": {s.value: text for s, text in PROGRESS_TEXT.items()},
        "transitions": {s.value: sorted(t.value for t in TRANSITIONS[s]) for s in JobState},
    }


# --- the record ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyKey:
    """Which reply a job illustrates, in which text: the user, the chat, the reply's identity
    (its speaker's name and first send date, stable across swipes and edits) and the text's
    revision. With the regen counter it is the job's idempotency key."""

    user: str
    chat: str  # chat path relative to the data root, POSIX style
    name: str  # the identity's name
    date: str  # MessageIdentity.first_date
    revision: str  # str(Revision)

    @classmethod
    def of(cls, user: str, chat: str, message: Message) -> ReplyKey:
        """The reply ``message`` of ``user``'s ``chat`` (relative path), in its current text."""
        identity = message.identity
        return cls(user, chat, identity.name, identity.first_date, str(message.revision))

    def identity(self, index: int) -> MessageIdentity:
        """The chat's identity of this reply (``index``: where it was last seen, a hint)."""
        from daemon.tavern.chat import MessageIdentity

        return MessageIdentity(index, self.name, self.date)

    def key(self, regen: int = 0) -> str:
        """The job's idempotency key; ``|`` inside parts is escaped so keys never collide."""
        parts = (self.user, self.chat, self.name, self.date, self.revision)
        base = "|".join(p.replace("\\", "\\\\").replace("|", "\\|") for p in parts)
        return f"{base}|regen:{regen}" if regen else base


@dataclass(frozen=True, slots=True)
class Job:
    """One job: the reply it illustrates, where it stands, its prompt and its images (the
    record every room passes)."""

    id: str  # sortable unique id (time-ordered, ULID-like, 26 chars)
    key: str  # idempotency key: reply.key(regen)
    reply: ReplyKey  # which reply (user, chat, identity), in which text (revision)
    character: str  # card file stem, or group id for group chats
    is_group: bool
    speaker: str  # message name (display name of the character/member)
    message_index: int  # ST mesid at detection (a hint)
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
    def user(self) -> str:
        """The ST user handle (``reply.user``)."""
        return self.reply.user

    @property
    def chat(self) -> str:
        """The chat path relative to the data root, POSIX style (``reply.chat``)."""
        return self.reply.chat

    @property
    def revision(self) -> str:
        """The text the job illustrates (``reply.revision``)."""
        return self.reply.revision

    @property
    def identity(self) -> MessageIdentity:
        """The reply this job illustrates (the index is the detection-time hint)."""
        return self.reply.identity(self.message_index)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES
