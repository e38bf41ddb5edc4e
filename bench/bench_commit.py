"""Cost of committing one image into a 100,000-message (about 60 MB) chat, and of reconciling
that chat after a stale tab's save dropped our message.

Baselines measured in the same run: a plain copy of the chat (``shutil.copyfile``) and a durable
one (copy + fsync). A commit must write a durable new copy of the chat (temp file, fsync,
rename), so the durable copy is the floor it is held to. Besides that copy a commit reads the
chat, hashes it (the hash tells our own versions from ST's), finds the reply and checks for
our marker by byte searches (only those lines are parsed, while the hash runs in another
thread), writes the image file and updates the store. Reconcile after a stale save does the
same read plus the re-insert; the change event our own write causes costs the read and the
hash (its content is the only proof that the version on disk is ours); a chat with nothing of
ours waiting is not read at all.

Targets: commit and reconcile after a stale save <= 3x the durable copy; the event of our own
write <= 2x the durable copy; nothing waiting <= 0.1x a plain copy. The full parse every line
needed before (about 100x a copy) is printed for comparison.
"""

from __future__ import annotations

import io
import os
import time
from functools import partial
from pathlib import Path

import anyio
from PIL import Image

from bench.common import (
    best_of,
    chat_lines,
    check,
    check_at_most,
    copy_file,
    copy_file_durably,
    fmt_time,
    workdir,
    write_chat,
)
from daemon.config import Config
from daemon.engine.commit.apply import Committer
from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Job, JobState, Store
from daemon.jobstate import ReplyKey
from daemon.providers.decode import GeneratedImage
from daemon.tavern import layout
from daemon.tavern.chat import Message, parse_chat
from daemon.tavern.write import read_for_edit

MESSAGES = 100_000
REPEAT = 5
COMMIT_TARGET = 3.0
RECONCILE_TARGET = 3.0
OURS_TARGET = 2.0
IDLE_TARGET = 0.1
USER = "default-user"


def _png() -> GeneratedImage:
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (30, 120, 200)).save(buf, format="PNG")
    return GeneratedImage(buf.getvalue(), "png", 512, 512, "image/png")


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
    store: Store, approval: Approval, path: Path, root: Path, reply: Message, n: int
) -> Job:
    ref = layout.classify(root, path).chat
    assert ref is not None
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
    await anyio.to_thread.run_sync(approval.write_pending, job, [_png()], {})
    names = tuple(p.name for p in approval.kept_images(job.id))
    moved = await store.transition(job.id, JobState.PENDING, JobState.ACCEPTED, images=names)
    assert moved is not None
    return moved


async def _measure(root: Path, path: Path, state: Path) -> dict[str, float]:
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
    commit_best = reconcile_best = ours_best = idle_best = float("inf")
    try:
        for n in range(REPEAT):
            _st_save(path, pristine)  # each run starts from the same chat, saved by "ST"
            job = await _accepted(store, approval, path, root, reply, n)
            started = time.perf_counter()
            done = await committer.commit_job(job)
            commit_best = min(commit_best, time.perf_counter() - started)
            assert done.state is JobState.COMMITTED, done.last_error

            _st_save(path, pristine)  # a stale tab's save: our line is gone
            started = time.perf_counter()
            again = await committer.reconcile_chat(ref)
            reconcile_best = min(reconcile_best, time.perf_counter() - started)
            assert again == 1

            started = time.perf_counter()  # the change event our own re-insert causes
            assert await committer.reconcile_chat(ref) == 0
            ours_best = min(ours_best, time.perf_counter() - started)

            # A tab reloads and saves (ST rewrites the header): a version of theirs holds it.
            theirs = (await anyio.to_thread.run_sync(path.read_bytes)).replace(
                b'"tainted":true', b'"tainted":true,"note_prompt":"rain"', 1
            )
            _st_save(path, theirs)
            await committer.reconcile_chat(ref)
            started = time.perf_counter()
            assert await committer.reconcile_chat(ref) == 0  # nothing open: no read at all
            idle_best = min(idle_best, time.perf_counter() - started)
    finally:
        await store.close()
    return {
        "commit": commit_best,
        "reconcile": reconcile_best,
        "ours": ours_best,
        "idle": idle_best,
    }


def main() -> int:
    with workdir() as tmp:
        root = tmp / "data"
        path = root / USER / "chats" / "Alice" / "Alice - 2026-01-01@00h00m00s000ms.jsonl"
        path.parent.mkdir(parents=True)
        (root / USER / "characters").mkdir()
        size = write_chat(path, chat_lines(MESSAGES))
        print(f"  chat: {MESSAGES:,} messages, {size / 1e6:.1f} MB")

        dst = tmp / "copy.jsonl"

        copyfile = partial(copy_file, path, dst)
        copyfile_durable = partial(copy_file_durably, path, dst)

        copyfile()  # warm the page cache
        t_copy = best_of(copyfile, repeat=5)
        t_copy_sync = best_of(copyfile_durable, repeat=5)
        t_read = best_of(lambda: read_for_edit(path), repeat=3)
        t_parse = best_of(lambda: parse_chat(path.read_bytes()).messages, repeat=1)
        timings = anyio.run(_measure, root, path, tmp / "state")

        rows = [
            ("shutil.copyfile", t_copy),
            ("shutil.copyfile + fsync (durable copy)", t_copy_sync),
            ("read_for_edit (read + hash, no parse)", t_read),
            ("full parse of every line (the old way)", t_parse),
            ("commit_job (image + one message)", timings["commit"]),
            ("reconcile after a stale save (re-insert)", timings["reconcile"]),
            ("reconcile of our own write (read + hash)", timings["ours"]),
            ("reconcile with nothing waiting", timings["idle"]),
        ]
        for label, seconds in rows:
            print(f"  {label:<44} {fmt_time(seconds):>10}")
        ok = check_at_most(
            "commit / (copyfile + fsync)", timings["commit"], t_copy_sync, COMMIT_TARGET
        )
        ok &= check_at_most(
            "reconcile after stale save / (copyfile + fsync)",
            timings["reconcile"],
            t_copy_sync,
            RECONCILE_TARGET,
        )
        ok &= check_at_most(
            "reconcile of our own write / (copyfile + fsync)",
            timings["ours"],
            t_copy_sync,
            OURS_TARGET,
        )
        ok &= check_at_most(
            "reconcile, nothing waiting / copyfile", timings["idle"], t_copy, IDLE_TARGET
        )
        check("commit / copyfile (no fsync; information)", timings["commit"] / t_copy, "-", True)
        check(
            "reconcile after stale save / copyfile (information)",
            timings["reconcile"] / t_copy,
            "-",
            True,
        )
        check("full parse / copyfile (information)", t_parse / t_copy, "-", True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
