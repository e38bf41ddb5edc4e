"""Reference images per provider shape (respx): OpenAI's /images/edits with image[] files, a
gateway's JSON field of data URLs, and a clean fallback where an API cannot take them."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import respx

from daemon.errors import AuthError
from daemon.providers.backend import ReferenceImage
from tests.providers.conftest import FakeClock, make_image
from tests.providers.test_images import AIRFORCE_URL, GENERIC_URL, PNG, b64, generator

pytestmark = pytest.mark.anyio

REF = ReferenceImage(make_image("PNG", (4, 4)), "image/png", "alice.png")
OTHER = ReferenceImage(make_image("JPEG", (6, 3)), "image/jpeg", "ref-2.jpg")
EDITS_URL = "https://api.openai.com/v1/images/edits"
OPENAI_GENERATIONS = "https://api.openai.com/v1/images/generations"


def answer() -> httpx.Response:
    return httpx.Response(200, json={"data": [{"b64_json": b64(PNG)}]})


def data_url(ref: ReferenceImage) -> str:
    return f"data:{ref.mime};base64,{base64.b64encode(ref.data).decode()}"


async def test_gpt_image_sends_references_to_images_edits_as_files(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    edits = router.post(EDITS_URL).mock(return_value=answer())
    plain = router.post(OPENAI_GENERATIONS).mock(return_value=answer())
    gen = generator(client, clock, api_url="https://api.openai.com/v1", model="gpt-image-1")
    images = await gen.generate("Alice by the lantern", references=[REF, OTHER])
    assert len(images) == 1 and plain.call_count == 0
    request = edits.calls[0].request
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["authorization"] == "Bearer sk-img-9876"
    body = request.content
    assert body.count(b'name="image[]"') == 2
    assert b'filename="alice.png"' in body and REF.data in body and OTHER.data in body
    assert b'name="prompt"\r\n\r\nAlice by the lantern' in body
    assert b'name="model"\r\n\r\ngpt-image-1' in body


async def test_a_gateway_takes_references_as_data_urls_in_its_field(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(AIRFORCE_URL).mock(return_value=answer())
    gen = generator(client, clock, api_url="https://api.airforce/v1", model="flux")
    await gen.generate("Alice", references=[REF])
    assert json.loads(route.calls[0].request.content)["image_urls"] == [data_url(REF)]

    generic = router.post(GENERIC_URL).mock(return_value=answer())
    gen = generator(client, clock, reference_field="input_references")
    await gen.generate("Alice", references=[REF, OTHER])
    body = json.loads(generic.calls[0].request.content)
    assert body["input_references"] == [data_url(REF), data_url(OTHER)]


async def test_an_api_without_a_reference_way_generates_normally(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    route = router.post(GENERIC_URL).mock(return_value=answer())
    images = await generator(client, clock).generate("Alice", references=[REF])
    body = json.loads(route.calls[0].request.content)
    assert len(images) == 1 and body["prompt"] == "Alice"
    assert not any(isinstance(v, list) for v in body.values())  # no references anywhere


async def test_a_refusal_falls_back_to_normal_generation_once_and_for_all(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    edits = router.post(EDITS_URL).mock(
        return_value=httpx.Response(
            400, json={"error": {"message": "image[] is not supported for this model"}}
        )
    )
    plain = router.post(OPENAI_GENERATIONS).mock(return_value=answer())
    gen = generator(client, clock, api_url="https://api.openai.com/v1", model="gpt-image-1")
    assert len(await gen.generate("Alice", references=[REF])) == 1
    assert (edits.call_count, plain.call_count) == (1, 1)
    await gen.generate("Alice again", references=[REF])
    assert (edits.call_count, plain.call_count) == (1, 2)  # not tried again


async def test_a_wrong_key_is_not_taken_for_a_refusal(
    client: httpx.AsyncClient, clock: FakeClock, router: respx.Router
) -> None:
    router.post(EDITS_URL).mock(return_value=httpx.Response(401, json={"error": "bad key"}))
    plain = router.post(OPENAI_GENERATIONS).mock(return_value=answer())
    gen = generator(client, clock, api_url="https://api.openai.com/v1", model="gpt-image-1")
    with pytest.raises(AuthError):
        await gen.generate("Alice", references=[REF])
    assert plain.call_count == 0
