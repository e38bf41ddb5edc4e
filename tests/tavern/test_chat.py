"""The chat codec against real ST files of every version and hand-made variants."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import ChatReadError
from daemon.tavern.chat import (
    MARKER_KEY,
    Message,
    MessageIdentity,
    encode_message,
    format_send_date,
    is_header,
    parse_chat,
    parse_line,
    parse_send_date,
    read_chat,
    send_date_style,
    split_lines,
)
from daemon.tavern.layout import iter_chats
from tests.conftest import count_parsed_lines
from tests.stsim import STSim, js_stringify

FIXTURES = Path(__file__).parent.parent / "fixtures"


def line(obj: dict[str, Any]) -> bytes:
    return js_stringify(obj).encode()


def fixture_chat(version: str, rel: str) -> Path:
    return FIXTURES / version / "default-user" / rel


# --- real files ---------------------------------------------------------------------------------


def test_every_fixture_round_trips_and_parses(st_root: Path) -> None:
    refs = list(iter_chats(st_root))
    assert len(refs) == 4
    for ref in refs:
        chat, data = read_chat(ref.path)
        assert b"\n".join(ln.raw for ln in chat.lines) == data
        assert chat.bad_lines == [] and not chat.trailing_newline
        assert not data.endswith(b"\n")
        for message in chat.messages:
            assert chat.lines[chat.line_of(message.index)].raw == message.raw
            assert message.mes and message.revision.mes_hash
            assert parse_send_date(message.data.get("send_date")) is not None


def test_headers_by_version() -> None:
    v112 = read_chat(fixture_chat("st-1.12", "chats/Alice/Alice - 2026-11-23@20h55m47s.jsonl"))[0]
    assert v112.header is not None and v112.header["character_name"] == "Alice"
    assert v112.integrity is None and v112.date_style == "human"
    assert len(v112.messages) == 11
    v114 = read_chat(fixture_chat("st-1.14", "chats/Alice/Alice - 2026-11-23@20h53m10s.jsonl"))[0]
    assert v114.integrity == "7e3a6af9-ec59-4a0a-8a17-eaa44a221279"
    v118 = read_chat(
        fixture_chat("st-1.18", "chats/Alice/Alice - 2026-11-23@21h30m23s969ms.jsonl")
    )[0]
    assert v118.header is not None and v118.header["user_name"] == "unused"
    assert v118.integrity and v118.date_style == "iso"
    group = read_chat(fixture_chat("st-1.12", "group chats/2026-11-23@22h55m48s.jsonl"))[0]
    assert group.header is None and len(group.messages) == 12
    assert group.messages[0].data["is_group"] is True and group.line_of(0) == 0
    assert group.messages[0].is_st_system and group.messages[0].is_system
    assert group.messages[10].first_date == "November 23, 2026 10:57pm"  # swipes_info (sic)


def test_is_system_truthiness_and_kinds() -> None:
    chat = read_chat(fixture_chat("st-1.12", "chats/Bob/Bob - 2026-11-23@20h55m52s.jsonl"))[0]
    narrator = chat.messages[-1]
    assert narrator.data["is_system"] == "" and not narrator.is_system and narrator.is_narrator
    assert not narrator.is_st_system
    image = chat.messages[4]
    assert image.is_system and image.extra["image"].startswith("/user/images/Bob/")
    reply = chat.messages[2]
    assert "is_system" not in reply.data and not reply.is_system and reply.is_generated
    assert not chat.messages[1].is_system and chat.messages[1].is_user


def test_identity_uses_the_first_swipe_not_the_latest_generation() -> None:
    """1.12: top-level gen_started follows the last generated swipe; identity must not."""
    chat = read_chat(fixture_chat("st-1.12", "chats/Alice/Alice - 2026-11-23@20h55m47s.jsonl"))[0]
    last = chat.messages[-1]
    assert last.data["gen_started"] != last.data["swipe_info"][0]["gen_started"]
    assert last.first_date == last.data["swipe_info"][0]["gen_started"]
    assert last.swipe_id == 1 and len(last.swipes) == 3
    assert last.revision.swipe_id == 1


def test_minute_granular_dates_share_keys_but_not_lines() -> None:
    chat = read_chat(fixture_chat("st-1.12", "chats/Alice/Alice - 2026-11-23@20h55m47s.jsonl"))[0]
    a, b = chat.messages[3], chat.messages[4]
    assert a.identity.key == b.identity.key  # both "User", "November 23, 2026 8:59pm"
    assert a.identity != b.identity and a.revision != b.revision
    assert chat.find(b.identity) is b and chat.find(a.identity) is a


def test_find_breaks_ties_by_the_index_hint() -> None:
    same = {"name": "Bob", "is_user": False, "send_date": "November 23, 2026 8:59pm"}
    other = {"name": "User", "is_user": True, "send_date": "November 23, 2026 8:58pm"}
    objs = [same, other, same, other, same]
    chat = parse_chat(b"\n".join(line({**o, "mes": f"m{i}"}) for i, o in enumerate(objs)))
    key = chat.messages[0].identity
    found = [chat.find(MessageIdentity(i, key.name, key.first_date)) for i in range(6)]
    # Exact hits, nearest hits, and ties (hints 1 and 3) going to the later message.
    assert [m.index if m is not None else None for m in found] == [0, 2, 2, 4, 4, 4]
    assert chat.find(MessageIdentity(0, "Nobody", key.first_date)) is None


def test_markers_are_read_from_the_top_level_extra_only() -> None:
    chat = read_chat(fixture_chat("st-1.12", "chats/Bob/Bob - 2026-11-22@20h55m47s.jsonl"))[0]
    assert chat.markers() == {}
    obj = {
        "name": "Bob",
        "mes": "[pic]",
        "is_system": True,
        "extra": {MARKER_KEY: "job-1"},
        "swipe_info": [{"extra": {MARKER_KEY: "job-1"}}],
    }
    copy_only = {"name": "Bob", "mes": "x", "swipe_info": [{"extra": {MARKER_KEY: "job-2"}}]}
    data = b"\n".join([chat.lines[0].raw, line(obj), line(copy_only)])
    parsed = parse_chat(data)
    assert list(parsed.markers()) == ["job-1"] and parsed.find_marker("job-1") is not None
    assert parsed.find_marker("job-2") is None


# --- the simulated ST writer: swipe / continue / edit keep the identity -------------------------


@pytest.mark.parametrize("version", ["1.12", "1.14", "1.18"])
def test_swipe_continue_edit_are_revisions_of_one_identity(tmp_path: Path, version: str) -> None:
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path, version=version, rng=random.Random(5))
    tab.send_user("Hi").reply("Alice", "First text.").save()

    def last() -> Message:
        return read_chat(path)[0].messages[-1]

    original = last()
    previous = original.revision
    steps: list[Callable[[], STSim]] = [
        lambda: tab.swipe("Second text."),
        lambda: tab.continue_(" More."),
        lambda: tab.swipe_to(0),  # back to the first text: the first revision again
        lambda: tab.edit(len(tab.messages) - 1, "Hand edit."),
        lambda: tab.swipe("Third text."),
    ]
    for n, step in enumerate(steps):
        step().save()
        now = last()
        assert now.identity == original.identity
        assert now.revision != previous
        assert (now.revision == original.revision) == (n == 2)
        previous = now.revision
    tab.regenerate("Regenerated.").save()
    assert last().identity.key != original.identity.key


def test_reloaded_message_keeps_identity_when_st_adds_swipe_fields(tmp_path: Path) -> None:
    """A message written without swipe fields gets them from the browser; same identity."""
    bare = {"name": "Alice", "is_user": False, "send_date": "2026-01-01T00:00:00.000Z", "mes": "x"}
    gen = {**bare, "gen_started": "2026-01-01T00:00:01.000Z", "mes": "y"}
    path = tmp_path / "c.jsonl"
    header = {"chat_metadata": {}, "user_name": "unused", "character_name": "unused"}
    path.write_bytes(b"\n".join([line(header), line(bare), line(gen)]))
    before = [m.identity for m in read_chat(path)[0].messages]
    STSim.open(path, rng=random.Random(1)).save()
    after_chat = read_chat(path)[0]
    assert all("swipe_info" in m.data for m in after_chat.messages)
    assert [m.identity for m in after_chat.messages] == before


# --- hand-made variants ---------------------------------------------------------------------------


def test_pre_115_header_and_headerless_group() -> None:
    header = {
        "user_name": "User",
        "character_name": "Alice",
        "create_date": "2025-05-20@09h00m00s",
        "chat_metadata": {"integrity": "abc", "tainted": True},
    }
    msg = {"name": "Alice", "is_user": False, "send_date": "May 20, 2025 9:01am", "mes": "hi"}
    chat = parse_chat(b"\n".join([line(header), line(msg)]))
    assert chat.header == header and chat.integrity == "abc" and len(chat.messages) == 1
    assert chat.date_style == "human"
    group = parse_chat(b"\n".join([line({**msg, "is_group": True}), line(msg)]))
    assert group.header is None and [m.index for m in group.messages] == [0, 1]
    # A header-like object after line 0 is a message to us (ST keeps it too).
    odd = parse_chat(b"\n".join([line(msg), line(header)]))
    assert odd.header is None and len(odd.messages) == 2
    assert is_header(header) and not is_header({**header, "mes": "x"})


@pytest.mark.parametrize(
    ("value", "expected", "style"),
    [
        ("2026-11-23T22:06:11.769Z", datetime(2026, 11, 23, 22, 6, 11, 769000, UTC), "iso"),
        ("November 23, 2025 10:06pm", datetime(2025, 11, 23, 22, 6, tzinfo=UTC), "human"),
        ("May 2, 2025 12:01am", datetime(2025, 5, 2, 0, 1, tzinfo=UTC), "human"),
        (1716000000000, datetime(2024, 5, 18, 2, 40, tzinfo=UTC), "ms"),
        ("1716000000000", datetime(2024, 5, 18, 2, 40, tzinfo=UTC), "ms"),
        ("2024-7-12@01h31m37s", datetime(2024, 7, 12, 1, 31, 37, tzinfo=UTC), "at"),
        ("2024-6-5 @14h 56m 50s 682ms", datetime(2024, 6, 5, 14, 56, 50, 682000, UTC), "at"),
        ("2024-6-5@14h56m", datetime(2024, 6, 5, 14, 56, tzinfo=UTC), "at"),
    ],
)
def test_send_date_forms(value: object, expected: datetime, style: str) -> None:
    assert parse_send_date(value) == expected
    assert send_date_style(value) == style
    formatted = format_send_date(expected, style)
    assert send_date_style(formatted) == style
    again = parse_send_date(formatted)
    assert again is not None and abs((again - expected).total_seconds()) < 60


@pytest.mark.parametrize("value", [None, True, "", "yesterday", "Smarch 3, 2025 1:00pm", [], {}])
def test_unparsable_send_dates(value: object) -> None:
    assert parse_send_date(value) is None


def test_lone_surrogates_u2028_and_non_utf8() -> None:
    surrogate = b'{"name":"A","mes":"half \\ud83d emoji","extra":{}}'
    sep = '{"name":"A","mes":"one\u2028line\u2029still","extra":{}}'.encode()
    latin = b'{"name":"A","mes":"caf\xe9","extra":{}}'
    data = b"\n".join([surrogate, sep, latin])
    chat = parse_chat(data)
    assert len(chat.lines) == 3 and len(chat.messages) == 3 and chat.bad_lines == []
    assert chat.messages[0].mes == "half \ud83d emoji"
    assert chat.messages[1].mes == "one\u2028line\u2029still"
    assert chat.messages[2].mes == "caf\ufffd"  # as Node decodes it; bytes kept as read
    assert b"\n".join(ln.raw for ln in chat.lines) == data
    assert chat.messages[0].revision.mes_hash  # hashing a lone surrogate does not raise
    encoded = encode_message(chat.messages[0].data)
    assert b"\\ud83d" not in encoded and json.loads(encoded)["mes"] == "half \ufffd emoji"
    assert "\u2028".encode() in encode_message(chat.messages[1].data)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[1,2]", b"null", b"42", b'"x"', b'{"a":NaN}', b"\xef\xbb\xbf{}"]
)
def test_lines_st_would_drop(raw: bytes) -> None:
    assert parse_line(raw) is None
    chat = parse_chat(b"\n".join([b'{"name":"A","mes":"ok"}', raw, b'{"name":"B","mes":"ok"}']))
    assert chat.bad_lines == [1] and len(chat.messages) == 2
    assert chat.lines[1].raw == raw


def test_empty_trailing_newline_and_crlf() -> None:
    empty = parse_chat(b"")
    assert empty.lines == [] and empty.messages == [] and empty.header is None
    assert split_lines(b"") == []
    trailing = parse_chat(b'{"name":"A","mes":"x"}\n')
    assert trailing.trailing_newline and trailing.bad_lines == [] and len(trailing.lines) == 2
    crlf = parse_chat(b'{"name":"A","mes":"x"}\r\n{"name":"B","mes":"y"}')
    assert [m.name for m in crlf.messages] == ["A", "B"]  # JSON.parse allows the \r too
    assert crlf.messages[0].raw.endswith(b"\r")


def test_deep_nesting_is_a_bad_line_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert parse_chat(deep).bad_lines == [0]


def test_unknown_keys_are_kept() -> None:
    obj = {"name": "A", "mes": "x", "future_key": {"a": [1, 2]}, "extra": {"ext": True}}
    message = parse_chat(line(obj)).messages[0]
    assert message.data == obj and message.extra == {"ext": True}


def test_line_of_is_computed_once() -> None:
    data = b"\n".join([b'{"chat_metadata":{}}', b"junk", *[b'{"name":"A","mes":"x"}'] * 5])
    chat = parse_chat(data)
    assert [chat.line_of(i) for i in range(5)] == [2, 3, 4, 5, 6]
    assert chat._view() is chat._view()  # the full view is parsed once


def test_read_chat_errors(tmp_path: Path) -> None:
    with pytest.raises(ChatReadError, match="does not exist"):
        read_chat(tmp_path / "missing.jsonl")
    folder = tmp_path / "x.jsonl"
    folder.mkdir()
    with pytest.raises(ChatReadError, match="directory"):
        read_chat(folder)
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"name":"A","mes":"' + b"x" * 5000 + b'"}')
    with pytest.raises(ChatReadError, match="limit"):
        read_chat(big, max_bytes=1000)
    assert len(read_chat(big, max_bytes=10_000)[0].messages) == 1


# --- properties ---------------------------------------------------------------------------------

LINES = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda name, mes: line({"name": name, "mes": mes, "extra": {}}),
            st.text(max_size=8),
            st.text(max_size=30),
        ),
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=400), LINES.map(b"\n".join)), cut=st.floats(0, 1))
def test_arbitrary_bytes_never_crash_and_round_trip(data: bytes, cut: float) -> None:
    for sample in (data, data[: int(len(data) * cut)]):
        chat = parse_chat(sample)
        assert b"\n".join(ln.raw for ln in chat.lines) == sample
        assert len(chat.messages) + len(chat.bad_lines) + (chat.header is not None) + int(
            chat.trailing_newline
        ) == len(chat.lines)
        for message in chat.messages:
            assert message.identity.key is not None and str(message.revision)
            assert chat.lines[chat.line_of(message.index)].raw == message.raw
            encode_message(message.data)  # never raises, whatever the text holds


def test_read_chat_refuses_absurd_line_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import daemon.tavern.chat as chat_mod

    monkeypatch.setattr(chat_mod, "MAX_CHAT_LINES", 100)
    path = tmp_path / "newlines.jsonl"
    path.write_bytes(b"\n" * 200)
    with pytest.raises(ChatReadError, match="line limit"):
        read_chat(path)


# --- the line view agrees with the full view -----------------------------------------------------

DATES = ["2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "1/2/2026 3:04", "Zoë's day", ""]


def _random_chat(rng: random.Random) -> bytes:
    """Chats full of what makes lookups hard: shared identities, bad lines, markers copied into
    swipe_info, ids and dates inside other text, dates a byte search cannot trust, numbers."""
    lines: list[bytes] = []
    if rng.random() < 0.7:
        lines.append(line({"chat_metadata": {"integrity": "x"}, "user_name": "unused"}))
    for i in range(rng.randrange(0, 25)):
        roll = rng.random()
        if roll < 0.1:
            lines.append(rng.choice([b"junk", b"", b"{", b"[1]", b'{"mes":NaN}']))
            continue
        extra: dict[str, Any] = {}
        date: Any = rng.choice([*DATES, 1767225601000, 1767225601000.5])
        obj: dict[str, Any] = {"name": rng.choice(["Alice", "Bob", "A\x1fB"]), "mes": f"m{i}"}
        obj["send_date"] = date
        if rng.random() < 0.3:
            extra[MARKER_KEY] = f"JOB{rng.randrange(4)}"
        if rng.random() < 0.2:  # ST copies extra into swipe_info: never a marker there
            obj["swipe_info"] = [
                {"send_date": date, "extra": {MARKER_KEY: f"JOB{rng.randrange(4)}"}}
            ]
        if rng.random() < 0.2:
            obj["mes"] = f"about JOB{rng.randrange(4)} and {rng.choice(DATES)}"
        obj["extra"] = extra
        lines.append(line(obj))
    data = b"\n".join(lines)
    return data + b"\n" if rng.random() < 0.2 else data


def _full_span(data: bytes, chat_lines: list[bytes], lineno: int) -> tuple[int, int]:
    start = sum(len(raw) + 1 for raw in chat_lines[:lineno])
    return start, start + len(chat_lines[lineno])


def test_line_lookups_agree_with_the_full_view() -> None:
    """``find_line`` and ``find_marker_line`` (byte searches, a few lines parsed) give what
    ``find`` and the full view's markers give, with the same line spans."""
    rng = random.Random(11)
    for _ in range(400):
        data = _random_chat(rng)
        full = parse_chat(data)
        raw_lines = data.split(b"\n")
        for _ in range(6):
            identity = MessageIdentity(
                rng.randrange(-3, 30),
                rng.choice(["Alice", "Bob", "A\x1fB", "A"]),
                rng.choice([*DATES, "1767225601000", "B\x1f2026-01-01T00:00:01.000Z"]),
            )
            expected = full.find(identity)
            got = parse_chat(data).find_line(identity)  # a fresh chat: no full view to lean on
            if expected is None:
                assert got is None
            else:
                assert got is not None and got.message.index == -1
                assert got.message.raw == expected.raw and got.message.data == expected.data
                assert (got.start, got.end) == _full_span(
                    data, raw_lines, full.line_of(expected.index)
                )
            job_id = f"JOB{rng.randrange(5)}"
            ours = [m for m in full.messages if m.marker == job_id]
            marker = parse_chat(data).find_marker_line(job_id)
            if not ours:
                assert marker is None
            else:
                assert marker is not None and marker.message.raw == ours[-1].raw
                assert data[marker.start : marker.end] == ours[-1].raw
                assert (marker.start, marker.end) == full.message_span(ours[-1].index)


