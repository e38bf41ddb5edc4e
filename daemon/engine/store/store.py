"""The store: every table's class on one connection (see the package's docstring)."""

from __future__ import annotations

from functools import cached_property

from daemon.engine.store.blocking import Blocking
from daemon.engine.store.cursors import Cursors
from daemon.engine.store.jobs import Jobs
from daemon.engine.store.ledger import Ledger
from daemon.engine.store.spend import Spend
from daemon.engine.store.writes import OurWrites

__all__ = ["Store"]


class Store(Jobs, Cursors, Ledger, OurWrites, Spend):
    """Every table on one connection. Open with :meth:`open`; close with :meth:`close`."""

    @cached_property
    def blocking(self) -> Blocking:
        """The calls for code already in a worker thread (see :mod:`.blocking`)."""
        return Blocking(self)
