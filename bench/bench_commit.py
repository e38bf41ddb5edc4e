"""Cost of committing one real-sized image (a 1024x1024 PNG of about 1.4 MB) into a chat of
1 MB, 20 MB and 200 MB, and of reconciling that chat after a stale tab's save dropped our line.

Baselines measured in the same run, interleaved with the commits (so load from other
processes hits both alike), medians of several runs:

- the durable copy of the chat: ``shutil.copyfile`` into the chat's folder, fsync of the
  copy, fsync of the folder (a commit must write a new chat durably: temp file, fsync,
  rename, folder fsync);
- the durable write of the image: the PNG written to a new file in the image folder, fsync,
  fsync of the folder.

A commit reads the chat (a big one streamed), finds the reply and checks for our marker by
byte searches, writes the image file, and writes the new chat, marked ours (an extended
attribute, on disk with its bytes); one store transaction before the rename (the ledger entry
and the new version's identity; waited onto the disk only where the file system refuses the
mark) and one after (committed); the pending folder is removed. Reconcile after a stale save
does the same read plus the re-insert (no image); the change event our own write causes costs
the read (the mark, or the file's identity in the store, says the version is ours); a chat
with nothing of ours waiting is not read at all.

Targets: commit <= 3x (durable copy of the chat + durable write of the image), at every size;
reconcile after a stale save <= 3x and the event of our own write <= 2x the durable copy of
the chat; nothing waiting <= 0.1x a plain copy of the 20 MB chat.

``BENCH_COMMIT_SIZES=1,20`` (MB) leaves out the 200 MB chat (about a minute of the run).
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from unittest import mock

import anyio

from bench.common import chat_lines, check, check_at_most, fmt_time, real_png, workdir, write_chat
from daemon.config import Config
from daemon.engine.commit import apply
from daemon.engine.commit.apply import Committer
from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Job, JobState, ReplyKey, Store
from daemon.logs import configure_logging
from daemon.providers.decode import GeneratedImage
from daemon.tavern import layout
from daemon.tavern.chat import Message, parse_chat

SIZES_MB = (1, 20, 200)
RUNS = {1: 31, 20: 9, 200: 5}
"""Runs per size; each takes the median."""
COMMIT_TARGET = 3.0
RECONCILE_TARGET = 3.0
OURS_TARGET = 2.0
IDLE_TARGET = 0.1
IDLE_SIZE_MB = 20
USER = "default-user"
_BYTES_PER_MESSAGE = 668  # chat_lines: 100,000 messages are about 66.8 MB


def _sizes() -> tuple[int, ...]:
    wanted = os.environ.get("BENCH_COMMIT_SIZES", "")
    if not wanted.strip():
        return SIZES_MB
    return tuple(int(part) for part in wanted.split(",") if part.strip())


@dataclass
class _Times:
    copy: list[float] = field(default_factory=list)  # plain copy of the chat
    chat: list[float] = field(default_factory=list)  # durable copy of the chat
    image: list[float] = field(default_factory=list)  # durable write of the image
    commit: list[float] = field(default_factory=list)
    copied: list[float] = field(default_factory=list)  # commit, the image copied
    reconcile: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        values: list[float] = getattr(self, name)
        return statistics.median(values)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    _fsync_path(dst)
    _fsync_path(dst.parent)


def _durable_write(data: bytes, dst: Path) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_path(dst.parent)


def _baselines(path: Path, images: Path, png: bytes, times: _Times) -> None:
    """One run of each baseline; the files they make are removed untimed."""
    copy = path.with_name("baseline-copy.tmp")  # not .jsonl: no chat of ST's
    times.copy.append(_timed(lambda: shutil.copyfile(path, copy)))
    copy.unlink()
    times.chat.append(_timed(lambda: _durable_copy(path, copy)))
    copy.unlink()
    image = images / "baseline-image.png"
    times.image.append(_timed(lambda: _durable_write(png, image)))
    image.unlink()


def _no_link(*args: object, **kwargs: object) -> None:
    return None  # what link_image answers across file systems: the image is copied


def _st_save(path: Path, data: bytes) -> None:
    """Replace the chat as ST does (temp ``<name>.<digits>``, fsync, rename), an hour old."""
    temp = path.with_name(f"{path.name}.{time.monotonic_ns() % 2**32}")
    with temp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    temp.replace(path)
    old = time.time() - 3600
    os.utime(path, (old, old))


async def _accepted(
    store: Store, approval: Approval, ref: layout.ChatRef, reply: Message, png: bytes, n: int
) -> Job:
    job = await store.create_job(
        reply=ReplyKey(
            ref.user, ref.rel, reply.identity.name, reply.identity.first_date, str(reply.revision)
        ),
        character=ref.owner,
        is_group=False,
        speaker=reply.name,
        message_index=reply.index,
        prompt="a forest glade at dawn",
        state=JobState.PENDING,
        regen=n,
    )
    assert job is not None
    image = GeneratedImage(png, "png", 1024, 1024, "image/png")
    await anyio.to_thread.run_sync(approval.write_pending, job, [image], {})
    names = tuple(p.name for p in approval.kept_images(job.id))
    moved = await store.transition(job.id, JobState.PENDING, JobState.ACCEPTED, images=names)
    assert moved is not None
    return moved


async def _measure(root: Path, path: Path, state: Path, png: bytes, runs: int) -> _Times:
    pristine = await anyio.to_thread.run_sync(path.read_bytes)
    chat = parse_chat(pristine)  # once, for the job's fields (not timed)
    reply = next(m for m in reversed(chat.messages) if not m.is_user and m.marker is None)
    config = Config(data_root=root, state_dir=state)
    await anyio.to_thread.run_sync(lambda: state.mkdir(parents=True, exist_ok=True))
    store = await Store.open(config.db_path)
    approval = Approval(config.state_dir)
    committer = Committer(config, store, approval, root)
    ref = layout.classify(root, path).chat
    assert ref is not None
    images = root / USER / "user" / "images" / reply.name
    await anyio.to_thread.run_sync(partial(images.mkdir, parents=True, exist_ok=True))
    times = _Times()
    try:
        # Run 0 is not counted: after it the image folder exists and the process's one-off
        # start-up work (the temp cleanup of the image folders) is done, as in a running daemon.
        for n in range(runs + 1):
            if n == 1:
                times = _Times()
            # each run starts from the same chat, saved by "ST"
            await anyio.to_thread.run_sync(_st_save, path, pristine)
            await anyio.to_thread.run_sync(_baselines, path, images, png, times)
            job = await _accepted(store, approval, ref, reply, png, n)
            started = time.perf_counter()
            done = await committer.commit_job(job)
            times.commit.append(time.perf_counter() - started)
            assert done.state is JobState.COMMITTED, done.last_error

            await anyio.to_thread.run_sync(_st_save, path, pristine)  # a stale tab: ours gone
            started = time.perf_counter()
            again = await committer.reconcile_chat(ref)
            times.reconcile.append(time.perf_counter() - started)
            assert again == 1

            started = time.perf_counter()  # the change event our own re-insert causes
            assert await committer.reconcile_chat(ref) == 0
            times.ours.append(time.perf_counter() - started)

            # A tab reloads and saves (ST rewrites the header): a version of theirs holds it.
            theirs = (await anyio.to_thread.run_sync(path.read_bytes)).replace(
                b'"tainted":true', b'"tainted":true,"note_prompt":"rain"', 1
            )
            await anyio.to_thread.run_sync(_st_save, path, theirs)
            await committer.reconcile_chat(ref)
            started = time.perf_counter()
            assert await committer.reconcile_chat(ref) == 0  # nothing open: no read at all
            times.idle.append(time.perf_counter() - started)

            # The image copied, as with the state dir on another file system (no hard link).
            await anyio.to_thread.run_sync(_st_save, path, pristine)
            job = await _accepted(store, approval, ref, reply, png, runs + 1 + n)
            with mock.patch.object(apply, "link_image", _no_link):
                started = time.perf_counter()
                done = await committer.commit_job(job)
                times.copied.append(time.perf_counter() - started)
            assert done.state is JobState.COMMITTED, done.last_error
            theirs = (await anyio.to_thread.run_sync(path.read_bytes)).replace(
                b'"tainted":true', b'"tainted":true,"note_prompt":"rain"', 1
            )
            await anyio.to_thread.run_sync(_st_save, path, theirs)
            await committer.reconcile_chat(ref)  # held by a version of theirs: closed
    finally:
        await store.close()
    return times


def _one_size(tmp: Path, megabytes: int, png: bytes) -> tuple[bool, _Times]:
    root = tmp / f"data-{megabytes}"
    path = root / USER / "chats" / "Alice" / "Alice - 2026-01-01@00h00m00s000ms.jsonl"
    path.parent.mkdir(parents=True)
    (root / USER / "characters").mkdir()
    size = write_chat(path, chat_lines(megabytes * 1_000_000 // _BYTES_PER_MESSAGE))
    runs = RUNS.get(megabytes, 5)
    times = anyio.run(_measure, root, path, tmp / f"state-{megabytes}", png, runs)
    floor = times.median("chat") + times.median("image")
    print(
        f"  chat {size / 1e6:.1f} MB, image {len(png) / 1e6:.2f} MB "
        f"(1024x1024 PNG); medians of {runs} runs"
    )
    rows = [
        ("copyfile of the chat", times.median("copy")),
        ("durable copy of the chat (copy, fsync, dir fsync)", times.median("chat")),
        ("durable write of the image (write, fsync, dir fsync)", times.median("image")),
        ("commit_job (image + one message)", times.median("commit")),
        ("commit_job, the image copied (state dir elsewhere)", times.median("copied")),
        ("reconcile after a stale save (re-insert)", times.median("reconcile")),
        ("reconcile of our own write (read; ours by its mark)", times.median("ours")),
    ]
    for label, seconds in rows:
        print(f"    {label:<56} {fmt_time(seconds):>10}")
    ok = check_at_most(
        f"{megabytes} MB: commit / (durable chat copy + image write)",
        times.median("commit"),
        floor,
        COMMIT_TARGET,
    )
    ok &= check_at_most(
        f"{megabytes} MB: reconcile after stale save / durable copy",
        times.median("reconcile"),
        times.median("chat"),
        RECONCILE_TARGET,
    )
    ok &= check_at_most(
        f"{megabytes} MB: reconcile of our own write / durable copy",
        times.median("ours"),
        times.median("chat"),
        OURS_TARGET,
    )
    ok &= check_at_most(
        f"{megabytes} MB: the same, image copied / (chat + image)",
        times.median("copied"),
        floor,
        COMMIT_TARGET,
    )
    check(
        f"{megabytes} MB: commit / durable chat copy (information)",
        times.median("commit") / times.median("chat"),
        "-",
        True,
    )
    return ok, times


def main() -> int:
    # Logged as the daemon logs (JSON lines when stderr is no terminal), not structlog's
    # default development renderer.
    configure_logging(Config(data_root=Path(), state_dir=Path()).log)
    png = real_png()
    ok = True
    measured: dict[int, _Times] = {}
    with workdir() as tmp:
        for megabytes in _sizes():
            size_ok, measured[megabytes] = _one_size(tmp, megabytes, png)
            ok &= size_ok
            shutil.rmtree(tmp / f"data-{megabytes}")  # room for the next size
    idle_size = IDLE_SIZE_MB if IDLE_SIZE_MB in measured else max(measured)
    times = measured[idle_size]
    print(
        f"  reconcile with nothing waiting: {fmt_time(times.median('idle'))} "
        f"(no read; against the plain copy of the {idle_size} MB chat)"
    )
    ok &= check_at_most(
        "reconcile, nothing waiting / copyfile",
        times.median("idle"),
        times.median("copy"),
        IDLE_TARGET,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
