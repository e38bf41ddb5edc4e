"""The backwards tail scan: new / changed / removed since a cursor, at a cost independent of
the chat's length; checked against real ST files, the simulated ST writer, a ground-truth model
and the same decisions made on a full parse."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import daemon.tavern.scan as scan_mod
from daemon.errors import ChatReadError
from daemon.tavern.chat import (
    CURSOR_DEPTH,
    Cursor,
    Message,
    parse_chat,
    read_chat,
    split_lines,
)
from daemon.tavern.layout import iter_chats
from daemon.tavern.scan import ScanResult, scan_lines, tail_scan
from tests.stsim import STSim, js_stringify

HEADER = {"chat_metadata": {"integrity": "x"}, "user_name": "unused", "character_name": "unused"}
BLOCKS = (1, 3, 17, 64, 1000, 16 * 1024)


def dump(obj: dict[str, Any]) -> bytes:
    return js_stringify(obj).encode()


def write(path: Path, lines: list[bytes]) -> bytes:
    data = b"\n".join(lines)
    path.write_bytes(data)
    return data


def first_sight(path: Path) -> Cursor:
    result = tail_scan(path, None)
    assert result.new == [] and not result.cursor_gone and result.full is not None
    return result.cursor


def raws(messages: list[Message]) -> list[bytes]:
    return [m.raw for m in messages]


def check_same(a: ScanResult, b: ScanResult) -> None:
    """Two scans agree on everything but the bytes they read."""
    assert raws(a.new) == raws(b.new)
    assert raws(a.changed) == raws(b.changed)
    assert a.removed == b.removed
    assert raws(a.tail) == raws(b.tail)
    assert [m.index for m in a.tail] == [m.index for m in b.tail]
    assert a.cursor.recent == b.cursor.recent
    assert a.cursor.message_count == b.cursor.message_count
    assert a.bad_lines == b.bad_lines
    assert a.cursor_gone == b.cursor_gone


# --- real ST files ------------------------------------------------------------------------------


def test_every_fixture_prefix_sees_exactly_the_appended_messages(
    st_root: Path, tmp_path: Path
) -> None:
    """Grow each real chat (minute-granular dates and all) one, two or three messages at a
    time: every scan reports exactly the appended messages, with exact indices."""
    target = tmp_path / "grow.jsonl"
    for ref in iter_chats(st_root):
        data = ref.path.read_bytes()
        lines = split_lines(data)
        chat = parse_chat(data)
        head = 1 if chat.header is not None else 0
        for step in (1, 2, 3):
            shown = 1
            write(target, lines[: head + shown])
            cursor = first_sight(target)
            for upto in range(shown + step, len(chat.messages) + step, step):
                upto = min(upto, len(chat.messages))
                write(target, lines[: head + upto])
                for block in BLOCKS:
                    result = tail_scan(target, cursor, block_size=block)
                    assert not result.cursor_gone, ref.rel
                    assert raws(result.new) == raws(chat.messages[shown:upto]), (ref.rel, upto)
                    assert [m.index for m in result.new] == list(range(shown, upto))
                    assert result.changed == [] and result.removed == []
                    assert result.cursor.message_count == upto
                cursor = result.cursor
                shown = upto


def test_fixture_scan_from_nothing_and_unchanged(st_root: Path) -> None:
    for ref in iter_chats(st_root):
        chat, data = read_chat(ref.path)
        first = tail_scan(ref.path, None)
        assert first.full is not None and raws(first.tail) == raws(chat.messages)
        assert first.cursor.size == len(data)
        again = tail_scan(ref.path, first.cursor)
        assert (again.new, again.changed, again.removed, again.cursor_gone) == ([], [], [], False)
        assert again.cursor.recent == first.cursor.recent


# --- the simulated ST writer --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.12", "1.14", "1.18"])
@pytest.mark.parametrize("group", [False, True])
def test_st_turns_swipes_edits_regenerate_delete(tmp_path: Path, version: str, group: bool) -> None:
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path, version=version, group=group, rng=random.Random(1))
    if group:
        tab.reply("Alice", "Group hello.").save()
    cursor = first_sight(path)

    tab.send_user("Hi there.").save()
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["Hi there."] and not r.changed and not r.removed
    cursor = r.cursor

    tab.send_user("Second message in the same minute.").save()  # same key up to 1.14
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["Second message in the same minute."]
    assert not r.changed and not r.removed
    cursor = r.cursor

    tab.reply("Alice", "The glade glows.").save()
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["The glade glows."]
    reply = r.new[0]
    cursor = r.cursor

    actions: list[Callable[[], STSim]] = [
        lambda: tab.swipe("Another glade."),
        lambda: tab.continue_(" And more."),
        lambda: tab.swipe_to(0),
        lambda: tab.edit(len(tab.messages) - 1, "Edited by hand."),
    ]
    for action in actions:
        action().save()
        r = tail_scan(path, cursor)
        assert r.new == [] and r.removed == [] and not r.cursor_gone
        assert len(r.changed) == 1
        assert r.changed[0].identity.key == reply.identity.key
        assert r.changed[0].identity.index == reply.identity.index
        assert r.changed[0].revision != dict(cursor.recent)[cursor.recent[-1][0]]
        cursor = r.cursor

    tab.regenerate("A fresh reply.").save()
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["A fresh reply."]
    assert [i.key for i in r.removed] == [reply.identity.key]
    cursor = r.cursor

    tab.delete(len(tab.messages) - 1).save()
    r = tail_scan(path, cursor)
    assert r.new == [] and len(r.removed) == 1 and r.removed[0].name == "Alice"
    cursor = r.cursor

    tab.send_user("Same minute again.").send_user("And again.").save()
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["Same minute again.", "And again."]
    assert not r.removed


def test_edit_of_an_older_message_in_the_window_is_changed(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path, rng=random.Random(2))
    for i in range(6):
        tab.send_user(f"u{i}").reply("Alice", f"a{i}")
    tab.save()
    cursor = first_sight(path)
    oldest = len(tab.messages) - CURSOR_DEPTH  # the oldest message the cursor remembers
    tab.edit(oldest, "rewritten").save()
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.changed] == ["rewritten"] and r.changed[0].index == oldest
    assert r.new == [] and r.removed == []
    tab.delete(oldest + 1).save()
    r = tail_scan(path, r.cursor)
    assert len(r.removed) == 1 and r.removed[0].index == oldest + 1 and r.new == []


def test_insert_in_the_middle_of_the_window_is_new(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path, rng=random.Random(3))
    for i in range(4):
        tab.send_user(f"u{i}").reply("Alice", f"a{i}")
    tab.save()
    cursor = first_sight(path)
    image = {
        "name": "Alice",
        "is_user": False,
        "is_system": True,
        "mes": "[pic]",
        "send_date": "2026-11-23T23:59:59.999Z",
        "extra": {"st_imagegen_job": "j1"},
    }
    tab.messages.insert(5, image)
    tab.save()
    r = tail_scan(path, cursor)
    assert [m.marker for m in r.new] == ["j1"] and r.new[0].index == 5
    assert r.changed == [] and r.removed == []
    assert [m.index for m in r.tail] == list(range(r.tail[0].index, r.tail[-1].index + 1))


# --- edge cases ---------------------------------------------------------------------------------


def msg(i: int, name: str = "Alice", text: str | None = None, **extra: Any) -> dict[str, Any]:
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    date = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "name": name,
        "is_user": name == "User",
        "send_date": date,
        "mes": text if text is not None else f"message {i}",
        "extra": {},
        **extra,
    }


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"")
    cursor = first_sight(path)
    assert cursor.recent == () and cursor.message_count == 0
    assert tail_scan(path, cursor).new == []
    write(path, [dump(HEADER)])
    r = tail_scan(path, cursor)
    assert r.new == [] and r.tail == [] and not r.cursor_gone
    write(path, [dump(HEADER), dump(msg(0)), dump(msg(1))])
    r = tail_scan(path, r.cursor)
    assert [m.index for m in r.new] == [0, 1]


def test_trailing_newline_partial_line_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [dump(HEADER), *[dump(msg(i)) for i in range(5)]]
    write(path, lines)
    cursor = first_sight(path)
    # Another tool appends with a trailing newline, a garbage line and a half-written line.
    path.write_bytes(b"\n".join([*lines, dump(msg(5)), b"{not json", b""]))
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["message 5"] and r.bad_lines == 1
    path.write_bytes(b"\n".join([*lines, dump(msg(5)), dump(msg(6))[:20]]))
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["message 5"] and r.bad_lines == 1
    path.write_bytes(b"\n".join([*lines, dump(msg(5)), dump(msg(6))]) + b"\n")
    r = tail_scan(path, cursor)
    assert [m.mes for m in r.new] == ["message 5", "message 6"] and r.bad_lines == 0
    assert r.new[-1].index == 6


def test_cursor_gone_falls_back_to_a_full_read(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write(path, [dump(HEADER), *[dump(msg(i)) for i in range(20)]])
    cursor = first_sight(path)
    write(path, [dump(HEADER), *[dump(msg(i)) for i in range(100, 130)]])  # another chat
    r = tail_scan(path, cursor)
    assert r.cursor_gone and r.full is not None and r.new == []
    assert raws(r.tail) == raws(r.full.messages) and len(r.tail) == 30
    assert r.cursor.message_count == 30
    write(path, [dump(HEADER)])  # everything deleted
    r = tail_scan(path, cursor)
    assert r.cursor_gone and r.tail == []


def test_too_many_new_messages_is_cursor_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_mod, "MAX_UNANCHORED_MESSAGES", 10)
    path = tmp_path / "c.jsonl"
    lines = [dump(HEADER), *[dump(msg(i)) for i in range(5)]]
    write(path, lines)
    cursor = first_sight(path)
    write(path, [*lines, *[dump(msg(i)) for i in range(5, 16)]])
    r = tail_scan(path, cursor)
    assert r.cursor_gone and len(r.tail) == 16
    write(path, [*lines, *[dump(msg(i)) for i in range(5, 14)]])
    r = tail_scan(path, cursor)
    assert not r.cursor_gone and len(r.new) == 9


def test_huge_line_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_mod, "MAX_SCAN_BYTES", 100_000)
    path = tmp_path / "c.jsonl"
    lines = [dump(HEADER), *[dump(msg(i)) for i in range(3)]]
    write(path, lines)
    cursor = first_sight(path)
    write(path, [*lines, dump(msg(3, text="x" * 300_000))])
    r = tail_scan(path, cursor, block_size=4096)
    assert r.cursor_gone and r.full is not None and len(r.tail) == 4
    monkeypatch.setattr(scan_mod, "MAX_CHAT_BYTES", 200_000)
    with pytest.raises(ChatReadError, match="limit"):
        tail_scan(path, cursor)
    with pytest.raises(ChatReadError, match="limit"):
        tail_scan(path, None)


@pytest.mark.slow
def test_a_real_50_mb_line_falls_back_to_one_full_read(tmp_path: Path) -> None:
    """No monkeypatched limits: a 50 MB reply is past MAX_SCAN_BYTES, read whole once."""
    path = tmp_path / "c.jsonl"
    lines = [dump(HEADER), *[dump(msg(i)) for i in range(3)]]
    write(path, lines)
    cursor = first_sight(path)
    huge = "é" * (25 * 1024 * 1024)  # 50 MB of UTF-8
    data = write(path, [*lines, dump(msg(3, text=huge))])
    r = tail_scan(path, cursor)
    assert r.cursor_gone and r.full is not None
    assert [m.index for m in r.tail] == [0, 1, 2, 3] and r.tail[-1].mes == huge
    assert (
        scan_mod.MAX_SCAN_BYTES
        < r.bytes_read
        <= scan_mod.MAX_SCAN_BYTES + len(data) + (scan_mod.MAX_BLOCK)
    )


def test_a_huge_message_in_the_window_costs_full_reads_until_it_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a message over MAX_SCAN_BYTES is among the cursor's, placing the cursor means
    reading past it, so scans fall back to full reads (still exact); CURSOR_DEPTH newer
    messages later, scans read the tail only again."""
    monkeypatch.setattr(scan_mod, "MAX_SCAN_BYTES", 100_000)
    path = tmp_path / "c.jsonl"
    lines = [dump(HEADER), *[dump(msg(i)) for i in range(3)], dump(msg(3, text="x" * 300_000))]
    write(path, lines)
    cursor = first_sight(path)
    gone = []
    for k in range(4, 4 + CURSOR_DEPTH + 2):
        lines.append(dump(msg(k)))
        write(path, lines)
        r = tail_scan(path, cursor)
        gone.append(r.cursor_gone)
        if r.cursor_gone:
            assert r.full is not None and len(r.full.messages) == k + 1
        else:
            assert [m.index for m in r.new] == [k] and r.bytes_read < 100_000
        cursor = r.cursor
    assert gone == [True] * CURSOR_DEPTH + [False, False]


