"""PNG text chunks: the A1111 ``parameters`` text and our JSON, read back by Pillow."""

from __future__ import annotations

import io
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from daemon.providers.pngtext import a1111_parameters, read_text_chunks, with_text_chunks


def png(**texts: str) -> bytes:
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (10, 200, 30)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def pillow_texts(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return dict(image.text)  # type: ignore[attr-defined]


def test_parameters_in_a1111_form() -> None:
    text = a1111_parameters(
        "anime style, silver hair, a lighthouse",
        "photo, lowres",
        settings=[("Steps", 20), ("Sampler", ""), ("Seed", 1234), ("Model", "sdxl, v2")],
    )
    assert text == (
        "anime style, silver hair, a lighthouse\n"
        "Negative prompt: photo, lowres\n"
        'Steps: 20, Seed: 1234, Model: "sdxl, v2"'
    )
    assert a1111_parameters("p") == "p"


def test_chunks_are_written_readable_and_pixels_untouched() -> None:
    before = png()
    after = with_text_chunks(before, {"parameters": "a fox\nSeed: 7", "st-imagegen": '{"a":1}'})
    assert pillow_texts(after) == {"parameters": "a fox\nSeed: 7", "st-imagegen": '{"a":1}'}
    with Image.open(io.BytesIO(before)) as a, Image.open(io.BytesIO(after)) as b:
        assert a.tobytes() == b.tobytes() and a.size == b.size


def test_unicode_goes_in_itxt_and_same_keywords_are_replaced() -> None:
    data = with_text_chunks(png(parameters="old"), {"parameters": "Kürbis, 桜, 🦊"})
    assert pillow_texts(data) == {"parameters": "Kürbis, 桜, 🦊"}
    assert read_text_chunks(data) == {"parameters": "Kürbis, 桜, 🦊"}
    assert data.count(b"parameters") == 1


def test_comfyui_graph_chunks_are_kept() -> None:
    graph = json.dumps({"3": {"class_type": "KSampler"}})
    data = with_text_chunks(png(prompt=graph), {"prompt": "a fox", "parameters": "a fox"})
    assert read_text_chunks(data) == {"prompt": graph, "parameters": "a fox"}
    fresh = with_text_chunks(png(), {"prompt": "a fox"})
    assert read_text_chunks(fresh) == {"prompt": "a fox"}


def test_not_a_png_is_left_alone() -> None:
    assert with_text_chunks(b"\xff\xd8\xff jpeg bytes", {"parameters": "x"}) == (
        b"\xff\xd8\xff jpeg bytes"
    )
