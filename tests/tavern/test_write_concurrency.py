"""Our writer against a simulated ST tab saving in a real thread (sillytavern.md §8.2).

Claims tested, with real files, threads, fsyncs and renames:

* no ST save that completed before our final check is ever overwritten: every successful
  insert was based on the newest version on disk at that check, unless a save completed inside
  the measured window (final check → our rename), which is counted and reported;
* no reader ever sees a torn file: every read parses completely;
* a changed chat is reported as a conflict and the retry succeeds from a fresh read.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daemon.errors import ChatConflictError
from daemon.tavern import write
from daemon.tavern.write import build_image_message, insert_after, is_our_temp, read_for_edit
from tests.stsim import STSim

ST_SAVES = 300
RELOAD_EVERY = 20
DEADLINE_S = 90.0


@dataclass
class Write:
    """One completed rename: who, the bytes' hash, when the rename started and returned."""

    who: str
    sha: str
    started: float
    done: float
    basis: str = ""
    checked: float = 0.0


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: list[Write] = field(default_factory=list)

    def add(self, w: Write) -> None:
        with self.lock:
            self.writes.append(w)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _st_thread(tab: STSim, log: Log, stop: threading.Event, errors: list[BaseException]) -> None:
    started = [0.0]

    def before(_: bytes) -> None:
        started[0] = time.perf_counter()

    def after(data: bytes) -> None:
        log.add(Write("st", _sha(data), started[0], time.perf_counter()))

    tab.before_rename, tab.after_rename = before, after
    try:
        for i in range(ST_SAVES):
            if i % RELOAD_EVERY == RELOAD_EVERY - 1:
                tab.load()  # the user reloads: our lines are now in the tab
            step = i % 6
            if step == 0:
                tab.send_user(f"user {i} \u2028 ü")
            elif step == 1:
                tab.reply("Alice", f"reply {i} 日本")
            elif step == 2:
                tab.swipe(f"swipe {i}")
            elif step == 3:
                tab.continue_(f" more {i}")
            elif step == 4:
                tab.narrator(f"narrator {i}")
            elif i % 12 == 5:
                tab.hide()
            else:
                tab.unhide()
            tab.save()
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)
    finally:
        stop.set()


def _reader_thread(
    path: Path, stop: threading.Event, reads: list[int], errors: list[BaseException]
) -> None:
    try:
        while not stop.is_set():
            data = path.read_bytes()
            lines = data.split(b"\n")
            objs = [json.loads(line) for line in lines]  # raises on a torn file
            assert "chat_metadata" in objs[0], "the header must be line 1"
            assert all("mes" in o for o in objs[1:])
            reads[0] += 1
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.slow
def test_st_saving_in_a_thread_never_loses_a_save_outside_the_window(tmp_path: Path) -> None:
    path = tmp_path / "default-user" / "chats" / "Alice" / "Alice - 2026-11-23@22h00m00s000ms.jsonl"
    tab = STSim.create(path)
    tab.send_user("start").reply("Alice", "first reply").save()
    log = Log()
    log.add(Write("initial", _sha(path.read_bytes()), 0.0, 0.0))
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]
    st = threading.Thread(target=_st_thread, args=(tab, log, stop, errors), daemon=True)
    reader = threading.Thread(target=_reader_thread, args=(path, stop, reads, errors), daemon=True)
    st.start()
    reader.start()

    inserted = conflicts = 0
    deadline = time.monotonic() + DEADLINE_S
    n = 0
    while not stop.is_set() and time.monotonic() < deadline:
        chat, data, basis = read_for_edit(path)
        target = max(
            (m.index for m in chat.messages if not m.is_user and m.marker is None), default=-1
        )
        if target < 0:
            continue
        n += 1
        message = build_image_message(
            name="Alice",
            urls=[f"/user/images/Alice/Alice_{n}.png"],
            prompt=f"prompt {n}",
            caption=f"[Alice sends a picture {n}]",
            send_date="2026-11-23T22:06:20.000Z",
            job_id=f"job-{n}",
        )
        times: dict[str, float] = {}

        def probe(stage: str, times: dict[str, float] = times) -> None:
            times[stage] = time.perf_counter()

        try:
            result = insert_after(
                path,
                basis,
                data,
                chat,
                target,
                [message],
                probe=probe,
            )
        except ChatConflictError:
            conflicts += 1
            continue
        # What we renamed in: the bytes read with the new line after the target's line.
        end = chat.message_span(target)[1]
        renamed_in = b"".join(write._splice(data, end, write._encode_new([message])))
        assert len(renamed_in) == result.size
        log.add(
            Write("ours", _sha(renamed_in), times["final-check"], times["replaced"], basis.sha256)
        )
        inserted += 1

    st.join(timeout=DEADLINE_S)
    reader.join(timeout=DEADLINE_S)
    assert not errors, errors
    assert not st.is_alive() and not reader.is_alive()
    assert tab.saves == ST_SAVES + 2  # every ST save went through (no integrity refusal)
    assert inserted > 0, "our writer never got a write in"
    assert reads[0] > 0

    # Each rename happened somewhere in [started, done]. At our final check (ours.started) the
    # file on disk is one of the writes that began before it and was not certainly followed by
    # another write that completed before it. Our basis must be one of those.
    at_risk = 0
    windows = []
    writes = log.writes
    for ours in (w for w in writes if w.who == "ours"):
        t = ours.started
        windows.append(ours.done - t)
        latest_start = max(w.started for w in writes if w.done < t)
        current = [w for w in writes if w.started < t and w.done >= latest_start]
        assert ours.basis in {w.sha for w in current}, (
            f"insert based on {ours.basis[:8]} replaced "
            f"{[(w.who, w.sha[:8]) for w in current]}, completed before the final check"
        )
        at_risk += sum(
            1 for w in writes if w.who == "st" and t <= w.done and w.started <= ours.done
        )

    final = path.read_bytes()
    assert [line for line in final.split(b"\n") if json.loads(line)]  # parses completely
    assert not [p.name for p in path.parent.iterdir() if is_our_temp(p.name)]
    print(
        f"\nST saves {ST_SAVES}, our inserts {inserted}, conflicts {conflicts}, "
        f"torn-free reads {reads[0]}, ST saves overlapping our check-to-rename window {at_risk}, "
        "(only these can be lost), window median "
        f"{sorted(windows)[len(windows) // 2] * 1e6:.0f} µs, max {max(windows) * 1e6:.0f} µs"
    )
