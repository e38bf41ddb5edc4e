"""Edits to SillyTavern's files that lose nothing: chat line inserts and image files.

A chat edit reads the file once (:func:`read_for_edit`), then :func:`insert_after` writes the old
bytes with the new lines spliced in to a temp file in the same folder (a name that does not end
in ``.jsonl``, so ST's chat list and Data Maid ignore it), fsyncs it, compares the chat on disk
with the snapshot the edit was based on, and only then renames over it. ST only ever replaces a
chat by renaming a new file over it, so a changed inode, size or mtime means someone saved in
between: the temp file is deleted and :class:`ChatConflictError` tells the caller to start over
from a fresh read. A tiny window between the final comparison and the rename remains; no lock
can close it (ST takes none).

Big chats cost about a durable copy: the read is a read (lines are parsed only when looked at,
see :class:`~daemon.tavern.chat.Chat`; :func:`insert_after_line` takes the place as a byte
offset, so nothing needs numbering), and the unchanged bytes are copied in the kernel in slices
that the disk starts writing while later ones are copied. The new version is not hashed: it is
told apart from ST's saves by its :class:`FileVersion` (every save renames a new file in).

Symlinked chats are followed to their real file, as ST's ``write-file-atomic`` does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

from daemon.errors import (
    ChatConflictError,
    ChatReadError,
    ChatWriteError,
    ImageFolderOutsideError,
    MessageNotFoundError,
    UnsafePathError,
)
from daemon.tavern.chat import MARKER_KEY, MAX_CHAT_BYTES, Chat, encode_message, parse_chat
from daemon.tavern.files import open_regular, real_path
from daemon.tavern.layout import (
    OUR_TEMP_SUFFIX,
    OUR_TEMP_TAG,
    our_temp_name,
    sanitize_filename,
)
from daemon.tavern.reaper import REAPER

__all__ = [
    "OUR_MARK",
    "TEMP_PATTERN",
    "ChatTemp",
    "FileVersion",
    "Snapshot",
    "Written",
    "build_image_message",
    "chat_temp",
    "check_image_folder",
    "check_unchanged_and_replace",
    "cleanup_stale_temps",
    "held_basis",
    "insert_after",
    "insert_after_line",
    "is_marked",
    "is_our_temp",
    "link_image",
    "mark_ours",
    "read_for_edit",
    "read_for_edit_with",
    "replace_line",
    "sha256_of",
    "snapshot",
    "write_image",
]

_T = TypeVar("_T")

# --- our temp files -------------------------------------------------------------------------------

TEMP_PATTERN = re.compile(
    rf"^\..+{re.escape(OUR_TEMP_TAG)}[0-9a-f]+{re.escape(OUR_TEMP_SUFFIX)}$", re.DOTALL
)
"""Names of our temp files (:func:`daemon.tavern.layout.our_temp_name`); never end in ``.jsonl``."""


def is_our_temp(name: str) -> bool:
    return TEMP_PATTERN.match(name) is not None


# --- snapshots ------------------------------------------------------------------------------------

_FRESH_NS = 3_000_000_000
"""A file modified less than this before we read it may be rewritten within the same timestamp
tick (coarse or 2 s file system clocks) without changing size or mtime: such bases get re-hashed
before the replace. Older ones cannot: any later write gets a later mtime."""


class FileVersion(NamedTuple):
    """Which file a chat's name points at: its inode, size and modification time.

    ST replaces a chat only by renaming a new file over it, and so do we, so a version read
    later with the same three values is the very file that was renamed in: how the daemon
    knows its own writes without hashing them. A rename keeps all three. A wrong match needs a
    later save to reuse the freed inode number with the same size within the same timestamp
    tick; the file that replaces ours cannot reuse its inode (it exists before ours is freed).
    """

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileVersion:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a chat file was when an edit read it (or after we wrote it).

    ``dev``, ``ctime_ns`` and ``taken_ns`` (wall clock when the stat was taken) are 0 when unknown;
    ``sha256`` is ``""`` when the read skipped the hash (:func:`read_for_edit_with`).
    ``marked``: the file carries our mark, still true of it (:func:`is_marked`).
    """

    inode: int
    size: int
    mtime_ns: int
    sha256: str
    dev: int = 0
    ctime_ns: int = 0
    taken_ns: int = 0
    marked: bool = False

    @property
    def version(self) -> FileVersion:
        return FileVersion(self.inode, self.size, self.mtime_ns)

    def same_file(self, st: os.stat_result) -> bool:
        """Whether ``st`` describes the same, unchanged file (hash aside)."""
        return (
            st.st_ino == self.inode
            and st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and (not self.dev or st.st_dev == self.dev)
            and (not self.ctime_ns or st.st_ctime_ns == self.ctime_ns)
        )

    @property
    def needs_rehash(self) -> bool:
        """The file was fresh when read, so stat alone cannot prove it unchanged."""
        return self.taken_ns - self.mtime_ns < _FRESH_NS


