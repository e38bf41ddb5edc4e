"""No-inotify mode (``detect.watch = "poll"``): reaction and idle cost with 2,000 chats.

1. Reaction: a running daemon (in this process) polling a tree of 2,000 chats; in one chat a
   user message is saved, then 3 s later (a generation) the finished reply, ST's way; the time
   from the reply's rename to the prompt request at a fake API on loopback. Target: at most
   1.5 s. Baseline in the same run: the same with inotify (``detect.watch = "inotify"``).
2. Idle: the real daemon process (``st-imagegen run``, default timings) polling 2,000 chats,
   CPU over the window (default 60 s, ``--seconds N``) as a share of one core. Target: at most
   0.5 %. Baselines in the same window: the same daemon with inotify, and the floor: one
   ``scandir`` + ``stat`` walk of the tree per full-walk interval.

Run: ``python -m bench poll`` or ``python -m bench.bench_poll [--seconds 60]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.bench_engine import _bare_walk, _known_chats, build_tree
from bench.bench_idle import _finished_jobs, _Meter
from bench.common import best_of, fmt_time, stop, workdir

CHATS = 2_000
ROUNDS = 8
GENERATION = 3.0  # seconds between the user's save and the reply's
REACTION_TARGET = 1.5
CPU_TARGET = 0.5  # percent of one core
SECONDS = 60.0
WARMUP = 20.0
START_TIMEOUT = 180.0
STEP_TIMEOUT = 15.0


def _config(root: Path, state: Path, api_url: str, watch: str, web: bool = True) -> str:
    lines = [
        f"data_root = {json.dumps(str(root))}",
        f"state_dir = {json.dumps(str(state))}",
        "[detect]",
        f"watch = {json.dumps(watch)}",
        "[text]",
        f"api_url = {json.dumps(api_url)}",
        "include_character_card = false",
        "[image]",
        f"api_url = {json.dumps(api_url)}",
        'response_format = "b64_json"',
        'profile = "generic"',
        "[web]",
        "port = 0" if web else "enabled = false",
        "[log]",
        'level = "warning"',
        'format = "json"',
    ]
    return "\n".join(lines) + "\n"


def bench_reaction(tmp: Path) -> bool:
    import anyio

    from daemon.config import load_config
    from daemon.engine.jobs.pipeline import open_job_deps
    from daemon.engine.process.service import Service, ServiceTimings
    from daemon.logs import configure_logging
    from daemon.tavern import layout
    from tests.engine.conftest import FakeAPI, serve_fake_api
    from tests.stsim import SimClock, STSim

    root = tmp / "data-reaction"
    build_tree(root, CHATS)
    results: dict[str, list[float]] = {}
    with serve_fake_api(FakeAPI(image_delay=0.05)) as api:
        for watch in ("inotify", "poll"):
            cfg = tmp / f"config-{watch}.toml"
            state = tmp / f"state-reaction-{watch}"
            cfg.write_text(_config(root, state, api.base_url, watch, web=False), "utf-8")
            config = load_config(cfg, environ={})
            configure_logging(config.log)

            async def run(config: Any = config, watch: str = watch) -> None:
                from datetime import UTC, datetime

                async with open_job_deps(config, root=layout.resolve_data_root(root)) as deps:
                    service = Service(
                        config, deps.root, deps, timings=ServiceTimings(heartbeat=5.0, poll=1.0)
                    )
                    async with anyio.create_task_group() as tg:
                        ready = anyio.Event()
                        tg.start_soon(lambda: service.run(ready=ready.set))
                        with anyio.fail_after(START_TIMEOUT):
                            await ready.wait()
                            while service.processed < CHATS:  # noqa: ASYNC110 - first sight reads
                                await anyio.sleep(0.05)
                        assert service.watch_choice is not None
                        assert service.watch_choice.mode == watch
                        path = root / "default-user" / "chats" / "Char0000" / f"Live {watch}.jsonl"
                        tab = STSim.create(path, clock=SimClock(start=datetime.now(UTC)))
                        times: list[float] = []
                        await anyio.sleep(GENERATION)
                        for n in range(ROUNDS):
                            tab.send_user(f"Round {n}.").save()
                            await anyio.sleep(GENERATION)
                            before = api.count("chat/completions")
                            tab.reply("Char", f"The glade, round {n}.").save()
                            saved = time.monotonic()
                            with anyio.fail_after(STEP_TIMEOUT):
                                while api.count("chat/completions") <= before:  # noqa: ASYNC110
                                    await anyio.sleep(0.005)
                            with api.lock:
                                asked = [
                                    r.at for r in api.requests if r.path.endswith("completions")
                                ]
                            times.append(asked[-1] - saved)
                        results[watch] = times
                        await service.shutdown("benchmark over")

            anyio.run(run)
    base = statistics.median(results["inotify"])
    med, worst = statistics.median(results["poll"]), max(results["poll"])
    print(f"reaction, {CHATS} chats ({ROUNDS} replies saved {GENERATION:g} s after the user's)")
    print(f"  inotify (baseline)        median {fmt_time(base)}")
    print(f"  poll                      median {fmt_time(med)}, worst {fmt_time(worst)}")
    ok = med <= REACTION_TARGET
    print(
        f"  {'poll: save -> prompt request':<52} {fmt_time(med):>10}   "
        f"target <= {REACTION_TARGET:g} s   {'ok' if ok else 'MISSED'} "
        f"({med / base:.0f}x inotify)"
    )
    return ok


def _start(tmp: Path, root: Path, watch: str) -> tuple[subprocess.Popen[bytes], Path]:
    state = tmp / f"state-idle-{watch}"
    state.mkdir()
    _finished_jobs(state / "state.db", 1_000)
    cfg = tmp / f"config-idle-{watch}.toml"
    cfg.write_text(_config(root, state, "http://127.0.0.1:9/v1", watch), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ST_IMAGEGEN_", "NOTIFY_"))}
    log = (tmp / f"daemon-{watch}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    return proc, state


def bench_idle(tmp: Path, seconds: float) -> bool:
    from daemon.engine.intake.poll import FULL_INTERVAL

    root = tmp / "data-idle"
    build_tree(root, CHATS)
    runs: list[_Meter] = []
    try:
        for watch in ("inotify", "poll"):
            proc, state = _start(tmp, root, watch)
            runs.append(_Meter(watch, proc))
            deadline = time.monotonic() + START_TIMEOUT
            while _known_chats(state / "state.db") < CHATS:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(f"  the {watch} daemon did not finish its startup scan")
                    return False
                time.sleep(0.5)
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
            run.proc.terminate()
        for run in runs:
            stop(run.proc)
    tick = os.sysconf("SC_CLK_TCK")
    percent = {run.label: 100 * run.ticks / tick / wall for run in runs}
    walk = best_of(lambda: _bare_walk(str(root), True), repeat=5)
    floor = 100 * walk / FULL_INTERVAL
    print(f"idle, {CHATS} chats, {seconds:.0f} s")
    print(f"  daemon with inotify (baseline)          {percent['inotify']:.3f} % of a core")
    print(
        f"  floor: a scandir + stat walk ({fmt_time(walk)}) every {FULL_INTERVAL:g} s  "
        f"{floor:.3f} %"
    )
    print(f"  daemon polling                          {percent['poll']:.3f} % of a core")
    ok = percent["poll"] <= CPU_TARGET
    print(
        f"  {'poll: idle CPU, % of one core':<52} {percent['poll']:>8.3f}%   "
        f"target <= {CPU_TARGET}%  {'ok' if ok else 'MISSED'} "
        f"({percent['poll'] / max(floor, 1e-9):.1f}x the floor)"
    )
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    seconds = SECONDS
    if "--seconds" in args:
        seconds = float(args[args.index("--seconds") + 1])
    with workdir() as tmp:
        ok = bench_reaction(tmp)
        ok &= bench_idle(tmp, seconds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
