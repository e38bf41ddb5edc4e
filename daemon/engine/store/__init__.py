"""SQLite job store: jobs, per-chat cursors, the commit ledger and the hashes of our own writes.

WAL mode, ``synchronous=FULL``, ``foreign_keys=ON`` and a busy timeout, so the daemon and the CLI
(separate processes) can share ``state.db``. One connection per :class:`Store`, used from worker
threads (``anyio.to_thread.run_sync``) under a lock; every write is one ``BEGIN IMMEDIATE``
transaction.

Each table's rules live in its own class over that one connection: :class:`Jobs` (``jobs.py``),
:class:`Cursors` (``cursors.py``), :class:`Ledger` (``ledger.py``), :class:`OurWrites`
(``writes.py``), :class:`Spend` (``spend.py``); the schema and every migration live in
``schema.py``. :class:`Store` is all of them on one connection.

Jobs may run twice: every state change is guarded by the expected current state(s), and a job's
idempotency ``key`` is UNIQUE, so a duplicate event, a rescan or a restart never makes a second job.

All datetimes are timezone-aware UTC. Naive datetimes are refused.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.engine.store.cursors import Cursors
    from daemon.engine.store.db import Database
    from daemon.engine.store.jobs import Jobs
    from daemon.engine.store.ledger import Ledger
    from daemon.engine.store.model import (
        ACTIVE_STATES,
        FINAL_STATES,
        OPEN_STATES,
        REGEN_FROM_STATES,
        SUPERSEDABLE_STATES,
        ChatRecord,
        Job,
        JobState,
        LedgerEntry,
        ReplyKey,
        States,
        new_job_id,
    )
    from daemon.engine.store.reads import SpendTotal
    from daemon.engine.store.schema import BUSY_TIMEOUT_MS, MIGRATIONS
    from daemon.engine.store.spend import Spend
    from daemon.engine.store.store import Store
    from daemon.engine.store.writes import OUR_WRITES_KEPT, OurWrites

__all__ = [
    "ACTIVE_STATES",
    "BUSY_TIMEOUT_MS",
    "FINAL_STATES",
    "MIGRATIONS",
    "OPEN_STATES",
    "OUR_WRITES_KEPT",
    "REGEN_FROM_STATES",
    "SUPERSEDABLE_STATES",
    "ChatRecord",
    "Cursors",
    "Database",
    "Job",
    "JobState",
    "Jobs",
    "Ledger",
    "LedgerEntry",
    "OurWrites",
    "ReplyKey",
    "Spend",
    "SpendTotal",
    "States",
    "Store",
    "new_job_id",
]

_HOME = {
    "Cursors": "cursors",
    "Database": "db",
    "Jobs": "jobs",
    "Ledger": "ledger",
    "BUSY_TIMEOUT_MS": "schema",
    "MIGRATIONS": "schema",
    "Store": "store",
    "OUR_WRITES_KEPT": "writes",
    "OurWrites": "writes",
    "Spend": "spend",
    "SpendTotal": "reads",
}
"""Where each name lives (the rest: ``model``). Imported on first use, so a read-only command
that needs only the records (``model``, ``reads``) does not load the async store."""


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOME.get(name, 'model')}")
    value = getattr(module, name)
    globals()[name] = value
    return value
