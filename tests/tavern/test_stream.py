"""Streaming edits of big chats: the same findings and the same bytes as the in-memory path,
at every buffer size, with the same conflict rules."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import ChatConflictError
from daemon.tavern import stream
from daemon.tavern.chat import Chat, LineMessage, MessageIdentity, read_chat
from daemon.tavern.write import (
    FileVersion,
    Written,
    build_image_message,
    insert_after_line,
    read_for_edit,
)
from tests.stsim import STSim

JOB = "01JF3K2M4N5P6Q7R8S9T0VWXYZ"
OTHER = "01JF3K2M4N5P6Q7R8S9T0VWXY0"


def _ours(name: str, job: str) -> dict[str, Any]:
    return build_image_message(
        name=name,
        urls=[f"/user/images/{name}/{job}.png"],
        prompt="a lantern",
        caption="",
        send_date="2026-11-23T12:00:00.000Z",
        job_id=job,
    )


def _chat(tmp_path: Path, *, trailing_newline: bool = True) -> Path:
    """A chat as ST writes it, with a malformed line, and our image message after a reply."""
    path = tmp_path / "default-user" / "chats" / "Alice" / "Alice - big.jsonl"
    tab = STSim.create(path)
    for n in range(6):
        tab.send_user(f"Question {n}?")
        tab.reply("Alice", f"Answer {n}, about a lantern over the pier. " * 3)
    tab.save()
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    lines.insert(4, b'{"broken": ')  # a line ST drops
    reply = 9  # the line of an "Answer" (header + 2 per turn + the broken one)
    lines.insert(reply + 1, json.dumps(_ours("Alice", OTHER)).encode())
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    path.write_bytes(data)
    return path


def _memory_plan(path: Path, job: str, identity: MessageIdentity) -> tuple[Any, ...]:
    """What the committer's in-memory path finds (see daemon.engine.commit._Plan)."""
    chat, _, snap = read_for_edit(path)
    present = chat.find_marker_line(job)
    reply = chat.find_line(identity)
    end = -1
    if reply is not None:
        end = reply.end
        for start, line_end in chat.lines_after(end):
            line = chat.line_message(start, line_end)
            if line is None:
                continue
            if line.message.marker is None:
                break
            end = line_end
    return _span(present), _span(reply), end, chat.date_style, snap.sha256


def _span(line: LineMessage | None) -> tuple[int, int, str] | None:
    return None if line is None else (line.start, line.end, line.message.mes)


def _identities(path: Path) -> list[MessageIdentity]:
    chat: Chat = read_chat(path)[0]
    return [m.identity for m in chat.messages]