def _snap(st: os.stat_result, digest: str, taken_ns: int, marked: bool = False) -> Snapshot:
    return Snapshot(
        st.st_ino, st.st_size, st.st_mtime_ns, digest, st.st_dev, st.st_ctime_ns, taken_ns, marked
    )


# --- our mark -------------------------------------------------------------------------------------

OUR_MARK = "user.st_imagegen.ours"
"""The extended attribute on a chat file we wrote: its size and mtime when it was written."""

_setxattr = getattr(os, "setxattr", None)
_getxattr = getattr(os, "getxattr", None)


@dataclass(frozen=True, slots=True)
class Written:
    """The file an edit is about to rename in (what ``before_replace`` gets)."""

    version: FileVersion
    marked: bool  # carries OUR_MARK, made durable with its bytes (see mark_ours)


def _mark_value(st: os.stat_result) -> bytes:
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def mark_ours(fd: int, st: os.stat_result) -> bool:
    """Mark the file open at ``fd`` (its bytes all written; ``st`` its stat) as ours, before
    its fsync: the mark is on disk exactly when the bytes are, and stays with the file
    through the rename. ST's saves are new files, without it. False where the file system
    has no extended attributes (FAT, most network and Windows shares): the caller records
    the version durably instead."""
    if _setxattr is None:
        return False
    try:
        _setxattr(fd, OUR_MARK, _mark_value(st))
    except OSError:
        return False
    return True


def is_marked(fd: int, st: os.stat_result) -> bool:
    """Whether the file open at ``fd`` carries our mark and still has the size and mtime it
    had when marked (a file edited in place since, or a copy made by a tool that keeps
    attributes but not times, is not ours)."""
    if _getxattr is None:
        return False
    try:
        return bool(_getxattr(fd, OUR_MARK) == _mark_value(st))
    except OSError:  # no such attribute, or none supported here
        return False


def sha256_of(data: bytes) -> str:
    """The hex sha256 of a chat's bytes (what older versions recorded for their writes)."""
    return hashlib.sha256(memoryview(data)).hexdigest()


def snapshot(path: Path, data: bytes) -> Snapshot:
    """Stat ``path`` (following symlinks) and hash ``data``, the bytes an edit is based on."""
    taken = time.time_ns()
    try:
        st = path.stat()
    except OSError as exc:
        raise ChatReadError(f"chat {str(path)!r} cannot be read: {exc.strerror}") from None
    return _snap(st, sha256_of(data), taken)


# --- reading --------------------------------------------------------------------------------------

_READ_ATTEMPTS = 3


def _check_chat_path(path: Path, root: Path | None) -> Path:
    """The real file behind ``path``; refuses hostile names and (with ``root``) escapes."""
    if ".." in path.parts or "\x00" in str(path):
        raise UnsafePathError(f"refusing chat path with '..' or NUL: {str(path)!r}")
    if not path.name.endswith(".jsonl"):
        raise UnsafePathError(f"not a chat file (no .jsonl): {str(path)!r}")
    try:
        real = Path(real_path(path))
    except FileNotFoundError:
        raise ChatReadError(f"chat {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ChatReadError(f"chat {str(path)!r} cannot be resolved: {exc.strerror}") from None
    if root is not None:
        real_root = Path(_real_root(root))
        if not real.is_relative_to(real_root):
            raise UnsafePathError(
                f"chat {str(path)!r} resolves to {str(real)!r}, outside the data root"
            )
    return real


def _real_root(root: Path) -> str:
    try:
        return real_path(root)
    except OSError:
        return os.path.realpath(root)  # a root that is gone: its chats are refused as outside


def read_for_edit(path: Path, *, root: Path | None = None) -> tuple[Chat, bytes, Snapshot]:
    """Read a chat for an edit: the chat (parsed lazily), its exact bytes, and their snapshot.

    Symlinks are followed; with ``root`` the real file must lie inside it. The stat comes from
    the open file itself, so the snapshot describes exactly the bytes returned. The cost is a
    read and a hash: lines are parsed only when looked at (see :class:`Chat`).
    """
    chat, data, snap, _ = read_for_edit_with(path, _look_at_nothing, root=root)
    return chat, data, snap


def _look_at_nothing(chat: Chat) -> None:
    return None


def read_for_edit_with(
    path: Path, look: Callable[[Chat], _T], *, root: Path | None = None, hashed: bool = True
) -> tuple[Chat, bytes, Snapshot, _T]:
    """:func:`read_for_edit`, plus ``look(chat)`` run while the bytes are hashed.

    Hashing a big chat costs about as much as the byte searches of the chat's line view, and
    it releases the GIL: the hash runs in a helper thread meanwhile, so finding the lines an
    edit needs adds no time. ``look`` gets the chat the snapshot describes; what it returns is
    returned last. Whatever ``look`` raises is raised (after the hash thread finished).

    ``hashed=False`` skips the hash (the snapshot's ``sha256`` is ``""``) for an edit that does
    not need the old version's hash: the writer compares bytes, not hashes.
    """
    real = _check_chat_path(path, root)
    for _ in range(_READ_ATTEMPTS):
        taken = time.time_ns()
        data, before, after, marked = _read_stable(real)
        if before.st_size == after.st_size and before.st_mtime_ns == after.st_mtime_ns:
            chat = parse_chat(data)
            digest, seen = _hash_while(data, look, chat) if hashed else ("", look(chat))
            return chat, data, _snap(after, digest, taken, marked), seen
    raise ChatConflictError(f"chat {path.name!r} kept changing while being read")


_PARALLEL_HASH_MIN = 1024 * 1024
"""Below this size a helper thread costs more than it saves."""


def _hash_while(data: bytes, look: Callable[[Chat], _T], chat: Chat) -> tuple[str, _T]:
    """``sha256_of(data)`` and ``look(chat)``, the hash in a helper thread."""
    if len(data) < _PARALLEL_HASH_MIN:
        return sha256_of(data), look(chat)
    hashing = _Background(partial(sha256_of, data), "st-imagegen-hash")
    try:
        result = look(chat)
    finally:
        digest = hashing.result()
    return digest, result


class _Background(Generic[_T]):
    """``fn()`` run in a helper thread; :meth:`result` waits for it and returns what it
    returned, or raises what it raised."""

    def __init__(self, fn: Callable[[], _T], name: str) -> None:
        self._out: list[_T] = []
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], _T]) -> None:
        try:
            self._out.append(fn())
        except BaseException as exc:  # handed to whoever waits for the result
            self._failed.append(exc)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> None:
        """Wait for it to end, whatever the outcome."""
        self._thread.join()

    def result(self) -> _T:
        self._thread.join()
        if self._failed:
            raise self._failed[0]
        return self._out[0]