def test_line_view_parses_only_what_it_looks_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup near the end of a long chat parses a few lines, not the chat."""
    tab = STSim.create(tmp_path / "c.jsonl", save=False)
    for i in range(500):
        tab.send_user(f"question {i}")
        tab.reply("Alice", f"answer {i}")
    data = tab.serialize()
    reply = parse_chat(data).messages[-1]
    parsed = count_parsed_lines(monkeypatch)
    chat = parse_chat(data)
    found = chat.find_line(reply.identity)
    assert found is not None and found.message.raw == reply.raw
    assert chat.find_marker_line("01ABSENT") is None
    assert chat.date_style == "iso" and chat.integrity == reply_integrity(data)
    assert [end for _, end in chat.lines_after(found.end)] == []
    assert len(parsed) <= 4  # the reply's line, the last line (date style), the header


def reply_integrity(data: bytes) -> str | None:
    header = json.loads(data.split(b"\n", 1)[0])
    value = header.get("chat_metadata", {}).get("integrity")
    return value if isinstance(value, str) else None


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=400), LINES.map(b"\n".join)))
def test_line_walks_cover_every_line(data: bytes) -> None:
    """``lines_backwards`` and ``lines_after`` visit exactly the full view's lines (not the
    empty one after a trailing newline), and ``line_message`` agrees with ``messages``."""
    chat = parse_chat(data)
    full = parse_chat(data)
    expected = [
        (start, start + len(ln.raw))
        for ln, start in zip(full.lines, _starts(full.lines), strict=True)
        if not (full.trailing_newline and ln.lineno == len(full.lines) - 1)
    ]
    assert list(reversed(list(chat.lines_backwards()))) == expected
    for i, (start, _) in enumerate(expected):
        assert list(reversed(list(chat.lines_backwards(before=start)))) == expected[:i]
    if expected:
        first_end = expected[0][1]
        assert list(chat.lines_after(first_end)) == expected[1:]
    found = [m for s, e in expected if (m := chat.line_message(s, e)) is not None]
    assert [m.message.raw for m in found] == [m.raw for m in full.messages]
    assert chat.header == full.header
    dated = [m for m in full.messages if m.data.get("send_date") is not None]
    header = full.header
    assert chat.date_style == (
        send_date_style(dated[-1].data["send_date"])
        if dated
        else "iso"
        if header is None or "create_date" not in header
        else "human"
    )


def _starts(lines: list[Any]) -> list[int]:
    out, pos = [], 0
    for ln in lines:
        out.append(pos)
        pos += len(ln.raw) + 1
    return out
