"""daemon.tavern.write: inserts that keep every other byte, conflicts, image files, the message."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import (
    ChatConflictError,
    ChatReadError,
    ChatWriteError,
    MessageNotFoundError,
    UnsafePathError,
)
from daemon.tavern import write
from daemon.tavern.chat import MARKER_KEY, format_send_date, parse_chat
from daemon.tavern.layout import our_temp_name
from daemon.tavern.write import (
    OUR_MARK,
    FileVersion,
    Snapshot,
    Written,
    build_image_message,
    cleanup_stale_temps,
    insert_after,
    is_our_temp,
    read_for_edit,
    snapshot,
    write_image,
)
from tests.stsim import STSim, js_stringify

URL = "/user/images/Alice/Alice_2026-11-23@22h06m19s512ms.png"


def image_message(job: str = "job-1", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "Alice",
        "urls": [URL],
        "prompt": "a forest glade at dawn",
        "caption": "[Alice sends a picture: a forest glade at dawn]",
        "send_date": "2026-11-23T22:06:20.000Z",
        "job_id": job,
    }
    args.update(kw)
    return build_image_message(**args)


def chats_in(root: Path) -> list[Path]:
    found = [
        p
        for p in root.rglob("*.jsonl")
        if "backups" not in p.parts and ("chats" in p.parts or "group chats" in p.parts)
    ]
    assert found, f"no chats under {root}"
    return sorted(found)


def no_temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if is_our_temp(p.name) or ".jsonl." in p.name]


# --- build_image_message -------------------------------------------------------------------------


def test_image_message_has_the_portable_shape() -> None:
    msg = image_message()
    assert msg == {
        "name": "Alice",
        "is_user": False,
        "is_system": True,
        "send_date": "2026-11-23T22:06:20.000Z",
        "mes": "[Alice sends a picture: a forest glade at dawn]",
        "extra": {
            "image": URL,
            "title": "a forest glade at dawn",
            "media": [
                {
                    "url": URL,
                    "type": "image",
                    "title": "a forest glade at dawn",
                    "source": "generated",
                }
            ],
            "media_display": "gallery",
            "media_index": 0,
            "inline_image": False,
            MARKER_KEY: "job-1",
        },
    }


def test_image_message_variants() -> None:
    urls = [URL, URL.replace("512ms", "513ms")]
    msg = image_message(
        urls=urls,
        hidden=False,
        negative="blurry",
        send_date=1795471580000,
        force_avatar="/thumbnail?type=avatar&file=Bob.png",
        original_avatar="Bob.png",
        name="Bob",
    )
    assert msg["is_system"] is False
    assert msg["send_date"] == 1795471580000
    assert msg["force_avatar"] == "/thumbnail?type=avatar&file=Bob.png"
    assert msg["original_avatar"] == "Bob.png"
    extra = msg["extra"]
    assert extra["image"] == urls[0]
    assert extra["image_swipes"] == urls
    assert [m["url"] for m in extra["media"]] == urls
    assert all(m["negative"] == "blurry" and m["source"] == "generated" for m in extra["media"])
    with pytest.raises(ValueError, match="URL"):
        image_message(urls=[])
    with pytest.raises(ValueError, match="job id"):
        image_message(job="")


def test_image_message_scrubs_lone_surrogates_and_is_what_gets_written() -> None:
    msg = image_message(prompt="half \ud83d emoji \u2028 end", caption='say "hi" \udc00')
    assert msg["extra"]["title"] == "half \ufffd emoji \u2028 end"
    assert msg["mes"] == 'say "hi" \ufffd'
    line = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()
    assert json.loads(line) == msg
    assert "\u2028".encode() in line  # raw, like ST


def test_send_date_in_the_chat_style() -> None:
    when = datetime(2026, 11, 23, 22, 6, 20, tzinfo=UTC)
    legacy = image_message(send_date=format_send_date(when, "human"))
    assert legacy["send_date"] == "November 23, 2026 10:06pm"


# --- insert_after on real ST files ---------------------------------------------------------------


def test_insert_after_every_message_of_every_fixture_chat(st_root: Path) -> None:
    for path in chats_in(st_root):
        original = path.read_bytes()
        chat0 = parse_chat(original)
        for index in range(len(chat0.messages)):
            path.write_bytes(original)
            chat, data, basis = read_for_edit(path)
            new = image_message(job=f"j{index}")
            recorded: list[Written] = []
            result = insert_after(
                path, basis, data, chat, index, [new], before_replace=recorded.append
            )
            # The version told before the rename is the file in place after it.
            assert (
                [w.version for w in recorded] == [result.version] == [FileVersion.of(path.stat())]
            )
            assert result.sha256 == ""  # the new version is not hashed
            after = path.read_bytes()
            line = json.dumps(new, ensure_ascii=False, separators=(",", ":")).encode()
            # Exactly one line added, right after the message's line; every other byte kept.
            old_lines = original.split(b"\n")
            pos = chat.line_of(index) + 1
            assert after.split(b"\n") == [*old_lines[:pos], line, *old_lines[pos:]]
            assert not after.endswith(b"\n")
            assert result.size == len(after)
            assert result.inode == path.stat().st_ino
            reparsed = parse_chat(after)
            assert [m.data for m in reparsed.messages] == [
                *[m.data for m in chat.messages[: index + 1]],
                new,
                *[m.data for m in chat.messages[index + 1 :]],
            ]
            assert reparsed.integrity == chat.integrity
            assert reparsed.find_marker(f"j{index}") is not None
            assert not no_temps(path.parent)


def test_insert_several_messages_and_keep_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    lines = [
        b'{"chat_metadata":{"integrity":"abc"},"user_name":"unused","character_name":"unused"}',
        b'{"name":"Alice","is_user":false,"mes":"one"}',
        b"not json at all \xff\xfe",
        b'{"name":"Alice","is_user":false,"mes":"two"}',
    ]
    original = b"\n".join(lines) + b"\n"
    path.write_bytes(original)
    chat, data, basis = read_for_edit(path)
    assert chat.trailing_newline and chat.bad_lines == [2]
    a, b = image_message("a"), image_message("b")
    insert_after(path, basis, data, chat, 1, [a, b])
    enc = [json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode() for m in (a, b)]
    assert path.read_bytes() == b"\n".join([*lines, *enc]) + b"\n"

    # In the middle, before a bad line: the bad line is kept byte for byte.
    path.write_bytes(original)
    chat, data, basis = read_for_edit(path)
    insert_after(path, basis, data, chat, 0, [a])
    assert path.read_bytes() == b"\n".join([lines[0], lines[1], enc[0], *lines[2:]]) + b"\n"


def test_headerless_group_chat(tmp_path: Path) -> None:
    path = tmp_path / "group chats" / "2024-05-20@12h00m00s.jsonl"
    tab = STSim.create(path, version="1.12", group=True)
    tab.reply("Bob", "hey").reply("Alice", "hi").save()
    chat, data, basis = read_for_edit(path)
    assert chat.header is None
    insert_after(path, basis, data, chat, 0, [image_message(name="Bob")])
    after = parse_chat(path.read_bytes())
    assert [m.name for m in after.messages] == ["Bob", "Bob", "Alice"]
    assert after.messages[1].marker == "job-1"
    assert path.read_bytes().startswith(data.split(b"\n")[0] + b"\n")


def test_bad_index_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    STSim.create(path)
    before = path.read_bytes()
    chat, data, basis = read_for_edit(path)
    for bad in (-1, 1, 99):
        with pytest.raises(MessageNotFoundError, match="1 message"):
            insert_after(path, basis, data, chat, bad, [image_message()])
    with pytest.raises(ValueError, match="nothing to insert"):
        insert_after(path, basis, data, chat, 0, [])
    assert path.read_bytes() == before
    assert not no_temps(tmp_path)


# --- conflicts -----------------------------------------------------------------------------------


def test_st_save_after_read_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path)
    chat, data, basis = read_for_edit(path)
    tab.send_user("hello").save()
    st_bytes = path.read_bytes()
    with pytest.raises(ChatConflictError, match="changed"):
        insert_after(path, basis, data, chat, 0, [image_message()])
    assert path.read_bytes() == st_bytes
    assert not no_temps(tmp_path)


def test_st_save_between_temp_write_and_check_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save lands after our early check, while the temp file is written."""
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path)
    chat, data, basis = read_for_edit(path)
    real_fsync = os.fsync
    fired: list[int] = []

    def fsync_then_st_saves(fd: int) -> None:
        real_fsync(fd)
        if not fired:
            fired.append(fd)
            tab.narrator("rain").save()

    monkeypatch.setattr(os, "fsync", fsync_then_st_saves)
    with pytest.raises(ChatConflictError):
        insert_after(path, basis, data, chat, 0, [image_message()], rehash=False)
    assert fired
    assert json.loads(path.read_bytes().split(b"\n")[-1])["mes"] == "rain"
    assert not no_temps(tmp_path)


