"""The SQLite job store, on a real database file."""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.engine.store import (
    ACTIVE_STATES,
    MIGRATIONS,
    OUR_WRITES_KEPT,
    JobState,
    ReplyKey,
    Store,
    new_job_id,
)
from daemon.errors import JobError, StoreError
from daemon.tavern.chat import Cursor, MessageIdentity, Revision
from daemon.tavern.write import FileVersion

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CHAT = "default-user/chats/Alice/Alice - 1.jsonl"


def fields(n: int = 0, *, revision: str = "0:abcdef0123456789", **over: Any) -> dict[str, Any]:
    """``create_job``'s arguments for reply ``n`` of one chat, in text ``revision``."""
    base: dict[str, Any] = {
        "reply": ReplyKey(
            "default-user", CHAT, "Alice", f"2026-11-23T12:00:{n:02d}.000Z", revision
        ),
        "character": "Alice",
        "is_group": False,
        "speaker": "Alice",
        "message_index": 3 + n,
        "excerpt": "She smiles.",
    }
    base.update(over)
    return base


# --- opening -----------------------------------------------------------------------------------


async def test_open_sets_pragmas_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "state.db"
    st = await Store.open(path)
    try:
        assert path.exists()
        assert await st.schema_version() == len(MIGRATIONS)
    finally:
        await st.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"jobs", "cursors", "ledger", "our_writes"} <= tables
    finally:
        conn.close()


async def test_connection_pragmas(store: Store) -> None:
    conn = store._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


async def test_reopen_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    st = await Store.open(path)
    job = await st.create_job(**fields())
    await st.close()
    st2 = await Store.open(path)
    try:
        assert job is not None
        assert (await st2.get_job(job.id)).key == job.key
        assert await st2.schema_version() == len(MIGRATIONS)
    finally:
        await st2.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this st-imagegen"):
        await Store.open(path)


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite at all, just text" * 100)
    with pytest.raises(StoreError, match="not a database"):
        await Store.open(path)
    assert path.read_bytes().startswith(b"this is not sqlite")


async def test_unwritable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the state dir"):
        await Store.open(blocker / "sub" / "state.db")


async def test_closed_store_raises(tmp_path: Path) -> None:
    st = await Store.open(tmp_path / "state.db")
    await st.close()
    await st.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await st.counts()


# --- ids and keys ------------------------------------------------------------------------------


