"""Reconcile: an open tab that saves its stale copy drops our message; we put it back until a
version written by ST has contained it; after that a disappearance is the user's choice."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.engine.commit.apply import (
    REASON_CHAT_GONE,
    REASON_DELETED_AFTER_SHOWN,
    REASON_REPLY_CHANGED,
    REASON_REPLY_GONE,
)
from daemon.engine.store import JobState
from daemon.engine.store.blocking import Blocking
from daemon.tavern import write as tavern_write
from daemon.tavern.chat import parse_chat
from daemon.tavern.write import FileVersion, read_for_edit
from tests.conftest import count_parsed_lines
from tests.engine.test_commit_support import (
    USER,
    Harness,
    chat_path,
    markers,
    ref_of,
)
from tests.stsim import STSim

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _path(h: Harness, group: bool, version: str) -> Path:
    if group:
        return h.root / USER / "group chats" / f"17000000{version.replace('.', '')}.jsonl"
    return chat_path(h.root, name=f"Alice - {version}")


async def _committed_with_stale_tab(
    h: Harness, *, version: str = "1.18", group: bool = False
) -> tuple[STSim, Path, Any]:
    """A tab that saved a reply, then our commit behind its back (the tab does not know)."""
    path = _path(h, group, version)
    tab = STSim.create(path, version=version, group=group)
    tab.send_user("Describe the scene.").save()
    tab.reply("Bob" if group else "Alice", "The glade glows.").save()
    job = await h.accepted(path)
    done = await h.committer.commit_job(job)
    assert done.state is JobState.COMMITTED
    assert markers(path) == [job.id]
    assert tab.find_marker(job.id) is None
    return tab, path, job


async def _entry(h: Harness, job_id: str) -> Any:
    entry = await h.store.ledger_get(job_id)
    assert entry is not None
    return entry


@pytest.mark.parametrize("version", ["1.12", "1.14", "1.18"])
@pytest.mark.parametrize("group", [False, True], ids=["single", "group"])
async def test_stale_tab_reinsert_then_acknowledge_then_user_delete(
    harness: Harness, version: str, group: bool
) -> None:
    h = harness
    tab, path, job = await _committed_with_stale_tab(h, version=version, group=group)
    ref = ref_of(h.root, path)
    integrity = parse_chat(path.read_bytes()).integrity

    # 1. The stale tab saves (same integrity slug): our line is silently dropped ...
    tab.narrator("It starts to rain.").save()
    assert markers(path) == []
    # ... and put back, right after the reply, with the tab's new line kept.
    assert await h.committer.reconcile_chat(ref) == 1
    chat = parse_chat(path.read_bytes())
    ours = chat.find_marker(job.id)
    assert ours is not None
    assert chat.messages[ours.index - 1].mes == "The glade glows."
    assert chat.messages[-1].mes == "It starts to rain."
    assert chat.integrity == integrity  # never touched
    assert not (await _entry(h, job.id)).acknowledged

    # Reconciling again (our own write is the current file) changes nothing.
    data = path.read_bytes()
    assert await h.committer.reconcile_chat(ref) == 0
    assert path.read_bytes() == data

    # 2. Still stale: dropped again, re-inserted again, never twice.
    tab.send_user("Go on.").save()
    assert await h.committer.reconcile_chat(ref) == 1
    assert markers(path) == [job.id]

    # 3. The tab reloads (F5) and saves: ST's version contains it -> acknowledged.
    tab.load()
    assert tab.find_marker(job.id) is not None
    tab.send_user("Thanks.").save()
    assert await h.committer.reconcile_chat(ref) == 0
    assert (await _entry(h, job.id)).acknowledged
    assert markers(path) == [job.id]

    # 4. The user deletes the image message and the tab saves: it stays deleted.
    index = next(i for i, m in enumerate(tab.messages) if m is tab.find_marker(job.id))
    tab.delete(index).save()
    assert await h.committer.reconcile_chat(ref) == 0
    assert markers(path) == []
    assert await h.store.chats_with_open_ledger() == set()  # nothing left to watch
    tab.send_user("One more.").save()
    assert await h.committer.reconcile_chat(ref) == 0
    assert markers(path) == []
    assert [m["mes"] for m in tab.messages] == [
        m.mes for m in parse_chat(path.read_bytes()).messages
    ]


async def test_regenerate_after_acknowledge_removes_the_image_for_good(harness: Harness) -> None:
    """ST's Regenerate removes the last non-user message: our image message. Left out."""
    h = harness
    tab, path, job = await _committed_with_stale_tab(h)
    ref = ref_of(h.root, path)
    tab.load()
    tab.send_user("Hm.").save()
    assert await h.committer.reconcile_chat(ref) == 0
    assert (await _entry(h, job.id)).acknowledged
    # A second image, for the new reply, keeps the chat under watch (so it is read again).
    tab.messages.pop()  # the user's "Hm." is deleted again
    tab.regenerate("A brand new reply.").save()  # removes the last non-user message: ours
    assert markers(path) == []
    second = await h.accepted(path)
    assert (await h.committer.commit_job(second)).state is JobState.COMMITTED
    tab.narrator("Stale save.").save()  # drops the second, and the first stays gone

    assert await h.committer.reconcile_chat(ref) == 1
    assert markers(path) == [second.id]
    # The re-insert first: the first's bookkeeping waits for the next read of the chat, the
    # change event of that very write.
    assert (await _entry(h, job.id)).retired is None
    assert await h.committer.reconcile_chat(ref) == 0
    assert markers(path) == [second.id]
    assert (await _entry(h, job.id)).retired == REASON_DELETED_AFTER_SHOWN


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (lambda tab: tab.swipe("Another text."), REASON_REPLY_CHANGED),
        (lambda tab: tab.regenerate("A new reply."), REASON_REPLY_GONE),
        (lambda tab: tab.delete(len(tab.messages) - 1), REASON_REPLY_GONE),
    ],
    ids=["swipe", "regenerate", "delete"],
)
async def test_stale_tab_changed_the_reply_no_reinsert(
    harness: Harness, action: Any, reason: str
) -> None:
    """The stale tab never had our message; it swiped/regenerated/deleted the reply: the image
    no longer matches, so it is not put back."""
    h = harness
    tab, path, job = await _committed_with_stale_tab(h)
    action(tab)
    tab.save()
    data = path.read_bytes()
    assert await h.committer.reconcile_chat(ref_of(h.root, path)) == 0
    assert path.read_bytes() == data
    assert (await _entry(h, job.id)).retired == reason


