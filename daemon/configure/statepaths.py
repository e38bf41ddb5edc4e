"""Where the daemon keeps its own files in the state dir: one definition, shared by the config
and the read-only view of it (:mod:`daemon.configure.view`), which must not import pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

__all__ = ["StatePaths"]


class StatePaths:
    """The state dir's files, for a class that has ``state_dir``."""

    __slots__ = ()

    if TYPE_CHECKING:
        state_dir: Path

    @property
    def pending_dir(self) -> Path:
        return self.state_dir / "pending"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def heartbeat_path(self) -> Path:
        return self.state_dir / "heartbeat"
