"""What a read-only command needs of a validated config, as plain values.

Building the config (pydantic) is most of a one-shot command's start-up. A full load writes
this view next to the config's stamp (:mod:`daemon.configure.locate`); ``list``, ``show`` and
``status`` read it back while the stamp still matches and never build the config. The full
path reads the same view (:func:`daemon.configure.viewof.view_of`), so both print from the
same values. Nothing secret is in it: paths, modes, caps, the image backend's name and
abilities, what setup still needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.configure.statepaths import StatePaths

__all__ = ["ConfigView"]


class ConfigView(StatePaths):
    """The validated config's values that read-only commands use (see the module)."""

    __slots__ = (
        "approval",
        "backend",
        "daily_budget",
        "data_root",
        "mode",
        "monthly_budget",
        "setup_missing",
        "state_dir",
        "users",
    )

    def __init__(
        self,
        *,
        state_dir: Path,
        data_root: Path | None,
        mode: str,
        approval: str,
        users: list[str],
        daily_budget: float | None,
        monthly_budget: float | None,
        backend: dict[str, Any],
        setup_missing: list[str],
    ) -> None:
        self.state_dir = state_dir
        self.data_root = data_root
        self.mode = mode
        self.approval = approval
        self.users = users  # detect.users: the ST handles watched (empty: all)
        self.daily_budget = daily_budget
        self.monthly_budget = monthly_budget
        self.backend = backend  # the image backend as it describes itself (backend_of)
        self.setup_missing = setup_missing  # configure.ready.setup_missing

    def to_json(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "data_root": str(self.data_root) if self.data_root is not None else None,
            "mode": self.mode,
            "approval": self.approval,
            "users": list(self.users),
            "daily_budget": self.daily_budget,
            "monthly_budget": self.monthly_budget,
            "backend": self.backend,
            "setup_missing": list(self.setup_missing),
        }

    @classmethod
    def from_json(cls, data: object) -> ConfigView | None:
        """The view :meth:`to_json` wrote, or None for anything else (an older form)."""
        if not isinstance(data, Mapping) or set(data) != set(cls.__slots__):
            return None
        root, users, missing = data["data_root"], data["users"], data["setup_missing"]
        texts = (data["state_dir"], data["mode"], data["approval"])
        caps = (data["daily_budget"], data["monthly_budget"])
        if (
            not all(isinstance(t, str) for t in texts)
            or not (root is None or isinstance(root, str))
            or not (isinstance(users, list) and all(isinstance(u, str) for u in users))
            or not (isinstance(missing, list) and all(isinstance(m, str) for m in missing))
            or not all(c is None or isinstance(c, int | float) for c in caps)
            or not isinstance(data["backend"], dict)
        ):
            return None
        return cls(
            state_dir=Path(data["state_dir"]),
            data_root=Path(root) if root is not None else None,
            mode=data["mode"],
            approval=data["approval"],
            users=users,
            daily_budget=caps[0],
            monthly_budget=caps[1],
            backend=data["backend"],
            setup_missing=missing,
        )
