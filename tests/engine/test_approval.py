"""Pending folders and drop folders, on real files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from PIL import Image
from pydantic import SecretStr

from daemon.engine.jobs.approval import (
    JOB_FILE,
    PROMPT_FILE,
    REFUSED_FILE,
    Action,
    Approval,
)
from daemon.engine.store import Job, JobState, Store
from daemon.errors import UnsafePathError
from daemon.jobstate import ReplyKey


@dataclass(frozen=True)
class Img:
    data: bytes
    format: str
    width: int = 8
    height: int = 8


def img(fmt: str = "png", colour: str = "red") -> Img:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format={"jpeg": "JPEG"}.get(fmt, fmt.upper()))
    return Img(buf.getvalue(), fmt)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def job(tmp_path: Path) -> AsyncIterator[Job]:
    store = await Store.open(tmp_path / "state.db")
    try:
        made = await store.create_job(
            reply=ReplyKey(
                "default-user",
                "default-user/chats/Alice/Alice - 1.jsonl",
                "Alice",
                "2026-11-23T12:00:00.000Z",
                "0:abcd",
            ),
            character="Alice",
            is_group=False,
            speaker="Alice",
            message_index=3,
            excerpt="She smiles.",
            meta={"negative": "blurry"},
        )
        assert made is not None
        moved = await store.transition(
            made.id, JobState.QUEUED, JobState.IMAGING, prompt="a red fox in snow"
        )
        assert moved is not None
        yield moved
    finally:
        await store.close()


@pytest.fixture
def approval(tmp_path: Path) -> Approval:
    return Approval(tmp_path / "state")


pytestmark = pytest.mark.anyio


def visible(approval: Approval) -> list[str]:
    return sorted(p.name for p in approval.pending_dir.iterdir() if not p.name.startswith("."))


async def test_folders_are_created(approval: Approval) -> None:
    for name in ("pending", "accepted", "rejected", "regenerate"):
        assert (approval.state_dir / name).is_dir()


async def test_write_pending(approval: Approval, job: Job) -> None:
    images = [img("png"), img("webp", "blue"), img("jpeg", "green")]
    folder = approval.write_pending(
        job,
        images,
        {
            "provider": "openai",
            "model": "dall-e-3",
            "api_key": "sk-secret-value",
            "headers": {"Authorization": "Bearer sk-secret-value", "X-Ok": "1"},
            "key": SecretStr("sk-secret-value"),
            "text_model": "gpt-4",
            "access_token": "tok-secret-value",
            "max_tokens": 300,
        },
    )
    assert folder == approval.pending_path(job.id) == approval.state_dir / "pending" / job.id
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["image-1.png", "image-2.webp", "image-3.jpg", JOB_FILE]
    assert (folder / "image-2.webp").read_bytes() == images[1].data
    text = (folder / JOB_FILE).read_text()
    assert "sk-secret-value" not in text
    doc = json.loads(text)
    assert doc["job"] == job.id and doc["prompt"] == "a red fox in snow"
    assert doc["negative"] == "blurry"
    assert (doc["user"], doc["chat"], doc["character"], doc["speaker"]) == (
        job.user,
        job.chat,
        "Alice",
        "Alice",
    )
    assert doc["message_index"] == 3 and doc["excerpt"] == "She smiles."
    assert doc["revision"] == "0:abcd"
    assert (doc["provider"], doc["model"]) == ("openai", "dall-e-3")
    assert doc["created"] == job.created_at.isoformat()
    # Secret keys follow the logs' rule: token counts are not secrets.
    assert doc["info"] == {"headers": {"X-Ok": "1"}, "text_model": "gpt-4", "max_tokens": 300}
    assert "tok-secret-value" not in text
    assert [i["file"] for i in doc["images"]] == ["image-1.png", "image-2.webp", "image-3.jpg"]
    assert f"st-imagegen accept {job.id}" in doc["how_to"]["accept"]
    assert PROMPT_FILE in doc["how_to"]["regenerate"]
    # nothing temporary left behind
    assert [p.name for p in approval.pending_dir.iterdir()] == [job.id]
    assert approval.kept_images(job.id) == [folder / n for n in names[:3]]
    assert approval.read_info(job.id) == doc


async def test_write_pending_twice_replaces(approval: Approval, job: Job) -> None:
    approval.write_pending(job, [img("png"), img("png")], {})
    folder = approval.write_pending(job, [img("webp")], {})
    assert sorted(p.name for p in folder.iterdir()) == ["image-1.webp", JOB_FILE]
    assert visible(approval) == [job.id]
    assert approval.finish(job.id) == 1
    assert list(approval.pending_dir.iterdir()) == []  # the old version went too


async def test_write_pending_never_shows_a_half_folder(approval: Approval, job: Job) -> None:
    """A reader polling the pending folder only ever sees complete job folders."""
    stop = threading.Event()
    seen: list[list[str]] = []

    def watch() -> None:
        while True:
            last = stop.is_set()  # one more look after the writer stopped: never zero looks
            folder = approval.pending_path(job.id)
            with contextlib.suppress(FileNotFoundError):
                seen.append(sorted(p.name for p in folder.iterdir()))
            if last:
                return

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        for n in range(1, 30):
            approval.write_pending(job, [img("png")] * (1 + n % 3), {})
    finally:
        stop.set()
        reader.join()
    assert seen, "the reader never saw the folder"
    for names in seen:
        assert JOB_FILE in names, names
        assert len(names) >= 2, names
    assert visible(approval) == [job.id]


async def test_write_pending_failure_leaves_nothing(approval: Approval, job: Job) -> None:
    with pytest.raises(ValueError, match="not an image format"):
        approval.write_pending(job, [img("png"), Img(b"x", "../evil")], {})
    assert list(approval.pending_dir.iterdir()) == []
    with pytest.raises(ValueError, match="at least one"):
        approval.write_pending(job, [], {})


async def test_deleted_images_are_not_kept(approval: Approval, job: Job) -> None:
    folder = approval.write_pending(job, [img(), img(), img()], {})
    (folder / "image-2.png").unlink()
    (folder / "notes.txt").write_text("mine")
    (folder / "image-9.png").symlink_to("/etc/passwd")
    assert [p.name for p in approval.kept_images(job.id)] == ["image-1.png", "image-3.png"]
    # moved to accepted/: the same images, found there
    target = approval.state_dir / "accepted" / job.id
    folder.rename(target)
    assert [p.parent for p in approval.kept_images(job.id)] == [target, target]
    assert approval.kept_images("01UNKNOWN0000000000000000X") == []


async def test_drop_actions(approval: Approval, job: Job) -> None:
    folder = approval.write_pending(job, [img()], {})
    assert approval.drop_actions() == []
    folder.rename(approval.state_dir / "accepted" / job.id)
    assert approval.drop_actions() == [(job.id, Action.ACCEPT)]
    assert approval.drop_actions() == []  # reported once per arrival
    # moved on to rejected/: a new arrival
    (approval.state_dir / "accepted" / job.id).rename(approval.state_dir / "rejected" / job.id)
    assert approval.drop_actions() == [(job.id, Action.REJECT)]
    assert str(Action.REGENERATE) == "regenerate"


async def test_drop_folders_ignore_hostile_and_unknown_entries(
    approval: Approval, job: Job, tmp_path: Path
) -> None:
    accepted = approval.state_dir / "accepted"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (accepted / job.id).symlink_to(outside)  # a symlink named like a job
    (accepted / "holiday photos").mkdir()
    (accepted / "01ARZ3NDEKTSV4RRFFQ69G5FAV.txt").write_text("a file")
    (accepted / ".hidden").mkdir()
    with structlog.testing.capture_logs() as logs:
        assert approval.drop_actions() == []
        assert approval.drop_actions() == []
    reasons = sorted(e["reason"] for e in logs)
    assert reasons == ["a symlink", "not a folder", "not a job folder name"]  # logged once each
    assert all(e["log_level"] == "warning" for e in logs)
    # left alone, and finish never follows the symlink
    assert (accepted / "holiday photos").is_dir()
    approval.finish(job.id)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (accepted / job.id).is_symlink()
    for bad in ("..", "../x", "", ".tmp", "a/b", "a\x00b"):
        with pytest.raises(UnsafePathError):
            approval.pending_path(bad)


async def test_drop_settle_waits_for_a_copy_in_progress(approval: Approval, job: Job) -> None:
    folder = approval.state_dir / "accepted" / job.id
    folder.mkdir()
    (folder / "image-1.png").write_bytes(img().data)
    now = folder.stat().st_mtime
    assert approval.drop_actions(settle=5.0, now=now + 1) == []
    assert approval.drop_actions(settle=5.0, now=now + 6) == [(job.id, Action.ACCEPT)]


async def test_drop_prompt(approval: Approval, job: Job) -> None:
    folder = approval.write_pending(job, [img()], {})
    target = approval.state_dir / "regenerate" / job.id
    folder.rename(target)
    assert approval.drop_prompt(job.id) == "a red fox in snow"
    doc = json.loads((target / JOB_FILE).read_text())
    doc["prompt"] = "a blue fox"
    (target / JOB_FILE).write_text(json.dumps(doc))
    assert approval.drop_prompt(job.id) == "a blue fox"
    (target / PROMPT_FILE).write_text("  a green fox at dawn \n")
    assert approval.drop_prompt(job.id) == "a green fox at dawn"
    (target / PROMPT_FILE).write_text("   ")
    assert approval.drop_prompt(job.id) == "a blue fox"  # an empty prompt.txt does not count
    (target / JOB_FILE).write_text("{broken")
    assert approval.drop_prompt(job.id) is None
    assert approval.drop_prompt("01UNKNOWN0000000000000000X") is None


async def test_refuse_drop_moves_back_with_a_note(approval: Approval, job: Job) -> None:
    folder = approval.write_pending(job, [img()], {})
    folder.rename(approval.state_dir / "accepted" / job.id)
    assert approval.drop_actions() == [(job.id, Action.ACCEPT)]
    back = approval.refuse_drop(job.id, "job is superseded: the reply changed")
    assert back == approval.pending_path(job.id)
    assert "the reply changed" in (back / REFUSED_FILE).read_text()
    assert approval.drop_actions() == []
    assert approval.refuse_drop(job.id, "again") is None


async def test_finish_removes_the_folder_wherever_it_is(approval: Approval, job: Job) -> None:
    folder = approval.write_pending(job, [img()], {})
    assert approval.finish(job.id) == 1
    assert not folder.exists()
    folder = approval.write_pending(job, [img()], {})
    folder.rename(approval.state_dir / "rejected" / job.id)
    (approval.pending_dir / f".tmp-{job.id}-dead").mkdir()
    (approval.pending_dir / f".trash-{job.id}-killed").mkdir()  # a finish() cut short
    assert approval.finish(job.id) == 1
    assert list(approval.pending_dir.iterdir()) == []
    assert list((approval.state_dir / "rejected").iterdir()) == []
    assert approval.finish(job.id) == 0  # idempotent


async def test_cleanup_temps(approval: Approval) -> None:
    old = approval.pending_dir / ".tmp-01ARZ3NDEKTSV4RRFFQ69G5FAV-1234"
    old.mkdir()
    (old / "image-1.png").write_bytes(b"x")
    os.utime(old, (1, 1))
    fresh = approval.pending_dir / ".tmp-01ARZ3NDEKTSV4RRFFQ69G5FAW-5678"
    fresh.mkdir()
    # A folder killed halfway through its deletion goes at once, whatever its age.
    trash = approval.pending_dir / ".trash-01ARZ3NDEKTSV4RRFFQ69G5FAX-9abc"
    trash.mkdir()
    (trash / "image-1.png").write_bytes(b"x")
    assert approval.cleanup_temps() == 2
    assert not old.exists() and not trash.exists() and fresh.exists()


async def test_shelf_keeps_a_superseded_jobs_images_for_a_while(
    approval: Approval, job: Job
) -> None:
    folder = approval.write_pending(job, [img("png"), img("png")], {})
    names = sorted(p.name for p in folder.iterdir())
    assert approval.shelve(job.id)
    assert not folder.exists() and approval.find(job.id) is None  # out of the user's sight
    assert not approval.shelve(job.id)  # nothing left to shelve
    assert approval.unshelve(job.id)
    assert sorted(p.name for p in folder.iterdir()) == names
    assert not approval.unshelve(job.id)  # once

    assert approval.shelve(job.id)
    shelved = approval.shelf_dir / job.id
    old = shelved.stat().st_mtime - 8 * 86400
    os.utime(shelved, (old, old))
    assert approval.prune_shelf() == 1
    assert not shelved.exists() and not approval.unshelve(job.id)
