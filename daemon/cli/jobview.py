"""How the command line prints jobs (``list``, ``show``); ``list`` for the full path and the
quick one (``titles``: chat path -> what the user calls it, ``layout.chat_title``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.jobstate import Job

__all__ = ["job_dict", "one_line", "print_jobs"]


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state.value,
        "user": job.user,
        "chat": job.chat,
        "character": job.character,
        "is_group": job.is_group,
        "speaker": job.speaker,
        "mesid": job.message_index,
        "revision": job.revision,
        "source": job.source,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "prompt": job.prompt,
        "images": list(job.images),
        "excerpt": job.excerpt,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "next_attempt_at": job.next_attempt_at.isoformat() if job.next_attempt_at else None,
        "meta": job.meta,
    }


def one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_jobs(jobs: Sequence[Job], args: argparse.Namespace, titles: Mapping[str, str]) -> int:
    """``list``'s output (also :mod:`daemon.cli.quick`'s)."""
    if args.json:
        print(json.dumps([job_dict(j) for j in jobs], ensure_ascii=False, indent=2))
        return 0
    if not jobs:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
        return 0
    print(f"{'JOB':<12} {'STATE':<10} {'CREATED':<16} {'MES':>5}  {'CHAT':<28} INFO")
    for job in jobs:
        created = job.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        chat = one_line(titles[job.chat], 28)
        info = job.last_error if job.last_error else (job.prompt or job.excerpt)
        print(
            f"{job.id[:12]:<12} {job.state.value:<10} {created:<16} {job.message_index:>5}  "
            f"{chat:<28} {one_line(info or '', 60)}"
        )
    return 0