def test_missing_directory_and_unreadable(tmp_path: Path) -> None:
    cursor = Cursor((), 0, 0)
    with pytest.raises(ChatReadError, match="does not exist"):
        tail_scan(tmp_path / "nope.jsonl", cursor)
    folder = tmp_path / "x.jsonl"
    folder.mkdir()
    for c in (cursor, None):
        with pytest.raises(ChatReadError, match="directory"):
            tail_scan(folder, c)


def test_cost_does_not_grow_with_length(tmp_path: Path) -> None:
    """Bytes read for one new message: the same on 50 and 20,000 messages."""
    read: list[int] = []
    for count in (50, 20_000):
        path = tmp_path / f"c{count}.jsonl"
        lines = [dump(HEADER), *[dump(msg(i, text="word " * 100)) for i in range(count)]]
        write(path, lines)
        cursor = first_sight(path)
        write(path, [*lines, dump(msg(count))])
        r = tail_scan(path, cursor)
        assert len(r.new) == 1 and not r.cursor_gone
        assert r.new[0].index == count
        read.append(r.bytes_read)
    assert read[1] <= 2 * read[0] and read[1] <= 64 * 1024


def test_cursor_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [dump(msg(i, name="Al\ud83dce", text="é\u2028\ud83d")) for i in range(20)]
    write(path, [dump(HEADER), *lines])
    cursor = first_sight(path)
    assert cursor.recent[0][0].name == "Al\ud83dce"
    assert cursor.to_json().isascii()  # stored in SQLite: no lone surrogates in UTF-8
    assert len(cursor.recent) == CURSOR_DEPTH
    assert Cursor.from_json(cursor.to_json()) == cursor


