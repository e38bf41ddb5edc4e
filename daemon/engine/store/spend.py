"""The ``spend`` table: what each image call cost, so a day's and a month's spend (and a chat's
images) can be summed and capped. Rows are kept when their job is gone: the money was spent."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Collection, Mapping
from datetime import datetime

from daemon.engine.store.db import Database
from daemon.engine.store.model import now_utc, stamp
from daemon.engine.store.reads import SpendTotal, spend_between

__all__ = ["Spend", "SpendTotal"]


class Spend(Database):
    """Cost records, one per image call."""

    async def record_spend(
        self,
        job_id: str,
        user: str,
        chat: str,
        *,
        usd: float,
        images: int,
        estimated: bool,
        units: Mapping[str, float] | None = None,
        now: datetime | None = None,
    ) -> None:
        at = stamp(now or now_utc())
        row = (job_id, user, chat, usd, images, int(estimated), json.dumps(dict(units or {})), at)

        def _record(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO spend (job_id, user, chat, usd, images, estimated, units, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._run(_record, write=True)

    async def spend_between(
        self,
        start: datetime,
        end: datetime,
        *,
        chat: str | None = None,
        job_id: str | None = None,
        users: Collection[str] | None = None,
    ) -> SpendTotal:
        """The sum of the records in ``[start, end)`` (see :func:`reads.spend_between`)."""
        query = functools.partial(
            spend_between, start=start, end=end, chat=chat, job_id=job_id, users=users
        )
        return await self._run(query, write=False)
