"""Commit accepted images into their chat, and keep them there against stale browser tabs.

**Commit** (one accepted job): the image files first (atomic, named after the job so a retry
finds and reuses them), then the hidden image message right after the reply through the
compare-before-replace writer, which, once the new chat is on disk and right before its rename,
records in one store transaction the ledger entry holding the exact message and the new
version's :class:`~daemon.tavern.write.FileVersion` (inode, size, mtime: how our own writes are
told from ST's saves, which each rename a new file in). Each step is idempotent, so a job may
run twice and a crash anywhere is finished by the next run:

- image files written, no ledger entry: the next run finds the files by the job id in their
  names and reuses them (no orphans);
- ledger entry, no chat line: the next run inserts the ledger's message;
- chat line written, job not marked committed: the next run finds our marker and marks it
  (which is why that last transaction need not wait for the disk).

The version is recorded *before* the rename, so a crash right after it cannot make our own
version look like one written by someone else. A whole attempt runs in one worker thread: the store
calls go with the file work (``store.blocking``) instead of taking a thread trip each.

**Reconcile** (after a chat changed): an open browser tab saves its whole in-memory chat and so
silently drops a line we added (``sillytavern.md`` §8.1). While no version written by someone
else has contained our message, its absence means a stale tab dropped it: insert it again. Once
such a version contained it, the tab holds it, and a later absence is the user's choice (deleted,
or removed by ST's Regenerate): it is never re-added. ``chat_metadata.integrity`` is never
touched: changing it would turn the silent drop into a popup that loses the user's own edit.
"""

from __future__ import annotations

import contextlib
import html
import random
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

from daemon.config import Config
from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Job, JobState, LedgerEntry, Store
from daemon.errors import (
    ChatConflictError,
    ChatReadError,
    ChatWriteError,
    ImageFolderOutsideError,
    JobError,
    TavernError,
    UnsafePathError,
)
from daemon.tavern import layout, stream
from daemon.tavern.chat import (
    Chat,
    LineMessage,
    Message,
    MessageIdentity,
    format_send_date,
)
from daemon.tavern.layout import ChatRef, PathKind
from daemon.tavern.media import add_image_swipes, swipe_jobs, swipe_urls
from daemon.tavern.write import (
    Snapshot,
    Written,
    build_image_message,
    check_image_folder,
    cleanup_stale_temps,
    insert_after_line,
    link_image,
    read_for_edit,
    read_for_edit_with,
    replace_line,
    sha256_of,
    write_image,
)

__all__ = [
    "COMMIT_CONFLICT_RETRIES",
    "REASON_CHAT_GONE",
    "REASON_DELETED_AFTER_SHOWN",
    "REASON_REPLY_CHANGED",
    "REASON_REPLY_GONE",
    "Committer",
    "image_url",
    "served_path",
]

log = structlog.get_logger("st_imagegen.commit")

COMMIT_CONFLICT_RETRIES = 8
"""Fresh reads after a conflict (ST saved between our read and our rename) before giving up."""

CONFLICT_BACKOFF_FIRST_SECONDS = 0.05
CONFLICT_BACKOFF_MAX_SECONDS = 1.0
"""Backoff between conflict retries: doubling from the first value, capped, with jitter."""

CONFLICT_RETRY_SECONDS = 20.0
"""No new attempt starts after this long (a huge chat ST keeps saving): the job is put back
in the store for later instead."""

REASON_REPLY_CHANGED = "the reply was swiped or edited since the image was made"
REASON_REPLY_GONE = "the reply was deleted or regenerated since the image was made"
REASON_CHAT_GONE = "the chat file is gone (deleted or renamed in SillyTavern)"
REASON_DELETED_AFTER_SHOWN = (
    "removed in SillyTavern after it was shown (deleted by the user, or by Regenerate)"
)
REASON_NO_IMAGES = "nothing to commit: every image was deleted from the pending folder"
REASON_IMAGES_MISSING = "the image files written for it were deleted before the commit finished"


def image_url(folder: Path, file: Path) -> str:
    """The same-origin URL ST serves ``user/images/<folder>/<file>`` at (not percent-encoded)."""
    return f"/user/images/{folder.name}/{file.name}"


def served_path(root: Path, user: str, url: str) -> Path | None:
    """The file behind an ``/user/images/...`` URL in ``user``'s tree; ``None`` for other URLs."""
    prefix = "/user/images/"
    if not url.startswith(prefix):
        return None
    parts = url[len(prefix) :].split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
        return None
    return root / user / "user" / "images" / parts[0] / parts[1]


def message_urls(message: Mapping[str, Any]) -> list[str]:
    """The image URLs of one of our messages (``extra.media``, else ``extra.image``)."""
    extra = message.get("extra")
    if not isinstance(extra, dict):
        return []
    media = extra.get("media")
    if isinstance(media, list):
        urls = [m["url"] for m in media if isinstance(m, dict) and isinstance(m.get("url"), str)]
        if urls:
            return urls
    image = extra.get("image")
    return [image] if isinstance(image, str) and image else []


