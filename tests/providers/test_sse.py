"""The incremental SSE decoder, fed in every possible split."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.providers.sse import SSEDecoder, SSEEvent, StreamTooLarge, iter_sse

STREAM = (
    "\ufeff: keepalive\r\n\r\n"
    "event: image_generation.partial_image\r\n"
    'data: {"type":"partial","n":"é€😀"}\r\n\r\n'
    ": another comment\n"
    "data: line one\n"
    "data: line two\n"
    "id: 7\n\n"
    "data: : keepalive\r\r"
    "data:no-space\n"
    "unknown: field\n\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEEvent(data='{"type":"partial","n":"é€😀"}', event="image_generation.partial_image"),
    SSEEvent(data="line one\nline two", id="7"),
    SSEEvent(data=": keepalive", id="7"),
    SSEEvent(data="no-space", id="7"),
    SSEEvent(data="[DONE]", id="7"),
]


def decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def test_whole_stream() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte_boundary(cut: int) -> None:
    assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_chunking(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    bounds = [0, *points, len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode(chunks) == EXPECTED


def test_cr_then_lf_in_the_next_chunk_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r") == []  # a lone CR: could be the start of CRLF
    assert decoder.feed(b"data: b\n") == [SSEEvent(data="a")]
    assert decoder.close() == [SSEEvent(data="b")]


def test_event_without_trailing_blank_line_is_kept_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"data":[]}') == []
    assert decoder.close() == [SSEEvent(data='{"data":[]}')]


def test_comments_and_empty_events_dispatch_nothing() -> None:
    assert decode([b": keepalive\n\n: keepalive\n\n\n\nevent: x\n\n"]) == []


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.anyio
async def test_iter_sse_enforces_the_byte_cap() -> None:
    events = []
    with pytest.raises(StreamTooLarge):
        async for event in iter_sse(_chunks([b"data: 1\n\n", b": " + b"x" * 100]), max_bytes=50):
            events.append(event)
    assert events == [SSEEvent(data="1")]


@pytest.mark.anyio
async def test_iter_sse_yields_events_as_they_complete() -> None:
    seen: list[str] = []
    async for event in iter_sse(_chunks([b"data: a\n", b"\ndata: b\n\n", b"data: c"]), 1000):
        seen.append(event.data)
    assert seen == ["a", "b", "c"]


_line_text = st.text(alphabet=st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.lists(_line_text, min_size=1, max_size=3),
            st.sampled_from(["", "message", "image_generation.completed"]),
        ),
        max_size=5,
    ),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    comments=st.booleans(),
    data=st.data(),
)
def test_round_trip_of_generated_streams(
    events: list[tuple[list[str], str]], eol: str, comments: bool, data: st.DataObject
) -> None:
    text = ""
    expected: list[SSEEvent] = []
    for lines, name in events:
        if comments:
            text += ": keepalive" + eol + eol
        if name:
            text += f"event: {name}{eol}"
        text += "".join(f"data: {line}{eol}" for line in lines) + eol
        expected.append(SSEEvent(data="\n".join(lines), event=name))
    body = text.encode()
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    bounds = [0, *sorted(set(cuts)), len(body)]
    assert decode([body[a:b] for a, b in itertools.pairwise(bounds)]) == expected