def _read_stable(real: Path) -> tuple[bytes, os.stat_result, os.stat_result, bool]:
    """The file's bytes, its stat before and after the read, and whether it is marked ours."""
    fd, before = open_regular(real, ChatReadError, "chat", "a chat file", nofollow=True)
    try:
        if before.st_size > MAX_CHAT_BYTES:
            raise ChatReadError(
                f"chat {real.name!r} is {before.st_size / 1e6:.0f} MB, "
                f"over the {MAX_CHAT_BYTES / 1e6:.0f} MB limit"
            )
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, max(before.st_size - total, 0) + 65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_CHAT_BYTES:
                raise ChatReadError(
                    f"chat {real.name!r} grew past the {MAX_CHAT_BYTES / 1e6:.0f} MB limit"
                )
        after = os.fstat(fd)
        marked = is_marked(fd, after)
    except OSError as exc:
        raise ChatReadError(f"chat {str(real)!r} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return data, before, after, marked


# --- writing helpers ------------------------------------------------------------------------------


def _write_error(exc: OSError, what: str, where: Path) -> ChatWriteError:
    """A clear message for the usual ways a write fails; nothing was changed when raised."""
    code = exc.errno
    if code == errno.ENOSPC:
        reason = "no space left on the device"
    elif code == errno.EDQUOT:
        reason = "disk quota exceeded"
    elif code == errno.EROFS:
        reason = "the file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        reason = "permission denied (check the owner and mode of the folder)"
    else:
        reason = exc.strerror or str(exc)
    return ChatWriteError(f"cannot write {what} in {str(where)!r}: {reason}; nothing was changed")


_WRITEBACK_CHUNK = 8 * 1024 * 1024
"""A big chat is copied in slices of this size, each followed by a nudge to the disk."""


class _Writeback:
    """Early writeback of a file being written: while later slices are copied, a helper
    thread flushes the earlier ones (``fdatasync``), so the final ``fsync`` before the rename
    has little left to wait for. Durability still rests on that final ``fsync``; an error of
    an early flush is raised by :meth:`finish` (the kernel reports a write error once)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._flushes: list[_Background[None]] = []

    def kick(self) -> None:
        """Start flushing what is written so far, unless a flush is still running."""
        if not self._flushes or not self._flushes[-1].running:
            self._flushes.append(_Background(partial(os.fdatasync, self._fd), "st-imagegen-flush"))

    def finish(self) -> None:
        """Wait for the flush threads; raise the first error one of them met."""
        failed: OSError | None = None
        for flush in self._flushes:
            try:
                flush.result()
            except OSError as exc:
                failed = failed or exc
        self._flushes.clear()
        if failed is not None:
            raise failed


def _write_all(
    fd: int, pieces: Sequence[bytes | memoryview], writeback: _Writeback | None = None
) -> None:
    unflushed = 0
    for piece in pieces:
        view = memoryview(piece)
        while view:
            n = os.write(fd, view[:_WRITEBACK_CHUNK])
            view = view[n:]
            unflushed += n
            if writeback is not None and unflushed >= _WRITEBACK_CHUNK:
                writeback.kick()
                unflushed = 0


_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


def _copy_prefix(src: int, dst: int, count: int, writeback: _Writeback | None = None) -> int:
    """Copy the first ``count`` bytes of ``src`` into ``dst`` in the kernel, as ``cp`` does.

    Returns how many bytes were copied; the caller writes the rest from memory (also when the
    file system or platform cannot copy ranges). ``src`` is the held basis file: if it was
    changed in place meanwhile, the final comparison reports the conflict. Copied in slices,
    each handed to ``writeback``.
    """
    copy_range = getattr(os, "copy_file_range", None)
    done = 0
    if copy_range is None:
        return 0
    while done < count:
        try:
            n = copy_range(src, dst, min(count - done, _WRITEBACK_CHUNK), done)
        except OSError as exc:
            if exc.errno in _NO_COPY_RANGE and done == 0:
                return 0
            raise
        if n == 0:
            break
        done += n
        if writeback is not None and done < count:
            writeback.kick()  # the last slice is left to the fsync that follows anyway
    return done


def _fsync_dir(folder: Path) -> None:
    """Make a rename or create durable. Best effort: some file systems refuse directory fsync."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a temp file we cannot remove is found again by cleanup_stale_temps


# --- inserting lines ------------------------------------------------------------------------------


def _message_end(data: bytes, chat: Chat, index: int) -> int:
    """Where the line of message ``index`` (ST numbering) ends in ``data``."""
    messages = chat.messages
    if not 0 <= index < len(messages):
        raise MessageNotFoundError(
            f"cannot insert after message #{index}: the chat has {len(messages)} message(s)"
        )
    start, end = chat.message_span(index)
    if data[start:end] != messages[index].raw:
        raise ValueError("the parsed chat does not match the bytes given")
    return end


def _check_line_end(data: bytes, end: int) -> int:
    """``end`` if a non-empty line of ``data`` ends there (at a ``\\n`` or the file's end)."""
    if (
        not 0 < end <= len(data)
        or data[end - 1 : end] == b"\n"
        or data[end : end + 1]
        not in (
            b"\n",
            b"",
        )
    ):
        raise ValueError(f"offset {end} is not the end of a line of the chat")
    return end


def _splice(data: bytes, end: int, new: bytes) -> list[Any]:
    """The new file as pieces: ``new`` after the line ending at ``end``."""
    view = memoryview(data)
    if end == len(data):  # the last line, no trailing newline: keep having none
        return [view, b"\n", new]
    return [view[: end + 1], new, b"\n", view[end + 1 :]]


def _encode_new(new_messages: Sequence[Mapping[str, Any]]) -> bytes:
    if not new_messages:
        raise ValueError("nothing to insert")
    encoded = [encode_message(m) for m in new_messages]
    for line in encoded:
        if not line.startswith(b"{") or b"\n" in line:
            raise ValueError("a new message must encode to one JSON object line")
    return b"\n".join(encoded)


def insert_after(
    path: Path,
    basis: Snapshot,
    data: bytes,
    chat: Chat,
    after_index: int,
    new_messages: Sequence[Mapping[str, Any]],
    *,
    root: Path | None = None,
    rehash: bool | None = None,
    probe: Callable[[str], None] | None = None,
    before_replace: Callable[[Written], None] | None = None,
) -> Snapshot:
    """Insert ``new_messages`` as lines right after message ``after_index`` (ST numbering).

    ``data``/``chat``/``basis`` come from :func:`read_for_edit`. Every other byte stays as it
    was, trailing newline (or none) included. Raises :class:`ChatConflictError` (nothing
    written) when the chat on disk is no longer ``basis``: re-read and try again.
    :class:`ChatWriteError` when the write fails (nothing changed, no temp file left),
    :class:`MessageNotFoundError` for a bad ``after_index``.

    Numbering messages parses the whole chat; :func:`insert_after_line` takes the place as a
    byte offset instead (a :class:`~daemon.tavern.chat.LineMessage`'s ``end``) and does not.

    ``rehash``: also compare the content before replacing; ``None`` decides by how fresh the
    basis was (see :attr:`Snapshot.needs_rehash`). ``probe`` is called with ``"final-check"``
    right before the final comparison and ``"replaced"`` right after the rename: tests measure
    the remaining window with it. ``before_replace`` is called with the new file's
    :class:`FileVersion` once it is durable, right before the final checks and the rename (to
    record "this version is ours" first); if it raises, nothing is replaced. Returns the
    snapshot of the file we wrote (unhashed: ``sha256`` is ``""``).
    """
    if len(data) != basis.size:
        raise ValueError("data is not the bytes the snapshot describes")
    end = _message_end(data, chat, after_index)
    return _insert(path, basis, data, end, new_messages, root, rehash, probe, before_replace)


def insert_after_line(
    path: Path,
    basis: Snapshot,
    data: bytes,
    line_end: int,
    new_messages: Sequence[Mapping[str, Any]],
    *,
    root: Path | None = None,
    rehash: bool | None = None,
    probe: Callable[[str], None] | None = None,
    before_replace: Callable[[Written], None] | None = None,
) -> Snapshot:
    """:func:`insert_after`, the place given as the offset in ``data`` where a line ends.

    ``line_end`` is the offset of the ``\\n`` ending the line, or ``len(data)`` for a last
    line without one (:attr:`daemon.tavern.chat.LineMessage.end`); anything else raises
    :class:`ValueError`. Same guarantees and errors as :func:`insert_after`.
    """
    if len(data) != basis.size:
        raise ValueError("data is not the bytes the snapshot describes")
    end = _check_line_end(data, line_end)
    return _insert(path, basis, data, end, new_messages, root, rehash, probe, before_replace)


def replace_line(
    path: Path,
    basis: Snapshot,
    data: bytes,
    line_start: int,
    line_end: int,
    message: Mapping[str, Any],
    *,
    root: Path | None = None,
    before_replace: Callable[[Written], None] | None = None,
) -> Snapshot:
    """Replace the line ``data[line_start:line_end]`` (a :class:`LineMessage`'s place) by
    ``message``, every other byte kept; same compare-before-replace guarantees and errors as
    :func:`insert_after` (used to add image swipes to our own image message)."""
    if len(data) != basis.size:
        raise ValueError("data is not the bytes the snapshot describes")
    end = _check_line_end(data, line_end)
    if not (0 <= line_start <= end) or (line_start and data[line_start - 1 : line_start] != b"\n"):
        raise ValueError(f"offset {line_start} does not start a line")
    view = memoryview(data)
    pieces: list[Any] = [view[:line_start], _encode_new([message]), view[end:]]
    return _apply(path, basis, data, pieces, root, None, None, before_replace)


def _insert(
    path: Path,
    basis: Snapshot,
    data: bytes,
    end: int,
    new_messages: Sequence[Mapping[str, Any]],
    root: Path | None,
    rehash: bool | None,
    probe: Callable[[str], None] | None,
    before_replace: Callable[[Written], None] | None,
) -> Snapshot:
    pieces = _splice(data, end, _encode_new(new_messages))
    return _apply(path, basis, data, pieces, root, rehash, probe, before_replace)


def _apply(
    path: Path,
    basis: Snapshot,
    data: bytes,
    pieces: list[Any],
    root: Path | None,
    rehash: bool | None,
    probe: Callable[[str], None] | None,
    before_replace: Callable[[Written], None] | None,
) -> Snapshot:
    with held_basis(path, basis, root) as (real, held, current):
        written, marked = _write_and_replace(
            path, real, held, current, basis, data, pieces, rehash, probe, before_replace
        )
    return _snap(written, "", time.time_ns(), marked)


@contextlib.contextmanager
def held_basis(
    path: Path, basis: Snapshot, root: Path | None
) -> Iterator[tuple[Path, int, os.stat_result]]:
    """The chat's real path, a descriptor held on it and its stat, for an edit of ``basis``.

    Holding the basis file open keeps its inode from being reused by a later save, so an equal
    inode at the final check proves the name still points at the file we read. ChatConflictError
    when the chat is gone or changed. After the block the folder is fsynced (the rename
    durable), then the descriptor closed (by the reaper thread for a chat worth it)."""
    try:
        real = _check_chat_path(path, root)
        held = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | _NOFOLLOW)
    except (ChatReadError, OSError):
        raise ChatConflictError(f"chat {path.name!r} disappeared before the edit") from None
    try:
        current = os.fstat(held)
        if not basis.same_file(current):
            raise ChatConflictError(f"chat {path.name!r} changed since it was read")
        yield real, held, current
    except BaseException:
        os.close(held)
        raise
    # The folder first: the close that frees the old file's blocks is then not part of the
    # journal commit that this fsync waits for.
    _fsync_dir(real.parent)
    if current.st_size >= _CLOSE_IN_BACKGROUND_MIN:
        _close_in_background(held)
    else:
        _close_quietly(held)


