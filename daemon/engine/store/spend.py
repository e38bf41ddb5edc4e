"""The ``spend`` table: what each image call cost, so a day's and a month's spend (and a chat's
images) can be summed and capped. Rows are kept when their job is gone: the money was spent."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from daemon.engine.store.db import Database
from daemon.engine.store.model import now_utc, stamp

__all__ = ["Spend", "SpendTotal"]


@dataclass(frozen=True)
class SpendTotal:
    """A sum over a time window: USD, images, whether any part is an estimate, other units."""

    usd: float = 0.0
    images: int = 0
    estimated: bool = False
    units: Mapping[str, float] = field(default_factory=dict)


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
        """The sum of the records in ``[start, end)``, of one chat or one job if given, of the
        chats of ST handles ``users`` if given (a user token's caller: none is nothing)."""
        where = "at >= ? AND at < ?"
        args: list[object] = [stamp(start), stamp(end)]
        if users is not None:
            handles = sorted(set(users))
            if not handles:
                return SpendTotal()
            where += f" AND user IN ({', '.join('?' for _ in handles)})"
            args.extend(handles)
        if chat is not None:
            where += " AND chat = ?"
            args.append(chat)
        if job_id is not None:
            where += " AND job_id = ?"
            args.append(job_id)

        def _sum(conn: sqlite3.Connection) -> SpendTotal:
            rows = conn.execute(
                f"SELECT usd, images, estimated, units FROM spend WHERE {where}",  # noqa: S608
                args,
            ).fetchall()
            units: dict[str, float] = {}
            for row in rows:
                for unit, amount in json.loads(row["units"] or "{}").items():
                    units[unit] = units.get(unit, 0.0) + float(amount)
            return SpendTotal(
                usd=sum(float(r["usd"]) for r in rows),
                images=sum(int(r["images"]) for r in rows),
                estimated=any(r["estimated"] for r in rows),
                units=units,
            )

        return await self._run(_sum, write=False)
