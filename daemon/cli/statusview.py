"""How ``st-imagegen status`` prints its report, for the full path and the quick one
(:mod:`daemon.cli.quick`) alike."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from daemon.engine.process.heartbeat import plain_age

if TYPE_CHECKING:
    from daemon.engine.process.report import StatusReport

__all__ = ["render_status", "write_status"]


def write_status(report: StatusReport, as_json: bool, out: TextIO | None = None) -> int:
    """Print the report (``as_json``: one JSON object); 0: it could be gathered."""
    stream = out or sys.stdout
    if as_json:
        stream.write(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n")
    else:
        stream.write(render_status(report))
    return 0


def render_status(report: StatusReport) -> str:
    """The plain-text form of the report."""
    lines = [f"daemon: {report.daemon.detail}"]
    if report.setup:
        lines.append(f"setup: {report.setup}")
    if report.config_problem:
        where = report.config_problem.get("file", "")
        line = report.config_problem.get("line")
        at = f"{where}, line {line}" if line else where
        lines.append(
            f"config: NOT APPLIED ({at}): {report.config_problem.get('message')}; the daemon "
            "keeps running with the last good configuration"
        )
    elif report.config_error:
        lines.append(f"config: problem: {report.config_error}")
    if report.restart_pending:
        lines.append(
            f"config: restart pending ({', '.join(report.restart_pending)} changed: restart "
            "the daemon to apply)"
        )
    if report.data_root_error:
        lines.append(f"data root: problem: {report.data_root_error}")
    else:
        lines.append(f"data root: {report.data_root}")
        users = ", ".join(report.users) if report.users else "none found"
        lines.append(
            f"watching: {len(report.users)} user{'s' if len(report.users) != 1 else ''} "
            f"({users}), {report.chats} chat{'s' if report.chats != 1 else ''} "
            f"({report.group_chats} group chat{'s' if report.group_chats != 1 else ''})"
        )
    lines.append(f"mode: {report.mode}, approval: {report.approval}")
    if report.image_backend:
        lines.append(f"image backend: {_backend_line(report.image_backend)}")
    size = report.state_dir_bytes
    megabytes = f" ({size / 1e6:.1f} MB)" if size is not None else ""
    lines.append(f"state dir: {report.state_dir}{megabytes}")
    if report.store_error:
        lines.append(f"jobs: {report.store_error}")
    else:
        shown = [f"{n} {state}" for state, n in report.jobs.items() if n]
        lines.append(f"jobs: {', '.join(shown) if shown else 'none yet'}")
    if report.spend:
        lines.append(f"spend: {report.spend['line']}")
    if report.held:
        n = len(report.held)
        lines.append(f"held back: {n} job{'s' if n != 1 else ''} (no call until allowed)")
        for row in report.held:
            lines.append(f"  {row['job'][:10]}  {row['chat']}: {row['reason']}; {row['fix']}")
    if report.waiting_messages:
        n, c = report.waiting_messages, len(report.waiting_chats)
        lines.append(
            f"waiting for SillyTavern: {n} image message{'s' if n != 1 else ''} in {c} "
            f"chat{'s' if c != 1 else ''} not yet seen by an open tab; they show when the chat "
            "is reopened or the page reloaded (nothing is lost either way)"
        )
    if report.errors:
        lines.append("last errors:")
        for row in report.errors:
            age = plain_age(float(row["age_seconds"]))
            lines.append(
                f"  {row['job'][:10]}  {row['state']:<10}  {row['chat']}: {row['error']} "
                f"({age} ago)"
            )
    return "\n".join(lines) + "\n"


def _backend_line(backend: dict[str, Any]) -> str:
    """``"OpenRouter (aspect ratios, 1 image per call, references up to 4, cost reported)"``."""
    if "error" in backend:
        return f"problem: {backend['error']}"
    caps = backend["capabilities"]
    said = ["aspect ratios" if caps["size_mode"] == "aspect" else "any size"]
    per_call = caps["max_n_per_call"]
    said.append(f"{per_call} image{'s' if per_call != 1 else ''} per call")
    said += [name for name in ("negative_prompt", "seed", "steps") if caps[name]]
    if caps["max_references"]:
        said.append(f"references up to {caps['max_references']}")
    said += [name for name in ("progress", "cancel") if caps[name]]
    said.append(
        {"free": "free", "reported": "cost reported", "estimated": "cost estimated"}[caps["cost"]]
    )
    return f"{backend['title']} ({', '.join(s.replace('_', ' ') for s in said)})"