@dataclass
class ChatTemp:
    """The temp file a chat edit writes (see :func:`chat_temp`)."""

    path: Path
    fd: int
    writeback: _Writeback
    replaced: bool = False

    def durable(self) -> None:
        """Every byte written on disk (the writeback flushes, then fsync)."""
        self.writeback.finish()
        os.fsync(self.fd)

    def seal(self) -> Written:
        """Once every byte is written: mark the file ours (:func:`mark_ours`), make it
        durable, and say which file the rename will put in place (for ``before_replace``)."""
        st = os.fstat(self.fd)  # no more writes: its size and mtime are final
        marked = mark_ours(self.fd, st)
        self.durable()
        return Written(FileVersion.of(st), marked)

    def replace(self, chat: Path, real: Path, basis: Snapshot, current: os.stat_result) -> None:
        """Rename over the chat if it is still the file read (see
        :func:`check_unchanged_and_replace`)."""
        check_unchanged_and_replace(chat, real, self.path, basis, current)
        self.replaced = True


@contextlib.contextmanager
def chat_temp(real: Path, current: os.stat_result) -> Iterator[ChatTemp]:
    """A new temp file beside the chat, with the chat's mode and (where allowed) owner; removed
    after the block unless it was renamed over the chat. Write errors in the block that are
    ``OSError`` become ChatWriteError."""
    folder = real.parent
    temp = our_temp_name(real)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _write_error(exc, "a temp file for the chat", folder) from None
    made = ChatTemp(temp, fd, _Writeback(fd))
    try:
        try:
            os.fchmod(fd, stat.S_IMODE(current.st_mode))
            _copy_owner(fd, current)
        except OSError as exc:
            raise _write_error(exc, "the chat", folder) from None
        yield made
    finally:
        with contextlib.suppress(OSError):
            made.writeback.finish()  # never leave a flush running on a closed descriptor
        os.close(fd)
        if not made.replaced:
            _unlink_quietly(temp)