# --- properties ---------------------------------------------------------------------------------


class Model:
    """A chat as a list of (id, message dict) with unique dates: the ground truth."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.clock = 0
        self.next_id = 0
        self.items: list[tuple[int, dict[str, Any]]] = []

    def tick(self) -> str:
        self.clock += 1
        when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=7 * self.clock)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"

    def new(self, hidden: bool = False) -> tuple[int, dict[str, Any]]:
        self.next_id += 1
        date = self.tick()
        if self.rnd.random() < 0.4:
            obj: dict[str, Any] = {
                "name": "User",
                "is_user": True,
                "send_date": date,
                "mes": f"user {self.next_id}",
                "extra": {},
            }
        else:
            text = f"reply {self.next_id} " + "x" * self.rnd.randrange(0, 300)
            obj = {
                "name": "Alice",
                "is_user": False,
                "send_date": date,
                "mes": text,
                "gen_started": date,
                "swipes": [text],
                "swipe_id": 0,
                "swipe_info": [{"send_date": date, "gen_started": date, "extra": {}}],
                "extra": {},
            }
        if hidden:
            obj["is_system"] = True
            obj["extra"] = {"st_imagegen_job": f"job{self.next_id}"}
        return self.next_id, obj

    def bytes(self, header: bool) -> bytes:
        lines = ([dump(HEADER)] if header else []) + [dump(o) for _, o in self.items]
        return b"\n".join(lines)


def revision_of(obj: dict[str, Any]) -> Any:
    return Message(0, obj, b"").revision


def apply_op(model: Model, op: str, where: float) -> int:
    """Apply one random change; returns the position it touched."""
    n = len(model.items)
    pos = min(int(where * n), n - 1) if n else 0
    if op == "append" or not n:
        model.items.append(model.new())
        return len(model.items) - 1
    _, obj = model.items[pos]
    if op == "swipe" and "swipes" in obj:
        text = f"swipe {model.tick()}"
        obj["swipes"].append(text)
        obj["swipe_id"] = len(obj["swipes"]) - 1
        obj["mes"] = text
        obj["send_date"] = obj["gen_started"] = model.tick()
        obj["swipe_info"].append({"send_date": obj["send_date"], "extra": {}})
    elif op in ("edit", "swipe"):
        obj["mes"] = obj["mes"] + " edited"
    elif op == "delete":
        del model.items[pos]
    elif op == "insert":
        model.items.insert(pos + 1, model.new(hidden=True))
        return pos + 1
    return pos


OPS = st.lists(
    st.tuples(st.sampled_from(["append", "swipe", "edit", "delete", "insert"]), st.floats(0, 1)),
    max_size=scan_mod.SLACK,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32),
    start=st.integers(0, 40),
    ops=OPS,
    header=st.booleans(),
    block=st.sampled_from(BLOCKS),
)
def test_tail_scan_equals_ground_truth_and_full_parse(
    tmp_path: Path, seed: int, start: int, ops: list[tuple[str, float]], header: bool, block: int
) -> None:
    """The key property: after random appends, swipes, edits, deletes and inserts, the tail
    scan reports exactly what changed since the cursor, and agrees with the same decision made
    on a full parse."""
    rnd = random.Random(seed)
    model = Model(rnd)
    for _ in range(start):
        model.items.append(model.new())
    path = tmp_path / f"p{seed}.jsonl"
    path.write_bytes(model.bytes(header))
    cursor = tail_scan(path, None).cursor
    window = {ident: revision_of(obj) for ident, obj in model.items[-CURSOR_DEPTH:]}
    below = [ident for ident, _ in model.items[:-CURSOR_DEPTH]]
    for op, where in ops:
        apply_op(model, op, where)
    data = model.bytes(header)
    path.write_bytes(data)

    result = tail_scan(path, cursor, block_size=block)
    reference = scan_lines(split_lines(data), cursor)
    full = parse_chat(data)
    if reference is None:
        assert result.cursor_gone and result.full is not None
        assert raws(result.tail) == raws(full.messages)
    else:
        check_same(result, reference)

    ids = [ident for ident, _ in model.items]
    survivors = [i for i in ids if i in window]
    if window and not survivors:
        assert result.cursor_gone
        return
    assert not result.cursor_gone
    first = ids.index(survivors[0]) if survivors else -1
    # Index hints are exact unless something above the cursor's window was inserted or deleted.
    above = survivors != [] and ids[:first] != below
    expected_new = [
        o for i, (ident, o) in enumerate(model.items) if i > first and ident not in window
    ]
    assert [m.data for m in result.new] == expected_new
    expected_changed = [
        o for ident, o in model.items if ident in window and revision_of(o) != window[ident]
    ]
    assert [m.data for m in result.changed] == expected_changed
    gone = [ident for ident in window if ident not in ids]
    assert len(result.removed) == len(gone)
    if not above:
        by_raw = {m.raw: m.index for m in full.messages}
        assert all(by_raw[m.raw] == m.index for m in result.tail)
        assert result.cursor.message_count == len(full.messages)


def chat_bytes() -> st.SearchStrategy[bytes]:
    good = st.builds(lambda i, t: dump(msg(i, text=t)), st.integers(0, 30), st.text(max_size=20))
    junk = st.binary(max_size=30)
    return st.lists(st.one_of(good, junk, st.just(dump(HEADER)), st.just(b"")), max_size=25).map(
        b"\n".join
    )


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=chat_bytes(), after=chat_bytes(), cut=st.floats(0, 1), block=st.sampled_from(BLOCKS))
def test_arbitrary_and_truncated_bytes_never_crash(
    tmp_path: Path, before: bytes, after: bytes, cut: float, block: int
) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(before)
    cursor = tail_scan(path, None).cursor
    for data in (after, before[: int(len(before) * cut)], before + after):
        path.write_bytes(data)
        result = tail_scan(path, cursor, block_size=block)
        reference = scan_lines(split_lines(data), cursor)
        if reference is None:
            assert result.cursor_gone
        else:
            check_same(result, reference)


def test_a_tail_of_garbage_lines_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_mod, "MAX_SCAN_LINES", 50)
    path = tmp_path / "c.jsonl"
    lines = [dump(HEADER), *[dump(msg(i)) for i in range(3)]]
    write(path, lines)
    cursor = first_sight(path)
    write(path, [*lines, *([b"garbage"] * 60), dump(msg(3))])
    r = tail_scan(path, cursor)
    assert r.cursor_gone and r.bad_lines == 60 and len(r.tail) == 4
    write(path, [*lines, *([b"garbage"] * 30), dump(msg(3))])
    r = tail_scan(path, cursor)
    assert not r.cursor_gone and r.bad_lines == 30 and [m.index for m in r.new] == [3]


ST_ACTIONS = st.lists(
    st.sampled_from(
        ["user", "reply", "plain", "narrator", "swipe", "continue", "edit", "regen", "delete"]
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    actions=ST_ACTIONS,
    version=st.sampled_from(["1.12", "1.14", "1.18"]),
    group=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_scan_after_every_st_save_reports_exactly_that_save(
    tmp_path: Path, actions: list[str], version: str, group: bool, seed: int
) -> None:
    """The engine's view: ST saves after each action, the daemon scans after each save. Up to
    1.14 dates have minute granularity, so many messages share identity keys; every scan must
    still report exactly what the action did."""
    path = tmp_path / f"st{seed}-{version}-{group}.jsonl"
    tab = STSim.create(path, version=version, group=group, rng=random.Random(seed))
    cursor = first_sight(path)
    for n, action in enumerate(actions):
        text = f"{action} {n}"
        last = tab.messages[-1] if tab.messages else None
        new: list[str] = []
        changed: list[str] = []
        removed = 0
        if action == "user":
            tab.send_user(text)
            new = [text]
        elif action in ("reply", "plain"):
            tab.reply("Bob" if group and n % 2 else "Alice", text, generated=action == "reply")
            new = [text]
        elif action == "narrator":
            tab.narrator(text)
            new = [text]
        elif last is None:
            continue
        elif action == "swipe" and not last.get("is_user"):
            tab.swipe(text)
            changed = [text]
        elif action == "continue" and not last.get("is_user"):
            tab.continue_(" " + text)
            changed = [f"{last['mes']}"]
        elif action == "edit":
            tab.edit(len(tab.messages) - 1, text)
            changed = [text]
        elif action == "regen":
            removed = 0 if last.get("is_user") else 1
            tab.regenerate(text)
            new = [text]
        elif action == "delete":
            tab.delete(len(tab.messages) - 1)
            removed = 1
        else:
            continue
        tab.save()
        result = tail_scan(path, cursor)
        # Every message the cursor knew is gone: the scan must say so (then a full diff).
        assert result.cursor_gone == (removed == len(cursor.recent) > 0), (action, n)
        if result.cursor_gone:
            assert result.full is not None and [m.mes for m in result.tail] == tab.texts()
            cursor = result.cursor
            continue
        assert [m.mes for m in result.new] == new, (action, n)
        assert [m.mes for m in result.changed] == changed, (action, n)
        assert len(result.removed) == removed, (action, n)
        full = read_chat(path)[0]
        assert result.cursor.message_count == len(full.messages)
        assert [m.raw for m in full.messages[-len(result.tail) :]] == raws(result.tail)
        assert [m.index for m in result.tail] == [
            m.index for m in full.messages[-len(result.tail) :]
        ]
        cursor = result.cursor


def test_a_fifo_named_like_a_chat_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for cursor in (Cursor((), 0, 0), None):
        with pytest.raises(ChatReadError, match="not a regular file"):
            tail_scan(fifo, cursor)
    with pytest.raises(ChatReadError, match="not a regular file"):
        read_chat(fifo)
