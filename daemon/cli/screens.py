"""The CLI's screens of the engine's reports: ``st-imagegen status`` and ``st-imagegen why``."""

from __future__ import annotations

import shlex
import sys
from typing import TextIO

import anyio

from daemon.cli.statusview import render_status, write_status
from daemon.config import Config
from daemon.engine.front import Engine, Explanation, StatusReport

__all__ = ["cmd_status", "cmd_why", "render_status", "render_why"]


def cmd_status(
    config: Config, as_json: bool, *, out: TextIO | None = None, config_error: str | None = None
) -> int:
    """Print the status (``--json``: one JSON object). Exit 0 whenever it could be gathered;
    ``config_error``: the config file is unusable (``config`` then holds what could be read)."""
    return write_status(anyio.run(_status, config, config_error), as_json, out)


async def _status(config: Config, config_error: str | None) -> StatusReport:
    async with Engine.open(config) as engine:
        return await engine.status(config_error=config_error)


def render_why(found: Explanation, title: str = "") -> str:
    """``title``: what the user calls the chat (a group chat's group name), shown beside it."""
    named = f" ({title})" if title and title.split(" · ")[0] not in found.chat else ""
    where = f"message {found.mesid} ({found.speaker or 'no name'}) in {found.chat}{named}"
    if not found.jobs:
        return (
            f"{where}: no job: {found.reason}\n"
            f"make one with: st-imagegen generate --chat {shlex.quote(found.chat)} "
            f"--mesid {found.mesid}\n"
        )
    lines = [f"{where}: {len(found.jobs)} job(s), oldest first:"]
    for job in found.jobs:
        text = "this text" if job.revision == found.current_revision else "an earlier text"
        why = f": {job.last_error}" if job.last_error else ""
        lines.append(f"  {job.short_id}  {job.state.value:<10} for {text} ({job.source}){why}")
    return "\n".join(lines) + "\n"


def cmd_why(
    config: Config, spec: str | None, mesid: int | None, *, out: TextIO | None = None
) -> int:
    """Print why the message has or has no job; 0 always (the answer is the output)."""
    found, title = anyio.run(_why, config, spec, mesid)
    (out or sys.stdout).write(render_why(found, title))
    return 0


async def _why(config: Config, spec: str | None, mesid: int | None) -> tuple[Explanation, str]:
    async with Engine.open(config) as engine:
        found = await engine.why(spec, mesid)
        return found, await engine.chat_title(found.chat)
