"""Per-character appearance: the daemon's own profiles and where a character's tags come from.

A character's tags are taken, field by field, from the first source that has them:

1. the daemon's profile (``st-imagegen character set NAME --appearance ... --negative ...``),
   kept in ``<state_dir>/characters.json``;
2. the prompt SillyTavern's image extension keeps for the card in the user's ``settings.json``
   (``extension_settings.sd.character_prompts``; ST itself prefers it over the card's copy);
3. the card's shared copy, ``data.extensions.sd_character_prompt`` (``positive``/``negative``);
4. nothing.

The same file holds the per-chat and per-character style choices and the reference-image
settings (see :mod:`daemon.engine.look.styles`, :mod:`daemon.engine.look.references`).
It is small JSON, rewritten atomically under a lock file, and read fresh for every job (so
the CLI's changes apply without a restart).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from daemon.errors import CardError, JobError
from daemon.tavern import cards, layout
from daemon.tavern.settings import sd_prompts_for

__all__ = [
    "PROFILES_FILE",
    "CharacterProfile",
    "CharacterStore",
    "Look",
    "Member",
    "looks_for_reply",
    "mentions",
    "resolve_look",
]

log = structlog.get_logger("st_imagegen.appearance")

PROFILES_FILE = "characters.json"
MAX_PROFILES_BYTES = 8 * 1024 * 1024


def profile_key(name: str) -> str:
    """How a character name is matched: case and surrounding space do not matter."""
    return " ".join(name.split()).casefold()


@dataclass(frozen=True, slots=True)
class CharacterProfile:
    """What the user told the daemon about one character (``None``: not set, fall back)."""

    name: str
    appearance: str | None = None
    negative: str | None = None
    style: str | None = None
    references: tuple[str, ...] = ()  # files in <state_dir>/references/<key>/
    use_references: bool | None = None  # None: [image] reference_images decides

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key in ("appearance", "negative", "style", "use_references"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.references:
            out["references"] = list(self.references)
        return out

    @classmethod
    def from_json(cls, key: str, obj: Any) -> CharacterProfile:
        obj = obj if isinstance(obj, dict) else {}

        def text(name: str) -> str | None:
            value = obj.get(name)
            return value if isinstance(value, str) else None

        refs = obj.get("references")
        use = obj.get("use_references")
        return cls(
            name=text("name") or key,
            appearance=text("appearance"),
            negative=text("negative"),
            style=text("style"),
            references=tuple(r for r in refs if isinstance(r, str))
            if isinstance(refs, list)
            else (),
            use_references=use if isinstance(use, bool) else None,
        )


@dataclass
class _Document:
    characters: dict[str, CharacterProfile] = field(default_factory=dict)
    chats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "characters": {k: p.to_json() for k, p in sorted(self.characters.items())},
            "chats": dict(sorted(self.chats.items())),
        }


class CharacterStore:
    """``<state_dir>/characters.json``: character profiles and per-chat choices."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / PROFILES_FILE
        self.references_dir = self.state_dir / "references"

    def __repr__(self) -> str:
        return f"CharacterStore({str(self.path)!r})"

    # --- reading ---------------------------------------------------------------------------

    def _read(self) -> _Document:
        try:
            with self.path.open("rb") as fh:
                raw = fh.read(MAX_PROFILES_BYTES)
        except FileNotFoundError:
            return _Document()
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            # Never lose the user's profiles silently: say so, and act as if there were none.
            log.warning("character profiles unreadable", file=str(self.path))
            return _Document()
        if not isinstance(obj, dict):
            return _Document()
        chars = obj.get("characters")
        chats = obj.get("chats")
        doc = _Document()
        if isinstance(chars, dict):
            doc.characters = {
                str(k): CharacterProfile.from_json(str(k), v) for k, v in chars.items()
            }
        if isinstance(chats, dict):
            doc.chats = {str(k): dict(v) for k, v in chats.items() if isinstance(v, dict)}
        return doc

    def profiles(self) -> list[CharacterProfile]:
        return sorted(self._read().characters.values(), key=lambda p: profile_key(p.name))

    def get(self, *names: str) -> CharacterProfile | None:
        """The profile of the first of ``names`` (card stem, display name) that has one."""
        characters = self._read().characters
        for name in names:
            if name and (found := characters.get(profile_key(name))) is not None:
                return found
        return None

    def chat_style(self, chat: str) -> str | None:
        value = self._read().chats.get(chat, {}).get("style")
        return value if isinstance(value, str) and value else None

    def chat_choices(self) -> dict[str, dict[str, Any]]:
        return self._read().chats

    # --- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _editing(self) -> Iterator[_Document]:
        """Read, let the caller change, write back atomically; one writer at a time."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_dir / f".{PROFILES_FILE}.lock"
        with lock_path.open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            doc = self._read()
            yield doc
            text = json.dumps(doc.to_json(), ensure_ascii=False, indent=2) + "\n"
            temp = self.state_dir / f".{PROFILES_FILE}.{secrets.token_hex(4)}.tmp"
            try:
                with temp.open("w", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
                temp.replace(self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise

    def update(self, name: str, **changes: Any) -> CharacterProfile:
        """Set fields of ``name``'s profile (created if new); ``""`` clears a text field."""
        if not name.strip():
            raise JobError("a character name is needed")
        key = profile_key(name)
        with self._editing() as doc:
            current = doc.characters.get(key) or CharacterProfile(name=name.strip())
            cleaned: dict[str, Any] = {}
            for field_name, value in changes.items():
                if isinstance(value, str):
                    value = value.strip() or None
                cleaned[field_name] = value
            updated = replace(current, **cleaned)
            doc.characters[key] = updated
        return updated

    def remove(self, name: str) -> bool:
        with self._editing() as doc:
            return doc.characters.pop(profile_key(name), None) is not None

    def set_chat_style(self, chat: str, style: str | None) -> None:
        with self._editing() as doc:
            choices = doc.chats.setdefault(chat, {})
            if style:
                choices["style"] = style
            else:
                choices.pop("style", None)
                if not choices:
                    doc.chats.pop(chat, None)

    def reference_files(self, profile: CharacterProfile) -> list[Path]:
        """The profile's chosen reference images that still exist."""
        folder = self.references_dir / _safe_key(profile.name)
        return [folder / name for name in profile.references if (folder / name).is_file()]


