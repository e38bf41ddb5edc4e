"""Today's and this month's spend with the caps (:class:`SpendSummary`), summed on any sqlite3
connection: the daemon's store (:func:`daemon.engine.jobs.budget.spend_summary`) and the
read-only ``show`` and ``status`` of the command line (no async, no config models)."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

from daemon.engine.store.reads import SpendTotal, spend_between

__all__ = [
    "APPROVED_KEY",
    "HELD_KEY",
    "SpendSummary",
    "day_window",
    "month_window",
    "summarize",
]

HELD_KEY = "held"
"""The job meta key holding why a job waits for the budget (absent or None: not held)."""

APPROVED_KEY = "budget_approved"
"""The job meta key set by ``st-imagegen spend approve``: this job may pass the caps once."""


def _local(now: datetime, tz: tzinfo | None) -> datetime:
    return now.astimezone(tz) if tz is not None else now.astimezone()


def day_window(now: datetime, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """The local calendar day holding ``now``, as UTC ``[start, end)``."""
    local = _local(now, tz)
    start = datetime.combine(local.date(), time(0), tzinfo=local.tzinfo)
    end = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=local.tzinfo)
    return start.astimezone(UTC), end.astimezone(UTC)


def month_window(now: datetime, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """The local calendar month holding ``now``, as UTC ``[start, end)``."""
    local = _local(now, tz)
    first = local.date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    start = datetime.combine(first, time(0), tzinfo=local.tzinfo)
    end = datetime.combine(following, time(0), tzinfo=local.tzinfo)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True)
class SpendSummary:
    """Today's and this month's spend, with the caps (for ``status``, ``show``, the inbox)."""

    today: SpendTotal
    month: SpendTotal
    daily_budget: float | None
    monthly_budget: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "today_usd": round(self.today.usd, 6),
            "today_images": self.today.images,
            "month_usd": round(self.month.usd, 6),
            "month_images": self.month.images,
            "estimated": self.today.estimated or self.month.estimated,
            "units_today": dict(self.today.units),
            "daily_budget": self.daily_budget,
            "monthly_budget": self.monthly_budget,
        }

    def line(self) -> str:
        """``"today 0.12 USD (3 images) of 2.00; this month 1.40 USD (35 images)"``."""
        today = f"today {self.today.usd:.2f} USD ({self.today.images} images)"
        if self.daily_budget is not None:
            today += f" of {self.daily_budget:.2f}"
        month = f"this month {self.month.usd:.2f} USD ({self.month.images} images)"
        if self.monthly_budget is not None:
            month += f" of {self.monthly_budget:.2f}"
        extra = "".join(f", {amount:g} {unit} today" for unit, amount in self.today.units.items())
        estimate = " (partly estimated)" if self.today.estimated or self.month.estimated else ""
        return f"{today}; {month}{extra}{estimate}"


def summarize(
    conn: sqlite3.Connection,
    *,
    daily_budget: float | None,
    monthly_budget: float | None,
    now: datetime,
    tz: tzinfo | None = None,
    users: Collection[str] | None = None,
) -> SpendSummary:
    """The daemon's spend and caps, or (``users`` given) only the spend in those ST handles'
    chats: then without the caps, which are the whole daemon's and would compare one user's
    share against everyone's budget."""
    daemon_wide = users is None
    return SpendSummary(
        today=spend_between(conn, *day_window(now, tz), users=users),
        month=spend_between(conn, *month_window(now, tz), users=users),
        daily_budget=daily_budget if daemon_wide else None,
        monthly_budget=monthly_budget if daemon_wide else None,
    )
