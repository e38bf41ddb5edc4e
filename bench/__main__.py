"""Run the benchmarks: ``python -m bench [NAME ...]``.

Runs ``main()`` of every ``bench/bench_*.py`` module (or only the ones named, with or without the
``bench_`` prefix). Each prints its figures and ratios measured in the same run and returns 0
when its targets are met. The exit status is non-zero if any target was missed or a module failed.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("bench_*.py"))


def run(names: Sequence[str]) -> int:
    available = discover()
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in names] or available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}")
        return 2
    failed: list[str] = []
    for name in wanted:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            entry = cast("Callable[[], int | None]", module.main)
            status = entry() or 0
        except Exception:
            traceback.print_exc()
            status = 1
        print(
            f"== {name}: {'ok' if status == 0 else 'TARGET MISSED'} "
            f"({time.perf_counter() - started:.1f} s)\n",
            flush=True,
        )
        if status:
            failed.append(name)
    if failed:
        print(f"targets missed in: {', '.join(failed)}")
        return 1
    print("all benchmark targets met")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
