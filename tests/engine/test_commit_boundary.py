"""The data root is a boundary: nothing the committer writes or reads leads out of it, and a
character whose names are reserved still gets a stable image folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from daemon.engine.commit import apply as commit_mod
from daemon.engine.commit.apply import message_urls
from daemon.engine.store import JobState
from daemon.errors import ChatConflictError, UnsafePathError
from daemon.tavern import layout
from daemon.tavern import write as tavern_write
from daemon.tavern.chat import read_chat
from daemon.tavern.files import open_regular
from tests.engine.test_commit_support import USER, Harness, chat_path, markers
from tests.stsim import STSim

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _accepted(h: Harness, owner: str = "Alice", speaker: str = "Alice") -> tuple[Path, Any]:
    path = chat_path(h.root, owner, f"{owner} - chat")
    tab = STSim.create(path)
    tab.send_user("Describe the scene.").save()
    tab.reply(speaker, "The glade glows.").save()
    return path, await h.accepted(path)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


async def test_a_symlinked_image_folder_out_of_the_root_is_refused_and_the_job_kept(
    harness: Harness, tmp_path: Path
) -> None:
    """Regression: images followed `user/images/Alice -> /elsewhere` out of the data root."""
    h = harness
    path, job = await _accepted(h)
    before = path.read_bytes()
    outside = tmp_path / "outside"
    outside.mkdir()
    images = h.root / USER / "user" / "images"
    images.mkdir(parents=True)
    (images / "Alice").symlink_to(outside, target_is_directory=True)

    done = await h.committer.commit_job(job)

    assert done.state is JobState.ACCEPTED  # kept, to be committed once the folder is fixed
    assert done.last_error is not None and "outside the data root" in done.last_error
    assert _files(outside) == []
    assert path.read_bytes() == before
    assert h.approval.pending_path(job.id).exists()

    (images / "Alice").unlink()
    done = await h.committer.commit_job(done)
    assert done.state is JobState.COMMITTED
    assert markers(path) == [job.id]
    assert len(_files(images / "Alice")) == 1 and _files(outside) == []


async def test_a_dangling_symlinked_images_folder_creates_nothing_outside(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    _, job = await _accepted(h)
    target = tmp_path / "not-yet" / "deep"
    (h.root / USER / "user").mkdir(parents=True)
    (h.root / USER / "user" / "images").symlink_to(target, target_is_directory=True)
    done = await h.committer.commit_job(job)
    assert done.state is JobState.ACCEPTED and "outside the data root" in (done.last_error or "")
    assert not (tmp_path / "not-yet").exists()  # mkdir did not follow the link


async def test_a_chat_swapped_for_a_symlink_between_retries_is_not_followed(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the conflict-retry loop re-read the chat without the root check."""
    h = harness
    path, job = await _accepted(h)
    outside = tmp_path / "elsewhere.jsonl"
    real_read = tavern_write.read_for_edit_with
    calls = {"n": 0}

    def swap_then_read(p: Path, look: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            # ST saves meanwhile, and someone swaps the chat for a link out of the root.
            path.replace(outside)
            path.symlink_to(outside)
            raise ChatConflictError("chat kept changing while being read")
        return real_read(p, look, **kwargs)

    monkeypatch.setattr(commit_mod, "read_for_edit_with", swap_then_read)
    before = path.read_bytes()
    done = await h.committer.commit_job(job)
    assert calls["n"] == 2
    assert done.state is JobState.FAILED
    assert "outside the data root" in (done.last_error or "")
    assert outside.read_bytes() == before  # never written


def test_opening_a_resolved_chat_refuses_a_symlink_swapped_in(tmp_path: Path) -> None:
    real = tmp_path / "chat.jsonl"
    real.write_text("{}\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    with pytest.raises(UnsafePathError, match="replaced by a symlink"):
        open_regular(link, UnsafePathError, "chat", "a chat file", nofollow=True)
    fd, _ = open_regular(link, UnsafePathError, "chat", "a chat file")  # by name: followed
    os.close(fd)


@pytest.mark.parametrize("name", ["con", "aux", "..."])
async def test_a_reserved_character_name_gets_a_stable_folder(harness: Harness, name: str) -> None:
    """Regression: "image folder name is empty once sanitized" and the job could never commit."""
    h = harness
    path, first = await _accepted(h, owner=name, speaker=name)
    done = await h.committer.commit_job(first)
    assert done.state is JobState.COMMITTED, done.last_error
    tab = STSim.open(path)
    tab.send_user("And then?").save()
    tab.reply(name, "The river sings.").save()
    second = await h.accepted(path)
    assert (await h.committer.commit_job(second)).state is JobState.COMMITTED

    chat, _ = read_chat(path)
    folders = set()
    for job_id in (first.id, second.id):
        message = chat.find_marker(job_id)
        assert message is not None
        (url,) = message_urls(message.data)
        folders.add(url.removeprefix("/user/images/").split("/")[0])
    assert len(folders) == 1  # the same folder for the same character, every time
    (folder,) = folders
    assert folder == layout.fallback_folder_name(name) and layout.sanitize_filename(folder)
    assert folder != layout.fallback_folder_name("other")
