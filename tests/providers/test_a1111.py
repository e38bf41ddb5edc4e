"""The AUTOMATIC1111 / Forge backend against a fake web UI on a real local socket."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from daemon.config import ImageSettings, LimitsSettings
from daemon.errors import (
    AuthError,
    BadResponseError,
    ConfigError,
    PermanentProviderError,
    TransientProviderError,
)
from daemon.providers.a1111 import A1111Backend, build_payload, progress_from
from daemon.providers.backend import ImageRequest, Progress
from daemon.providers.factory import make_image_backend
from tests.providers.conftest import FakeClock, no_jitter_policy
from tests.providers.fake_a1111 import FakeA1111, png, serve_a1111

pytestmark = pytest.mark.anyio


@pytest.fixture
def a1111() -> Iterator[FakeA1111]:
    with serve_a1111() as api:
        yield api


def settings_for(api: FakeA1111, **kwargs: Any) -> ImageSettings:
    return ImageSettings(backend="a1111", api_url=api.url, **kwargs)


def backend(
    api: FakeA1111,
    client: httpx.AsyncClient,
    clock: FakeClock,
    attempts: int = 1,
    **kwargs: Any,
) -> A1111Backend:
    return A1111Backend(
        settings_for(api, **kwargs),
        client,
        clock=clock,
        retry=no_jitter_policy(attempts),
        progress_interval=0.01,
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_setting_maps_to_its_txt2img_field() -> None:
    settings = ImageSettings(
        backend="a1111",
        api_url="http://127.0.0.1:7860",
        model="v1-5-pruned-emaonly",
        size="832x1216",
        n=3,
        steps=28,
        cfg_scale=5.5,
        sampler="DPM++ 2M",
        scheduler="karras",
        seed=1234,
        extra_body={"clip_skip": 2},
    )
    body = build_payload(settings, ImageRequest(prompt="a fox", negative="blurry"))
    assert body == {
        "prompt": "a fox",
        "negative_prompt": "blurry",
        "width": 832,
        "height": 1216,
        "steps": 28,
        "cfg_scale": 5.5,
        "sampler_name": "DPM++ 2M",
        "scheduler": "karras",
        "seed": 1234,
        "batch_size": 3,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "override_settings": {"sd_model_checkpoint": "v1-5-pruned-emaonly"},
        "override_settings_restore_afterwards": False,
        "clip_skip": 2,
    }


def test_request_overrides_win_and_defaults_leave_fields_to_the_server() -> None:
    settings = ImageSettings(backend="a1111", api_url="http://127.0.0.1:7860")
    assert settings.model == ""  # dall-e-3 is only the openai backend's default
    body = build_payload(settings, ImageRequest(prompt="p"))
    assert "sampler_name" not in body and "scheduler" not in body
    assert "override_settings" not in body  # the loaded checkpoint
    assert (body["width"], body["height"], body["seed"], body["batch_size"]) == (1024, 1024, -1, 1)
    over = ImageRequest(prompt="p", size="512x768", model="sdxl", n=2, seed=7)
    body = build_payload(settings, over)
    assert (body["width"], body["height"], body["seed"], body["batch_size"]) == (512, 768, 7, 2)
    assert body["override_settings"] == {"sd_model_checkpoint": "sdxl"}


def test_a_bad_size_is_a_config_error() -> None:
    settings = ImageSettings(backend="a1111", api_url="http://h:7860", size="big")
    with pytest.raises(ConfigError, match="size"):
        build_payload(settings, ImageRequest(prompt="p"))


def test_progress_payloads() -> None:
    idle = {"progress": 0.0, "eta_relative": 0.0, "state": {"job_count": 0, "sampling_steps": 0}}
    assert progress_from(idle) is None
    assert progress_from("nonsense") is None
    running = {
        "progress": 0.45,
        "eta_relative": 3.2,
        "state": {"job_count": 1, "sampling_step": 9, "sampling_steps": 20},
    }
    assert progress_from(running) == Progress(0.45, "step 9/20, about 3 s left")


async def test_generates_the_batch_over_a_real_socket(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.extra_images = 1  # a ControlNet map after the batch: not an image of the job
    gen = backend(a1111, client, clock, n=2, size="64x64", sampler="Euler a", steps=4)
    images = await gen.generate(ImageRequest(prompt="a lighthouse", negative="text"))
    assert [(i.format, i.width) for i in images] == [("png", 8), ("png", 8)]
    assert images[0].data != images[1].data
    (body,) = a1111.bodies()
    assert body["prompt"] == "a lighthouse" and body["negative_prompt"] == "text"
    assert (body["width"], body["height"], body["batch_size"], body["steps"]) == (64, 64, 2, 4)
    assert body["sampler_name"] == "Euler a"


async def test_the_api_url_may_be_a_pasted_endpoint(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    settings = ImageSettings(backend="a1111", api_url=a1111.url + "/sdapi/v1/txt2img/", steps=1)
    gen = A1111Backend(settings, client, clock=clock, retry=no_jitter_policy(1))
    assert len(await gen.generate(ImageRequest(prompt="p"))) == 1


async def test_progress_is_reported_while_it_renders(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.step_seconds = 0.03
    a1111.hold_for_polls = 2  # however late the polls come on a busy machine
    seen: list[Progress] = []

    async def record(progress: Progress) -> None:
        seen.append(progress)

    gen = backend(a1111, client, clock, steps=10)
    await gen.generate(ImageRequest(prompt="p"), progress=record)
    assert seen, "no progress was reported"
    assert all(0.0 <= p.fraction <= 1.0 and p.text.startswith("step ") for p in seen)
    assert any(p.fraction > 0 for p in seen)
    assert [p.fraction for p in seen] == sorted(p.fraction for p in seen)
    assert a1111.progress_polls >= len(seen)


async def test_no_progress_polls_without_a_callback(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.step_seconds = 0.01
    await backend(a1111, client, clock, steps=5).generate(ImageRequest(prompt="p"))
    assert a1111.progress_polls == 0


async def test_basic_auth_as_api_auth(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.auth = "sd:hunter2-long"
    good = backend(a1111, client, clock, steps=1, api_auth="sd:hunter2-long")
    assert len(await good.generate(ImageRequest(prompt="p"))) == 1
    bad = backend(a1111, client, clock, steps=1, api_auth="sd:wrong-password")
    with pytest.raises(AuthError) as info:
        await bad.generate(ImageRequest(prompt="p"))
    assert "api_auth" in str(info.value) and "wrong-password" not in str(info.value)
    assert "wrong-password" not in info.value.body


async def test_api_auth_from_a_file(
    a1111: FakeA1111, client: httpx.AsyncClient, tmp_path: Any
) -> None:
    secret = tmp_path / "auth"
    secret.write_text("sd:from-a-file\n", encoding="utf-8")
    a1111.auth = "sd:from-a-file"
    settings = ImageSettings(backend="a1111", api_url=a1111.url, api_auth_file=secret, steps=1)
    gen = A1111Backend(settings, client, retry=no_jitter_policy(1))
    assert len(await gen.generate(ImageRequest(prompt="p"))) == 1


def test_api_auth_without_a_colon_is_refused() -> None:
    settings = ImageSettings(backend="a1111", api_url="http://h:7860", api_auth="justapassword")
    with pytest.raises(ConfigError, match="user:password"):
        A1111Backend(settings, httpx.AsyncClient())


async def test_a_5xx_is_retried(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.fail = [500, 503]
    images = await backend(a1111, client, clock, attempts=3, steps=1).generate(
        ImageRequest(prompt="p")
    )
    assert len(images) == 1 and len(clock.sleeps) == 2 and a1111.renders == 1


async def test_a_5xx_that_persists_is_transient(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.fail = [500]
    with pytest.raises(TransientProviderError, match="500"):
        await backend(a1111, client, clock, steps=1).generate(ImageRequest(prompt="p"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_connection_refused_while_the_server_starts_is_retried(
    client: httpx.AsyncClient,
) -> None:
    port = _free_port()
    api = FakeA1111(port=port)
    servers: list[Any] = []

    class StartingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            if not servers:  # the web UI finishes loading during the backoff
                servers.append(serve_a1111(api))
                servers[0].__enter__()
            await super().sleep(seconds)

    clock = StartingClock()
    try:
        gen = backend(api, client, clock, attempts=3, steps=1)
        images = await gen.generate(ImageRequest(prompt="p"))
        assert len(images) == 1 and len(clock.sleeps) == 1
    finally:
        if servers:
            servers[0].__exit__(None, None, None)


async def test_a_server_that_dies_mid_run_is_a_transient_error(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.die_mid_run = 1
    gen = backend(a1111, client, clock, steps=4)
    with pytest.raises(TransientProviderError, match=r"connection|answer"):
        await gen.generate(ImageRequest(prompt="p"))
    # and the next try (the job layer's) works
    assert len(await gen.generate(ImageRequest(prompt="p"))) == 1


async def test_the_deadline_holds(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.step_seconds = 0.5
    gen = backend(a1111, client, clock, steps=20, timeout_seconds=0.3)
    with pytest.raises(TransientProviderError, match="in time"):
        await gen.generate(ImageRequest(prompt="p"))


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4000, 4000), 0).save(buf, format="PNG")  # 16 Mpx in a few kB
    return buf.getvalue()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (["not base64 at all!"], "not valid base64"),
        ([b64(b"<html>oops</html>")], "not a PNG"),
        ([b64(_bomb())], "over the limit"),
        ([b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 4096)], "cannot be decoded"),
        ([{"url": "http://10.0.0.1/x.png"}], "not a base64 string"),
        ([], "no images"),
    ],
)
async def test_hostile_answers_are_refused(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock, answer: list[Any], why: str
) -> None:
    a1111.answer_images = answer
    gen = backend(a1111, client, clock, steps=1, max_pixels=1_000_000)
    with pytest.raises(BadResponseError, match=why):
        await gen.generate(ImageRequest(prompt="p"))


async def test_an_image_over_the_download_cap_is_refused(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.answer_images = [b64(b"\x89PNG\r\n\x1a\n" + bytes(4096))]
    gen = backend(a1111, client, clock, steps=1, max_download_bytes=1024)
    with pytest.raises(BadResponseError, match="max_download_bytes"):
        await gen.generate(ImageRequest(prompt="p"))


async def test_an_answer_over_the_response_cap_is_refused(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.answer_images = [b64(png(64, 64))] * 20
    gen = backend(a1111, client, clock, steps=1, max_response_bytes=2048)
    with pytest.raises(BadResponseError, match="max_response_bytes"):
        await gen.generate(ImageRequest(prompt="p"))


async def test_one_bad_image_of_two_is_dropped(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.answer_images = [b64(png()), b64(b"garbage that is not an image")]
    images = await backend(a1111, client, clock, steps=1, n=2).generate(ImageRequest(prompt="p"))
    assert len(images) == 1 and images[0].format == "png"


async def test_no_api_and_unknown_sampler_say_what_to_do(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(a1111, client, clock, steps=1, sampler="Heun Turbo")
    with pytest.raises(PermanentProviderError, match="sampler 'Heun Turbo'"):
        await gen.generate(ImageRequest(prompt="p"))
    off = A1111Backend(
        ImageSettings(backend="a1111", api_url=a1111.url + "/elsewhere"),
        client,
        clock=clock,
        retry=no_jitter_policy(1),
    )
    with pytest.raises(PermanentProviderError, match="--api"):
        await off.generate(ImageRequest(prompt="p"))


async def test_check_lists_models_and_samplers(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(a1111, client, clock, model="v1-5-pruned-emaonly", sampler="k_euler_a")
    assert await gen.check() is None
    assert "2 model(s)" in gen.summary and "v1-5-pruned-emaonly.safetensors" in gen.summary
    assert "3 sampler(s)" in gen.summary and "DPM++ 2M" in gen.summary
    for name in ("juggernautXL_v9", "sdxl/juggernautXL_v9.safetensors [c9e3e68f89]"):
        assert await backend(a1111, client, clock, model=name, scheduler="Karras").check() is None


async def test_check_names_what_is_missing(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    gen = backend(a1111, client, clock, model="dreamshaper_8", sampler="UniPC")
    with pytest.raises(PermanentProviderError) as info:
        await gen.check()
    text = str(info.value)
    assert "model 'dreamshaper_8'" in text and "sampler 'UniPC'" in text
    assert "v1-5-pruned-emaonly.safetensors" in text  # what it has instead
    a1111.schedulers_route = False
    with pytest.raises(PermanentProviderError, match=r"1\.9"):
        await backend(a1111, client, clock, scheduler="karras").check()


async def test_check_without_the_api_says_start_with_api(
    client: httpx.AsyncClient, clock: FakeClock, local_server: Any
) -> None:
    gen = A1111Backend(
        ImageSettings(backend="a1111", api_url=local_server.url),
        client,
        clock=clock,
        retry=no_jitter_policy(1),
    )
    with pytest.raises(PermanentProviderError, match="--api"):
        await gen.check()


async def test_the_factory_picks_the_backend(a1111: FakeA1111, client: httpx.AsyncClient) -> None:
    built = make_image_backend(settings_for(a1111), client, limits=LimitsSettings())
    assert isinstance(built, A1111Backend)


def test_config_keys_for_the_native_backends(tmp_path: Any) -> None:
    assert ImageSettings().backend == "openai" and ImageSettings().model == "dall-e-3"
    assert ImageSettings(backend="comfyui").model == ""  # the server's checkpoint
    assert ImageSettings(backend="a1111", model="sdxl").model == "sdxl"
    with pytest.raises(ValueError, match="api_auth_file"):
        ImageSettings(backend="a1111", api_auth_file=tmp_path / "missing")
    assert "secret-pw" not in repr(ImageSettings(backend="a1111", api_auth="me:secret-pw"))


async def _until(predicate: Any) -> None:
    """Poll the fake's state (it lives in another thread) until ``predicate()`` holds."""
    with anyio.fail_after(20.0):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


def _running_task(api: FakeA1111) -> str | None:
    task = api.progress_payload()["current_task"]
    return str(task) if task else None


async def test_cancelling_our_running_render_interrupts_it(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.step_seconds = 0.05
    gen = backend(a1111, client, clock, steps=400)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gen.generate, ImageRequest(prompt="p"))
        await _until(lambda: (_running_task(a1111) or "").startswith("task(st-imagegen-"))
        tg.cancel_scope.cancel()  # the user cancelled the job: the runner cancels its task
    assert a1111.interrupts == 1
    (body,) = a1111.bodies()
    assert body["force_task_id"].startswith("task(st-imagegen-")


async def test_cancelling_leaves_another_clients_render_alone(
    a1111: FakeA1111, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    a1111.step_seconds = 0.05
    gen = backend(a1111, client, clock, steps=400)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gen.generate, ImageRequest(prompt="p"))
        await _until(lambda: _running_task(a1111) is not None)
        with a1111.lock:  # the server now runs someone else's task (ours waits in its queue)
            a1111._state["task"] = "task(theirs)"
        tg.cancel_scope.cancel()
    assert a1111.interrupts == 0