def test_job_ids_are_sortable_and_unique() -> None:
    ids = [new_job_id() for _ in range(5000)]
    assert all(len(i) == 26 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert new_job_id(1_000) < new_job_id(2_000_000_000_000)
    assert set("".join(ids)) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_an_id_for_a_future_time_does_not_pin_later_ids() -> None:
    """Regression: after one id for a later time (a test clock, a clock set back), every new id
    shared that time and nearly all its random bits, so short id prefixes became ambiguous."""
    future = new_job_id(int(time.time() * 1000) + 86_400_000)
    now = new_job_id()
    assert now[:10] < future[:10]  # its own time, not the future's
    time.sleep(0.002)
    assert new_job_id()[10:16] != now[10:16]  # fresh random bits, not +1 steps


def test_job_ids_from_threads_are_unique() -> None:
    out: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        mine = [new_job_id() for _ in range(1000)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 4000


def test_job_key_escapes_separators() -> None:
    a = ReplyKey("u", "a|b", "c", "d", "r").key()
    b = ReplyKey("u", "a", "b|c", "d", "r").key()
    assert a != b
    assert ReplyKey("u", "c", "n", "d", "r").key() == "u|c|n|d|r"
    assert ReplyKey("u", "c", "n", "d", "r").key(2) == "u|c|n|d|r|regen:2"


# --- jobs --------------------------------------------------------------------------------------


async def test_create_roundtrip_and_duplicate(store: Store) -> None:
    job = await store.create_job(**fields(meta={"provider": "x"}), now=T0)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.attempts == 0 and job.last_error is None and job.prompt is None
    assert job.created_at == T0 and job.created_at.tzinfo is not None
    assert job.next_attempt_at == T0
    assert job.meta == {"provider": "x"}
    assert job.key == "default-user|default-user/chats/Alice/Alice - 1.jsonl|Alice|" + (
        "2026-11-23T12:00:00.000Z|0:abcdef0123456789"
    )
    assert job.reply == ReplyKey(
        "default-user",
        "default-user/chats/Alice/Alice - 1.jsonl",
        "Alice",
        "2026-11-23T12:00:00.000Z",
        "0:abcdef0123456789",
    )
    assert (job.user, job.chat, job.revision) == (
        job.reply.user,
        job.reply.chat,
        job.reply.revision,
    )
    assert await store.create_job(**fields(message_index=99)) is None
    assert (await store.counts())[JobState.QUEUED] == 1
    assert await store.find_job(job.key) == job
    assert await store.get_job(job.id) == job


async def test_create_rejects_bad_fields(store: Store) -> None:
    with pytest.raises(TypeError, match="missing"):
        await store.create_job(user="u")
    with pytest.raises(TypeError, match=r"unknown fields \['colour'\]"):
        await store.create_job(**fields(), colour="red")
    with pytest.raises(
        TypeError, match=r"missing \['character', .*\], unknown fields \['colour'\]"
    ):
        await store.create_job(speaker="u", colour="red")
    # the reply travels as one ReplyKey, never as loose fields
    loose = {"user": "u", "chat": "c", "identity_name": "n", "identity_date": "d"}
    without = {k: v for k, v in fields().items() if k != "reply"}
    with pytest.raises(TypeError, match=r"missing \['reply'\], unknown fields \['chat', "):
        await store.create_job(**without, **loose, revision="r")
    with pytest.raises(TypeError, match="reply must be a ReplyKey, not tuple"):
        await store.create_job(**{**fields(), "reply": ("u", "c", "n", "d", "r")})
    assert sum((await store.counts()).values()) == 0
    with pytest.raises(ValueError, match="naive"):
        await store.create_job(**fields(), now=datetime(2026, 1, 1))


async def test_new_revision_is_a_new_job(store: Store) -> None:
    a = await store.create_job(**fields())
    b = await store.create_job(**fields(revision="1:ffff"))
    assert a is not None and b is not None and a.id != b.id


async def test_get_job_by_prefix(store: Store) -> None:
    j1 = await store.create_job(**fields(0), id="01AAAAAAAAAAAAAAAAAAAAAAA1")
    j2 = await store.create_job(**fields(1), id="01AAAAAAAAAAAAAAAAAAAAAAB2")
    j3 = await store.create_job(**fields(2), id="01BBBBBBBBBBBBBBBBBBBBBBB3")
    assert j1 and j2 and j3
    assert (await store.get_job("01b")).id == j3.id
    assert (await store.get_job("01aaaaaaaaaaaaaaaaaaaaaab")).id == j2.id
    assert (await store.get_job(j1.id)).id == j1.id
    with pytest.raises(JobError, match="ambiguous"):
        await store.get_job("01A")
    with pytest.raises(JobError, match="no job"):
        await store.get_job("01C")
    with pytest.raises(JobError, match="no job id given"):
        await store.get_job("  ")
    with pytest.raises(JobError, match="no job"):
        await store.get_job("01%")
    assert (await store.get_job("olb")).id == j3.id  # Crockford: O is 0, l is 1
    custom = await store.create_job(**fields(3), id="job-one")
    assert custom and (await store.get_job("job-one")).id == "job-one"


async def test_list_jobs_newest_first_and_filters(store: Store) -> None:
    made = [await store.create_job(**fields(i)) for i in range(5)]
    ids = [j.id for j in made if j]
    listed = await store.list_jobs()
    assert [j.id for j in listed] == list(reversed(ids))
    await store.transition(ids[1], JobState.QUEUED, JobState.PROMPTING)
    assert [j.id for j in await store.list_jobs(state=JobState.PROMPTING)] == [ids[1]]
    assert len(await store.list_jobs(limit=2)) == 2
    assert await store.list_jobs(chat="other") == []
    assert [j.id for j in await store.jobs_in({JobState.QUEUED})] == [i for i in ids if i != ids[1]]


async def test_transition_is_guarded(store: Store) -> None:
    job = await store.create_job(**fields())
    assert job
    assert await store.transition(job.id, JobState.PENDING, JobState.ACCEPTED) is None
    assert await store.transition("NOPE", JobState.QUEUED, JobState.PROMPTING) is None
    moved = await store.transition(
        job.id, ACTIVE_STATES, JobState.PROMPTING, meta_update={"a": 1}, now=T0, check=False
    )
    assert moved and moved.state is JobState.PROMPTING and moved.meta == {"a": 1}
    assert moved.updated_at == T0
    moved = await store.transition(
        job.id,
        JobState.PROMPTING,
        JobState.IMAGING,
        prompt="a cat",
        meta_update={"b": 2},
    )
    assert moved and moved.prompt == "a cat" and moved.meta == {"a": 1, "b": 2}
    moved = await store.transition(
        job.id, JobState.IMAGING, JobState.PENDING, images=["image-1.png"], meta={"c": 3}
    )
    assert moved and moved.images == ("image-1.png",) and moved.meta == {"c": 3}
    with pytest.raises(TypeError, match="unknown"):
        await store.transition(job.id, JobState.PENDING, JobState.ACCEPTED, state="x")
    # any collection of states works as `expected`
    moved = await store.transition(job.id, {JobState.PENDING}, JobState.ACCEPTED)
    assert moved and moved.state is JobState.ACCEPTED
    assert await store.transition(job.id, [JobState.PENDING], JobState.REJECTED) is None


async def test_concurrent_transitions_only_one_wins(store: Store) -> None:
    job = await store.create_job(**fields())
    assert job
    results: list[object] = []

    async def claim() -> None:
        results.append(await store.transition(job.id, JobState.QUEUED, JobState.PROMPTING))

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(claim)
    assert sum(r is not None for r in results) == 1


async def test_reschedule_and_due_jobs(store: Store) -> None:
    job = await store.create_job(**fields(), now=T0)
    assert job
    assert [j.id for j in await store.due_jobs(T0, 10)] == [job.id]
    await store.transition(job.id, JobState.QUEUED, JobState.PROMPTING)
    again = await store.reschedule(job.id, "timeout", 30, now=T0)
    assert again and again.state is JobState.QUEUED and again.attempts == 1
    assert again.last_error == "timeout"
    assert again.next_attempt_at == T0 + timedelta(seconds=30)
    assert await store.due_jobs(T0 + timedelta(seconds=29), 10) == []
    assert await store.next_due_at() == T0 + timedelta(seconds=30)
    assert [j.id for j in await store.due_jobs(T0 + timedelta(seconds=30), 10)] == [job.id]
    # not active any more: nothing to reschedule
    await store.transition(job.id, JobState.QUEUED, JobState.PENDING, check=False)
    assert await store.reschedule(job.id, "x", 1) is None


async def test_reschedule_gives_up_after_max_attempts(store: Store) -> None:
    job = await store.create_job(**fields())
    assert job
    for _ in range(2):
        j = await store.reschedule(job.id, "503", timedelta(seconds=1), max_attempts=3)
        assert j and j.state is JobState.QUEUED
    j = await store.reschedule(job.id, "503", 1, max_attempts=3)
    assert j and j.state is JobState.FAILED and j.attempts == 3
    assert j.last_error == "gave up after 3 attempts: 503"
    assert j.next_attempt_at is None


async def test_due_jobs_oldest_first_with_limit(store: Store) -> None:
    made = [await store.create_job(**fields(i), now=T0 + timedelta(seconds=i)) for i in range(5)]
    due = await store.due_jobs(T0 + timedelta(minutes=1), 3)
    assert [j.id for j in due] == [j.id for j in made[:3] if j]


async def test_fail(store: Store) -> None:
    job = await store.create_job(**fields())
    assert job
    failed = await store.fail(job.id, "401: the key is wrong")
    assert failed and failed.state is JobState.FAILED
    assert failed.last_error == "401: the key is wrong"
    assert await store.fail(job.id, "again") is None


async def test_supersede(store: Store) -> None:
    rev_a, rev_b = "0:aaaa", "1:bbbb"
    queued = await store.create_job(**fields(revision=rev_a))
    pending = await store.create_job(**fields(revision="0:pppp"))
    accepted = await store.create_job(**fields(revision="0:cccc"))
    keep = await store.create_job(**fields(revision=rev_b))
    other_reply = await store.create_job(**fields(5, revision=rev_a))
    assert queued and pending and accepted and keep and other_reply
    await store.transition(pending.id, JobState.QUEUED, JobState.PENDING, check=False)
    await store.transition(accepted.id, JobState.QUEUED, JobState.ACCEPTED, check=False)
    done = await store.supersede(replace(fields()["reply"], revision=rev_b), "swiped")
    assert [j.id for j in done] == [queued.id, pending.id]
    assert all(j.state is JobState.SUPERSEDED and j.last_error == "swiped" for j in done)
    assert (await store.get_job(accepted.id)).state is JobState.ACCEPTED
    assert (await store.get_job(keep.id)).state is JobState.QUEUED
    assert (await store.get_job(other_reply.id)).state is JobState.QUEUED
    # reply removed: everything open for it goes
    gone = await store.supersede(fields()["reply"], "deleted", keep=False)
    assert [j.id for j in gone] == [keep.id]
    chat_gone = await store.supersede_chat(CHAT, "chat deleted")
    assert [j.id for j in chat_gone] == [other_reply.id]


async def test_resume_after_crash(store: Store) -> None:
    jobs = [await store.create_job(**fields(i)) for i in range(4)]
    ids = [j.id for j in jobs if j]
    await store.transition(ids[0], JobState.QUEUED, JobState.PROMPTING)
    await store.transition(ids[1], JobState.QUEUED, JobState.IMAGING)
    await store.transition(ids[2], JobState.QUEUED, JobState.PENDING, check=False)
    assert await store.resume_after_crash(now=T0) == 2
    for i in ids[:2]:
        j = await store.get_job(i)
        assert j.state is JobState.QUEUED and j.next_attempt_at == T0
    assert (await store.get_job(ids[2])).state is JobState.PENDING
    assert await store.resume_after_crash() == 0


async def test_query_jobs_pages_newest_first_through_any_filter(store: Store) -> None:
    # Mixed states, two users, two chats, rows made out of id order: every page is the next
    # ``limit`` matching jobs by id, newest first, whole (the ids are picked before the rows
    # are read).
    rnd = random.Random(7)
    made = []
    for n in range(40):
        user = "bob" if n % 3 == 0 else "default-user"
        chat = f"{user}/chats/Alice/Alice - {n % 2}.jsonl"
        reply = ReplyKey(
            user, chat, "Alice", f"2026-11-23T12:{n // 60:02d}:{n % 60:02d}.000Z", "0:ab"
        )
        at = int(T0.timestamp() * 1000) + rnd.randrange(10_000_000)
        job = await store.create_job(
            **fields(n, reply=reply, excerpt=f"reply {n}"), id=new_job_id(at)
        )
        assert job is not None
        if n % 4 == 1:
            failed = await store.fail(job.id, "broken", now=T0)
            assert failed is not None
        made.append(await store.get_job(job.id))
    choice = {JobState.QUEUED, JobState.FAILED}
    cases: list[tuple[set[JobState], set[str] | None, str | None]] = [
        (choice, None, None),
        ({JobState.FAILED}, None, None),
        (choice, {"default-user"}, None),
        (set(), {"bob"}, "bob/chats/Alice/Alice - 1.jsonl"),
    ]
    for states, users, only in cases:
        expected = sorted(
            (
                j
                for j in made
                if (not states or j.state in states)
                and (users is None or j.reply.user in users)
                and (only is None or j.chat == only)
            ),
            key=lambda j: j.id,
            reverse=True,
        )
        got, before = [], None
        while True:
            page = await store.query_jobs(
                states=states, users=users, chat=only, before=before, limit=7
            )
            got.extend(page)
            if len(page) < 7:
                break
            before = page[-1].id
        assert got == expected and expected
        assert all(j.excerpt == f"reply {made.index(j)}" and j.prompt is None for j in got)


async def test_counts_and_recent_errors(store: Store) -> None:
    jobs = [await store.create_job(**fields(i)) for i in range(3)]
    ids = [j.id for j in jobs if j]
    await store.fail(ids[0], "first", now=T0)
    await store.reschedule(ids[1], "second", 5, now=T0 + timedelta(seconds=1))
    counts = await store.counts()
    assert set(counts) == set(JobState)
    assert counts[JobState.FAILED] == 1 and counts[JobState.QUEUED] == 2
    assert counts[JobState.COMMITTED] == 0
    errors = await store.recent_errors(5)
    assert [(j.id, j.last_error) for j in errors] == [(ids[1], "second"), (ids[0], "first")]
    # A superseded job's reason is not an error (regression: status listed supersedes).
    await store.transition(ids[2], JobState.QUEUED, JobState.SUPERSEDED, last_error="swiped")
    assert [j.id for j in await store.recent_errors(5)] == [ids[1], ids[0]]


async def test_regenerate(store: Store) -> None:
    job = await store.create_job(**fields())
    assert job
    with pytest.raises(JobError, match="is queued"):
        await store.regenerate(job.id)
    await store.transition(job.id, JobState.QUEUED, JobState.PENDING, prompt="a cat", check=False)
    new = await store.regenerate(job.id[:20])
    assert new.state is JobState.QUEUED and new.source == "regen" and new.regen == 1
    assert new.prompt == "a cat" and new.meta["regen_of"] == job.id
    assert new.key == job.key + "|regen:1"
    copied = "reply user chat revision character is_group speaker message_index excerpt"
    assert [getattr(new, f) for f in copied.split()] == [getattr(job, f) for f in copied.split()]
    assert (new.images, new.attempts, new.last_error) == ((), 0, None)
    old = await store.get_job(job.id)
    assert old.state is JobState.SUPERSEDED and old.last_error == f"regenerated as job {new.id}"
    await store.transition(new.id, JobState.QUEUED, JobState.PENDING, check=False)
    newer = await store.regenerate(new.id, prompt="a dog")
    assert newer.regen == 2 and newer.prompt == "a dog"
    with pytest.raises(JobError, match="no job"):
        await store.regenerate("ZZZZ")


# --- idempotency under concurrency ------------------------------------------------------------


async def test_many_concurrent_creators_one_job(store: Store) -> None:
    made: list[object] = []

    async def create() -> None:
        made.append(await store.create_job(**fields()))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(create)
    assert sum(m is not None for m in made) == 1
    assert (await store.counts())[JobState.QUEUED] == 1


async def test_two_store_instances_same_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    a, b = await Store.open(path), await Store.open(path)
    created: list[object] = []
    try:

        async def create(st: Store, n: int) -> None:
            created.append(await st.create_job(**fields(n)))

        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(create, a, n)
                tg.start_soon(create, b, n)
        assert sum(c is not None for c in created) == 40
        assert sum((await a.counts()).values()) == 40
    finally:
        await a.close()
        await b.close()


_CHILD = """
import json, sys, time
from pathlib import Path
import anyio
from daemon.engine.store import ReplyKey, Store

async def main() -> None:
    st = await Store.open(Path({db!r}))
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while not Path({go!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    made = 0
    order = list(range({count}))
    for n in (order if {forward} else reversed(order)):
        fields = json.loads({fields!r})
        user, chat, name, _, revision = fields["reply"]
        fields["reply"] = ReplyKey(user, chat, name, f"d{{n}}", revision)
        if await st.create_job(**fields) is not None:
            made += 1
    await st.close()
    print(made, flush=True)

anyio.run(main)
"""


async def _read_all(stream: Any) -> bytes:
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
async def test_two_processes_never_duplicate(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    go = tmp_path / "go"
    st = await Store.open(db)
    count = 200
    base = fields()
    reply = base["reply"]
    plain = {**base, "reply": [reply.user, reply.chat, reply.name, reply.date, reply.revision]}
    procs = []
    for forward in (True, False):
        code = _CHILD.format(
            db=str(db), go=str(go), count=count, fields=json.dumps(plain), forward=forward
        )
        procs.append(
            await anyio.open_process([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
        )
    try:
        with anyio.fail_after(30):
            for p in procs:
                assert p.stdout is not None
                assert (await p.stdout.receive()).startswith(b"ready")
        go.touch()
        mine = 0
        order = list(range(count))
        random.Random(7).shuffle(order)
        for n in order:
            mine_reply = replace(reply, date=f"d{n}")
            if await st.create_job(**{**base, "reply": mine_reply}) is not None:
                mine += 1
        outs = []
        with anyio.fail_after(60):
            for p in procs:
                assert p.stdout is not None and p.stderr is not None
                out, err = await _read_all(p.stdout), await _read_all(p.stderr)
                assert await p.wait() == 0, err.decode()
                outs.append(int(out))
        assert mine + sum(outs) == count
        assert sum((await st.counts()).values()) == count
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.aclose()
        await st.close()


# --- cursors -----------------------------------------------------------------------------------


def _cursor(n: int) -> Cursor:
    ident = MessageIdentity(n, "Alice", f"2026-11-23T12:00:{n:02d}.000Z")
    return Cursor(((ident, Revision(0, "abcd")),), n + 1, 1000 + n)


async def test_cursors(store: Store) -> None:
    chat = "default-user/chats/Alice/a.jsonl"
    assert await store.get_cursor(chat) is None
    assert await store.get_chat(chat) is None
    await store.set_cursor(chat, _cursor(1), data={"replies": 3}, now=T0)
    await store.set_cursor(chat, _cursor(2), now=T0 + timedelta(hours=1))
    rec = await store.get_chat(chat)
    assert rec is not None
    assert rec.cursor == _cursor(2)
    assert rec.data == {"replies": 3}
    assert rec.first_seen == T0 and rec.updated_at == T0 + timedelta(hours=1)
    await store.set_cursor(chat, _cursor(3), data={"replies": 4})
    assert (await store.get_chat(chat)).data == {"replies": 4}  # type: ignore[union-attr]
    assert await store.get_cursor(chat) == _cursor(3)
    await store.set_cursor("other.jsonl", _cursor(0))
    assert await store.known_chats() == {chat, "other.jsonl"}
    assert await store.forget_chat("other.jsonl") is True
    assert await store.forget_chat("other.jsonl") is False
    assert await store.known_chats() == {chat}


# --- ledger and our writes ---------------------------------------------------------------------


async def test_ledger(store: Store) -> None:
    j1 = await store.create_job(**fields(1))
    j2 = await store.create_job(**fields(2))
    assert j1 and j2
    msg = {"name": "Alice", "mes": "[pic]", "is_system": True, "extra": {"st_imagegen_job": j1.id}}

    async def add(job_id: str, chat: str = j1.chat) -> None:
        await store.ledger_add(
            job_id=job_id,
            reply=ReplyKey(j1.user, chat, "Alice", "d", "0:aa"),
            message=msg,
        )

    await add(j1.id)
    await add(j1.id)  # idempotent
    await add(j2.id)
    entries = await store.ledger_for_chat(j1.chat)
    assert [e.job_id for e in entries] == [j1.id, j2.id]
    assert entries[0].message == msg and not entries[0].acknowledged and entries[0].retired is None
    assert await store.chats_with_open_ledger() == {j1.chat}
    assert await store.ledger_acknowledge(j1.id) is True
    assert await store.ledger_acknowledge(j1.id) is False
    assert await store.ledger_retire(j2.id, "deleted by the user") is True
    assert await store.ledger_for_chat(j1.chat) == []
    every = await store.ledger_for_chat(j1.chat, open_only=False)
    assert [(e.acknowledged, e.retired) for e in every] == [
        (True, None),
        (False, "deleted by the user"),
    ]
    assert await store.chats_with_open_ledger() == set()
    got = await store.ledger_get(j1.id)
    assert got and got.acknowledged
    assert await store.ledger_get("nope") is None
    with pytest.raises(StoreError, match="no such job"):
        await add("01UNKNOWNJOB")
    assert await store.ledger_acknowledge("01UNKNOWNJOB") is False


def _version(n: int) -> FileVersion:
    return FileVersion(inode=1000 + n, size=5000 + n, mtime_ns=1_700_000_000_000_000_000 + n)


async def test_our_writes_keep_the_last_few(store: Store) -> None:
    for i in range(OUR_WRITES_KEPT + 3):
        await store.record_write("c.jsonl", _version(i))
    await store.record_write("d.jsonl", _version(0))
    assert await store.our_write("c.jsonl", _version(0)) is False
    assert await store.our_write("c.jsonl", _version(2)) is False
    assert await store.our_write("c.jsonl", _version(3)) is True
    assert await store.our_write("c.jsonl", _version(OUR_WRITES_KEPT + 2)) is True
    assert await store.our_write("d.jsonl", _version(0)) is True
    assert await store.our_write("e.jsonl", _version(5)) is False
    # All three must match: the same inode reused by a save of another size or time is theirs.
    v = _version(4)
    assert await store.our_write("c.jsonl", v._replace(size=v.size + 1)) is False
    assert await store.our_write("c.jsonl", v._replace(mtime_ns=v.mtime_ns + 1)) is False
    assert await store.our_write("c.jsonl", v._replace(inode=v.inode + 99)) is False


async def test_writes_recorded_by_hash_before_schema_3_are_still_ours(tmp_path: Path) -> None:
    """A store from before schema 3 holds hashes of our writes: migrated, they still answer
    (by hash, when asked) until newer writes push them out; nothing else is lost."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0].split(";") + MIGRATIONS[1].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO our_writes (chat, sha256, at) VALUES ('c.jsonl', ?, '2026-01-01T00:00:00Z')",
        ("ab" * 32,),
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    async with await Store.open(path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.our_write("c.jsonl", _version(1)) is None  # ask by hash
        asked: list[str] = []

        def content(digest: str) -> Callable[[], str]:
            def hashed() -> str:
                asked.append(digest)
                return digest

            return hashed

        ours = partial(store.blocking.our_write, "c.jsonl", _version(1))
        assert await anyio.to_thread.run_sync(ours, content("ab" * 32)) is True
        assert await anyio.to_thread.run_sync(ours, content("cd" * 32)) is False
        assert asked == ["ab" * 32, "cd" * 32]
        for i in range(OUR_WRITES_KEPT):
            await store.record_write("c.jsonl", _version(10 + i))
        # The hash row is pushed out: answered by identity alone, no hash asked for.
        assert await store.our_write("c.jsonl", _version(1)) is False
        assert await anyio.to_thread.run_sync(ours, content("ab" * 32)) is False
        assert asked == ["ab" * 32, "cd" * 32]


async def test_supersede_tells_listeners_the_state_each_job_had(store: Store) -> None:
    heard: list[tuple[str, JobState | None]] = []
    store.add_job_listener(lambda job, previous: heard.append((job.id, previous)))
    queued = await store.create_job(**fields(0))
    pending = await store.create_job(**fields(1))
    assert queued and pending
    await store.transition(pending.id, JobState.QUEUED, JobState.PENDING, check=False)
    heard.clear()
    gone = await store.supersede_chat(queued.chat, "the chat is gone")
    assert {j.id for j in gone} == {queued.id, pending.id}
    assert sorted(heard) == sorted([(queued.id, JobState.QUEUED), (pending.id, JobState.PENDING)])
