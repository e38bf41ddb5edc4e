"""Character card reading: real ST cards and hand-made PNGs, good and broken."""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

import daemon.tavern.cards as cards_mod
from daemon.errors import CardError
from daemon.tavern.cards import PNG_SIGNATURE, parse_card_json, read_card
from daemon.tavern.layout import card_path


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def text(keyword: str, obj: Any) -> bytes:
    payload = base64.b64encode(json.dumps(obj).encode())
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + payload)


IHDR = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
IDAT = chunk(b"IDAT", zlib.compress(b"\x00\x00"))
IEND = chunk(b"IEND", b"")


def png(*chunks: bytes, end: bool = True) -> bytes:
    return PNG_SIGNATURE + IHDR + IDAT + b"".join(chunks) + (IEND if end else b"")


V2 = {
    "name": "Old Name",
    "description": "v1 description",
    "personality": "v1 personality",
    "scenario": "v1 scenario",
    "spec": "chara_card_v2",
    "data": {"name": "Alice", "description": "A botanist.", "personality": "curious"},
}


@pytest.mark.parametrize("version", ["st-1.12", "st-1.14", "st-1.18"])
def test_real_cards(version: str) -> None:
    root = Path(__file__).parent.parent / "fixtures" / version
    for stem, needle in (("Alice", "botanist"), ("Bob", "lighthouse")):
        card = read_card(card_path(root, "default-user", stem))
        assert card.name == stem and needle in card.description
        assert card.personality and card.scenario and card.spec == "chara_card_v3"
        assert isinstance(card.data.get("data"), dict)


def test_data_overrides_the_v1_top_level(tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    path.write_bytes(png(text("chara", V2)))
    card = read_card(path)
    assert (card.name, card.description, card.personality) == (
        "Alice",
        "A botanist.",
        "curious",
    )
    assert card.scenario == "v1 scenario"  # not in data: the top level still counts
    assert card.spec == "chara_card_v2" and card.data == V2
    v1 = parse_card_json({"name": "Plain", "description": "d", "data": "not a dict"})
    assert (v1.name, v1.description, v1.personality, v1.spec) == ("Plain", "d", "", "")


def test_ccv3_wins_whatever_the_order_and_case(tmp_path: Path) -> None:
    v3 = {"spec": "chara_card_v3", "data": {"name": "Three"}}
    path = tmp_path / "c.png"
    path.write_bytes(png(text("CCV3", v3), text("chara", V2)))
    assert read_card(path).name == "Three"
    path.write_bytes(png(text("Chara", V2), text("ccv3", v3)))
    assert read_card(path).name == "Three"
    path.write_bytes(png(text("Comment", {"x": 1}), text("CHARA", V2)))
    assert read_card(path).name == "Alice"


def test_lenient_base64_like_node(tmp_path: Path) -> None:
    raw = json.dumps({"name": "Ünï ~~~?>"}).encode()
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=")
    path = tmp_path / "c.png"
    path.write_bytes(png(chunk(b"tEXt", b"chara\x00" + encoded[:10] + b"\n" + encoded[10:])))
    assert read_card(path).name == "Ünï ~~~?>"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a PNG"),
        (b"GIF89a" + b"\x00" * 20, "not a PNG"),
        (png(), "no character data"),
        (png(chunk(b"tEXt", b"chara-without-nul")), "no character data"),
        (png(chunk(b"tEXt", b"chara\x00!!!not base64!!!")), "not valid base64"),
        (png(chunk(b"tEXt", b"chara\x00" + base64.b64encode(b"{bad json"))), "not valid JSON"),
        (png(chunk(b"tEXt", b"chara\x00" + base64.b64encode(b"[1, 2]"))), "not a JSON object"),
        (png(text("chara", V2), end=False), "truncated"),
        (png(text("chara", V2))[:-20], "truncated"),
        (PNG_SIGNATURE + IHDR[:10], "truncated"),
        (PNG_SIGNATURE + struct.pack(">I", 2**31 + 5) + b"IDAT", "broken PNG"),
        (PNG_SIGNATURE + struct.pack(">I", 1000) + b"IDAT" + b"x" * 10, "truncated"),
    ],
)
def test_broken_cards_give_clear_errors(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "c.png"
    path.write_bytes(data)
    with pytest.raises(CardError, match=message):
        read_card(path)


def test_bad_crc_in_a_text_chunk(tmp_path: Path) -> None:
    good = text("chara", V2)
    broken = good[:-1] + bytes([good[-1] ^ 0xFF])
    path = tmp_path / "c.png"
    path.write_bytes(png(broken))
    with pytest.raises(CardError, match="CRC"):
        read_card(path)


def test_huge_text_chunk_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cards_mod, "MAX_TEXT_BYTES", 1000)
    path = tmp_path / "c.png"
    path.write_bytes(png(text("chara", {**V2, "description": "x" * 5000})))
    with pytest.raises(CardError, match="over the"):
        read_card(path)


def test_pixel_data_is_skipped_not_read(tmp_path: Path) -> None:
    """A 1 GB (sparse) IDAT before the text chunks: reading the card stays instant."""
    path = tmp_path / "big.png"
    size = 1 << 30
    with path.open("wb") as fh:
        fh.write(PNG_SIGNATURE + IHDR + struct.pack(">I", size) + b"IDAT")
        fh.seek(size, 1)
        fh.write(b"\x00\x00\x00\x00" + text("chara", V2) + IEND)
    assert read_card(path).name == "Alice"


def test_missing_directory_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="does not exist"):
        read_card(tmp_path / "none.png")
    folder = tmp_path / "dir.png"
    folder.mkdir()
    with pytest.raises(CardError, match="is a directory"):
        read_card(folder)


def test_a_fifo_named_like_a_card_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(CardError, match="not a regular file"):
        read_card(fifo)


def test_an_unreadable_card_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(PNG_SIGNATURE + IHDR + IEND)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(CardError, match="permission denied"):
            read_card(path)
    finally:
        path.chmod(0o600)