def test_same_inode_size_and_mtime_is_caught_by_the_hash(tmp_path: Path) -> None:
    """An in-place rewrite of equal length with the mtime put back: only the hash sees it."""
    path = tmp_path / "c.jsonl"
    STSim.create(path).reply("Alice", "aaaa").save()
    chat, data, basis = read_for_edit(path)
    st = path.stat()
    with path.open("r+b") as fh:
        fh.write(data.replace(b"aaaa", b"bbbb"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = path.read_bytes()
    assert basis.same_file(path.stat()) or path.stat().st_ctime_ns != basis.ctime_ns
    with pytest.raises(ChatConflictError):
        insert_after(path, basis, data, chat, 1, [image_message()], rehash=True)
    assert path.read_bytes() == changed
    assert basis.needs_rehash  # a fresh basis is re-hashed by default


def test_old_basis_is_not_rehashed_by_default() -> None:
    old = Snapshot(1, 2, mtime_ns=10**18, sha256="x", taken_ns=10**18 + 60 * 10**9)
    assert not old.needs_rehash
    future = Snapshot(1, 2, mtime_ns=10**18, sha256="x", taken_ns=10**18 - 10**9)
    assert future.needs_rehash


def test_deleted_chat_is_a_conflict_and_fresh_read_says_why(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    STSim.create(path)
    chat, data, basis = read_for_edit(path)
    path.unlink()
    with pytest.raises(ChatConflictError, match="disappeared"):
        insert_after(path, basis, data, chat, 0, [image_message()])
    with pytest.raises(ChatReadError, match="does not exist"):
        read_for_edit(path)
    assert list(tmp_path.iterdir()) == []


def test_probe_brackets_the_rename(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    STSim.create(path)
    chat, data, basis = read_for_edit(path)
    seen: list[tuple[str, bytes]] = []

    def probe(stage: str) -> None:
        seen.append((stage, path.read_bytes()))

    insert_after(path, basis, data, chat, 0, [image_message()], probe=probe)
    assert seen == [("final-check", data), ("replaced", path.read_bytes())]
    assert path.read_bytes() != data


def test_snapshot_matches_read_for_edit(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    STSim.create(path)
    _, data, basis = read_for_edit(path)
    again = snapshot(path, data)
    assert (again.inode, again.size, again.mtime_ns, again.sha256) == (
        basis.inode,
        basis.size,
        basis.mtime_ns,
        basis.sha256,
    )
    with pytest.raises(ValueError, match="snapshot"):
        insert_after(path, basis, data + b"x", parse_chat(data), 0, [image_message()])


# --- mode, owner, symlinks -----------------------------------------------------------------------


def test_mode_and_owner_are_copied(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    STSim.create(path)
    path.chmod(0o640)
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        os.chown(path, 4321, 4322)  # root can hand the file to ST's user
        uid, gid = 4321, 4322
    chat, data, basis = read_for_edit(path)
    insert_after(path, basis, data, chat, 0, [image_message()])
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, uid, gid)


def test_symlinked_chat_is_written_at_its_target(tmp_path: Path) -> None:
    real_dir = tmp_path / "elsewhere"
    real_dir.mkdir()
    real = real_dir / "Alice - real.jsonl"
    STSim.create(real)
    root = tmp_path / "data"
    link = root / "default-user" / "chats" / "Alice" / "Alice - link.jsonl"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    chat, data, basis = read_for_edit(link)
    insert_after(link, basis, data, chat, 0, [image_message()])
    assert link.is_symlink()
    assert parse_chat(real.read_bytes()).find_marker("job-1") is not None
    assert not no_temps(real_dir) and not no_temps(link.parent)
    # With the data root given, a chat that resolves outside it is refused, nothing written.
    before = real.read_bytes()
    with pytest.raises(UnsafePathError, match="outside the data root"):
        read_for_edit(link, root=root)
    with pytest.raises(UnsafePathError, match="outside the data root"):
        insert_after(link, basis, data, chat, 0, [image_message()], root=root)
    assert real.read_bytes() == before


def test_dangling_and_looping_symlinks(tmp_path: Path) -> None:
    dangling = tmp_path / "d.jsonl"
    dangling.symlink_to(tmp_path / "missing.jsonl")
    with pytest.raises(ChatReadError, match="does not exist"):
        read_for_edit(dangling)
    loop_a, loop_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    with pytest.raises(ChatReadError):
        read_for_edit(loop_a)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").mkdir()
    with pytest.raises(ChatReadError, match="directory"):
        read_for_edit(tmp_path / "x.jsonl")
    with pytest.raises(ChatReadError, match="does not exist"):
        read_for_edit(tmp_path / "missing.jsonl")
    with pytest.raises(UnsafePathError, match=r"\.\."):
        read_for_edit(tmp_path / "chats" / ".." / ".." / "etc.jsonl")
    (tmp_path / "notes.txt").write_text("{}")
    with pytest.raises(UnsafePathError, match="jsonl"):
        read_for_edit(tmp_path / "notes.txt")
    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(ChatReadError, match="regular"):
        read_for_edit(tmp_path / "fifo.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.jsonl", "notes.txt", "x.jsonl"]


def test_quotes_and_non_ascii_names_work(tmp_path: Path) -> None:
    folder = tmp_path / "chats" / 'Zoë "the" O\'Neil'
    path = folder / 'Zoë "the" O\'Neil - 2026-11-23@22h00m00s000ms ü 日本 a..b.jsonl'
    STSim.create(path, character="Zoë")
    chat, data, basis = read_for_edit(path)
    insert_after(path, basis, data, chat, 0, [image_message(name="Zoë")])
    assert parse_chat(path.read_bytes()).messages[1].name == "Zoë"
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    chat, data, basis = read_for_edit(path)
    assert chat.messages == [] and data == b""
    with pytest.raises(MessageNotFoundError, match="0 message"):
        insert_after(path, basis, data, chat, 0, [image_message()])
    assert path.read_bytes() == b""
    assert list(tmp_path.iterdir()) == [path]


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    garbage = bytes(range(256)) * 4
    path.write_bytes(garbage)
    chat, data, basis = read_for_edit(path)
    assert chat.messages == [] and data == garbage
    with pytest.raises(MessageNotFoundError):
        insert_after(path, basis, data, chat, 0, [image_message()])
    assert path.read_bytes() == garbage
    # A non-UTF-8 line among good ones is kept as it is.
    good = b'{"name":"Alice","is_user":false,"mes":"ok"}'
    path.write_bytes(b"\xff\xfe\xfd\n" + good)
    chat, data, basis = read_for_edit(path)
    insert_after(path, basis, data, chat, 0, [image_message()])
    assert path.read_bytes().startswith(b"\xff\xfe\xfd\n" + good + b"\n")


@pytest.mark.slow
def test_fifty_megabyte_single_line(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    text = "x" * (50 * 1024 * 1024)
    line = js_stringify({"name": "Alice", "is_user": False, "mes": text}).encode()
    path.write_bytes(line)
    del text
    chat, data, basis = read_for_edit(path)
    assert len(chat.messages) == 1
    insert_after(path, basis, data, chat, 0, [image_message()])
    after = path.read_bytes()
    assert after[: len(line)] == line and after[len(line)] == ord("\n")
    assert parse_chat(after).messages[1].marker == "job-1"
    # A 50 MB line that is not JSON: no message to insert after, nothing written.
    path.write_bytes(b"[" * (50 * 1024 * 1024))
    chat, data, basis = read_for_edit(path)
    assert chat.messages == [] and chat.bad_lines == [0]
    with pytest.raises(MessageNotFoundError):
        insert_after(path, basis, data, chat, 0, [image_message()])
    assert path.stat().st_size == 50 * 1024 * 1024


def test_too_big_chat_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.jsonl"
    STSim.create(path)
    monkeypatch.setattr(write, "MAX_CHAT_BYTES", 100)
    with pytest.raises(ChatReadError, match="limit"):
        read_for_edit(path)


# --- failing writes ------------------------------------------------------------------------------


def _failing(errno_: int, after_calls: int = 0) -> Any:
    calls = [0]

    def fail(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > after_calls:
            raise OSError(errno_, os.strerror(errno_))
        return real_write(*args, **kwargs)

    real_write = os.write
    return fail


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_leaves_the_chat_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import errno

    path = tmp_path / "c.jsonl"
    STSim.create(path).reply("Alice", "x" * 200_000).save()
    before = path.read_bytes()
    chat, data, basis = read_for_edit(path)
    if where == "write":
        monkeypatch.setattr(os, "write", _failing(errno.ENOSPC, after_calls=1))
    else:

        def fsync_full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", fsync_full)
    with pytest.raises(ChatWriteError, match="no space left"):
        insert_after(path, basis, data, chat, 1, [image_message()])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]


@pytest.mark.parametrize("code", ["EROFS", "EACCES", "EDQUOT"])
def test_unwritable_folder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    import errno

    path = tmp_path / "c.jsonl"
    STSim.create(path)
    before = path.read_bytes()
    chat, data, basis = read_for_edit(path)
    real_open = os.open
    err = getattr(errno, code)

    def open_refusing_create(p: Any, flags: int, *a: Any, **k: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(err, os.strerror(err), str(p))
        return real_open(p, flags, *a, **k)

    monkeypatch.setattr(os, "open", open_refusing_create)
    words = {"EROFS": "read-only", "EACCES": "permission denied", "EDQUOT": "quota"}[code]
    with pytest.raises(ChatWriteError, match=words):
        insert_after(path, basis, data, chat, 0, [image_message()])
    with pytest.raises(ChatWriteError, match=words):
        write_image(tmp_path / "images", b"png", "png", "Alice")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "images"]
    assert list((tmp_path / "images").iterdir()) == []


@pytest.mark.skipif(os.getuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_by_permissions(tmp_path: Path) -> None:
    folder = tmp_path / "chats"
    path = folder / "c.jsonl"
    STSim.create(path)
    before = path.read_bytes()
    chat, data, basis = read_for_edit(path)
    folder.chmod(0o555)
    try:
        with pytest.raises(ChatWriteError, match="permission denied"):
            insert_after(path, basis, data, chat, 0, [image_message()])
        assert path.read_bytes() == before
        assert [p.name for p in folder.iterdir()] == ["c.jsonl"]
    finally:
        folder.chmod(0o755)


# --- image files ---------------------------------------------------------------------------------


def test_write_image_names_like_st_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "default-user" / "user" / "images" / "Alice"
    when = datetime(2026, 11, 23, 22, 7, 14, 308000)
    first = write_image(folder, b"one", "png", "Alice", when)
    assert first.name == "Alice_2026-11-23@22h07m14s308ms.png"
    second = write_image(folder, b"two", "PNG", "Alice", when)
    assert second.name == "Alice_2026-11-23@22h07m14s308ms_2.png"
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.name, second.name])
    assert first.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_image_in_parallel_never_overwrites(tmp_path: Path) -> None:
    import threading

    when = datetime(2026, 11, 23, 22, 7, 14, 308000)
    results: dict[int, Path] = {}

    def one(n: int) -> None:
        results[n] = write_image(tmp_path, f"image {n}".encode(), "png", "Alice", when)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len({p.name for p in results.values()}) == 8
    for n, path in results.items():
        assert path.read_bytes() == f"image {n}".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in results.values())


def test_write_image_prefix_and_time(tmp_path: Path) -> None:
    aware = datetime(2026, 11, 23, 22, 7, 14, 5000, tzinfo=timezone(timedelta(hours=2)))
    path = write_image(tmp_path, b"x", "webp", 'a/b.c:"d"', aware)
    local = aware.astimezone()
    assert path.parent == tmp_path
    assert path.name == f"ab_cd_{local:%Y-%m-%d@%Hh%Mm%Ss}005ms.webp"
    group = write_image(tmp_path, b"x", "png", "1795473024643")
    assert group.name.startswith("1795473024643_") and group.suffix == ".png"
    long = write_image(tmp_path, b"x", "png", "é" * 300)
    assert len(long.name.encode()) <= 255 and long.name.endswith(".png")


def test_write_image_refuses_bad_input(tmp_path: Path) -> None:
    for ext in ("", "p/ng", "png.sh/..", "x" * 11):
        with pytest.raises(UnsafePathError):
            write_image(tmp_path, b"x", ext, "Alice")
    with pytest.raises(UnsafePathError, match=r"\.\."):
        write_image(tmp_path / "images" / ".." / "..", b"x", "png", "Alice")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ChatWriteError, match="not a folder"):
        write_image(tmp_path / "file", b"x", "png", "Alice")
    with pytest.raises(ValueError, match="empty"):
        write_image(tmp_path, b"", "png", "Alice")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_write_image_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    monkeypatch.setattr(os, "write", _failing(errno.ENOSPC))
    with pytest.raises(ChatWriteError, match="no space left"):
        write_image(tmp_path / "Alice", b"x" * 1000, "png", "Alice")
    assert list((tmp_path / "Alice").iterdir()) == []


def test_write_image_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_link(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    when = datetime(2026, 1, 1, 0, 0, 0)
    a = write_image(tmp_path, b"a", "png", "Alice", when)
    b = write_image(tmp_path, b"b", "png", "Alice", when)
    assert (a.read_bytes(), b.read_bytes()) == (b"a", b"b")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])


def test_link_image_names_like_write_image_and_shares_the_bytes(tmp_path: Path) -> None:
    """A finished image file is linked into the folder, not copied: ST's name, the same file
    (no bytes written again), never over an existing name."""
    source = tmp_path / "pending" / "image-1.png"
    source.parent.mkdir()
    source.write_bytes(b"\x89PNG picture")
    folder = tmp_path / "default-user" / "user" / "images" / "Alice"
    when = datetime(2026, 11, 23, 22, 7, 14, 308000)
    taken = write_image(folder, b"someone else's", "png", "Alice", when)
    linked = write.link_image(folder, source, "png", "Alice", when, root=tmp_path)
    assert linked is not None and linked.name == "Alice_2026-11-23@22h07m14s308ms_2.png"
    assert taken.read_bytes() == b"someone else's"
    assert linked.read_bytes() == b"\x89PNG picture"
    assert linked.stat().st_ino == source.stat().st_ino and source.stat().st_nlink == 2
    source.unlink()  # the pending folder goes after the commit: the image stays
    assert linked.read_bytes() == b"\x89PNG picture" and linked.stat().st_nlink == 1


@pytest.mark.parametrize("why", ["EXDEV", "EPERM", "two links", "symlink"])
def test_link_image_declines_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """Another file system, no hard links, or a source that is not a plain file of its own:
    no link (the caller copies), and nothing left in the folder."""
    source = tmp_path / "image-1.png"
    source.write_bytes(b"picture")
    if why in ("EXDEV", "EPERM"):
        code = getattr(errno, why)

        def refused(*args: Any, **kwargs: Any) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "link", refused)
    elif why == "two links":
        os.link(source, tmp_path / "elsewhere.png")
    else:
        target = tmp_path / "target.png"
        source.rename(target)
        source.symlink_to(target)
    folder = tmp_path / "images" / "Alice"
    assert write.link_image(folder, source, "png", "Alice") is None
    assert list(folder.iterdir()) == []


def test_link_image_refuses_a_folder_outside_the_root(tmp_path: Path) -> None:
    from daemon.errors import ImageFolderOutsideError

    root = tmp_path / "data"
    (root / "u" / "user" / "images").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "u" / "user" / "images" / "Alice").symlink_to(outside)
    source = tmp_path / "image-1.png"
    source.write_bytes(b"picture")
    with pytest.raises(ImageFolderOutsideError):
        write.link_image(root / "u" / "user" / "images" / "Alice", source, "png", "A", root=root)
    assert list(outside.iterdir()) == []


