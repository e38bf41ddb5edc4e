"""The ``cursors`` table: per chat, how far detection has read and its counters."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from daemon.engine.store.db import Database
from daemon.engine.store.model import ChatRecord, now_utc, parse_stamp, stamp, to_json
from daemon.tavern.chat import Cursor


class Cursors(Database):
    """Per-chat cursors and detection state."""

    async def get_cursor(self, chat: str) -> Cursor | None:
        record = await self.get_chat(chat)
        return record.cursor if record else None

    async def get_chat(self, chat: str) -> ChatRecord | None:
        """The chat's cursor, detection state and first-seen time; ``None`` if never seen."""

        def _get(conn: sqlite3.Connection) -> ChatRecord | None:
            row = conn.execute(
                "SELECT chat, cursor, data, first_seen, updated_at FROM cursors WHERE chat = ?",
                (chat,),
            ).fetchone()
            if row is None:
                return None
            return ChatRecord(
                chat=row["chat"],
                cursor=Cursor.from_json(row["cursor"]),
                data=json.loads(row["data"]),
                first_seen=parse_stamp(row["first_seen"]),
                updated_at=parse_stamp(row["updated_at"]),
            )

        return await self._run(_get, write=False)

    async def set_cursor(
        self,
        chat: str,
        cursor: Cursor,
        *,
        data: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Store the chat's cursor (and detection state; ``None`` keeps the stored one)."""
        at = stamp(now or now_utc())
        data_json = to_json(dict(data)) if data is not None else None

        def _set(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO cursors (chat, cursor, data, first_seen, updated_at) "
                "VALUES (?, ?, COALESCE(?, '{}'), ?, ?) ON CONFLICT (chat) DO UPDATE SET "
                "cursor = excluded.cursor, data = COALESCE(?, cursors.data), "
                "updated_at = excluded.updated_at",
                (chat, cursor.to_json(), data_json, at, at, data_json),
            )

        await self._run(_set, write=True)

    async def forget_chat(self, chat: str) -> bool:
        """Drop a chat's cursor (the file is gone); True if there was one."""

        def _forget(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM cursors WHERE chat = ?", (chat,)).rowcount > 0

        return await self._run(_forget, write=True)

    async def known_chats(self) -> set[str]:
        def _known(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute("SELECT chat FROM cursors")}

        return await self._run(_known, write=False)
