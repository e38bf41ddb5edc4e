"""CLI start-up: the CPU time of one-shot commands against a bare interpreter, same run.

Each command runs as its own process (the installed ``st-imagegen`` script) against a state dir
holding 1,000 finished jobs and some pending ones, after one warm-up run (the first run of ``list``
validates and stamps the config: daemon.cli.quick); the figure is the median user + system CPU
of the child over the runs, against ``python -c pass`` measured the same way in the same run.
Target: ``list`` at most 3x the bare interpreter (its quick path); ``show``, ``status`` and
``accept`` still build the engine and are printed with the same ratio against the same target,
not yet held to it.

Run: ``python -m bench cli``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.bench_idle import _finished_jobs
from bench.common import workdir

RUNS = 9
TARGET = 3.0


def _cpu(argv: Sequence[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one child process running ``argv``."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd="/"
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def _pending(cfg: Path, count: int) -> list[str]:
    from tests.engine.test_cli import make_jobs

    return [job.id for job in make_jobs(cfg, count, images=1)]


def main(argv: Sequence[str] | None = None) -> int:
    with workdir() as tmp:
        root = tmp / "data"
        (root / "default-user" / "chats").mkdir(parents=True)
        state = tmp / "state"
        state.mkdir()
        _finished_jobs(state / "state.db", 1_000)
        cfg = tmp / "config.toml"
        cfg.write_text(
            f'data_root = "{root}"\nstate_dir = "{state}"\n'
            '[text]\napi_url = "http://127.0.0.1:9/v1"\n'
            '[image]\napi_url = "http://127.0.0.1:9/v1"\n[log]\nlevel = "warning"\n',
            encoding="utf-8",
        )
        ids = _pending(cfg, RUNS + 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
        py = sys.executable
        daemon = [str(Path(py).with_name("st-imagegen"))]  # the command a user runs
        c = ["--config", str(cfg)]
        _cpu([*daemon, "list", *c], env)  # warm-up: validates and stamps the config
        figures: dict[str, list[float]] = {name: [] for name in ("bare", "list", "show")}
        figures.update(status=[], accept=[])
        for n in range(RUNS):  # interleaved: the machine's load hits every row alike
            figures["bare"].append(_cpu([py, "-c", "pass"], env))
            figures["list"].append(_cpu([*daemon, "list", *c], env))
            figures["show"].append(_cpu([*daemon, "show", ids[-1], *c], env))
            figures["status"].append(_cpu([*daemon, "status", *c], env))
            figures["accept"].append(_cpu([*daemon, "accept", ids[n], *c], env))
    base = statistics.median(figures["bare"])
    print(f"CLI start-up, CPU per command (median of {RUNS}; 1,000 jobs in the store)")
    print(f"  python -c pass (baseline)                {base * 1000:7.1f} ms")
    ok = True
    for name in ("list", "show", "status", "accept"):
        cpu = statistics.median(figures[name])
        ratio = cpu / base
        met = ratio <= TARGET
        if name == "list":
            ok &= met
        note = "" if name == "list" else " (not held to it yet)"
        print(
            f"  {name:<8} {cpu * 1000:7.1f} ms   {ratio:5.1f}x   target <= {TARGET:g}x  "
            f"{'ok' if met else 'MISSED'}{note}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
