"""The watcher: watchdog's observer thread bridged into anyio, settling, and stat rescans.

Events are hints. The observer thread classifies each path and hands a :class:`Hint` to the
event loop through a bounded anyio memory stream; it never blocks on a full stream (it sets
``rescan_needed`` instead) and never raises (an exception would silently end watchdog's thread).
A periodic stat-only rescan (:class:`StatIndex`) catches whatever the events missed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from daemon.errors import TavernError
from daemon.tavern import layout
from daemon.tavern.layout import ChatRef, PathKind

__all__ = [
    "DEFAULT_BUFFER",
    "EventBridge",
    "Hint",
    "HintKind",
    "Settler",
    "StatIndex",
    "Watcher",
]

log = structlog.get_logger("st_imagegen.watch")

DEFAULT_BUFFER = 4096
"""Hints the observer's queue holds before the observer thread gives up and asks for a rescan."""

STREAM_BUFFER = 256
"""Hints the anyio stream holds (the pump waits when it is full; the queue absorbs bursts)."""


OBSERVER_STOP_TIMEOUT = 5.0
"""Seconds to wait for watchdog's threads to end on shutdown."""


WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]
"""The events the bridge acts on. watchdog turns the list into the inotify mask, so the kernel
does not even deliver the rest: reads, opens and closes without a write (a rescan's scandir of
every folder, ST reading a chat, a backup) would otherwise wake the observer thread."""


class HintKind(StrEnum):
    CHAT = "chat"  # a chat file may have changed
    DROP = "drop"  # something moved into accepted/ rejected/ regenerate/
    RESCAN = "rescan"  # a folder appeared (new user, character, group chats), or events lost
    WAKE = "wake"  # another process changed jobs (the CLI touched the wake folder)
    DEAD = "dead"  # watchdog's observer or one of its emitters died: the daemon is deaf
    CONFIG = "config"  # the config file (or a key file next to it) was written


@dataclass(frozen=True, slots=True)
class Hint:
    kind: HintKind
    chat: ChatRef | None = None
    at: float = 0.0  # time.monotonic() when the observer saw it


