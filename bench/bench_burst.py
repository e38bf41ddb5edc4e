"""Scheduling under a burst: the chat on screen first, and nobody starved.

A running daemon (in this process, one job at a time: ``limits.concurrency = 1``) with a fake
API on loopback (an image takes ``IMAGE_TIME``) gets a burst: 10 chats, 4 replies each, saved
ST's way one after the other (40 jobs). The chat saved last is the one a person is looking at.
Measured twice in the same run: with the runner's order (daemon.engine.jobs.order) and with the
first-in-first-out order it replaced (the baseline).

Targets: the reply saved last is pending within 2 image-times of its save (FIFO: the whole
queue); the burst drains within 1.1x of FIFO's time; no chat's last reply waits more than 2x
the median chat's.

Run: ``python -m bench burst``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import workdir

CHATS = 10
REPLIES = 4
IMAGE_TIME = 0.25
START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 300.0


def _config(root: Path, state: Path, api_url: str) -> str:
    return "\n".join(
        [
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
            "concurrency = 1",
            "provider_attempts = 1",
            "[web]",
            "enabled = false",
            "[log]",
            'level = "error"',
            'format = "json"',
        ]
    )


def _fifo(jobs: Sequence[Any], **_: Any) -> list[Any]:
    return sorted(jobs, key=lambda j: j.id)


def burst(tmp: Path, api: Any, fifo: bool) -> dict[str, Any]:
    import anyio

    from daemon.config import load_config
    from daemon.engine.jobs.pipeline import open_job_deps
    from daemon.engine.process.service import Service, ServiceTimings
    from daemon.engine.store import JobState
    from daemon.logs import configure_logging
    from daemon.tavern import layout
    from tests.stsim import SimClock, STSim

    name = "fifo" if fifo else "order"
    root = tmp / f"data-{name}"
    (root / "default-user" / "chats").mkdir(parents=True)
    (root / "default-user" / "group chats").mkdir()
    cfg = tmp / f"config-{name}.toml"
    cfg.write_text(_config(root, tmp / f"state-{name}", api.base_url), encoding="utf-8")
    config = load_config(cfg, environ={})
    configure_logging(config.log)
    out: dict[str, Any] = {}

    async def run() -> None:
        async with open_job_deps(config, root=layout.resolve_data_root(root)) as deps:
            service = Service(config, deps.root, deps, timings=ServiceTimings(heartbeat=5.0))
            if fifo:
                service.runner.order = _fifo
            async with anyio.create_task_group() as tg:
                ready = anyio.Event()
                tg.start_soon(lambda: service.run(ready=ready.set))
                with anyio.fail_after(START_TIMEOUT):
                    await ready.wait()
                tabs = []
                for c in range(CHATS):
                    folder = root / "default-user" / "chats" / f"C{c}"
                    folder.mkdir()
                    clock = SimClock(start=datetime.now(UTC))
                    tabs.append(STSim.create(folder / f"C{c} - burst.jsonl", clock=clock))
                with anyio.fail_after(START_TIMEOUT):
                    while service.processed < CHATS:  # noqa: ASYNC110 - the greetings' reads
                        await anyio.sleep(0.02)
                api.image_delay = IMAGE_TIME
                saved: dict[str, float] = {}  # wall clock, as the store's stamps
                first = time.time()
                for r in range(REPLIES):
                    for c, tab in enumerate(tabs):
                        tab.send_user(f"Turn {r}.").save()
                        tab.reply(f"C{c}", f"Chat {c}, reply {r}.").save()
                        saved[f"C{c}/{r}"] = time.time()
                        await anyio.sleep(0.01)
                pending: dict[str, float] = {}
                with anyio.fail_after(DRAIN_TIMEOUT):
                    while len(pending) < CHATS * REPLIES:
                        await anyio.sleep(0.02)
                        for job in await service.store.list_jobs(limit=1000):
                            key = f"{job.character}/{job.excerpt.rsplit(' ', 1)[-1][:-1]}"
                            if job.state is JobState.PENDING and key not in pending:
                                pending[key] = job.updated_at.timestamp()  # when it got there
                last = f"C{CHATS - 1}/{REPLIES - 1}"
                out["last_wait"] = pending[last] - saved[last]
                out["drain"] = max(pending.values()) - first
                out["chat_waits"] = [
                    max(pending[f"C{c}/{r}"] - saved[f"C{c}/{r}"] for r in range(REPLIES))
                    for c in range(CHATS)
                ]
                api.image_delay = 0.0
                await service.shutdown("benchmark over")

    anyio.run(run)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from tests.engine.conftest import FakeAPI, serve_fake_api

    with workdir() as tmp, serve_fake_api(FakeAPI()) as api:
        base = burst(tmp, api, fifo=True)
        new = burst(tmp, api, fifo=False)
    # An image-time: what the slot spends per job (the fake API's render plus the daemon's own
    # steps), from the baseline's drain.
    per_job = base["drain"] / (CHATS * REPLIES)
    print(
        f"burst: {CHATS} chats x {REPLIES} replies, one image slot, {IMAGE_TIME:g} s render; "
        f"one image-time = {per_job:.2f} s"
    )
    for label, r in (("first in, first out (baseline)", base), ("the runner's order", new)):
        waits = r["chat_waits"]
        print(
            f"  {label:<32} reply saved last pending after {r['last_wait']:.2f} s "
            f"({r['last_wait'] / per_job:.1f} image-times); drained in {r['drain']:.2f} s; "
            f"slowest chat {max(waits):.2f} s, median {statistics.median(waits):.2f} s"
        )
    ok = True
    checks = [
        ("reply saved last: image-times", new["last_wait"] / per_job, 2.0),
        ("drain time / FIFO's", new["drain"] / base["drain"], 1.1),
        (
            "slowest chat / median chat",
            max(new["chat_waits"]) / statistics.median(new["chat_waits"]),
            2.0,
        ),
    ]
    for label, value, target in checks:
        met = value <= target
        ok &= met
        print(f"  {label:<52} {value:>8.2f}    target <= {target:g}   {'ok' if met else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