_CLOSE_IN_BACKGROUND_MIN = 256 * 1024
"""A replaced chat at least this big is closed by the reaper thread (see below)."""


def _close_in_background(fd: int) -> None:
    """Close the replaced chat's descriptor off the caller's path: as the old file's last
    reference, the close frees its blocks (:mod:`daemon.tavern.reaper`)."""
    REAPER.later(partial(_close_quietly, fd))


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):  # the rename is done; nothing depends on this close
        os.close(fd)


def _write_and_replace(
    path: Path,
    real: Path,
    held: int,
    current: os.stat_result,
    basis: Snapshot,
    data: bytes,
    pieces: Sequence[bytes | memoryview],
    rehash: bool | None,
    probe: Callable[[str], None] | None,
    before_replace: Callable[[Written], None] | None,
) -> tuple[os.stat_result, bool]:
    with chat_temp(real, current) as temp:
        try:
            copied = _copy_prefix(held, temp.fd, len(pieces[0]), temp.writeback)
            _write_all(temp.fd, [memoryview(pieces[0])[copied:], *pieces[1:]], temp.writeback)
            written = temp.seal()
        except OSError as exc:
            raise _write_error(exc, "the chat", real.parent) from None
        if before_replace is not None:
            before_replace(written)

        must_hash = basis.needs_rehash if rehash is None else rehash
        if must_hash and not _holds(held, data):
            raise ChatConflictError(f"chat {path.name!r} changed since it was read")
        if probe is not None:
            probe("final-check")
        temp.replace(path, real, basis, current)
        if probe is not None:
            probe("replaced")
        return os.fstat(temp.fd), written.marked  # the file renamed, even if replaced since


