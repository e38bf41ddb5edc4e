"""What the web routes share: the daemon's config, store, approval folders, event hub."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.config import Config
from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Store
from daemon.web.events import EventHub
from daemon.web.thumbs import Thumbs

__all__ = ["WebContext"]


def _nothing() -> None:
    return None


def _never() -> bool:
    return False


def _not_here(job_id: str, reason: str) -> bool:
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
    stop_running: Callable[[str, str], bool] = _not_here  # the runner: cancel a running job
    ping_seconds: float = 15.0
    status_cache: dict[str, object] = field(default_factory=dict)
