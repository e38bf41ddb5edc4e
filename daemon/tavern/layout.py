"""Where things are in a SillyTavern data root, and what a path an event names is.

A data root holds one folder per user handle (``default-user`` when accounts are off) plus
server-internal ``_*`` folders. Inside a user folder: ``chats/<card stem>/*.jsonl``,
``group chats/*.jsonl`` (with the space), ``characters/<stem>.png``, ``groups/<id>.json``,
``user/images/<folder>/`` and ``backups/``. Nothing here reads chat contents.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemon.errors import NotADataRootError, UnsafePathError

__all__ = [
    "CHATS_DIR",
    "GROUP_CHATS_DIR",
    "ChatRef",
    "Classified",
    "GroupInfo",
    "PathKind",
    "card_path",
    "chat_ref",
    "chat_title",
    "classify",
    "describe_data_root",
    "fallback_folder_name",
    "group_for_chat",
    "image_folder",
    "is_user_dir",
    "iter_chats",
    "list_users",
    "our_temp_name",
    "resolve_chat",
    "resolve_data_root",
    "sanitize_filename",
]

CHATS_DIR = "chats"
GROUP_CHATS_DIR = "group chats"
CHAT_SUFFIX = ".jsonl"
OUR_TEMP_TAG = ".st-imagegen."
OUR_TEMP_SUFFIX = ".tmp"
_USER_MARKERS = ("chats", "characters", "group chats", "settings.json")
_ST_TEMP = re.compile(r"^(?P<chat>.+\.jsonl)\.(?P<n>\d+)$")
_NAME_MAX = 255


# --- data root --------------------------------------------------------------------------------


def is_user_dir(path: Path) -> bool:
    """A user's tree: a real folder holding ``chats/``, ``characters/``, ``group chats/`` or
    ``settings.json``."""
    try:
        if not stat.S_ISDIR(path.lstat().st_mode):
            return False
    except OSError:
        return False
    return any(os.path.lexists(path / marker) for marker in _USER_MARKERS)


def _user_dirs(root: Path) -> list[str]:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    names = [
        e.name
        for e in entries
        if not e.name.startswith("_")
        and e.is_dir(follow_symlinks=False)
        and is_user_dir(Path(e.path))
    ]
    return sorted(names)


def resolve_data_root(path: Path) -> Path:
    """The data root for ``path``: an ST install folder, its ``data/`` folder, or the data root.

    Raises :class:`NotADataRootError` saying what was found instead.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise NotADataRootError(f"{str(given)!r} does not exist")
    if not given.is_dir():
        raise NotADataRootError(f"{str(given)!r} is a file, not a SillyTavern folder")
    root = given.resolve()
    if not os.access(root, os.R_OK | os.X_OK):
        raise NotADataRootError(f"{str(root)!r} is not readable (permission denied)")
    data = root / "data"
    install = (root / "server.js").exists() or (root / "package.json").exists()
    # An install folder first: old installs keep stray folders (public/characters) at the top.
    if install and data.is_dir() and _user_dirs(data):
        return data
    if _user_dirs(root):
        return root
    if data.is_dir() and _user_dirs(data):
        return data
    if is_user_dir(root):
        raise NotADataRootError(
            f"{str(root)!r} is one user's folder ({root.name!r}); "
            f"give its parent {str(root.parent)!r}, the data root that holds all user folders"
        )
    if install:
        raise NotADataRootError(
            f"{str(root)!r} looks like a SillyTavern install but has no data/ folder with users; "
            "start SillyTavern once, or give the dataRoot from its config.yaml"
        )
    if (root / "_storage").is_dir() or data.is_dir():
        raise NotADataRootError(
            f"{str(root)!r} looks like a SillyTavern data root but holds no user folder yet "
            "(no folder with chats/ or characters/); start SillyTavern once"
        )
    raise NotADataRootError(
        f"{str(root)!r} is not a SillyTavern data root: no user folder (with chats/, characters/, "
        "'group chats/' or settings.json) in it or in its data/ folder"
    )


def list_users(root: Path, only: Sequence[str] = ()) -> list[str]:
    """User handles in ``root``, sorted; ``_*`` folders skipped. ``only`` filters (its order)."""
    found = _user_dirs(root)
    if not only:
        return found
    present = set(found)
    return [name for name in only if name in present]


