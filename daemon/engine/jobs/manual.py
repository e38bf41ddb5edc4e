"""A job for one chosen reply (``st-imagegen generate``, ``POST /api/v1/generate``): choosing the
chat and the message, creating (or reviving) its job, and following it (``generate --wait``).

Which chat (``--chat``):

=====================  ===================================================================
(not given)            the most recently saved chat of the watched users
``PATH``               a chat file: absolute, relative to the current folder, or relative
                       to the data root (``default-user/chats/Alice/Alice - ….jsonl``)
``NAME``               a character (card file name without ``.png``, or display name) or a
                       group (its name or id): its most recently saved chat
``NAME/CHAT``          that character's or group's chat ``CHAT``: the file name without
``NAME:CHAT``          ``.jsonl``, or a unique beginning of it
=====================  ===================================================================

Names match exactly first, then ignoring case. Chat names cannot contain ``/`` or ``:`` (ST
removes them), so a display name that does is still found: the last separator splits. An
ambiguous name is refused with the candidates listed.

Which message (``--mesid N``): ST's numbering (the header line is not a message; the first
message is 0). Without it, the last character reply. User messages, hidden messages, narrator
and system lines, and our own image messages are refused with a clear error.

The job is queued in the store (source ``manual``) whatever the mode, and runs through the same
pipeline as any other, approval setting included. Asking twice for the same reply and revision
names the existing job; ``--force`` makes a new one (the next regeneration of that reply).
``--wait`` follows the job until it is pending, committed or final (at most ``--timeout``
seconds; the job itself keeps going); with no daemon running (no fresh heartbeat) it runs the
job in this process with the daemon's own pipeline. The faces reach all of this through
:class:`daemon.engine.front.Engine`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from daemon.config import Config
from daemon.configure.ready import setup_missing
from daemon.engine.jobs.approval import Approval
from daemon.engine.process.status import daemon_status
from daemon.engine.store import Job, JobState, Store
from daemon.errors import (
    AmbiguousError,
    CardError,
    ChatReadError,
    ConfigError,
    JobError,
    MessageNotFoundError,
    NotFoundError,
    StImagegenError,
    UnsafePathError,
)
from daemon.jobstate import WAIT_STOP_STATES, ReplyKey
from daemon.tavern import cards, layout
from daemon.tavern.chat import Chat, Message, read_chat
from daemon.tavern.layout import ChatRef

if TYPE_CHECKING:
    from daemon.engine.jobs.pipeline import JobDeps

__all__ = [
    "STOP_STATES",
    "WAIT_POLL_SECONDS",
    "Selection",
    "create_for",
    "follow",
    "pick_message",
    "resolve_chat_spec",
    "select",
]

WAIT_POLL_SECONDS = 0.25
"""How often ``--wait`` looks at the job's state in the store."""

RETRY_CHECK_SECONDS = 5.0
"""Longest ``--wait`` sleeps (running the job itself) before it looks at a rescheduled job."""

_LIST_MAX = 12
"""At most this many candidates are listed in an error."""

STOP_STATES = WAIT_STOP_STATES
"""Where ``--wait`` stops: the images wait for the user, or the job is done."""


# --- choosing the chat -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """A character or a group, and its chats."""

    kind: str  # "character" | "group"
    user: str
    key: str  # card file stem, or group id
    names: tuple[str, ...]  # what the user may call it
    chats: tuple[ChatRef, ...]

    @property
    def label(self) -> str:
        shown = self.names[1] if len(self.names) > 1 and self.names[1] != self.key else self.key
        return f"{self.kind} {shown!r} ({self.user})"


def _mtime(ref: ChatRef) -> int:
    try:
        return ref.path.stat().st_mtime_ns
    except OSError:
        return -1


def _newest(chats: Sequence[ChatRef]) -> ChatRef:
    return max(chats, key=lambda ref: (_mtime(ref), ref.rel))


def _listing(items: Sequence[str]) -> str:
    shown = list(items[:_LIST_MAX])
    more = f", … ({len(items) - _LIST_MAX} more)" if len(items) > _LIST_MAX else ""
    return ", ".join(shown) + more


