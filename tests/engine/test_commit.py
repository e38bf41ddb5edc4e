"""Committing accepted images: real chat files (real ST fixtures and the simulated ST writer),
a real store and approval folder. Crashes are simulated by raising from inside the steps."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.engine.commit import apply as commit_mod
from daemon.engine.commit.apply import (
    REASON_CHAT_GONE,
    REASON_REPLY_CHANGED,
    REASON_REPLY_GONE,
    message_urls,
)
from daemon.engine.process.status import gather_status
from daemon.engine.store import JobState
from daemon.errors import ChatConflictError
from daemon.tavern import layout
from daemon.tavern import write as tavern_write
from daemon.tavern.chat import parse_chat, parse_send_date, read_chat, send_date_style
from daemon.tavern.reaper import REAPER
from daemon.tavern.write import FileVersion, Written
from tests.conftest import count_parsed_lines
from tests.engine.test_commit_support import (
    USER,
    Harness,
    assert_images_served,
    chat_path,
    harness_for,
    last_reply,
    markers,
    open_harness,
    ref_of,
)
from tests.stsim import STSim

REAPER_SETTLE_S = 30.0
"""How long a test waits for the reaper to delete a finished pending folder."""

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Crash(BaseException):
    """Stands in for the process dying at that point (not caught by any handler)."""


def _alice_chat(root: Path) -> Path:
    chats = [r for r in layout.iter_chats(root) if r.owner == "Alice"]
    assert len(chats) == 1
    return chats[0].path


def _group_chat(root: Path) -> Path:
    chats = [r for r in layout.iter_chats(root) if r.is_group]
    assert len(chats) == 1
    return chats[0].path


def _without_ours(data: bytes) -> bytes:
    """The file with our own lines removed: must equal the original bytes exactly."""
    lines = data.split(b"\n")
    chat = parse_chat(data)
    ours = {chat.line_of(m.index) for m in chat.messages if m.marker is not None}
    return b"\n".join(line for i, line in enumerate(lines) if i not in ours)


@pytest.fixture
async def st_harness(st_root: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness_for(st_root, tmp_path / "state") as h:
        yield h


# --- the happy path ---------------------------------------------------------------------------


async def test_commit_inserts_hidden_image_message_after_reply(st_harness: Harness) -> None:
    h = st_harness
    path = _alice_chat(h.root)
    before = path.read_bytes()
    old = parse_chat(before)
    reply = last_reply(old.messages)
    job = await h.accepted(path, images=2)

    done = await h.committer.commit_job(job)

    assert done.state is JobState.COMMITTED, done.last_error
    assert done.last_error is None
    after = path.read_bytes()
    assert _without_ours(after) == before  # every other byte unchanged
    chat = parse_chat(after)
    assert chat.integrity == old.integrity
    ours = chat.find_marker(job.id)
    assert ours is not None
    assert ours.index == reply.index + 1  # right after the reply
    data = ours.data
    assert data["is_system"] is True and data["is_user"] is False
    assert data["name"] == reply.name == "Alice"
    extra = data["extra"]
    assert extra["st_imagegen_job"] == job.id
    # Both formats: legacy extra.image (ST <= 1.13) and extra.media (1.14+), one gallery.
    urls = [m["url"] for m in extra["media"]]
    assert len(urls) == 2 and extra["image"] == urls[0]
    assert extra["media_display"] == "gallery" and extra["media_index"] == 0
    assert extra["inline_image"] is False
    assert extra["title"] == "a red apple on a table"
    assert all(m["type"] == "image" and m["title"] == extra["title"] for m in extra["media"])
    assert data["mes"] == "[Alice sends a picture: a red apple on a table]"
    # The chat's own send_date style (1.12/1.14: "November 24, 2026 9:00am"; 1.18: ISO).
    assert send_date_style(data["send_date"]) == send_date_style(reply.data["send_date"])
    assert parse_send_date(data["send_date"]) is not None
    files = assert_images_served(h.root, USER, data)
    assert {f.parent.name for f in files} == {"Alice"}
    assert [f.read_bytes()[:8] for f in files] == [b"\x89PNG\r\n\x1a\n"] * 2
    # The job says where its images went; the pending folder is gone.
    assert done.meta["committed_urls"] == urls
    assert done.meta["committed_files"] == [str(f) for f in files]
    assert not h.approval.pending_path(job.id).exists()
    # Ledger: remembered, not yet seen in a version written by ST; the file is our write.
    entry = await h.store.ledger_get(job.id)
    assert entry is not None and not entry.acknowledged and entry.retired is None
    assert entry.message == data
    assert await h.store.our_write(done.chat, FileVersion.of(path.stat())) is True


async def test_commit_in_group_chat_shows_under_the_member(st_harness: Harness) -> None:
    h = st_harness
    path = _group_chat(h.root)
    before = path.read_bytes()
    reply = last_reply(parse_chat(before).messages)
    assert reply.data.get("original_avatar")
    job = await h.accepted(path)

    done = await h.committer.commit_job(job)

    assert done.state is JobState.COMMITTED, done.last_error
    assert _without_ours(path.read_bytes()) == before
    ours = parse_chat(path.read_bytes()).find_marker(job.id)
    assert ours is not None and ours.index == reply.index + 1
    assert ours.name == reply.name
    assert ours.data["force_avatar"] == reply.data["force_avatar"]
    assert ours.data["original_avatar"] == reply.data["original_avatar"]
    group = layout.group_for_chat(h.root, USER, path.stem)
    assert group is not None
    files = assert_images_served(h.root, USER, ours.data)
    assert {f.parent.name for f in files} == {group.id}  # ST's folder for groups: the group id


@pytest.mark.parametrize("version", ["1.12", "1.14", "1.18"])
@pytest.mark.parametrize("group", [False, True])
async def test_image_message_survives_a_browser_load_and_save(
    harness: Harness, version: str, group: bool
) -> None:
    """After a tab of that ST version loads and saves the chat, our message keeps its marker
    and its image in the format that version renders."""
    h = harness
    path = (
        h.root / USER / "group chats" / "1700000000000.jsonl"
        if group
        else chat_path(h.root, name=f"Alice - {version}")
    )
    tab = STSim.create(path, version=version, group=group, greeting="Hello.")
    tab.send_user("Show me the garden.").save()
    tab.reply("Bob" if group else "Alice", "The garden glows at dawn.").save()
    job = await h.accepted(path)
    assert (await h.committer.commit_job(job)).state is JobState.COMMITTED

    STSim.open(path, version=version, group=group).send_user("Lovely.").save()

    saved = parse_chat(path.read_bytes()).find_marker(job.id)
    assert saved is not None and saved.is_system
    extra = saved.extra
    if version == "1.12":
        assert extra["image"].startswith("/user/images/")  # what 1.12 renders
    else:
        assert extra["media"][0]["url"].startswith("/user/images/")  # 1.14+ renders media
    assert_images_served(h.root, USER, saved.data)


async def test_kept_images_only(harness: Harness) -> None:
    h = harness
    path = chat_path(h.root)
    tab = STSim.create(path)
    tab.send_user("Hi.").save()
    tab.reply("Alice", "Hello!").save()
    job = await h.accepted(path, images=3)
    kept = h.approval.kept_images(job.id)
    kept[1].unlink()  # the user deleted the second image before accepting
    wanted = [kept[0].read_bytes(), kept[2].read_bytes()]

    done = await h.committer.commit_job(job)

    assert done.state is JobState.COMMITTED
    ours = parse_chat(path.read_bytes()).find_marker(job.id)
    assert ours is not None
    files = assert_images_served(h.root, USER, ours.data)
    assert [f.read_bytes() for f in files] == wanted
    assert len(list((h.root / USER / "user" / "images" / "Alice").iterdir())) == 2


async def test_second_job_for_same_reply_goes_after_the_first(harness: Harness) -> None:
    h = harness
    path = chat_path(h.root)
    tab = STSim.create(path)
    tab.send_user("Hi.").save()
    tab.reply("Alice", "Hello!").save()
    tab.send_user("And now?").save()
    first = await h.accepted(path, 2, seed=1)
    second = await h.accepted(path, 2, seed=2, prompt="another view", regen=1)

    for job in (first, second):
        assert (await h.committer.commit_job(job)).state is JobState.COMMITTED

    chat = parse_chat(path.read_bytes())
    order = [m.marker for m in chat.messages]
    assert order.index(first.id) == 3 and order.index(second.id) == 4
    assert chat.messages[5].mes == "And now?"


async def test_caption_template_and_visible_setting(data_root: Path, tmp_path: Path) -> None:
    h = await open_harness(
        data_root,
        tmp_path / "state",
        commit={"caption": "{{ CHAR }} drew {{prompt}}!", "hidden": False},
    )
    try:
        path = chat_path(data_root)
        tab = STSim.create(path)
        tab.send_user("Hi.").save()
        tab.reply("Alice", "Hello!").save()
        job = await h.accepted(path, prompt="a fox")
        await h.committer.commit_job(job)
        ours = parse_chat(path.read_bytes()).find_marker(job.id)
        assert ours is not None
        assert ours.mes == "Alice drew a fox!"
        assert ours.data["is_system"] is False
    finally:
        await h.store.close()


async def test_pre_115_chat_gets_its_own_date_style(harness: Harness) -> None:
    h = harness
    path = chat_path(h.root, name="Alice - old")
    tab = STSim.create(path, version="1.12")
    tab.send_user("Hi.").save()
    tab.reply("Alice", "Hello!").save()
    job = await h.accepted(path)
    await h.committer.commit_job(job)
    ours = parse_chat(path.read_bytes()).find_marker(job.id)
    assert ours is not None
    assert send_date_style(ours.data["send_date"]) == "human"
    assert parse_chat(path.read_bytes()).header is not None  # legacy header kept as it was


# --- the reply changed before the commit -------------------------------------------------------


async def _tab_with_job(h: Harness) -> tuple[STSim, Path, Any]:
    path = chat_path(h.root)
    tab = STSim.create(path)
    tab.send_user("Describe the scene.").save()
    tab.reply("Alice", "The glade glows.").save()
    job = await h.accepted(path)
    return tab, path, job


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (lambda tab: tab.swipe("A different text."), REASON_REPLY_CHANGED),
        (lambda tab: tab.continue_(" And more."), REASON_REPLY_CHANGED),
        (lambda tab: tab.edit(len(tab.messages) - 1, "Edited."), REASON_REPLY_CHANGED),
        (lambda tab: tab.regenerate("A new reply."), REASON_REPLY_GONE),
        (lambda tab: tab.delete(len(tab.messages) - 1), REASON_REPLY_GONE),
    ],
    ids=["swipe", "continue", "edit", "regenerate", "delete"],
)
async def test_reply_changed_before_accept_is_not_committed(
    harness: Harness, action: Callable[[STSim], Any], reason: str
) -> None:
    h = harness
    tab, path, job = await _tab_with_job(h)
    action(tab)
    tab.save()
    before = path.read_bytes()

    done = await h.committer.commit_job(job)

    assert done.state is JobState.SUPERSEDED
    assert done.last_error == f"not committed: {reason}"
    assert path.read_bytes() == before
    assert not (h.root / USER / "user" / "images").exists()  # no image written either
    assert not h.approval.pending_path(job.id).exists()
    # The reason is history (`show`), not one of the errors `status` lists.
    report = await gather_status(h.config, h.store)
    assert all(row["job"] != job.id for row in report.errors)


async def test_chat_deleted_before_commit(harness: Harness) -> None:
    h = harness
    _, path, job = await _tab_with_job(h)
    path.unlink()
    done = await h.committer.commit_job(job)
    assert done.state is JobState.SUPERSEDED
    assert done.last_error == f"not committed: {REASON_CHAT_GONE}"


async def test_every_image_deleted_fails_with_reason(harness: Harness) -> None:
    h = harness
    _, path, job = await _tab_with_job(h)
    before = path.read_bytes()
    for image in h.approval.kept_images(job.id):
        image.unlink()
    done = await h.committer.commit_job(job)
    assert done.state is JobState.FAILED
    assert done.last_error is not None and "every image was deleted" in done.last_error
    assert path.read_bytes() == before


async def test_jobs_in_other_states_are_left_alone(harness: Harness) -> None:
    h = harness
    _, path, job = await _tab_with_job(h)
    rejected = await h.store.transition(job.id, JobState.ACCEPTED, JobState.REJECTED)
    assert rejected is not None
    before = path.read_bytes()
    assert (await h.committer.commit_job(rejected)).state is JobState.REJECTED
    assert path.read_bytes() == before


# --- idempotent: twice, and crashes between the steps ------------------------------------------


async def test_commit_twice_inserts_once(harness: Harness) -> None:
    h = harness
    _, path, job = await _tab_with_job(h)
    first = await h.committer.commit_job(job)
    data = path.read_bytes()
    again = await h.committer.commit_job(job)  # a stale Job object: state re-read
    assert first.state is again.state is JobState.COMMITTED
    assert path.read_bytes() == data
    assert markers(path) == [job.id]


def _crash_on(monkeypatch: pytest.MonkeyPatch, name: str, *, after_call: bool = False) -> None:
    """Make ``commit_mod.<name>`` (or the store method) crash once, before or after it ran."""
    real = getattr(commit_mod, name)
    state = {"done": False}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if state["done"]:
            return real(*args, **kwargs)
        state["done"] = True
        if after_call:
            real(*args, **kwargs)
        raise Crash(name)

    monkeypatch.setattr(commit_mod, name, wrapper)


def _crash_after_intent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash a chat write once right after its ``before_replace`` ran (the ledger entry and
    our write's version recorded in one transaction), before the rename."""
    real = tavern_write.insert_after_line
    state = {"done": False}

    def wrapper(*args: Any, before_replace: Callable[[Written], None], **kwargs: Any) -> Any:
        if state["done"]:
            return real(*args, before_replace=before_replace, **kwargs)
        state["done"] = True

        def then_crash(version: Written) -> None:
            before_replace(version)
            raise Crash("after the intent")

        return real(*args, before_replace=then_crash, **kwargs)

    monkeypatch.setattr(commit_mod, "insert_after_line", wrapper)


