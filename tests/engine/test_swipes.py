"""Image swipes in both ST formats, and the whole issue-12 path end to end with the fake API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.engine.commit.apply import served_path
from daemon.engine.jobs.pipeline import accept_job, open_job_deps, regen_job, run_job_once
from daemon.engine.look.appearance import CharacterStore
from daemon.engine.store import JobState
from daemon.providers.pngtext import read_text_chunks
from daemon.tavern import layout
from daemon.tavern.chat import read_chat
from daemon.tavern.media import add_image_swipes, swipe_urls
from daemon.tavern.write import build_image_message
from tests.engine.conftest import FakeAPI, MakeConfig, job_for, write_chat
from tests.engine.looks import write_card
from tests.stsim import STSim

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_swipes_on_a_message_we_wrote() -> None:
    message = build_image_message(
        name="Alice",
        urls=["/user/images/Alice/a.png"],
        prompt="first",
        caption="[c]",
        send_date="x",
        job_id="J1",
    )
    added = add_image_swipes(
        message,
        ["/user/images/Alice/b.png", "/user/images/Alice/c.png"],
        prompt="second",
        job_id="J2",
        negative="blurry",
    )
    extra = added["extra"]
    assert [m["url"] for m in extra["media"]] == [
        "/user/images/Alice/a.png",
        "/user/images/Alice/b.png",
        "/user/images/Alice/c.png",
    ]
    assert extra["media"][1] == {
        "url": "/user/images/Alice/b.png",
        "type": "image",
        "title": "second",
        "source": "generated",
        "negative": "blurry",
    }
    assert extra["media_index"] == 1  # the first new one is shown (ST 1.14+)
    assert extra["image"] == "/user/images/Alice/b.png"  # ... and in ST 1.12-1.13
    assert extra["image_swipes"] == swipe_urls(added)
    assert extra["st_imagegen_job"] == "J1" and extra["st_imagegen_swipes"] == ["J2"]
    assert add_image_swipes(added, ["/user/images/Alice/d.png"], prompt="p", job_id="J2") == added
    assert message["extra"]["media_index"] == 0  # the original is untouched


def test_swipes_on_an_old_st_message_without_media() -> None:
    old = {
        "name": "Bob",
        "extra": {
            "image": "/user/images/Bob/x.png",
            "title": "logbook",
            "image_swipes": ["/user/images/Bob/x.png"],
        },
    }
    added = add_image_swipes(old, ["/user/images/Bob/y.png"], prompt="logbook 2", job_id="J")
    extra = added["extra"]
    assert extra["image_swipes"] == ["/user/images/Bob/x.png", "/user/images/Bob/y.png"]
    assert [m["url"] for m in extra["media"]] == extra["image_swipes"]
    assert extra["media"][0]["title"] == "logbook" and extra["media_index"] == 1
    assert extra["image"] == "/user/images/Bob/y.png"


def image_messages(path: Path) -> list[dict[str, Any]]:
    chat, _ = read_chat(path)
    return [m.data for m in chat.messages if m.marker is not None]


async def test_end_to_end_tags_style_regen_and_swipes(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    root = st_root_latest
    write_card(root, "Alice", "Alice", positive="silver hair, green cloak", negative="short hair")
    config = make_config(root, image={"size": "1024x1024"})
    text = (Path(config.state_dir).parent / "config.toml").read_text()
    (Path(config.state_dir).parent / "config.toml").write_text(
        text + '[styles.noir]\nprefix = "film noir"\nnegative = "color"\nsize = "832x1216"\n'
        'model = "noir-xl"\n'
    )
    from daemon.config import load_config

    config = load_config(Path(config.state_dir).parent / "config.toml", environ={})
    store = CharacterStore(config.state_dir)
    store.update("Alice", negative="freckles")  # the per-character override (negative only)
    async with open_job_deps(config, root=layout.resolve_data_root(root)) as deps:
        path = write_chat(deps.root, "e2e", ["Alice lifts the lantern over the cliff."])
        rel = layout.classify(deps.root, path).chat
        assert rel is not None
        store.set_chat_style(rel.rel, "noir")
        job = await job_for(deps, path)
        first = await run_job_once(job, deps)
        assert first.state is JobState.PENDING

        # What the APIs received.
        told = fake_api.text_inputs()[-1]
        assert "Alice: silver hair, green cloak" in told and "Character Appearance" in told
        body = [r.body for r in fake_api.requests if r.path.endswith("images/generations")][-1]
        assert body["prompt"].startswith("film noir, silver hair, green cloak, a picture of")
        assert body["negative_prompt"] == "color, freckles"  # style, then the profile's
        assert (body["model"], body["size"]) == ("noir-xl", "832x1216")
        png = (deps.approval.pending_path(first.id) / "image-1.png").read_bytes()
        texts = read_text_chunks(png)
        assert texts["parameters"].startswith(body["prompt"] + "\nNegative prompt: color, freckles")
        assert "Style: noir" in texts["parameters"]
        assert json.loads(texts["st-imagegen"])["appearance"][0]["from"] == "card"
        assert first.meta["style"] == "noir" and first.meta["style_from"] == "chat"

        # A regen keeps the first image next to the new one; accept takes both.
        second = await regen_job(deps.store, deps.approval, first.id, "a lantern, night sea")
        second = await run_job_once(second, deps)
        assert second.state is JobState.PENDING and len(second.images) == 2
        # The new image first, the earlier one after it with its own prompt.
        assert second.meta["image_prompts"] == ["a lantern, night sea", first.prompt]
        assert second.meta["earlier_count"] == 1
        assert (deps.approval.pending_path(second.id) / "image-2.png").read_bytes() == png
        accepted = await accept_job(deps.store, deps.approval, second.id)
        committed = await run_job_once(accepted, deps)
        assert committed.state is JobState.COMMITTED
        (message,) = image_messages(path)
        assert len(message["extra"]["media"]) == 2
        # Each image keeps the prompt that made it (the caption: the first kept image's).
        titles = [m["title"] for m in message["extra"]["media"]]
        assert titles == ["a lantern, night sea", first.prompt]

        # A variant of the committed job becomes a swipe of the same message.
        variant = await regen_job(deps.store, deps.approval, committed.id)
        assert variant.meta["swipe_of"] == committed.id
        variant = await run_job_once(variant, deps)
        assert variant.state is JobState.PENDING and len(variant.images) == 1
        stale_tab = STSim.open(path)  # an open tab that knows the message with 2 images
        done = await run_job_once(await accept_job(deps.store, deps.approval, variant.id), deps)
        assert done.state is JobState.COMMITTED
        (message,) = image_messages(path)  # still one message
        extra = message["extra"]
        assert len(extra["media"]) == 3 and extra["media_index"] == 2
        assert extra["image_swipes"] == [m["url"] for m in extra["media"]]
        assert extra["st_imagegen_job"] == committed.id
        for url in extra["image_swipes"]:
            served = served_path(deps.root, "default-user", url)
            assert served is not None and served.is_file()
        entry = await deps.store.ledger_get(committed.id)
        assert entry is not None and len(entry.message["extra"]["media"]) == 3

        # The stale tab saves its older copy of our message: the swipes come back.
        stale_tab.send_user("And then?").save()
        (message,) = image_messages(path)
        assert len(message["extra"]["media"]) == 2
        # Each image keeps the prompt that made it (the caption: the first kept image's).
        titles = [m["title"] for m in message["extra"]["media"]]
        assert titles == ["a lantern, night sea", first.prompt]
        assert deps.committer is not None
        assert await deps.committer.reconcile_chat(rel) == 1
        (message,) = image_messages(path)
        assert len(message["extra"]["media"]) == 3
        chat, _ = read_chat(path)
        assert chat.messages[-1].mes == "And then?"  # the tab's own line is kept
        entry = await deps.store.ledger_get(committed.id)
        assert entry is not None and not entry.acknowledged
        STSim.open(path).send_user("Fine.").save()  # ST saves the new version: acknowledged
        assert await deps.committer.reconcile_chat(rel) == 0
        entry = await deps.store.ledger_get(committed.id)
        assert entry is not None and entry.acknowledged
