"""The daemon's runtime: detection latency, idle cost, startup scan.

1. Detection latency: from an ST-style save (temp file renamed over the chat) to the job in the
   store (a finished reply is read at once: docs/reaction.md), against a bare watchdog handler
   timestamping the same rename in the same run (the physical floor).
2. Idle: CPU used by the daemon process over 60 s (``--quick``: 10 s) with 2,000 chats watched,
   and its resident memory (target: at most 100 MB).
3. Startup scan: the stat scan of 10,000 chat files against a bare ``os.scandir`` walk of the
   same tree (target: at most 3x).

Run: ``python -m bench engine`` or ``python -m bench.bench_engine [--quick]``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import check, fmt_time, make_message, stop, workdir

SETTLE = 0.2
LATENCY_ROUNDS = 20
IDLE_CHATS = 2_000
IDLE_SECONDS = 60.0
QUICK_IDLE_SECONDS = 10.0
SCAN_CHATS = 10_000
RSS_LIMIT_MB = 100.0
LATENCY_TARGET = 0.25  # seconds above the floor
IDLE_CPU_TARGET = 2.0  # percent of one core
SCAN_RATIO_TARGET = 3.0
START_TIMEOUT = 120.0
STEP_TIMEOUT = 10.0


# --- building trees ---------------------------------------------------------------------


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def build_tree(root: Path, chats: int, messages: int = 6, per_folder: int = 20) -> list[Path]:
    """A data root with one user and ``chats`` small chats, ``per_folder`` per character."""
    rnd = random.Random(chats)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    user = root / "default-user"
    (user / "characters").mkdir(parents=True, exist_ok=True)
    (user / "group chats").mkdir(exist_ok=True)
    paths = []
    header = _line({"chat_metadata": {"integrity": "x"}, "user_name": "u", "character_name": "c"})
    for n in range(chats):
        folder = user / "chats" / f"Char{n // per_folder:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"Char - {n:05d}.jsonl"
        lines = [header] + [_line(make_message(i, rnd, start)) for i in range(messages)]
        path.write_bytes(b"\n".join(lines))
        paths.append(path)
    return paths


def st_save(path: Path, data: bytes) -> float:
    """Save like ST's write-file-atomic: ``<chat>.<digits>`` then rename; returns the rename
    time (``time.perf_counter()``)."""
    temp = path.with_name(f"{path.name}.{random.randrange(1, 2**32)}")
    with temp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    at = time.perf_counter()
    temp.rename(path)
    return at


def config_text(root: Path, state: Path, **detect: Any) -> str:
    settings = {"settle_seconds": SETTLE, "rescan_seconds": 60.0, **detect}
    lines = [
        f"data_root = {json.dumps(str(root))}",
        f"state_dir = {json.dumps(str(state))}",
        "[detect]",
        *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
        "[text]",
        'api_url = "http://127.0.0.1:9/v1"',  # nothing listens: jobs are made, not run
        "[image]",
        'api_url = "http://127.0.0.1:9/v1"',
        "[limits]",
        "retry_base_seconds = 3600",
        "[log]",
        'level = "error"',
        'format = "json"',
    ]
    return "\n".join(lines) + "\n"


# --- 1. detection latency ----------------------------------------------------------------


def bench_latency(rounds: int) -> bool:
    import anyio
    from watchdog.events import FileMovedEvent, FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    from daemon.config import load_config
    from daemon.engine.jobs.pipeline import open_job_deps
    from daemon.engine.process.service import Service, ServiceTimings
    from daemon.engine.store import Job
    from daemon.logs import configure_logging
    from daemon.tavern import layout

    print(f"detection latency ({rounds} ST saves of a finished reply)")
    with workdir() as tmp:
        root = tmp / "data"
        [chat] = build_tree(root, 1)
        cfg = tmp / "config.toml"
        cfg.write_text(config_text(root, tmp / "state"), encoding="utf-8")
        config = load_config(cfg, environ={})
        configure_logging(config.log)

        floor: dict[int, float] = {}
        lock = threading.Lock()

        class Bare(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if isinstance(event, FileMovedEvent) and os.fsdecode(event.dest_path) == str(chat):
                    with lock:
                        floor[len(floor)] = time.perf_counter()

        bare = Observer()
        bare.schedule(Bare(), str(chat.parent), recursive=False)
        bare.start()
        renames: list[float] = []
        created: list[float] = []

        async def run() -> None:
            async with open_job_deps(config, root=layout.resolve_data_root(root)) as deps:
                service = Service(
                    config, deps.root, deps, timings=ServiceTimings(heartbeat=5.0, poll=1.0)
                )
                original = service.store.create_job

                async def timed(**fields: Any) -> Job | None:
                    job = await original(**fields)
                    if job is not None:
                        created.append(time.perf_counter())
                    return job

                service.store.create_job = timed  # type: ignore[method-assign]
                async with anyio.create_task_group() as tg:
                    ready = anyio.Event()
                    tg.start_soon(lambda: service.run(ready=ready.set))
                    with anyio.fail_after(START_TIMEOUT):
                        await ready.wait()
                        while service.processed < 1:  # noqa: ASYNC110 - polling a counter
                            await anyio.sleep(0.01)
                    rnd = random.Random(1)
                    lines = chat.read_bytes().split(b"\n")
                    start = datetime.now(UTC)
                    for n in range(rounds):
                        user = make_message(2 * n + 1, rnd, start)
                        reply = make_message(2 * n + 2, rnd, start)
                        for obj in (user, reply):
                            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                            for key in ("send_date", "gen_started", "gen_finished"):
                                if key in obj:
                                    obj[key] = stamp
                            if "swipe_info" in obj:
                                obj["swipe_info"][0].update(
                                    send_date=stamp, gen_started=stamp, gen_finished=stamp
                                )
                        lines += [_line(user), _line(reply)]
                        renames.append(st_save(chat, b"\n".join(lines)))
                        with anyio.fail_after(STEP_TIMEOUT):
                            while len(created) <= n:  # noqa: ASYNC110 - polling a counter
                                await anyio.sleep(0.002)
                        await anyio.sleep(SETTLE)  # let the chat go quiet again
                    await service.shutdown("benchmark over")

        anyio.run(run)
        bare.stop()
        bare.join(5)

    daemon = [c - r for r, c in zip(renames, created, strict=True)]  # a finished reply: no wait
    floors = [floor[i] - r for i, r in enumerate(renames) if i in floor]
    med, worst = statistics.median(daemon), max(daemon)
    base = statistics.median(floors) if floors else float("nan")
    print(f"  bare watchdog handler (floor)        median {fmt_time(base)}")
    print(
        f"  daemon: rename -> job in the store     median {fmt_time(med)}, worst {fmt_time(worst)}"
    )
    ratio = (med / base) if base and base > 0 else float("inf")
    print(f"  ratio to the floor: {ratio:.1f}x (the daemon adds scan, detect and one SQLite write)")
    ok = med <= LATENCY_TARGET
    print(
        f"  {'latency above the floor':<52} {fmt_time(med - base):>10}   "
        f"target <={fmt_time(LATENCY_TARGET):<6} {'ok' if ok else 'MISSED'}"
    )
    return ok


# --- 2. idle CPU and memory ---------------------------------------------------------------


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _known_chats(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM cursors").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def bench_idle(seconds: float) -> bool:
    print(f"idle daemon with {IDLE_CHATS} chats watched, {seconds:.0f} s")
    with workdir() as tmp:
        root = tmp / "data"
        build_tree(root, IDLE_CHATS)
        state = tmp / "state"
        cfg = tmp / "config.toml"
        cfg.write_text(config_text(root, state), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
        env.pop("NOTIFY_SOCKET", None)
        log = tmp / "daemon.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while _known_chats(state / "state.db") < IDLE_CHATS:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(log.read_text()[-2000:])
                    print("  the daemon did not finish its startup scan")
                    return False
                time.sleep(0.2)
            time.sleep(2.0)  # let the first-sight reads and their writes finish
            cpu0, wall0 = _proc_cpu_seconds(proc.pid), time.monotonic()
            rss_peak = 0.0
            while time.monotonic() - wall0 < seconds:
                time.sleep(min(1.0, seconds))
                rss_peak = max(rss_peak, _proc_rss_mb(proc.pid))
            cpu = _proc_cpu_seconds(proc.pid) - cpu0
            wall = time.monotonic() - wall0
        finally:
            stop(proc)
    percent = 100 * cpu / wall
    cpu_ok = percent <= IDLE_CPU_TARGET
    rss_ok = rss_peak <= RSS_LIMIT_MB
    print(
        f"  {'idle CPU (% of one core)':<52} {percent:>10.2f}%   "
        f"target <={IDLE_CPU_TARGET:.0f}%    {'ok' if cpu_ok else 'MISSED'}"
    )
    print(
        f"  {'resident memory (peak, MB)':<52} {rss_peak:>10.1f}    "
        f"target <={RSS_LIMIT_MB:.0f}   {'ok' if rss_ok else 'MISSED'}"
    )
    return cpu_ok and rss_ok


# --- 3. startup scan ---------------------------------------------------------------------


def _bare_walk(root: str, with_stat: bool) -> int:
    """The baseline: a plain recursive ``os.scandir`` walk counting ``*.jsonl`` files (with
    ``with_stat``, also one ``DirEntry.stat()`` per file, the least a change check can do)."""
    found = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.endswith(".jsonl"):
                    if with_stat:
                        entry.stat(follow_symlinks=False)
                    found += 1
    return found


def bench_scan() -> bool:
    from daemon.engine.intake.watch import StatIndex

    print(f"startup scan of {SCAN_CHATS} chat files")
    with workdir() as tmp:
        root = tmp / "data"
        build_tree(root, SCAN_CHATS, messages=2, per_folder=50)
        names, stats, scans = [], [], []
        for _ in range(7):
            started = time.perf_counter()
            count = _bare_walk(str(root), with_stat=False)
            names.append(time.perf_counter() - started)
            started = time.perf_counter()
            _bare_walk(str(root), with_stat=True)
            stats.append(time.perf_counter() - started)
            started = time.perf_counter()
            changed = StatIndex(root).scan()
            scans.append(time.perf_counter() - started)
            assert count == len(changed) == SCAN_CHATS, (count, len(changed))
        bare, bare_stat, scan = min(names), min(stats), min(scans)
    print(f"  bare os.scandir walk (names only)        {fmt_time(bare)}")
    print(f"  bare os.scandir walk + DirEntry.stat()   {fmt_time(bare_stat)}")
    print(f"  daemon's startup stat scan               {fmt_time(scan)}")
    print(f"  (for information: {scan / bare:.1f}x a names-only walk; a change check needs a stat)")
    return check(
        "startup scan / bare scandir walk with stat",
        scan / bare_stat,
        "<=3x",
        scan / bare_stat <= 3,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``--quick``: a 10 s idle window instead of 60 s (also honoured from ``python -m bench``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    results = [
        bench_scan(),
        bench_latency(LATENCY_ROUNDS),
        bench_idle(QUICK_IDLE_SECONDS if quick else IDLE_SECONDS),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
