"""The ``our_writes`` table: which versions of a chat the daemon itself wrote, so the watcher
can tell its own writes from SillyTavern's.

A version is known by its :class:`~daemon.tavern.write.FileVersion` (inode, size, mtime),
recorded right before the rename that puts it in place. Rows from before schema 3 hold a
sha256 of the bytes instead; they are still honoured (:func:`our_write_in` says when to ask by
hash) until newer writes push them out.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from daemon.engine.store.db import Database
from daemon.engine.store.model import now_utc, stamp

if TYPE_CHECKING:
    from daemon.tavern.write import FileVersion

OUR_WRITES_KEPT = 8
"""How many of our own writes are remembered per chat."""


def record_write_in(conn: sqlite3.Connection, chat: str, version: FileVersion, at: str) -> None:
    """Remember a version of a chat we wrote, keeping the last few per chat (on a connection:
    see :class:`~.blocking.Blocking`)."""
    conn.execute(
        "INSERT INTO our_writes (chat, sha256, inode, size, mtime_ns, at) "
        "VALUES (?, '', ?, ?, ?, ?)",
        (chat, version.inode, version.size, version.mtime_ns, at),
    )
    conn.execute(
        "DELETE FROM our_writes WHERE chat = ? AND id NOT IN "
        "(SELECT id FROM our_writes WHERE chat = ? ORDER BY id DESC LIMIT ?)",
        (chat, chat, OUR_WRITES_KEPT),
    )


def our_write_in(conn: sqlite3.Connection, chat: str, version: FileVersion) -> bool | None:
    """Whether ``version`` is one of our last writes of the chat; None when it is not by its
    identity but writes recorded by hash (before schema 3) remain: ask
    :func:`our_hashed_write_in` with the bytes' sha256."""
    row = conn.execute(
        "SELECT MAX(inode = ? AND size = ? AND mtime_ns = ?), MAX(inode IS NULL) "
        "FROM our_writes WHERE chat = ?",
        (version.inode, version.size, version.mtime_ns, chat),
    ).fetchone()
    if row[0]:
        return True
    return None if row[1] else False


def our_hashed_write_in(conn: sqlite3.Connection, chat: str, sha256: str) -> bool:
    """Whether ``sha256`` is the hash of one of our writes recorded before schema 3."""
    row = conn.execute(
        "SELECT 1 FROM our_writes WHERE chat = ? AND inode IS NULL AND sha256 = ? LIMIT 1",
        (chat, sha256),
    ).fetchone()
    return row is not None


class OurWrites(Database):
    """The last few versions of each chat that we wrote."""

    async def record_write(
        self, chat: str, version: FileVersion, *, now: datetime | None = None
    ) -> None:
        """Remember a version of a chat WE wrote (the last few per chat are kept)."""
        at = stamp(now or now_utc())
        await self._run(partial(record_write_in, chat=chat, version=version, at=at), write=True)

    async def our_write(self, chat: str, version: FileVersion) -> bool | None:
        """:func:`our_write_in`."""
        return await self._run(partial(our_write_in, chat=chat, version=version), write=False)