class EventBridge(FileSystemEventHandler):
    """watchdog handler: classify in the observer thread, hand over through a bounded queue.

    Every method catches everything: an exception escaping a handler ends watchdog's dispatch
    thread, and the daemon would go deaf. The handover never blocks: a hint goes into a bounded
    queue and one byte into a socket pair whose other end the event loop waits on (readable: no
    thread, no timeout), so an idle daemon sleeps until an event comes, and neither a busy nor a
    stopped event loop can stall the observer.
    """

    def __init__(
        self,
        root: Path,
        drop_dirs: Sequence[Path],
        buffer: int,
        wake_dirs: Sequence[Path] = (),
        config_files: Sequence[Path] = (),
    ) -> None:
        self.root = root
        self.drop_dirs = tuple(str(d) for d in drop_dirs)
        self.wake_dirs = tuple(str(d) for d in wake_dirs)
        self.config_files = tuple(str(f) for f in config_files)
        self.queue: queue.Queue[Hint] = queue.Queue(maxsize=buffer)
        self.rescan_needed = threading.Event()
        self.errors = 0
        self.delivered = 0
        self.dropped = 0
        self.closed = False
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def signal(self) -> None:
        """Wake the event loop's pump (any thread; never blocks)."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._writer.send(b"\0")

    def close_signal(self) -> None:
        self._writer.close()
        self.reader.close()

    # --- observer thread -----------------------------------------------------------------

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            for hint in self._hints(event):
                self._hand_over(hint)
        except Exception as exc:  # never let watchdog's thread die
            self.errors += 1
            self.rescan_needed.set()
            with contextlib.suppress(Exception):  # logging itself failed: nothing else to do
                log.error("watch handler error", error=repr(exc), event=event.event_type)

    def _hints(self, event: FileSystemEvent) -> Iterable[Hint]:
        now = time.monotonic()
        src = _as_str(event.src_path)
        if self.config_files and not event.is_directory:
            dest = _as_str(getattr(event, "dest_path", "") or "")
            if src in self.config_files or dest in self.config_files:
                yield Hint(HintKind.CONFIG, at=now)
                return
        if self.wake_dirs and _under_any(src, self.wake_dirs):
            yield Hint(HintKind.WAKE, at=now)
            return
        if self.drop_dirs and _under_any(src, self.drop_dirs):
            yield Hint(HintKind.DROP, at=now)
            return
        if isinstance(event, DirMovedEvent):
            dest = _as_str(event.dest_path)
            if self.drop_dirs and _under_any(dest, self.drop_dirs):
                yield Hint(HintKind.DROP, at=now)
            else:
                yield Hint(HintKind.RESCAN, at=now)
            return
        if isinstance(event, DirCreatedEvent):
            yield Hint(HintKind.RESCAN, at=now)
            return
        if isinstance(event, FileMovedEvent):
            dest = _as_str(event.dest_path)
            if self.drop_dirs and _under_any(dest, self.drop_dirs):
                yield Hint(HintKind.DROP, at=now)
                return
            hint = self._chat_hint(dest, now)
            if hint is not None:
                yield hint
            return
        if isinstance(event, FileCreatedEvent | FileModifiedEvent | FileClosedEvent):
            hint = self._chat_hint(src, now)
            if hint is not None:
                yield hint

    def _chat_hint(self, path: str, now: float) -> Hint | None:
        if not path.endswith(".jsonl"):
            return None  # ST temp names, our temp names, images, cards: cheap early exit
        classified = layout.classify(self.root, Path(path))
        if classified.kind is not PathKind.CHAT or classified.chat is None:
            return None
        return Hint(HintKind.CHAT, classified.chat, now)

    def _hand_over(self, hint: Hint) -> None:
        # Never block the observer thread: a full queue means "rescan", not "wait".
        if self.closed:
            return
        try:
            self.queue.put_nowait(hint)
            self.delivered += 1
        except queue.Full:
            self.dropped += 1
            self.rescan_needed.set()
        self.signal()


def _watch_error(root: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return (
            f"cannot watch {str(root)!r}: the inotify watch limit is reached; raise it, e.g. "
            "`echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-inotify.conf "
            "&& sudo sysctl --system` (see `st-imagegen doctor`)"
        )
    if exc.errno == errno.EMFILE:
        return (
            f"cannot watch {str(root)!r}: too many inotify instances or open files "
            "(fs.inotify.max_user_instances, ulimit -n)"
        )
    return f"cannot watch {str(root)!r}: {exc.strerror or exc}"


def _as_str(path: str | bytes) -> str:
    return os.fsdecode(path)


def _under_any(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f + os.sep) for f in folders)


class Watcher:
    """The observer on the data root (recursive) and on the drop folders.

    :meth:`start` starts watchdog's threads; :meth:`run` (in a task group) moves hints from the
    observer's queue into the anyio stream :attr:`receive`. :meth:`is_alive` is false once
    watchdog's threads have died. :meth:`running` does all three for a block.
    """

    def __init__(
        self,
        root: Path,
        drop_dirs: Sequence[Path] = (),
        *,
        wake_dirs: Sequence[Path] = (),
        config_files: Sequence[Path] = (),
        buffer: int = DEFAULT_BUFFER,
        observer: BaseObserver | None = None,
        watch_root: bool = True,
    ) -> None:
        self.root = root
        self.watch_root = watch_root
        self.drop_dirs = tuple(drop_dirs)
        self.wake_dirs = tuple(wake_dirs)
        self.config_files = tuple(config_files)
        send, receive = anyio.create_memory_object_stream[Hint](STREAM_BUFFER)
        self._send = send
        self.receive: MemoryObjectReceiveStream[Hint] = receive
        self._observer: BaseObserver = observer if observer is not None else Observer()
        self.bridge = EventBridge(
            root, self.drop_dirs, buffer, self.wake_dirs, [f.absolute() for f in config_files]
        )
        self._started = False
        self._stopping = False
        self._dead_reported = False
        self._root_watch: ObservedWatch | None = None
        self._config_dirs: set[Path] = set()

    def start(self) -> None:
        """Schedule and start watchdog's threads; :class:`TavernError` when that fails.

        Without ``watch_root`` only the drop and wake folders are watched (the data root is
        polled: :mod:`daemon.engine.intake.poll`)."""
        try:
            if self.watch_root:
                self._root_watch = self._observer.schedule(
                    self.bridge, str(self.root), recursive=True, event_filter=WATCHED_EVENTS
                )
            for folder in (*self.drop_dirs, *self.wake_dirs):
                folder.mkdir(parents=True, exist_ok=True)
                self._observer.schedule(
                    self.bridge, str(folder), recursive=False, event_filter=WATCHED_EVENTS
                )
            # The config file's folder, not the file: editors and our writer replace the file.
            if self.config_files:
                self.config_files[0].absolute().parent.mkdir(parents=True, exist_ok=True)
            self._schedule_config_dirs()
            self._observer.daemon = True
            self._observer.start()
        except OSError as exc:
            raise TavernError(_watch_error(self.root, exc)) from None
        self._started = True
        # One idle thread per watchdog thread, blocked in join(): a death is reported at once,
        # with no periodic alive check.
        for thread in (self._observer, *self._observer.emitters):
            threading.Thread(
                target=self._report_death,
                args=(thread,),
                name="st-imagegen-watch-guard",
                daemon=True,
            ).start()
        log.debug("observer started", root=str(self.root), watch_root=self.watch_root)

    def _schedule_config_dirs(self) -> None:
        """Watch the folder of each config and key file that exists and is not watched yet (a
        key folder is never created here: a read-only config mount must not stop the daemon;
        it is watched once it exists, see :meth:`watch_config_files`)."""
        for folder in sorted({f.absolute().parent for f in self.config_files}):
            if folder in self._config_dirs or not folder.is_dir():
                continue
            self._observer.schedule(
                self.bridge, str(folder), recursive=False, event_filter=WATCHED_EVENTS
            )
            self._config_dirs.add(folder)

    def watch_config_files(self, files: Sequence[Path]) -> None:
        """Watch ``files`` (the config file first, then its key files) from now on: the files
        a new config names, the key folder the settings page created."""
        self.config_files = tuple(files)
        self.bridge.config_files = tuple(str(f.absolute()) for f in files)
        if not self._started:
            return
        try:
            self._schedule_config_dirs()
        except OSError as exc:  # the next reload tries again; the config file stays watched
            log.warning("a key file's folder cannot be watched", error=str(exc))

    def stop_root(self) -> None:
        """Stop watching the data root (the daemon switched to polling it)."""
        watch, self._root_watch = self._root_watch, None
        self.watch_root = False
        if watch is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(watch)

    def _report_death(self, thread: threading.Thread) -> None:
        thread.join()
        if not self._stopping:
            self.bridge.signal()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pump hints from the observer's queue into :attr:`receive` until cancelled.

        Sleeps until the observer signals (a hint, lost events, a dead thread): no polling."""
        task_status.started()
        reader = self.bridge.reader
        while not self._stopping:
            batch: list[Hint] = []
            with contextlib.suppress(queue.Empty):
                while len(batch) < STREAM_BUFFER:
                    batch.append(self.bridge.queue.get_nowait())
            if self.rescan_needed:
                batch.append(Hint(HintKind.RESCAN, at=time.monotonic()))
            if self._started and not self._dead_reported and not self.is_alive():
                self._dead_reported = True
                batch.append(Hint(HintKind.DEAD, at=time.monotonic()))
            try:
                for item in batch:
                    await self._send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            if len(batch) >= STREAM_BUFFER or not self.bridge.queue.empty():
                continue
            try:
                await anyio.wait_readable(reader)
                while reader.recv(4096):
                    pass
            except BlockingIOError:
                continue
            except (OSError, ValueError, anyio.ClosedResourceError):
                return  # the socket pair was closed: stopping

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Watcher]:
        """Start the observer and the pump for the block; stop both after it."""
        self.start()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.run)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await self.aclose()

    def is_alive(self) -> bool:
        """The observer thread and its emitters are running."""
        if not self._started or not self._observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in self._observer.emitters)

    @property
    def rescan_needed(self) -> bool:
        return self.bridge.rescan_needed.is_set()

    def clear_rescan(self) -> None:
        self.bridge.rescan_needed.clear()

    def stop(self) -> None:
        """Stop watchdog's threads (bounded wait) and close the stream. Blocking."""
        self._stopping = True
        self.bridge.closed = True
        self.bridge.signal()
        if self._started:
            self._observer.stop()
            self._observer.join(OBSERVER_STOP_TIMEOUT)
            self._started = False
        self._send.close()
        self.receive.close()
        self.bridge.close_signal()

    async def aclose(self) -> None:
        """:meth:`stop` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.stop)


class Settler:
    """Per-chat read timers: a hinted chat is due ``delay`` seconds after its latest hint (no
    delay by default: a save is read at once), or at a time set with :meth:`due_at` (a change
    held until the chat has been quiet for a while)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._due: dict[str, tuple[float, ChatRef]] = {}

    def touch(self, chat: ChatRef, now: float) -> None:
        self._due[chat.rel] = (now + self.delay, chat)

    def due_now(self, chat: ChatRef, now: float) -> None:
        """Due at once (a startup or rescan finding: the chat is not being written right now)."""
        self._due[chat.rel] = (now, chat)

    def due_at(self, chat: ChatRef, when: float) -> None:
        """Due at ``when`` (a later hint makes it due earlier again)."""
        self._due[chat.rel] = (when, chat)

    def next_deadline(self) -> float | None:
        return min((d for d, _ in self._due.values()), default=None)

    def pop_due(self, now: float) -> list[ChatRef]:
        ready = [(d, c) for d, c in self._due.values() if d <= now]
        ready.sort(key=lambda item: item[0])
        for _, chat in ready:
            del self._due[chat.rel]
        return [chat for _, chat in ready]

    def __len__(self) -> int:
        return len(self._due)