# --- stale temps ---------------------------------------------------------------------------------


def test_cleanup_removes_only_our_temps(tmp_path: Path) -> None:
    sub = tmp_path / "Alice"
    sub.mkdir()
    ours = [
        our_temp_name(tmp_path / "Alice - x.jsonl"),
        our_temp_name(tmp_path / "Alice_2026.png"),
        our_temp_name(sub / "y.jsonl"),
    ]
    others = [
        tmp_path / "Alice - x.jsonl",
        tmp_path / "Alice - x.jsonl.3409781854",  # ST's temp: ST removes its own
        tmp_path / ".hidden.tmp",
        tmp_path / "notes.st-imagegen.abc.tmp",
    ]
    for p in [*ours, *others]:
        p.write_bytes(b"x")
    assert all(is_our_temp(p.name) for p in ours)
    assert cleanup_stale_temps(tmp_path) == 2
    assert cleanup_stale_temps(tmp_path, recursive=True) == 1
    assert sorted(tmp_path.iterdir()) == sorted([*others, sub])
    assert cleanup_stale_temps(tmp_path / "missing") == 0


# --- markers -------------------------------------------------------------------------------------


def test_marker_in_swipe_info_only_does_not_count(tmp_path: Path) -> None:
    copied = {
        "name": "Alice",
        "is_user": False,
        "mes": "reply",
        "extra": {},
        "swipes": ["reply"],
        "swipe_id": 0,
        "swipe_info": [{"send_date": "x", "extra": {MARKER_KEY: "job-9"}}],
    }
    chat = parse_chat(js_stringify(copied).encode())
    assert chat.find_marker("job-9") is None
    assert chat.markers() == {}


