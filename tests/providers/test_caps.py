"""Every decoder within its cap: a huge images-API answer refused without holding more than
about the cap, ZIP answers (NovelAI) by entries, sizes and ratio, thumbnails of oversized or
hostile files in ST's own folders."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from PIL import Image

from daemon.config import ImageSettings
from daemon.errors import BadResponseError
from daemon.providers.archive import ArchiveRejected, ZipLimits, read_zip
from daemon.providers.decode import ImageRejected, open_checked
from daemon.providers.images import ImageGenerator
from daemon.web.thumbs import Thumbs
from tests.providers.conftest import FakeClock, LocalServer, make_image, no_jitter_policy

pytestmark = pytest.mark.anyio

CAP = 16 * 1024 * 1024
ROUTE = "POST /v1/images/generations"


def _endless_json() -> Iterator[bytes]:
    yield b'{"data": [{"b64_json": "'
    chunk = b"A" * 65536
    while True:
        yield chunk


def _stream(handler: object, chunks: Iterator[bytes]) -> None:
    from http.server import BaseHTTPRequestHandler

    assert isinstance(handler, BaseHTTPRequestHandler)
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    for chunk in chunks:
        handler.wfile.write(chunk)


async def test_an_endless_answer_is_refused_holding_no_more_than_the_cap(
    local_server: LocalServer, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    local_server.routes[ROUTE] = lambda h: _stream(h, _endless_json())
    settings = ImageSettings(
        api_url=local_server.url + "/v1", api_key="sk-cap-0000", max_response_bytes=CAP
    )
    generator = ImageGenerator(settings, client, clock=clock, retry=no_jitter_policy(1))
    tracemalloc.start()
    try:
        with anyio.fail_after(60), pytest.raises(BadResponseError, match="max_response_bytes"):
            await generator.generate("fox")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 1.5 * CAP, f"peak {peak} bytes for a cap of {CAP}"


def _zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_a_zip_answer_within_its_caps_gives_its_images() -> None:
    png = make_image("PNG", (32, 24))
    entries = read_zip(_zip({"image_0.png": png, "../../etc/x.png": png}))
    assert [e.name for e in entries] == ["image_0.png", "x.png"]  # never a path
    assert entries[0].data == png


def test_zip_caps_on_entries_sizes_and_ratio() -> None:
    png = make_image("PNG", (8, 8))
    with pytest.raises(ArchiveRejected, match="holds 5 files"):
        read_zip(_zip({f"{n}.png": png for n in range(5)}), ZipLimits(max_entries=4))
    bomb = _zip({"bomb.png": bytes(50 * 1024 * 1024)})  # 50 MB of zeros: about 50 KB packed
    assert len(bomb) < 200_000
    with pytest.raises(ArchiveRejected, match="ZIP bomb"):
        read_zip(bomb)
    with pytest.raises(ArchiveRejected, match="more than 1000"):
        read_zip(_zip({"big.png": png * 400}, zipfile.ZIP_STORED), ZipLimits(max_entry_bytes=1000))
    with pytest.raises(ArchiveRejected, match="unpacks to more than"):
        read_zip(
            _zip({"a.png": png, "b.png": png}, zipfile.ZIP_STORED),
            ZipLimits(max_total_bytes=len(png) + 10),
        )
    with pytest.raises(ArchiveRejected, match="not a readable ZIP"):
        read_zip(b"PK\x03\x04 not really")


def test_a_zip_whose_directory_lies_about_sizes_is_still_capped() -> None:
    data = bytearray(_zip({"liar.png": bytes(5 * 1024 * 1024)}))
    # Rewrite the declared size (local header and central directory) to 100 bytes.
    real = (5 * 1024 * 1024).to_bytes(4, "little")
    assert data.count(real) == 2
    data = bytearray(bytes(data).replace(real, (100).to_bytes(4, "little")))
    with pytest.raises(ArchiveRejected):
        read_zip(bytes(data))


def _png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("L", size).save(path, format="PNG", optimize=True)
    return path


def test_thumbnails_go_through_the_pixel_cap_before_decoding(tmp_path: Path) -> None:
    thumbs = Thumbs(tmp_path / "thumbs")
    small = _png(tmp_path / "small.png", (64, 48))
    assert thumbs.get(small, 64_000_000).is_file()
    huge = _png(tmp_path / "huge.png", (9000, 9000))  # 81 Mpx of black: a small file
    tracemalloc.start()
    try:
        with pytest.raises(ImageRejected, match="max_pixels"):
            thumbs.get(huge, 64_000_000)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024  # refused from the header, never decoded
    bomb = _png(tmp_path / "bomb.png", (20000, 20000))  # beyond Pillow's own bomb limit
    with pytest.raises(ImageRejected):
        thumbs.get(bomb, 10**9)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    with pytest.raises(ImageRejected, match="not a PNG"):
        thumbs.get(fake, 64_000_000)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(small.read_bytes()[:60])
    with pytest.raises(ImageRejected):
        thumbs.get(truncated, 64_000_000)
    with open_checked(small, 64_000_000) as image:
        assert image.size == (64, 48)
