"""How the command line prints jobs (``list``, ``show``), for the full path and the quick one
(:mod:`daemon.cli.quick`) alike (``titles``, ``title``: what the user calls a chat,
``layout.chat_title``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.jobstate import Job

__all__ = ["job_dict", "one_line", "print_accepted", "print_job", "print_jobs"]


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


def print_job(
    job: Job,
    found: Path | None,
    pending_dir: Path,
    *,
    title: str = "",
    spend: str = "",
    as_json: bool = False,
) -> int:
    """``show``'s output: ``found`` is the job's folder wherever it is now (None: gone),
    ``title`` what the user calls its chat, ``spend`` the spend line (both unused for JSON)."""
    folder = found if found is not None else pending_dir / job.id
    if as_json:
        record = job_dict(job)
        record["folder"] = str(found) if found is not None else None
        print(json.dumps(record, ensure_ascii=False, indent=2))
        return 0
    rows = [
        ("job", job.id),
        ("state", job.state.value),
        ("chat", f"{job.user}/{job.chat}" if not job.chat.startswith(job.user) else job.chat),
        ("chat name", title),
        ("character", job.character + (" (group id)" if job.is_group else "")),
        ("speaker", job.speaker),
        ("message", f"#{job.message_index}: {one_line(job.excerpt, 100)}"),
        ("source", job.source),
        ("created", job.created_at.astimezone().isoformat(timespec="seconds")),
        ("updated", job.updated_at.astimezone().isoformat(timespec="seconds")),
        ("attempts", str(job.attempts)),
    ]
    if job.next_attempt_at and job.state.value == "queued":
        rows.append(("next try", job.next_attempt_at.astimezone().isoformat(timespec="seconds")))
    if job.last_error:
        rows.append(("last error", job.last_error))
    if job.state.value == "queued" and job.meta.get("held"):
        rows.append(("held", f"{job.meta['held']}; {job.meta.get('held_fix') or ''}"))
    if job.meta.get("cost"):
        rows.append(("cost", str(job.meta["cost"])))
    rows.append(("spend", spend))
    rows.append(("prompt", job.prompt or "(not written yet)"))
    rows.extend(_look_rows(job))
    for key, value in rows:
        print(f"{key + ':':<12} {value}")
    if job.images:
        print("images:")
        for n, name in enumerate(job.images, 1):
            path = folder / name
            print(f"  {n}. {path if path.exists() else name}")
    return 0


def _look_rows(job: Job) -> list[tuple[str, str]]:
    """What made the picture besides the prompt: negative prompt, style, seed, references."""
    meta = job.meta
    rows: list[tuple[str, str]] = []
    if isinstance(meta.get("negative"), str) and meta["negative"]:
        rows.append(("negative", str(meta["negative"])))
    if meta.get("style"):
        source = f" (from {meta['style_from']})" if meta.get("style_from") else ""
        rows.append(("style", f"{meta['style']}{source}"))
    if meta.get("seed") is not None:
        rows.append(("seed", str(meta["seed"])))
    references = meta.get("references")
    if isinstance(references, list) and references:
        rows.append(("references", ", ".join(str(r) for r in references)))
    if meta.get("regen_of"):
        rows.append(("regen of", str(meta["regen_of"])))
    if meta.get("cancelled") is True:
        rows.append(("cancelled", "yes (stopped before its images were on offer)"))
    return rows


def print_accepted(job: Job, daemon_running: bool, wait: Callable[[], Job | None]) -> int:
    """``accept``'s output. With a running daemon, ``wait()`` (for the daemon to write the
    images into the chat: the job as it then stands, None when it cannot be read) and a word
    on stderr unless it is committed: still to come, or why it could not be (exit 1). Without
    one, a note that the commit waits for it (the daemon commits accepted jobs when it starts)."""
    print(f"accepted {job.id} ({len(job.images)} image{'s' if len(job.images) != 1 else ''})")
    if not daemon_running:
        print(
            f"note: the daemon is not running: job {job.id[:10]} goes into its chat when it "
            "starts (st-imagegen run)",
            file=sys.stderr,
        )
        return 0
    sys.stdout.flush()  # said at once: the wait may take a moment
    after = wait()
    if after is None or after.state.value == "accepted":
        print(
            f"note: the daemon has not written job {job.id[:10]} into its chat yet; it will "
            f"(st-imagegen show {job.id[:10]})",
            file=sys.stderr,
        )
        return 0
    if after.state.value == "committed":
        return 0
    why = f": {after.last_error}" if after.last_error else ""
    print(
        f"st-imagegen: error: job {job.id} was not written into its chat: it is "
        f"{after.state.value}{why}",
        file=sys.stderr,
    )
    return 1
