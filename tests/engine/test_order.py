"""The runner's order (daemon.engine.jobs.order): the active chat first, newest first per chat,
round-robin across chats, none left to starve; and who counts as active."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.engine.jobs.order import ACTIVE_WINDOW, STARVE_AFTER, Attention, chat_file, order
from daemon.engine.store import Job, JobState, new_job_id
from daemon.jobstate import ReplyKey

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


def job(chat: str, n: int, *, age: timedelta = timedelta(seconds=30)) -> Job:
    created = NOW - age
    ms = int(created.timestamp() * 1000) + n  # ids sort as creation: n orders them
    return Job(
        id=new_job_id(ms),
        key=f"{chat}-{n}",
        reply=ReplyKey(
            "default-user", f"default-user/chats/{chat}/{chat} - 1.jsonl", chat, str(n), "r"
        ),
        character=chat,
        is_group=False,
        speaker=chat,
        message_index=n,
        excerpt="",
        source="auto",
        state=JobState.QUEUED,
        attempts=0,
        last_error=None,
        prompt=None,
        images=(),
        created_at=created,
        updated_at=created,
        next_attempt_at=None,
        meta={},
        regen=0,
    )


def names(jobs: list[Job]) -> list[str]:
    return [f"{j.character}{j.message_index}" for j in jobs]


def run(jobs: list[Job], active: dict[str, float] | None = None, **started: float) -> list[str]:
    """``active``: chat -> when it was last saved; ``started``: chat -> its last job's start."""
    last = {f"default-user/chats/{c}/{c} - 1.jsonl": t for c, t in started.items()}
    seen = active or {}
    return names(
        order(jobs, now=NOW, looked_at=lambda chat: seen.get(chat.split("/")[2]), last_started=last)
    )


def test_newest_first_per_chat_and_round_robin_across_chats() -> None:
    jobs = [job("A", n) for n in range(1, 4)] + [job("B", n) for n in range(10, 12)]
    jobs.append(job("C", 20))
    # Each chat's newest, then each chat's second newest...; chats in a turn: newest reply first.
    assert run(jobs) == ["C20", "B11", "A3", "B10", "A2", "A1"]


def test_the_active_chat_goes_ahead_of_background_work() -> None:
    backfill = [job(f"K{n}", n) for n in range(30)]  # a backfill: one job in each of 30 chats
    mine = [job("Me", 1, age=timedelta(minutes=2)), job("Me", 2, age=timedelta(minutes=1))]
    order_ = run([*mine, *backfill], active={"Me": 5.0})
    assert order_[:2] == ["Me2", "Me1"]  # the reply on screen, then the one above it
    assert sorted(order_[2:]) == sorted(f"K{n}{n}" for n in range(30))


def test_a_chat_served_recently_waits_its_turn() -> None:
    jobs = [job("A", 5), job("B", 1)]
    assert run(jobs) == ["A5", "B1"]  # newer reply first when neither was served
    assert run(jobs, A=100.0, B=50.0) == ["B1", "A5"]  # B's last start is longer ago


def test_no_starvation_oldest_waiting_job_goes_first() -> None:
    old = job("Old", 1, age=STARVE_AFTER + timedelta(seconds=1))
    busy = [job("Busy", n, age=timedelta(seconds=5)) for n in range(2, 6)]
    assert run([*busy, old], active={"Busy": 5.0})[0] == "Old1"


def test_drain_order_keeps_every_chat_within_twice_the_median_wait() -> None:
    """A burst: one chat with 40 queued replies, 9 chats with 4 each; started one at a time in
    this order, no chat's last job waits more than twice the median chat's."""
    jobs = [job("Big", n) for n in range(40)]
    for c in range(9):
        jobs += [job(f"S{c}", 100 + 10 * c + n) for n in range(4)]
    sequence = run(jobs)
    last_position: dict[str, int] = {}
    for position, name in enumerate(sequence):
        last_position[name.rstrip("0123456789")] = position
    small = sorted(v for k, v in last_position.items() if k != "Big")
    median = small[len(small) // 2]
    assert max(small) <= 2 * median
    firsts = {name.rstrip("0123456789"): sequence.index(name) for name in reversed(sequence)}
    assert max(firsts.values()) < 10  # every chat's newest reply in the first turn


def test_among_active_chats_the_one_saved_last_goes_first() -> None:
    """In a burst every chat was saved within the minute: the one saved last is on screen; its
    newest reply goes first even though its chat was served a moment ago."""
    jobs = [job("A", 1), job("A", 2), job("B", 3), job("C", 4)]
    active = {"A": 30.0, "B": 10.0, "C": 20.0}
    assert run(jobs, active, A=99.0) == ["A2", "C4", "B3", "A1"]


def test_attention_saves_and_open_tabs_expire() -> None:
    now = [1000.0]
    attention = Attention(clock=lambda: now[0])
    chat = "default-user/chats/Alice/Alice - 2026-11-23@21h30m23s969ms.jsonl"
    assert chat_file(chat) == "Alice - 2026-11-23@21h30m23s969ms"
    assert not attention.is_active(chat)
    attention.saved(chat)
    assert attention.is_active(chat)
    now[0] += ACTIVE_WINDOW + 1
    assert not attention.is_active(chat)
    attention.viewed(chat_file(chat))  # the extension's tab opened it
    assert attention.is_active(chat)
    assert not attention.is_active("default-user/chats/Bob/Bob - 1.jsonl")