def _group_files(root: Path, user: str) -> list[tuple[str, str, set[str]]]:
    """``(id, name, chat ids)`` of every readable ``groups/*.json`` of ``user``."""
    out: list[tuple[str, str, set[str]]] = []
    folder = root / user / "groups"
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.is_file())
    except OSError:
        return out
    for path in files:
        try:
            obj = json.loads(path.read_bytes()[: 16 * 1024 * 1024])
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(obj, dict):
            continue
        gid = str(obj.get("id") or path.stem)
        name = obj.get("name")
        ids = {str(obj.get("chat_id") or "")}
        chats = obj.get("chats")
        if isinstance(chats, list):
            ids.update(str(c) for c in chats if isinstance(c, (str, int)))
        ids.add(gid)
        ids.discard("")
        out.append((gid, name if isinstance(name, str) else "", ids))
    return out


def _targets(root: Path, users: Sequence[str]) -> list[_Target]:
    by_owner: dict[tuple[str, str], list[ChatRef]] = {}
    group_chats: dict[str, list[ChatRef]] = {}
    for ref in layout.iter_chats(root, users):
        if ref.is_group:
            group_chats.setdefault(ref.user, []).append(ref)
        else:
            by_owner.setdefault((ref.user, ref.owner), []).append(ref)
    targets: list[_Target] = []
    for (user, owner), chats in sorted(by_owner.items()):
        names = [owner]
        try:
            display = cards.read_card(layout.card_path(root, user, owner)).name
        except (CardError, UnsafePathError, OSError):
            display = ""
        if display and display != owner:
            names.append(display)
        targets.append(_Target("character", user, owner, tuple(names), tuple(chats)))
    for user, chats in sorted(group_chats.items()):
        for gid, name, ids in _group_files(root, user):
            mine = tuple(ref for ref in chats if ref.chat_id in ids)
            if mine:
                targets.append(_Target("group", user, gid, (gid, name) if name else (gid,), mine))
    return targets


def _match_targets(targets: Sequence[_Target], name: str) -> list[_Target]:
    exact = [t for t in targets if name in t.names]
    if exact:
        return exact
    folded = name.casefold()
    return [t for t in targets if any(n.casefold() == folded for n in t.names)]


def _match_chat(target: _Target, wanted: str) -> ChatRef:
    wanted = wanted.removesuffix(".jsonl")
    chats = sorted(target.chats, key=lambda ref: ref.chat_id)
    folded = wanted.casefold()
    for found in (
        [ref for ref in chats if ref.chat_id == wanted],
        [ref for ref in chats if ref.chat_id.casefold() == folded],
        [ref for ref in chats if ref.chat_id.casefold().startswith(folded)],
    ):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise AmbiguousError(
                f"chat {wanted!r} of {target.label} is ambiguous: "
                f"{_listing([ref.chat_id for ref in found])}; give more of its name"
            )
    raise NotFoundError(
        f"{target.label} has no chat {wanted!r}; its chats: "
        f"{_listing([ref.chat_id for ref in chats])}"
    )


def _from_path(root: Path, text: str) -> ChatRef:
    path = Path(text).expanduser()
    if not path.is_absolute():
        here = Path.cwd() / path
        if here.exists():
            path = here
    if path.is_absolute():
        try:
            path.relative_to(root)
        except ValueError:
            # The same file through a symlinked folder (e.g. /srv/st -> /data/st).
            path = Path(os.path.realpath(path.parent)) / path.name
    ref = layout.resolve_chat(root, path)
    if not ref.path.is_file():
        raise ChatReadError(f"chat {text!r} does not exist")
    return ref


def _explicit_path(text: str) -> bool:
    return Path(text).is_absolute() or text.startswith(("./", "../", "~"))


def _looks_like_path(text: str) -> bool:
    return text.endswith(".jsonl") or _explicit_path(text)