def describe_data_root(root: Path, users: Sequence[str] = ()) -> str:
    """A one-line summary like ``2 users (alice, default-user), 14 chats (3 group chats)``."""
    names = list_users(root, users)
    total = groups = 0
    for ref in iter_chats(root, names):
        total += 1
        groups += ref.is_group
    user_word = "user" if len(names) == 1 else "users"
    chat_word = "chat" if total == 1 else "chats"
    group_word = "group chat" if groups == 1 else "group chats"
    listed = ", ".join(names)
    return f"{len(names)} {user_word} ({listed}), {total} {chat_word} ({groups} {group_word})"


# --- chats --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatRef:
    """One chat file. ``rel`` (POSIX, relative to the data root) is the store key."""

    user: str
    is_group: bool
    owner: str
    path: Path
    rel: str
    chat_id: str


def chat_ref(root: Path, user: str, owner: str | None, filename: str) -> ChatRef:
    """The reference for ``filename`` in a character folder (``owner``) or group chats (None)."""
    if owner is None:
        return _ref(user, None, filename, root / user / GROUP_CHATS_DIR)
    return _ref(user, owner, filename, root / user / CHATS_DIR / owner)


def _ref(user: str, owner: str | None, filename: str, folder: Path) -> ChatRef:
    stem = filename[: -len(CHAT_SUFFIX)] if filename.endswith(CHAT_SUFFIX) else filename
    if owner is None:
        rel = f"{user}/{GROUP_CHATS_DIR}/{filename}"
        return ChatRef(user, True, "", folder / filename, rel, stem)
    rel = f"{user}/{CHATS_DIR}/{owner}/{filename}"
    return ChatRef(user, False, owner, folder / filename, rel, stem)


