"""The detection policy: which messages of a scanned chat need an image. Pure, no I/O.

:func:`decide` turns one :class:`~daemon.tavern.scan.ScanResult` into new jobs and supersedes:

- A job is due for a **character reply** that is new since the cursor: not the user's, not hidden
  (``is_system`` truthy; ``""`` is visible), not a narrator line (``/sys``), not a line the user
  typed as a character (``/sendas``: nothing was generated, so nothing is illustrated; ``generate``
  can still do it on request), not an ST system message, not one of our own image messages
  (marker), not empty, and finished (a generated reply has ``gen_finished``; API-written or
  imported ones have no generation fields and are accepted as they are).
- Filters: ``mode = "manual"`` makes no jobs; include/exclude characters (card file stem or
  display name, case-insensitive); ``min_length``; ``every_nth`` (counted per chat in
  :class:`ChatState`, which the caller stores with the cursor).
- First sight of a chat: its history is seen, no jobs, unless ``backfill`` (then only the last
  eligible reply). A chat that appeared while the daemon ran starts with its greeting(s) (the
  character messages before the first user message), illustrated only with ``greetings``.
- In the catch-up after downtime (not for saves observed while running: those are new when
  seen), a reply counts as too old when its newest date (``gen_finished``, ``gen_started`` or
  ``send_date``; the file's mtime when none parses) is older than ``catchup_max_age``. Dates
  in ST's local-time forms (up to 1.14) get :data:`LOCAL_TIME_SLACK` of grace, since their time
  zone is unknown.
- A reply still streaming is not finished either: ST's streaming placeholder (``"..."``) as its
  text, or ``gen_started`` without ``gen_finished``.
- A changed revision (swipe, continue, edit) supersedes the jobs of the other revisions, and the
  new revision gets a job when the reply was selected before. A change that is not a new
  generation (an edit, a swipe back to an existing alternative, a hide; its newest date is not
  newer than the chat's newest seen) sets :attr:`Decision.hold`: the caller waits for the chat to
  stay unchanged for ``settle_seconds`` before acting, since more such saves tend to follow.
  A removed reply (deleted, or replaced by Regenerate) supersedes its jobs; a regenerated reply
  inherits the removed reply's every-Nth selection instead of counting as one more reply. Only
  the cursor's newest ``CURSOR_DEPTH`` messages are compared, so an edit further up is not seen
  here; the committer checks the reply's revision before it writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from daemon.config import DetectSettings
from daemon.errors import UnsafePathError
from daemon.jobstate import ReplyKey
from daemon.tavern.chat import (
    Cursor,
    Message,
    MessageIdentity,
    parse_send_date,
    send_date_style,
)
from daemon.tavern.scan import ScanResult

if TYPE_CHECKING:
    from daemon.tavern.layout import ChatRef

__all__ = [
    "DECIDED_KEPT",
    "EXCERPT_CHARS",
    "LOCAL_TIME_SLACK",
    "STREAMING_PLACEHOLDERS",
    "ChatContext",
    "ChatState",
    "Decision",
    "JobSpec",
    "Reason",
    "Skip",
    "Supersede",
    "decide",
    "eligible",
    "excerpt_of",
    "filtered",
]

STREAMING_PLACEHOLDERS = frozenset({"...", "\u2026"})
"""The text ST gives a streamed reply before its first token (``StreamingProcessor``'s
``firstMessageText``); a save made then (by an extension, a metadata change) holds it."""

EXCERPT_CHARS = 200
"""Length of the reply excerpt stored with a job."""

DECIDED_KEPT = 64
"""How many recent replies' every-Nth selections a chat remembers; more than the cursor's
``CURSOR_DEPTH``, so a diff after a lost cursor still knows which older replies were counted."""

LOCAL_TIME_SLACK = timedelta(hours=12)
"""Grace for ``send_date`` forms without a time zone: they are local time, read as UTC, so in a
zone behind UTC a reply looks older than it is, by up to 12 h (UTC-12). Zones ahead make it look
younger: up to 14 h past ``catchup_max_age`` may pass, which only errs towards illustrating."""

Mode = Literal["auto", "manual"]


class Reason(StrEnum):
    """Why a job was made (kept in the job's meta as ``detected``)."""

    NEW = "new reply"
    REVISION = "new revision"
    GREETING = "greeting"
    BACKFILL = "backfill"


class Skip(StrEnum):
    """Why a message got no job (for logs and tests)."""

    USER = "user message"
    HIDDEN = "hidden"
    NARRATOR = "narrator line"
    SLASH = "typed with a slash command (/sendas)"
    SYSTEM = "ST system message"
    OURS = "our image message"
    EMPTY = "empty reply"
    UNFINISHED = "not finished"
    NO_NAME = "no speaker name"
    EXCLUDED = "character filtered out"
    SHORT = "shorter than min_length"
    NTH = "not every Nth reply"
    MANUAL = "mode is manual"
    OLD = "older than catchup_max_age"
    HISTORY = "history at first sight"
    NOT_SELECTED = "revision of a reply that had no job"


@dataclass(frozen=True, slots=True)
class ChatState:
    """Per-chat detection state, stored with the cursor (``store.set_cursor(data=...)``).

    ``replies``: eligible replies counted for ``every_nth``; ``decided``: recent replies'
    identity keys and whether every-Nth selected them (oldest first, bounded);
    ``last_date``: the newest reply date seen (ISO UTC), to spot new replies when the cursor
    is gone; ``skips``: recent messages' identity keys and why they got no job (oldest first,
    bounded), for ``st-imagegen why``.
    """

    replies: int = 0
    decided: tuple[tuple[str, bool], ...] = ()
    last_date: str = ""
    skips: tuple[tuple[str, str], ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "replies": self.replies,
            "decided": [[k, v] for k, v in self.decided],
            "last_date": self.last_date,
            "skips": [[k, v] for k, v in self.skips],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> ChatState:
        """Tolerant: unknown or damaged values fall back to defaults."""
        if not data:
            return cls()
        replies = data.get("replies")
        decided_raw = data.get("decided")
        decided: list[tuple[str, bool]] = []
        if isinstance(decided_raw, list):
            for item in decided_raw:
                if (
                    isinstance(item, (list, tuple))
                    and len(item) == 2
                    and isinstance(item[0], str)
                    and isinstance(item[1], bool)
                ):
                    decided.append((item[0], item[1]))
        last = data.get("last_date")
        skips_raw = data.get("skips")
        skips = [
            (item[0], item[1])
            for item in (skips_raw if isinstance(skips_raw, list) else [])
            if isinstance(item, (list, tuple))
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], str)
        ]
        return cls(
            replies=replies if isinstance(replies, int) and replies >= 0 else 0,
            decided=tuple(decided[-DECIDED_KEPT:]),
            last_date=last if isinstance(last, str) else "",
            skips=tuple(skips[-DECIDED_KEPT:]),
        )

    def skip_reason(self, key: str) -> str | None:
        """Why the message with this identity key got no job, if it is remembered."""
        for k, v in reversed(self.skips):
            if k == key:
                return v
        return None

    def selected(self, key: str) -> bool | None:
        """Whether every-Nth selected this reply; ``None`` if it was never counted."""
        for k, v in reversed(self.decided):
            if k == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class ChatContext:
    """What detection needs to know about a chat besides its messages.

    ``owner``: the character's card file stem (single chats); ``group_id``: the group's id
    (group chats; the chat file stem when unknown); ``names``: display name -> card stem, for
    filters on group members whose messages lack ``original_avatar``; ``previous``: the stored
    cursor (used when the scan lost it); ``file_mtime``: fallback date for undated replies.
    """

    user: str
    chat: str
    is_group: bool
    owner: str = ""
    group_id: str = ""
    names: Mapping[str, str] = field(default_factory=dict)
    state: ChatState = field(default_factory=ChatState)
    previous: Cursor | None = None
    file_mtime: datetime | None = None

    @property
    def character(self) -> str:
        """The job's ``character``: card stem, or the group id for group chats."""
        if self.is_group:
            return self.group_id or PurePosixPath(self.chat).stem
        return self.owner

    @classmethod
    def for_chat(
        cls,
        root: Path,
        chat: ChatRef,
        data: Mapping[str, Any] | None = None,
        *,
        previous: Cursor | None = None,
    ) -> ChatContext:
        """Build the context for ``chat``: looks up its group (a small JSON read) and mtime.

        This is the module's only I/O, kept out of :func:`decide`.
        """
        from daemon.tavern import layout

        group_id = ""
        if chat.is_group:
            try:
                info = layout.group_for_chat(root, chat.user, chat.chat_id)
            except UnsafePathError:  # a hostile user name: no group, not fatal here
                info = None
            group_id = info.id if info is not None else chat.chat_id
        try:
            mtime: datetime | None = datetime.fromtimestamp(chat.path.stat().st_mtime, UTC)
        except OSError:
            mtime = None
        return cls(
            user=chat.user,
            chat=chat.rel,
            is_group=chat.is_group,
            owner=chat.owner,
            group_id=group_id,
            state=ChatState.from_data(data),
            previous=previous,
            file_mtime=mtime,
        )


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything :meth:`daemon.engine.store.Store.create_job` needs for one job."""

    reply: ReplyKey  # which reply, in which text, the job would illustrate
    character: str
    is_group: bool
    speaker: str
    message_index: int
    excerpt: str
    source: str = "auto"
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.reply.key()

    @property
    def reason(self) -> str:
        return str(self.meta.get("detected", ""))

    def fields(self) -> dict[str, Any]:
        """Keyword arguments for ``store.create_job``."""
        return {
            "reply": self.reply,
            "character": self.character,
            "is_group": self.is_group,
            "speaker": self.speaker,
            "message_index": self.message_index,
            "excerpt": self.excerpt,
            "source": self.source,
            "meta": dict(self.meta),
        }


class Supersede(NamedTuple):
    """Supersede the open jobs of reply ``identity`` whose revision is not ``keep_revision``."""

    identity: MessageIdentity
    keep_revision: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a scan. ``state`` goes into the store with the new cursor.

    ``hold``: the save changed a reply without a new generation (edit, swipe to an existing
    alternative, hide): act on it only once the chat stayed unchanged for a while."""

    new_jobs: list[JobSpec]
    supersede: list[Supersede]
    chat_state: ChatState
    skipped: list[tuple[int, Skip]] = field(default_factory=list)
    hold: bool = False

    @property
    def state(self) -> dict[str, Any]:
        return self.chat_state.to_data()


