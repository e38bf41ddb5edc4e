"""A simulated SillyTavern browser tab and server: the only stand-in for ST in the tests.

It holds one chat in memory as plain dicts and saves the **whole chat** the way ST does
(``public/script.js`` ``saveChat`` → ``src/endpoints/chats.js`` ``trySaveChat`` →
``write-file-atomic``): compact ``JSON.stringify`` lines joined by ``\\n`` with no trailing newline,
written to ``<file>.jsonl.<digits>`` in the same folder, fsync'ed, mode copied, then renamed over
the target (symlinks followed via ``realpath``). It imitates what the browser does to a loaded
chat (swipe fields added, legacy media migrated, header normalized, integrity slug added) and
the server's integrity check. A *stale tab* is just an instance whose memory is old: its
``save()`` silently drops lines another process added, exactly like the real race.

Usage::

    from tests.stsim import STSim

    tab = STSim.create(path, character="Alice")     # new chat file with a greeting, saved
    tab.send_user("Describe the scene.").save()     # user message, saved before generation
    tab.reply("Alice", "The glade glows.").save()   # finished generated reply
    tab.swipe("Another text.").save()               # new swipe on the last message
    other = STSim.open(path)                        # a second tab: loads the file
    ...                                             # our writer inserts a line on disk
    tab.narrator("it rains").save()                 # stale tab: the inserted line is gone
    other.load()                                    # reload from disk (F5)

Actions only change memory and return ``self``; call :meth:`STSim.save` to write, like the
browser's save after each action. ``version`` selects the behaviour: ``"1.12"`` (legacy header,
human dates, no media migration), ``"1.14"`` (legacy header, human dates, media migration),
``"1.18"`` (default; 1.15+ header, ISO dates, group chats with a header). Group chats:
``group=True`` (before 1.15 they have no header line and ``is_group`` on the first message).
Time comes from ``clock`` (default: a deterministic clock that advances 1.5 s per reading).
``check_integrity=False`` turns the server's slug check off; ``save(force=True)`` is the user
typing OVERWRITE. ``tab.before_rename`` / ``tab.after_rename`` (callables taking the saved bytes)
let tests time a save precisely. Helpers: :func:`texts_of` (``mes`` of every line on disk),
:func:`write_lines` (write objects ST-style without a tab), :func:`js_stringify`.

Fidelity: re-saving any chat the real 1.12.6, 1.14.0 or 1.17/1.18 client saved reproduces it byte
for byte (``tests/tavern/test_write_stsim.py``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

__all__ = ["IntegrityRefusedError", "STSim", "SimClock", "js_stringify", "st_temp_name"]

VERSIONS = ("1.12", "1.14", "1.18")


class IntegrityRefusedError(Exception):
    """ST's server answered ``400 {"error":"integrity"}``: the save wrote nothing."""


class SimClock:
    """A deterministic clock: every reading advances by ``step`` (so every date is unique)."""

    def __init__(
        self,
        start: datetime = datetime(2026, 11, 23, 22, 0, 0, tzinfo=UTC),
        step: timedelta = timedelta(milliseconds=1500),
    ) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


# --- serialization: JSON.stringify ------------------------------------------------------------

_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_LONE = re.compile("[\ud800-\udfff]")


def _js_value(value: Any) -> Any:
    """Numbers as JS holds them: integral floats print without ``.0``, NaN/Infinity as null."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        if value.is_integer() and abs(value) < 1e21:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _js_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_value(v) for v in value]
    return value


def js_stringify(obj: Any) -> str:
    """``JSON.stringify(obj)``: compact, raw non-ASCII, lone surrogates as ``\\udXXX``."""
    text = json.dumps(_js_value(obj), ensure_ascii=False, separators=(",", ":"))
    # A Python str may hold a high+low surrogate pair as two code points; JS sees one character.
    text = _PAIR.sub(lambda m: m[0].encode("utf-16-le", "surrogatepass").decode("utf-16-le"), text)
    return _LONE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def st_temp_name(target: Path, rng: random.Random | None = None) -> Path:
    """write-file-atomic's temp name: ``<target>.<unsigned 32-bit decimal>``."""
    n = (rng or random).getrandbits(32)
    return target.with_name(f"{target.name}.{n}")