def _safe_key(name: str) -> str:
    """A folder name for a character's reference images."""
    return layout.sanitize_filename(profile_key(name)) or "character"


# --- resolution --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Look:
    """One character's tags for one job, and where each came from."""

    name: str
    tags: str
    negative: str
    source: str  # of the tags: "profile", "st-settings", "card" or "none"
    negative_source: str = "none"
    stem: str = ""  # card file stem, "" when there is no card

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name,
            "tags": self.tags,
            "negative": self.negative,
            "from": self.source,
        }


@dataclass(frozen=True, slots=True)
class Member:
    """A character that may be in the picture: its card stem and its card (if readable)."""

    stem: str
    card: cards.Card | None

    @property
    def name(self) -> str:
        return (self.card.name if self.card else "") or self.stem


def resolve_look(
    name: str,
    stem: str,
    *,
    profile: CharacterProfile | None,
    card: cards.Card | None,
    st_settings: dict[str, Any] | None = None,
) -> Look:
    """The tags of one character, each field from the first source that has it."""
    candidates: list[tuple[str, str, str]] = []
    if profile is not None:
        candidates.append(("profile", profile.appearance or "", profile.negative or ""))
    if st_settings and stem:
        candidates.append(("st-settings", *sd_prompts_for(st_settings, stem)))
    if card is not None:
        candidates.append(("card", *cards.sd_character_prompt(card)))
    tags, tags_from = next(((c[1], c[0]) for c in candidates if c[1].strip()), ("", "none"))
    negative, negative_from = next(((c[2], c[0]) for c in candidates if c[2].strip()), ("", "none"))
    return Look(
        name=name,
        tags=" ".join(tags.split()),
        negative=" ".join(negative.split()),
        source=tags_from,
        negative_source=negative_from,
        stem=stem,
    )


def mentions(text: str, name: str) -> bool:
    """Does ``text`` name ``name`` (whole words, any case; the first name counts too)?"""
    name = " ".join(name.split())
    if not name:
        return False
    variants = {name}
    first = name.split(" ")[0]
    if len(first) >= 3:
        variants.add(first)
    for variant in variants:
        if re.search(rf"(?<!\w){re.escape(variant)}(?!\w)", text, re.IGNORECASE):
            return True
    return False


def _read_member(root: Path, user: str, stem: str) -> Member:
    try:
        card = cards.read_card(layout.card_path(root, user, stem))
    except CardError as exc:
        log.debug("card not readable for appearance", card=stem, error=str(exc))
        card = None
    return Member(stem, card)


def chat_members(root: Path, user: str, chat: str, character: str, is_group: bool) -> list[Member]:
    """The characters of a chat: the card owner, or the group's members (blocking)."""
    if not is_group:
        return [_read_member(root, user, character)] if character else []
    group = layout.group_for_chat(root, user, Path(chat).stem)
    if group is None:
        return []
    return [_read_member(root, user, Path(m).stem) for m in group.members]


def looks_for_reply(
    members: Sequence[Member],
    speaker: str,
    reply: str,
    store: CharacterStore,
    *,
    st_settings: dict[str, Any] | None = None,
    solo: bool = True,
) -> list[Look]:
    """The looks for one reply: the speaker's, then (group chats) those of members the reply
    names, in chat order. Looks without tags or negative are left out."""
    speaking: list[Member] = []
    named: list[Member] = []
    for member in members:
        if solo or member.name == speaker or profile_key(member.stem) == profile_key(speaker):
            speaking.append(member)
        elif mentions(reply, member.name):
            named.append(member)
    looks: list[Look] = []
    for member in speaking[:1] + named:
        profile = store.get(member.stem, member.name)
        look = resolve_look(
            member.name, member.stem, profile=profile, card=member.card, st_settings=st_settings
        )
        if look.tags or look.negative:
            looks.append(look)
    if not speaking and speaker:
        # A speaker without a card (a deleted member, a renamed card): its profile still counts.
        profile = store.get(speaker)
        if profile is not None:
            look = resolve_look(speaker, "", profile=profile, card=None)
            if look.tags or look.negative:
                looks.insert(0, look)
    return looks