# --- the rules --------------------------------------------------------------------------------


def excerpt_of(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first ``limit`` characters of ``text``, whitespace collapsed."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def eligible(message: Message) -> Skip | None:
    """``None`` when ``message`` is a finished character reply; else why it is not."""
    if message.is_user:
        return Skip.USER
    if message.marker is not None:
        return Skip.OURS
    if message.is_narrator:
        return Skip.NARRATOR
    if message.is_st_system:
        return Skip.SYSTEM
    if message.is_slash_command:
        return Skip.SLASH
    if message.is_system:
        return Skip.HIDDEN
    if not message.name:
        return Skip.NO_NAME
    if not message.mes.strip():
        return Skip.EMPTY
    data = message.data
    if "gen_started" in data and (
        not data.get("gen_finished") or message.mes.strip() in STREAMING_PLACEHOLDERS
    ):
        return Skip.UNFINISHED
    return None


def _card_stem(message: Message, ctx: ChatContext) -> str:
    avatar = message.data.get("original_avatar")
    if isinstance(avatar, str) and avatar and "/" not in avatar:
        return PurePosixPath(avatar).stem
    if message.name in ctx.names:
        return ctx.names[message.name]
    return "" if ctx.is_group else ctx.owner


def _fold(values: Iterable[str]) -> set[str]:
    return {v.casefold() for v in values if v}


def filtered(message: Message, ctx: ChatContext, settings: DetectSettings) -> Skip | None:
    """Character and length filters (the every-Nth filter is separate)."""
    ids = _fold((message.name, _card_stem(message, ctx)))
    include = _fold(settings.include_characters)
    if include and not ids & include:
        return Skip.EXCLUDED
    if ids & _fold(settings.exclude_characters):
        return Skip.EXCLUDED
    if len(message.mes.strip()) < settings.min_length:
        return Skip.SHORT
    return None


def _date_of(message: Message) -> tuple[datetime | None, bool]:
    """The reply's newest date and whether it is a local-time form (zone unknown)."""
    best: datetime | None = None
    local = False
    for key in ("gen_finished", "gen_started", "send_date"):
        value = message.data.get(key)
        when = parse_send_date(value)
        if when is None:
            continue
        if best is None or when > best:
            best = when
            local = key == "send_date" and send_date_style(value) in ("human", "at")
    return best, local


def _too_old(message: Message, ctx: ChatContext, settings: DetectSettings, now: datetime) -> bool:
    when, local = _date_of(message)
    if when is None:
        when, local = ctx.file_mtime, False
    if when is None:
        return False
    limit = timedelta(seconds=settings.catchup_max_age)
    if local:
        limit += LOCAL_TIME_SLACK
    return now - when > limit


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Builder:
    """Accumulates one decision."""

    def __init__(
        self,
        ctx: ChatContext,
        settings: DetectSettings,
        mode: Mode,
        now: datetime,
        live: bool = False,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.mode = mode
        self.now = now
        self.live = live
        self.skip_notes: dict[str, str] = dict(ctx.state.skips)
        self.replies = ctx.state.replies
        self.decided: dict[str, bool] = dict(ctx.state.decided)
        self.last_date = ctx.state.last_date
        self.jobs: list[JobSpec] = []
        self.supersedes: list[Supersede] = []
        self.skipped: list[tuple[int, Skip]] = []
        self.inherited: list[bool] = []
        self.hold = False

    # bookkeeping

    def skip(self, message: Message, why: Skip) -> None:
        self.skipped.append((message.index, why))
        self.note(message.identity.key, why)

    def note(self, key: str, why: Skip) -> None:
        self.skip_notes.pop(key, None)
        self.skip_notes[key] = why.value

    def remember(self, key: str, selected: bool) -> None:
        self.decided.pop(key, None)
        self.decided[key] = selected

    def saw(self, message: Message) -> None:
        when, _ = _date_of(message)
        if when is not None:
            stamp = _iso(when)
            if stamp > self.last_date:
                self.last_date = stamp

    def fresh(self, message: Message) -> bool:
        """The message's newest date is newer than any the chat had before this save: a new
        generation (swipe that generates, continue), not an edit or a swipe back."""
        when, _ = _date_of(message)
        seen = self.ctx.state.last_date
        return when is None or not seen or _iso(when) > seen

    def job(self, message: Message, reason: Reason) -> None:
        identity = message.identity
        self.skip_notes.pop(identity.key, None)
        meta: dict[str, Any] = {"detected": reason.value}
        card = _card_stem(message, self.ctx)
        if card:
            meta["card"] = card
        self.jobs.append(
            JobSpec(
                reply=ReplyKey.of(self.ctx.user, self.ctx.chat, message),
                character=self.ctx.character,
                is_group=self.ctx.is_group,
                speaker=message.name,
                message_index=message.index,
                excerpt=excerpt_of(message.mes),
                meta=meta,
            )
        )

    def decision(self) -> Decision:
        decided = tuple(self.decided.items())[-DECIDED_KEPT:]
        skips = tuple(self.skip_notes.items())[-DECIDED_KEPT:]
        state = ChatState(self.replies, decided, self.last_date, skips)
        return Decision(self.jobs, self.supersedes, state, self.skipped, self.hold)

    # the rules

    def content_skip(self, message: Message) -> Skip | None:
        return eligible(message) or filtered(message, self.ctx, self.settings)

    def new_reply(self, message: Message) -> None:
        """A message not seen before (new since the cursor, or never counted)."""
        why = self.content_skip(message)
        if why is not None:
            self.skip(message, why)
            return
        self.saw(message)
        key = message.identity.key
        if self.inherited:
            selected = self.inherited.pop(0)  # a regenerate replaces a counted reply
        else:
            self.replies += 1
            selected = self.replies % self.settings.every_nth == 0
        if self.mode == "manual":
            self.remember(key, False)
            self.skip(message, Skip.MANUAL)
            return
        self.remember(key, selected)
        if not selected:
            self.skip(message, Skip.NTH)
        elif not self.live and _too_old(message, self.ctx, self.settings, self.now):
            # Only catch-up after downtime is bounded by age: a save observed while running
            # is new now, whatever the browser's clock wrote into it.
            self.skip(message, Skip.OLD)
        else:
            self.job(message, Reason.NEW)

    def changed_reply(self, message: Message) -> None:
        """A known message with a new revision (swipe, continue, edit)."""
        identity = message.identity
        if message.is_user:
            self.skip(message, Skip.USER)
            return
        if not self.fresh(message):
            self.hold = True
        self.supersedes.append(
            Supersede(
                identity, str(message.revision), "the reply changed (swipe, continue or edit)"
            )
        )
        selected = self.ctx.state.selected(identity.key)
        if selected is None:
            self.new_reply(message)  # e.g. it was unfinished or too short before
            return
        why = self.content_skip(message)
        if why is not None:
            self.skip(message, why)
            return
        self.saw(message)
        if self.mode == "manual":
            self.skip(message, Skip.MANUAL)
        elif not selected:
            self.skip(message, Skip.NOT_SELECTED)
        else:
            self.job(message, Reason.REVISION)

    def removed_reply(self, identity: MessageIdentity) -> None:
        self.supersedes.append(
            Supersede(identity, None, "the reply is gone (deleted or regenerated)")
        )
        selected = self.ctx.state.selected(identity.key)
        if selected is not None:
            self.inherited.append(selected)
            self.decided.pop(identity.key, None)

    def history(self, messages: Sequence[Message]) -> None:
        """Seen, no jobs. Only the newest replies are remembered (a chat may be huge)."""
        recent: list[Message] = []
        for message in reversed(messages):
            if len(recent) >= DECIDED_KEPT:
                break
            if eligible(message) is None:
                recent.append(message)
        for message in reversed(recent):
            self.remember(message.identity.key, False)
            self.saw(message)
        self.skipped.extend((m.index, Skip.HISTORY) for m in messages)
        for message in messages[-DECIDED_KEPT:]:
            self.note(message.identity.key, Skip.HISTORY)


def _greetings(messages: Sequence[Message]) -> list[Message]:
    """The character messages before the first user message (one per group member)."""
    out = []
    for message in messages:
        if message.is_user:
            break
        out.append(message)
    return out


def decide(
    scan: ScanResult,
    ctx: ChatContext,
    settings: DetectSettings,
    mode: Mode,
    now: datetime,
    *,
    first_sight: bool,
    created_while_running: bool = False,
    live: bool = False,
) -> Decision:
    """Jobs and supersedes for one scan of one chat (see the module docstring).

    ``live``: the scan reads a save observed while the daemon runs (not the catch-up after
    downtime), so ``catchup_max_age`` does not apply.
    """
    if now.tzinfo is None:
        raise ValueError("decide() needs a timezone-aware `now`")
    b = _Builder(ctx, settings, mode, now, live)
    if first_sight:
        _first_sight(b, scan, created_while_running)
    elif scan.cursor_gone:
        _cursor_lost(b, scan)
    else:
        for identity in scan.removed:
            b.removed_reply(identity)
        for message in scan.changed:
            b.changed_reply(message)
        for message in scan.new:
            b.new_reply(message)
    return b.decision()


def _first_sight(b: _Builder, scan: ScanResult, created_while_running: bool) -> None:
    messages = scan.full.messages if scan.full is not None else scan.tail
    if created_while_running:
        greetings = _greetings(messages)
        b.history(messages[len(greetings) :])
        for message in greetings:
            why = b.content_skip(message)
            if why is not None:
                b.skip(message, why)
                continue
            b.saw(message)
            b.remember(message.identity.key, b.settings.greetings and b.mode == "auto")
            if b.mode == "manual":
                b.skip(message, Skip.MANUAL)
            elif not b.settings.greetings:
                b.skip(message, Skip.HISTORY)
            else:
                b.job(message, Reason.GREETING)
        return
    last: Message | None = None
    if b.settings.backfill and b.mode == "auto":
        for message in reversed(messages):
            if b.content_skip(message) is None:
                last = message
                break
    b.history([m for m in messages if m is not last])
    if last is not None:
        b.saw(last)
        b.remember(last.identity.key, True)
        b.job(last, Reason.BACKFILL)


def _cursor_lost(b: _Builder, scan: ScanResult) -> None:
    """The stored cursor was not found: diff against it (and the state) over the whole chat."""
    messages = scan.full.messages if scan.full is not None else scan.tail
    present = {m.identity.key: m for m in messages}
    previous = b.ctx.previous
    known: dict[str, str] = {}  # identity key -> revision seen
    if previous is not None:
        for identity, revision in previous.recent:
            known[identity.key] = str(revision)
            if identity.key not in present:
                b.removed_reply(identity)
    for key, _ in b.ctx.state.decided:
        if key not in present and key not in known:
            name, _sep, date = key.partition("\x1f")
            b.removed_reply(MessageIdentity(-1, name, date))
    since = b.ctx.state.last_date
    for message in messages:
        key = message.identity.key
        if key in known:
            if known[key] != str(message.revision):
                b.changed_reply(message)
            continue
        if b.ctx.state.selected(key) is not None:
            continue
        when, _ = _date_of(message)
        if since and when is not None and _iso(when) > since:
            b.new_reply(message)
        else:
            b.skip(message, Skip.HISTORY)
