"""No-inotify mode: the watch mode's choice (mount table, probe, setting), the adaptive stat
poll, and the daemon noticing ST's saves by polling, with inotify on the data root off."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon.engine.intake import watchmode
from daemon.engine.intake.poll import Poller
from daemon.engine.intake.watch import StatIndex
from daemon.engine.store import JobState
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, MakeConfig, async_wait_for, running
from tests.engine.test_service import FAST, create_tab, jobs_of, seen, wait_jobs, wait_state

MOUNTS = """\
overlay / overlay rw,relatime,lowerdir=/a:/b 0 0
proc /proc proc rw 0 0
C:\\134 /mnt/c 9p rw,noatime,aname=drvfs 0 0
server:/export /srv/share nfs4 rw 0 0
sshfs#me@host: /home/me/remote fuse.sshfs rw 0 0
/dev/sdb1 /home/me/my\\040tavern ext4 rw 0 0
"""


@pytest.fixture
def mounts(tmp_path: Path) -> Path:
    path = tmp_path / "mounts"
    path.write_text(MOUNTS, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("where", "kind", "mode"),
    [
        ("/mnt/c/Users/me/SillyTavern/data", "9p", "poll"),
        ("/srv/share/st", "nfs4", "poll"),
        ("/home/me/remote/st/data", "fuse.sshfs", "poll"),
        ("/home/me/my tavern/data", "ext4", "inotify"),  # \040 in the table is a space
        ("/opt/st/data", "overlay", "inotify"),
    ],
)
def test_the_mount_table_decides_first(where: str, kind: str, mode: str, mounts: Path) -> None:
    found = watchmode.fs_type(Path(where), mounts)
    assert found is not None and found[0] == kind
    choice = watchmode.choose("auto", Path(where), probe=False, mounts=mounts)
    assert choice.mode == mode
    if mode == "poll":
        assert kind in choice.why and "no inotify event" in choice.why


def test_the_setting_forces_either(mounts: Path) -> None:
    share = Path("/mnt/c/st")
    assert watchmode.choose("inotify", share, mounts=mounts).mode == "inotify"
    assert watchmode.choose("poll", Path("/home"), mounts=mounts).mode == "poll"


def test_no_mount_table_leaves_the_probe_to_decide(tmp_path: Path) -> None:
    assert watchmode.fs_type(tmp_path, tmp_path / "missing") is None
    choice = watchmode.choose("auto", tmp_path, mounts=tmp_path / "missing")
    assert choice.mode == "inotify" and "probe" in choice.why  # a local folder: events arrive
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_the_probe_sees_events_on_a_local_folder(tmp_path: Path) -> None:
    assert watchmode.probe_events(tmp_path) is True


def _chat(root: Path, n: int) -> Path:
    path = root / "default-user" / "chats" / "Alice" / f"Alice - {n}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"chat_metadata":{}}\n{"name":"Alice","mes":"hi"}')
    return path


def test_poller_hot_chats_on_the_fast_beat_the_rest_on_full_walks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    paths = [_chat(root, n) for n in range(5)]
    (root / "default-user" / "group chats").mkdir()
    index = StatIndex(root)
    poller = Poller(index, hot_interval=0.5, full_interval=4.0, hot_window=60.0)
    assert len(poller.poll(0.0)) == 5 and poller.full_scans == 1  # the first beat walks
    assert poller.poll(0.1) == []  # all hot now (just seen); nothing changed
    with paths[2].open("ab") as fh:
        fh.write(b'\n{"name":"Alice","mes":"more"}')
    assert poller.poll(0.6) == ["default-user/chats/Alice/Alice - 2.jsonl"]
    assert poller.full_scans == 1  # found by the fast beat: a stat of the hot chats only
    new = _chat(root, 9)  # a new chat is found by the next full walk
    assert poller.poll(1.0) == []
    assert poller.next_at(1.0) == 1.5
    assert poller.poll(4.0) == [new.relative_to(root).as_posix()] and poller.full_scans == 2
    assert poller.poll(100.0) == [] and poller.hot == 0  # cooled down: full walks only
    assert poller.next_at(100.0) == 104.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@WATCHDOG_RACE
async def test_poll_mode_picks_up_a_reply_with_inotify_off(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    config = make_config(st_root_latest, detect={"watch": "poll"})
    async with running(config, FAST) as service:
        assert service.watch_choice is not None and service.watch_choice.mode == "poll"
        assert not service.watcher.watch_root  # no inotify watch on the data root at all
        path = service.root / "default-user" / "chats" / "Alice" / "Alice - poll.jsonl"
        tab = create_tab(path, character="Alice")
        await seen(service, path)  # a new chat: found by a full walk
        tab.send_user("Describe the glade.").save()
        tab.reply("Alice", "The glade glows at dawn.").save()
        [job] = await wait_jobs(service, path, 1)  # a hot chat: the fast beat
        await wait_state(service, job.id, JobState.PENDING)
        assert service.poller.full_scans >= 1


@pytest.mark.anyio
@WATCHDOG_RACE
async def test_auto_mode_switches_to_polling_when_a_change_raised_no_event(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """As on a share written from elsewhere: the chat changes, no event comes; the safety
    rescan finds the change, and the daemon polls from then on."""
    config = make_config(st_root_latest)
    async with running(config, FAST) as service:
        assert service.watch_choice is not None and service.watch_choice.mode == "inotify"
        path = service.root / "default-user" / "chats" / "Alice" / "Alice - share.jsonl"
        tab = create_tab(path, character="Alice")
        await seen(service, path)
        rescans = service.rescans
        service._rescan.set()  # a rescan window in which the chat's creation was seen

        async def rescanned() -> bool:
            return service.rescans > rescans

        await async_wait_for(rescanned, within=10.0)
        service.watcher.stop_root()  # the events stop arriving
        tab.send_user("Describe the glade.").save()
        tab.reply("Alice", "The glade glows at dawn.").save()
        past = time.time() - 30
        os.utime(path, (past, past))  # written a while before the safety rescan
        assert await jobs_of(service, path) == []
        service._rescan.set()  # the safety-net rescan's timer (60 s) comes early

        async def switched() -> bool:
            return service._polling.is_set()

        await async_wait_for(switched, within=10.0)
        choice = service.watch_choice
        assert choice.mode == "poll", choice
        assert "raised no inotify event" in choice.why
        [job] = await wait_jobs(service, path, 1)
        await wait_state(service, job.id, JobState.PENDING)
        tab.swipe("The glade at dusk.").save()  # and the next save is seen by the poll
        await wait_jobs(service, path, 2)
