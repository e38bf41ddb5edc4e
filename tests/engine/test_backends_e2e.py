"""The daemon end to end with each native image backend: a reply saved as SillyTavern saves it
becomes a pending job whose images the backend made (over real sockets), and accepting it
commits them to the chat."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.engine.commit.apply import message_urls, served_path
from daemon.engine.store import JobState
from daemon.tavern.chat import read_chat
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, MakeConfig, async_wait_for, running
from tests.engine.test_service import (
    FAST,
    JOB_TIMEOUT,
    new_chat,
    replied,
    revised,
    started_chat,
    wait_jobs,
    wait_state,
)
from tests.providers.fake_a1111 import FakeA1111, serve_a1111
from tests.providers.fake_comfyui import CHECKPOINTS, FakeComfy, serve_comfy

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def a1111() -> Iterator[FakeA1111]:
    # A render of about 1.2 s: long enough for the backend's once-a-second progress poll.
    with serve_a1111(FakeA1111(step_seconds=0.1, image_side=16)) as api:
        yield api


@pytest.fixture
def comfy() -> Iterator[FakeComfy]:
    with serve_comfy(FakeComfy(step_seconds=0.01, image_side=16)) as api:
        yield api


async def _reply_to_commit(config: Any, said: str, reply: str) -> tuple[Any, list[bytes], Path]:
    """Run the daemon: the reply's job reaches pending, is accepted by a folder move and is
    committed. Returns the committed job, its pending images' bytes and the chat."""
    async with running(config, FAST) as service:
        path = new_chat(service.root)
        _tab, job = await replied(service, path, said, reply)
        folder = config.state_dir / "pending" / job.id
        images = [(folder / name).read_bytes() for name in job.images]
        shutil.move(str(folder), str(config.state_dir / "accepted" / job.id))
        committed = await wait_state(service, job.id, JobState.COMMITTED)
    return committed, images, path


def _assert_in_chat(path: Path, job_id: str, images: list[bytes]) -> None:
    """Our message is in the chat and its image files hold exactly the backend's bytes."""
    chat, _ = read_chat(path)
    ours = chat.find_marker(job_id)
    assert ours is not None and ours.is_system
    root = path.parents[3]  # <root>/default-user/chats/Alice/<chat>
    files = [served_path(root, "default-user", url) for url in message_urls(ours.data)]
    assert all(f is not None for f in files)
    assert [f.read_bytes() for f in files if f is not None] == images


async def test_a1111_reply_to_pending_to_committed(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI, a1111: FakeA1111
) -> None:
    # Two polls seen while it runs: the first one's progress is stored before the second
    # leaves (the client polls one at a time), however late the first poll comes.
    a1111.hold_for_polls = 2
    config = make_config(
        st_root_latest,
        image={
            "backend": "a1111",
            "api_url": a1111.url,
            "model": "v1-5-pruned-emaonly",
            "size": "512x768",
            "steps": 12,
            "sampler": "Euler a",
            "n": 2,
        },
    )
    job, images, path = await _reply_to_commit(
        config, "Show me the harbour.", "Fog rolls over the harbour town; Alice waves."
    )
    (body,) = a1111.bodies()
    assert body["prompt"] == job.prompt and "harbour town" in body["prompt"]
    assert (body["width"], body["height"], body["steps"], body["batch_size"]) == (512, 768, 12, 2)
    assert body["override_settings"] == {"sd_model_checkpoint": "v1-5-pruned-emaonly"}
    assert len(images) == 2 and all(data.startswith(b"\x89PNG") for data in images)
    assert job.meta["image_model"] == "v1-5-pruned-emaonly"
    # The seed is chosen by the daemon (image.seed = -1): sent, kept in the job and the PNG.
    assert isinstance(body["seed"], int) and body["seed"] >= 0
    assert job.meta["seed"] == body["seed"]
    from daemon.providers.pngtext import read_text_chunks

    assert f"Seed: {body['seed']}" in read_text_chunks(images[0])["parameters"]
    progress = job.meta.get("progress")
    assert isinstance(progress, dict) and str(progress["text"]).startswith("step ")
    _assert_in_chat(path, job.id, images)


async def test_comfyui_reply_to_pending_to_committed(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI, comfy: FakeComfy
) -> None:
    config = make_config(
        st_root_latest,
        image={
            "backend": "comfyui",
            "api_url": comfy.url,
            "model": CHECKPOINTS[1],
            "size": "768x512",
            "steps": 6,
        },
    )
    job, images, path = await _reply_to_commit(
        config, "And the greenhouse?", "Ferns curl around brass pipes; rain drums on glass."
    )
    (posted,) = comfy.seen("POST", "/prompt")
    nodes = posted["prompt"]
    assert nodes["6"]["inputs"]["text"] == job.prompt and "brass pipes" in str(job.prompt)
    assert nodes["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 1}
    assert nodes["4"]["inputs"]["ckpt_name"] == CHECKPOINTS[1]
    assert comfy.seen("WS", "/ws") == [posted["client_id"]]
    assert len(images) == 1 and images[0].startswith(b"\x89PNG")
    assert job.meta.get("progress") == {"fraction": 1.0, "text": "step 6/6"}
    _assert_in_chat(path, job.id, images)


async def test_a_swipe_while_comfyui_renders_interrupts_its_run(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI, comfy: FakeComfy
) -> None:
    comfy.step_seconds = 0.05
    config = make_config(
        st_root_latest,
        image={"backend": "comfyui", "api_url": comfy.url, "model": CHECKPOINTS[0], "steps": 400},
    )
    async with running(config, FAST) as service:
        path = new_chat(service.root, name="swipe")
        tab = await started_chat(service, path, character="Alice")
        tab.send_user("Go on.").save()
        tab.reply("Alice", "First version of the reply.").save()
        first = (await wait_jobs(service, path, 1))[0]
        await async_wait_for(_later(lambda: comfy.running_id() is not None), within=JOB_TIMEOUT)
        theirs = comfy.running_id()
        tab.swipe("Second version, swiped.").save()
        await wait_state(service, first.id, JobState.SUPERSEDED)
        interrupted = _later(lambda: {"prompt_id": theirs} in comfy.seen("POST", "/interrupt"))
        await async_wait_for(interrupted, within=JOB_TIMEOUT)
        comfy.step_seconds = 0.0  # the new version renders at once
        second = await revised(service, path, first)
        await wait_state(service, second.id, JobState.PENDING)
    assert comfy.history[str(theirs)]["status"]["status_str"] == "error"  # interrupted
    assert len(comfy.seen("POST", "/prompt")) == 2


def _later(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check
