"""SIGKILL at random moments during 200 commits, then restart until done.

A worker process (this module run as ``python -m tests.engine.test_commit_kill``) commits every
accepted job with a real store, approval folder and data root; the test kills it with SIGKILL
at random moments, starts it again, and finally checks every chat: it parses, keeps all its
original bytes, and holds each accepted image exactly once, with its files present.

The worker takes one job per ``go`` line on its stdin (all of them once stdin is closed), so
how far a run gets before its kill does not depend on the machine's speed: the test lets it
finish a random number of jobs, allows one more and kills it a random moment into that one
(a moment drawn from the jobs' measured duration, so it usually lands mid-commit).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import anyio
import pytest

from daemon.engine.store import JobState
from daemon.tavern.chat import parse_chat
from daemon.tavern.reaper import REAPER
from tests.engine.test_commit_support import (
    USER,
    Harness,
    assert_committed_after_replies,
    chat_path,
    referenced_images,
)
from tests.stsim import SimClock, STSim

CHATS = 10
REPLIES_PER_CHAT = 20  # 200 commits
MAX_KILLS = 10
WORKER_DEADLINE = 90.0
REAPER_SETTLE_S = 60.0
"""How long the check waits for the reaper to delete the finished pending folders."""
"""Seconds a worker may take to finish everything (the last one is never killed)."""

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _spawn(config_path: Path, *, gated: bool = True) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.engine.test_commit_kill", str(config_path)],
        cwd=REPO,
        stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _allow(worker: subprocess.Popen[bytes], jobs: int) -> None:
    assert worker.stdin is not None
    try:
        worker.stdin.write(b"go\n" * jobs)
        worker.stdin.flush()
    except BrokenPipeError:
        pass  # it finished everything and exited


async def _run_and_kill(config_path: Path, rng: random.Random) -> int:
    """Start workers and SIGKILL each one a random moment into a job; returns the kills."""
    kills = 0
    while kills < MAX_KILLS:
        worker = await anyio.to_thread.run_sync(_spawn, config_path)
        try:
            assert worker.stdout is not None
            target = rng.randrange(1, 16)  # jobs it finishes before the one it is killed in
            await anyio.to_thread.run_sync(_allow, worker, target)
            steps: list[float] = []
            while len(steps) < target:
                line = await anyio.to_thread.run_sync(worker.stdout.readline)
                if not line:
                    break  # no job left: it finished everything
                if line.startswith(b"step "):
                    steps.append(time.monotonic())
            if len(steps) < target:
                out, _ = await anyio.to_thread.run_sync(worker.communicate, None, WORKER_DEADLINE)
                assert worker.returncode == 0, out.decode(errors="replace")[-3000:]
                return kills
            # A random moment into the next job, scaled by how long this machine takes per job.
            per_job = (steps[-1] - steps[0]) / (len(steps) - 1) if len(steps) > 1 else 0.02
            await anyio.to_thread.run_sync(_allow, worker, 1)
            await anyio.sleep(rng.uniform(0.0, per_job))
            worker.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(worker.communicate, None, 10)
            if worker.returncode == 0:
                return kills  # its last job was the one allowed: it ended before the signal
            assert worker.returncode == -signal.SIGKILL
            kills += 1
        finally:
            if worker.poll() is None:  # a failed check above: leave no worker behind
                worker.kill()
                await anyio.to_thread.run_sync(worker.communicate, None, 10)
    return kills


@pytest.mark.slow
@pytest.mark.anyio
async def test_sigkill_during_commits_then_restart(harness: Harness, tmp_path: Path) -> None:
    h = harness
    rng = random.Random(5)
    originals: dict[Path, bytes] = {}
    job_ids: dict[Path, list[str]] = {}
    for c in range(CHATS):
        path = chat_path(h.root, name=f"Alice - {c:02d}")
        tab = STSim.create(path, rng=random.Random(c), clock=SimClock())
        for r in range(REPLIES_PER_CHAT):
            tab.send_user(f"question {c}/{r}")
            tab.reply("Alice", f"answer {c}/{r}")
        tab.save()
        originals[path] = path.read_bytes()
        # Jobs for every reply, all accepted before any commit (indices stay true).
        job_ids[path] = [
            (await h.accepted(path, 2 + 2 * r, seed=c * 100 + r)).id
            for r in range(REPLIES_PER_CHAT)
        ]
    config_path = tmp_path / "config.toml"

    kills = await _run_and_kill(config_path, rng)
    assert kills >= 3  # really interrupted, several times, each time in the middle of the work
    final = await anyio.to_thread.run_sync(partial(_spawn, config_path, gated=False))
    out, _ = await anyio.to_thread.run_sync(final.communicate, None, WORKER_DEADLINE)
    assert final.returncode == 0, out.decode(errors="replace")[-3000:]

    for path, original in originals.items():
        data = path.read_bytes()
        chat = parse_chat(data)
        assert not chat.bad_lines
        # All original lines, byte for byte, in order: remove ours and compare.
        lines = data.split(b"\n")
        ours = {chat.line_of(m.index) for m in chat.messages if m.marker is not None}
        assert b"\n".join(ln for i, ln in enumerate(lines) if i not in ours) == original
        # Each accepted image exactly once, right after its reply.
        await assert_committed_after_replies(h, path, chat, job_ids[path])
        # No temp file of ours left next to the chat.
        assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []
    folder = h.root / USER / "user" / "images" / "Alice"
    referenced = referenced_images(originals)
    assert sorted(p.name for p in folder.iterdir()) == referenced  # no orphans, no temps
    # Every pending folder finished: renamed away at once, deleted by the reaper meanwhile.
    assert await anyio.to_thread.run_sync(REAPER.settle, REAPER_SETTLE_S)
    assert list(h.config.pending_dir.iterdir()) == []


# --- the worker --------------------------------------------------------------------------------


async def _work(config_path: Path) -> int:
    from daemon.config import load_config
    from daemon.engine.commit.apply import Committer
    from daemon.engine.jobs.approval import Approval
    from daemon.engine.store import Store
    from daemon.tavern import layout
    from daemon.tavern.write import cleanup_stale_temps

    config = load_config(config_path, environ={})
    assert config.data_root is not None
    root = config.data_root
    # What the service does at start: our stale temp files go first.
    for folder in {ref.path.parent for ref in layout.iter_chats(root)}:
        cleanup_stale_temps(folder)
    approval = Approval(config.state_dir)
    approval.cleanup_temps()  # as the service does at start (a kill inside finish())
    store = await Store.open(config.db_path)
    try:
        committer = Committer(config, store, approval, root)
        jobs = await store.jobs_in([JobState.ACCEPTED], limit=10_000)
        random.Random(os.getpid()).shuffle(jobs)  # chats in any order, like the runner
        # Committed ones too: a run killed after marking a job may have left its pending folder.
        jobs += await store.jobs_in([JobState.COMMITTED], limit=10_000)
        started = time.monotonic()
        for job in jobs:
            await anyio.to_thread.run_sync(sys.stdin.readline)  # "go" (or closed: go on)
            done = await committer.commit_job(job)
            if done.state is not JobState.COMMITTED:
                print(f"job {job.id} ended {done.state}: {done.last_error}", flush=True)
                return 1
            print(f"step {job.id}", flush=True)
        print(f"worker done: {len(jobs)} jobs in {time.monotonic() - started:.2f} s", flush=True)
        return 0
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(anyio.run(_work, Path(sys.argv[1])))
