"""Spend under the user's control: the caps checked before each paid image call.

``limits.daily_budget`` and ``limits.monthly_budget`` (USD, local calendar day and month) and
``limits.chat_daily_images`` (images per chat per day) are checked before a job's image call
against what the ``spend`` table says was spent plus what running calls have reserved. A job
that would cross a cap is held: it goes back to the queue with a clear reason and comes back
when the window ends, or at once when the cap is raised (a config reload or a restart). The
check and the reservation happen under one lock, so two jobs racing for the last of a budget
never both call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

import anyio

from daemon.config import Config, LimitsSettings
from daemon.engine.store import Job, SpendTotal, Store

__all__ = [
    "APPROVED_KEY",
    "HELD_KEY",
    "Budget",
    "Hold",
    "Reservation",
    "SpendSummary",
    "day_window",
    "hold_for_a_user",
    "month_window",
    "spend_summary",
]

HELD_KEY = "held"
"""The job meta key holding why a job waits for the budget (absent or None: not held)."""

APPROVED_KEY = "budget_approved"
"""The job meta key set by ``st-imagegen spend approve``: this job may pass the caps once."""

_EPSILON = 1e-9


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


_DAEMON_SPEND = re.compile(r"(daily|monthly) budget reached: [0-9.]+ of [0-9.]+ USD")


def hold_for_a_user(reason: str) -> str:
    """A hold's reason as a user token's caller sees it: the daemon-wide spend and cap in a
    budget hold are everyone's together (the admin's to see), so they are left out."""
    return _DAEMON_SPEND.sub(r"the daemon's \1 budget is reached", reason)


@dataclass(frozen=True)
class Hold:
    """Why a job may not call now, until when, and how the user lets it."""

    reason: str  # "daily budget reached: 2.00 of 2.00 USD"
    until: datetime
    fix: str


@dataclass(frozen=True)
class Reservation:
    """Budget set aside for one running call."""

    usd: float
    images: int
    chat: str


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


async def spend_summary(
    config: Config,
    store: Store,
    now: datetime,
    tz: tzinfo | None = None,
    *,
    users: Collection[str] | None = None,
) -> SpendSummary:
    """The daemon's spend and caps, or (``users`` given) only the spend in those ST handles'
    chats: then without the caps, which are the whole daemon's and would compare one user's
    share against everyone's budget."""
    day = day_window(now, tz)
    month = month_window(now, tz)
    daemon_wide = users is None
    return SpendSummary(
        today=await store.spend_between(*day, users=users),
        month=await store.spend_between(*month, users=users),
        daily_budget=config.limits.daily_budget if daemon_wide else None,
        monthly_budget=config.limits.monthly_budget if daemon_wide else None,
    )


class Budget:
    """The caps of one daemon, with the reservations of its running calls."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        tz: tzinfo | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tz = tz
        self._lock = anyio.Lock()
        self._reserved_usd = 0.0
        self._reserved_images: dict[str, int] = {}

    @property
    def reserved_usd(self) -> float:
        return self._reserved_usd

    async def reserve(
        self, job: Job, usd: float, images: int, limits: LimitsSettings
    ) -> Reservation | Hold:
        """Set ``usd`` and ``images`` aside for ``job``'s call, or say why it must wait under
        ``limits`` (the caps of the job's configuration)."""
        approved = bool(job.meta.get(APPROVED_KEY))
        async with self._lock:
            if not approved:
                held = await self._check(job, usd, images, limits)
                if held is not None:
                    return held
            self._reserved_usd += usd
            self._reserved_images[job.chat] = self._reserved_images.get(job.chat, 0) + images
            return Reservation(usd, images, job.chat)

    async def _check(
        self, job: Job, usd: float, images: int, limits: LimitsSettings
    ) -> Hold | None:
        now = self._clock()
        approve = (
            "(the config reloads by itself), or allow this job once: "
            f"st-imagegen spend approve {job.id[:10]}"
        )
        if usd > 0 and limits.daily_budget is not None:
            start, end = day_window(now, self._tz)
            spent = (await self._store.spend_between(start, end)).usd + self._reserved_usd
            if spent + usd > limits.daily_budget + _EPSILON:
                return Hold(
                    f"daily budget reached: {spent:.2f} of {limits.daily_budget:.2f} USD "
                    f"(this job: about {usd:.2f})",
                    end,
                    f"it runs tomorrow; raise limits.daily_budget {approve}",
                )
        if usd > 0 and limits.monthly_budget is not None:
            start, end = month_window(now, self._tz)
            spent = (await self._store.spend_between(start, end)).usd + self._reserved_usd
            if spent + usd > limits.monthly_budget + _EPSILON:
                return Hold(
                    f"monthly budget reached: {spent:.2f} of {limits.monthly_budget:.2f} USD "
                    f"(this job: about {usd:.2f})",
                    end,
                    f"it runs next month; raise limits.monthly_budget {approve}",
                )
        if limits.chat_daily_images is not None:
            start, end = day_window(now, self._tz)
            made = (await self._store.spend_between(start, end, chat=job.chat)).images
            made += self._reserved_images.get(job.chat, 0)
            if made + images > limits.chat_daily_images:
                return Hold(
                    f"this chat's daily image cap reached: {made} of "
                    f"{limits.chat_daily_images} images",
                    end,
                    f"it runs tomorrow; raise limits.chat_daily_images {approve}",
                )
        return None

    async def release(self, reservation: Reservation) -> None:
        """Give back what :meth:`reserve` set aside (after the call's cost was recorded)."""
        async with self._lock:
            self._reserved_usd = max(0.0, self._reserved_usd - reservation.usd)
            left = self._reserved_images.get(reservation.chat, 0) - reservation.images
            if left > 0:
                self._reserved_images[reservation.chat] = left
            else:
                self._reserved_images.pop(reservation.chat, None)