def check_unchanged_and_replace(
    path: Path, real: Path, temp: Path, basis: Snapshot, current: os.stat_result
) -> None:
    """The last step of every chat edit: the chat is still the file read (same inode, size,
    times, device), then the temp file is renamed over it. ChatConflictError or ChatWriteError;
    the temp file is the caller's to remove on failure."""
    try:
        final = real.stat()
    except OSError:
        raise ChatConflictError(f"chat {path.name!r} disappeared before the edit") from None
    if not basis.same_file(final) or final.st_dev != current.st_dev:
        raise ChatConflictError(f"chat {path.name!r} changed since it was read")
    # -- the window: an ST save landing between the stat above and this rename is lost --
    try:
        temp.replace(real)
    except OSError as exc:
        raise _write_error(exc, "the chat", real.parent) from None


def _holds(fd: int, data: bytes) -> bool:
    """Whether the file open at ``fd`` holds exactly ``data`` (read with pread: the offset is
    not moved). Comparing the bytes is the hash comparison without the hash."""
    pos = 0
    try:
        while chunk := os.pread(fd, 1 << 20, pos):
            if data[pos : pos + len(chunk)] != chunk:  # bytes compare with memcmp
                return False
            pos += len(chunk)
    except OSError:
        return False
    return pos == len(data)


def _copy_owner(fd: int, st: os.stat_result) -> None:
    """Give the temp file the chat's owner; without root only the group may be kept."""
    if (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()):
        return
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
    except PermissionError:
        with contextlib.suppress(PermissionError):  # else the file becomes ours, same mode
            os.fchown(fd, -1, st.st_gid)


# --- image files ----------------------------------------------------------------------------------

