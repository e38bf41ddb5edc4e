"""The ComfyUI backend against a fake ComfyUI (real HTTP and WebSocket on a local socket)."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image
from starlette.responses import RedirectResponse, Response

from daemon.config import ImageSettings
from daemon.errors import (
    AuthError,
    BadResponseError,
    ConfigError,
    PermanentProviderError,
    TransientProviderError,
)
from daemon.providers.backend import ImageRequest, Progress
from daemon.providers.comfyui import (
    KNOWN_PLACEHOLDERS,
    ComfyUIBackend,
    fill_workflow,
    load_workflow,
    placeholders_in,
    workflow_warnings,
)
from daemon.providers.factory import make_image_backend
from tests.providers.conftest import FakeClock, no_jitter_policy
from tests.providers.fake_comfyui import CHECKPOINTS, FakeComfy, free_port, serve_comfy

pytestmark = pytest.mark.anyio

WAIT = 10.0  # seconds a test waits for the fake to reach a state


@pytest.fixture
def comfy() -> Iterator[FakeComfy]:
    with serve_comfy() as api:
        yield api


def backend(
    api: FakeComfy, client: httpx.AsyncClient, attempts: int = 1, **kwargs: Any
) -> ComfyUIBackend:
    settings = ImageSettings(backend="comfyui", api_url=api.url, **{"steps": 3, **kwargs})
    return ComfyUIBackend(
        settings, client, clock=FakeClock(), retry=no_jitter_policy(attempts), history_poll=0.02
    )


def write_workflow(tmp_path: Path, nodes: dict[str, Any], name: str = "wf.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(nodes), encoding="utf-8")
    return path


def default_nodes() -> dict[str, Any]:
    return load_workflow(None).nodes


async def wait_until(predicate: Any) -> None:
    """Poll the fake's state (it lives in another thread) until ``predicate()`` holds."""
    with anyio.fail_after(WAIT):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


# --- the workflow --------------------------------------------------------------------------


def test_the_shipped_workflow_uses_every_placeholder_st_uses() -> None:
    workflow = load_workflow(None)
    assert workflow.placeholders == set(KNOWN_PLACEHOLDERS) - {"denoise"}
    assert {n["class_type"] for n in workflow.nodes.values()} >= {"KSampler", "SaveImage"}


def test_placeholders_become_json_values_not_text() -> None:
    nodes: dict[str, Any] = {
        "1": {
            "class_type": "KSampler",
            "inputs": {"seed": "%seed%", "cfg": "%scale%", "note": "seed=%seed%", "x": "%foo%"},
        },
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "masterpiece, %prompt%"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "%prompt%", "clip": ["4", 1]}},
    }
    hostile = 'a "quoted" \\ prompt with %seed% and }\n{'
    filled = fill_workflow(nodes, {"seed": 42, "scale": 6.5, "prompt": hostile})
    assert filled["1"]["inputs"] == {"seed": 42, "cfg": 6.5, "note": "seed=42", "x": "%foo%"}
    assert filled["2"]["inputs"]["text"] == "masterpiece, " + hostile  # never re-expanded
    assert filled["3"]["inputs"] == {"text": hostile, "clip": ["4", 1]}
    assert nodes["1"]["inputs"]["seed"] == "%seed%"  # the loaded workflow is not changed
    assert json.loads(json.dumps(filled)) == filled


def test_placeholders_are_found_anywhere() -> None:
    assert placeholders_in({"a": ["x %width%", {"b": "%height%"}], "c": 3}) == {"width", "height"}


