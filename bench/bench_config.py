"""Configuration applied live.

1. Reload cost: a typical config file (the ``config example`` file with a few keys set and three
   styles) read, validated and swapped in, the providers rebuilt (``LiveConfig.read`` + ``take``
   with the daemon's own applier), against reading and validating the same file alone
   (``load_config``). Target: under 100 ms per reload (the issue's), and reported as a ratio to
   the bare read.
2. Settings save -> next job: a running daemon (in this process) with a fake OpenAI-compatible API
   on loopback; the settings writer changes ``image.model`` (what the settings page does), then a
   reply is saved the way ST saves it: the time from the save call returning to the daemon running
   the new config, and whether the next job's image request carries the new model. Target: the
   next job uses it, every round.

Run: ``python -m bench config``.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import best_of, fmt_time, workdir

RELOAD_TARGET = 0.100
ROUNDS = 8
START_TIMEOUT = 60.0
STEP_TIMEOUT = 20.0


def _typical(root: Path, state: Path, api_url: str) -> str:
    """``config example`` with what a user sets: the data root, both APIs, quieter logs, three
    styles (the file keeps all of the example's comments)."""
    import re

    from daemon.configure.example import config_example

    text = config_example()
    text = re.sub(r"^# data_root = .*$", f"data_root = {json.dumps(str(root))}", text, flags=re.M)
    text = re.sub(r"^# state_dir = .*$", f"state_dir = {json.dumps(str(state))}", text, flags=re.M)
    for old, new in (
        ('api_url = ""', f"api_url = {json.dumps(api_url)}"),
        ('response_format = "url"', 'response_format = "b64_json"'),
        ('profile = "auto"', 'profile = "generic"'),
        ('level = "info"', 'level = "error"'),
        ('format = "auto"', 'format = "json"'),
    ):
        text = text.replace(old, new)
    text = re.sub(r"^enabled = true$", "enabled = false", text, flags=re.M)  # no web inbox
    for name, words in (("noir", "film noir"), ("ink", "ink wash"), ("neon", "neon city")):
        text += f'\n[styles.{name}]\nprefix = "{words}, high contrast"\nnegative = "colour"\n'
    return text


def _reload_cost(tmp: Path, api_url: str) -> tuple[float, float]:
    import anyio

    from daemon.config import ConfigSource, load_config
    from daemon.configure.live import LiveConfig
    from daemon.engine.jobs.pipeline import build_providers
    from daemon.providers.http import make_client

    path = tmp / "typical.toml"
    path.write_text(_typical(tmp / "data", tmp / "state", api_url), encoding="utf-8")
    source = ConfigSource.find(path, environ={})
    live = LiveConfig(source, source.load())

    async def rebuild() -> float:
        async with make_client() as client:
            live.on_apply(lambda new, old: build_providers(new, client) and None)
            flip = [0]

            def once() -> None:
                flip[0] ^= 1  # a real change each time: the model flips
                text = path.read_text(encoding="utf-8")
                a, b = ('model = "dall-e-3"', 'model = "dall-e-2"')[:: 1 if flip[0] else -1]
                path.write_text(text.replace(a, b, 1), encoding="utf-8")
                result = live.read()
                assert result is not None and not isinstance(result, Exception), result
                live.take(result)

            return best_of(once, repeat=15)

    reload = anyio.run(rebuild)
    bare = best_of(lambda: load_config(path, environ={}), repeat=15)
    return reload, bare


def main(argv: Sequence[str] | None = None) -> int:
    import anyio

    from bench.bench_engine import build_tree
    from daemon.config import ConfigSource
    from daemon.configure.live import LiveConfig
    from daemon.configure.writer import ConfigWriter
    from daemon.engine.jobs.pipeline import open_job_deps
    from daemon.engine.process.service import Service, ServiceTimings
    from daemon.engine.store import JobState
    from daemon.logs import configure_logging
    from daemon.tavern import layout
    from tests.engine.conftest import FakeAPI, serve_fake_api
    from tests.stsim import SimClock, STSim

    results: dict[str, Any] = {}
    with workdir() as tmp, serve_fake_api(FakeAPI()) as api:
        root = tmp / "data"
        build_tree(root, 10)
        chats = root / "default-user" / "chats" / "Alice"
        chats.mkdir(parents=True)
        results["reload"], results["bare"] = _reload_cost(tmp, api.base_url)

        path = tmp / "config.toml"
        path.write_text(_typical(root, tmp / "state", api.base_url), encoding="utf-8")
        source = ConfigSource.find(path, environ={})
        config = source.load()
        configure_logging(config.log)

        async def run() -> None:
            async with open_job_deps(config, root=layout.resolve_data_root(root)) as deps:
                live = LiveConfig(source, config)
                service = Service(
                    config, deps.root, deps, timings=ServiceTimings(heartbeat=5.0), live=live
                )
                async with anyio.create_task_group() as tg:
                    ready = anyio.Event()
                    tg.start_soon(lambda: service.run(ready=ready.set))
                    with anyio.fail_after(START_TIMEOUT):
                        await ready.wait()
                    chat = chats / "Alice - config.jsonl"
                    tab = STSim.create(chat, clock=SimClock(start=datetime.now(UTC)))
                    rel = chat.relative_to(root).as_posix()
                    with anyio.fail_after(STEP_TIMEOUT):  # seen once: its greeting is history
                        while await service.store.get_chat(rel) is None:  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                    writer = ConfigWriter(source)
                    applied: list[float] = []
                    used: list[bool] = []
                    for n in range(ROUNDS):
                        model = f"model-{n}"
                        started = time.perf_counter()
                        # What the settings page's save does: the checked writer, then adopt.
                        change = await anyio.to_thread.run_sync(
                            functools.partial(writer.apply, {"image.model": model})
                        )
                        live.adopt(change.config)
                        applied.append(time.perf_counter() - started)
                        before = api.count("images/generations")
                        tab.send_user(f"Round {n}.").save()
                        tab.reply("Alice", f"*She turns.* Round {n}, the harbour.").save()
                        with anyio.fail_after(STEP_TIMEOUT):
                            while api.count("images/generations") <= before:  # noqa: ASYNC110
                                await anyio.sleep(0.01)
                        with api.lock:
                            last = [r.body for r in api.requests if r.path.endswith("generations")][
                                -1
                            ]
                        used.append(last.get("model") == model)
                        with anyio.fail_after(STEP_TIMEOUT):
                            while service.runner.running:  # noqa: ASYNC110
                                await anyio.sleep(0.01)
                    results["applied"] = applied
                    results["used"] = used
                    jobs = await service.store.list_jobs(limit=100)
                    results["pending"] = sum(1 for j in jobs if j.state is JobState.PENDING)
                    await service.shutdown("benchmark over")

        anyio.run(run)

    reload, bare = results["reload"], results["bare"]
    print("config reload (a typical file: the example, api settings, 3 styles)")
    print(f"  read + validate alone (load_config)             {fmt_time(bare)}")
    print(f"  reload: read, validate, swap, rebuild providers {fmt_time(reload)}")
    print(f"  {'reload / read + validate':<48} {reload / bare:>10.2f}x")
    ok = reload <= RELOAD_TARGET
    print(
        f"  {'reload time':<48} {fmt_time(reload):>10}   target <= "
        f"{RELOAD_TARGET * 1000:.0f} ms   {'ok' if ok else 'MISSED'}"
    )
    applied = results["applied"]
    print(f"settings save -> next job ({ROUNDS} rounds, image.model changed each time)")
    print(
        f"  save (checked write + apply)                    median "
        f"{fmt_time(statistics.median(applied))}, worst {fmt_time(max(applied))}"
    )
    used = results["used"]
    print(f"  next job's image request carried the new model  {sum(used)}/{len(used)}")
    print(
        f"  {'next job uses the saved setting':<48} {sum(used):>7}/{len(used)}   "
        f"target {ROUNDS}/{ROUNDS}   {'ok' if all(used) else 'MISSED'}"
    )
    ok = all(used) and ok
    return 0 if ok else 1