async def test_no_open_entries_no_read(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The common case costs one store query: the chat file is not even read."""
    h = harness
    path = chat_path(h.root)
    STSim.create(path).send_user("Hi.").save()
    from daemon.engine.commit import apply as commit_mod

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read the chat")

    monkeypatch.setattr(commit_mod, "read_for_edit_with", boom)
    assert await h.committer.reconcile_chat(ref_of(h.root, path)) == 0


async def test_theirs_is_told_from_ours_by_the_file(harness: Harness) -> None:
    """A version with the marker acknowledges only if ST wrote it (not our own write), even
    when ST's save holds exactly our bytes: it is another file, and the tab that saved it
    holds our message."""
    h = harness
    _, path, job = await _committed_with_stale_tab(h)
    ref = ref_of(h.root, path)
    assert await h.store.our_write(ref.rel, FileVersion.of(path.stat())) is True
    assert await h.committer.reconcile_chat(ref) == 0
    assert not (await _entry(h, job.id)).acknowledged
    # A second tab opened it and saved exactly the same bytes (temp file + rename, as ST).
    ours = path.read_bytes()
    temp = path.with_name(path.name + ".4242")
    temp.write_bytes(ours)
    temp.replace(path)
    assert await h.committer.reconcile_chat(ref) == 0
    assert (await _entry(h, job.id)).acknowledged


async def test_a_write_recorded_by_hash_before_the_upgrade_is_still_ours(
    harness: Harness,
) -> None:
    """An older version recorded its writes by the bytes' hash: after the upgrade that write is
    still ours (no acknowledgement, which would let the next stale save drop it for good),
    and ST's save of it is still theirs."""
    h = harness
    tab, path, job = await _committed_with_stale_tab(h)
    ref = ref_of(h.root, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def as_before_the_upgrade() -> None:  # another connection to the same file
        with contextlib.closing(sqlite3.connect(h.store.path, timeout=30)) as conn, conn:
            conn.execute("DELETE FROM our_writes")
            conn.execute(
                "INSERT INTO our_writes (chat, sha256, at) VALUES (?, ?, '2026-01-01T00:00:00Z')",
                (ref.rel, digest),
            )

    await anyio.to_thread.run_sync(as_before_the_upgrade)
    assert await h.store.our_write(ref.rel, FileVersion.of(path.stat())) is None
    assert await h.committer.reconcile_chat(ref) == 0
    assert not (await _entry(h, job.id)).acknowledged
    tab.narrator("It starts to rain.").save()  # the stale tab drops it: back it comes
    assert await h.committer.reconcile_chat(ref) == 1
    assert markers(path) == [job.id]
    STSim.open(path).save()
    assert await h.committer.reconcile_chat(ref) == 0
    assert (await _entry(h, job.id)).acknowledged


async def test_several_dropped_messages_all_come_back_in_place(harness: Harness) -> None:
    h = harness
    path = chat_path(h.root)
    tab = STSim.create(path)
    jobs = []
    for i in range(4):
        tab.send_user(f"Q{i}").save()
        tab.reply("Alice", f"A{i}").save()
    for i in range(4):
        jobs.append(await h.accepted(path, 2 * i + 2, seed=i))
    for job in jobs:
        assert (await h.committer.commit_job(job)).state is JobState.COMMITTED
    tab.narrator("Rain.").save()  # drops all four
    assert markers(path) == []

    assert await h.committer.reconcile_chat(ref_of(h.root, path)) == 4

    chat = parse_chat(path.read_bytes())
    assert markers(path) == [j.id for j in jobs]
    for i, job in enumerate(jobs):
        ours = chat.find_marker(job.id)
        assert ours is not None and chat.messages[ours.index - 1].mes == f"A{i}"
    assert chat.messages[-1].mes == "Rain."


async def test_chat_deleted_retires_entries(harness: Harness) -> None:
    h = harness
    _, path, job = await _committed_with_stale_tab(h)
    ref = ref_of(h.root, path)
    path.unlink()
    assert await h.committer.reconcile_chat(ref) == 0
    assert (await _entry(h, job.id)).retired == REASON_CHAT_GONE
    assert await h.store.chats_with_open_ledger() == set()


async def test_reconcile_open_at_startup(harness: Harness) -> None:
    h = harness
    tab, path, job = await _committed_with_stale_tab(h)
    tab.narrator("Dropped while we were down.").save()
    assert await h.committer.reconcile_open() == 1
    assert markers(path) == [job.id]


async def test_our_own_write_is_not_parsed_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change event our own commit causes is settled by the hash and byte searches for
    our markers: the chat is read once and only the lines holding a marker are parsed."""
    from daemon.engine.commit import apply as commit_mod
    from daemon.tavern import write as tavern_write

    h = harness
    _, path, job = await _committed_with_stale_tab(h)
    reads: list[Path] = []
    real_read = tavern_write.read_for_edit_with

    def reading(p: Path, look: Any, **kwargs: Any) -> Any:
        reads.append(p)
        assert kwargs.get("root") == h.root  # every read checks the path against the root
        return real_read(p, look, **kwargs)

    monkeypatch.setattr(commit_mod, "read_for_edit_with", reading)
    parsed = count_parsed_lines(monkeypatch)
    assert await h.committer.reconcile_chat(ref_of(h.root, path)) == 0
    monkeypatch.undo()
    assert reads == [path]
    assert len(parsed) == 1 and job.id.encode() in parsed[0]
    assert not (await _entry(h, job.id)).acknowledged


async def test_a_stale_save_is_repaired_in_one_worker_thread_trip(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the cheap "anything waiting?" query, the read, the judging, the re-insert and the
    store calls they need go in one trip to a worker thread, not one per call."""
    h = harness
    tab, path, job = await _committed_with_stale_tab(h)
    tab.narrator("It starts to rain.").save()
    trips: list[str] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", type(fn).__name__))
        return await real_run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert await h.committer.reconcile_chat(ref_of(h.root, path)) == 1
    monkeypatch.undo()
    assert trips == ["_reconcile_pass"]  # the open entries, the read, the write: one trip
    assert markers(path) == [job.id]
    assert await h.store.our_write(ref_of(h.root, path).rel, FileVersion.of(path.stat()))


def _forget_our_writes(h: Harness) -> None:
    """What a power cut can do to a record not waited onto the disk: lose it."""
    with contextlib.closing(sqlite3.connect(h.store.path, timeout=30)) as conn, conn:
        conn.execute("DELETE FROM our_writes")


async def test_a_marked_write_is_ours_even_when_the_store_lost_its_record(
    harness: Harness,
) -> None:
    """Our write carries our mark on the file itself, on disk with its bytes: with the store's
    record of it gone, it is still ours (no acknowledgement, which would leave it to the next
    stale save), and ST's save of it is still theirs."""
    h = harness
    tab, path, job = await _committed_with_stale_tab(h)
    ref = ref_of(h.root, path)
    if not read_for_edit(path)[2].marked:
        pytest.skip("this file system keeps no user extended attributes")
    await anyio.to_thread.run_sync(_forget_our_writes, h)
    assert await h.store.our_write(ref.rel, FileVersion.of(path.stat())) is False
    assert await h.committer.reconcile_chat(ref) == 0
    assert not (await _entry(h, job.id)).acknowledged
    tab.narrator("It starts to rain.").save()  # dropped by the stale tab: back it comes
    assert await h.committer.reconcile_chat(ref) == 1
    await anyio.to_thread.run_sync(_forget_our_writes, h)
    assert await h.committer.reconcile_chat(ref) == 0
    assert not (await _entry(h, job.id)).acknowledged
    STSim.open(path).save()
    assert await h.committer.reconcile_chat(ref) == 0
    assert (await _entry(h, job.id)).acknowledged


@pytest.mark.parametrize("marks", [True, False])
async def test_our_record_waits_for_the_disk_only_when_the_file_is_unmarked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, marks: bool
) -> None:
    """Where the file system refuses our mark, the record of our write (the commit's and the
    re-insert's) is the only proof the version is ours: it is waited onto the disk before the
    rename. A marked file needs no such wait."""
    h = harness
    if not marks:

        def refuse(*args: Any) -> None:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        monkeypatch.setattr(tavern_write, "_setxattr", refuse)
    calls: list[tuple[str, bool]] = []
    real_intend, real_record = Blocking.intend, Blocking.record_write

    def intend(self: Blocking, *args: Any, durable: bool = True, **kwargs: Any) -> Any:
        calls.append(("intend", durable))
        return real_intend(self, *args, durable=durable, **kwargs)

    def record(self: Blocking, *args: Any, durable: bool = True, **kwargs: Any) -> None:
        calls.append(("record", durable))
        real_record(self, *args, durable=durable, **kwargs)

    monkeypatch.setattr(Blocking, "intend", intend)
    monkeypatch.setattr(Blocking, "record_write", record)
    tab, path, job = await _committed_with_stale_tab(h)
    marked = read_for_edit(path)[2].marked
    if marks and not marked:
        pytest.skip("this file system keeps no user extended attributes")
    assert marked is marks
    tab.narrator("It starts to rain.").save()
    assert await h.committer.reconcile_chat(ref_of(h.root, path)) == 1
    assert calls == [("intend", not marks), ("record", not marks)]
    assert markers(path) == [job.id]
