"""The :class:`~daemon.configure.view.ConfigView` of a validated config (the full path's side:
it needs the config models and the image backends' registry, which the view itself must not
import)."""

from __future__ import annotations

import json
from typing import Any

from daemon.config import Config
from daemon.configure.view import ConfigView

__all__ = ["backend_of", "view_of"]


def backend_of(config: Config) -> dict[str, Any]:
    """The configured image backend as it describes itself (for the inbox and the CLI)."""
    from daemon.errors import StImagegenError
    from daemon.providers.registry import backend_info, capabilities

    try:
        info = backend_info(config.image.backend)
        caps = capabilities(config.image)
    except StImagegenError as exc:
        return {"name": config.image.backend, "error": str(exc)}
    return {"name": info.name, "title": info.title, "capabilities": caps.as_dict()}


def view_of(config: Config) -> ConfigView:
    """The view of a validated config, exactly as a read-only command reads it back (through
    JSON: the full path and the fast one see the same values)."""
    from daemon.configure.ready import setup_missing

    view = ConfigView(
        state_dir=config.state_dir,
        data_root=config.data_root,
        mode=config.mode,
        approval=config.approval,
        users=list(config.detect.users),
        daily_budget=config.limits.daily_budget,
        monthly_budget=config.limits.monthly_budget,
        backend=backend_of(config),
        setup_missing=setup_missing(config),
    )
    again = ConfigView.from_json(json.loads(json.dumps(view.to_json())))
    if again is None:  # pragma: no cover - to_json and from_json are each other's inverse
        raise AssertionError("the config view does not read back")
    return again
