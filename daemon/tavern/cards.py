"""Character cards: the JSON SillyTavern keeps in a PNG's ``tEXt`` chunks.

Read as ST's ``character-card-parser.js`` reads: walk the chunks (never decoding pixels), take
the first ``ccv3`` chunk, else the first ``chara`` (keywords case-insensitive), base64-decode it
as UTF-8 JSON. Fields come from ``data.*`` when present, else from the v1 top level.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from daemon.errors import CardError
from daemon.tavern.files import open_regular

__all__ = ["MAX_TEXT_BYTES", "Card", "parse_card_json", "read_card", "sd_character_prompt"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 16 * 1024 * 1024
"""Total ``tEXt`` bytes read from one card; a bigger chunk is refused, not loaded."""
_MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk length
_KEYWORDS = ("ccv3", "chara")
_URLSAFE = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True, slots=True)
class Card:
    """The texts a prompt needs, plus the whole card JSON."""

    name: str
    description: str
    personality: str
    scenario: str
    spec: str
    data: dict[str, Any] = field(repr=False)


def _read_exact(fh: IO[bytes], size: int, what: str, path: Path) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise CardError(f"card {path.name!r} is truncated (inside {what})")
    return data


def _text_chunks(fh: IO[bytes], file_size: int, path: Path) -> list[tuple[str, bytes]]:
    """``(keyword, text)`` of every ``tEXt`` chunk before ``IEND``."""
    if fh.read(8) != PNG_SIGNATURE:
        raise CardError(f"card {path.name!r} is not a PNG file")
    texts: list[tuple[str, bytes]] = []
    total = 0
    pos = 8
    while True:
        head = fh.read(8)
        if len(head) < 8:
            raise CardError(f"card {path.name!r} is truncated (no IEND chunk)")
        length, kind = struct.unpack(">I4s", head)
        pos += 8
        if length > _MAX_CHUNK:
            raise CardError(f"card {path.name!r} is a broken PNG (chunk length {length})")
        if kind == b"IEND":
            return texts
        if pos + length + 4 > file_size:
            raise CardError(
                f"card {path.name!r} is truncated (a {kind.decode('latin-1')!r} chunk "
                "runs past the end of the file)"
            )
        if kind == b"tEXt":
            total += length
            if total > MAX_TEXT_BYTES:
                raise CardError(
                    f"card {path.name!r} has {total / 1e6:.0f} MB of text chunks, over the "
                    f"{MAX_TEXT_BYTES / 1e6:.0f} MB limit"
                )
            body = _read_exact(fh, length, "a tEXt chunk", path)
            (crc,) = struct.unpack(">I", _read_exact(fh, 4, "a CRC", path))
            if zlib.crc32(kind + body) != crc:
                raise CardError(f"card {path.name!r} is corrupt (bad CRC in a tEXt chunk)")
            keyword, sep, text = body.partition(b"\x00")
            if sep:
                texts.append((keyword.decode("latin-1"), text))
        else:
            fh.seek(length + 4, os.SEEK_CUR)  # skip pixel data and its CRC unread
        pos += length + 4


def parse_card_json(obj: dict[str, Any]) -> Card:
    """A :class:`Card` from card JSON: ``data.<field>`` wins over the v1 top-level field."""
    data = obj.get("data")
    inner = data if isinstance(data, dict) else {}

    def text(key: str) -> str:
        for source in (inner, obj):
            value = source.get(key)
            if isinstance(value, str):
                return value
        return ""

    spec = obj.get("spec")
    return Card(
        name=text("name"),
        description=text("description"),
        personality=text("personality"),
        scenario=text("scenario"),
        spec=spec if isinstance(spec, str) else "",
        data=obj,
    )


def sd_character_prompt(card: Card) -> tuple[str, str]:
    """``(positive, negative)`` of the card's shared image prompt, or empty strings.

    SillyTavern's image extension shares a character's prompt prefix in the card as
    ``data.extensions.sd_character_prompt = {"positive": ..., "negative": ...}``.
    """
    data = card.data.get("data")
    extensions = data.get("extensions") if isinstance(data, dict) else None
    if not isinstance(extensions, dict):
        extensions = card.data.get("extensions")
    shared = extensions.get("sd_character_prompt") if isinstance(extensions, dict) else None
    if not isinstance(shared, dict):
        return "", ""
    positive, negative = shared.get("positive"), shared.get("negative")
    return (
        positive.strip() if isinstance(positive, str) else "",
        negative.strip() if isinstance(negative, str) else "",
    )


def read_card(path: Path) -> Card:
    """Read the character card at ``path``. Raises :class:`CardError` saying what is wrong."""
    fd, st = open_regular(path, CardError, "card", "a PNG")
    with os.fdopen(fd, "rb") as fh:
        try:
            chunks = _text_chunks(fh, st.st_size, path)
        except OSError as exc:
            raise CardError(f"card {str(path)!r} cannot be read: {exc.strerror}") from None
    for wanted in _KEYWORDS:
        for keyword, text in chunks:
            if keyword.lower() == wanted:
                return parse_card_json(_decode(text, keyword, path))
    raise CardError(
        f"card {path.name!r} holds no character data (no 'ccv3' or 'chara' tEXt chunk); "
        "is it a plain image rather than a SillyTavern card?"
    )


def _decode(text: bytes, keyword: str, path: Path) -> dict[str, Any]:
    # Node's Buffer.from(text, "base64") also takes URL-safe letters and missing padding.
    compact = b"".join(text.split()).rstrip(b"=").translate(_URLSAFE)
    try:
        raw = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"card {path.name!r}: its {keyword!r} chunk is not valid base64") from None
    try:
        obj = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        raise CardError(f"card {path.name!r}: its {keyword!r} chunk is not valid JSON") from None
    if not isinstance(obj, dict):
        raise CardError(f"card {path.name!r}: its {keyword!r} chunk is not a JSON object")
    return obj
