"""The watcher: real watchdog observer, real files, real threads."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.engine.intake.watch import Hint, HintKind, Settler, StatIndex, Watcher
from daemon.tavern import layout
from daemon.tavern.layout import ChatRef
from tests.engine.conftest import WATCHDOG_RACE, async_wait_for
from tests.stsim import STSim

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]

HINT_TIMEOUT = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _chat_path(root: Path, user: str = "default-user", owner: str = "Alice") -> Path:
    return root / user / "chats" / owner / f"{owner} - 2026-11-30@10h00m00s000ms.jsonl"


async def _next_hint(
    watcher: Watcher, kind: HintKind | None = None, path: Path | None = None
) -> Hint:
    """The next hint of ``kind`` (for the chat at ``path``, if given); others are skipped."""
    with anyio.fail_after(HINT_TIMEOUT):
        async for hint in watcher.receive:
            if kind is not None and hint.kind is not kind:
                continue
            if path is not None and (hint.chat is None or hint.chat.path != path):
                continue
            return hint
    raise AssertionError("stream closed")


async def _drain(watcher: Watcher, quiet: float = 0.3) -> list[Hint]:
    hints: list[Hint] = []
    while True:
        with anyio.move_on_after(quiet) as scope:
            hints.append(await watcher.receive.receive())
        if scope.cancelled_caught:
            return hints


async def test_st_save_gives_one_chat_hint_for_the_final_name(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    path = _chat_path(root)
    async with Watcher(root).running() as watcher:
        tab = STSim.create(path, character="Alice")
        hints = [await _next_hint(watcher)]
        hints += await _drain(watcher)
        chat_hints = [h for h in hints if h.kind is HintKind.CHAT]
        assert chat_hints, hints
        assert all(h.chat is not None and h.chat.path == path for h in chat_hints)
        assert chat_hints[0].chat is not None
        assert chat_hints[0].chat.rel == f"default-user/chats/Alice/{path.name}"
        # The temp file ST wrote first (<chat>.jsonl.<digits>) never became a hint of its own.
        assert tab.last_temp is not None and not tab.last_temp.exists()
        assert all(h.chat is None or h.chat.path.suffix == ".jsonl" for h in hints)
        tab.send_user("hi").save()
        hint = await _next_hint(watcher, HintKind.CHAT)
        assert hint.chat is not None and hint.chat.path == path


async def test_temp_backup_and_our_temp_names_are_ignored(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    folder = _chat_path(root).parent
    folder.mkdir(parents=True, exist_ok=True)
    async with Watcher(root).running() as watcher:
        (folder / "Alice - x.jsonl.123456").write_bytes(b"{}")
        (folder / ".Alice - x.jsonl.st-imagegen.abc.tmp").write_bytes(b"{}")
        (root / "default-user" / "backups" / "chat_alice_20261130-100000.jsonl").write_bytes(b"{}")
        (root / "default-user" / "user" / "images" / "x.png").parent.mkdir(exist_ok=True)
        (root / "default-user" / "user" / "images" / "x.png").write_bytes(b"png")
        # A real save after them: inotify keeps order, so its hint comes after any of theirs,
        # and a deaf watcher cannot pass this test.
        real = next(layout.iter_chats(root))
        with real.path.open("ab") as fh:
            fh.write(b"\n")
        hint = await _next_hint(watcher, HintKind.CHAT)
        assert hint.chat == real
        hints = await _drain(watcher, quiet=0.5)
        assert all(h.chat == real for h in hints if h.kind is HintKind.CHAT)


async def test_plain_write_in_place_counts(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    existing = next(layout.iter_chats(root))
    async with Watcher(root).running() as watcher:
        with existing.path.open("ab") as fh:
            fh.write(b"\n")
        hint = await _next_hint(watcher, HintKind.CHAT)
        assert hint.chat == existing


async def test_new_user_folder_and_group_chat_are_seen(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    async with Watcher(root).running() as watcher:
        path = _chat_path(root, user="newcomer", owner="Bob")
        tab = STSim.create(path, character="Bob")
        # A file written right after its new folder may beat inotify's new watch: the folder's
        # creation asks for a rescan, which finds the chat; later saves are seen directly.
        hint = await _next_hint(watcher)
        assert hint.kind is HintKind.RESCAN or (hint.chat is not None and hint.chat.path == path)
        index = StatIndex(root)
        assert any(index.ref(rel).path == path for rel in index.scan())
        await _drain(watcher)
        tab.send_user("hello").save()
        hint = await _next_hint(watcher, HintKind.CHAT)
        assert hint.chat is not None and hint.chat.user == "newcomer"
        group = root / "default-user" / "group chats" / "1799999999999.jsonl"
        STSim.create(group, group=True, greeting=None)
        # A save raises several events; late ones for the newcomer's chat may still be queued.
        hint = await _next_hint(watcher, HintKind.CHAT, path=group)
        assert hint.chat is not None and hint.chat.is_group and hint.chat.chat_id == group.stem


async def test_drop_folder_move_gives_drop_hint(st_root_latest: Path, tmp_path: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    state = tmp_path / "state"
    pending = state / "pending" / "01JOB"
    pending.mkdir(parents=True)
    (pending / "image-1.png").write_bytes(b"x")
    async with Watcher(
        root, [state / "accepted", state / "rejected", state / "regenerate"]
    ).running() as watcher:
        pending.rename(state / "accepted" / "01JOB")
        hint = await _next_hint(watcher)
        assert hint.kind is HintKind.DROP


async def test_full_buffer_sets_rescan_flag_without_blocking(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    chats = list(layout.iter_chats(root))
    watcher = Watcher(root, buffer=1)
    watcher.start()  # no pump: nobody empties the queue, so it overflows
    try:
        for _ in range(5):
            for chat in chats:
                with chat.path.open("ab") as fh:
                    fh.write(b" ")

        async def flagged() -> bool:
            return watcher.rescan_needed

        await async_wait_for(flagged, within=HINT_TIMEOUT)
        assert watcher.bridge.dropped > 0
        assert watcher.bridge.queue.qsize() == 1
        assert watcher.is_alive()  # the observer thread did not block on the full queue
        watcher.clear_rescan()
        assert not watcher.rescan_needed
    finally:
        await watcher.aclose()
    assert not watcher.is_alive()


async def test_handler_errors_never_kill_the_observer(
    st_root_latest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = layout.resolve_data_root(st_root_latest)
    chat = next(layout.iter_chats(root))
    calls = threading.Event()

    def broken(root: Path, path: Path) -> layout.Classified:
        calls.set()
        raise RuntimeError("classification bug")

    monkeypatch.setattr(layout, "classify", broken)
    async with Watcher(root).running() as watcher:
        with chat.path.open("ab") as fh:
            fh.write(b" ")

        async def errored() -> bool:
            return watcher.bridge.errors > 0

        await async_wait_for(errored, within=HINT_TIMEOUT)
        assert calls.is_set()
        assert watcher.rescan_needed  # a lost event is covered by a rescan
        assert watcher.is_alive()
        monkeypatch.undo()
        with chat.path.open("ab") as fh:
            fh.write(b" ")
        hint = await _next_hint(watcher, HintKind.CHAT)
        assert hint.chat == chat
    assert not watcher.is_alive()


def _ref(rel: str) -> ChatRef:
    return ChatRef("u", False, "A", Path("/x") / rel, rel, Path(rel).stem)


def test_settler_waits_for_quiet_per_chat() -> None:
    settler = Settler(2.0)
    a, b = _ref("a.jsonl"), _ref("b.jsonl")
    settler.touch(a, 0.0)
    settler.touch(b, 0.5)
    settler.touch(a, 1.0)  # a new event resets a's timer
    assert settler.next_deadline() == 2.5
    assert settler.pop_due(2.6) == [b]
    assert settler.pop_due(2.9) == []
    assert settler.pop_due(3.0) == [a]
    assert settler.next_deadline() is None and len(settler) == 0
    settler.due_now(a, 10.0)
    assert settler.pop_due(10.0) == [a]


def test_stat_index_reports_new_changed_and_forgets_removed(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    index = StatIndex(root)
    first = index.scan()
    assert set(first) == {c.rel for c in layout.iter_chats(root)}
    assert [index.ref(rel) for rel in first] == [
        next(c for c in layout.iter_chats(root) if c.rel == rel) for rel in first
    ]
    assert index.scan() == []
    changed = index.ref(first[0])
    with changed.path.open("ab") as fh:
        fh.write(b"\n")
    assert index.scan() == [changed.rel]
    assert index.size(changed.rel) == changed.path.stat().st_size
    new_user = _chat_path(root, user="second", owner="Carol")
    STSim.create(new_user, character="Carol")
    group = root / "default-user" / "group chats" / "1700000000001.jsonl"
    STSim.create(group, group=True, greeting=None)
    (group.parent / "not-a-chat.jsonl.123").write_bytes(b"{}")  # ST temp name
    (group.parent / "folder.jsonl").mkdir()  # not a regular file
    found = set(index.scan())
    assert found == {
        f"second/chats/Carol/{new_user.name}",
        f"default-user/group chats/{group.name}",
    }
    assert index.ref(f"default-user/group chats/{group.name}").is_group
    changed.path.unlink()
    assert index.scan() == []
    assert changed.rel not in index
    os.utime(new_user, ns=(1, 1))
    assert index.scan() == [f"second/chats/Carol/{new_user.name}"]


def test_stat_index_note_absorbs_processed_changes(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    index = StatIndex(root)
    chat = index.ref(index.scan()[0])
    with chat.path.open("ab") as fh:
        fh.write(b"\n")
    index.note(chat)  # processed from an event: the rescan has nothing left to do
    assert index.scan() == []


def test_stat_index_users_filter(st_root_latest: Path) -> None:
    root = layout.resolve_data_root(st_root_latest)
    STSim.create(_chat_path(root, user="other", owner="Bob"), character="Bob")
    index = StatIndex(root, users=["other"])
    assert {index.ref(rel).user for rel in index.scan()} == {"other"}


def test_watch_limit_gives_a_clear_error(st_root_latest: Path) -> None:
    import errno

    from watchdog.observers.api import BaseObserver

    from daemon.errors import TavernError

    class Full(BaseObserver):
        def __init__(self) -> None:
            super().__init__(emitter_class=object)  # type: ignore[arg-type]

        def schedule(self, *args: object, **kwargs: object) -> Any:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    watcher = Watcher(st_root_latest, observer=Full())
    with pytest.raises(TavernError, match="max_user_watches"):
        watcher.start()
    assert not watcher.is_alive()
    watcher.stop()
