"""The approval folders: ``pending/<job-id>/`` previews and the ``accepted/ rejected/ regenerate/``
drop folders.

A pending folder holds ``image-1.png``, ``image-2.webp``, … (the real format as extension) and
``job.json`` (prompt, chat, reply excerpt, provider, …; never a secret). It is built in
``pending/.tmp-<id>-<rand>/`` (every file fsynced), then renamed into place and the folder
fsynced, so a half-written folder is never visible; running a job twice swaps the new folder in
atomically (the old version waits under a dot name until :meth:`Approval.finish`).

The user acts by moving a job folder into a drop folder (same as ``accept``/``reject``/``regen``):

- ``accepted/<id>/``: accept; images deleted from the folder before the move are not kept.
- ``rejected/<id>/``: reject.
- ``regenerate/<id>/``: new images. If the folder holds a ``prompt.txt``, its text is the new
  prompt; otherwise the ``prompt`` in ``job.json`` (edited or not) is used.

Names in drop folders that are not job ids, symlinks and plain files are ignored and left alone
(logged once). Synchronous: callers run these methods in a worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import enum
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import SecretStr

from daemon.engine.jobs.folders import (
    DROP_FOLDER_NAMES,
    discard_images,
    find_folder,
    kept_images,
)
from daemon.engine.jobs.folders import check_id as _check_id
from daemon.engine.jobs.folders import is_real_dir as _is_real_dir
from daemon.engine.store import Job
from daemon.logs import is_secret_key
from daemon.tavern.reaper import REAPER

__all__ = [
    "DROP_FOLDERS",
    "JOB_FILE",
    "PROMPT_FILE",
    "REFUSED_FILE",
    "Action",
    "Approval",
    "ImageLike",
]

log = structlog.get_logger("st_imagegen.approval")

JOB_FILE = "job.json"
PROMPT_FILE = "prompt.txt"
REFUSED_FILE = "REFUSED.txt"
MAX_PROMPT_FILE = 64 * 1024
"""A ``prompt.txt`` larger than this is ignored (it is not a prompt)."""
STALE_TEMP_SECONDS = 3600.0

SHELF_NAME = ".superseded"
SHELF_SECONDS = 7 * 86400.0
"""How long a superseded job's images wait on the shelf for a swipe back to their text."""

TRASH_NAME = ".trash"
TRASH_DAYS = 7.0
"""How long a rejected job's images wait in the trash for Undo / Restore (``limits.trash_days``)."""

_JOB_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