def image_titles(job: Job, names: Sequence[str]) -> list[str]:
    """Each kept image's own prompt (``meta["image_prompts"]`` follows ``job.images``): an image
    a regeneration carried over keeps the prompt that made it."""
    prompts = job.meta.get("image_prompts")
    own = [str(p) for p in prompts] if isinstance(prompts, list) else []
    out: list[str] = []
    for name in names:
        i = job.images.index(name) if name in job.images else -1
        out.append(own[i] if 0 <= i < len(own) and own[i] else job.prompt or "")
    return out


def render_caption(template: str, *, char: str, prompt: str) -> str:
    """``{{char}}`` and ``{{prompt}}`` (case-insensitive, like ST's macros) in the caption.

    The values are HTML-escaped: ST renders ``mes`` as HTML (its sanitizer stops scripts, but a
    prompt's ``<img>`` or ``<b>`` would still render); the user's own template is left as is."""
    values = {"char": html.escape(char, quote=False), "prompt": html.escape(prompt, quote=False)}
    return re.sub(
        r"\{\{\s*(char|prompt)\s*\}\}",
        lambda m: values[m.group(1).lower()],
        template,
        flags=re.IGNORECASE,
    )


class _NotCommittable(Exception):
    """The job can never be committed; ``reason`` says why (shown to the user)."""

    def __init__(self, reason: str, state: JobState = JobState.FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.state = state


_ATTEMPT_ERRORS = (
    _NotCommittable,
    ChatWriteError,
    ChatReadError,
    UnsafePathError,  # ImageFolderOutsideError too
    OSError,
)
"""What an attempt records on the job (given up, or kept for later); anything else is a bug."""


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one attempt at a commit came to (:meth:`Committer._attempt`)."""

    job: Job | None  # the job as the attempt read it; None: no such job
    done: Job | None = None  # the outcome to return: committed, or not ours to commit
    previous: JobState | None = None  # set when this attempt moved the job (to announce)
    swipe: bool = False  # image swipes for a committed job: the swipe path does it
    error: Exception | None = None  # to record on the job (see Committer._failed)
    path: Path | None = None  # the chat, once checked (a conflict's retry reads it again)
    # all None/False: a conflict (ST saved meanwhile); back off and attempt again


@dataclass(frozen=True, slots=True)
class _Plan:
    """A fresh read of a chat and what it says about one of our messages.

    Only the lines looked at are parsed (the reply and our marker are found by byte searches,
    see :class:`~daemon.tavern.chat.Chat`): a commit into a big chat costs about a copy of it.
    """

    chat: Chat | None  # None: a big chat read by streaming (daemon.tavern.stream)
    data: bytes | None
    snapshot: Snapshot
    present: LineMessage | None  # our message, found by its marker
    reply: LineMessage | None  # the reply it illustrates, found by identity
    problem: str | None  # why the reply no longer matches; None when it does
    streamed: stream.FoundLines | None = None

    @property
    def date_style(self) -> str:
        if self.streamed is not None:
            return self.streamed.date_style
        assert self.chat is not None
        return self.chat.date_style

    def insert_position(self) -> int:
        """After the reply and after our image messages already following it (keeps order),
        as the offset where the last of those lines ends. Lines that do not parse are passed
        over: they are no messages to ST."""
        assert self.reply is not None
        if self.streamed is not None:
            return self.streamed.insert_end
        assert self.chat is not None
        end = self.reply.end
        for start, line_end in self.chat.lines_after(end):
            line = self.chat.line_message(start, line_end)
            if line is None:
                continue
            if line.message.marker is None:
                break
            end = line_end
        return end


def _judge(reply: LineMessage | None, revision: str) -> str | None:
    if reply is None:
        return REASON_REPLY_GONE
    if str(reply.message.revision) != revision:
        return REASON_REPLY_CHANGED
    return None


def _read_plan(
    path: Path, root: Path, job_id: str, identity: MessageIdentity, revision: str
) -> _Plan:
    try:
        big = path.stat().st_size >= stream.STREAM_MIN_BYTES
    except OSError:
        big = False  # the read below reports it
    if big:
        # Memory independent of the chat's size: two streaming passes, no copy in memory.
        with contextlib.suppress(stream.NeedsFullRead):
            found = stream.find_lines(path, job_id, identity, root=root, hashed=False)
            problem = _judge(found.reply, revision)
            return _Plan(None, None, found.snapshot, found.present, found.reply, problem, found)

    def look(chat: Chat) -> tuple[LineMessage | None, LineMessage | None]:
        return chat.find_marker_line(job_id), chat.find_line(identity)

    # No hash: the writer compares bytes, and our new version is known by its file identity.
    # ``root`` on every read: the chat may be swapped for a symlink between conflict retries.
    chat, data, snap, (present, reply) = read_for_edit_with(path, look, root=root, hashed=False)
    return _Plan(chat, data, snap, present, reply, _judge(reply, revision))


def _backoff(attempt: int) -> float:
    base = min(CONFLICT_BACKOFF_FIRST_SECONDS * 2.0**attempt, CONFLICT_BACKOFF_MAX_SECONDS)
    return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security


class Committer:
    """Writes accepted jobs into their chats and re-inserts what stale tabs drop.

    Commits and reconciles of one chat are serialized by a per-chat lock; the file itself is
    protected against other writers by the compare-before-replace in
    :func:`daemon.tavern.write.insert_after`.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        approval: Approval,
        root: Path,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.approval = approval
        self.root = root
        self._clock = clock or (lambda: datetime.now(UTC))
        self._locks: dict[str, anyio.Lock] = {}
        self._cleaned = False
        self._clean_lock = anyio.Lock()

    def _lock(self, chat: str) -> anyio.Lock:
        lock = self._locks.get(chat)
        if lock is None:
            lock = self._locks[chat] = anyio.Lock()
        return lock

    # --- commit ---------------------------------------------------------------------------

    async def commit_job(self, job: Job) -> Job:
        """ACCEPTED -> COMMITTED, or SUPERSEDED/FAILED with a reason; or still ACCEPTED with
        ``last_error`` and ``next_attempt_at`` set when the chat could not be written now (a
        full disk, a read-only folder, a chat that kept changing): the job is kept and retried.

        A COMMITTED job only gets its leftover pending folder removed. Other states are
        returned unchanged.

        Each attempt is one trip to a worker thread (:meth:`_attempt`): the store calls go
        with the file work instead of each taking a trip of its own; only a conflict (a
        backoff, then a fresh attempt) or a failure (recorded on the job) comes back for more.
        """
        await self._clean_image_temps_once()
        async with self._lock(job.chat):
            deadline = time.monotonic() + CONFLICT_RETRY_SECONDS
            current = job
            path: Path | None = None  # checked once; each retry's read checks the root again
            for attempt in range(COMMIT_CONFLICT_RETRIES):
                if attempt and time.monotonic() > deadline:
                    break
                step = await anyio.to_thread.run_sync(self._attempt, job.id, path)
                path = step.path
                if step.job is None:
                    log.warning("commit of an unknown job skipped", job=job.id)
                    return job
                current = step.job
                if step.error is not None:
                    return await self._failed(current, step.error)
                if step.swipe:
                    try:
                        return await _commit_swipe(self, current)
                    except _ATTEMPT_ERRORS as exc:
                        return await self._failed(current, exc)
                if step.done is not None:
                    if step.previous is not None:  # moved here: tell the listeners, on the loop
                        self.store.announce(step.done, step.previous)
                    return step.done
                await anyio.sleep(_backoff(attempt))  # ST saved while we wrote: read again
            return await self._retry_later(
                current, "the chat kept changing while the image message was being inserted"
            )

    async def _failed(self, job: Job, exc: Exception) -> Job:
        """Record why an attempt failed: given up, or kept for a later try."""
        if isinstance(exc, _NotCommittable):
            return await self._give_up(job, exc.state, exc.reason)
        if isinstance(exc, ImageFolderOutsideError):
            # Never written there; the user can fix the folder, so the job waits for it.
            log.warning("image folder refused", job=job.id, error=str(exc))
            return await self._retry_later(job, str(exc))
        if isinstance(exc, UnsafePathError):
            # A chat that leads out of the data root: never written.
            return await self._give_up(job, JobState.FAILED, str(exc))
        if isinstance(exc, ChatWriteError | ChatReadError):
            return await self._retry_later(job, str(exc))
        if isinstance(exc, OSError):
            # Reading a pending image or creating the image folder: the environment, not the
            # job, is wrong; keep the job.
            return await self._retry_later(job, f"cannot commit: {_os_reason(exc)}")
        raise exc

    def _attempt(self, job_id: str, path: Path | None) -> _Attempt:
        """One attempt, in a worker thread: the job's state, the chat read, the image files,
        the ledger entry with our write's version, the chat written, the job marked committed and
        its pending folder removed. What went wrong is returned, not raised, with the job as
        read (its attempts count), for :meth:`commit_job` to record back on the loop."""
        try:
            job = self.store.blocking.job(job_id)
        except JobError:
            return _Attempt(None)
        if job.state is JobState.COMMITTED:
            self._finish_pending_now(job.id)
            return _Attempt(job, done=job)
        if job.state is not JobState.ACCEPTED:
            log.info("commit skipped: job is not accepted", job=job.id, state=job.state)
            return _Attempt(job, done=job)
        if job.meta.get("swipe_of"):  # variants of a committed job: swipes, no new message
            return _Attempt(job, swipe=True)
        try:
            return self._insert(job, path or self._chat_path(job.chat))
        except _ATTEMPT_ERRORS as exc:
            return _Attempt(job, error=exc)

    def _insert(self, job: Job, path: Path) -> _Attempt:
        entry = self.store.blocking.entry(job.id)
        if entry is not None and entry.retired is not None:
            raise _NotCommittable(entry.retired, JobState.SUPERSEDED)
        message = entry.message if entry is not None else None
        try:
            plan = self._plan(path, job.id, job.identity, job.revision)
        except ChatConflictError:  # ST kept saving while we read: read again
            return _Attempt(job, path=path)
        if plan.present is not None:
            # An earlier run wrote it (and crashed before marking the job): done.
            if message is None:  # written by a version that kept no entry first
                message = plan.present.message.data
                self.store.blocking.add_entry(job, message)
            return self._committed_now(job, message)
        if plan.problem is not None:
            if entry is not None:
                self.store.blocking.retire(job.id, plan.problem)
            raise _NotCommittable(plan.problem, JobState.SUPERSEDED)
        if message is None:
            message = self._prepare(job, plan)
        else:
            self._check_images(job, message)
        after = plan.insert_position()
        record = partial(self._intend, job, message)
        if not self._write_now(job.chat, path, plan, after, message, record):
            return _Attempt(job, path=path)
        log.info(
            "image committed",
            job=job.id,
            chat=job.chat,
            at_byte=after,
            images=len(message_urls(message)),
        )
        return self._committed_now(job, message)

    def _intend(self, job: Job, message: Mapping[str, Any], written: Written) -> None:
        """Before the rename: the ledger entry and our write's version, one transaction (a
        crash right after the rename must not leave our version looking like someone else's,
        and the entry says what the next run inserts); waited onto the disk only when the
        file could not be marked ours. Another run's entry first: the rename is called off as
        a conflict, and the next attempt writes that entry's message."""
        taken = self.store.blocking.intend(
            job, message, written.version, durable=not written.marked
        )
        if taken is not None:
            raise ChatConflictError("another run of this job recorded its message first")

    async def _clean_image_temps_once(self) -> None:
        """Remove temp files a killed run left in the image folders, before this process
        writes any image (so none of ours is in flight)."""
        if self._cleaned:
            return
        async with self._clean_lock:
            if not self._cleaned:
                removed = await anyio.to_thread.run_sync(_clean_image_temps, self.root)
                if removed:
                    log.info("removed temp files left by an interrupted commit", count=removed)
                self._cleaned = True

    def _chat_path(self, rel: str) -> Path:
        path = self.root / rel
        kind = layout.classify(self.root, path).kind
        if kind is not PathKind.CHAT:
            raise _NotCommittable(f"{rel!r} is not a chat file under the data root")
        if not path.is_file():
            raise _NotCommittable(REASON_CHAT_GONE, JobState.SUPERSEDED)
        return path

    def _plan(self, path: Path, job_id: str, identity: MessageIdentity, revision: str) -> _Plan:
        try:
            return _read_plan(path, self.root, job_id, identity, revision)
        except ChatReadError:
            if not path.exists():
                raise _NotCommittable(REASON_CHAT_GONE, JobState.SUPERSEDED) from None
            raise

    def _write_now(
        self,
        chat: str,
        path: Path,
        plan: _Plan,
        after: int,
        message: Mapping[str, Any],
        before_replace: Callable[[Written], None],
    ) -> bool:
        """Insert ``message`` after the line ending at offset ``after`` (in a worker thread);
        ``before_replace`` gets the new version right before the rename. False on a conflict
        (re-read and retry)."""
        write: Callable[[], object]
        if plan.data is None:
            write = partial(
                stream.insert_at,
                path,
                plan.snapshot,
                after,
                [dict(message)],
                root=self.root,
                before_replace=before_replace,
            )
        else:
            write = partial(
                insert_after_line,
                path,
                plan.snapshot,
                plan.data,
                after,
                [dict(message)],
                root=self.root,
                before_replace=before_replace,
            )
        return _attempted(write, chat)

    def _rewrite_now(
        self,
        chat: str,
        path: Path,
        plan: _Plan,
        line: LineMessage,
        message: Mapping[str, Any],
        before_replace: Callable[[Written], None],
    ) -> bool:
        """Put ``message`` back over our own older line (image swipes a stale tab dropped),
        in a worker thread; False on a conflict (re-read and retry)."""
        assert plan.data is not None
        rewrite = partial(
            replace_line,
            path,
            plan.snapshot,
            plan.data,
            line.start,
            line.end,
            dict(message),
            root=self.root,
            before_replace=before_replace,
        )
        done = _attempted(rewrite, chat)
        if done:
            log.info("image swipes restored after a stale save", chat=chat)
        return done

    def _prepare(self, job: Job, plan: _Plan) -> dict[str, Any]:
        """Write the image files (or find them from an earlier run) and build the message.
        Its ledger entry is recorded with our write's version, right before the rename."""
        assert plan.reply is not None
        reply = plan.reply.message
        present = {p.name: p for p in self.approval.kept_images(job.id)}
        # Exactly the images the user kept, in their order: never whatever else is in the folder.
        kept = [present[name] for name in job.images if name in present]
        if not kept:
            raise _NotCommittable(REASON_NO_IMAGES)
        folder = self._image_folder(job, reply)
        now = self._clock()
        files = _write_images(folder, self.root, job.id, list(kept), now)
        titles = image_titles(job, [p.name for p in kept])
        prompt = titles[0] if titles else job.prompt or ""  # the caption: the first image's
        negative = job.meta.get("negative")
        data = reply.data
        force_avatar = data.get("force_avatar") if job.is_group else None
        original_avatar = data.get("original_avatar") if job.is_group else None
        return build_image_message(
            name=reply.name,
            urls=[image_url(folder, f) for f in files],
            prompt=prompt,
            caption=render_caption(self.config.commit.caption, char=reply.name, prompt=prompt),
            send_date=format_send_date(now, plan.date_style),
            job_id=job.id,
            hidden=self.config.commit.hidden,
            negative=negative if isinstance(negative, str) else "",
            force_avatar=force_avatar if isinstance(force_avatar, str) else None,
            original_avatar=original_avatar if isinstance(original_avatar, str) else None,
            titles=titles,
        )

    def _image_folder(self, job: Job, reply: Message) -> Path:
        name = self._folder_name(job, reply)
        for candidate in (name, job.character):
            # A display name that sanitizes to nothing ("???", "con"): the card stem next.
            with contextlib.suppress(UnsafePathError):
                return layout.image_folder(self.root, job.user, candidate)
        # Both are reserved or empty once sanitized: a name stable per character.
        return layout.image_folder(
            self.root, job.user, layout.fallback_folder_name(job.character or name)
        )

    def _folder_name(self, job: Job, reply: Message) -> str:
        """ST's image folder: the display name in solo chats, the group id in group chats."""
        if not job.is_group:
            return reply.name or job.speaker or job.character
        chat_id = Path(job.chat).stem
        group = layout.group_for_chat(self.root, job.user, chat_id)
        if group is None:
            log.warning("group of a group chat not found; using the chat id", chat=job.chat)
            return job.character or chat_id
        return group.id

    def _check_images(self, job: Job, message: Mapping[str, Any]) -> None:
        """A message from the ledger must not point at a missing file (in a worker thread)."""
        for url in message_urls(message):
            path = served_path(self.root, job.user, url)
            if path is None or not path.is_file():
                self.store.blocking.retire(job.id, REASON_IMAGES_MISSING)
                raise _NotCommittable(REASON_IMAGES_MISSING)

    def _committed_now(self, job: Job, message: Mapping[str, Any]) -> _Attempt:
        """Mark the job committed and remove its pending folder (in a worker thread).

        The chat line is durable by now, so this transaction does not wait for the disk: a
        power cut that loses it leaves the job accepted, and the next run finds our marker
        in the chat and marks it again (the ledger entry, durable before the rename, holds
        the message)."""
        urls = message_urls(message)
        paths = [served_path(self.root, job.user, u) for u in urls]
        moved, previous = self.store.blocking.transition(
            job.id,
            JobState.ACCEPTED,
            JobState.COMMITTED,
            durable=False,
            last_error=None,
            next_attempt_at=None,
            meta_update={
                "committed_urls": urls,
                "committed_files": [str(p) for p in paths if p is not None],
                "committed_at": self._clock().isoformat(),
            },
        )
        self._finish_pending_now(job.id)
        if moved is None:  # moved by someone else meanwhile: what it is now
            return _Attempt(job, done=self.store.blocking.job(job.id))
        return _Attempt(job, done=moved, previous=previous)

    async def _committed(self, job: Job, message: Mapping[str, Any]) -> Job:
        """:meth:`_committed_now` from the loop (the swipe path), announced."""
        step = await anyio.to_thread.run_sync(self._committed_now, job, message)
        assert step.done is not None
        if step.previous is not None:
            self.store.announce(step.done, step.previous)
        return step.done

    def _finish_pending_now(self, job_id: str) -> None:
        try:  # renamed out of pending/ now; deleted off the commit's path
            self.approval.finish(job_id, later=True)
        except OSError as exc:
            log.warning("pending folder not removed", job=job_id, error=_os_reason(exc))

    async def _give_up(self, job: Job, state: JobState, reason: str) -> Job:
        text = f"not committed: {reason}"
        log.info("job not committed", job=job.id, state=state, reason=reason)
        moved = await self.store.transition(
            job.id, JobState.ACCEPTED, state, last_error=text, next_attempt_at=None
        )
        if moved is not None and state is JobState.SUPERSEDED:
            # Like a superseded pending job: its images illustrate a text that is gone, maybe
            # only until a swipe back (then the job is revived from the shelf).
            try:
                await anyio.to_thread.run_sync(self.approval.shelve, job.id)
            except OSError as exc:
                log.warning("pending folder not shelved", job=job.id, error=_os_reason(exc))
        return moved if moved is not None else await self.store.get_job(job.id)

    async def _retry_later(self, job: Job, error: str) -> Job:
        limits = self.config.limits
        delay = min(
            limits.retry_base_seconds * 2.0 ** min(job.attempts, 30), limits.retry_max_seconds
        )
        text = f"{error}; will retry in {delay:.0f} s"
        log.warning("commit postponed", job=job.id, chat=job.chat, error=error, delay=delay)
        moved = await self.store.transition(
            job.id,
            JobState.ACCEPTED,
            JobState.ACCEPTED,
            attempts=job.attempts + 1,
            last_error=text,
            next_attempt_at=self._clock() + timedelta(seconds=delay),
        )
        return moved if moved is not None else await self.store.get_job(job.id)

    # --- reconcile ------------------------------------------------------------------------

    async def reconcile_chat(self, chat: ChatRef) -> int:
        """Re-insert our messages a stale tab dropped; acknowledge those ST has saved; retire
        those whose reply changed. Returns how many were re-inserted.

        Only chats with unacknowledged entries are read. An acknowledged message is never
        re-added, so watching it would only cost a full read per save forever; when it has
        disappeared and the chat is read anyway (with nothing to write back), its entry is
        retired as removed by the user.
        The common case, nothing of ours waiting, costs one store query and no file read."""
        async with self._lock(chat.rel):
            return await self._reconcile(chat.rel, chat.path)

    async def reconcile_open(self) -> int:
        """Reconcile every chat with open ledger entries (at startup); returns re-inserts."""
        total = 0
        for rel in sorted(await self.store.chats_with_open_ledger()):
            classified = layout.classify(self.root, self.root / rel)
            if classified.chat is None:
                continue
            total += await self.reconcile_chat(classified.chat)
        return total

    async def _reconcile(self, rel: str, path: Path) -> int:
        """Passes over the chat (each one worker-thread trip: :meth:`_reconcile_pass`) until
        nothing is left to do, backing off after each conflict."""
        inserted = 0
        conflicts = 0
        deadline = time.monotonic() + CONFLICT_RETRY_SECONDS
        while conflicts < COMMIT_CONFLICT_RETRIES and not (
            conflicts and time.monotonic() > deadline
        ):
            written, done = await anyio.to_thread.run_sync(self._reconcile_pass, rel, path)
            inserted += written
            if done:
                return inserted
            conflicts += 1
            await anyio.sleep(_backoff(conflicts))
        log.warning("reconcile gave up for now: the chat kept changing", chat=rel)
        return inserted

    def _reconcile_pass(self, rel: str, path: Path) -> tuple[int, bool]:
        """Read the chat, judge the ledger's entries by it, write back what a stale tab
        dropped, in a worker thread (the store calls too). Returns how many were re-inserted
        and whether it is done (False: ST saved meanwhile; read again after a backoff)."""
        inserted = 0
        while True:
            entries = self.store.blocking.watched(rel)
            waiting = [e for e in entries if not e.acknowledged]
            if not waiting:
                return inserted, True
            identities = {e.job_id: self._identity(e) for e in waiting}
            look = partial(_look_up, entries=waiting, identities=identities)
            try:
                chat, data, snap, found = read_for_edit_with(
                    path, look, root=self.root, hashed=False
                )
            except ChatConflictError:
                return inserted, False
            except UnsafePathError as exc:
                log.warning("reconcile: chat path refused", chat=rel, error=str(exc))
                return inserted, True
            except ChatReadError as exc:
                if not path.exists():
                    for entry in entries:
                        self.store.blocking.retire(entry.job_id, REASON_CHAT_GONE)
                    return inserted, True
                log.warning("reconcile: chat not readable", chat=rel, error=str(exc))
                return inserted, True
            theirs = cache(partial(self._theirs, rel, snap, data))  # asked once at most
            todo = self._judge(waiting, found, theirs)
            if not todo:
                self._tidy(chat, [e for e in entries if e.acknowledged])
                return inserted, True
            entry, line, replace = todo[0]
            plan = _Plan(chat, data, snap, None, line, None)
            try:
                self._check_images_of(entry)
            except _NotCommittable:
                continue  # retired; look at the rest
            written = self._reinsert(rel, path, plan, entry, line, replace)
            if written is None:
                return inserted, True
            if not written:
                return inserted, False
            inserted += 1
            if len(todo) == 1:
                return inserted, True  # nothing else was missing: no need to read it again

    def _reinsert(
        self,
        rel: str,
        path: Path,
        plan: _Plan,
        entry: LedgerEntry,
        line: LineMessage,
        replace: bool,
    ) -> bool | None:
        """Write ``entry``'s message into the chat again (in place of ``line`` when
        ``replace``): True written, False a conflict (read again), None given up. The version
        of our write is recorded before the rename, as in a commit."""
        record = partial(_record, self.store, rel)
        try:
            if replace:
                written = self._rewrite_now(rel, path, plan, line, entry.message, record)
            else:
                after = plan.insert_position()
                written = self._write_now(rel, path, plan, after, entry.message, record)
        except TavernError as exc:
            log.warning("reconcile: re-insert failed", chat=rel, job=entry.job_id, error=str(exc))
            return None
        if written and not replace:
            log.info("image message re-inserted after a stale save", chat=rel, job=entry.job_id)
        return written

    def _judge(
        self,
        entries: Sequence[LedgerEntry],
        found: Sequence[_Found],
        theirs: Callable[[], bool],
    ) -> list[tuple[LedgerEntry, LineMessage, bool]]:
        """Acknowledge and retire open entries by what the chat holds (``found``: see
        :func:`_look_up`); the entries to write again, oldest first, each with the line to
        insert after (its reply) or, when the last flag is set, the stale line to replace.
        ``theirs()``: whether the version read was written by someone else (asked only when an
        open entry is present in it). These judgements are not waited onto the disk: a power
        cut that loses one leaves the entry as it was, and the next read judges it again."""
        blocking = self.store.blocking
        todo: list[tuple[LedgerEntry, LineMessage, bool]] = []
        for entry, (present, reply, stale) in zip(entries, found, strict=True):
            if stale is not None:
                todo.append((entry, stale, True))
                continue
            if present:
                if theirs():
                    blocking.acknowledge(entry.job_id, durable=False)
                continue
            if reply is None:
                blocking.retire(entry.job_id, REASON_REPLY_GONE, durable=False)
            elif str(reply.message.revision) != entry.reply.revision:
                blocking.retire(entry.job_id, REASON_REPLY_CHANGED, durable=False)
            else:
                todo.append((entry, reply, False))
        return todo

    def _tidy(self, chat: Chat, acknowledged: Sequence[LedgerEntry]) -> None:
        """Retire the acknowledged entries whose message is gone from ``chat``: the user
        removed it (never re-added). Bookkeeping only, so a pass that has something to write
        back leaves it to the next read of the chat (the change event of its own write)."""
        for entry in acknowledged:
            if chat.find_marker_line(entry.job_id) is None:
                self.store.blocking.retire(entry.job_id, REASON_DELETED_AFTER_SHOWN, durable=False)
                log.info("image message removed in SillyTavern; left out", job=entry.job_id)

    def _theirs(self, rel: str, snap: Snapshot, data: bytes) -> bool:
        """Whether the version read is not one of our writes: our mark on the file, else its
        identity in the store (a hash of ``data`` only for writes an older version recorded
        by hash)."""
        if snap.marked:
            return False
        return not self.store.blocking.our_write(rel, snap.version, partial(sha256_of, data))

    def _identity(self, entry: LedgerEntry) -> MessageIdentity:
        return entry.reply.identity(self.store.blocking.message_index(entry.job_id) or 0)

    def _check_images_of(self, entry: LedgerEntry) -> None:
        for url in message_urls(entry.message):
            path = served_path(self.root, entry.reply.user, url)
            if path is None or not path.is_file():
                self.store.blocking.retire(entry.job_id, REASON_IMAGES_MISSING)
                raise _NotCommittable(REASON_IMAGES_MISSING)


def _write_images(
    folder: Path, root: Path, job_id: str, kept: Sequence[Path], now: datetime
) -> list[Path]:
    """Put the kept images into ``folder``; a file an earlier run wrote for this job (found by
    the job id in its name and equal bytes) is reused, so retries leave no orphans. Each is
    a hard link to the pending file where the file system allows (its bytes are on disk
    already: no copy, no second fsync of them), else a copy. The folder is created (durably)
    by ``link_image`` or ``write_image``."""
    check_image_folder(folder, root)  # before looking for earlier files in it, too
    out: list[Path] = []
    for number, source in enumerate(kept, 1):
        ext = source.suffix.lstrip(".").lower() or "png"
        tag = f"{job_id}-{number}"
        prefix = f"{folder.name}_{tag}"
        written = (
            _find_written(folder, tag, ext, source)
            or link_image(folder, source, ext, prefix, now, root=root)
            or write_image(folder, source.read_bytes(), ext, prefix, now, root=root)
        )
        out.append(written)
    return out


def _find_written(folder: Path, tag: str, ext: str, source: Path) -> Path | None:
    # Job ids are [0-9A-Z] only: no glob metacharacters, and unique enough to match on alone.
    candidates = sorted(folder.glob(f"*_{tag}_*.{ext}"))
    if not candidates:
        return None
    origin = source.stat()
    data: bytes | None = None
    for candidate in candidates:
        try:
            found = candidate.stat(follow_symlinks=False)
            if not stat.S_ISREG(found.st_mode) or found.st_size != origin.st_size:
                continue
            if (found.st_dev, found.st_ino) == (origin.st_dev, origin.st_ino):
                return candidate  # our own link
            data = source.read_bytes() if data is None else data
            if candidate.read_bytes() == data:
                return candidate
        except OSError:
            continue
    return None


def _clean_image_temps(root: Path) -> int:
    removed = 0
    for user in layout.list_users(root):
        images = root / user / "user" / "images"
        try:
            folders = [p for p in images.iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:
            continue
        for folder in folders:
            try:
                removed += cleanup_stale_temps(folder)
            except ChatWriteError as exc:
                log.warning("temp cleanup failed", folder=str(folder), error=str(exc))
    return removed


def _attempted(edit: Callable[[], object], chat: str) -> bool:
    """Run a chat edit: True done, False a conflict (ST saved since the read: read again)."""
    try:
        edit()
    except ChatConflictError:
        log.debug("chat changed under our edit; retrying from a fresh read", chat=chat)
        return False
    return True


def _record(store: Store, chat: str, written: Written) -> None:
    """Before a rename: remember the version as ours, waited onto the disk only when the file
    could not be marked ours (the mark is on disk with the file's bytes)."""
    store.blocking.record_write(chat, written.version, durable=not written.marked)


_Found = tuple[bool, LineMessage | None, LineMessage | None]
"""For one ledger entry: its marker is in the chat; the reply (when missing); our line when it
is there but older than the entry (image swipes a stale tab dropped)."""


def _look_up(
    chat: Chat, entries: Sequence[LedgerEntry], identities: Mapping[str, MessageIdentity]
) -> list[_Found]:
    """For each entry: whether its marker is in ``chat``, and (when it is missing and an
    identity is given) the reply it illustrates, or our line when it lacks swipes the entry
    has. Byte searches."""
    out: list[_Found] = []
    for entry in entries:
        line = chat.find_marker_line(entry.job_id)
        stale: LineMessage | None = None
        if line is not None and not set(swipe_jobs(entry.message)) <= set(
            swipe_jobs(line.message.data)
        ):
            stale = line
        present = line is not None
        identity = identities.get(entry.job_id)
        reply = None if present or identity is None else chat.find_line(identity)
        out.append((present, reply, stale))
    return out


def _os_reason(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


async def _commit_swipe(committer: Committer, job: Job) -> Job:
    """Add an accepted variant job's images to the image message of ``meta["swipe_of"]``."""
    target = str(job.meta["swipe_of"])
    path = committer._chat_path(job.chat)
    for attempt in range(COMMIT_CONFLICT_RETRIES):
        chat, data, snap = await anyio.to_thread.run_sync(
            partial(read_for_edit, path, root=committer.root)
        )
        line = chat.find_marker_line(target)
        if line is None:
            raise _NotCommittable(
                "the image message to add these variants to is gone from the chat",
                JobState.SUPERSEDED,
            )
        message = line.message.data
        if job.id in swipe_jobs(message):  # an earlier run wrote it
            return await committer._committed(job, message)
        present = {
            p.name: p
            for p in await anyio.to_thread.run_sync(committer.approval.kept_images, job.id)
        }
        kept = [present[name] for name in job.images if name in present]
        if not kept:
            raise _NotCommittable(REASON_NO_IMAGES)
        first = next(
            (p for u in swipe_urls(message) if (p := served_path(committer.root, job.user, u))),
            None,
        )
        folder = first.parent if first is not None else committer._image_folder(job, line.message)
        files = await anyio.to_thread.run_sync(
            _write_images, folder, committer.root, job.id, kept, committer._clock()
        )
        negative = job.meta.get("negative")
        updated = add_image_swipes(
            message,
            [image_url(folder, f) for f in files],
            prompt=job.prompt or "",
            job_id=job.id,
            negative=negative if isinstance(negative, str) else "",
        )

        record = partial(_record, committer.store, job.chat)
        try:
            await anyio.to_thread.run_sync(
                partial(
                    replace_line,
                    path,
                    snap,
                    data,
                    line.start,
                    line.end,
                    updated,
                    root=committer.root,
                    before_replace=record,
                )
            )
        except ChatConflictError:
            await anyio.sleep(_backoff(attempt))
            continue
        # Reconcile re-inserts the ledger's message after a stale save: it must be this one.
        await committer.store.ledger_set_message(target, updated)
        log.info("image swipes added", job=job.id, to=target, images=len(files), chat=job.chat)
        return await committer._committed(job, updated)
    return await committer._retry_later(job, "the chat kept changing while swipes were added")
