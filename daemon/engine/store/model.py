"""The store's records: :class:`ChatRecord`, :class:`LedgerEntry`, job ids, idempotency keys and
the store's time format. The job's vocabulary (states, groups, moves, :class:`Job`) lives in
:mod:`daemon.jobstate`, below the store and the logs; it is re-exported here."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon.jobstate import (
    ACTIVE_STATES,
    FAILING_STATES,
    FINAL_STATES,
    OPEN_STATES,
    REGEN_FROM_STATES,
    SUPERSEDABLE_STATES,
    Job,
    JobState,
    ReplyKey,
    States,
)

if TYPE_CHECKING:
    from daemon.tavern.chat import Cursor

__all__ = [
    "ACTIVE_STATES",
    "FAILING_STATES",
    "FINAL_STATES",
    "OPEN_STATES",
    "REGEN_FROM_STATES",
    "SUPERSEDABLE_STATES",
    "ChatRecord",
    "Job",
    "JobState",
    "LedgerEntry",
    "ReplyKey",
    "States",
    "aware_utc",
    "marks",
    "new_job_id",
    "now_utc",
    "parse_stamp",
    "stamp",
    "states_list",
    "to_json",
]


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
    reply: ReplyKey  # the reply the image message illustrates, in the committed text
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