@pytest.mark.parametrize(
    "point",
    [
        "after_images",  # image files written, no ledger entry
        "before_write",  # the same, crashed as the chat write starts
        "after_ledger",  # ledger entry and our hash, no chat line (crash before the rename)
        "after_rename",  # chat line written, job not marked committed
    ],
)
async def test_crash_between_steps_is_finished_by_the_next_run(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    h = harness
    _, path, job = await _tab_with_job(h)
    before = path.read_bytes()
    if point == "after_images":
        _crash_on(monkeypatch, "_write_images", after_call=True)
    elif point == "before_write":
        _crash_on(monkeypatch, "insert_after_line")
    elif point == "after_ledger":
        _crash_after_intent(monkeypatch)
    else:
        _crash_on(monkeypatch, "insert_after_line", after_call=True)

    with pytest.raises(Crash):
        await h.committer.commit_job(job)
    crashed = await h.job(job.id)
    assert crashed.state is JobState.ACCEPTED
    entry = await h.store.ledger_get(job.id)
    assert (entry is not None) is (point in ("after_ledger", "after_rename"))
    if point != "after_rename":
        assert path.read_bytes() == before  # no chat line yet, so none pointing at a missing file

    done = await h.committer.commit_job(crashed)

    assert done.state is JobState.COMMITTED
    assert markers(path) == [job.id]
    assert _without_ours(path.read_bytes()) == before
    ours = parse_chat(path.read_bytes()).find_marker(job.id)
    assert ours is not None
    assert_images_served(h.root, USER, ours.data)
    # No orphan: the retry reused the image file the crashed run wrote.
    folder = h.root / USER / "user" / "images" / "Alice"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        u.rsplit("/", 1)[1] for u in message_urls(ours.data)
    )
    assert not h.approval.pending_path(job.id).exists()


