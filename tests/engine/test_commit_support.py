"""Shared setup for the commit and reconcile tests (a real store, approval folder and data root),
plus checks of the setup itself."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from daemon.config import Config, load_config
from daemon.engine.commit.apply import Committer, message_urls, render_caption, served_path
from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Job, JobState, Store
from daemon.jobstate import ReplyKey
from daemon.providers.decode import GeneratedImage
from daemon.tavern import layout
from daemon.tavern.chat import MARKER_KEY, Chat, Message, parse_chat, read_chat
from daemon.tavern.layout import ChatRef
from daemon.tavern.write import (
    FileVersion,
    Written,
    build_image_message,
    insert_after_line,
    read_for_edit_with,
)

pytestmark = pytest.mark.anyio

USER = "default-user"


def png(color: tuple[int, int, int] = (200, 120, 40), size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def generated(count: int = 1, seed: int = 0) -> list[GeneratedImage]:
    return [
        GeneratedImage(png(((seed * 37 + i * 60) % 256, 90, 160)), "png", 8, 8, "image/png")
        for i in range(count)
    ]


class StepClock:
    """A deterministic UTC clock for the committer (every reading 1 s later)."""

    def __init__(self, start: datetime = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def make_config(root: Path, state: Path, **top: Any) -> Config:
    lines = [f"data_root = {json.dumps(str(root))}", f"state_dir = {json.dumps(str(state))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in top.items() if not isinstance(v, dict)]
    lines += ["[limits]", "retry_base_seconds = 0.5", "retry_max_seconds = 4.0"]
    for name, values in top.items():
        if isinstance(values, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = state.parent / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path, environ={})


def chat_path(root: Path, owner: str = "Alice", name: str = "Alice - chat") -> Path:
    return root / USER / "chats" / owner / f"{name}.jsonl"


def group_path(root: Path, chat_id: str) -> Path:
    return root / USER / "group chats" / f"{chat_id}.jsonl"


def ref_of(root: Path, path: Path) -> ChatRef:
    found = layout.classify(root, path).chat
    assert found is not None, path
    return found


def last_reply(messages: Sequence[Message]) -> Message:
    """The last character reply (as ``generate`` picks it)."""
    for message in reversed(messages):
        if (
            not message.is_user
            and not message.is_system
            and message.marker is None
            and not message.is_narrator
            and not message.is_st_system
        ):
            return message
    raise AssertionError("no reply")


@dataclass
class Harness:
    """A committer over a real data root, store and approval folder."""

    root: Path
    config: Config
    store: Store
    approval: Approval
    committer: Committer

    async def accepted(
        self,
        path: Path,
        index: int | None = None,
        *,
        images: int = 1,
        prompt: str = "a red apple on a table",
        seed: int = 0,
        regen: int = 0,
    ) -> Job:
        """An ACCEPTED job for message ``index`` (default: the last reply) with pending images."""
        ref = ref_of(self.root, path)
        chat, _ = read_chat(path)
        message = chat.messages[index] if index is not None else last_reply(chat.messages)
        character = ref.owner
        if ref.is_group:
            group = layout.group_for_chat(self.root, ref.user, ref.chat_id)
            character = group.id if group else ref.chat_id
        job = await self.store.create_job(
            reply=ReplyKey(
                ref.user,
                ref.rel,
                message.identity.name,
                message.identity.first_date,
                str(message.revision),
            ),
            character=character,
            is_group=ref.is_group,
            speaker=message.name,
            message_index=message.index,
            excerpt=message.mes[:200],
            prompt=prompt,
            meta={"negative": "blurry"},
            regen=regen,
        )
        assert job is not None
        await anyio.to_thread.run_sync(
            self.approval.write_pending, job, generated(images, seed), {"provider": "test"}
        )
        names = tuple(p.name for p in self.approval.kept_images(job.id))
        moved = await self.store.transition(
            job.id, JobState.QUEUED, JobState.ACCEPTED, images=names, check=False
        )
        assert moved is not None
        return moved

    async def job(self, job_id: str) -> Job:
        return await self.store.get_job(job_id)


def new_data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / USER / "chats").mkdir(parents=True)
    (root / USER / "characters").mkdir()
    return root


async def open_harness(root: Path, state: Path, **top: Any) -> Harness:
    await anyio.to_thread.run_sync(lambda: state.mkdir(parents=True, exist_ok=True))
    config = make_config(root, state, **top)
    store = await Store.open(config.db_path)
    approval = Approval(config.state_dir)
    committer = Committer(config, store, approval, root, clock=StepClock())
    return Harness(root, config, store, approval, committer)


@contextlib.asynccontextmanager
async def harness_for(root: Path, state: Path, **top: Any) -> AsyncIterator[Harness]:
    """A harness over ``root`` (store and pending folders in ``state``), closed on exit.

    The ``harness`` fixture (``tests/engine/conftest.py``) wraps it."""
    h = await open_harness(root, state, **top)
    try:
        yield h
    finally:
        await h.store.close()


def markers(path: Path) -> list[str]:
    """Our markers in file order (top-level ``extra`` only)."""
    chat = parse_chat(path.read_bytes())
    return [m.marker for m in chat.messages if m.marker is not None]


async def assert_committed_after_replies(
    h: Harness, path: Path, chat: Chat, job_ids: Sequence[str]
) -> None:
    """Each job is COMMITTED and its message stands in ``chat`` (parsed from ``path``) exactly
    once, right after its reply, every image it names at its served path."""
    assert sorted(markers(path)) == sorted(job_ids)
    for job_id in job_ids:
        job = await h.job(job_id)
        assert job.state is JobState.COMMITTED, job.last_error
        ours = chat.find_marker(job_id)
        assert ours is not None
        reply = chat.messages[ours.index - 1]
        assert reply.identity.key == f"{job.reply.name}\x1f{job.reply.date}"
        for url in message_urls(ours.data):
            image = served_path(h.root, USER, url)
            assert image is not None and image.is_file()


def referenced_images(paths: Iterable[Path]) -> list[str]:
    """Sorted file names of the images our messages in the chats ``paths`` name (repeats kept)."""
    return sorted(
        url.rsplit("/", 1)[1]
        for path in paths
        for m in parse_chat(path.read_bytes()).messages
        if m.marker is not None
        for url in message_urls(m.data)
    )


def assert_images_served(root: Path, user: str, message: dict[str, Any]) -> list[Path]:
    """Every URL of ``message`` names an existing file at ST's served path."""
    files = []
    for url in message_urls(message):
        assert url.startswith("/user/images/"), url
        path = served_path(root, user, url)
        assert path is not None and path.is_file(), url
        assert path == root / user / "user" / "images" / url.removeprefix("/user/images/")
        files.append(path)
    assert files
    return files


