"""What the web routes share: the daemon's engine (the one way to jobs), its config, the event
hub and the thumbnails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.config import Config
from daemon.engine.front import Engine
from daemon.web.access import UserTokens
from daemon.web.events import EventHub
from daemon.web.gate import Gate
from daemon.web.thumbs import Thumbs

if TYPE_CHECKING:
    from daemon.configure.live import LiveConfig

__all__ = ["WebContext"]


def _never() -> bool:
    return False


@dataclass
class WebContext:
    root: Path  # the resolved data root
    engine: Engine  # the daemon's own: its job changes feed ``hub``
    hub: EventHub
    thumbs: Thumbs
    version: str
    draining: Callable[[], bool] = _never  # the daemon is stopping: refuse actions
    ping_seconds: float = 15.0
    status_cache: dict[str, object] = field(default_factory=dict)
    users: UserTokens | None = None  # the user tokens (the admin's API manages them)
    gate: Gate | None = None  # the connections held (for status and tests)
    streams: dict[str, int] = field(default_factory=dict)  # open event streams per token
    url: str = ""  # the inbox's own address, once it listens

    @property
    def config(self) -> Config:
        """The configuration in effect: the engine's, which follows the config file."""
        return self.engine.config

    @property
    def live(self) -> LiveConfig | None:
        """The daemon's config holder (the settings pages), when it watches a file."""
        return self.engine.live