def resolve_chat_spec(root: Path, users: Sequence[str], spec: str | None) -> ChatRef:
    """The chat ``spec`` names (syntax in the module docstring); errors list candidates."""
    if spec is None:
        chats = list(layout.iter_chats(root, users))
        if not chats:
            watched = ", ".join(users) if users else "any user"
            raise NotFoundError(f"no chats found for {watched} under {str(root)!r}")
        return _newest(chats)
    text = spec.strip()
    if not text:
        raise NotFoundError("--chat is empty")
    if _looks_like_path(text):
        try:
            return _from_path(root, text)
        except (UnsafePathError, ChatReadError):
            if _explicit_path(text):
                raise
            text = text.removesuffix(".jsonl")  # "Alice/Alice - 2026-….jsonl" is a name form
    targets = _targets(root, users)
    splits: list[tuple[str, str | None]] = [(text, None)]
    for i in sorted((i for i, ch in enumerate(text) if ch in "/:"), reverse=True):
        splits.append((text[:i], text[i + 1 :]))
    for name, chat in splits:
        found = _match_targets(targets, name.strip())
        if found:
            return _chat_of(found, name, chat, text)
    names = sorted({t.names[-1] for t in targets})
    hint = f"; known: {_listing(names)}" if names else "; no characters or groups found"
    raise NotFoundError(f"no character, group or chat file matches {spec!r}{hint}")


def _chat_of(found: Sequence[_Target], name: str, chat: str | None, text: str) -> ChatRef:
    """The chat ``chat`` (None: the newest) of the one target among ``found``."""
    if chat is None:
        if len(found) > 1:
            raise AmbiguousError(
                f"{name!r} is ambiguous: {_listing([t.label for t in found])}; "
                "give the chat path relative to the data root instead"
            )
        return _newest(found[0].chats)
    matches: list[ChatRef] = []
    errors: list[JobError] = []
    for target in found:
        try:
            matches.append(_match_chat(target, chat.strip()))
        except JobError as exc:
            errors.append(exc)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise AmbiguousError(
            f"{text!r} is ambiguous: {_listing([m.rel for m in matches])}; "
            "give the chat path relative to the data root instead"
        )
    raise errors[0]


# --- choosing the message ----------------------------------------------------------------------


def _refusal(message: Message) -> str | None:
    """Why ``message`` cannot get an image, or None when it can."""
    if message.is_user:
        return "is the user's message, not a character reply"
    if message.marker is not None:
        return "is an image message written by st-imagegen"
    if message.is_system:
        return "is hidden (is_system); unhide it in SillyTavern or pick another message"
    if message.is_narrator:
        return "is a narrator line (/sys), not a character reply"
    if message.is_st_system:
        return "is a SillyTavern system message, not a character reply"
    if not message.mes.strip():
        return "has no text"
    return None


def pick_message(chat: Chat, mesid: int | None, where: str) -> Message:
    """Message ``mesid`` (ST numbering) or the last character reply; clear errors otherwise."""
    if mesid is None:
        for message in reversed(chat.messages):
            if _refusal(message) is None:
                return message
        raise MessageNotFoundError(f"{where} has no character reply to illustrate")
    count = len(chat.messages)
    if mesid < 0 or mesid >= count:
        have = f"messages 0 to {count - 1}" if count else "no messages"
        raise MessageNotFoundError(f"there is no message {mesid} in {where}: it has {have}")
    message = chat.messages[mesid]
    why = _refusal(message)
    if why is not None:
        raise MessageNotFoundError(f"message {mesid} in {where} {why}")
    return message


@dataclass(frozen=True, slots=True)
class Selection:
    """The chat and message a ``generate`` names."""

    chat: ChatRef
    message: Message
    character: str  # card stem, or group id


def select(root: Path, users: Sequence[str], spec: str | None, mesid: int | None) -> Selection:
    """Resolve ``--chat`` and ``--mesid`` (blocking: reads the chat)."""
    ref = resolve_chat_spec(root, users, spec)
    chat, _ = read_chat(ref.path)
    message = pick_message(chat, mesid, ref.rel)
    character = ref.owner
    if ref.is_group:
        group = layout.group_for_chat(root, ref.user, ref.chat_id)
        character = group.id if group is not None else ref.chat_id
    return Selection(ref, message, character)


# --- the job -----------------------------------------------------------------------------------


ENDED_EMPTY = (JobState.REJECTED, JobState.FAILED, JobState.SUPERSEDED)
"""States in which a job ended without an image in the chat."""


