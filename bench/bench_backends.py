"""The daemon's overhead per image job on each backend (AUTOMATIC1111, ComfyUI, OpenRouter,
Gemini, NovelAI, AI Horde, fal), against the fake server's own latency measured in the same run.

Each fake renders for about 50 ms and answers one realistic 512x512 PNG (noise, about 770 kB).
Baselines, per backend: the bare protocol with no checks (A1111: one POST, the body read;
ComfyUI: the socket, ``POST /prompt``, the socket's messages until ``executing`` with ``node:
null``, ``/history``, ``/view``), and the decode every image must pass anyway (base64 for
A1111, then Pillow's full check). The backend's time minus both is what st-imagegen adds:
building the request, parsing and checking the answer, the download guard, loading and filling
the workflow, the progress callback.

The hosted services' fakes answer at once: their bare protocol is the same requests made with
the bare client (OpenRouter and Gemini: one POST; NovelAI: one POST answering a ZIP; the queues:
submit, one "waiting" poll and one "done" poll with the same poll interval, the result, the
image URL). Their decode is base64 (OpenRouter, Gemini) or none (ZIP, URLs) plus Pillow's check.

Target: that overhead <= 20 ms per job (issues 13 and 22), for each backend. Medians of
alternating runs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from PIL import Image
from starlette.responses import Response
from websockets.asyncio.client import connect

from bench.common import check, fmt_time
from daemon.config import ImageSettings
from daemon.providers.a1111 import A1111Backend, build_payload
from daemon.providers.backend import ImageRequest, Progress
from daemon.providers.comfyui import ComfyUIBackend
from daemon.providers.decode import check_image
from daemon.providers.http import RetryPolicy, make_client
from daemon.providers.registry import make_backend
from tests.providers.fake_a1111 import FakeA1111, serve_a1111
from tests.providers.fake_comfyui import CHECKPOINTS, FakeComfy, serve_comfy
from tests.providers.fake_gemini import FakeGemini
from tests.providers.fake_novelai import FakeNovelAI
from tests.providers.fake_openrouter import FakeOpenRouter
from tests.providers.fake_queues import FakeFal, FakeHorde
from tests.providers.fake_service import FakeService, serve

RUNS = 25
STEPS = 10
STEP_SECONDS = 0.005  # 50 ms of "rendering" per job
OVERHEAD_TARGET = 0.020
SIDE = 512


def _noise_png() -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (SIDE, SIDE), os.urandom(SIDE * SIDE * 3)).save(buf, format="PNG")
    return buf.getvalue()


async def _noop(progress: Progress) -> None:
    return None


async def _median(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return times


async def _alternate(
    a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]]
) -> tuple[float, float]:
    await a()  # warm connections and caches
    await b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(RUNS):
        ta += await _median(a, 1)
        tb += await _median(b, 1)
    return statistics.median(ta), statistics.median(tb)


def _decode_time(data: bytes, b64: bool) -> float:
    text = base64.b64encode(data).decode() if b64 else ""
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        raw = base64.b64decode(text) if b64 else data
        check_image(raw, 64_000_000)
        best = min(best, time.perf_counter() - started)
    return best


async def _a1111(png: bytes) -> tuple[float, float]:
    with serve_a1111(FakeA1111(step_seconds=STEP_SECONDS)) as api:
        api.answer_images = [base64.b64encode(png).decode()]
        settings = ImageSettings(backend="a1111", api_url=api.url, steps=STEPS, size="512x512")
        request = ImageRequest(prompt="a lighthouse at dusk", negative="blurry")
        async with make_client() as client:
            backend = A1111Backend(settings, client, retry=RetryPolicy(attempts=1))
            body = build_payload(settings, request)

            async def raw() -> None:
                response = await client.post(api.url + "/sdapi/v1/txt2img", json=body)
                response.raise_for_status()

            async def ours() -> None:
                images = await backend.generate(request, progress=_noop)
                assert len(images) == 1

            return await _alternate(raw, ours)


async def _comfy(png: bytes) -> tuple[float, float]:
    with serve_comfy(FakeComfy(step_seconds=STEP_SECONDS)) as api:
        api.view = lambda params: Response(png, media_type="image/png")
        settings = ImageSettings(
            backend="comfyui", api_url=api.url, steps=STEPS, size="512x512", model=CHECKPOINTS[0]
        )
        request = ImageRequest(prompt="a lighthouse at dusk", negative="blurry")
        async with make_client() as client:
            backend = ComfyUIBackend(settings, client, retry=RetryPolicy(attempts=1))
            nodes = _bare_workflow()

            async def raw() -> None:
                client_id = uuid.uuid4().hex
                ws_url = api.url.replace("http:", "ws:") + f"/ws?clientId={client_id}"
                async with connect(ws_url, proxy=None, compression=None) as ws:
                    posted = await client.post(
                        api.url + "/prompt", json={"prompt": nodes, "client_id": client_id}
                    )
                    prompt_id = posted.json()["prompt_id"]
                    async for message in ws:
                        event = json.loads(message) if isinstance(message, str) else {}
                        data = event.get("data", {})
                        done = event.get("type") == "executing" and data.get("node") is None
                        if done and data.get("prompt_id") == prompt_id:
                            break
                history = (await client.get(f"{api.url}/history/{prompt_id}")).json()
                for node in history[prompt_id]["outputs"].values():
                    for image in node["images"]:
                        (await client.get(api.url + "/view", params=image)).raise_for_status()

            async def ours() -> None:
                images = await backend.generate(request, progress=_noop)
                assert len(images) == 1

            return await _alternate(raw, ours)


QUEUE_POLL = 0.005  # seconds between the queues' polls, the same for both sides


async def _hosted(
    fake: FakeService, image: dict[str, Any], raw_calls: Callable[[Any, str], Awaitable[None]]
) -> tuple[float, float]:
    """Bare requests against ``fake`` versus the backend ``image`` configures."""
    with serve(fake) as api:
        settings = ImageSettings.model_validate(
            {
                k: (v.replace("{url}", api.url) if isinstance(v, str) else v)
                for k, v in image.items()
            }
        )
        request = ImageRequest(prompt="a lighthouse at dusk", negative="blurry", seed=1)
        async with make_client() as client:
            backend = make_backend(settings, client, retry=RetryPolicy(attempts=1))

            async def raw() -> None:
                await raw_calls(client, api.url)

            async def ours() -> None:
                images = await backend.generate(request, progress=_noop)
                assert len(images) == 1

            return await _alternate(raw, ours)


def _hosted_cases(
    png: bytes,
) -> list[tuple[str, Callable[[], Awaitable[tuple[float, float]]], bool]]:
    router = FakeOpenRouter(image=png)
    gemini = FakeGemini(image=png, thought_first=False)
    nai = FakeNovelAI(image=png)
    horde = FakeHorde(image=png, waits=1)
    fal = FakeFal(image=png, waits=1)

    async def router_raw(client: Any, url: str) -> None:
        body = {
            "model": "google/gemini-2.5-flash-image",
            "messages": [{"role": "user", "content": "a lighthouse at dusk"}],
            "modalities": ["image", "text"],
            "image_config": {"aspect_ratio": "1:1"},
        }
        headers = {"Authorization": f"Bearer {router.key}"}
        answer = await client.post(url + "/api/v1/chat/completions", json=body, headers=headers)
        answer.raise_for_status()
        answer.json()

    async def gemini_raw(client: Any, url: str) -> None:
        body = {
            "contents": [{"parts": [{"text": "a lighthouse at dusk"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
        }
        answer = await client.post(
            url + "/v1beta/models/gemini-2.5-flash-image:generateContent",
            json=body,
            headers={"x-goog-api-key": gemini.key},
        )
        answer.raise_for_status()
        answer.json()

    async def nai_raw(client: Any, url: str) -> None:
        params = {"width": SIDE, "height": SIDE, "n_samples": 1}
        body = {"input": "a lighthouse", "model": "nai-diffusion-4-5-full", "parameters": params}
        headers = {"Authorization": f"Bearer {nai.key}"}
        answer = await client.post(url + "/ai/generate-image", json=body, headers=headers)
        answer.raise_for_status()

    async def horde_raw(client: Any, url: str) -> None:
        headers = {"apikey": horde.key}
        body = {"prompt": "a lighthouse", "params": {"n": 1, "width": SIDE, "height": SIDE}}
        ticket = (
            await client.post(url + "/api/v2/generate/async", json=body, headers=headers)
        ).json()
        check = f"{url}/api/v2/generate/check/{ticket['id']}"
        while True:
            if (await client.get(check, headers=headers)).json()["done"]:
                break
            await anyio.sleep(QUEUE_POLL)
        status_url = f"{url}/api/v2/generate/status/{ticket['id']}"
        status = await client.get(status_url, headers=headers)
        for gen in status.json()["generations"]:
            (await client.get(gen["img"])).raise_for_status()

    async def fal_raw(client: Any, url: str) -> None:
        headers = {"Authorization": f"Key {fal.key}"}
        body = {"prompt": "a lighthouse", "image_size": {"width": SIDE, "height": SIDE}}
        ticket = (
            await client.post(url + "/fal-ai/flux/schnell", json=body, headers=headers)
        ).json()
        while True:
            state = (await client.get(ticket["status_url"], headers=headers)).json()["status"]
            if state == "COMPLETED":
                break
            await anyio.sleep(QUEUE_POLL)
        result = (await client.get(ticket["response_url"], headers=headers)).json()
        for image in result["images"]:
            (await client.get(image["url"])).raise_for_status()

    size = f"{SIDE}x{SIDE}"
    return [
        (
            "OpenRouter",
            lambda: _hosted(
                router,
                {"backend": "openrouter", "api_url": "{url}/api/v1", "api_key": router.key},
                router_raw,
            ),
            True,
        ),
        (
            "Gemini",
            lambda: _hosted(
                gemini,
                {"backend": "gemini", "api_url": "{url}/v1beta", "api_key": gemini.key},
                gemini_raw,
            ),
            True,
        ),
        (
            "NovelAI",
            lambda: _hosted(
                nai,
                {"backend": "novelai", "api_url": "{url}", "api_key": nai.key, "size": size},
                nai_raw,
            ),
            False,
        ),
        (
            "AI Horde",
            lambda: _hosted(
                horde,
                {
                    "backend": "horde",
                    "api_url": "{url}/api",
                    "size": size,
                    "horde": {"poll_seconds": QUEUE_POLL},
                },
                horde_raw,
            ),
            False,
        ),
        (
            "fal",
            lambda: _hosted(
                fal,
                {
                    "backend": "fal",
                    "api_url": "{url}",
                    "api_key": fal.key,
                    "size": size,
                    "fal": {"poll_seconds": QUEUE_POLL},
                },
                fal_raw,
            ),
            False,
        ),
    ]


def _bare_workflow() -> dict[str, Any]:
    from daemon.providers.comfyui import fill_workflow, load_workflow

    values = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "seed": 1,
        "width": SIDE,
        "height": SIDE,
        "steps": STEPS,
        "scale": 7.0,
        "sampler": "euler",
        "scheduler": "normal",
        "model": CHECKPOINTS[0],
        "batch_size": 1,
    }
    return fill_workflow(load_workflow(None).nodes, values)


def main() -> int:
    saved = structlog.get_config()
    # The backends log one info line per job: not part of what is measured, and noise here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        return _run()
    finally:
        structlog.configure(**saved)


def _run() -> int:
    png = _noise_png()
    print(
        f"  image: {SIDE}x{SIDE} PNG, {len(png) / 1e3:.0f} kB; fake render "
        f"{STEPS} x {STEP_SECONDS * 1e3:.0f} ms; {RUNS} alternating runs each, medians"
    )
    ok = True
    cases: list[tuple[str, Callable[[], Awaitable[tuple[float, float]]], bool]] = [
        ("A1111", lambda: _a1111(png), True),
        ("ComfyUI", lambda: _comfy(png), False),
        *_hosted_cases(png),
    ]
    for name, run, b64 in cases:
        raw, ours = anyio.run(run)
        decode = _decode_time(png, b64)
        overhead = ours - raw - decode
        print(f"  {name} bare protocol (the fake's own latency)   {fmt_time(raw):>10}")
        print(f"  {name} image decode and check                   {fmt_time(decode):>10}")
        print(f"  {name} backend.generate                         {fmt_time(ours):>10}")
        print(f"  {name} overhead (generate - bare - decode)      {fmt_time(overhead):>10}")
        ok &= check(
            f"{name} generate / bare protocol",
            ours / raw,
            f"+{OVERHEAD_TARGET * 1e3:.0f} ms",
            overhead <= OVERHEAD_TARGET,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