@pytest.mark.parametrize("chunk", [7, 64, 1000, stream.CHUNK])
@pytest.mark.parametrize("trailing", [True, False])
def test_find_lines_finds_what_the_in_memory_path_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, trailing: bool
) -> None:
    monkeypatch.setattr(stream, "CHUNK", chunk)
    path = _chat(tmp_path, trailing_newline=trailing)
    for job in (JOB, OTHER):
        for identity in _identities(path):
            found = stream.find_lines(path, job, identity)
            want = _memory_plan(path, job, identity)
            got = (
                _span(found.present),
                _span(found.reply),
                found.insert_end,
                found.date_style,
                found.snapshot.sha256,
            )
            assert got == want, (chunk, job, identity)
    assert stream.find_lines(path, JOB, _identities(path)[0]).snapshot.sha256 == (
        hashlib.sha256(path.read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("chunk", [7, 1000, stream.CHUNK])
@pytest.mark.parametrize("trailing", [True, False])
@pytest.mark.parametrize("hashed", [True, False])
def test_insert_at_writes_the_bytes_the_in_memory_insert_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    trailing: bool,
    hashed: bool,
) -> None:
    """Hashed or not (an old chat's read skips the hash): the same bytes as the in-memory
    insert, and the version told before the rename is the file in place after it."""
    monkeypatch.setattr(stream, "CHUNK", chunk)
    path = _chat(tmp_path, trailing_newline=trailing)
    twin = path.with_name("Alice - twin.jsonl")
    pristine = path.read_bytes()
    identities = _identities(path)
    for identity in (identities[3], identities[-1]):  # a reply in the middle, the last line
        twin.write_bytes(path.read_bytes())
        message = _ours("Alice", JOB)
        if not hashed:
            hour_ago = time.time() - 3600
            os.utime(path, (hour_ago, hour_ago))
        found = stream.find_lines(path, JOB, identity, hashed=hashed)
        assert (found.snapshot.sha256 == "") is not hashed
        recorded: list[Written] = []
        snap = stream.insert_at(
            path, found.snapshot, found.insert_end, [message], before_replace=recorded.append
        )
        _, data, basis = read_for_edit(twin)
        insert_after_line(twin, basis, data, found.insert_end, [message])
        assert path.read_bytes() == twin.read_bytes()
        assert [w.version for w in recorded] == [snap.version] == [FileVersion.of(path.stat())]
        assert found.snapshot.marked is False  # the chat as ST wrote it
        assert snap.sha256 == ""
        assert read_chat(path)[0].find_marker(JOB) is not None
        path.write_bytes(pristine)


def test_insert_at_refuses_a_chat_saved_since_it_was_read(tmp_path: Path) -> None:
    path = _chat(tmp_path)
    found = stream.find_lines(path, JOB, _identities(path)[-1])
    tab = STSim.open(path)
    tab.send_user("One more.").save()  # ST: a new file renamed over the chat
    saved = path.read_bytes()
    with pytest.raises(ChatConflictError):
        stream.insert_at(path, found.snapshot, found.insert_end, [_ours("Alice", JOB)])
    assert path.read_bytes() == saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_two_lines_with_one_identity_need_the_full_read(tmp_path: Path) -> None:
    path = _chat(tmp_path)
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    path.write_bytes(b"\n".join([*lines, lines[-1]]) + b"\n")  # a duplicated reply line
    with pytest.raises(stream.NeedsFullRead):
        stream.find_lines(path, JOB, _identities(path)[-1])


def test_a_full_disk_while_streaming_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from daemon.errors import ChatWriteError

    path = _chat(tmp_path)
    before = path.read_bytes()
    found = stream.find_lines(path, JOB, _identities(path)[-1])
    calls = {"n": 0}
    real_write = stream._write

    def full(fd: int, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the new line (the prefix went through the kernel)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(stream, "_write", full)
    monkeypatch.setattr(stream, "CHUNK", 64)
    with pytest.raises(ChatWriteError, match="no space left"):
        stream.insert_at(path, found.snapshot, found.insert_end, [_ours("Alice", JOB)])
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_fresh_chat_is_hashed_even_when_not_asked(tmp_path: Path) -> None:
    """A chat saved within the last seconds may be rewritten without a new size or mtime: its
    insert must compare hashes, so the read takes the hash anyway."""
    path = _chat(tmp_path)
    found = stream.find_lines(path, JOB, _identities(path)[3], hashed=False)
    assert found.snapshot.needs_rehash
    assert found.snapshot.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_streaming_insert_marks_its_file_ours(tmp_path: Path) -> None:
    """As the in-memory insert: the file renamed in carries our mark (where the file system
    keeps extended attributes), and the next streaming read sees it; ST's save drops it."""
    path = _chat(tmp_path, trailing_newline=True)
    identity = _identities(path)[-1]
    found = stream.find_lines(path, JOB, identity)
    told: list[Written] = []
    snap = stream.insert_at(
        path, found.snapshot, found.insert_end, [_ours("Alice", JOB)], before_replace=told.append
    )
    again = stream.find_lines(path, OTHER, identity)
    assert [w.marked for w in told] == [snap.marked] == [again.snapshot.marked]
    if not snap.marked:
        pytest.skip("this file system keeps no user extended attributes")
    assert again.snapshot.version == snap.version
    STSim.open(path).save()
    assert not stream.find_lines(path, JOB, identity).snapshot.marked
