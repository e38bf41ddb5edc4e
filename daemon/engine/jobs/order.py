"""Which queued job starts next: the chat a person is looking at first, newest reply first,
round-robin across chats, and none left behind.

1. **Starving** jobs (waiting longer than :data:`STARVE_AFTER`) go first, oldest first: whatever
   else happens, every job starts within that time of the slots freeing up.
2. **Active chats** next: a chat saved within :data:`ACTIVE_WINDOW` (someone is chatting in it),
   or one a tab has open (the SillyTavern extension lists the open chat's jobs when it opens it
   and when it reconnects; :meth:`Attention.viewed`).
3. **Background** last (backfill, catch-up after downtime, other people's chats).

Within a tier, each chat's jobs go newest first (the reply on screen before the ones above
it), and chats take turns: every chat's newest job, then every chat's second newest, and so on
(round-robin). Among active chats in the same turn, the one saved (or opened) most recently goes
first: that is the one on screen. Among background chats in the same turn, the one whose last
job started longest ago goes first. So one busy chat, or a backfill of hundreds of chats,
cannot hold back the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from daemon.engine.store.model import Job

__all__ = ["ACTIVE_WINDOW", "STARVE_AFTER", "Attention", "order"]

ACTIVE_WINDOW = 60.0
"""Seconds a save (or a tab opening the chat) keeps a chat active."""

STARVE_AFTER = timedelta(minutes=10)
"""A job queued this long goes ahead of everything (oldest first)."""

_KEPT = 4096  # marks remembered before the oldest are dropped


def chat_file(chat: str) -> str:
    """The chat path's file stem (ST's chatId), as the extension names an open chat."""
    name = chat.rsplit("/", 1)[-1]
    return name[:-6] if name.endswith(".jsonl") else name


class Attention:
    """Which chats a person is looking at now (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._saved: dict[str, float] = {}  # chat path -> time of its latest save
        self._viewed: dict[str, float] = {}  # chat file stem -> time a tab opened it

    def saved(self, chat: str, at: float | None = None) -> None:
        self._mark(self._saved, chat, at)

    def viewed(self, file_stem: str, at: float | None = None) -> None:
        self._mark(self._viewed, file_stem, at)

    def _mark(self, marks: dict[str, float], key: str, at: float | None) -> None:
        marks.pop(key, None)
        marks[key] = self.clock() if at is None else at
        while len(marks) > _KEPT:
            marks.pop(next(iter(marks)))

    def looked_at(self, chat: str, now: float | None = None) -> float | None:
        """When the chat was last saved or opened, if within :data:`ACTIVE_WINDOW`."""
        now = self.clock() if now is None else now
        marks = [self._saved.get(chat), self._viewed.get(chat_file(chat))]
        recent = [at for at in marks if at is not None and now - at <= ACTIVE_WINDOW]
        return max(recent) if recent else None

    def is_active(self, chat: str, now: float | None = None) -> bool:
        return self.looked_at(chat, now) is not None


def order(
    jobs: Sequence[Job],
    *,
    now: datetime,
    looked_at: Callable[[str], float | None],
    last_started: Mapping[str, float],
) -> list[Job]:
    """``jobs`` (queued, due) in the order to start them (see the module docstring).
    ``looked_at``: chat path -> when a person last saved or opened it, ``None`` when not
    active (:meth:`Attention.looked_at`); ``last_started``: chat path -> when its latest job
    started (the same clock)."""
    starving = sorted((j for j in jobs if now - j.created_at > STARVE_AFTER), key=lambda j: j.id)
    rest = [j for j in jobs if now - j.created_at <= STARVE_AFTER]
    per_chat: dict[str, list[Job]] = {}
    for job in sorted(rest, key=lambda j: j.id, reverse=True):  # newest first in each chat
        per_chat.setdefault(job.chat, []).append(job)
    ranked: list[tuple[int, int, float, int, Job]] = []
    # Ties within a turn: the newest reply first.
    by_newest = sorted(per_chat, key=lambda chat: per_chat[chat][0].id, reverse=True)
    for rank, chat in enumerate(by_newest):
        seen = looked_at(chat)
        if seen is not None:  # active: the most recently looked at first
            tier, within = 0, -seen
        else:  # background: started longest ago first
            tier, within = 1, last_started.get(chat, float("-inf"))
        for turn, job in enumerate(per_chat[chat]):
            ranked.append((tier, turn, within, rank, job))
    ranked.sort(key=lambda item: item[:4])
    return [*starving, *(item[4] for item in ranked)]