async def create_for(
    store: Store,
    sel: Selection,
    force: bool = False,
    approval: Approval | None = None,
    *,
    auto_accept: bool = False,
) -> tuple[Job, bool]:
    """The job for the selection: ``(job, created)``; an existing one unless ``force``.

    An existing job superseded earlier (the reply was swiped away and back) is revived when
    ``approval`` is given: a reply shown again gets its image again (``created`` is then True).
    """
    msg = sel.message
    reply = ReplyKey.of(sel.chat.user, sel.chat.rel, msg)
    revision = reply.revision
    fields = {
        "reply": reply,
        "character": sel.character,
        "is_group": sel.chat.is_group,
        "speaker": msg.name,
        "message_index": msg.index,
        "excerpt": " ".join(msg.mes.split())[:200],
        "source": "manual",
    }
    job = await store.create_job(**fields)
    if job is not None:
        return job, True
    existing = await store.find_job(reply.key())
    if not force:
        if existing is None:  # pragma: no cover - a key conflict implies the row exists
            raise JobError("the job store refused the job and holds none for this reply")
        if existing.state is JobState.SUPERSEDED and approval is not None:
            from daemon.engine.jobs.pipeline import revive_job

            revived = await revive_job(store, approval, existing, auto_accept=auto_accept)
            if revived is not None:
                return revived, True
        if existing.state in (JobState.REJECTED, JobState.FAILED):
            # A job forced later for the same text speaks for the reply: the image it put in
            # the chat, or the one on its way (not the first job's "rejected").
            later = [
                j
                for j in await store.jobs_for(reply)
                if j.id != existing.id and j.revision == revision and j.state not in ENDED_EMPTY
            ]
            if later:
                return max(later, key=lambda j: j.regen), False
        return existing, False
    same = await store.jobs_for(reply)
    regen = 1 + max((j.regen for j in same if j.revision == revision), default=0)
    job = await store.create_job(**fields, regen=regen)
    if job is None:
        raise JobError("another job for this reply was created at the same moment; try again")
    return job, True


# --- following it (generate --wait) ------------------------------------------------------------


async def follow(
    config: Config,
    store: Store,
    root: Path,
    job: Job,
    limit: float,
    watch: Callable[[Job], None],
    *,
    poll: float = WAIT_POLL_SECONDS,
    running_here: Callable[[], None] | None = None,
) -> Job:
    """Until ``job`` is pending, committed or final (or ``limit`` seconds): run it here when no
    daemon runs, else watch the daemon work. Returns the job as last seen."""
    from daemon.engine.jobs.pipeline import open_job_deps

    running = await anyio.to_thread.run_sync(daemon_status, config.heartbeat_path)
    failure: list[StImagegenError] = []
    async with contextlib.AsyncExitStack() as stack:
        deps: JobDeps | None = None
        if not running.running:
            missing = setup_missing(config)
            if missing:
                # The job stays queued for the daemon; running it here could only fail it.
                raise ConfigError(
                    f"not set up yet ({', '.join(missing)}): start the daemon "
                    "(st-imagegen run) and open its address, or set them in the config file"
                )
            # Opened here, not in the task: a configuration error reaches the user as itself.
            deps = await stack.enter_async_context(
                open_job_deps(config, store=store, root=root, strict=True)
            )
            if running_here is not None:
                running_here()
        current = job
        with anyio.move_on_after(limit):
            async with anyio.create_task_group() as tg:
                if deps is not None:
                    tg.start_soon(_run_here, deps, job.id, failure, tg.cancel_scope)
                while current.state not in STOP_STATES:
                    await anyio.sleep(poll)
                    current = await store.get_job(job.id)
                    watch(current)
                tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return await store.get_job(job.id)


async def _run_here(
    deps: JobDeps, job_id: str, failure: list[StImagegenError], scope: anyio.CancelScope
) -> None:
    """Run the job with the daemon's own pipeline, retrying when its backoff comes due. An
    error of ours stops the wait (kept in ``failure``) instead of a task group traceback."""
    from daemon.engine.jobs.pipeline import run_job_once

    store = deps.store
    try:
        while True:
            job = await store.get_job(job_id)
            if job.state in STOP_STATES:
                return
            due = job.next_attempt_at
            now = deps.clock()
            if job.state in (JobState.QUEUED, JobState.ACCEPTED) and (due is None or due <= now):
                await run_job_once(job, deps)
                continue
            wait = (due - now).total_seconds() if due is not None and due > now else 0.0
            await anyio.sleep(min(max(wait, WAIT_POLL_SECONDS), RETRY_CHECK_SECONDS))
    except StImagegenError as exc:
        failure.append(exc)
        scope.cancel()
