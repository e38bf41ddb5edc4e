"""CLI start-up: the CPU time of one-shot commands against a bare interpreter, same run.

Each command runs as its own process (the installed ``st-imagegen`` script, no ``--config``: the
config file and the state dir where the platform puts them by default) against a state dir
holding 1,000 finished jobs and some pending ones, after one warm-up run of each (the first run
validates and stamps the config: daemon.cli.quick). ``list``, ``show``, ``status`` and
``accept`` (one pending job per run) are each the median user + system CPU of the child over the
runs, printed as a ratio to ``python -c pass`` measured the same way in the same run,
interleaved so the machine's load hits every row alike. Target: each at most 3x.

Bytecode is cached (in a folder of this run, ``PYTHONPYCACHEPREFIX``) as an installed package
has it (pip compiles it at install); without it, every run would compile the daemon's own
modules again (this machine's environment sets ``PYTHONDONTWRITEBYTECODE``), which no user pays
twice.

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

RUNS = 11
TARGET = 3.0
COMMANDS = ("list", "show", "status", "accept")


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
        # The folders a user gets by default: the config file and the state dir where the
        # platform puts them (no --config, no state_dir), found by the commands themselves.
        xdg = {"XDG_CONFIG_HOME": str(tmp / "config"), "XDG_STATE_HOME": str(tmp / "state")}
        root = tmp / "data"
        (root / "default-user" / "chats").mkdir(parents=True)
        state = tmp / "state" / "st-imagegen"
        state.mkdir(parents=True)
        _finished_jobs(state / "state.db", 1_000)
        cfg = tmp / "config" / "st-imagegen" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(
            f'data_root = "{root}"\n'
            '[text]\napi_url = "http://127.0.0.1:9/v1"\n'
            '[image]\napi_url = "http://127.0.0.1:9/v1"\n[log]\nlevel = "warning"\n',
            encoding="utf-8",
        )
        saved = {name: os.environ.get(name) for name in xdg}
        os.environ.update(xdg)
        try:
            ids = _pending(cfg, RUNS + 2)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        env.update(xdg)
        py = sys.executable
        daemon = [str(Path(py).with_name("st-imagegen"))]  # the command a user runs
        c: list[str] = []  # the default config file
        accepts = iter(ids[:-1])

        def command(name: str) -> list[str]:
            if name == "bare":
                return [py, "-c", "pass"]
            if name == "show":
                return [*daemon, "show", ids[-1], *c]
            if name == "accept":
                return [*daemon, "accept", next(accepts), *c]
            return [*daemon, name, *c]

        names = ("bare", *COMMANDS)
        for name in names:  # warm-up: stamps the config, writes the bytecode
            _cpu(command(name), env)
        figures: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(RUNS):  # interleaved: the machine's load hits every row alike
            for name in names:
                figures[name].append(_cpu(command(name), env))
    base = statistics.median(figures["bare"])
    print(f"CLI start-up, CPU per command (median of {RUNS}; 1,000 jobs in the store)")
    print(f"  python -c pass (baseline)            {base * 1000:7.1f} ms")
    ok = True
    for name in COMMANDS:
        cpu = statistics.median(figures[name])
        ratio = cpu / base
        met = ratio <= TARGET
        ok &= met
        print(
            f"  {name:<8} {cpu * 1000:7.1f} ms   {ratio:4.2f}x   target <= {TARGET:g}x  "
            f"{'ok' if met else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
