"""Idle means idle: what the real daemon costs while nobody chats.

The real daemon process (``st-imagegen run``, **default** timings, web inbox on) watches a tree
of 10 chats and one of 2,000 chats, each with a store of 10,000 finished jobs; beside each, a
bare watchdog observer process watches the same tree (the floor: what watching costs at all).
All four run at once over the same window (default 300 s; ``--seconds N``). Measured from
``/proc``: CPU (utime + stime of every thread) and wake-ups (voluntary context switches summed
over the process's threads), per second.

Targets: the daemon at most 0.2 % of one core, at most 2 wake-ups per second, and at most 3x the
bare observer's CPU (the observer's CPU counts as at least one clock tick, so a floor of zero
does not make the ratio infinite). Also the periodic safety-net rescan: a rescan of 2,000
unchanged chats against a ``scandir`` + ``stat`` walk of the same tree (target: at most 3x).

Run: ``python -m bench idle`` or ``python -m bench.bench_idle [--seconds 300]``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.bench_engine import _bare_walk, _known_chats, build_tree
from bench.common import best_of, fmt_time, stop, workdir

TREES = (10, 2_000)
FINISHED_JOBS = 10_000
SECONDS = 300.0
WARMUP = 30.0  # after the startup scan: first-sight reads, the first heartbeat, thumbnails
CPU_TARGET = 0.2  # percent of one core
WAKEUPS_TARGET = 2.0  # per second
RATIO_TARGET = 3.0
RESCAN_TARGET = 3.0
START_TIMEOUT = 180.0

OBSERVER = """
import sys, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
observer = Observer()
observer.schedule(FileSystemEventHandler(), sys.argv[1], recursive=True)
observer.start()
print("watching", flush=True)
while True:
    time.sleep(3600)