_EXT = re.compile(r"^[a-z0-9]{1,10}$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
"""Where the platform has it: a name swapped for a symlink is refused at open, not followed."""
_NAME_MAX_BYTES = 255
_MAX_COLLISIONS = 1000


def _sanitize_prefix(prefix: str) -> str:
    """ST's file name rule: dots become ``_`` (``saveBase64AsFile``), then sanitize-filename."""
    return sanitize_filename(prefix.replace(".", "_")) or "image"


def _fit(stem: str, tail: str) -> str:
    """``stem + tail``, with ``stem`` cut so the name fits in 255 bytes of UTF-8."""
    budget = _NAME_MAX_BYTES - len(tail.encode())
    raw = stem.encode("utf-8", "surrogatepass")[:budget]
    return raw.decode("utf-8", "ignore") + tail


def _humanized(when: datetime) -> str:
    return f"{when:%Y-%m-%d@%Hh%Mm%Ss}{when.microsecond // 1000:03d}ms"


def write_image(
    folder: Path,
    data: bytes,
    ext: str,
    prefix: str,
    when: datetime | None = None,
    *,
    root: Path | None = None,
) -> Path:
    """Write an image atomically as ``<folder>/<prefix>_<YYYY-MM-DD@HHhMMmSSsMMMms>.<ext>``.

    Like ST's own image names (local time). The folder is created if needed. An existing file
    is never overwritten: on a name collision ``_2``, ``_3``... is added. Returns the path.
    Raises :class:`ChatWriteError` (disk full, read-only, permission; nothing left behind) or
    :class:`UnsafePathError` for a hostile folder or extension. With ``root`` the folder must
    really lie inside it (checked before anything is created, and again after):
    :class:`ImageFolderOutsideError` otherwise.
    """
    if not data:
        raise ValueError("empty image")
    ext, stem = _image_target(folder, ext, prefix, when, root)
    temp = our_temp_name(folder / f"{stem}.{ext}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | _NOFOLLOW, 0o644)
    except OSError as exc:
        raise _write_error(exc, "an image", folder) from None
    try:
        try:
            _write_all(fd, [data])
            os.fsync(fd)
        finally:
            os.close(fd)
        final = _publish(temp, folder, stem, ext)
    except OSError as exc:
        raise _write_error(exc, "an image", folder) from None
    finally:
        _unlink_quietly(temp)
    _fsync_dir(folder)
    return final


def _image_target(
    folder: Path, ext: str, prefix: str, when: datetime | None, root: Path | None
) -> tuple[str, str]:
    """The checked extension and the name's stem of a new image in ``folder``, the folder
    made (see :func:`write_image` for the rules and errors)."""
    ext = ext.lower().lstrip(".")
    if not _EXT.match(ext):
        raise UnsafePathError(f"refusing image extension {ext!r}")
    if ".." in folder.parts or "\x00" in str(folder):
        raise UnsafePathError(f"refusing image folder with '..' or NUL: {str(folder)!r}")
    when = when or datetime.now()
    if when.tzinfo is not None:
        when = when.astimezone()  # ST names images in the server's local time
    stem = f"{_sanitize_prefix(prefix)}_{_humanized(when)}"
    if root is not None:
        check_image_folder(folder, root)
    _make_folder(folder)
    if root is not None:
        check_image_folder(folder, root)
    return ext, stem


_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
"""Why a hard link may be refused where a copy works: another file system, none supported."""


def link_image(
    folder: Path,
    source: Path,
    ext: str,
    prefix: str,
    when: datetime | None = None,
    *,
    root: Path | None = None,
) -> Path | None:
    """Give a finished image file its name in ``folder`` as a hard link, named and checked as
    :func:`write_image` names and checks (never overwriting): its bytes are neither copied
    nor fsynced again, only the folder is. ``None`` where no link is made (another file
    system, no hard links there, a source that is no plain file with one link): copy it
    with :func:`write_image` instead.

    The source is fsynced first (nothing to do for one written durably, as the pending
    images are), so the name never points at bytes that are not on disk."""
    ext, stem = _image_target(folder, ext, prefix, when, root)
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | _NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not st.st_size:
            return None
        os.fsync(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        final = _link_free_name(source, folder, stem, ext)
    except OSError as exc:
        if exc.errno in _NO_LINK:
            return None
        raise _write_error(exc, "an image", folder) from None
    try:
        linked = final.stat(follow_symlinks=False)
    except OSError as exc:
        raise _write_error(exc, "an image", folder) from None
    if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):  # swapped meanwhile
        _unlink_quietly(final)
        return None
    _fsync_dir(folder)
    return final


def _link_free_name(source: Path, folder: Path, stem: str, ext: str) -> Path:
    for n in range(1, _MAX_COLLISIONS + 1):
        final = folder / _fit(stem, f"{'' if n == 1 else f'_{n}'}.{ext}")
        try:
            os.link(source, final, follow_symlinks=False)  # EEXIST instead of overwriting
        except FileExistsError:
            continue
        return final
    raise ChatWriteError(f"no free image name for {stem!r} in {str(folder)!r}")


def check_image_folder(folder: Path, root: Path) -> None:
    """Refuse an image folder (or its nearest existing ancestor) that resolves outside ``root``.

    A symlinked ``user/images/<name>`` pointing elsewhere would otherwise receive the images
    (and ``mkdir`` would create folders out there).
    """
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    real = Path(os.path.realpath(probe))
    real_root = Path(os.path.realpath(root))
    if not real.is_relative_to(real_root):
        raise ImageFolderOutsideError(
            f"image folder {str(folder)!r} leads to {str(real)!r}, outside the data root "
            f"{str(real_root)!r} (a symlink?): nothing was written; point it inside the data "
            "root or remove it, and the job is committed on its next try"
        )


def _make_folder(folder: Path) -> None:
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ChatWriteError(f"{str(folder)!r} exists and is not a folder") from None
    except OSError as exc:
        raise _write_error(exc, "the image folder", folder) from None
    if not folder.is_dir():
        raise ChatWriteError(f"{str(folder)!r} exists and is not a folder")
    for created in reversed(missing):
        _fsync_dir(created.parent)


def _publish(temp: Path, folder: Path, stem: str, ext: str) -> Path:
    """Give ``temp`` its final name without ever replacing an existing file."""
    for n in range(1, _MAX_COLLISIONS + 1):
        final = folder / _fit(stem, f"{'' if n == 1 else f'_{n}'}.{ext}")
        try:
            os.link(temp, final)  # fails with EEXIST instead of overwriting
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # No hard links here (some FUSE/SMB mounts): reserve the name, then rename over it.
            try:
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            os.close(fd)
            try:
                temp.replace(final)
            except OSError:
                _unlink_quietly(final)
                raise
        return final
    raise ChatWriteError(f"no free image name for {stem!r} in {str(folder)!r}")


# --- stale temps ----------------------------------------------------------------------------------


def cleanup_stale_temps(folder: Path, *, recursive: bool = False) -> int:
    """Remove our own leftover temp files (by name pattern only) in ``folder``; at start-up.

    Returns how many were removed. ST's temps (``<chat>.jsonl.<digits>``) and every other file
    are left alone. A missing folder counts as clean.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError as exc:
        raise ChatWriteError(f"cannot list {str(folder)!r}: {exc.strerror}") from None
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and is_our_temp(entry.name):
            try:
                Path(entry.path).unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ChatWriteError(
                    f"cannot remove stale temp file {entry.name!r} in {str(folder)!r}: "
                    f"{exc.strerror}"
                ) from None
            removed += 1
        elif recursive and entry.is_dir(follow_symlinks=False):
            removed += cleanup_stale_temps(Path(entry.path), recursive=True)
    return removed


# --- the image message ----------------------------------------------------------------------------


def build_image_message(
    *,
    name: str,
    urls: Sequence[str],
    prompt: str,
    caption: str,
    send_date: str | int,
    job_id: str,
    hidden: bool = True,
    negative: str = "",
    force_avatar: str | None = None,
    original_avatar: str | None = None,
    titles: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The image message in the shape every ST version renders (1.12 to 1.18).

    ``titles``: each image's own prompt (a regeneration offers the earlier set beside the new
    one); ``prompt`` for every image when not given.

    ``extra.image`` (first URL) for ST up to 1.13, ``extra.media`` (all URLs) for 1.14+,
    ``inline_image: false`` (hides the caption in both), ``extra.title`` = the prompt, and the
    marker ``extra.st_imagegen_job`` = ``job_id``. ``send_date`` must already be in the chat's
    style (:func:`daemon.tavern.chat.format_send_date`). In group chats pass the speaking
    member's ``force_avatar``/``original_avatar``. Lone surrogates are replaced, so the dict is
    exactly what gets written.
    """
    if not urls:
        raise ValueError("an image message needs at least one URL")
    if not job_id:
        raise ValueError("an image message needs a job id (the marker)")
    media: list[dict[str, Any]] = []
    for n, url in enumerate(urls):
        title = titles[n] if titles is not None and n < len(titles) and titles[n] else prompt
        item: dict[str, Any] = {"url": url, "type": "image", "title": title, "source": "generated"}
        if negative:
            item["negative"] = negative
        media.append(item)
    extra: dict[str, Any] = {"image": urls[0], "title": prompt}
    if len(urls) > 1:
        extra["image_swipes"] = list(urls)  # ST 1.12-1.13 image swipe arrows
    extra.update(
        media=media,
        media_display="gallery",
        media_index=0,
        inline_image=False,
    )
    extra[MARKER_KEY] = job_id
    message: dict[str, Any] = {
        "name": name,
        "is_user": False,
        "is_system": hidden,
        "send_date": send_date,
        "mes": caption,
        "extra": extra,
    }
    if force_avatar:
        message["force_avatar"] = force_avatar
    if original_avatar:
        message["original_avatar"] = original_avatar
    scrubbed: dict[str, Any] = json.loads(encode_message(message))
    return scrubbed
