"""The store's records and vocabulary: job states, :class:`Job`, :class:`ChatRecord`,
:class:`LedgerEntry`, job ids, idempotency keys and the store's time format."""

from __future__ import annotations

import enum
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.tavern.chat import Cursor, MessageIdentity


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

FAILING_STATES = frozenset(ACTIVE_STATES | {JobState.ACCEPTED, JobState.FAILED})
"""Where a ``last_error`` is a real failure (failed, or waiting to retry after one); in the other
states it is history (why a job was superseded or not committed) or was overcome."""


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
        from daemon.tavern.chat import MessageIdentity

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
    An id for another time (``now_ms``, or a clock set back) gets fresh random bits: pinning it
    to the latest time seen would make every later id share its time and almost all of its
    random part, so the short ids users type would stop being unique.
    """
    global _id_last
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _id_lock:
        last_ms, last_rand = _id_last
        if ms == last_ms:
            rand = (last_rand + 1) & ((1 << 80) - 1)
        else:
            import secrets  # here, not at import: a read-only command never makes an id

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


def aware_utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the store needs timezone-aware times")
    return when.astimezone(UTC)


def stamp(when: datetime) -> str:
    # Fixed width, so text comparison in SQL is time order.
    return aware_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> datetime:
    """The inverse of :func:`stamp` (ValueError for anything else). fromisoformat, not
    strptime: the same result for this fixed form, without loading ``_strptime`` and its
    locale machinery into every short-lived command."""
    if len(text) != 27 or text[10] != "T" or text[19] != "." or not text.endswith("Z"):
        raise ValueError(f"not a store time stamp: {text!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def now_utc() -> datetime:
    return datetime.now(UTC)


def states_list(states: States) -> list[str]:
    """One state or many, as sorted SQL values."""
    if isinstance(states, JobState):
        return [states.value]
    return sorted(JobState(s).value for s in states)


def marks(n: int) -> str:
    """``n`` SQL placeholders."""
    return ", ".join("?" * n)


def to_json(value: Any) -> str:
    """Compact, key-sorted JSON (the same value always gives the same text)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
