"""Generation parameters written into a PNG's own text chunks, as A1111 and ComfyUI users expect.

``parameters`` holds the A1111 text (prompt, ``Negative prompt:``, then ``Steps: …, Seed: …``);
A1111's PNG Info, ComfyUI's loader, Civitai and most image browsers read it. ``st-imagegen``
holds the same as JSON (style, character tags, job id) for tools. A ``prompt`` or ``workflow``
chunk ComfyUI wrote itself is kept: ComfyUI reads those first and expects its graph there.

Chunks go right after ``IHDR`` without decoding pixels; text outside Latin-1 goes in ``iTXt``
(UTF-8), as the PNG spec wants. Chunks of the same keyword already there are replaced.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["OURS", "PARAMETERS", "a1111_parameters", "read_text_chunks", "with_text_chunks"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARAMETERS = "parameters"
OURS = "st-imagegen"
_KEEP_THEIRS = frozenset({"prompt", "workflow"})


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _text_chunk(keyword: str, text: str) -> bytes:
    key = keyword.encode("latin-1")
    try:
        return _chunk(b"tEXt", key + b"\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # iTXt: keyword, NUL, compression flag 0, method 0, empty language and translated key.
        return _chunk(b"iTXt", key + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def _chunks(data: bytes) -> list[tuple[bytes, bytes, int, int]]:
    """``(kind, body, start, end)`` of every chunk; ValueError if ``data`` is not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out = []
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG")
        out.append((kind, data[pos + 8 : pos + 8 + length], pos, end))
        pos = end
        if kind == b"IEND":
            break
    return out


def _keyword(kind: bytes, body: bytes) -> str | None:
    if kind not in (b"tEXt", b"iTXt", b"zTXt"):
        return None
    return body.split(b"\x00", 1)[0].decode("latin-1")


def read_text_chunks(data: bytes) -> dict[str, str]:
    """Keyword -> text of the ``tEXt`` and uncompressed ``iTXt`` chunks (for tests and tools)."""
    found: dict[str, str] = {}
    for kind, body, _start, _end in _chunks(data):
        keyword = _keyword(kind, body)
        if keyword is None:
            continue
        rest = body[len(keyword) + 1 :]
        if kind == b"tEXt":
            found[keyword] = rest.decode("latin-1")
        elif kind == b"iTXt" and rest[:1] == b"\x00":
            _flag, _method, tail = rest[0], rest[1], rest[2:]
            _lang, _, tail = tail.partition(b"\x00")
            _translated, _, text = tail.partition(b"\x00")
            found[keyword] = text.decode("utf-8", "replace")
    return found


def with_text_chunks(data: bytes, texts: Mapping[str, str]) -> bytes:
    """``data`` with ``texts`` as text chunks after ``IHDR`` (same keywords replaced).

    ComfyUI's own ``prompt``/``workflow`` chunks are never replaced. Not a PNG: unchanged.
    """
    try:
        chunks = _chunks(data)
    except ValueError:
        return data
    if not chunks or chunks[0][0] != b"IHDR":
        return data
    present = {_keyword(k, b) for k, b, _s, _e in chunks} - {None}
    wanted = {k: v for k, v in texts.items() if not (k in _KEEP_THEIRS and k in present)}
    parts = [PNG_SIGNATURE]
    for index, (kind, body, start, end) in enumerate(chunks):
        if _keyword(kind, body) in wanted:
            continue
        parts.append(data[start:end])
        if index == 0:
            parts.extend(_text_chunk(k, v) for k, v in wanted.items())
    return b"".join(parts) + data[chunks[-1][3] :]


def a1111_parameters(
    prompt: str,
    negative: str = "",
    *,
    settings: Sequence[tuple[str, Any]] = (),
) -> str:
    """The A1111 ``parameters`` text: prompt, negative line, then ``Key: value, …``."""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    shown = []
    for key, value in settings:
        if value in (None, ""):
            continue
        text = str(value)
        if any(c in text for c in ',:"\n'):
            text = json.dumps(text, ensure_ascii=False)  # A1111 quotes values like this
        shown.append(f"{key}: {text}")
    if shown:
        lines.append(", ".join(shown))
    return "\n".join(lines)