# --- checks of the setup -----------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_recorded_version_is_the_file_renamed_in(tmp_path: Path) -> None:
    """The committer records its write's version before the rename (``before_replace``, once
    the new file is durable): it must be the file the rename puts in place, while the old
    chat is still there, with or without the old one's hash."""
    for trailing in (b"", b"\n"):
        path = tmp_path / f"c{len(trailing)}.jsonl"
        lines = [
            b'{"chat_metadata":{"integrity":"x"},"user_name":"unused","character_name":"unused"}',
            b'{"name":"User","is_user":true,"mes":"hi","send_date":"2026-11-23T22:00:00.000Z"}',
            '{"name":"Alice","is_user":false,"mes":"caf\u00e9 \u2028","send_date":"x"}'.encode(),
            b"not json",
            b'{"name":"User","is_user":true,"mes":"more","send_date":"y"}',
        ]
        path.write_bytes(b"\n".join(lines) + trailing)
        for after in (0, 1, 2):
            for hashed in (True, False):
                chat, data, snap, _ = read_for_edit_with(path, lambda c: None, hashed=hashed)
                assert (snap.sha256 == "") is not hashed
                message = build_image_message(
                    name="Alice",
                    urls=["/user/images/Alice/a.png"],
                    prompt="p \ud800",
                    caption="c",
                    send_date="d",
                    job_id=f"J{after}{hashed}",
                )
                end = chat.message_span(after)[1]
                recorded: list[tuple[Written, bytes]] = []
                record = partial(_record_with_file, recorded, path)
                written = insert_after_line(path, snap, data, end, [message], before_replace=record)
                assert [(w.version, d) for w, d in recorded] == [(written.version, data)]
                assert FileVersion.of(path.stat()) == written.version
                assert written.size == len(path.read_bytes())


def _record_with_file(into: list[tuple[Written, bytes]], path: Path, version: Written) -> None:
    into.append((version, path.read_bytes()))


def test_served_path_refuses_other_urls(tmp_path: Path) -> None:
    assert served_path(tmp_path, USER, "/user/images/A/b.png") == (
        tmp_path / USER / "user" / "images" / "A" / "b.png"
    )
    for bad in ("/user/images/../x.png", "https://x/y.png", "/user/images/a/b/c.png", "/x"):
        assert served_path(tmp_path, USER, bad) is None


def test_marker_key_is_the_contract() -> None:
    assert MARKER_KEY == "st_imagegen_job"


def test_caption_shows_a_prompt_and_name_with_markup_as_text() -> None:
    """ST renders ``mes`` as HTML: a prompt's ``<img>`` or ``<b>`` (or a card named with
    markup) must read as text in the image message, while the user's template stays as is."""
    caption = render_caption(
        "<i>[{{char}} sends a picture: {{PROMPT}}]</i>",
        char="<b>Ann</b> & co",
        prompt='a cat <img src=x onerror="alert(1)"> in <b>bold</b>',
    )
    assert caption == (
        "<i>[&lt;b&gt;Ann&lt;/b&gt; &amp; co sends a picture: "
        'a cat &lt;img src=x onerror="alert(1)"&gt; in &lt;b&gt;bold&lt;/b&gt;]</i>'
    )