"""


def _config(root: Path, state: Path) -> str:
    # Only what the machine needs: the paths, APIs that are never called, a free web port.
    return (
        "\n".join(
            [
                f"data_root = {json.dumps(str(root))}",
                f"state_dir = {json.dumps(str(state))}",
                "[text]",
                'api_url = "http://127.0.0.1:9/v1"',
                "[image]",
                'api_url = "http://127.0.0.1:9/v1"',
                "[web]",
                "port = 0",
                "[log]",
                'level = "warning"',
            ]
        )
        + "\n"
    )


def _finished_jobs(db: Path, count: int) -> None:
    """A store holding ``count`` finished jobs (made with the store's own schema), last changed
    a day ago: within ``limits.keep_history_days``, so the store holds all of them through the
    window. (Jobs older than that would be deleted by the retention pass a minute after start,
    a daily chore that would then land in the measured window.)"""
    import anyio

    from daemon.engine.store import Store
    from daemon.engine.store.model import stamp

    async def make() -> None:
        store = await Store.open(db)
        await store.close()

    anyio.run(make)
    conn = sqlite3.connect(db)
    try:
        states = ("committed", "rejected", "superseded", "failed")
        now = stamp(datetime.now(UTC) - timedelta(days=1))
        with conn:
            conn.executemany(
                "INSERT INTO jobs (id, key, user, chat, character, is_group, speaker, "
                "message_index, identity_name, identity_date, revision, regen, excerpt, source, "
                "state, attempts, images, meta, created_at, updated_at) "
                "VALUES (?, ?, 'default-user', ?, 'Char', 0, 'Char', ?, 'Char', ?, 'r', 0, "
                "'x', 'auto', ?, 1, '[]', '{}', ?, ?)",
                (
                    (
                        f"01JF{n:022d}",
                        f"key-{n}",
                        f"default-user/chats/Char0000/Char - {n % 10:05d}.jsonl",
                        n,
                        f"2026-01-01T00:00:{n % 60:02d}.{n:06d}Z",
                        states[n % len(states)],
                        now,
                        now,
                    )
                    for n in range(count)
                ),
            )
    finally:
        conn.close()


def _cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process, ended threads included (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _switches(pid: int) -> dict[int, int]:
    """Voluntary context switches (a thread going to sleep: one per wake-up) per thread."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[int(task.name)] = int(line.split()[1])
        except (OSError, ValueError):
            continue  # the thread ended while read
    return out


class _Meter:
    """A process's CPU ticks and wake-ups over a window, sampled every second so that the
    wake-ups of threads that end during the window are counted too."""

    def __init__(self, label: str, proc: subprocess.Popen[bytes]) -> None:
        self.label = label
        self.proc = proc
        self.ticks0 = 0
        self.ticks = 0
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def begin(self) -> None:
        self.ticks0 = _cpu_ticks(self.proc.pid)
        self.first = _switches(self.proc.pid)
        self.last = dict(self.first)

    def sample(self) -> None:
        self.last.update(_switches(self.proc.pid))

    def end(self) -> None:
        self.sample()
        self.ticks = _cpu_ticks(self.proc.pid) - self.ticks0

    @property
    def wakeups(self) -> int:
        return sum(n - self.first.get(tid, 0) for tid, n in self.last.items())


def _start_daemon(tmp: Path, chats: int) -> tuple[subprocess.Popen[bytes], Path]:
    root = tmp / f"data-{chats}"
    build_tree(root, chats)
    state = tmp / f"state-{chats}"
    state.mkdir()
    _finished_jobs(state / "state.db", FINISHED_JOBS)
    cfg = tmp / f"config-{chats}.toml"
    cfg.write_text(_config(root, state), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ST_IMAGEGEN_", "NOTIFY_"))}
    log = (tmp / f"daemon-{chats}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    return proc, state


def _start_observer(root: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", OBSERVER, str(root)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"watching"
    return proc


def bench_idle(seconds: float) -> bool:
    print(f"idle: the daemon (default timings) and a bare observer, {seconds:.0f} s")
    ok = True
    with workdir() as tmp:
        runs: list[_Meter] = []
        try:
            for chats in TREES:
                proc, state = _start_daemon(tmp, chats)
                runs.append(_Meter(f"daemon, {chats} chats", proc))
                deadline = time.monotonic() + START_TIMEOUT
                while _known_chats(state / "state.db") < chats:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print(f"  the daemon for {chats} chats did not finish its startup scan")
                        return False
                    time.sleep(0.5)
                observer = _start_observer(tmp / f"data-{chats}")
                runs.append(_Meter(f"bare observer, {chats} chats", observer))
            time.sleep(WARMUP)
            for run in runs:
                run.begin()
            wall0 = time.monotonic()
            while (left := seconds - (time.monotonic() - wall0)) > 0:
                time.sleep(min(1.0, left))
                for run in runs:
                    run.sample()
            wall = time.monotonic() - wall0
            for run in runs:
                run.end()
        finally:
            for run in runs:
                run.proc.terminate()  # all at once, then wait for each
            for run in runs:
                stop(run.proc)
                if run.proc.stdout is not None:
                    run.proc.stdout.close()
        tick = os.sysconf("SC_CLK_TCK")
        figures: dict[str, tuple[int, float, float]] = {}
        for run in runs:
            percent = 100 * run.ticks / tick / wall
            wakeups = run.wakeups / wall
            figures[run.label] = (run.ticks, percent, wakeups)
            print(
                f"  {run.label:<28} CPU {percent:6.3f} % of a core ({run.ticks} ticks), "
                f"{wakeups:6.2f} wake-ups/s"
            )
        for chats in TREES:
            ticks, percent, wakeups = figures[f"daemon, {chats} chats"]
            floor = max(figures[f"bare observer, {chats} chats"][0], 1)
            ok &= _at_most(f"{chats} chats: CPU, % of one core", percent, CPU_TARGET, "%")
            ok &= _at_most(f"{chats} chats: wake-ups per second", wakeups, WAKEUPS_TARGET, "/s")
            ok &= _at_most(
                f"{chats} chats: CPU / bare observer's", ticks / floor, RATIO_TARGET, "x"
            )
        ok &= _bench_rescan(tmp / f"data-{TREES[-1]}", TREES[-1])
    return ok


def _at_most(label: str, value: float, target: float, unit: str) -> bool:
    ok = value <= target
    verdict = "ok" if ok else "MISSED"
    print(f"  {label:<52} {value:>8.3f}{unit:<3} target <= {target}{unit} {verdict}")
    return ok


def _bench_rescan(root: Path, chats: int) -> bool:
    from daemon.engine.intake.watch import StatIndex

    index = StatIndex(root)
    index.scan()  # the first scan learns the tree; later ones find nothing changed
    rescan = best_of(index.scan, repeat=5)
    walk = best_of(lambda: _bare_walk(str(root), True), repeat=5)
    print(f"  rescan of {chats} unchanged chats: {fmt_time(rescan)}")
    print(f"  scandir + stat walk of the same tree: {fmt_time(walk)}")
    return _at_most("rescan / scandir + stat walk", rescan / walk, RESCAN_TARGET, "x")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    seconds = SECONDS
    if "--seconds" in args:
        seconds = float(args[args.index("--seconds") + 1])
    return 0 if bench_idle(seconds) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
