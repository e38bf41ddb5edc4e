"""Property tests: an insert never changes an existing byte and keeps every message."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import MessageNotFoundError
from daemon.tavern.chat import MARKER_KEY, encode_message, parse_chat
from daemon.tavern.write import build_image_message, insert_after, read_for_edit
from tests.stsim import js_stringify

# Every code point, lone surrogates included, with the troublemakers made likely.
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec=None, exclude_categories=()),
        st.sampled_from(['"', "\\", "\n", "\r", "\x00", "\u2028", "\u2029", "\u0085", "😀"]),
        st.sampled_from(["\ud83d", "\ude00", "\udfff"]),
    ),
    max_size=40,
)

MESSAGE = st.fixed_dictionaries(
    {
        "name": TEXT,
        "is_user": st.booleans(),
        "is_system": st.sampled_from([True, False, "", None]),
        "send_date": st.one_of(TEXT, st.integers(0, 2**53)),
        "mes": TEXT,
        "extra": st.dictionaries(TEXT, st.one_of(TEXT, st.integers(), st.booleans()), max_size=3),
    }
)

# After a "{", never valid JSON: "{" + "}" would be an (empty) message, not a junk line.
JUNK = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\x00")

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _line(obj: dict[str, Any]) -> bytes:
    return js_stringify(obj).encode("utf-8")


@st.composite
def chats(draw: st.DrawFn) -> tuple[bytes, int]:
    """ST-style chat bytes (header or not, junk lines, trailing newline or not), message count."""
    messages = draw(st.lists(MESSAGE, min_size=1, max_size=8))
    lines: list[bytes] = []
    if draw(st.booleans()):
        lines.append(_line({"chat_metadata": {"integrity": draw(TEXT)}, "user_name": "unused"}))
    for message in messages:
        if draw(st.integers(0, 5)) == 0:
            lines.append(b"{" + draw(JUNK))  # never valid JSON
        lines.append(_line(message))
    data = b"\n".join(lines)
    if draw(st.booleans()):
        data += b"\n"
    return data, len(messages)


def _new_messages(data: st.DataObject, count: int) -> list[dict[str, Any]]:
    return [
        build_image_message(
            name=data.draw(TEXT),
            urls=[f"/user/images/A/A_{i}.png"],
            prompt=data.draw(TEXT),
            caption=data.draw(TEXT),
            send_date=data.draw(TEXT),
            job_id=f"job-{i}",
        )
        for i in range(count)
    ]


@SETTINGS
@given(chat=chats(), data=st.data())
def test_insert_keeps_every_byte_and_every_message(
    chat: tuple[bytes, int], data: st.DataObject
) -> None:
    original, count = chat
    after_index = data.draw(st.integers(0, count - 1))
    new = _new_messages(data, data.draw(st.integers(1, 3)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chat.jsonl"
        path.write_bytes(original)
        parsed, raw, basis = read_for_edit(path)
        assert raw == original and len(parsed.messages) == count
        insert_after(path, basis, raw, parsed, after_index, new)
        result = path.read_bytes()

    # Bytes: the old file with the new lines spliced in after the target line, nothing else.
    block = b"\n".join(encode_message(m) for m in new) + b"\n"
    old_lines = original.split(b"\n")
    cut = parsed.line_of(after_index) + 1
    prefix = b"".join(line + b"\n" for line in old_lines[:cut])
    assert result.startswith(prefix)
    rest = result[len(prefix) :]
    if cut == len(old_lines):  # the target was the very last line: it had no newline
        assert prefix.endswith(b"\n") and rest + b"\n" == block
    else:
        assert rest == block + original[len(prefix) :]

    # Messages: every old one, in order, with ours right after the target.
    reparsed = parse_chat(result)
    before = [m.data for m in parsed.messages]
    assert [m.data for m in reparsed.messages] == [
        *before[: after_index + 1],
        *new,
        *before[after_index + 1 :],
    ]
    assert reparsed.bad_lines == [n + (len(new) if n >= cut else 0) for n in parsed.bad_lines]
    assert reparsed.header == parsed.header
    ours = {m.index for m in reparsed.messages if m.marker}
    expected = {after_index + 1 + i for i in range(len(new))}
    assert ours == expected
    assert all(
        m.data["extra"][MARKER_KEY] == f"job-{i}"
        for i, m in enumerate(reparsed.messages[after_index + 1 : after_index + 1 + len(new)])
    )


@SETTINGS
@given(raw=st.binary(max_size=400), cut=st.integers(0, 400), data=st.data())
def test_arbitrary_and_truncated_files_never_crash(
    raw: bytes, cut: int, data: st.DataObject
) -> None:
    valid = b"\n".join(
        _line({"name": "A", "is_user": False, "mes": f"m{i}", "extra": {}}) for i in range(4)
    )
    for content in (raw, valid[:cut], raw + b"\n" + valid[:cut]):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "chat.jsonl"
            path.write_bytes(content)
            parsed, got, basis = read_for_edit(path)
            assert got == content
            new = build_image_message(
                name="A", urls=["/u.png"], prompt="p", caption="c", send_date="d", job_id="j"
            )
            if not parsed.messages:
                try:
                    insert_after(path, basis, got, parsed, 0, [new])
                except MessageNotFoundError:
                    pass
                else:  # pragma: no cover - reported by the assertion below
                    raise AssertionError("insert into a chat without messages succeeded")
                assert path.read_bytes() == content
                continue
            index = data.draw(st.integers(0, len(parsed.messages) - 1))
            insert_after(path, basis, got, parsed, index, [new])
            result = path.read_bytes()
            line = encode_message(new)
            at = result.index(line)
            # Removing our line and one newline gives back the original exactly.
            if at + len(line) == len(result):
                assert result[: at - 1] == content
            else:
                assert result[:at] + result[at + len(line) + 1 :] == content
            assert json.loads(line) == new
