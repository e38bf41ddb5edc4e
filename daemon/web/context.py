"""What the web routes share: the daemon's config, store, approval folders, event hub."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.config import Config
from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Store
from daemon.web.access import UserTokens
from daemon.web.events import EventHub
from daemon.web.gate import Gate
from daemon.web.thumbs import Thumbs

__all__ = ["WebContext"]


def _nothing() -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class WebContext:
    config: Config
    root: Path  # the resolved data root
    store: Store  # the daemon's own store: its job listeners feed ``hub``
    approval: Approval
    hub: EventHub
    thumbs: Thumbs
    version: str
    wake: Callable[[], None] = _nothing  # the runner: a job was queued or accepted
    draining: Callable[[], bool] = _never  # the daemon is stopping: refuse actions
    ping_seconds: float = 15.0
    status_cache: dict[str, object] = field(default_factory=dict)
    users: UserTokens | None = None  # the user tokens (the admin's API manages them)
    gate: Gate | None = None  # the connections held (for status and tests)
    streams: dict[str, int] = field(default_factory=dict)  # open event streams per token
