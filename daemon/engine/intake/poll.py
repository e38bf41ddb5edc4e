"""The adaptive stat poll, for data roots where inotify events do not arrive (``watchmode``).

Two beats: the chats saved recently (the ones someone is chatting in) are stat'ed every
:data:`HOT_INTERVAL`; the whole tree is walked (one ``scandir`` per folder, one ``stat`` per chat,
the :class:`~daemon.engine.intake.watch.StatIndex` scan) every :data:`FULL_INTERVAL`. A chat stays
hot for :data:`HOT_WINDOW` after its latest change. An idle daemon with thousands of chats thus
costs one walk every few seconds and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.engine.intake.watch import StatIndex

__all__ = ["FULL_INTERVAL", "HOT_INTERVAL", "HOT_WINDOW", "Poller"]

HOT_INTERVAL = 0.5
"""Seconds between stats of a recently saved chat."""

FULL_INTERVAL = 4.0
"""Seconds between walks of the whole tree (new chats, chats not saved lately)."""

HOT_WINDOW = 600.0
"""Seconds a chat stays on the fast beat after its latest change."""


class Poller:
    """Which chats changed, by stat, on two beats. Not thread-safe: one caller at a time (the
    daemon calls it from one worker thread at a time)."""

    def __init__(
        self,
        index: StatIndex,
        *,
        hot_interval: float = HOT_INTERVAL,
        full_interval: float = FULL_INTERVAL,
        hot_window: float = HOT_WINDOW,
    ) -> None:
        self.index = index
        self.hot_interval = hot_interval
        self.full_interval = full_interval
        self.hot_window = hot_window
        self._hot: dict[str, float] = {}  # rel -> time of its latest change
        self._next_full = 0.0
        self.full_scans = 0

    def heat(self, rels: Iterable[str], now: float) -> None:
        """Put these chats on the fast beat (they just changed)."""
        for rel in rels:
            self._hot[rel] = now

    @property
    def hot(self) -> int:
        return len(self._hot)

    def next_at(self, now: float) -> float:
        """When :meth:`poll` has something to do next."""
        if self._hot:
            return min(self._next_full, now + self.hot_interval)
        return self._next_full

    def full_due(self) -> None:
        """Walk the whole tree at the next :meth:`poll`."""
        self._next_full = 0.0

    def poll(self, now: float) -> list[str]:
        """The ``rel`` of every chat changed since the last look (blocking: stats files)."""
        for rel, at in list(self._hot.items()):
            if now - at > self.hot_window:
                del self._hot[rel]
        if now >= self._next_full:
            self._next_full = now + self.full_interval
            self.full_scans += 1
            changed = self.index.scan()
        else:
            changed = [rel for rel in list(self._hot) if self.index.restat(rel)]
        self.heat(changed, now)
        return changed
