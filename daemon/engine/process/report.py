"""``st-imagegen status``'s report, gathered without the engine: is the daemon running, what
it watches, how its jobs stand.

Whether the daemon runs comes from its heartbeat file (:mod:`.heartbeat`). Everything here is
blocking and reads only: the config's values come as a
:class:`~daemon.configure.view.ConfigView` and the store as a sqlite3 connection, so the
daemon (:mod:`daemon.engine.process.status`, through its store's worker thread) and the
read-only command line (:mod:`daemon.cli.quick`, on a read-only connection) gather the same
report with the same code. A missing state dir or store is reported, not created.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.engine.jobs.spendsum import HELD_KEY, summarize
from daemon.engine.process.heartbeat import (
    HEARTBEAT_STALE_SECONDS,
    DaemonStatus,
    daemon_status,
    plain_age,
    read_heartbeat,
)
from daemon.engine.store.reads import count_states, jobs_in, open_ledger_counts, recent_errors
from daemon.errors import StImagegenError
from daemon.jobstate import Job, JobState
from daemon.tavern import layout

if TYPE_CHECKING:
    from daemon.configure.view import ConfigView

__all__ = [
    "HEARTBEAT_STALE_SECONDS",
    "DaemonStatus",
    "StatusReport",
    "base_report",
    "daemon_status",
    "fill_from_store",
    "plain_age",
    "read_heartbeat",
    "state_dir_size",
]

RECENT_ERRORS = 5
"""How many recent job errors ``status`` shows."""


@dataclass
class StatusReport:
    """Everything ``status`` shows; :meth:`to_json` is the ``--json`` form."""

    daemon: DaemonStatus
    mode: str
    approval: str
    data_root: str | None = None
    data_root_error: str | None = None
    users: list[str] = field(default_factory=list)
    chats: int = 0
    group_chats: int = 0
    state_dir: str = ""
    state_dir_bytes: int | None = None  # everything the daemon keeps there
    store_error: str | None = None
    jobs: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    waiting_messages: int = 0  # committed, not yet in any version ST saved (ledger open)
    waiting_chats: list[str] = field(default_factory=list)
    image_backend: dict[str, Any] = field(default_factory=dict)  # name, title, capabilities
    spend: dict[str, Any] = field(default_factory=dict)  # SpendSummary.to_json(), and "line"
    held: list[dict[str, str]] = field(default_factory=list)  # jobs waiting for a spend cap
    config_error: str | None = None  # the config file cannot be used (this command's reading)
    setup: str | None = None  # "not set up yet: open <address>"
    restart_pending: list[str] = field(default_factory=list)
    config_problem: dict[str, Any] | None = None  # the running daemon's view of the file

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["daemon"] = asdict(self.daemon)
        return data


def _error_row(job: Job, now: datetime) -> dict[str, Any]:
    return {
        "job": job.id,
        "state": job.state.value,
        "chat": job.chat,
        "speaker": job.speaker,
        "error": job.last_error or "",
        "updated_at": job.updated_at.isoformat(),
        "age_seconds": round((now - job.updated_at).total_seconds(), 3),
    }


def _inbox_url(state_dir: Path) -> str | None:
    """The running inbox's address from ``<state_dir>/web.json`` (written by the web server)."""
    try:
        data = json.loads((state_dir / "web.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) else None


def state_dir_size(state_dir: Path) -> int:
    """Bytes under ``state_dir`` (files only, symlinks not followed; blocking)."""
    total = 0
    stack = [state_dir]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def _config_lines(view: ConfigView, report: StatusReport) -> None:
    """Setup, restart and file problems: the running daemon's word when it runs, else this
    command's own reading of the config."""
    state = report.daemon.config if report.daemon.running else None
    missing = state.get("setup_needed") if state else view.setup_missing
    if missing:
        found = _inbox_url(view.state_dir) if report.daemon.running else None
        where = found or "the address `st-imagegen web-url` prints"
        report.setup = f"not set up yet ({', '.join(missing)}): open {where}"
    if state:
        report.restart_pending = [str(k) for k in state.get("restart_pending") or []]
        problem = state.get("problem")
        report.config_problem = problem if isinstance(problem, dict) else None


def _gather_chats(view: ConfigView, report: StatusReport) -> None:
    if view.data_root is None:
        report.data_root_error = "data_root is not set (config file or ST_IMAGEGEN_DATA_ROOT)"
        return
    try:
        root = layout.resolve_data_root(view.data_root)
    except StImagegenError as exc:
        report.data_root_error = str(exc)
        return
    report.data_root = str(root)
    report.users = layout.list_users(root, view.users)
    for ref in layout.iter_chats(root, report.users):
        report.chats += 1
        report.group_chats += ref.is_group


def base_report(view: ConfigView, *, config_error: str | None = None) -> StatusReport:
    """Everything but the store: the daemon's heartbeat, the config's lines, the chats watched,
    the state dir's size, the image backend (blocking)."""
    report = StatusReport(
        daemon=daemon_status(view.heartbeat_path),
        mode=view.mode,
        approval=view.approval,
        state_dir=str(view.state_dir),
        config_error=config_error,
    )
    _config_lines(view, report)
    _gather_chats(view, report)
    report.state_dir_bytes = state_dir_size(view.state_dir)
    report.image_backend = view.backend
    return report


def no_store(report: StatusReport, store_error: str | None) -> StatusReport:
    """The report when there is no store: none yet, or ``store_error`` says why not."""
    if store_error is not None:
        report.store_error = store_error
    else:
        report.store_error = "no jobs yet (the store has not been created)"
        report.jobs = {s.value: 0 for s in JobState}
    return report


def fill_from_store(
    conn: sqlite3.Connection, report: StatusReport, view: ConfigView, now: datetime
) -> StatusReport:
    """Add the store's part to ``report`` (blocking, read-only; sqlite3.Error propagates):
    jobs by state, the last errors, spend, jobs held by a cap, messages ST has not saved yet."""
    report.jobs = {s.value: n for s, n in count_states(conn).items()}
    report.errors = [_error_row(j, now) for j in recent_errors(conn, RECENT_ERRORS)]
    summary = summarize(
        conn, daily_budget=view.daily_budget, monthly_budget=view.monthly_budget, now=now
    )
    report.spend = {**summary.to_json(), "line": summary.line()}
    for job in jobs_in(conn, [JobState.QUEUED]):
        if job.meta.get(HELD_KEY):
            report.held.append(
                {
                    "job": job.id,
                    "chat": job.chat,
                    "reason": str(job.meta[HELD_KEY]),
                    "fix": str(job.meta.get("held_fix") or ""),
                }
            )
    for chat, count in open_ledger_counts(conn).items():
        report.waiting_messages += count
        report.waiting_chats.append(chat)
    return report