async def test_crash_after_rename_is_still_our_write(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our write's version is recorded before the rename: after a crash right after it, the
    file is still known as ours (else reconcile would wrongly take it as ST's)."""
    h = harness
    _, path, job = await _tab_with_job(h)
    _crash_on(monkeypatch, "insert_after_line", after_call=True)
    with pytest.raises(Crash):
        await h.committer.commit_job(job)
    assert await h.store.our_write(job.chat, FileVersion.of(path.stat())) is True


async def test_a_commit_is_one_worker_thread_trip(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store calls of a commit go with its file work: one trip to a worker thread per
    attempt (not one per store call and file step), and the job's change is still announced
    to the listeners, on the event loop."""
    h = harness
    tab, path, first = await _tab_with_job(h)
    assert (await h.committer.commit_job(first)).state is JobState.COMMITTED  # cleans temps once
    tab = STSim.open(path)
    tab.send_user("And then?").save()
    tab.reply("Alice", "The river sings.").save()
    job = await h.accepted(path)
    heard: list[tuple[str, JobState | None, bool]] = []
    loop_thread = threading.get_ident()
    h.store.add_job_listener(
        lambda j, prev: heard.append((j.id, prev, threading.get_ident() == loop_thread))
    )
    trips: list[str] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await real_run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    done = await h.committer.commit_job(job)
    monkeypatch.undo()

    assert done.state is JobState.COMMITTED
    assert trips == ["_attempt"]
    assert heard == [(job.id, JobState.ACCEPTED, True)]
    assert markers(path) == [first.id, job.id]
    assert not h.approval.pending_path(job.id).exists()


@pytest.mark.parametrize("link", [True, False])
async def test_the_image_is_the_pending_file_linked_or_copied(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, link: bool
) -> None:
    """With the state dir on the data root's file system the pending image becomes ST's image
    by a hard link (no bytes written again); elsewhere (EXDEV) it is copied. Either way the
    chat's image holds exactly the pending image's bytes, alone, once the pending folder is
    gone."""
    h = harness
    _, path, job = await _tab_with_job(h)
    (pending,) = h.approval.kept_images(job.id)
    data, ino = pending.read_bytes(), pending.stat().st_ino
    if not link:

        def other_device(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

        monkeypatch.setattr(os, "link", other_device)
    done = await h.committer.commit_job(job)
    monkeypatch.undo()

    assert done.state is JobState.COMMITTED
    ours = parse_chat(path.read_bytes()).find_marker(job.id)
    assert ours is not None
    (image,) = assert_images_served(h.root, USER, ours.data)
    assert image.read_bytes() == data
    assert (image.stat().st_ino == ino) is link
    assert image.stat().st_nlink == 1
    assert not h.approval.pending_path(job.id).exists()


async def test_another_runs_ledger_entry_wins(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one job (another process): the message recorded first is the one written,
    whatever this run built; its own is never renamed in."""
    h = harness
    _, path, job = await _tab_with_job(h)
    before = path.read_bytes()
    theirs = tavern_write.build_image_message(
        name="Alice",
        urls=["/user/images/Alice/theirs.png"],
        prompt="their prompt",
        caption="their caption",
        send_date="2026-11-24T09:00:00.000Z",
        job_id=job.id,
    )
    folder = h.root / USER / "user" / "images" / "Alice"
    folder.mkdir(parents=True)
    (folder / "theirs.png").write_bytes(b"\x89PNG their image")
    real = tavern_write.insert_after_line
    calls: list[str] = []

    def racing(*args: Any, before_replace: Callable[[Written], None], **kwargs: Any) -> Any:
        if not calls:  # the other run records its entry while this one writes
            h.store.blocking.add_entry(job, theirs)
        calls.append("write")
        return real(*args, before_replace=before_replace, **kwargs)

    monkeypatch.setattr(commit_mod, "insert_after_line", racing)
    monkeypatch.setattr(commit_mod, "_backoff", lambda attempt: 0.0)
    done = await h.committer.commit_job(job)

    assert done.state is JobState.COMMITTED
    assert calls == ["write", "write"]  # the first rename called off as a conflict
    ours = parse_chat(path.read_bytes()).find_marker(job.id)
    assert ours is not None and ours.data == theirs
    assert _without_ours(path.read_bytes()) == before
    entry = await h.store.ledger_get(job.id)
    assert entry is not None and entry.message == theirs


# --- conflicts and write failures ----------------------------------------------------------------


async def test_conflict_retries_from_a_fresh_read(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    tab, path, job = await _tab_with_job(h)
    real = tavern_write.insert_after_line
    calls = {"n": 0}

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            tab.narrator("It starts to rain.").save()  # ST saves between our read and rename
        return real(*args, **kwargs)

    monkeypatch.setattr(commit_mod, "insert_after_line", racing)
    done = await h.committer.commit_job(job)

    assert calls["n"] == 2
    assert done.state is JobState.COMMITTED
    chat = parse_chat(path.read_bytes())
    assert chat.messages[-1].mes == "It starts to rain."  # ST's save kept
    assert markers(path) == [job.id]


async def test_endless_conflicts_keep_the_job_for_later(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    _, path, job = await _tab_with_job(h)
    before = path.read_bytes()

    def always(*args: Any, **kwargs: Any) -> Any:
        raise ChatConflictError("chat changed since it was read")

    monkeypatch.setattr(commit_mod, "insert_after_line", always)
    monkeypatch.setattr(commit_mod, "_backoff", lambda attempt: 0.0)
    done = await h.committer.commit_job(job)

    assert done.state is JobState.ACCEPTED
    assert done.attempts == 1 and done.next_attempt_at is not None
    assert done.last_error is not None and "kept changing" in done.last_error
    assert path.read_bytes() == before


def _failing_write_all(fail_calls: set[int]) -> Callable[..., None]:
    real = tavern_write._write_all
    state = {"n": 0}

    def write_all(fd: int, pieces: Any, *rest: Any) -> None:
        state["n"] += 1
        if state["n"] in fail_calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, pieces, *rest)

    return write_all


@pytest.mark.parametrize("which", ["image", "chat"])
async def test_full_disk_changes_nothing_and_retries(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """ENOSPC on the temp write (of the image, or of the chat): the chat is untouched, no temp
    file is left, the job stays accepted with the reason and is committed on the next try.

    The image is copied (as when the state dir is on another file system than the data root;
    a hard link writes no bytes); call 1 writes the image file, call 2 the chat's temp file."""
    h = harness
    _, path, job = await _tab_with_job(h)
    before = path.read_bytes()
    monkeypatch.setattr(commit_mod, "link_image", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        tavern_write, "_write_all", _failing_write_all({1} if which == "image" else {2})
    )

    kept = await h.committer.commit_job(job)

    assert kept.state is JobState.ACCEPTED
    assert kept.last_error is not None and "no space left" in kept.last_error
    assert "will retry" in kept.last_error
    assert kept.attempts == 1 and kept.next_attempt_at is not None
    assert path.read_bytes() == before
    leftovers = [p.name for p in path.parent.iterdir() if p.name != path.name]
    assert leftovers == []
    images = h.root / USER / "user" / "images" / "Alice"
    assert all(not p.name.endswith(".tmp") for p in images.glob("*")) if images.exists() else True

    monkeypatch.undo()
    done = await h.committer.commit_job(kept)
    assert done.state is JobState.COMMITTED
    assert markers(path) == [job.id]
    assert len(list(images.iterdir())) == 1  # the image of the first try was reused


async def test_read_only_chat_folder_keeps_the_job(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat folder we may not write to: a clear error, the job kept for a later try.

    CI runs as root, which ignores file modes; there the refusal is simulated by patching
    ``os.open`` to fail with EACCES for new files in that folder (what the kernel answers for
    a non-root user). As another user the folder really is made read-only.
    """
    h = harness
    _, path, job = await _tab_with_job(h)
    before = path.read_bytes()
    folder = path.parent
    if os.geteuid() == 0:
        real_open = os.open

        def guarded(file: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
            if flags & os.O_CREAT and Path(os.fsdecode(file)).parent == folder:
                raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(file))
            return real_open(file, flags, mode, **kw)

        monkeypatch.setattr(os, "open", guarded)
    else:
        folder.chmod(0o555)
    try:
        kept = await h.committer.commit_job(job)
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)

    assert kept.state is JobState.ACCEPTED
    assert kept.last_error is not None and "permission denied" in kept.last_error
    assert str(folder) in kept.last_error
    assert path.read_bytes() == before
    report = await gather_status(h.config, h.store)
    assert any("permission denied" in row["error"] for row in report.errors)

    done = await h.committer.commit_job(kept)
    assert done.state is JobState.COMMITTED


async def test_images_deleted_between_crash_and_restart_fail_cleanly(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger entry whose image files vanished is never written into the chat."""
    h = harness
    _, path, job = await _tab_with_job(h)
    before = path.read_bytes()
    _crash_after_intent(monkeypatch)
    with pytest.raises(Crash):
        await h.committer.commit_job(job)
    shutil.rmtree(h.root / USER / "user" / "images")

    done = await h.committer.commit_job(await h.job(job.id))

    assert done.state is JobState.FAILED
    assert path.read_bytes() == before
    entry = await h.store.ledger_get(job.id)
    assert entry is not None and entry.retired is not None


async def test_commits_of_one_chat_are_serialized(harness: Harness) -> None:
    """Many jobs of one chat committed at once: all land, each once, none lost to a conflict."""
    h = harness
    path = chat_path(h.root)
    tab = STSim.create(path)
    for i in range(6):
        tab.send_user(f"Question {i}").save()
        tab.reply("Alice", f"Answer {i}").save()
    jobs = []
    for i in range(6):
        jobs.append(await h.accepted(path, 2 * i + 2, seed=i))

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(h.committer.commit_job, job)

    assert sorted(markers(path)) == sorted(j.id for j in jobs)
    chat = parse_chat(path.read_bytes())
    for job in jobs:
        ours = chat.find_marker(job.id)
        assert ours is not None
        assert chat.messages[ours.index - 1].identity.key == (
            f"{job.reply.name}\x1f{job.reply.date}"
        )
    for job in jobs:
        assert (await h.job(job.id)).state is JobState.COMMITTED
    assert ref_of(h.root, path).rel == jobs[0].chat


async def test_commit_parses_only_the_lines_it_needs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit into a long chat finds the reply and checks for its marker by byte searches:
    a handful of lines is parsed, not the chat (the full parse was the whole cost on big
    chats). The line lookups themselves are checked against the full view in test_chat."""
    h = harness
    path = chat_path(h.root)
    tab = STSim.create(path)
    for i in range(300):
        tab.send_user(f"question {i}")
        tab.reply("Alice", f"answer {i}")
    tab.save()
    job = await h.accepted(path, len(tab.messages) - 1)
    parsed = count_parsed_lines(monkeypatch)
    done = await h.committer.commit_job(job)
    assert done.state is JobState.COMMITTED
    assert len(parsed) <= 10
    monkeypatch.undo()
    assert markers(path) == [job.id]
    chat = parse_chat(path.read_bytes())
    ours = chat.find_marker(job.id)
    assert ours is not None and chat.messages[ours.index - 1].mes == "answer 299"


async def test_chat_changing_while_read_is_read_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_for_edit_with`` itself may report that ST kept saving while it read: read again."""
    h = harness
    _, path, job = await _tab_with_job(h)
    real = tavern_write.read_for_edit_with
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ChatConflictError("chat kept changing while being read")
        return real(*args, **kwargs)

    monkeypatch.setattr(commit_mod, "read_for_edit_with", flaky)
    done = await h.committer.commit_job(job)
    assert done.state is JobState.COMMITTED and calls["n"] == 2
    assert markers(path) == [job.id]


async def test_unsafe_chat_path_fails_the_job(harness: Harness) -> None:
    """A chat whose real file lies outside the data root is never written."""
    h = harness
    _, path, job = await _tab_with_job(h)
    outside = h.root.parent / "elsewhere.jsonl"
    path.rename(outside)
    path.symlink_to(outside)
    before = outside.read_bytes()
    done = await h.committer.commit_job(job)
    assert done.state is JobState.FAILED
    assert done.last_error is not None and done.last_error.startswith("not committed: ")
    assert outside.read_bytes() == before


async def test_a_big_chat_is_committed_by_streaming(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a commit held the whole chat in memory (a 200 MB chat cost 450 MB); chats
    from STREAM_MIN_BYTES on go through daemon.tavern.stream (bench/bench_memory.py)."""
    from daemon.tavern import stream

    monkeypatch.setattr(stream, "STREAM_MIN_BYTES", 0)
    used: list[str] = []
    real_insert = stream.insert_at

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append("stream")
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(stream, "insert_at", spy)
    h = harness
    tab, path, first = await _tab_with_job(h)
    assert (await h.committer.commit_job(first)).state is JobState.COMMITTED
    second = await h.accepted(path, prompt="another view", regen=1)
    assert (await h.committer.commit_job(second)).state is JobState.COMMITTED
    assert used == ["stream", "stream"]
    assert markers(path) == [first.id, second.id]  # after the reply, in order
    chat, _ = read_chat(path)
    for job in (first, second):
        message = chat.find_marker(job.id)
        assert message is not None and assert_images_served(h.root, USER, message.data)
    stale = await h.accepted(path, prompt="a third view", regen=5)
    tab.swipe("Changed meanwhile.").save()  # a stale tab drops ours and changes the reply
    done = await h.committer.commit_job(stale)
    assert done.state is JobState.SUPERSEDED and done.last_error == (
        f"not committed: {REASON_REPLY_CHANGED}"
    )
    fresh = await h.accepted(path)
    assert (await h.committer.commit_job(fresh)).state is JobState.COMMITTED
    assert len(used) == 3 and markers(path) == [fresh.id]


async def test_a_commit_leaves_its_pending_folder_to_the_reaper(harness: Harness) -> None:
    """The pending folder is out of ``pending/`` when the commit returns (renamed), and the
    reaper thread deletes it off the commit's path; nothing of the job is left after."""
    h = harness
    _, path, job = await _tab_with_job(h)
    assert h.approval.pending_path(job.id).is_dir()
    done = await h.committer.commit_job(job)
    assert done.state is JobState.COMMITTED
    assert not h.approval.pending_path(job.id).exists()
    assert await anyio.to_thread.run_sync(REAPER.settle, REAPER_SETTLE_S)
    assert [p.name for p in h.config.pending_dir.iterdir() if job.id in p.name] == []
    assert markers(path) == [job.id]
