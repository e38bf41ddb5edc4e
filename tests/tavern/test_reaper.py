"""The reaper thread: handed-over work runs in order, off the caller's thread, and survives
work that fails."""

from __future__ import annotations

import threading
from functools import partial

from daemon.tavern.reaper import Reaper

SETTLE_S = 30.0
"""How long a test waits for the reaper to run what it was given (a loaded machine)."""


def test_work_runs_in_order_in_one_other_thread() -> None:
    reaper = Reaper()
    ran: list[tuple[int, str]] = []
    gate = threading.Event()
    reaper.later(lambda: gate.wait(SETTLE_S))

    def note(n: int) -> None:
        ran.append((n, threading.current_thread().name))

    for n in range(5):
        reaper.later(partial(note, n))
    assert not reaper.settle(0.0)  # held by the gate: not settled, and says so
    assert ran == []
    gate.set()
    assert reaper.settle(SETTLE_S)
    assert [n for n, _ in ran] == [0, 1, 2, 3, 4]
    assert {name for _, name in ran} == {"st-imagegen-reaper"}
    assert threading.current_thread().name != "st-imagegen-reaper"


def test_failing_work_does_not_stop_the_thread() -> None:
    reaper = Reaper()
    ran: list[int] = []

    def fail() -> None:
        raise OSError("gone")

    reaper.later(fail)
    reaper.later(lambda: ran.append(1))
    assert reaper.settle(SETTLE_S)
    assert ran == [1]
    reaper.later(lambda: ran.append(2))
    assert reaper.settle(SETTLE_S)
    assert ran == [1, 2]


def test_settle_with_nothing_handed_over_is_immediate() -> None:
    assert Reaper().settle(0.0)
