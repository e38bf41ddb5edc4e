"""The job's state machine, defined once (daemon/jobstate.py): every move the code makes is in
its table, the store refuses any other, and the groups and words agree with it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from daemon import jobstate
from daemon.cli.commands import STATES as CLI_STATES
from daemon.engine.store import Store
from daemon.jobstate import (
    ACTIVE_STATES,
    FINAL_STATES,
    GROUPS,
    LABELS,
    OPEN_STATES,
    TRANSITIONS,
    IllegalMoveError,
    JobState,
    check_move,
    vocabulary,
)
from tests.engine.test_store import fields as job_fields

PACKAGE = Path(__file__).resolve().parents[2] / "daemon"

# Calls whose states are variables: the store's own check covers them at run time (each is
# exercised by the suite). Listed so a new one is looked at, not silently skipped.
DYNAMIC = {
    ("engine/commit/apply.py", "_give_up"),  # ACCEPTED -> SUPERSEDED | FAILED (exc.state)
    ("engine/jobs/pipeline.py", "_move"),  # the pipeline's guarded move helper
    ("engine/jobs/pipeline.py", "_offer_step"),  # IMAGING -> PENDING | ACCEPTED (approval)
    ("engine/store/jobs.py", "fail"),  # expected (default OPEN) -> FAILED
}


def _states(node: ast.expr) -> set[JobState] | None:
    """The states an argument names: ``JobState.X``, a group of jobstate, or a set of them."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "JobState":
            return {JobState[node.attr]}
        return None
    if isinstance(node, ast.Name):
        value = getattr(jobstate, node.id, None)
        return set(value) if isinstance(value, frozenset | tuple) else None
    if isinstance(node, ast.Set | ast.List | ast.Tuple):
        found: set[JobState] = set()
        for element in node.elts:
            part = _states(element)
            if part is None:
                return None
            found |= part
        return found
    return None


def _moves(node: ast.Call) -> tuple[ast.expr, ast.expr] | None:
    """``(expected, new)`` of a move: ``store.transition(job_id, expected, new)`` or the
    pipeline's ``_move(deps, job, expected, new)``."""
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "transition" and len(node.args) >= 3:
        return node.args[1], node.args[2]
    if isinstance(func, ast.Name) and func.id == "_move" and len(node.args) >= 4:
        return node.args[2], node.args[3]
    return None


def _calls() -> list[tuple[str, str, int, tuple[ast.expr, ast.expr]]]:
    """Every move in the daemon's code: (file, enclosing function, line, its two states)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.Call):
                    continue
                moves = _moves(node)
                if moves is not None:
                    rel = path.relative_to(PACKAGE).as_posix()
                    out.append((rel, func.name, node.lineno, moves))
    return out


def test_every_move_the_code_makes_is_in_the_table() -> None:
    calls = _calls()
    assert len(calls) >= 20  # the scan sees the moves (pipeline, commit, engine, store)
    unresolved = set()
    wrong = []
    for rel, name, line, (first, second) in calls:
        expected, new = _states(first), _states(second)
        if expected is None or new is None:
            unresolved.add((rel, name))
            continue
        for target in new:
            for source in expected:
                if target not in TRANSITIONS[source]:
                    wrong.append(f"{rel}:{line} ({name}): {source} -> {target}")
    assert wrong == []
    assert unresolved == DYNAMIC


@pytest.mark.anyio
async def test_the_store_refuses_a_move_the_table_does_not_allow(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "state.db") as store:
        job = await store.create_job(**job_fields())
        assert job is not None
        with pytest.raises(IllegalMoveError, match="from committed to queued"):
            await store.transition(job.id, JobState.COMMITTED, JobState.QUEUED)
        with pytest.raises(IllegalMoveError):
            await store.regenerate(job.id, expected=JobState.COMMITTED)
        assert (await store.get_job(job.id)).state is JobState.QUEUED  # nothing moved
        moved = await store.transition(job.id, JobState.QUEUED, JobState.PROMPTING)
        assert moved is not None and moved.state is JobState.PROMPTING


def test_the_table_and_the_groups_agree() -> None:
    assert set(TRANSITIONS) == set(JobState) == set(LABELS)
    assert TRANSITIONS[JobState.COMMITTED] == frozenset()  # committed is the end
    for state in FINAL_STATES:  # a final job never runs again by itself
        assert not TRANSITIONS[state] & {JobState.PROMPTING, JobState.IMAGING}
    for state in ACTIVE_STATES:  # a queued or running job can always be stopped
        assert {JobState.SUPERSEDED, JobState.FAILED, JobState.REJECTED} <= TRANSITIONS[state]
    assert set(JobState) - FINAL_STATES == OPEN_STATES
    for name, members in GROUPS.items():
        assert set(members) <= set(JobState), name
    check_move(ACTIVE_STATES, JobState.REJECTED)  # cancel
    with pytest.raises(IllegalMoveError):
        check_move({JobState.PENDING, JobState.COMMITTED}, JobState.ACCEPTED)


def test_the_vocabulary_is_one_json_object_and_the_cli_spells_the_same_states() -> None:
    data = vocabulary()
    assert data["states"] == [s.value for s in JobState]
    assert data["groups"]["final"] == ["committed", "rejected", "superseded", "failed"]
    assert data["groups"]["history"] == ["committed", "rejected", "failed", "superseded"]
    assert set(data["labels"]) == set(data["states"]) == set(data["transitions"])
    assert list(CLI_STATES) == data["states"]  # spelled out there to keep --help fast


def test_a_reply_key_is_the_jobs_idempotency_key() -> None:
    from daemon.jobstate import ReplyKey

    reply = job_fields()["reply"]
    assert isinstance(reply, ReplyKey)
    assert reply.key() == "|".join((reply.user, reply.chat, reply.name, reply.date, reply.revision))
    assert ReplyKey("u", "a|b", "c", "d", "r").key(2) == "u|a\\|b|c|d|r|regen:2"