Signature = tuple[int, int, int]  # size, mtime_ns, inode
_Where = tuple[str, str | None, str]  # user, owner (None: group chats), file name


class StatIndex:
    """The last seen (size, mtime_ns, inode) of every chat; a rescan reports what differs.

    Chats are keyed by ``rel`` (the store key); :class:`ChatRef` objects are built only for the
    chats a caller asks about (:meth:`ref`), so a scan of 10,000 unchanged chats costs one
    ``scandir`` per folder and one ``stat`` per chat, nothing more.
    """

    def __init__(self, root: Path, users: Sequence[str] = ()) -> None:
        self.root = root
        self.users = tuple(users)
        self._seen: dict[str, Signature] = {}
        self._where: dict[str, _Where] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, rel: object) -> bool:
        return rel in self._seen

    def rels(self) -> list[str]:
        """Every known chat's ``rel``."""
        return list(self._seen)

    def scan(self) -> list[str]:
        """Walk the tree; return the ``rel`` of every chat new or changed since the last scan.

        Same rules as :func:`daemon.tavern.layout.iter_chats`: users from
        :func:`~daemon.tavern.layout.list_users`, regular ``*.jsonl`` files in
        ``chats/<character>/`` and ``group chats/``.
        """
        changed: list[str] = []
        seen = self._seen
        where = self._where
        present: set[str] = set()
        sep = os.sep  # plain strings on this hot path: no Path object per chat
        root = str(self.root)
        for user in layout.list_users(self.root, self.users):
            base = f"{root}{sep}{user}"
            chats_dir = f"{base}{sep}{layout.CHATS_DIR}"
            folders: list[tuple[str, str | None, str]] = []
            try:
                with os.scandir(chats_dir) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            rel = f"{user}/{layout.CHATS_DIR}/{entry.name}/"
                            folders.append((entry.path, entry.name, rel))
            except OSError:
                pass
            group_dir = f"{base}{sep}{layout.GROUP_CHATS_DIR}"
            folders.append((group_dir, None, f"{user}/{layout.GROUP_CHATS_DIR}/"))
            for folder, owner, prefix in folders:
                try:
                    with os.scandir(folder) as it:
                        for entry in it:
                            name = entry.name
                            if not name.endswith(".jsonl") or not entry.is_file(
                                follow_symlinks=False
                            ):
                                continue
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                continue  # vanished between listing and stat
                            rel = prefix + name
                            present.add(rel)
                            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
                            if seen.get(rel) != signature:
                                seen[rel] = signature
                                where[rel] = (user, owner, name)
                                changed.append(rel)
                except OSError:
                    continue
        if len(present) != len(seen):
            for rel in seen.keys() - present:
                del seen[rel]
                where.pop(rel, None)
        return changed

    def restat(self, rel: str) -> bool:
        """Stat one known chat again; whether its signature changed (it is recorded)."""
        where = self._where.get(rel)
        if where is None:
            return False
        user, owner, name = where
        base = self.root / user
        folder = base / layout.GROUP_CHATS_DIR if owner is None else base / layout.CHATS_DIR / owner
        try:
            st = (folder / name).lstat()
        except OSError:
            return False  # gone (or unreadable): the next full scan drops it
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self._seen.get(rel) == signature:
            return False
        self._seen[rel] = signature
        return True

    def ref(self, rel: str) -> ChatRef:
        """The :class:`ChatRef` of a chat found by :meth:`scan`."""
        user, owner, name = self._where[rel]
        return layout.chat_ref(self.root, user, owner, name)

    def size(self, rel: str) -> int | None:
        signature = self._seen.get(rel)
        return signature[0] if signature is not None else None

    def mtime_ns(self, rel: str) -> int | None:
        signature = self._seen.get(rel)
        return signature[1] if signature is not None else None

    def note(self, chat: ChatRef) -> None:
        """Record the current signature of ``chat`` (after processing it from an event)."""
        try:
            st = chat.path.stat()
        except OSError:
            self._seen.pop(chat.rel, None)
            self._where.pop(chat.rel, None)
            return
        self._seen[chat.rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
        self._where[chat.rel] = (chat.user, None if chat.is_group else chat.owner, chat.path.name)
