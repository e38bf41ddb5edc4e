"""The daemon end to end with each hosted image backend (fakes on real sockets): a reply saved
as SillyTavern saves it becomes a pending job whose images the service made, and accepting it
commits them to the chat."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, MakeConfig
from tests.engine.test_backends_e2e import _assert_in_chat, _reply_to_commit
from tests.providers.fake_gemini import FakeGemini
from tests.providers.fake_novelai import FakeNovelAI
from tests.providers.fake_openrouter import FakeOpenRouter
from tests.providers.fake_queues import FakeBFL, FakeFal, FakeHorde, FakeReplicate
from tests.providers.fake_service import FakeService, Seen, serve

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _openrouter(fake: Any) -> dict[str, Any]:
    return {
        "backend": "openrouter",
        "api_url": fake.url + "/api/v1",
        "api_key": fake.key,
        "model": "google/gemini-2.5-flash-image",
    }


def _gemini(fake: Any) -> dict[str, Any]:
    return {
        "backend": "gemini",
        "api_url": fake.url + "/v1beta",
        "api_key": fake.key,
        "model": "gemini-2.5-flash-image",
    }


def _novelai(fake: Any) -> dict[str, Any]:
    return {
        "backend": "novelai",
        "api_url": fake.url,
        "api_key": fake.key,
        "size": "512x768",
        "model": "nai-diffusion-4-5-full",
    }


def _horde(fake: Any) -> dict[str, Any]:
    return {
        "backend": "horde",
        "api_url": fake.url + "/api",
        "horde": {"poll_seconds": 0.01},
        "model": "",
    }


def _fal(fake: Any) -> dict[str, Any]:
    return {
        "backend": "fal",
        "api_url": fake.url,
        "api_key": fake.key,
        "model": "fal-ai/flux/schnell",
    }


def _replicate(fake: Any) -> dict[str, Any]:
    return {
        "backend": "replicate",
        "api_url": fake.url + "/v1",
        "api_key": fake.key,
        "model": "black-forest-labs/flux-schnell",
        "replicate": {"poll_seconds": 0.01},
    }


def _bfl(fake: Any) -> dict[str, Any]:
    return {
        "backend": "bfl",
        "api_url": fake.url + "/v1",
        "api_key": fake.key,
        "model": "flux-pro-1.1",
        "bfl": {"poll_seconds": 0.01},
    }


def _prompt_sent(seen: Seen) -> str:
    body = seen.json
    if "messages" in body:
        return str(body["messages"][0]["content"])
    if "input" in body and isinstance(body["input"], dict):
        return str(body["input"]["prompt"])
    if "contents" in body:
        return str(body["contents"][0]["parts"][0]["text"])
    return str(body.get("input") or body.get("prompt"))


CASES: dict[str, tuple[Callable[[], FakeService], Callable[[Any], dict[str, Any]], str]] = {
    "openrouter": (FakeOpenRouter, _openrouter, "/api/v1/chat/completions"),
    "gemini": (FakeGemini, _gemini, "/v1beta/models/gemini-2.5-flash-image:generateContent"),
    "novelai": (FakeNovelAI, _novelai, "/ai/generate-image"),
    "horde": (FakeHorde, _horde, "/api/v2/generate/async"),
    "fal": (FakeFal, _fal, "/fal-ai/flux/schnell"),
    "replicate": (
        FakeReplicate,
        _replicate,
        "/v1/models/black-forest-labs/flux-schnell/predictions",
    ),
    "bfl": (FakeBFL, _bfl, "/v1/flux-pro-1.1"),
}


@pytest.fixture(params=sorted(CASES))
def service(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    fake_type, _config, _path = CASES[request.param]
    with serve(fake_type()) as fake:
        yield request.param, fake


async def test_hosted_backend_reply_to_pending_to_committed(
    st_root_latest: Path, make_config: MakeConfig, fake_api: FakeAPI, service: tuple[str, Any]
) -> None:
    name, fake = service
    _fake_type, image_config, path = CASES[name]
    config = make_config(st_root_latest, image=image_config(fake))
    job, images, chat = await _reply_to_commit(
        config, "Show me the harbour.", "Fog rolls over the harbour town; Alice waves."
    )
    (call,) = fake.seen("POST", path)
    assert job.prompt and job.prompt in _prompt_sent(call)
    assert images and all(data[:4] in (b"\x89PNG", b"RIFF") for data in images)
    _assert_in_chat(chat, job.id, images)