def _iso(when: datetime) -> str:
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _human(when: datetime) -> str:
    # moment().format('LL LT') as ST up to 1.14 stored it, e.g. "November 23, 2025 10:06pm".
    when = when.astimezone(UTC)
    hour12 = when.hour % 12 or 12
    ampm = "am" if when.hour < 12 else "pm"
    return f"{when:%B} {when.day}, {when.year} {hour12}:{when.minute:02d}{ampm}"


def _humanized(when: datetime, ms: bool) -> str:
    base = f"{when:%Y-%m-%d@%Hh%Mm%Ss}"
    return base + (f"{when.microsecond // 1000:03d}ms" if ms else "")


class STSim:
    """One browser tab holding one chat, plus the server's save endpoint for it."""

    def __init__(
        self,
        path: Path,
        *,
        version: str = "1.18",
        group: bool = False,
        character: str = "Alice",
        user: str = "User",
        check_integrity: bool = True,
        ensure_swipes: bool = True,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}")
        self.path = Path(path)
        self.version = version
        self.group = group
        self.character = character
        self.user = user
        self.check_integrity = check_integrity
        self.ensure_swipes_on_render = ensure_swipes
        self.clock: Callable[[], datetime] = clock or SimClock()
        self.rng = rng or random.Random()
        self.metadata: dict[str, Any] = {}
        self.legacy_header: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.saves = 0
        self.last_temp: Path | None = None
        # Test probes: called with the saved bytes right before / after the rename.
        self.before_rename: Callable[[bytes], None] | None = None
        self.after_rename: Callable[[bytes], None] | None = None

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        greeting: str | None = "Hello there, {{user}}.",
        save: bool = True,
        **kwargs: Any,
    ) -> Self:
        """A new chat (like "Start new chat"): header, optional greeting, saved at once."""
        tab = cls(path, **kwargs)
        if tab.has_integrity:
            tab.metadata = {"integrity": str(uuid.UUID(int=tab.rng.getrandbits(128), version=4))}
        if tab.legacy:
            tab.legacy_header = {
                "user_name": tab.user,
                "character_name": tab.character,
                "create_date": _humanized(tab.clock(), ms=False),
            }
        if greeting is not None and not tab.group:
            text = greeting.replace("{{user}}", tab.user).replace("{{char}}", tab.character)
            tab._append(
                {
                    "name": tab.character,
                    "is_user": False,
                    "is_system": False,
                    "send_date": tab._date(),
                    "mes": text,
                    "extra": {},
                }
            )
        if save:
            tab.path.parent.mkdir(parents=True, exist_ok=True)
            tab.save()
        return tab

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> Self:
        """A tab that opened the chat: loads it from disk."""
        tab = cls(path, **kwargs)
        tab.load()
        return tab

    @property
    def legacy(self) -> bool:
        return self.version in ("1.12", "1.14")

    @property
    def headerless(self) -> bool:
        """Group chats before 1.15 have no header line."""
        return self.group and self.legacy

    @property
    def integrity(self) -> str | None:
        value = self.metadata.get("integrity")
        return value if isinstance(value, str) else None

    # --- load and render ------------------------------------------------------------------

    def load(self) -> Self:
        """Open (or reload) the chat from disk, as ``getChat``/``getGroupChat`` do."""
        text = self.path.read_bytes().decode("utf-8", "replace")
        items: list[dict[str, Any]] = []
        for line in text.split("\n"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # ST drops every line that fails to parse
            if isinstance(obj, dict):
                items.append(obj)
        self.metadata = {}
        self.legacy_header = {}
        if (
            items
            and "mes" not in items[0]
            and any(k in items[0] for k in ("chat_metadata", "user_name", "character_name"))
        ):
            header = items.pop(0)
            meta = header.get("chat_metadata")
            self.metadata = dict(meta) if isinstance(meta, dict) else {}
            self.legacy_header = {k: v for k, v in header.items() if k != "chat_metadata"}
        if self.has_integrity and "integrity" not in self.metadata:
            self.metadata["integrity"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.messages = items
        for message in self.messages:
            self._render(message)
        self._render_last()
        return self

    @property
    def has_integrity(self) -> bool:
        """1.12.6 has no integrity slug; group chats get one from 1.15."""
        return self.version != "1.12" and not self.headerless

    def _render(self, message: dict[str, Any]) -> None:
        if self.version != "1.12":
            migrate_media(message)
        if self.ensure_swipes_on_render and not self.legacy:
            ensure_swipes(message)

    def _render_last(self) -> None:
        # Up to 1.14 only the last message gets swipe fields (showSwipeButtons).
        if self.ensure_swipes_on_render and self.legacy and self.messages:
            legacy_swipes(self.messages[-1], with_info=self.version != "1.12")

    def _append(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages.append(message)
        self._render(message)
        self._render_last()
        return message

    def _date(self, when: datetime | None = None) -> str:
        when = when or self.clock()
        return _human(when) if self.legacy else _iso(when)

    # --- save -----------------------------------------------------------------------------

    def lines(self) -> list[dict[str, Any]]:
        """What the browser would send: header (unless headerless) then the messages."""
        out: list[dict[str, Any]] = []
        if not self.headerless:
            if self.legacy:
                header = {
                    "user_name": self.legacy_header.get("user_name", self.user),
                    "character_name": self.legacy_header.get("character_name", self.character),
                    "create_date": self.legacy_header.get(
                        "create_date", _humanized(datetime(2026, 11, 23, tzinfo=UTC), ms=False)
                    ),
                    "chat_metadata": self.metadata,
                }
            else:
                header = {
                    "chat_metadata": self.metadata,
                    "user_name": "unused",
                    "character_name": "unused",
                }
            out.append(header)
        messages = [_for_save(m, self.version) for m in self.messages]
        if self.headerless and messages:
            messages[0].setdefault("is_group", True)
        out.extend(messages)
        return out

    def serialize(self) -> bytes:
        """The exact bytes ST writes for the current memory."""
        return "\n".join(js_stringify(line) for line in self.lines()).encode("utf-8")

    def save(self, *, force: bool = False) -> Self:
        """Save the whole chat like ST: integrity check, temp ``<file>.<digits>``, fsync, rename.

        Raises :class:`IntegrityRefusedError` (nothing written) when the slug on disk differs.
        """
        target = Path(os.path.realpath(self.path))  # write-file-atomic follows symlinks
        if self.check_integrity and not force and self.has_integrity:
            self._integrity_check(target)
        data = self.serialize()
        temp = st_temp_name(target, self.rng)
        self.last_temp = temp
        try:
            mode: int | None = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = None
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if mode is not None:
                temp.chmod(mode)
            if self.before_rename is not None:
                self.before_rename(data)
            temp.rename(target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self.saves += 1
        if self.after_rename is not None:
            self.after_rename(data)
        return self

    def _integrity_check(self, target: Path) -> None:
        mine = self.integrity
        if not mine:
            return
        try:
            with target.open("rb") as fh:
                first = fh.readline().rstrip(b"\n")
        except FileNotFoundError:
            return
        try:
            header = json.loads(first)
        except ValueError:
            return
        meta = header.get("chat_metadata") if isinstance(header, dict) else None
        theirs = meta.get("integrity") if isinstance(meta, dict) else None
        if theirs and theirs != mine:
            raise IntegrityRefusedError(f"integrity slug on disk {theirs!r} != tab's {mine!r}")

    # --- actions (memory only; call save()) ---------------------------------------------------

    def send_user(self, text: str) -> Self:
        """The user sends a message (ST saves at once, before generating)."""
        self.metadata["tainted"] = True
        msg: dict[str, Any] = {
            "name": self.user,
            "is_user": True,
            "is_system": False,
            "send_date": self._date(),
            "mes": text,
            "extra": {"isSmallSys": False},
            "force_avatar": (
                "User Avatars/user-default.png"
                if self.version == "1.12"
                else "/thumbnail?type=persona&file=user-default.png"
            ),
        }
        self._append(msg)
        return self

    def reply(
        self,
        name: str | None = None,
        text: str = "A reply.",
        *,
        generated: bool = True,
        avatar: str | None = None,
    ) -> Self:
        """A finished character reply (streamed generation's single save).

        ``generated=False`` gives a greeting-like message without generation fields. In group
        chats the member's ``force_avatar``/``original_avatar`` (``avatar`` = card file, default
        ``<name>.png``) and ``extra.gen_id`` are set.
        """
        name = name or self.character
        if not generated:
            msg: dict[str, Any] = {
                "name": name,
                "is_user": False,
                "is_system": False,
                "send_date": self._date(),
                "mes": text,
                "extra": {},
            }
        else:
            if self.messages and self.messages[-1].get("is_user") and self.version != "1.12":
                extra_user = self.messages[-1].setdefault("extra", {})
                if isinstance(extra_user, dict):
                    extra_user.setdefault("reasoning", "")  # saveReply
            started = self.clock()
            finished = self.clock()
            extra: dict[str, Any] = {"api": "custom", "model": "mock-model"}
            if self.version == "1.14":
                extra.update(reasoning="", reasoning_duration=None, time_to_first_token=77)
            elif not self.legacy:
                extra.update(
                    reasoning="",
                    reasoning_duration=None,
                    reasoning_signature=None,
                    time_to_first_token=77,
                )
            if self.group:
                extra["gen_id"] = int(started.timestamp() * 1000)
            msg = {
                "extra": extra,
                "name": name,
                "is_user": False,
                "send_date": self._date(started + timedelta(milliseconds=341)),
                "mes": text,
                "title": "",
                "gen_started": _iso(started),
                "gen_finished": _iso(finished),
            }
            if self.version == "1.12":
                del msg["title"]  # 1.12 writes no title on generated replies
            if self.legacy:  # up to 1.14 saveReply writes swipe_info at once
                msg["swipe_info"] = [
                    {
                        "send_date": msg["send_date"],
                        "gen_started": msg["gen_started"],
                        "gen_finished": msg["gen_finished"],
                        "extra": copy.deepcopy(extra),
                    }
                ]
        if self.group:
            card = avatar or f"{name}.png"
            msg["force_avatar"] = f"/thumbnail?type=avatar&file={card}"
            msg["original_avatar"] = card
        self._append(msg)
        return self

    def narrator(self, text: str) -> Self:
        """``/sys text``: a narrator line, ``is_system: ""`` (visible to the prompt)."""
        when = self.clock()
        self._append(
            {
                "name": "System",
                "is_user": False,
                "is_system": "",
                "send_date": self._date(when),
                "mes": text,
                "force_avatar": "img/five.png",
                "extra": {
                    "type": "narrator",
                    "bias": None,
                    "gen_id": int(when.timestamp() * 1000),
                    "isSmallSys": False,
                    "api": "manual",
                    "model": "slash command",
                },
            }
        )
        return self

    def append_raw(self, message: dict[str, Any]) -> Self:
        """Append any message object (rendered like every other message)."""
        self._append(copy.deepcopy(message))
        return self

    def _last(self) -> dict[str, Any]:
        if not self.messages:
            raise IndexError("the chat has no messages")
        return self.messages[-1]

    def swipe(self, new_text: str) -> Self:
        """Generate a new swipe on the LAST message and show it (ST rewrites the same line)."""
        msg = self._last()
        ensure_swipes(msg)
        started = self.clock()
        finished = self.clock()
        send_date = self._date(started + timedelta(milliseconds=341))
        msg["swipes"].append(new_text)
        msg["swipe_id"] = len(msg["swipes"]) - 1
        msg["mes"] = new_text
        msg["send_date"] = send_date
        msg["gen_started"] = _iso(started)
        msg["gen_finished"] = _iso(finished)
        msg["swipe_info"].append(
            {
                "send_date": send_date,
                "gen_started": msg["gen_started"],
                "gen_finished": msg["gen_finished"],
                "extra": copy.deepcopy(msg.get("extra", {})),
            }
        )
        return self

    def swipe_to(self, i: int) -> Self:
        """Swipe the LAST message to an existing alternative ``i`` (restores its swipe_info)."""
        msg = self._last()
        ensure_swipes(msg)
        msg["swipe_id"] = i
        msg["mes"] = msg["swipes"][i]
        info = msg["swipe_info"][i] if i < len(msg["swipe_info"]) else None
        if isinstance(info, dict):
            for key in ("send_date", "gen_started", "gen_finished"):
                if key in info:
                    msg[key] = info[key]
            if "extra" in info:
                msg["extra"] = copy.deepcopy(info["extra"])
        return self

    def continue_(self, more_text: str) -> Self:
        """ "Continue" the LAST message: text appended, ``gen_finished`` updated."""
        msg = self._last()
        ensure_swipes(msg)
        msg["mes"] = msg.get("mes", "") + more_text
        sid = msg["swipe_id"]
        msg["swipes"][sid] = msg["mes"]
        finished = _iso(self.clock())
        msg["gen_finished"] = finished
        if sid < len(msg["swipe_info"]) and isinstance(msg["swipe_info"][sid], dict):
            msg["swipe_info"][sid]["gen_finished"] = finished
        return self

    def edit(self, index: int, text: str) -> Self:
        """Edit message ``index``'s text (and its current swipe)."""
        msg = self.messages[index]
        msg["mes"] = text
        swipes = msg.get("swipes")
        sid = msg.get("swipe_id", 0)
        if isinstance(swipes, list) and isinstance(sid, int) and 0 <= sid < len(swipes):
            swipes[sid] = text
        return self

    def delete(self, index: int) -> Self:
        del self.messages[index]
        return self

    def regenerate(self, text: str, name: str | None = None) -> Self:
        """ "Regenerate": remove the last message if it is not the user's, then a new reply."""
        if self.messages and not self.messages[-1].get("is_user"):
            removed = self.messages.pop()
            name = name or removed.get("name") or self.character
        return self.reply(name or self.character, text)

    def hide(self, *indices: int) -> Self:
        """``/hide``: ``is_system: true``."""
        for i in indices or (len(self.messages) - 1,):
            self.messages[i]["is_system"] = True
        return self

    def unhide(self, *indices: int) -> Self:
        """``/unhide``: ``is_system: false``."""
        for i in indices or (len(self.messages) - 1,):
            self.messages[i]["is_system"] = False
        return self

    def set_metadata(self, **values: Any) -> Self:
        """Change ``chat_metadata`` (Author's Note etc.); the slug is kept unless given."""
        self.metadata.update(values)
        return self

    def texts(self) -> list[str]:
        return [str(m.get("mes", "")) for m in self.messages]

    def find_marker(self, job_id: str, key: str = "st_imagegen_job") -> dict[str, Any] | None:
        for m in self.messages:
            extra = m.get("extra")
            if isinstance(extra, dict) and extra.get(key) == job_id:
                return m
        return None


# --- what the browser does to messages ----------------------------------------------------------


def _first_swipe_info(message: dict[str, Any]) -> dict[str, Any]:
    """The ``swipe_info`` entry ST makes for a message's only swipe: its dates and extra."""
    info: dict[str, Any] = {"send_date": message.get("send_date")}
    for key in ("gen_started", "gen_finished"):
        if message.get(key) is not None:
            info[key] = message[key]
    extra = message.get("extra")
    info["extra"] = copy.deepcopy(extra) if isinstance(extra, dict) else {}
    return info


def ensure_swipes(message: dict[str, Any]) -> None:
    """``ensureSwipes``: swipe fields on every non-user, non-``isSmallSys`` message."""
    if message.get("is_user"):
        return
    extra = message.get("extra")
    if isinstance(extra, dict) and extra.get("isSmallSys"):
        return
    if not isinstance(message.get("swipes"), list):
        message["swipes"] = [message.get("mes", "")]
        message["swipe_id"] = 0
        message["swipe_info"] = [_first_swipe_info(message)]
        return
    if not isinstance(message.get("swipe_id"), int):
        message["swipe_id"] = 0
    if not isinstance(message.get("swipe_info"), list):
        message["swipe_info"] = [
            {
                "send_date": message.get("send_date"),
                "extra": copy.deepcopy(extra) if isinstance(extra, dict) else {},
            }
            for _ in message["swipes"]
        ]


def legacy_swipes(message: dict[str, Any], *, with_info: bool) -> None:
    """``showSwipeButtons`` up to 1.14: swipe fields on the last message if it is swipeable."""
    extra = message.get("extra")
    if (
        message.get("is_user")
        or message.get("is_system")
        or (isinstance(extra, dict) and extra.get("isSmallSys"))
        or isinstance(message.get("swipes"), list)
    ):
        return
    message["swipe_id"] = 0
    message["swipes"] = [message.get("mes", "")]
    if with_info and not isinstance(message.get("swipe_info"), list):
        message["swipe_info"] = [_first_swipe_info(message)]


def migrate_media(message: dict[str, Any]) -> None:
    """``ensureMessageMediaIsArray`` (1.14+): legacy ``image``/``image_swipes``/``video`` into
    ``extra.media`` (deduplicated by URL). The legacy keys are dropped on save."""
    extra = message.get("extra")
    if not isinstance(extra, dict):
        return
    media = extra.get("media")
    if not isinstance(media, list):
        media = []
    urls = {m.get("url") for m in media if isinstance(m, dict)}

    def add(url: Any, kind: str) -> None:
        if isinstance(url, str) and url and url not in urls:
            media.append({"type": kind, "url": url})
            urls.add(url)

    gallery = False
    swipes = extra.get("image_swipes")
    if isinstance(swipes, list) and swipes:
        for url in swipes:
            add(url, "image")
        gallery = True
    add(extra.get("image"), "image")
    add(extra.get("video"), "video")
    if media:
        extra["media"] = media
        if gallery:
            extra["media_display"] = "gallery"
        image = extra.get("image")
        if extra.get("media_display") == "gallery" and isinstance(image, str):
            extra["media_index"] = next(
                (i for i, m in enumerate(media) if isinstance(m, dict) and m.get("url") == image),
                0,
            )
        # The legacy keys become non-enumerable getters: gone from copies and from saves.
        for key in _DROPPED_ON_SAVE:
            extra.pop(key, None)
    file = extra.get("file")
    if isinstance(file, dict):
        files = extra.get("files")
        extra["files"] = [*files, file] if isinstance(files, list) else [file]


_DROPPED_ON_SAVE = ("image", "video", "image_swipes")


def _for_save(message: dict[str, Any], version: str) -> dict[str, Any]:
    """A copy as JSON would carry it: 1.14+ getters for legacy media are not enumerable."""
    out = copy.deepcopy(message)
    extra = out.get("extra")
    if version != "1.12" and isinstance(extra, dict):
        if isinstance(extra.get("media"), list):
            for key in _DROPPED_ON_SAVE:
                extra.pop(key, None)
        if isinstance(extra.get("files"), list):
            extra.pop("file", None)
    return out


def texts_of(path: Path) -> list[str]:
    """The ``mes`` of every parsable message line in a chat file (header skipped)."""
    out: list[str] = []
    for line in path.read_bytes().split(b"\n"):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "mes" in obj:
            out.append(str(obj["mes"]))
    return out


def write_lines(path: Path, objs: Iterable[dict[str, Any]]) -> bytes:
    """Write objects ST-style (no trailing newline) directly; returns the bytes written."""
    data = "\n".join(js_stringify(o) for o in objs).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data