class Action(enum.StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    REGENERATE = "regenerate"


DROP_FOLDERS: Mapping[str, Action] = dict(
    zip(DROP_FOLDER_NAMES, (Action.ACCEPT, Action.REJECT, Action.REGENERATE), strict=True)
)


class ImageLike(Protocol):
    """What a generated image gives us (``daemon.providers`` ``GeneratedImage``)."""

    @property
    def data(self) -> bytes: ...

    @property
    def format(self) -> str: ...


def _ext(image: ImageLike) -> str:
    fmt = str(image.format).lower()
    ext = {"jpeg": "jpg"}.get(fmt, fmt)
    if not re.fullmatch(r"[a-z0-9]{1,5}", ext):
        raise ValueError(f"not an image format: {image.format!r}")
    return ext


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _scrub(value: Any) -> Any:
    """Drop secret keys (the logs' rule) and ``SecretStr`` values from what goes into job.json."""
    if isinstance(value, Mapping):
        return {
            str(k): _scrub(v)
            for k, v in value.items()
            if not is_secret_key(str(k)) and not isinstance(v, SecretStr)
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


_RENAME_EXCHANGE = 2
_libc: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name, use_errno=True) if name else False
        except OSError:
            _libc = False
    func = getattr(_libc, "renameat2", None) if _libc else None
    if func is None:
        return False
    at_fdcwd = -100
    result = func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


class Approval:
    """The pending and drop folders under ``state_dir`` (created if missing)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.pending_dir = self.state_dir / "pending"
        self.drop_dirs = {action: self.state_dir / name for name, action in DROP_FOLDERS.items()}
        for folder in (self.pending_dir, *self.drop_dirs.values()):
            folder.mkdir(parents=True, exist_ok=True)
        self._reported: set[tuple[str, str]] = set()
        self._arrivals: set[tuple[str, str, int, int]] = set()
        # Set by drop_actions: when (wall clock) the first folder still being copied in will
        # have settled; None when none is.
        self.settling_until: float | None = None

    def __repr__(self) -> str:
        return f"Approval({str(self.state_dir)!r})"

    # --- where things are ------------------------------------------------------------------

    def pending_path(self, job_id: str) -> Path:
        return self.pending_dir / _check_id(job_id)

    def drop_path(self, action: Action, job_id: str) -> Path:
        return self.drop_dirs[action] / _check_id(job_id)

    def find(self, job_id: str) -> Path | None:
        """The job's folder wherever it is now (pending first, then the drop folders)."""
        return find_folder(self.state_dir, job_id)

    def read_info(self, job_id: str) -> dict[str, Any] | None:
        """The job folder's ``job.json`` (``None`` if missing or not valid JSON)."""
        folder = self.find(job_id)
        if folder is None:
            return None
        return _read_json(folder / JOB_FILE)

    # --- writing a pending folder ------------------------------------------------------------

    def write_pending(
        self, job: Job, images: Sequence[ImageLike], info: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``pending/<id>/`` atomically: images and ``job.json``. Returns the folder.

        A folder already there for this job (the job ran twice) is replaced atomically.
        """
        if not images:
            raise ValueError("write_pending needs at least one image")
        target = self.pending_path(job.id)
        temp = self.pending_dir / f".tmp-{job.id}-{secrets.token_hex(4)}"
        temp.mkdir(mode=0o755)
        try:
            names = []
            described = []
            for n, image in enumerate(images, start=1):
                name = f"image-{n}.{_ext(image)}"
                _write_file(temp / name, bytes(image.data))
                names.append(name)
                described.append(
                    {
                        "file": name,
                        "format": str(image.format),
                        "width": getattr(image, "width", None),
                        "height": getattr(image, "height", None),
                        "bytes": len(image.data),
                    }
                )
            document = self._job_document(job, described, info or {})
            text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
            _write_file(temp / JOB_FILE, text.encode("utf-8"))
            _fsync_dir(temp)
            self._swap_in(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        _fsync_dir(self.pending_dir)
        log.debug("pending folder written", job=job.id, folder=str(target), images=len(names))
        return target

    def _swap_in(self, temp: Path, target: Path) -> None:
        if not os.path.lexists(target):
            try:
                temp.rename(target)
                return
            except OSError as exc:
                if not os.path.lexists(target):
                    raise
                log.debug("pending folder appeared meanwhile", error=str(exc))
        # The old version is not emptied here: a reader that opened it just before the swap
        # would see it half gone. It stays under a dot name until finish() or cleanup_temps().
        if _exchange(temp, target):
            return  # the old folder is now at the temp name
        # No atomic exchange (not Linux): move the old one aside, then ours in.
        aside = self.pending_dir / f".old-{target.name}-{secrets.token_hex(4)}"
        target.rename(aside)
        temp.rename(target)

    def _job_document(
        self, job: Job, images: list[dict[str, Any]], info: Mapping[str, Any]
    ) -> dict[str, Any]:
        extra = _scrub(dict(info))
        negative = extra.pop("negative", None) or job.meta.get("negative", "")
        provider = extra.pop("provider", "")
        model = extra.pop("model", "")
        state = self.state_dir
        return {
            "job": job.id,
            "prompt": job.prompt or "",
            "negative": negative if isinstance(negative, str) else "",
            "user": job.user,
            "chat": job.chat,
            "character": job.character,
            "speaker": job.speaker,
            "is_group": job.is_group,
            "message_index": job.message_index,
            "excerpt": job.excerpt,
            "revision": job.revision,
            "provider": provider,
            "model": model,
            "created": job.created_at.isoformat(),
            "source": job.source,
            "images": images,
            "info": extra,
            "how_to": {
                "accept": (
                    f"st-imagegen accept {job.id}   (or move this folder into {state / 'accepted'})"
                ),
                "keep_some": (
                    "delete the images you do not want from this folder, then accept; or "
                    f"st-imagegen accept {job.id} --keep 1,3"
                ),
                "reject": (
                    f"st-imagegen reject {job.id}   (or move this folder into {state / 'rejected'})"
                ),
                "regenerate": (
                    f'st-imagegen regen {job.id} [--prompt "new prompt"]   (or move this folder '
                    f"into {state / 'regenerate'}; to change the prompt, write it into "
                    f"{PROMPT_FILE} in this folder, or edit the prompt above, before moving)"
                ),
            },
        }

    # --- reading a job folder ---------------------------------------------------------------

    def kept_images(self, job_id: str) -> list[Path]:
        """The images still in the job's folder (see :func:`folders.kept_images`)."""
        return kept_images(self.state_dir, job_id)

    def discard_images(self, job_id: str, names: Iterable[str]) -> int:
        """Remove the named images from the job's folder (see :func:`folders.discard_images`)."""
        return discard_images(self.state_dir, job_id, names)

    def drop_prompt(self, job_id: str) -> str | None:
        """The prompt for a folder dropped into ``regenerate/``: ``prompt.txt`` if present and
        not empty, else ``job.json``'s ``prompt``; ``None`` when neither gives one."""
        folder = self.drop_path(Action.REGENERATE, job_id)
        if not _is_real_dir(folder):
            return None
        prompt_file = folder / PROMPT_FILE
        try:
            st = prompt_file.lstat()
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                log.warning("ignored prompt file: not a regular file", job=job_id)
            elif st.st_size > MAX_PROMPT_FILE:
                log.warning("ignored prompt file: too large", job=job_id, bytes=st.st_size)
            else:
                text = prompt_file.read_bytes().decode("utf-8", "replace").strip()
                if text:
                    return text
        document = _read_json(folder / JOB_FILE)
        if document is None:
            return None
        prompt = document.get("prompt")
        return prompt.strip() if isinstance(prompt, str) and prompt.strip() else None

    # --- drop folders ----------------------------------------------------------------------

    def drop_actions(
        self, *, settle: float = 0.0, now: float | None = None
    ) -> list[tuple[str, Action]]:
        """Job folders newly moved into the drop folders, oldest job first.

        Each arrival is reported once per :class:`Approval` (a folder moved out and back in is
        a new arrival). Unknown names, symlinks and plain files are ignored (logged once, left
        alone). With ``settle``, a folder changed within that many seconds (still being copied
        in) waits; a moved folder keeps its old times."""
        clock = time.time() if now is None else now
        actions: list[tuple[str, Action]] = []
        present: set[tuple[str, str, int, int]] = set()
        self.settling_until = None
        for action, folder in self.drop_dirs.items():
            try:
                with os.scandir(folder) as entries:
                    listed = sorted(entries, key=lambda e: e.name)
            except FileNotFoundError:
                folder.mkdir(parents=True, exist_ok=True)
                continue
            for entry in listed:
                name = entry.name
                if name.startswith("."):
                    continue  # hidden files, file-manager temp names
                if entry.is_symlink():
                    self._ignore(folder, name, "a symlink")
                elif not entry.is_dir(follow_symlinks=False):
                    self._ignore(folder, name, "not a folder")
                elif not _JOB_ID.match(name):
                    self._ignore(folder, name, "not a job folder name")
                elif settle and (newest := _newest_mtime(Path(entry.path))) > clock - settle:
                    ripe = newest + settle  # look again then (a timer, not a poll)
                    if self.settling_until is None or ripe < self.settling_until:
                        self.settling_until = ripe
                    continue
                else:
                    st = entry.stat(follow_symlinks=False)
                    arrival = (action.value, name, st.st_ino, st.st_ctime_ns)
                    present.add(arrival)
                    if arrival not in self._arrivals:
                        actions.append((name, action))
        self._arrivals = present  # forget folders that went away
        actions.sort(key=lambda item: item[0])
        return actions

    def _ignore(self, folder: Path, name: str, why: str) -> None:
        key = (str(folder), name)
        if key in self._reported:
            return
        self._reported.add(key)
        log.warning(
            "ignored an entry in a drop folder (left alone)",
            folder=str(folder),
            name=name,
            reason=why,
        )

    def refuse_drop(self, job_id: str, reason: str) -> Path | None:
        """Undo a refused drop: move the folder back to ``pending/`` with a ``REFUSED.txt``
        saying why, so it is not acted on again. Returns the new place (None if gone)."""
        for folder in self.drop_dirs.values():
            source = folder / _check_id(job_id)
            if not _is_real_dir(source):
                continue
            target = self.pending_path(job_id)
            if os.path.lexists(target):
                target = self.pending_dir / f"{job_id}.refused-{secrets.token_hex(3)}"
            source.rename(target)
            note = target / REFUSED_FILE
            with contextlib.suppress(OSError):
                note.write_text(
                    f"This folder was moved to {folder.name}/ but that could not be done:\n"
                    f"{reason}\n",
                    encoding="utf-8",
                )
            log.info("drop refused, folder moved back", job=job_id, folder=str(target))
            return target
        return None

    # --- the shelf: images of superseded jobs, for a swipe back ------------------------------

    @property
    def shelf_dir(self) -> Path:
        return self.state_dir / SHELF_NAME

    def shelve(self, job_id: str) -> bool:
        """Move a superseded job's pending folder to the shelf (out of the user's sight), so a
        swipe back to its text gets the images again without a second API call. Shelved
        folders older than :data:`SHELF_SECONDS` are removed. True if a folder was shelved."""
        source = self.pending_path(job_id)
        shelved = False
        if _is_real_dir(source):
            self.shelf_dir.mkdir(exist_ok=True)
            target = self.shelf_dir / job_id
            if _is_real_dir(target):
                _remove_tree(target)
            try:
                source.rename(target)
                os.utime(target)  # the shelf's clock starts now
                shelved = True
            except FileNotFoundError:
                pass
        self.finish(job_id)  # drop-folder copies and leftovers
        self.prune_shelf()
        return shelved

    def unshelve(self, job_id: str) -> bool:
        """Put a shelved folder back in ``pending/``; False if there is none (or a pending
        folder is already there)."""
        source = self.shelf_dir / _check_id(job_id)
        target = self.pending_path(job_id)
        if not _is_real_dir(source) or os.path.lexists(target):
            return False
        try:
            source.rename(target)
        except FileNotFoundError:
            return False
        _fsync_dir(self.pending_dir)
        return True

    def prune_shelf(self, *, older_than: float = SHELF_SECONDS) -> int:
        """Remove shelved folders older than ``older_than`` seconds."""
        return _prune(self.shelf_dir, older_than)

    # --- the trash: a rejected job's images, for Undo and Restore ----------------------------

    @property
    def trash_dir(self) -> Path:
        return self.state_dir / TRASH_NAME

    def trash_path(self, job_id: str) -> Path:
        return self.trash_dir / _check_id(job_id)

    def trash(self, job_id: str, *, days: float = TRASH_DAYS) -> bool:
        """Move a rejected job's folder (pending or a drop folder) to the trash, where it waits
        ``days`` for a restore; older trashed folders go. True if a folder was trashed."""
        source = self.find(job_id)
        trashed = False
        if source is not None:
            self.trash_dir.mkdir(exist_ok=True)
            target = self.trash_path(job_id)
            if _is_real_dir(target):
                _remove_tree(target)
            try:
                source.rename(target)
                os.utime(target)  # the trash's clock starts now
                trashed = True
            except FileNotFoundError:
                pass
        self.finish(job_id)  # drop-folder copies and leftovers
        self.prune_trash(older_than=days * 86400.0)
        return trashed

    def untrash(self, job_id: str) -> bool:
        """Put a trashed folder back in ``pending/``; False if it is gone (or one is there)."""
        source = self.trash_path(job_id)
        target = self.pending_path(job_id)
        if not _is_real_dir(source) or os.path.lexists(target):
            return False
        try:
            source.rename(target)
        except FileNotFoundError:
            return False
        _fsync_dir(self.pending_dir)
        return True

    def prune_trash(self, *, older_than: float = TRASH_DAYS * 86400.0) -> int:
        """Remove trashed folders older than ``older_than`` seconds."""
        return _prune(self.trash_dir, older_than)

    # --- finishing ----------------------------------------------------------------------------

    def finish(self, job_id: str, *, later: bool = False) -> int:
        """Remove the job's folder wherever it is (after commit or reject); returns how many
        folders went. Leftover temp folders and old versions of the job go too.

        ``later``: each folder is renamed out of the way here (it is gone from ``pending/``
        when this returns) and deleted by the reaper thread (:mod:`daemon.tavern.reaper`),
        off the path of a commit the user waits for; one a crash leaves is a ``.trash-``
        folder, removed at the next start (:meth:`cleanup_temps`)."""
        _check_id(job_id)
        removed = 0
        trashed: list[Path] = []
        for folder in (self.pending_dir, *self.drop_dirs.values()):
            path = folder / job_id
            if _is_real_dir(path):
                trash = self.pending_dir / f".trash-{job_id}-{secrets.token_hex(4)}"
                try:
                    path.rename(trash)
                except FileNotFoundError:
                    continue
                trashed.append(trash)
                removed += 1
        work = partial(_remove_finished, self.pending_dir, job_id, trashed)
        if later:
            REAPER.later(work)
        else:
            work()
        return removed

    def cleanup_temps(self, *, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Remove folders left by a crash: every ``.trash-`` folder (it was being deleted), and
        temp folders and old versions older than ``older_than`` s (a writer or a reader may
        still use a recent one)."""
        limit = time.time() - older_than
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.pending_dir):
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if entry.name.startswith(".trash-") or (
                    entry.name.startswith((".tmp-", ".old-"))
                    and entry.stat(follow_symlinks=False).st_mtime < limit
                ):
                    _remove_tree(Path(entry.path))
                    removed += 1
        return removed


def _remove_finished(pending: Path, job_id: str, trashed: list[Path]) -> None:
    """Delete a finished job's trashed folders and what earlier runs left of it."""
    for trash in trashed:
        _remove_tree(trash)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(pending):
            if entry.name.startswith(
                (f".tmp-{job_id}-", f".old-{job_id}-", f".trash-{job_id}-")
            ) and entry.is_dir(follow_symlinks=False):
                _remove_tree(Path(entry.path))


def _prune(folder: Path, older_than: float) -> int:
    """Remove the folders in ``folder`` last touched more than ``older_than`` seconds ago."""
    limit = time.time() - older_than
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and (
                    entry.stat(follow_symlinks=False).st_mtime < limit
                ):
                    _remove_tree(Path(entry.path))
                    removed += 1
    return removed


def _newest_mtime(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def _remove_tree(path: Path) -> None:
    """Remove a folder we own (never follows symlinks inside it)."""
    if path.is_symlink():
        path.unlink()
        return
    shutil.rmtree(path, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_size > 1024 * 1024:
            return None
        value = json.loads(path.read_bytes().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
