"""The ``our_writes`` table: hashes of the chat bytes the daemon itself wrote, so the watcher
can tell its own writes from SillyTavern's."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from functools import partial

from daemon.engine.store.db import Database
from daemon.engine.store.model import now_utc, stamp

OUR_WRITES_KEPT = 8
"""How many hashes of our own chat writes are remembered per chat."""


def record_write_in(conn: sqlite3.Connection, chat: str, sha256: str, at: str) -> None:
    """Remember the hash of bytes we wrote to a chat, keeping the last few per chat (on a
    connection: see :class:`~.blocking.Blocking`)."""
    conn.execute("INSERT INTO our_writes (chat, sha256, at) VALUES (?, ?, ?)", (chat, sha256, at))
    conn.execute(
        "DELETE FROM our_writes WHERE chat = ? AND id NOT IN "
        "(SELECT id FROM our_writes WHERE chat = ? ORDER BY id DESC LIMIT ?)",
        (chat, chat, OUR_WRITES_KEPT),
    )


def is_our_write_in(conn: sqlite3.Connection, chat: str, sha256: str) -> bool:
    """Whether ``sha256`` is the hash of one of our last writes of the chat."""
    row = conn.execute(
        "SELECT 1 FROM our_writes WHERE chat = ? AND sha256 = ? LIMIT 1", (chat, sha256)
    ).fetchone()
    return row is not None


class OurWrites(Database):
    """The last few hashes of our own writes per chat."""

    async def record_write(self, chat: str, sha256: str, *, now: datetime | None = None) -> None:
        """Remember the hash of bytes WE wrote to a chat (the last few per chat are kept)."""
        at = stamp(now or now_utc())
        await self._run(partial(record_write_in, chat=chat, sha256=sha256, at=at), write=True)

    async def is_our_write(self, chat: str, sha256: str) -> bool:
        return await self._run(partial(is_our_write_in, chat=chat, sha256=sha256), write=False)
