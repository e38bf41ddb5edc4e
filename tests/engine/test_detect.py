"""The detection policy: pure table tests, then real chats through tail_scan and the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DetectSettings
from daemon.engine.intake.detect import (
    DECIDED_KEPT,
    ChatContext,
    ChatState,
    Decision,
    Reason,
    Skip,
    decide,
    eligible,
    excerpt_of,
)
from daemon.engine.store import Job, JobState, ReplyKey, Store
from daemon.tavern import layout
from daemon.tavern.chat import (
    Cursor,
    Message,
    MessageIdentity,
    parse_chat,
)
from daemon.tavern.scan import ScanResult, tail_scan
from tests.stsim import SimClock, STSim

NOW = datetime(2026, 11, 23, 22, 0, 0, tzinfo=UTC)
CHAT = "default-user/chats/Alice/Alice - 1.jsonl"


# --- builders ----------------------------------------------------------------------------------


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def msg(index: int, name: str = "Alice", mes: str = "She smiles.", **data: Any) -> Message:
    obj: dict[str, Any] = {
        "name": name,
        "is_user": False,
        "send_date": iso(NOW - timedelta(minutes=60 - index)),
        "mes": mes,
        "extra": {},
    }
    obj.update(data)
    return Message(index, obj, json.dumps(obj).encode())


def user(index: int, mes: str = "Hi.") -> Message:
    return msg(index, "User", mes, is_user=True)


def scan(
    new: list[Message] | None = None,
    changed: list[Message] | None = None,
    removed: list[MessageIdentity] | None = None,
    tail: list[Message] | None = None,
) -> ScanResult:
    everything = tail if tail is not None else [*(changed or []), *(new or [])]
    return ScanResult(
        new=new or [],
        changed=changed or [],
        removed=removed or [],
        tail=everything,
        cursor=Cursor.of(everything, 100),
        cursor_gone=False,
        bytes_read=100,
    )


def ctx(state: ChatState | None = None, **kw: Any) -> ChatContext:
    base: dict[str, Any] = {"user": "default-user", "chat": CHAT, "is_group": False}
    base["owner"] = "Alice"
    base.update(kw)
    return ChatContext(**base, state=state or ChatState())


def settings(**kw: Any) -> DetectSettings:
    return DetectSettings(**kw)


def run(
    result: ScanResult,
    context: ChatContext | None = None,
    *,
    mode: str = "auto",
    first_sight: bool = False,
    created: bool = False,
    now: datetime = NOW,
    live: bool = False,
    **kw: Any,
) -> Decision:
    return decide(
        result,
        context or ctx(),
        settings(**kw),
        mode,  # type: ignore[arg-type]
        now,
        first_sight=first_sight,
        created_while_running=created,
        live=live,
    )


def indices(decision: Decision) -> list[int]:
    return [j.message_index for j in decision.new_jobs]


# --- eligibility, table-driven ----------------------------------------------------------------

NARRATOR: dict[str, Any] = {"is_system": "", "extra": {"type": "narrator"}}
SLASH: dict[str, Any] = {
    "bias": None,
    "isSmallSys": False,
    "api": "manual",
    "model": "slash command",
}

ELIGIBILITY: list[tuple[str, Message, Skip | None]] = [
    ("plain reply", msg(1), None),
    ("visible is_system false", msg(1, is_system=False), None),
    ("generated and finished", msg(1, gen_started="a", gen_finished="b"), None),
    ("imported (no gen fields)", msg(1, send_date="November 23, 2026 9:55pm"), None),
    ("user", user(1), Skip.USER),
    ("hidden reply", msg(1, is_system=True), Skip.HIDDEN),
    ("narrator /sys", msg(1, "System", **NARRATOR), Skip.NARRATOR),
    ("ST system", msg(1, "SillyTavern System", is_system=True), Skip.SYSTEM),
    ("small sys", msg(1, extra={"isSmallSys": True}), Skip.SYSTEM),
    ("typed system", msg(1, extra={"type": "group"}), Skip.SYSTEM),
    ("ours", msg(1, extra={"st_imagegen_job": "01ABC"}, is_system=True), Skip.OURS),
    ("ours visible", msg(1, extra={"st_imagegen_job": "01ABC"}), Skip.OURS),
    ("unfinished", msg(1, gen_started="a"), Skip.UNFINISHED),
    ("unfinished null", msg(1, gen_started="a", gen_finished=None), Skip.UNFINISHED),
    ("empty", msg(1, mes="  \n"), Skip.EMPTY),
    ("no name", msg(1, ""), Skip.NO_NAME),
    ("is_system empty string is visible", msg(1, "Bob", is_system=""), None),
    ("/sendas", msg(1, "Bob", is_system="", extra=SLASH), Skip.SLASH),
    (
        "/sendas swiped by a generation",
        msg(1, "Bob", is_system="", extra={"api": "openai", "model": "gpt-4o"}),
        None,
    ),
    (
        "/sys without is_system",
        msg(1, "System", extra={**SLASH, "type": "narrator"}),
        Skip.NARRATOR,
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in ELIGIBILITY],
)
def test_eligible(message: Message, expected: Skip | None) -> None:
    assert eligible(message) == expected
    decision = run(scan(new=[message]))
    assert indices(decision) == ([1] if expected is None else [])
    if expected is not None:
        assert decision.skipped == [(1, expected)]


FILTERS: list[tuple[str, dict[str, Any], Message, ChatContext | None, bool]] = [
    ("include by stem", {"include_characters": ["alice"]}, msg(1), None, True),
    ("include by display name", {"include_characters": ["ALICE"]}, msg(1), ctx(owner="a_v2"), True),
    ("include other", {"include_characters": ["Bob"]}, msg(1), None, False),
    ("exclude by stem", {"exclude_characters": ["alice_v2"]}, msg(1), ctx(owner="Alice_V2"), False),
    ("exclude by name", {"exclude_characters": ["alice"]}, msg(1), ctx(owner="x"), False),
    ("exclude other", {"exclude_characters": ["bob"]}, msg(1), None, True),
    ("min_length ok", {"min_length": 11}, msg(1, mes="She smiles."), None, True),
    ("min_length short", {"min_length": 12}, msg(1, mes="She smiles."), None, False),
    ("min_length strips", {"min_length": 5}, msg(1, mes="  ab  "), None, False),
    (
        "group member by original_avatar",
        {"include_characters": ["bob_card"]},
        msg(1, "Bobby", original_avatar="bob_card.png"),
        ctx(is_group=True, owner="", group_id="g1"),
        True,
    ),
    (
        "group member by names map",
        {"exclude_characters": ["bob_card"]},
        msg(1, "Bobby"),
        ctx(is_group=True, owner="", group_id="g1", names={"Bobby": "bob_card"}),
        False,
    ),
]


@pytest.mark.parametrize(
    ("kw", "message", "context", "wanted"),
    [pytest.param(k, m, c, w, id=i) for i, k, m, c, w in FILTERS],
)
def test_filters(
    kw: dict[str, Any], message: Message, context: ChatContext | None, wanted: bool
) -> None:
    decision = run(scan(new=[message]), context, **kw)
    assert indices(decision) == ([1] if wanted else [])
    if not wanted:
        assert decision.skipped[0][1] in (Skip.EXCLUDED, Skip.SHORT)


# --- the job spec -------------------------------------------------------------------------------


def test_job_spec_fields() -> None:
    m = msg(4, mes="A  long\n reply " * 30, swipe_id=1, swipes=["x", "y"])
    decision = run(scan(new=[user(3), m]))
    [spec] = decision.new_jobs
    assert spec.reply.user == "default-user" and spec.reply.chat == CHAT
    assert spec.character == "Alice" and not spec.is_group and spec.speaker == "Alice"
    assert spec.message_index == 4
    assert (spec.reply.name, spec.reply.date) == (m.identity.name, m.identity.first_date)
    assert spec.reply.revision == str(m.revision) and spec.reply.revision.startswith("1:")
    assert spec.excerpt == excerpt_of(m.mes) and len(spec.excerpt) == 200
    assert "\n" not in spec.excerpt
    assert spec.source == "auto" and spec.reason == Reason.NEW
    assert spec.meta["card"] == "Alice"
    fields = spec.fields()
    assert set(fields) >= {"reply", "character", "message_index", "excerpt", "meta"}
    assert fields["reply"] == ReplyKey.of("default-user", CHAT, m)
    assert spec.key.startswith("default-user|")


def test_group_job_spec_uses_group_id_and_member_card() -> None:
    m = msg(2, "Bob", original_avatar="Bob.png")
    c = ctx(is_group=True, owner="", group_id="1795474548304", chat="u/group chats/x.jsonl")
    [spec] = run(scan(new=[m]), c).new_jobs
    assert spec.character == "1795474548304" and spec.is_group and spec.speaker == "Bob"
    assert spec.meta["card"] == "Bob"
    c2 = ctx(is_group=True, owner="", chat="u/group chats/2026-11-23@22h55m48s.jsonl")
    assert run(scan(new=[m]), c2).new_jobs[0].character == "2026-11-23@22h55m48s"


# --- modes, every_nth, first sight -----------------------------------------------------------


def test_manual_mode_makes_no_jobs_but_still_supersedes() -> None:
    old = msg(1)
    new = msg(1, mes="Edited.")
    state = ChatState(1, ((old.identity.key, True),))
    decision = run(scan(new=[msg(3)], changed=[new]), ctx(state), mode="manual")
    assert decision.new_jobs == []
    assert [(s.identity.key, s.keep_revision) for s in decision.supersede] == [
        (new.identity.key, str(new.revision))
    ]
    assert (3, Skip.MANUAL) in decision.skipped


def test_every_nth_counts_per_chat_across_scans() -> None:
    state = ChatState()
    picked: list[int] = []
    for i in range(1, 10):
        decision = run(
            scan(new=[user(2 * i), msg(2 * i + 1, mes=f"reply {i}")]), ctx(state), every_nth=3
        )
        picked += indices(decision)
        state = decision.chat_state
    assert picked == [7, 13, 19]  # the 3rd, 6th and 9th reply
    assert state.replies == 9
    # hidden, short or filtered replies are not counted
    decision = run(
        scan(new=[msg(30, is_system=True), msg(31, mes="x")]), ctx(state), every_nth=3, min_length=2
    )
    assert decision.chat_state.replies == 9


def test_every_nth_revision_follows_the_original_selection() -> None:
    a, b = msg(1, mes="one"), msg(3, mes="two")
    d1 = run(scan(new=[a, b]), ctx(), every_nth=2)
    assert indices(d1) == [3]
    swiped_a = msg(1, mes="one, swiped", swipe_id=1)
    swiped_b = msg(3, mes="two, swiped", swipe_id=1)
    d2 = run(scan(changed=[swiped_a, swiped_b]), ctx(d1.chat_state), every_nth=2)
    assert indices(d2) == [3]
    assert [j.reason for j in d2.new_jobs] == [Reason.REVISION]
    assert (1, Skip.NOT_SELECTED) in d2.skipped
    assert d2.chat_state.replies == 2  # revisions are not new replies


def test_first_sight_is_history() -> None:
    tail = [msg(0), user(1), msg(2), user(3), msg(4)]
    decision = run(scan(tail=tail), first_sight=True)
    assert decision.new_jobs == [] and decision.supersede == []
    assert {i for i, _ in decision.skipped} == {0, 1, 2, 3, 4}
    # later revisions of history replies get no job
    d2 = run(scan(changed=[msg(4, mes="swiped", swipe_id=1)]), ctx(decision.chat_state))
    assert d2.new_jobs == [] and len(d2.supersede) == 1


def test_first_sight_of_a_long_chat_remembers_only_the_newest() -> None:
    tail = [msg(i, mes=f"r{i}", send_date=iso(NOW - timedelta(seconds=i))) for i in range(5000)]
    decision = run(scan(tail=tail), first_sight=True)
    assert len(decision.chat_state.decided) == DECIDED_KEPT
    assert decision.chat_state.decided[-1] == (tail[-1].identity.key, False)
    assert len(decision.skipped) == 5000


def test_first_sight_backfill_last_eligible_only() -> None:
    tail = [
        msg(0),
        user(1),
        msg(2),
        user(3),
        msg(4, mes="last"),
        msg(5, "System", **NARRATOR),
        user(6),
    ]
    decision = run(scan(tail=tail), first_sight=True, backfill=True)
    assert indices(decision) == [4]
    assert decision.new_jobs[0].reason == Reason.BACKFILL
    # backfill ignores the age limit: it is an explicit request
    old = run(scan(tail=tail), first_sight=True, backfill=True, now=NOW + timedelta(days=90))
    assert indices(old) == [4]
    assert run(scan(tail=tail), first_sight=True, backfill=True, mode="manual").new_jobs == []
    assert run(scan(tail=[user(0)]), first_sight=True, backfill=True).new_jobs == []


@pytest.mark.parametrize(
    ("greetings", "mode", "expected"),
    [(False, "auto", []), (True, "auto", [0]), (True, "manual", [])],
)
def test_chat_created_while_running(greetings: bool, mode: str, expected: list[int]) -> None:
    decision = run(
        scan(tail=[msg(0, mes="Hello!")]),
        first_sight=True,
        created=True,
        greetings=greetings,
        mode=mode,
    )
    assert indices(decision) == expected
    if expected:
        assert decision.new_jobs[0].reason == Reason.GREETING


def test_created_while_running_with_history_only_greetings() -> None:
    # a chat that appears with content (renamed, imported): only its greetings count
    tail = [msg(0, "Alice"), msg(1, "Bob", original_avatar="Bob.png"), user(2), msg(3)]
    decision = run(
        scan(tail=tail),
        ctx(is_group=True, owner=""),
        first_sight=True,
        created=True,
        greetings=True,
    )
    assert indices(decision) == [0, 1]
    assert (
        run(
            scan(tail=tail),
            first_sight=True,
            created=True,
            greetings=True,
            exclude_characters=["bob"],
        )
        .new_jobs[0]
        .speaker
        == "Alice"
    )


# --- revisions, removals ------------------------------------------------------------------------


def test_revision_supersedes_and_gets_a_job() -> None:
    a = msg(1, mes="first")
    d1 = run(scan(new=[a]))
    b = msg(1, mes="first, continued")
    d2 = run(scan(changed=[b]), ctx(d1.chat_state))
    assert indices(d2) == [1]
    assert d2.new_jobs[0].reply.revision == str(b.revision) != str(a.revision)
    [sup] = d2.supersede
    assert sup.identity.key == a.identity.key and sup.keep_revision == str(b.revision)


def test_unfinished_reply_gets_its_job_when_finished() -> None:
    partial = msg(1, mes="Once upon", gen_started="2026-11-23T21:59:00.000Z")
    d1 = run(scan(new=[partial]))
    assert d1.new_jobs == [] and d1.skipped == [(1, Skip.UNFINISHED)]
    done = msg(
        1,
        mes="Once upon a time.",
        gen_started="2026-11-23T21:59:00.000Z",
        gen_finished="2026-11-23T21:59:09.000Z",
    )
    d2 = run(scan(changed=[done]), ctx(d1.chat_state))
    assert indices(d2) == [1] and d2.new_jobs[0].reason == Reason.NEW


def test_streaming_placeholder_is_unfinished_and_the_finished_save_gets_one_job() -> None:
    """A save made while ST streams (an extension's, a metadata change) holds the reply as ST's
    placeholder with both dates set; only the save of the finished reply makes a job."""
    started = "2026-11-23T21:59:00.000Z"
    streaming = msg(1, mes="...", gen_started=started, gen_finished="2026-11-23T21:59:00.100Z")
    d1 = run(scan(new=[streaming]))
    assert d1.new_jobs == [] and d1.skipped == [(1, Skip.UNFINISHED)] and not d1.hold
    done = msg(
        1, mes="The glade glows.", gen_started=started, gen_finished="2026-11-23T21:59:04.000Z"
    )
    d2 = run(scan(changed=[done]), ctx(d1.chat_state))
    assert indices(d2) == [1] and d2.new_jobs[0].reason == Reason.NEW
    assert not d2.hold  # a finished generation is acted on at once


def test_a_new_generation_is_not_held_an_edit_or_a_swipe_back_is() -> None:
    started = "2026-11-23T21:59:00.000Z"
    first = msg(1, mes="one", gen_started=started, gen_finished="2026-11-23T21:59:04.000Z")
    d1 = run(scan(new=[first]))
    assert indices(d1) == [1] and not d1.hold
    state = d1.chat_state
    # a swipe that generates (or a continue): a newer gen_finished than the chat has seen
    swiped = msg(1, mes="two", gen_started=started, gen_finished="2026-11-23T21:59:30.000Z")
    d2 = run(scan(changed=[swiped]), ctx(state))
    assert indices(d2) == [1] and not d2.hold and len(d2.supersede) == 1
    # an edit keeps the dates; a swipe back shows an older alternative's dates
    edited = msg(1, mes="two, edited", gen_started=started, gen_finished="2026-11-23T21:59:30.000Z")
    d3 = run(scan(changed=[edited]), ctx(d2.chat_state))
    assert d3.hold and indices(d3) == [1] and len(d3.supersede) == 1
    back = msg(1, mes="one", gen_started=started, gen_finished="2026-11-23T21:59:04.000Z")
    d4 = run(scan(changed=[back]), ctx(d2.chat_state))
    assert d4.hold and indices(d4) == [1]
    # a new reply line is never held
    d5 = run(scan(new=[user(2), msg(3, mes="three")]), ctx(d2.chat_state))
    assert indices(d5) == [3] and not d5.hold


def test_removed_reply_is_superseded_and_regenerate_inherits_selection() -> None:
    a, b = msg(1, mes="one"), msg(3, mes="two")
    d1 = run(scan(new=[a, b]), every_nth=2)
    assert indices(d1) == [3]
    regenerated = msg(3, mes="two again", send_date=iso(NOW))
    assert regenerated.identity.key != b.identity.key
    d2 = run(scan(new=[regenerated], removed=[b.identity]), ctx(d1.chat_state), every_nth=2)
    assert [(s.identity.key, s.keep_revision) for s in d2.supersede] == [(b.identity.key, None)]
    assert indices(d2) == [3]
    assert d2.chat_state.replies == 2
    assert d2.chat_state.selected(b.identity.key) is None
    # deleting a reply only supersedes
    d3 = run(scan(removed=[regenerated.identity]), ctx(d2.chat_state), every_nth=2)
    assert d3.new_jobs == [] and len(d3.supersede) == 1


# --- catch-up age --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dates", "age", "wanted"),
    [
        ({"send_date": iso(NOW - timedelta(hours=2))}, "1h", False),
        ({"send_date": iso(NOW - timedelta(minutes=30))}, "1h", True),
        ({"send_date": iso(NOW + timedelta(hours=1))}, "1h", True),  # clock skew: future is fine
        # gen_finished (ISO, exact) wins over an older send_date
        (
            {
                "send_date": iso(NOW - timedelta(days=3)),
                "gen_started": iso(NOW),
                "gen_finished": iso(NOW),
            },
            "1h",
            True,
        ),
        # local-time forms get slack for the unknown time zone
        ({"send_date": "November 23, 2026 10:00am"}, "1h", True),
        ({"send_date": "November 22, 2026 10:00am"}, "1h", False),
        # 30 min old in UTC-12 (local 9:30am reads as 12.5 h old): within the grace
        ({"send_date": "November 23, 2026 9:30am"}, "1h", True),
        ({"send_date": "November 23, 2026 8:59am"}, "1h", False),
        ({"send_date": 1795000000000}, "24h", False),
        # unparsable: the file's mtime decides (see test below); without one, accepted
        ({"send_date": "yesterday-ish"}, "1h", True),
    ],
)
def test_catchup_max_age(dates: dict[str, Any], age: str, wanted: bool) -> None:
    decision = run(scan(new=[msg(1, **dates)]), catchup_max_age=age)
    assert indices(decision) == ([1] if wanted else [])
    if not wanted:
        assert decision.skipped == [(1, Skip.OLD)]
        assert decision.chat_state.replies == 1  # still counted
    # A save observed while running is new when seen, whatever its dates say (regression:
    # a browser with a wrong clock, an imported chat, a reply edited days later were skipped
    # silently).
    assert indices(run(scan(new=[msg(1, **dates)]), catchup_max_age=age, live=True)) == [1]


def test_skip_reasons_are_remembered_with_the_chat_for_why() -> None:
    decision = run(scan(new=[msg(1, mes="Hi."), msg(2)]), min_length=10)
    state = decision.chat_state
    one, two = msg(1, mes="Hi.").identity.key, msg(2).identity.key
    assert state.skip_reason(one) == Skip.SHORT.value
    assert state.skip_reason(two) is None  # it got a job
    again = ChatState.from_data(state.to_data())
    assert again.skip_reason(one) == Skip.SHORT.value
    assert ChatState.from_data({"skips": [["k", 3], "junk"]}).skips == ()  # damaged: ignored


def test_unparsable_date_falls_back_to_mtime() -> None:
    m = msg(1, send_date="garbage")
    old = ctx(file_mtime=NOW - timedelta(days=2))
    assert run(scan(new=[m]), old).new_jobs == []
    fresh = ctx(file_mtime=NOW - timedelta(minutes=1))
    assert indices(run(scan(new=[m]), fresh)) == [1]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        run(scan(), now=datetime(2026, 1, 1))


# --- state ---------------------------------------------------------------------------------------


def test_chat_state_roundtrip_and_bounds() -> None:
    state = ChatState()
    for i in range(DECIDED_KEPT + 20):
        state = run(
            scan(new=[msg(i, mes=f"r{i}", send_date=iso(NOW - timedelta(seconds=500 - i)))]),
            ctx(state),
        ).chat_state
    assert len(state.decided) == DECIDED_KEPT
    assert state.replies == DECIDED_KEPT + 20
    data = json.loads(json.dumps(state.to_data()))
    assert ChatState.from_data(data) == state
    assert ChatState.from_data(None) == ChatState()
    assert ChatState.from_data({"replies": -3, "decided": [["a", "yes"], 5], "last_date": 7}) == (
        ChatState()
    )


def test_cursor_lost_uses_previous_cursor_and_state() -> None:
    kept, gone = msg(1, mes="kept"), msg(3, mes="gone")
    d1 = run(scan(new=[kept, gone]))
    previous = Cursor.of([kept, gone], 100)
    edited = msg(1, mes="kept, edited")
    newer = msg(2, mes="brand new", send_date=iso(NOW + timedelta(seconds=5)))
    old_unknown = msg(0, mes="older, never seen", send_date=iso(NOW - timedelta(days=1)))
    chat_lines = [old_unknown, edited, newer]
    result = ScanResult(
        new=[],
        changed=[],
        removed=[],
        tail=chat_lines,
        cursor=Cursor.of(chat_lines, 50),
        cursor_gone=True,
        bytes_read=50,
    )
    d2 = run(result, ctx(d1.chat_state, previous=previous))
    sup = {(s.identity.key, s.keep_revision) for s in d2.supersede}
    assert (gone.identity.key, None) in sup
    assert (edited.identity.key, str(edited.revision)) in sup
    assert sorted(indices(d2)) == [1, 2]
    assert (0, Skip.HISTORY) in d2.skipped


# --- real chats: simulated ST, tail_scan, the real store ----------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Watch:
    """A chat watched like the daemon does: tail_scan -> decide -> store."""

    store: Store
    path: Path
    context: ChatContext
    settings: DetectSettings
    clock: SimClock
    mode: str = "auto"
    last: Decision | None = None

    async def step(self, *, created: bool = False) -> Decision:
        record = await self.store.get_chat(self.context.chat)
        cursor = record.cursor if record else None
        result = tail_scan(self.path, cursor)
        context = ChatContext(
            user=self.context.user,
            chat=self.context.chat,
            is_group=self.context.is_group,
            owner=self.context.owner,
            group_id=self.context.group_id,
            state=ChatState.from_data(record.data if record else None),
            previous=cursor,
        )
        decision = decide(
            result,
            context,
            self.settings,
            self.mode,  # type: ignore[arg-type]
            self.clock.now,
            first_sight=record is None,
            created_while_running=created,
        )
        for identity, keep, reason in decision.supersede:
            reply = ReplyKey(context.user, context.chat, identity.name, identity.first_date, "")
            await self.store.supersede(replace(reply, revision=keep or ""), reason, keep=bool(keep))
        for spec in decision.new_jobs:
            await self.store.create_job(**spec.fields())
        await self.store.set_cursor(context.chat, result.cursor, data=decision.state)
        self.last = decision
        return decision

    async def jobs(self) -> list[Job]:
        return sorted(await self.store.list_jobs(limit=1000), key=lambda j: j.id)

    async def open_jobs(self) -> list[Job]:
        return [j for j in await self.jobs() if j.state is not JobState.SUPERSEDED]


VERSIONS = ["1.12", "1.14", "1.18"]


def make_watch(
    store: Store, tmp_path: Path, version: str, *, group: bool = False, **kw: Any
) -> tuple[Watch, Callable[..., STSim]]:
    clock = SimClock()
    root = tmp_path / "data"
    if group:
        path = root / "default-user" / "group chats" / "g.jsonl"
        ref = layout.chat_ref(root, "default-user", None, "g.jsonl")
    else:
        path = root / "default-user" / "chats" / "Alice" / "Alice - 1.jsonl"
        ref = layout.chat_ref(root, "default-user", "Alice", "Alice - 1.jsonl")
    context = ChatContext(
        user=ref.user, chat=ref.rel, is_group=ref.is_group, owner=ref.owner, group_id="g"
    )
    watch = Watch(store, path, context, DetectSettings(**kw), clock)

    def new_tab(**extra: Any) -> STSim:
        return STSim.create(path, version=version, group=group, clock=clock, **extra)

    return watch, new_tab


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_sim_reply_swipe_continue_edit(store: Store, tmp_path: Path, version: str) -> None:
    watch, new_tab = make_watch(store, tmp_path, version)
    tab = new_tab()
    await watch.step()  # first sight at startup: the greeting is history
    assert await watch.jobs() == []

    tab.send_user("Describe the glade.").save()
    d = await watch.step()
    assert d.new_jobs == []  # a save ending in a user message is no trigger

    tab.reply(text="The glade glows.").save()
    await watch.step()
    [job] = await watch.jobs()
    assert job.message_index == 2 and job.speaker == "Alice" and job.character == "Alice"

    # nothing new: a rescan makes nothing
    again = await watch.step()
    assert again.new_jobs == [] and again.supersede == []

    actions: list[Callable[[], STSim]] = [
        lambda: tab.swipe("The glade darkens."),
        lambda: tab.continue_(" Owls call."),
        lambda: tab.edit(2, "The glade, edited."),
    ]
    for action in actions:
        before = await watch.open_jobs()
        action().save()
        await watch.step()
        after = await watch.open_jobs()
        assert len(after) == 1, after
        assert after[0].id != before[0].id
        assert (await store.get_job(before[0].id)).state is JobState.SUPERSEDED
        assert after[0].reply.date == job.reply.date  # the same reply
        assert after[0].revision != before[0].revision

    # swipe back to the first text: that revision had a job already, so no second one
    count = len(await watch.jobs())
    tab.swipe_to(0).save()
    d = await watch.step()
    assert [j.reply.revision for j in d.new_jobs] == [job.revision]
    assert len(await watch.jobs()) == count  # the store refused the duplicate key
    assert await watch.open_jobs() == []


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_sim_regenerate_and_delete(store: Store, tmp_path: Path, version: str) -> None:
    watch, new_tab = make_watch(store, tmp_path, version)
    tab = new_tab()
    await watch.step()
    tab.send_user("Go on.").save()
    tab.reply(text="First try.").save()
    await watch.step()
    [first] = await watch.jobs()
    tab.regenerate("Second try.").save()
    await watch.step()
    jobs = await watch.jobs()
    assert [j.state for j in jobs] == [JobState.SUPERSEDED, JobState.QUEUED]
    assert jobs[1].reply.date != first.reply.date
    assert jobs[1].excerpt == "Second try."
    tab.delete(len(tab.messages) - 1).save()
    await watch.step()
    assert await watch.open_jobs() == []


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_sim_accepted_job_is_not_superseded(
    store: Store, tmp_path: Path, version: str
) -> None:
    watch, new_tab = make_watch(store, tmp_path, version)
    tab = new_tab()
    await watch.step()
    tab.send_user("Hi.").reply(text="Hello.").save()
    await watch.step()
    [job] = await watch.jobs()
    await store.transition(job.id, JobState.QUEUED, JobState.ACCEPTED, check=False)
    tab.swipe("Hello again.").save()
    await watch.step()
    assert (await store.get_job(job.id)).state is JobState.ACCEPTED
    assert len(await watch.jobs()) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("greetings", [False, True])
async def test_sim_greeting_of_new_chat(
    store: Store, tmp_path: Path, version: str, greetings: bool
) -> None:
    watch, new_tab = make_watch(store, tmp_path, version, greetings=greetings)
    new_tab(greeting="Welcome to the glade, {{user}}.")
    await watch.step(created=True)
    jobs = await watch.jobs()
    assert [(j.message_index, j.meta["detected"]) for j in jobs] == (
        [(0, "greeting")] if greetings else []
    )
    # the greeting is never illustrated again, and the next reply is
    await watch.step()
    assert len(await watch.jobs()) == len(jobs)


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_sim_hidden_reply_and_narrator(store: Store, tmp_path: Path, version: str) -> None:
    watch, new_tab = make_watch(store, tmp_path, version)
    tab = new_tab()
    await watch.step()
    tab.send_user("Hide this.").reply(text="Secret.").hide().save()
    tab.narrator("It starts to rain.").save()
    d = await watch.step()
    assert await watch.jobs() == []
    assert {why for _, why in d.skipped} >= {Skip.HIDDEN, Skip.NARRATOR, Skip.USER}


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_sim_group_chat_two_members(store: Store, tmp_path: Path, version: str) -> None:
    watch, new_tab = make_watch(store, tmp_path, version, group=True, greetings=True)
    tab = new_tab(greeting=None)
    tab.reply("Alice", "Hello from Alice.", generated=False)
    tab.reply("Bob", "Hello from Bob.", generated=False).save()
    await watch.step(created=True)
    greet = await watch.jobs()
    assert [(j.speaker, j.meta["card"], j.character) for j in greet] == [
        ("Alice", "Alice", "g"),
        ("Bob", "Bob", "g"),
    ]
    tab.send_user("Both of you?").save()
    tab.reply("Alice", "Yes.").reply("Bob", "Indeed.").save()
    await watch.step()
    jobs = await watch.jobs()
    assert [j.speaker for j in jobs[2:]] == ["Alice", "Bob"]
    assert all(j.is_group for j in jobs)
    # filter one member out by card stem
    watch.settings = DetectSettings(exclude_characters=["bob"])
    tab.send_user("Again.").reply("Alice", "A.").reply("Bob", "B.").save()
    await watch.step()
    assert [j.speaker for j in (await watch.jobs())[4:]] == ["Alice"]


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_sim_restart_catch_up(store: Store, tmp_path: Path, version: str) -> None:
    watch, new_tab = make_watch(store, tmp_path, version, catchup_max_age="2h")
    tab = new_tab()
    await watch.step()
    # "daemon down": two replies arrive, the first long ago
    tab.send_user("Old question.").reply(text="Old answer.").save()
    watch.clock.now += timedelta(hours=5)
    tab.send_user("New question.").reply(text="New answer.").save()
    d = await watch.step()
    assert [j.excerpt for j in await watch.jobs()] == ["New answer."]
    assert any(why is Skip.OLD for _, why in d.skipped)


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_sim_every_nth_and_manual(store: Store, tmp_path: Path, version: str) -> None:
    watch, new_tab = make_watch(store, tmp_path, version, every_nth=2)
    tab = new_tab()
    await watch.step()
    for i in range(4):
        tab.send_user(f"q{i}").save()
        await watch.step()
        tab.reply(text=f"a{i}").save()
        await watch.step()
    assert [j.excerpt for j in await watch.jobs()] == ["a1", "a3"]
    watch.mode = "manual"
    tab.send_user("q").reply(text="a4").reply(text="a5").save()
    await watch.step()
    assert len(await watch.jobs()) == 2


# --- the real ST fixtures -----------------------------------------------------------------------


def _chats(root: Path) -> list[layout.ChatRef]:
    return list(layout.iter_chats(root))


def test_fixture_first_sight_without_backfill_is_quiet(st_root: Path) -> None:
    for ref in _chats(st_root):
        result = tail_scan(ref.path, None)
        c = ChatContext.for_chat(st_root, ref, None)
        d = decide(result, c, DetectSettings(), "auto", NOW, first_sight=True)
        assert d.new_jobs == [], ref.rel
        assert len(d.skipped) == len(result.tail)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Group chats with a `/sendas name=Bob` line and a `/sys` line (tests/fixtures/README.md).
SLASH_LINES = {
    "st-1.12/default-user/group chats/2026-11-23@22h55m48s.jsonl": (10, 11),
    "st-1.14/default-user/group chats/2026-11-23@22h53m10s.jsonl": (9, 10),
}


@pytest.mark.parametrize("rel", sorted(SLASH_LINES))
def test_fixture_sendas_and_sys_lines_get_no_job(rel: str) -> None:
    chat = parse_chat((FIXTURES / rel).read_bytes())
    sendas, sys_line = (chat.messages[i] for i in SLASH_LINES[rel])
    assert (sendas.name, sendas.data["is_system"], sendas.is_slash_command) == ("Bob", "", True)
    assert eligible(sendas) is Skip.SLASH
    assert eligible(sys_line) is Skip.NARRATOR
    generated = chat.messages[SLASH_LINES[rel][0] - 2]  # Bob's generated group reply
    assert (generated.name, generated.is_generated, eligible(generated)) == ("Bob", True, None)
    d = run(scan(new=[generated, sendas, sys_line]))
    assert indices(d) == [generated.index]
    assert d.skipped == [(sendas.index, Skip.SLASH), (sys_line.index, Skip.NARRATOR)]


# The last eligible reply of each fixture chat, by (file name prefix) -> (speaker, mes start).
BACKFILL_EXPECTED = {
    "Alice - ": "Alice",
    "Bob - 2026-11-22": "Bob",
    "Bob - 2026-11-23": "Bob",
}


def test_fixture_backfill_picks_the_last_eligible_reply(st_root: Path) -> None:
    for ref in _chats(st_root):
        result = tail_scan(ref.path, None)
        c = ChatContext.for_chat(st_root, ref, None)
        d = decide(result, c, DetectSettings(backfill=True), "auto", NOW, first_sight=True)
        [spec] = d.new_jobs
        chat = parse_chat(ref.path.read_bytes())
        target = chat.messages[spec.message_index]
        assert eligible(target) is None, ref.rel
        after = chat.messages[spec.message_index + 1 :]
        assert all(eligible(m) is not None for m in after), ref.rel
        assert not target.is_user and not target.is_system and target.marker is None
        for prefix, speaker in BACKFILL_EXPECTED.items():
            if ref.chat_id.startswith(prefix):
                assert spec.speaker == speaker
        if ref.is_group:
            group = layout.group_for_chat(st_root, ref.user, ref.chat_id)
            assert group is not None and spec.character == group.id
            assert spec.meta["card"] in {"Alice", "Bob"}
        else:
            assert spec.character == ref.owner


def test_fixture_history_then_new_reply(st_root: Path, request: pytest.FixtureRequest) -> None:
    """After first sight, a reply appended by the simulated ST is the only job."""
    version = {"st-1.12": "1.12", "st-1.14": "1.14", "st-1.18": "1.18"}[
        request.node.callspec.params["st_root"]
    ]
    for ref in _chats(st_root):
        first = tail_scan(ref.path, None)
        c = ChatContext.for_chat(st_root, ref, None)
        d1 = decide(first, c, DetectSettings(), "auto", NOW, first_sight=True)
        tab = STSim.open(
            ref.path,
            version=version,
            group=ref.is_group,
            check_integrity=False,
            clock=SimClock(start=NOW),
        )
        speaker = "Bob" if ref.owner == "Bob" else "Alice"
        tab.send_user("One more?").reply(speaker, "One more, then.").save()
        second = tail_scan(ref.path, first.cursor)
        c2 = ChatContext.for_chat(st_root, ref, d1.state, previous=first.cursor)
        d2 = decide(second, c2, DetectSettings(), "auto", NOW, first_sight=False)
        assert [(j.speaker, j.excerpt) for j in d2.new_jobs] == [(speaker, "One more, then.")], (
            ref.rel
        )


def test_context_of_a_group_chat_without_a_readable_group(tmp_path: Path) -> None:
    """No group file, a broken one, or a user name the layout refuses: the chat id stands in."""
    folder = tmp_path / "default-user" / "group chats"
    folder.mkdir(parents=True)
    (folder / "g1.jsonl").write_bytes(b"")
    groups = tmp_path / "default-user" / "groups"
    groups.mkdir()
    ref = layout.chat_ref(tmp_path, "default-user", None, "g1.jsonl")
    assert ChatContext.for_chat(tmp_path, ref).character == "g1"
    (groups / "g1.json").write_text("{broken", encoding="utf-8")
    assert ChatContext.for_chat(tmp_path, ref).character == "g1"
    (groups / "g1.json").write_text('{"id": "grp", "chat_id": "g1"}', encoding="utf-8")
    found = ChatContext.for_chat(tmp_path, ref)
    assert (found.character, found.is_group, found.file_mtime is not None) == ("grp", True, True)
    hostile = layout.ChatRef("_storage", True, "", folder / "g1.jsonl", "x", "g1")
    assert ChatContext.for_chat(tmp_path, hostile).character == "g1"
