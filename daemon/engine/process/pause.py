"""The pause switch: no new job starts while paused (all chats, or some), until resumed.

Kept in ``<state_dir>/paused.json`` so the CLI, the web inbox and the runner share it across
processes. Running jobs finish; accepted images are still written into their chats (the user
chose them). A file that cannot be read counts as "not paused" (logged by the caller).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["PAUSE_FILE", "Paused", "read_pause", "set_pause"]

PAUSE_FILE = "paused.json"


@dataclass(frozen=True, slots=True)
class Paused:
    everything: bool = False
    chats: frozenset[str] = field(default_factory=frozenset)
    since: str | None = None  # ISO time of the last change

    def holds(self, chat: str) -> bool:
        """True when a job of ``chat`` must not start now."""
        return self.everything or chat in self.chats

    @property
    def active(self) -> bool:
        return self.everything or bool(self.chats)

    def to_json(self) -> dict[str, Any]:
        return {"all": self.everything, "chats": sorted(self.chats), "since": self.since}


def read_pause(state_dir: Path) -> Paused:
    """The switch as stored (not paused when there is no file or it is not valid)."""
    try:
        data: Any = json.loads((state_dir / PAUSE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Paused()
    if not isinstance(data, dict):
        return Paused()
    chats = data.get("chats")
    since = data.get("since")
    return Paused(
        everything=data.get("all") is True,
        chats=frozenset(c for c in chats if isinstance(c, str))
        if isinstance(chats, list)
        else frozenset(),
        since=since if isinstance(since, str) else None,
    )


def set_pause(state_dir: Path, paused: bool, chat: str | None = None) -> Paused:
    """Pause (or resume) everything, or one ``chat``; written atomically. Resuming everything
    also resumes every single chat."""
    now = read_pause(state_dir)
    everything, chats = now.everything, set(now.chats)
    if chat is None:
        everything = paused
        if not paused:
            chats.clear()
    elif paused:
        chats.add(chat)
    else:
        chats.discard(chat)
    after = Paused(everything, frozenset(chats), datetime.now(UTC).isoformat(timespec="seconds"))
    state_dir.mkdir(parents=True, exist_ok=True)
    temp = state_dir / f".{PAUSE_FILE}.{os.getpid()}.tmp"
    temp.write_text(json.dumps(after.to_json()), encoding="utf-8")
    try:
        temp.replace(state_dir / PAUSE_FILE)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return after