def test_a_workflow_without_prompt_is_refused(tmp_path: Path) -> None:
    nodes = default_nodes()
    nodes["6"]["inputs"]["text"] = "a fixed prompt"
    with pytest.raises(ConfigError, match="no %prompt%"):
        load_workflow(write_workflow(tmp_path, nodes))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"nodes": [], "links": [], "version": 0.4}), "UI workflow"),
        (json.dumps([1, 2]), "JSON object of nodes"),
        (json.dumps({"3": {"inputs": {"text": "%prompt%"}}}), "no class_type"),
    ],
)
def test_broken_workflows_are_named(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "wf.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=why):
        load_workflow(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_workflow(tmp_path / "missing.json")


def test_a_broken_workflow_stops_the_start(tmp_path: Path) -> None:
    settings = ImageSettings(
        backend="comfyui", api_url="http://127.0.0.1:8188", comfy_workflow=tmp_path / "no.json"
    )
    with pytest.raises(ConfigError, match="comfy_workflow"):
        ComfyUIBackend(settings, httpx.AsyncClient())


def test_workflow_warnings(tmp_path: Path) -> None:
    nodes = default_nodes()
    nodes["3"]["inputs"]["seed"] = 5
    nodes["7"]["inputs"]["text"] = "%negative% blurry"
    settings = ImageSettings(
        backend="comfyui", api_url="http://h:8188", comfy_workflow=write_workflow(tmp_path, nodes)
    )
    notes = workflow_warnings(settings, negative="ugly")
    assert any("%seed%" in n for n in notes)
    assert any("%negative_prompt%" in n for n in notes)
    assert any("%negative%" in n for n in notes)
    assert workflow_warnings(ImageSettings(backend="comfyui", api_url="http://h:8188")) == []


# --- generating ----------------------------------------------------------------------------


async def test_generates_over_http_and_the_socket(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.step_seconds = 0.01
    seen: list[Progress] = []

    async def record(progress: Progress) -> None:
        seen.append(progress)

    gen = backend(
        comfy,
        client,
        n=2,
        size="836x1216",
        steps=4,
        cfg_scale=5.0,
        sampler="dpmpp_2m",
        scheduler="karras",
        seed=99,
        model="dreamshaper_8.safetensors",
    )
    images = await gen.generate(ImageRequest(prompt='a "fox"', negative="blurry"), progress=record)
    assert len(images) == 2 and images[0].data != images[1].data
    assert all(i.format == "png" for i in images)
    (posted,) = comfy.seen("POST", "/prompt")
    nodes = posted["prompt"]
    assert nodes["3"]["inputs"] | {"model": None, "positive": None} == {
        "seed": 99,
        "steps": 4,
        "cfg": 5.0,
        "sampler_name": "dpmpp_2m",
        "scheduler": "karras",
        "denoise": 1,
        "model": None,
        "positive": None,
        "negative": ["7", 0],
        "latent_image": ["5", 0],
    }
    assert nodes["4"]["inputs"]["ckpt_name"] == "dreamshaper_8.safetensors"
    assert nodes["5"]["inputs"] == {"width": 832, "height": 1216, "batch_size": 2}
    assert nodes["6"]["inputs"]["text"] == 'a "fox"' and nodes["7"]["inputs"]["text"] == "blurry"
    (client_id,) = comfy.seen("WS", "/ws")
    assert posted["client_id"] == client_id
    steps = [p for p in seen if p.text.startswith("step ")]
    assert [p.text for p in steps] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert [p.fraction for p in steps] == [0.25, 0.5, 0.75, 1.0]
    assert any(p.text == "started" for p in seen)


async def test_an_empty_model_takes_the_servers_first_checkpoint(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    gen = backend(comfy, client)
    await gen.generate(ImageRequest(prompt="p"))
    await gen.generate(ImageRequest(prompt="q"))
    first, second = comfy.seen("POST", "/prompt")
    assert first["prompt"]["4"]["inputs"]["ckpt_name"] == CHECKPOINTS[0]
    assert second["prompt"]["3"]["inputs"]["seed"] != first["prompt"]["3"]["inputs"]["seed"]
    assert len([r for r in comfy.requests if r[1].startswith("/object_info")]) == 1  # cached


async def test_without_the_socket_history_is_polled(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.no_ws = True
    comfy.step_seconds = 0.02
    images = await backend(comfy, client).generate(ImageRequest(prompt="p"))
    assert len(images) == 1 and not comfy.seen("WS", "/ws")
    assert len([r for r in comfy.requests if r[1].startswith("/history/")]) > 1


async def test_a_socket_lost_mid_run_falls_back_to_polling(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.drop_ws_at = 2
    comfy.step_seconds = 0.02
    images = await backend(comfy, client, steps=5).generate(ImageRequest(prompt="p"))
    assert len(images) == 1


async def test_an_execution_error_fails_with_the_node_and_message(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.fail_at = 2
    with pytest.raises(PermanentProviderError) as info:
        await backend(comfy, client).generate(ImageRequest(prompt="p"))
    assert not isinstance(info.value, TransientProviderError)
    assert "node 3 (KSampler)" in str(info.value) and "HeaderTooLarge" in str(info.value)


async def test_out_of_memory_is_transient(comfy: FakeComfy, client: httpx.AsyncClient) -> None:
    comfy.fail_at = 1
    comfy.fail_type = "torch.OutOfMemoryError"
    comfy.fail_message = "Allocation on device 0 would exceed allowed memory."
    with pytest.raises(TransientProviderError, match="Allocation on device"):
        await backend(comfy, client).generate(ImageRequest(prompt="p"))


async def test_an_execution_error_seen_only_in_the_history(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.no_ws = True
    comfy.fail_at = 1
    with pytest.raises(PermanentProviderError, match="HeaderTooLarge"):
        await backend(comfy, client).generate(ImageRequest(prompt="p"))


async def test_a_validation_error_names_the_node(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    gen = backend(comfy, client, model="missing.safetensors")
    with pytest.raises(PermanentProviderError) as info:
        await gen.generate(ImageRequest(prompt="p"))
    text = str(info.value)
    assert "node 4 (CheckpointLoaderSimple)" in text and "missing.safetensors" in text
    assert info.value.status == 400


async def test_a_placeholder_left_in_a_number_field_is_a_validation_error(
    comfy: FakeComfy, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    nodes = default_nodes()
    nodes["3"]["inputs"]["steps"] = "%step_count%"  # not a placeholder we fill
    gen = backend(comfy, client, comfy_workflow=write_workflow(tmp_path, nodes))
    with pytest.raises(PermanentProviderError, match=r"node 3 .*step_count"):
        await gen.generate(ImageRequest(prompt="p"))


async def test_a_workflow_broken_after_the_start_fails_the_job(
    comfy: FakeComfy, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = write_workflow(tmp_path, default_nodes())
    gen = backend(comfy, client, comfy_workflow=path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(PermanentProviderError, match="not valid JSON"):
        await gen.generate(ImageRequest(prompt="p"))
    assert not comfy.seen("POST", "/prompt")


async def test_cancelling_a_running_job_interrupts_it(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.step_seconds = 0.05
    gen = backend(comfy, client, steps=200)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gen.generate, ImageRequest(prompt="p"))
        await wait_until(lambda: comfy.running_id() is not None)
        ours = comfy.running_id()
        tg.cancel_scope.cancel()  # superseded: the runner cancels the job's task
    assert ours is not None
    assert comfy.seen("POST", "/interrupt") == [{"prompt_id": ours}]
    await wait_until(lambda: ours in comfy.history)
    assert comfy.history[ours]["status"]["status_str"] == "error"


async def test_a_job_given_up_while_its_queue_answer_is_on_the_way_is_still_interrupted(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    """Regression (seen under load): the run was queued and running in ComfyUI, but the
    answer naming it had not arrived when the job was cancelled, so nothing interrupted it."""
    comfy.step_seconds = 0.05
    comfy.answer_gate = threading.Event()
    gen = backend(comfy, client, steps=200)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(gen.generate, ImageRequest(prompt="p"))
            await wait_until(lambda: comfy.running_id() is not None)
            ours = comfy.running_id()
            tg.cancel_scope.cancel()  # the answer to POST /prompt is still held
            comfy.answer_gate.set()
    finally:
        comfy.answer_gate.set()
    assert ours is not None
    assert comfy.seen("POST", "/interrupt") == [{"prompt_id": ours}]


async def test_cancelling_a_queued_job_deletes_it_and_spares_the_running_one(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.step_seconds = 0.05
    # Theirs must still be running when ours is cancelled, however slow the machine: at 0.05 s
    # a step, 100,000 steps outlast any test (the fake stops with the test's server).
    other = await client.post(
        comfy.url + "/prompt",
        json={"prompt": fill_nodes(steps=100_000), "client_id": "sillytavern"},
    )
    theirs = other.json()["prompt_id"]
    await wait_until(lambda: comfy.running_id() == theirs)
    gen = backend(comfy, client)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gen.generate, ImageRequest(prompt="p"))
        await wait_until(lambda: len(comfy.pending_ids()) == 1)
        (ours,) = comfy.pending_ids()
        tg.cancel_scope.cancel()
    assert comfy.seen("POST", "/queue") == [{"delete": [ours]}]
    assert comfy.seen("POST", "/interrupt") == []
    assert comfy.pending_ids() == [] and comfy.running_id() == theirs


def fill_nodes(steps: int) -> dict[str, Any]:
    values = {
        "prompt": "theirs",
        "negative_prompt": "",
        "seed": 1,
        "width": 512,
        "height": 512,
        "steps": steps,
        "scale": 7,
        "sampler": "euler",
        "scheduler": "normal",
        "model": CHECKPOINTS[0],
        "batch_size": 1,
    }
    return fill_workflow(default_nodes(), values)


async def test_the_deadline_cancels_the_run(comfy: FakeComfy, client: httpx.AsyncClient) -> None:
    comfy.step_seconds = 0.05
    gen = backend(comfy, client, steps=200, timeout_seconds=0.5)
    with pytest.raises(TransientProviderError, match="timeout_seconds"):
        await gen.generate(ImageRequest(prompt="p"))
    assert len(comfy.seen("POST", "/interrupt")) == 1


async def test_a_server_that_dies_mid_run(client: httpx.AsyncClient) -> None:
    with serve_comfy(FakeComfy(die_at=2, step_seconds=0.02)) as api:
        gen = backend(api, client, steps=5)
        with pytest.raises(TransientProviderError, match=r"connect|connection"):
            await gen.generate(ImageRequest(prompt="p"))


async def test_a_server_still_starting_is_retried(client: httpx.AsyncClient) -> None:
    port = free_port()
    api = FakeComfy(port=port)
    started: list[Any] = []

    class StartingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            if not started:
                started.append(serve_comfy(api))
                started[0].__enter__()
            await super().sleep(seconds)

    settings = ImageSettings(backend="comfyui", api_url=api.url, steps=1)
    gen = ComfyUIBackend(settings, client, clock=StartingClock(), retry=no_jitter_policy(3))
    try:
        assert len(await gen.generate(ImageRequest(prompt="p", model=CHECKPOINTS[1]))) == 1
    finally:
        if started:
            started[0].__exit__(None, None, None)


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (5000, 5000), 0).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda p: Response(b"<html>login</html>", media_type="text/html"), "not an image"),
        (lambda p: Response(b"\x89PNG\r\n\x1a\n" + bytes(5000), media_type="image/png"), "limit"),
        (lambda p: Response(_bomb(), media_type="image/png"), "over the limit"),
        (lambda p: Response(b"GIF89a" + bytes(64), media_type="image/gif"), "cannot be decoded"),
        (lambda p: RedirectResponse("http://10.0.0.1/x.png"), "private"),
        (lambda p: Response(b"gone", status_code=404), "404"),
    ],
)
async def test_a_hostile_view_answer_is_refused(
    comfy: FakeComfy, client: httpx.AsyncClient, answer: Any, why: str
) -> None:
    comfy.view = answer
    gen = backend(comfy, client, max_download_bytes=4096, max_pixels=1_000_000)
    with pytest.raises(BadResponseError, match=why):
        await gen.generate(ImageRequest(prompt="p"))


async def test_hostile_outputs(comfy: FakeComfy, client: httpx.AsyncClient) -> None:
    comfy.outputs_override = {"9": {"images": [{"subfolder": "x"}]}, "10": {"text": ["hi"]}}
    with pytest.raises(BadResponseError, match="SaveImage"):
        await backend(comfy, client).generate(ImageRequest(prompt="p"))
    many = [{"filename": f"f{i}.png", "subfolder": "../..", "type": "output"} for i in range(40)]
    comfy.outputs_override = {"9": {"images": many}}
    images = await backend(comfy, client).generate(ImageRequest(prompt="p"))
    assert len(images) == 16
    (first, *_) = comfy.seen("GET", "/view")
    assert first == {"filename": "f0.png", "subfolder": "../..", "type": "output"}  # as a query


async def test_previews_only_are_taken_when_nothing_is_saved(
    comfy: FakeComfy, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    nodes = default_nodes()
    nodes["9"]["class_type"] = "PreviewImage"
    gen = backend(comfy, client, comfy_workflow=write_workflow(tmp_path, nodes))
    assert len(await gen.generate(ImageRequest(prompt="p"))) == 1
    assert comfy.seen("GET", "/view")[0]["type"] == "temp"


async def test_basic_auth_reaches_http_and_the_socket(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    comfy.auth = "Basic " + base64.b64encode(b"me:s3cret-pass").decode()
    images = await backend(comfy, client, api_auth="me:s3cret-pass").generate(
        ImageRequest(prompt="p")
    )
    assert len(images) == 1 and comfy.seen("WS", "/ws")  # the socket was not refused
    with pytest.raises(AuthError) as info:
        await backend(comfy, client, api_auth="me:wrong-pass").generate(ImageRequest(prompt="p"))
    assert "api_auth" in str(info.value) and "wrong-pass" not in str(info.value)


# --- doctor ----------------------------------------------------------------------------------


async def test_check_reports_the_server_and_its_checkpoints(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    gen = backend(comfy, client, model=CHECKPOINTS[1], sampler="euler_ancestral")
    assert await gen.check() is None
    assert "ComfyUI 0.3.40" in gen.summary and "2 checkpoint(s)" in gen.summary
    assert "RTX 4090" in gen.summary


async def test_check_names_a_missing_model_and_sampler(
    comfy: FakeComfy, client: httpx.AsyncClient
) -> None:
    gen = backend(comfy, client, model="sdxl.safetensors", sampler="heun_turbo")
    with pytest.raises(PermanentProviderError) as info:
        await gen.check()
    assert "model 'sdxl.safetensors'" in str(info.value)
    assert "sampler 'heun_turbo'" in str(info.value) and CHECKPOINTS[0] in str(info.value)


async def test_check_of_something_that_is_not_comfyui(
    client: httpx.AsyncClient, local_server: Any
) -> None:
    settings = ImageSettings(backend="comfyui", api_url=local_server.url)
    gen = ComfyUIBackend(settings, client, retry=no_jitter_policy(1))
    with pytest.raises(PermanentProviderError, match="404"):
        await gen.check()


def test_the_factory_picks_comfyui() -> None:
    settings = ImageSettings(backend="comfyui", api_url="http://127.0.0.1:8188/prompt")
    built = make_image_backend(settings, httpx.AsyncClient())
    assert isinstance(built, ComfyUIBackend) and "8188'" in repr(built)
