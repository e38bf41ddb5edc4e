"""``st-imagegen status`` in the daemon's process: the report of
:mod:`daemon.engine.process.report`, gathered from a validated config and the open store."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import anyio

from daemon.config import Config
from daemon.configure.viewof import view_of
from daemon.engine.process.report import (
    HEARTBEAT_STALE_SECONDS,
    DaemonStatus,
    StatusReport,
    base_report,
    daemon_status,
    fill_from_store,
    no_store,
    plain_age,
)
from daemon.engine.store import Store
from daemon.errors import StImagegenError

__all__ = [
    "HEARTBEAT_STALE_SECONDS",
    "DaemonStatus",
    "StatusReport",
    "daemon_status",
    "gather_status",
    "plain_age",
]


async def gather_status(
    config: Config,
    store: Store | None,
    *,
    store_error: str | None = None,
    now: datetime | None = None,
    config_error: str | None = None,
) -> StatusReport:
    """Collect the report from ``store`` (None: there is none yet, or it could not be opened:
    ``store_error``); problems (no data root, no store) are reported, not raised."""
    at = now or datetime.now(UTC)
    view = view_of(config)
    report = await anyio.to_thread.run_sync(
        functools.partial(base_report, view, config_error=config_error)
    )
    if store is None:
        return no_store(report, store_error)
    try:
        return await store.read(
            functools.partial(fill_from_store, report=report, view=view, now=at)
        )
    except StImagegenError as exc:
        report.store_error = str(exc)
    return report
