"""Reaction: from the save that completes a reply to the prompt request, with the default config.

1. Reaction: ST-style saves of a finished reply (temp file renamed over the chat) into a running
   daemon (in this process) with default detection settings; the time from the rename to the
   prompt request arriving at a fake chat-completions API on loopback. Target: at most the seed
   extension's 500 ms (ratio <= 1.0). A bare watchdog handler timestamping the same rename is
   the floor measured in the same run.
2. Supersede rate in a realistic save trace (a save made mid-stream, continue, a swipe that
   generates, two edits, swipes back and forth), once with the reaction rule (docs/reaction.md)
   and once with the fixed 2 s quiet time it replaced (same daemon, the read delayed by
   ``settle_seconds``): superseded jobs per job and image requests. Target: no higher than the
   fixed quiet time.

Run: ``python -m bench reaction``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_engine import build_tree
from bench.common import check, fmt_time, workdir

SEED_REACTION = 0.5  # the seed extension reacts 500 ms after the save
ROUNDS = 15
START_TIMEOUT = 120.0
STEP_TIMEOUT = 15.0
GAP = 0.3  # seconds between rounds (a person does not reply faster)


def _config(root: Path, state: Path, api_url: str) -> str:
    lines = [
        f"data_root = {json.dumps(str(root))}",
        f"state_dir = {json.dumps(str(state))}",
        "[text]",
        f"api_url = {json.dumps(api_url)}",
        "include_character_card = false",
        "[image]",
        f"api_url = {json.dumps(api_url)}",
        'response_format = "b64_json"',
        'profile = "generic"',
        "[limits]",
        "provider_attempts = 1",
        "[web]",
        "enabled = false",
        "[log]",
        'level = "error"',
        'format = "json"',
    ]
    return "\n".join(lines) + "\n"


def _now_clock() -> Callable[[], datetime]:
    from tests.stsim import SimClock

    return SimClock(start=datetime.now(UTC))


def main(argv: Sequence[str] | None = None) -> int:
    import anyio
    from watchdog.events import FileMovedEvent, FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    from daemon.config import load_config
    from daemon.engine.jobs.pipeline import open_job_deps
    from daemon.engine.process.service import Service, ServiceTimings
    from daemon.engine.store import JobState
    from daemon.logs import configure_logging
    from daemon.tavern import layout
    from tests.engine.conftest import FakeAPI, serve_fake_api
    from tests.stsim import STSim

    results: dict[str, Any] = {}
    with workdir() as tmp, serve_fake_api(FakeAPI(text_delay=0.05, image_delay=0.2)) as api:
        root = tmp / "data"
        build_tree(root, 20)
        chats = root / "default-user" / "chats" / "Alice"
        chats.mkdir(parents=True)

        floor: dict[str, list[float]] = {}
        lock = threading.Lock()

        class Bare(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if isinstance(event, FileMovedEvent):
                    with lock:
                        floor.setdefault(os.fsdecode(event.dest_path), []).append(time.monotonic())

        bare = Observer()
        bare.schedule(Bare(), str(chats), recursive=False)
        bare.start()

        async def run_mode(fixed_quiet: bool) -> None:
            state = tmp / ("state-fixed" if fixed_quiet else "state")
            cfg = tmp / f"config-{fixed_quiet}.toml"
            cfg.write_text(_config(root, state, api.base_url), encoding="utf-8")
            config = load_config(cfg, environ={})
            configure_logging(config.log)
            async with open_job_deps(config, root=layout.resolve_data_root(root)) as deps:
                service = Service(
                    config, deps.root, deps, timings=ServiceTimings(heartbeat=5.0, poll=1.0)
                )
                if fixed_quiet:  # the rule this replaced: every read waits for 2 s of quiet
                    service.settler.delay = config.detect.settle_seconds
                async with anyio.create_task_group() as tg:
                    ready = anyio.Event()
                    tg.start_soon(lambda: service.run(ready=ready.set))
                    with anyio.fail_after(START_TIMEOUT):
                        await ready.wait()

                    async def quiet(path: Path) -> None:
                        """Until the chat is read and no job of it is queued or running."""
                        rel = path.relative_to(root).as_posix()
                        with anyio.fail_after(STEP_TIMEOUT):
                            while True:
                                await anyio.sleep(0.05)
                                if len(service.settler) or service.runner.running:
                                    continue
                                jobs = [
                                    j
                                    for j in await service.store.list_jobs(limit=1000)
                                    if j.chat == rel
                                ]
                                if (
                                    all(j.state not in _ACTIVE for j in jobs)
                                    and await service.store.get_chat(rel) is not None
                                ):
                                    return

                    if not fixed_quiet:
                        path = chats / "Alice - reaction.jsonl"
                        tab = STSim.create(path, clock=_now_clock())
                        await quiet(path)
                        sent: list[float] = []
                        for n in range(ROUNDS):
                            tab.send_user(f"Round {n}: describe the glade.").save()
                            await quiet(path)
                            await anyio.sleep(GAP)
                            before = api.count("chat/completions")
                            tab.reply("Alice", f"The glade glows, round {n}.")
                            tab.save()
                            sent.append(time.monotonic())
                            with anyio.fail_after(STEP_TIMEOUT):
                                while api.count("chat/completions") <= before:  # noqa: ASYNC110
                                    await anyio.sleep(0.002)
                            await quiet(path)
                        with api.lock:
                            asked = [r.at for r in api.requests if r.path.endswith("completions")]
                        results["reaction"] = [a - s for s, a in zip(sent, asked, strict=True)]
                        renames = floor.get(str(path), [])
                        # the bare handler saw every save; the reply saves are every other one
                        # after the greeting's
                        replies = renames[2::2]
                        results["floor"] = [b - s for s, b in zip(sent, replies, strict=False)]

                    jobs_before = len(await service.store.list_jobs(limit=10_000))
                    images_before = api.count("images/generations")
                    path = chats / f"Alice - trace-{int(fixed_quiet)}.jsonl"
                    await _trace(path, quiet, _now_clock())
                    every = await service.store.list_jobs(limit=10_000)  # newest first
                    jobs = every[: len(every) - jobs_before]
                    superseded = sum(1 for j in jobs if j.state is JobState.SUPERSEDED)
                    results["fixed" if fixed_quiet else "rule"] = (
                        len(jobs),
                        superseded,
                        api.count("images/generations") - images_before,
                    )
                    await service.shutdown("benchmark over")

        _ACTIVE = {JobState.QUEUED, JobState.PROMPTING, JobState.IMAGING}
        anyio.run(run_mode, False)
        anyio.run(run_mode, True)
        bare.stop()
        bare.join(5)

    reaction = results["reaction"]
    floors = results["floor"]
    med, worst = statistics.median(reaction), max(reaction)
    base = statistics.median(floors) if floors else float("nan")
    print(f"reaction ({ROUNDS} finished replies saved ST's way, default config)")
    print(f"  bare watchdog handler seeing the rename (floor)  median {fmt_time(base)}")
    print(
        f"  save -> prompt request at the API                 median {fmt_time(med)}, "
        f"worst {fmt_time(worst)}"
    )
    ok = med <= SEED_REACTION
    print(
        f"  {'reaction / the seed extension 500 ms':<52} {med / SEED_REACTION:>10.2f}x   "
        f"target <= 1.0x   {'ok' if ok else 'MISSED'}"
    )
    jobs, sup, images = results["rule"]
    fjobs, fsup, fimages = results["fixed"]
    rate = sup / jobs if jobs else 0.0
    frate = fsup / fjobs if fjobs else 0.0
    print("save trace (mid-stream save, continue, swipes, two edits, swipes back and forth)")
    print(f"  fixed 2 s quiet time (baseline): {fjobs} jobs, {fsup} superseded, {fimages} images")
    print(f"  reaction rule:                   {jobs} jobs, {sup} superseded, {images} images")
    ok &= check(
        "supersede rate, rule / fixed quiet time",
        (rate / frate) if frate else (0.0 if rate == 0 else float("inf")),
        "<= 1.0x",
        rate <= frate + 1e-9,
    )
    return 0 if ok else 1


async def _trace(path: Path, quiet: Callable[[Path], Any], clock: Callable[[], datetime]) -> None:
    """One chat through the saves a person makes in a few turns (docs/reaction.md)."""
    import anyio

    from tests.stsim import STSim

    tab = STSim.create(path, clock=clock)
    await quiet(path)

    async def turn(text: str) -> None:
        tab.send_user("And then?").save()
        await quiet(path)
        tab.reply("Alice", text).save()

    # 1. a plain reply
    await turn("The glade glows at dawn.")
    await quiet(path)
    # 2. a save made mid-stream (ST's placeholder), the finished reply 0.8 s later
    tab.send_user("And then?").save()
    await quiet(path)
    tab.reply("Alice", "...").save()
    await anyio.sleep(0.8)
    tab.messages[-1]["mes"] = "A fox crosses the path."
    tab.messages[-1]["gen_finished"] = _iso(clock())
    tab.save()
    await quiet(path)
    # 3. continue, 2.5 s after the reply
    await turn("The river runs")
    await anyio.sleep(2.5)
    tab.continue_(" fast and cold.").save()
    await quiet(path)
    # 4. a swipe that generates, 2.5 s after the reply
    await turn("Rain falls on the roof.")
    await anyio.sleep(2.5)
    tab.swipe("Snow falls on the roof.").save()
    await quiet(path)
    # 5. two edits, 0.8 s apart (ST's edit saves)
    await turn("The tower is tall.")
    await anyio.sleep(2.5)
    index = len(tab.messages) - 1
    tab.edit(index, "The tower is very tall.").save()
    await anyio.sleep(0.8)
    tab.edit(index, "The tower is very tall and dark.").save()
    await quiet(path)
    # 6. a swipe that generates, then back and forth between the two texts 0.8 s apart
    await turn("A ship in the harbour.")
    await anyio.sleep(2.5)
    tab.swipe("A ship leaving the harbour.").save()
    await quiet(path)
    tab.swipe_to(0).save()
    await anyio.sleep(0.8)
    tab.swipe_to(1).save()
    await quiet(path)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
