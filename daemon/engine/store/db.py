"""One SQLite connection shared by the table classes, used from worker threads under a lock."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

import anyio.to_thread

from daemon.engine.store.moves import transaction as _transaction
from daemon.engine.store.schema import connect, store_error
from daemon.errors import StoreError

T = TypeVar("T")


class Database:
    """The connection and its transactions; every write is one ``BEGIN IMMEDIATE`` transaction.

    Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Open (creating and migrating as needed) the store at ``path``."""
        conn = await anyio.to_thread.run_sync(connect, path)
        return cls(path, conn)

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(_close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only query ``fn`` (e.g. from :mod:`~daemon.engine.store.reads`) on the
        store's connection, in its worker thread."""
        return await self._run(fn, write=False)

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        return await anyio.to_thread.run_sync(functools.partial(self._call, fn, write))

    def call_blocking(
        self, fn: Callable[[sqlite3.Connection], T], *, write: bool, durable: bool = True
    ) -> T:
        """``fn(conn)`` from a worker thread that is already off the event loop (never call it
        on the loop: it blocks), so a step that also does file work pays one thread trip, not
        one per store call. ``write``: one ``BEGIN IMMEDIATE`` transaction, as :meth:`_run`.

        ``durable=False`` commits without waiting for the disk (``synchronous = NORMAL`` for
        this one transaction): only for a change the next run redoes from what is on disk when
        a power cut loses it. The next durable transaction makes it durable too, and it is
        never seen torn (WAL)."""
        return self._call(fn, write, durable)

    def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool, durable: bool = True) -> T:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"the state store {str(self.path)!r} is closed")
            try:
                if not write:
                    return fn(conn)
                if not durable:
                    conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    return _transaction(conn, fn)
                finally:
                    if not durable:
                        conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc

    async def schema_version(self) -> int:
        def _version(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

        return await self._run(_version, write=False)

    async def integrity_problems(self, limit: int = 5) -> list[str]:
        """``PRAGMA quick_check``'s findings (empty when the file is sound)."""

        def _check(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(f"PRAGMA quick_check({int(limit)})").fetchall()
            found = [str(row[0]) for row in rows]
            return [] if found == ["ok"] else found

        return await self._run(_check, write=False)
