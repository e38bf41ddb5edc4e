"""Memory of one commit: peak RSS of a process that commits one image into a 20 MB chat and into
a 200 MB chat.

Each commit runs in a fresh child process (``python -m bench.bench_memory --child``), so the peak
(``ru_maxrss``) is the commit's own plus what every run pays (the interpreter, the imports, the
store). The 20 MB run is the baseline measured in the same run: inserting a line must cost memory
independent of the chat's size, so the target is the 200 MB peak within 16 MB of the 20 MB one.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path
from typing import Any

import anyio

from bench.common import chat_lines, workdir, write_chat

SIZES_MB = (20, 200)
TARGET_MB = 16.0
USER = "default-user"
_MESSAGES_PER_MB = 100_000 / 60  # chat_lines: 100,000 messages are about 60 MB


def _peak_mb() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's peak over
    the fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB


async def _commit(root: Path, state: Path, fields: dict[str, Any]) -> float:
    from daemon.config import Config
    from daemon.engine.commit.apply import Committer
    from daemon.engine.jobs.approval import Approval
    from daemon.engine.store import JobState, ReplyKey, Store
    from daemon.providers.decode import GeneratedImage

    fields = {**fields, "reply": ReplyKey(*fields["reply"])}  # a JSON list from the parent

    config = Config(data_root=root, state_dir=state)
    store = await Store.open(config.db_path)
    approval = Approval(config.state_dir)
    try:
        job = await store.create_job(
            **fields, prompt="a forest glade at dawn", state=JobState.PENDING
        )
        assert job is not None
        png = bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
        )
        image = GeneratedImage(png, "png", 1, 1, "image/png")
        await anyio.to_thread.run_sync(approval.write_pending, job, [image], {})
        names = tuple(p.name for p in approval.kept_images(job.id))
        moved = await store.transition(job.id, JobState.PENDING, JobState.ACCEPTED, images=names)
        assert moved is not None
        before = _peak_mb()
        done = await Committer(config, store, approval, root).commit_job(moved)
        assert done.state is JobState.COMMITTED, done.last_error
        return before
    finally:
        await store.close()


def _child(args: list[str]) -> int:
    root, state, fields = Path(args[0]), Path(args[1]), json.loads(args[2])
    before = anyio.run(_commit, root, state, fields)
    print(json.dumps({"before_mb": before, "peak_mb": _peak_mb()}))
    return 0


def _fields(root: Path, path: Path) -> dict[str, Any]:
    """The job's fields for the chat's last reply (read here, in the parent)."""
    from daemon.jobstate import ReplyKey
    from daemon.tavern import layout
    from daemon.tavern.chat import read_chat

    chat, _ = read_chat(path)
    reply = next(m for m in reversed(chat.messages) if not m.is_user and m.marker is None)
    ref = layout.classify(root, path).chat
    assert ref is not None
    return {
        "reply": list(astuple(ReplyKey.of(ref.user, ref.rel, reply))),
        "character": ref.owner,
        "is_group": False,
        "speaker": reply.name,
        "message_index": reply.index,
    }


def _run_child(root: Path, state: Path, fields: dict[str, Any]) -> dict[str, float]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_memory",
            "--child",
            str(root),
            str(state),
            json.dumps(fields),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "ST_IMAGEGEN_LOG__LEVEL": "warning"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the commit process failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    peaks: dict[int, dict[str, float]] = {}
    for size_mb in SIZES_MB:
        with workdir() as tmp:
            root = tmp / "data"
            path = root / USER / "chats" / "Alice" / "Alice - 2026-01-01@00h00m00s000ms.jsonl"
            path.parent.mkdir(parents=True)
            (root / USER / "characters").mkdir()
            size = write_chat(path, chat_lines(int(size_mb * _MESSAGES_PER_MB)))
            peaks[size_mb] = _run_child(root, tmp / "state", _fields(root, path))
            print(
                f"  {size / 1e6:6.1f} MB chat: peak RSS {peaks[size_mb]['peak_mb']:6.1f} MB "
                f"(before the commit {peaks[size_mb]['before_mb']:6.1f} MB)"
            )
    small, big = (peaks[s]["peak_mb"] for s in SIZES_MB)
    grew = big - small
    ok = grew <= TARGET_MB
    label = f"peak RSS, {SIZES_MB[1]} MB chat minus {SIZES_MB[0]} MB chat"
    print(
        f"  {label:<52} {grew:>8.1f} MB   target <= {TARGET_MB:.0f} MB {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        raise SystemExit(_child(sys.argv[2:]))
    raise SystemExit(main())
