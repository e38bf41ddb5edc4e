"""Images the user already paid for are never thrown away.

- **Regenerating a pending job** carries its images over: they are copied to
  ``<state_dir>/.earlier/<job-id>/`` and put before the new job's own images in its pending
  folder, so the new job offers all of them (``meta["image_prompts"]`` says which prompt made
  which image) and accept keeps any of them.
- **Regenerating a committed job** makes a *variant* job (``meta["swipe_of"]`` = the job whose
  image message is in the chat). Accepting it adds its images to that same message as image
  swipes (``extra.media`` and ``extra.image_swipes``) instead of writing a second message.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import structlog

from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Job, JobState, Store
from daemon.errors import JobError
from daemon.providers.decode import GeneratedImage, ImageRejected, check_image

__all__ = [
    "EARLIER_DIR",
    "carry_images",
    "earlier_images",
    "new_variant_job",
]

log = structlog.get_logger("st_imagegen.swipes")

EARLIER_DIR = ".earlier"
EARLIER_SECONDS = 7 * 86400.0
"""Carried images older than this are removed (their new job is long done)."""
_NOT_CARRIED = ("committed_urls", "committed_files", "committed_at", "not_kept", "progress")


def _earlier_dir(approval: Approval, job_id: str) -> Path:
    return approval.state_dir / EARLIER_DIR / job_id


def _prune(approval: Approval) -> None:
    limit = time.time() - EARLIER_SECONDS
    base = approval.state_dir / EARLIER_DIR
    with contextlib.suppress(FileNotFoundError):
        for entry in base.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_dir() and entry.stat().st_mtime < limit:
                    shutil.rmtree(entry, ignore_errors=True)


def carry_images(approval: Approval, job: Job) -> dict[str, Any] | None:
    """Copy a pending job's kept images aside for its regeneration (blocking); the meta the
    new job needs to find them, or ``None`` when there is nothing to carry."""
    kept = {p.name: p for p in approval.kept_images(job.id)}
    names = [n for n in job.images if n in kept] or sorted(kept)
    if not names:
        return None
    _prune(approval)
    target = _earlier_dir(approval, job.id)
    temp = target.with_name(f".{job.id}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    prompts = list(job.meta.get("image_prompts") or [])
    own: list[str] = []
    for n, name in enumerate(names, start=1):
        shutil.copy2(kept[name], temp / f"{n:03d}-{name}")
        index = job.images.index(name) if name in job.images else -1
        own.append(str(prompts[index]) if 0 <= index < len(prompts) else job.prompt or "")
    shutil.rmtree(target, ignore_errors=True)
    temp.rename(target)
    return {"earlier_from": job.id, "earlier_prompts": own}


def earlier_images(
    approval: Approval, job: Job, max_pixels: int
) -> tuple[list[GeneratedImage], list[str]]:
    """The images carried over to ``job`` and their prompts (blocking); none if gone."""
    source = job.meta.get("earlier_from")
    if not isinstance(source, str) or not source:
        return [], []
    folder = _earlier_dir(approval, source)
    prompts = [str(p) for p in job.meta.get("earlier_prompts") or []]
    images: list[GeneratedImage] = []
    kept_prompts: list[str] = []
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        log.warning("earlier images not found; only the new ones are offered", job=job.id)
        return [], []
    for n, path in enumerate(files):
        try:
            images.append(check_image(path.read_bytes(), max_pixels))
        except (OSError, ImageRejected):
            continue
        kept_prompts.append(prompts[n] if n < len(prompts) else job.prompt or "")
    return images, kept_prompts


async def new_variant_job(store: Store, job: Job, prompt: str | None = None) -> Job:
    """A queued job making more images for a committed job's message (its image swipes)."""
    if job.state is not JobState.COMMITTED:
        raise JobError(f"job {job.id} is {job.state.value}, not committed")
    same = await store.jobs_for(job.reply)
    regen = max((j.regen for j in same), default=0) + 1
    meta = {k: v for k, v in job.meta.items() if k not in _NOT_CARRIED}
    for key in ("earlier_from", "earlier_prompts", "image_prompts"):
        meta.pop(key, None)
    meta["swipe_of"] = str(job.meta.get("swipe_of") or job.id)
    meta["regen_of"] = job.id
    created = await store.create_job(
        reply=job.reply,
        character=job.character,
        is_group=job.is_group,
        speaker=job.speaker,
        message_index=job.message_index,
        excerpt=job.excerpt,
        source="regen",
        regen=regen,
        prompt=prompt if prompt is not None else job.prompt,
        meta=meta,
    )
    if created is None:  # pragma: no cover - the regen counter is new
        raise JobError(f"a variant of job {job.id} exists already")
    return created