def _jsonl_files(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return [
                e.name
                for e in it
                if e.name.endswith(CHAT_SUFFIX) and e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return []


def iter_chats(root: Path, users: Sequence[str] = ()) -> Iterator[ChatRef]:
    """Every chat file (regular files only; symlinks and folders named ``*.jsonl`` skipped)."""
    for user in list_users(root, users):
        base = root / user
        chats = base / CHATS_DIR
        try:
            with os.scandir(chats) as it:
                owners = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            owners = []
        for owner in owners:
            folder = chats / owner
            for name in sorted(_jsonl_files(folder)):
                yield _ref(user, owner, name, folder)
        folder = base / GROUP_CHATS_DIR
        for name in sorted(_jsonl_files(folder)):
            yield _ref(user, None, name, folder)


# --- classification -----------------------------------------------------------------------------


class PathKind(StrEnum):
    CHAT = "chat"
    ST_TEMP = "st_temp"
    OUR_TEMP = "our_temp"
    BACKUP = "backup"
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class Classified:
    """What a path under the data root is (:func:`classify`), and which chat for a chat."""

    kind: PathKind
    chat: ChatRef | None = None


_IGNORE = Classified(PathKind.IGNORE)


def _relative_parts(root: Path, path: Path) -> tuple[str, ...] | None:
    """``path``'s parts below ``root`` if it is lexically and really inside it, else None."""
    full = path if path.is_absolute() else root / path
    if any(part in ("..", ".") for part in full.parts):
        return None
    try:
        parts = full.relative_to(root).parts
    except ValueError:
        return None
    if len(parts) < 2:
        return None
    # No symlinked folder on the way (iter_chats does not follow them either), so nothing
    # leads out of the root.
    if full.parent.resolve() != root.resolve().joinpath(*parts[:-1]):
        return None
    return parts


def _temp_target(name: str) -> str | None:
    """The chat file name our temp file ``name`` stands for, if it is one of ours."""
    if not (name.startswith(".") and name.endswith(OUR_TEMP_SUFFIX) and OUR_TEMP_TAG in name):
        return None
    return name[1 : name.rindex(OUR_TEMP_TAG)]


def classify(root: Path, path: Path) -> Classified:
    """What an event path is: a chat, ST's or our temp file, a backup, or something to ignore.

    Paths outside ``root``, with ``..``, below ``_*`` folders, behind symlinks leading out of the
    root, or naming a symlink or a folder, are ignored.
    """
    parts = _relative_parts(root, path)
    if parts is None:
        return _IGNORE
    user, area = parts[0], parts[1]
    if user.startswith("_"):
        return _IGNORE
    if area == "backups":
        return Classified(PathKind.BACKUP)
    if area == CHATS_DIR and len(parts) == 4:
        owner: str | None = parts[2]
    elif area == GROUP_CHATS_DIR and len(parts) == 3:
        owner = None
    else:
        return _IGNORE
    full = root / Path(*parts)
    try:
        mode = full.lstat().st_mode
        if not stat.S_ISREG(mode):
            return _IGNORE  # a symlink, a folder named x.jsonl, a socket...
    except FileNotFoundError:
        pass  # deleted or renamed away: still worth an event
    except OSError:
        return _IGNORE
    name = parts[-1]
    if name.endswith(CHAT_SUFFIX):
        return Classified(PathKind.CHAT, chat_ref(root, user, owner, name))
    if m := _ST_TEMP.match(name):
        return Classified(PathKind.ST_TEMP, chat_ref(root, user, owner, m["chat"]))
    target = _temp_target(name)
    if target is not None:
        ref = chat_ref(root, user, owner, target) if target.endswith(CHAT_SUFFIX) else None
        return Classified(PathKind.OUR_TEMP, ref)
    return _IGNORE


def resolve_chat(root: Path, given: str | Path) -> ChatRef:
    """A user-given chat (absolute path, or relative to the data root) as a :class:`ChatRef`.

    Raises :class:`UnsafePathError` for anything that is not a chat file inside the root.
    """
    text = str(given)
    if not text or "\x00" in text:
        raise UnsafePathError(f"{text!r} is not a chat path")
    path = Path(text).expanduser()
    if any(part == ".." for part in path.parts):
        raise UnsafePathError(f"chat path {text!r} contains '..'")
    if path.is_absolute():
        try:
            path.relative_to(root)
        except ValueError:
            raise UnsafePathError(
                f"chat path {text!r} is outside the data root {str(root)!r}"
            ) from None
    found = classify(root, path)
    if found.kind is not PathKind.CHAT or found.chat is None:
        full = path if path.is_absolute() else root / path
        if full.is_symlink():
            raise UnsafePathError(f"chat path {text!r} is a symlink; give the real file")
        if full.is_dir():
            raise UnsafePathError(f"chat path {text!r} is a folder, not a chat file")
        raise UnsafePathError(
            f"{text!r} is not a chat: expected <user>/chats/<character>/<name>.jsonl or "
            "<user>/group chats/<name>.jsonl inside the data root"
        )
    return found.chat


# --- cards, groups, images ----------------------------------------------------------------------


def _plain_name(value: str, what: str) -> str:
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\x00" in value
        or (what == "user" and value.startswith("_"))
    ):
        raise UnsafePathError(f"{what} name {value!r} is not a plain file name")
    return value


def card_path(root: Path, user: str, stem: str) -> Path:
    """``<root>/<user>/characters/<stem>.png``; the chat folder name is the card's stem."""
    _plain_name(user, "user")
    _plain_name(stem, "character")
    return root / user / "characters" / f"{stem}.png"


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group: its id, its display name and its members, as its group file lists them."""

    id: str
    name: str
    members: list[str]


# Parsed group files by path, revalidated by mtime and size: every event on a group chat looks
# its group up, and the files rarely change. One entry per group file, so it stays small.
_group_cache: dict[Path, tuple[int, int, GroupInfo | None, frozenset[str]]] = {}


def _load_group(path: Path) -> tuple[GroupInfo | None, frozenset[str]]:
    try:
        st = path.stat()
    except OSError:
        return None, frozenset()
    cached = _group_cache.get(path)
    if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
        return cached[2], cached[3]
    info: GroupInfo | None = None
    chats: frozenset[str] = frozenset()
    try:
        with path.open("rb") as fh:
            obj: Any = json.loads(fh.read(16 * 1024 * 1024).decode("utf-8", "replace"))
    except (OSError, ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        stem = path.stem
        ids = [obj.get("chat_id")]
        if isinstance(obj.get("chats"), list):
            ids.extend(obj["chats"])
        chats = frozenset(str(i) for i in ids if isinstance(i, (str, int)) and str(i))
        members = obj.get("members")
        name = obj.get("name")
        info = GroupInfo(
            id=str(obj.get("id") or stem),
            name=name if isinstance(name, str) else "",
            members=[m for m in members if isinstance(m, str)] if isinstance(members, list) else [],
        )
    _group_cache[path] = (st.st_mtime_ns, st.st_size, info, chats)
    return info, chats


def group_for_chat(root: Path, user: str, chat_id: str) -> GroupInfo | None:
    """The group owning group chat ``chat_id`` (its ``chat_id`` or ``chats`` names it)."""
    _plain_name(user, "user")
    folder = root / user / "groups"
    try:
        with os.scandir(folder) as it:
            files = sorted(
                Path(e.path)
                for e in it
                if e.name.endswith(".json") and e.is_file(follow_symlinks=False)
            )
    except OSError:
        return None
    # The group whose id is the chat id first: that is the group's first chat.
    files.sort(key=lambda p: p.stem != chat_id)
    for path in files:
        info, chats = _load_group(path)
        if info is not None and chat_id in chats:
            return info
    return None


def chat_title(root: Path | None, chat: str) -> str:
    """What the user calls chat ``chat`` (relative to the data root): ``Bob · Bob - harbour``
    for a character chat, the group's own name (``Lighthouse Garden · 1795473024643``) for a
    group chat, ``group · <id>`` when its group file is gone. Blocking (reads group files)."""
    parts = chat.split("/")
    stem = parts[-1].removesuffix(".jsonl")
    if len(parts) == 4 and parts[1] == CHATS_DIR:
        return f"{parts[2]} · {stem}"
    info: GroupInfo | None = None
    if root is not None and parts[0]:
        with contextlib.suppress(UnsafePathError, OSError):
            info = group_for_chat(root, parts[0], stem)
    if info is not None and info.name:
        return f"{info.name} · {stem}" if info.name != stem else info.name
    return f"group · {stem}"


_ILLEGAL = re.compile(r'[/?<>\\:*|"]')
_CONTROL = re.compile(r"[\x00-\x1f\x80-\x9f]")
_RESERVED = re.compile(r"^\.+$")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_WINDOWS_TRAILING = re.compile(r"[. ]+$")


def _truncate_utf8(text: str, limit: int) -> str:
    out: list[str] = []
    used = 0
    for ch in text:
        size = len(ch.encode("utf-8", "surrogatepass"))
        if used + size > limit:
            break
        out.append(ch)
        used += size
    return "".join(out)


def sanitize_filename(name: str) -> str:
    """What npm ``sanitize-filename`` (used by ST for image folders and files) makes of ``name``.

    Removes ``/ ? < > \\ : * | "`` and control characters, a name of only dots, Windows reserved
    names, trailing dots and spaces; truncates to 255 UTF-8 bytes. May return ``""``.
    """
    text = _ILLEGAL.sub("", name)
    text = _CONTROL.sub("", text)
    text = _RESERVED.sub("", text)
    text = _WINDOWS_RESERVED.sub("", text)
    text = _WINDOWS_TRAILING.sub("", text)
    return _truncate_utf8(text, _NAME_MAX)


def fallback_folder_name(name: str) -> str:
    """A safe image folder name for a character whose names sanitize to nothing ("con",
    "aux", "..."): the same for the same character on every commit, distinct between them."""
    import hashlib  # here: a one-shot command that only names chats never loads OpenSSL

    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    readable = sanitize_filename(f"{name}-{digest}").strip(" .-")
    return readable if readable and readable != digest else f"st-imagegen-{digest}"


def image_folder(root: Path, user: str, folder: str) -> Path:
    """``<root>/<user>/user/images/<sanitized folder>``, as ST's image upload names it."""
    _plain_name(user, "user")
    clean = sanitize_filename(folder)
    if not clean:
        raise UnsafePathError(f"image folder name {folder!r} is empty once sanitized")
    return root / user / "user" / "images" / clean


def our_temp_name(target: Path) -> Path:
    """A temp path next to ``target`` that ST ignores: ``.<name>.st-imagegen.<rand>.tmp``."""
    import secrets

    rand = secrets.token_hex(6)
    extra = len(f".{OUR_TEMP_TAG}{rand}{OUR_TEMP_SUFFIX}".encode())
    name = target.name
    if len(name.encode("utf-8", "surrogateescape")) + extra > _NAME_MAX:
        # Keep the name under NAME_MAX; such a temp no longer names its chat exactly.
        name = _truncate_utf8(name, _NAME_MAX - extra - 1) + "~"
    return target.with_name(f".{name}{OUR_TEMP_TAG}{rand}{OUR_TEMP_SUFFIX}")