def test_marker_survives_st_loading_and_saving(tmp_path: Path) -> None:
    for version in ("1.12", "1.14", "1.18"):
        path = tmp_path / version / "c.jsonl"
        STSim.create(path, version=version).send_user("hi").reply("Alice", "reply").save()
        chat, data, basis = read_for_edit(path)
        insert_after(path, basis, data, chat, 2, [image_message("job-7")])
        tab = STSim.open(path, version=version)
        tab.send_user("next").save()
        after = parse_chat(path.read_bytes())
        assert list(after.markers()) == ["job-7"]
        ours = after.find_marker("job-7")
        assert ours is not None and ours.index == 3 and ours.is_system
        if version == "1.18":  # ST copied extra into swipe_info; not a second marker
            assert ours.data["swipe_info"][0]["extra"][MARKER_KEY] == "job-7"
        else:  # up to 1.14 hidden messages get no swipe fields
            assert "swipe_info" not in ours.data
        extra = ours.extra
        assert extra["media"][0]["url"] == URL
        assert extra["inline_image"] is False
        if version == "1.12":
            assert extra["image"] == URL
        else:
            assert "image" not in extra and extra["media_index"] == 0


def test_stale_tab_drops_our_line_and_reload_keeps_it(tmp_path: Path) -> None:
    """The race this module cannot prevent, reproduced with the simulator (sillytavern.md §8.1)."""
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path)
    tab.send_user("hi").reply("Alice", "reply").save()
    chat, data, basis = read_for_edit(path)
    insert_after(path, basis, data, chat, 2, [image_message("job-3")])
    tab.narrator("stale").save()
    assert parse_chat(path.read_bytes()).find_marker("job-3") is None
    chat, data, basis = read_for_edit(path)
    insert_after(path, basis, data, chat, 2, [image_message("job-3")])
    tab.load().narrator("fresh").save()
    assert parse_chat(path.read_bytes()).find_marker("job-3") is not None


