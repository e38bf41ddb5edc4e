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

import functools
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, tzinfo

import anyio

from daemon.config import Config, LimitsSettings
from daemon.engine.jobs.spendsum import (
    APPROVED_KEY,
    HELD_KEY,
    SpendSummary,
    day_window,
    month_window,
    summarize,
)
from daemon.engine.store import Job, Store

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

_EPSILON = 1e-9

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


async def spend_summary(
    config: Config,
    store: Store,
    now: datetime,
    tz: tzinfo | None = None,
    *,
    users: Collection[str] | None = None,
) -> SpendSummary:
    """The daemon's spend and caps, or (``users`` given) only the spend in those ST handles'
    chats (see :func:`~daemon.engine.jobs.spendsum.summarize`)."""
    return await store.read(
        functools.partial(
            summarize,
            daily_budget=config.limits.daily_budget,
            monthly_budget=config.limits.monthly_budget,
            now=now,
            tz=tz,
            users=users,
        )
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