# --- hashing shortcut ----------------------------------------------------------------------------


@pytest.fixture
def big_chat(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "big.jsonl"
    lines = [js_stringify({"chat_metadata": {"integrity": "s"}, "user_name": "unused"})]
    lines += [
        js_stringify({"name": "Alice", "is_user": i % 2 == 0, "mes": f"message {i} " + "y" * 500})
        for i in range(20_000)
    ]
    path.write_bytes("\n".join(lines).encode())
    yield path


@pytest.mark.parametrize("where", [0, 5_000, 19_999])
def test_big_chat_version_told_before_the_rename_is_the_file_after(
    big_chat: Path, where: int
) -> None:
    """A 10 MB chat (early flushes while the copy is written): the version handed to
    ``before_replace`` is the file the rename puts in place, and a later save of the same
    size is another version."""
    chat, data, basis = read_for_edit(big_chat)
    recorded: list[Written] = []
    message = image_message()
    insert_after(big_chat, basis, data, chat, where, [message], before_replace=recorded.append)
    versions = [w.version for w in recorded]
    assert versions == [FileVersion.of(big_chat.stat())]
    assert versions[0].size == len(data) + len(json.dumps(message, separators=(",", ":"))) + 1
    STSim.open(big_chat).save()  # ST's save of what it loaded: a new file
    assert FileVersion.of(big_chat.stat()) != versions[0]


# --- the kernel copy of the unchanged prefix -----------------------------------------------------


def _fresh_chat(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "c.jsonl"
    STSim.create(path).send_user("hi").reply("Alice", "x" * 5000).save()
    return path, path.read_bytes()


@pytest.mark.parametrize("how", ["missing", "EXDEV", "ENOSYS", "short"])
def test_without_kernel_copy_the_bytes_come_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    import errno

    path, before = _fresh_chat(tmp_path)
    chat, data, basis = read_for_edit(path)
    if how == "missing":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    else:
        real_copy = os.copy_file_range

        def copy_range(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
            if how == "short":  # copies a little, then reports end of file
                return real_copy(src, dst, min(count, 100), offset_src) if offset_src == 0 else 0
            code = getattr(errno, how)
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "copy_file_range", copy_range)
    result = insert_after(path, basis, data, chat, 1, [image_message()])
    after = path.read_bytes()
    line = json.dumps(image_message(), ensure_ascii=False, separators=(",", ":")).encode()
    lines = before.split(b"\n")  # header, greeting, user message 1, reply
    assert after.split(b"\n") == [*lines[:3], line, *lines[3:]]
    assert result.version == FileVersion.of(path.stat()) and result.size == len(after)


def test_disk_full_during_kernel_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    path, before = _fresh_chat(tmp_path)
    chat, data, basis = read_for_edit(path)

    def full(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", full)
    with pytest.raises(ChatWriteError, match="no space left"):
        insert_after(path, basis, data, chat, 1, [image_message()])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]


# --- edits by line end, lookups while hashing ----------------------------------------------------


def test_read_for_edit_with_looks_while_hashing(big_chat: Path) -> None:
    """The look runs on the chat the snapshot describes (the hash in a helper thread for a big
    chat); its result comes back, and what it raises is raised with nothing left running."""
    import threading

    def look(chat: Any) -> tuple[int, int]:
        line = chat.find_line(parse_chat(chat.data).messages[-1].identity)
        return line.start, line.end

    chat, data, basis, (start, end) = write.read_for_edit_with(big_chat, look)
    assert (
        basis.sha256
        == hashlib.sha256(big_chat.read_bytes()).hexdigest()
        == snapshot(big_chat, data).sha256
    )
    assert chat.data is data and len(data) > write._PARALLEL_HASH_MIN
    assert data[start:end] == data.rsplit(b"\n", 1)[1] and end == len(data)

    def broken(chat: Any) -> None:
        raise RuntimeError("look failed")

    with pytest.raises(RuntimeError, match="look failed"):
        write.read_for_edit_with(big_chat, broken)
    assert not [t for t in threading.enumerate() if t.name == "st-imagegen-hash"]


@pytest.mark.parametrize("trailing", [b"", b"\n"])
def test_insert_after_line_matches_insert_after(tmp_path: Path, trailing: bytes) -> None:
    """By line end or by message number: the same bytes, the same planned hash."""
    lines = [
        js_stringify({"chat_metadata": {"integrity": "s"}, "user_name": "unused"}).encode(),
        b'{"name":"User","is_user":true,"mes":"hi"}',
        b"not json",
        b'{"name":"Alice","is_user":false,"mes":"hello"}',
    ]
    original = b"\n".join(lines) + trailing
    for index in (0, 1):
        by_index, by_line = tmp_path / f"a{index}.jsonl", tmp_path / f"b{index}.jsonl"
        by_index.write_bytes(original)
        by_line.write_bytes(original)
        chat, data, basis = read_for_edit(by_index)
        insert_after(by_index, basis, data, chat, index, [image_message()])
        chat, data, basis = read_for_edit(by_line)
        end = chat.message_span(index)[1]
        recorded: list[Written] = []
        result = write.insert_after_line(
            by_line, basis, data, end, [image_message()], before_replace=recorded.append
        )
        assert by_line.read_bytes() == by_index.read_bytes()
        assert [w.version for w in recorded] == [result.version]
        assert result.version == FileVersion.of(by_line.stat())


def test_insert_after_line_refuses_what_is_no_line_end(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    data = b'{"name":"A","mes":"x"}\n{"name":"B","mes":"y"}\n'
    path.write_bytes(data)
    _, data, basis = read_for_edit(path)
    for bad in (0, 1, 5, len(data), len(data) + 1, -1):
        with pytest.raises(ValueError, match="not the end of a line"):
            write.insert_after_line(path, basis, data, bad, [image_message()])
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]
    with pytest.raises(ValueError, match="snapshot"):
        write.insert_after_line(path, basis, data + b"x", 22, [image_message()])


def test_before_replace_failing_replaces_nothing(tmp_path: Path) -> None:
    """``before_replace`` gets the new file's version before the rename; if it raises, the
    chat is left as it was and no temp file stays."""
    path = tmp_path / "c.jsonl"
    STSim.create(path).reply("Alice", "hello").save()
    before = path.read_bytes()
    chat, data, basis = read_for_edit(path)
    seen: list[Written] = []

    def refuse(version: Written) -> None:
        seen.append(version)
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError, match="store down"):
        insert_after(path, basis, data, chat, 1, [image_message()], before_replace=refuse)
    assert path.read_bytes() == before and not no_temps(tmp_path)
    assert len(seen) == 1 and seen[0].version.size > len(before)
    result = insert_after(path, basis, data, chat, 1, [image_message()])
    assert result.version == FileVersion.of(path.stat())
    assert result.size == seen[0].version.size


def test_failed_early_flush_fails_the_insert(
    big_chat: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big chat is flushed while it is copied; an I/O error of such an early flush is not
    lost (the kernel reports it once): the insert fails, nothing changed, no temp left."""
    before = big_chat.read_bytes()
    assert len(before) > write._WRITEBACK_CHUNK
    chat, data, basis = read_for_edit(big_chat)
    flushes: list[int] = []

    def failing_flush(fd: int) -> None:
        flushes.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing_flush)
    with pytest.raises(ChatWriteError, match="Input/output error"):
        insert_after(big_chat, basis, data, chat, 5, [image_message()])
    assert flushes
    assert big_chat.read_bytes() == before
    assert not no_temps(big_chat.parent)
    monkeypatch.undo()
    result = insert_after(big_chat, basis, data, chat, 5, [image_message()])
    assert result.version == FileVersion.of(big_chat.stat())
    assert result.size == len(big_chat.read_bytes()) > len(data)


def test_a_small_chat_is_written_without_helper_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the sizes where they pay off, an insert starts no helper thread (no early flush,
    no background close; the new version is never hashed): each costs a thread start and,
    with the flush, a wait on the file's lock, for nothing the final fsync would not do."""
    path, _ = _fresh_chat(tmp_path)
    started: list[str] = []
    real_init = write._Background.__init__

    def counting(self: Any, fn: Any, name: str) -> None:
        started.append(name)
        real_init(self, fn, name)

    monkeypatch.setattr(write._Background, "__init__", counting)
    monkeypatch.setattr(write, "_close_in_background", lambda fd: started.append("close"))
    chat, data, basis = read_for_edit(path)
    result = insert_after(path, basis, data, chat, 1, [image_message()])
    assert started == []
    assert result.version == FileVersion.of(path.stat())


def test_the_last_slice_of_a_big_copy_is_left_to_the_fsync(
    big_chat: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Early flushes run only while more of the chat is still to be copied."""
    monkeypatch.setattr(write, "_WRITEBACK_CHUNK", len(big_chat.read_bytes()) // 2 + 1)
    kicks: list[int] = []
    real_kick = write._Writeback.kick

    def counting(self: Any) -> None:
        kicks.append(1)
        real_kick(self)

    monkeypatch.setattr(write._Writeback, "kick", counting)
    chat, data, basis = read_for_edit(big_chat)
    result = insert_after(big_chat, basis, data, chat, len(chat.messages) - 1, [image_message()])
    assert len(kicks) == 1  # after the first of the two slices, not after the last
    assert result.version == FileVersion.of(big_chat.stat())
    assert result.size == len(big_chat.read_bytes())


# --- our mark -------------------------------------------------------------------------------------


def _xattrs_here(folder: Path) -> bool:
    probe = folder / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except (OSError, AttributeError):
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    if not _xattrs_here(tmp_path):
        pytest.skip("this file system keeps no user extended attributes")
    return tmp_path


def test_our_write_carries_our_mark_and_st_saves_do_not(marks: Path) -> None:
    """The file we rename in is marked ours (its size and mtime, on disk with its bytes);
    ST's save of the same chat is a new file without it; so is a file edited in place."""
    path = marks / "c.jsonl"
    STSim.create(path).send_user("hi").reply("Alice", "hello").save()
    chat, data, basis = read_for_edit(path)
    assert not basis.marked
    told: list[Written] = []
    result = insert_after(path, basis, data, chat, 1, [image_message()], before_replace=told.append)
    st = path.stat()
    assert told == [Written(FileVersion.of(st), marked=True)] and result.marked
    assert os.getxattr(path, OUR_MARK) == f"{st.st_size}:{st.st_mtime_ns}".encode()
    assert read_for_edit(path)[2].marked

    STSim.open(path).save()  # a tab that loaded our version saves it: theirs
    assert not read_for_edit(path)[2].marked

    insert_after(path, *_reread(path), 1, [image_message("job-2")])
    assert read_for_edit(path)[2].marked
    with path.open("ab") as fh:  # an editor writing in place: the same inode, new bytes
        fh.write(b"\n")
    assert not read_for_edit(path)[2].marked


def _reread(path: Path) -> tuple[Any, bytes, Any]:
    chat, data, basis = read_for_edit(path)
    return basis, data, chat


def test_a_copy_that_keeps_the_mark_but_not_the_time_is_not_ours(marks: Path) -> None:
    path = marks / "c.jsonl"
    STSim.create(path).send_user("hi").reply("Alice", "hello").save()
    chat, data, basis = read_for_edit(path)
    insert_after(path, basis, data, chat, 1, [image_message()])
    copy = marks / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    os.setxattr(copy, OUR_MARK, os.getxattr(path, OUR_MARK))
    os.utime(copy, ns=(1, 1))
    assert not read_for_edit(copy)[2].marked


def test_where_marks_are_refused_the_write_goes_on_unmarked(
    marks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without extended attributes (or one refusing them): the chat is written
    all the same, and the caller is told the file is not marked."""

    def refuse(*args: Any) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(write, "_setxattr", refuse)
    path = marks / "c.jsonl"
    STSim.create(path).send_user("hi").reply("Alice", "hello").save()
    chat, data, basis = read_for_edit(path)
    told: list[Written] = []
    result = insert_after(path, basis, data, chat, 1, [image_message()], before_replace=told.append)
    assert told == [Written(FileVersion.of(path.stat()), marked=False)]
    assert not result.marked and not read_for_edit(path)[2].marked
    assert parse_chat(path.read_bytes()).find_marker("job-1") is not None
