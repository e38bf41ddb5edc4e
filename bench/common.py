"""Shared helpers for the benchmarks: realistic chat files, timing, reporting."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / ".data"

_PHRASES = (
    "the glade glows softly at dawn and she smiles while fog rolls over the harbour town "
    "lantern light flickers on wet glass as the old keeper climbs the spiral stairs again "
    "ferns curl around brass pipes in the greenhouse where rain drums a patient rhythm"
)
_WORDS = _PHRASES.split()


@contextmanager
def workdir() -> Iterator[Path]:
    """A scratch folder under ``bench/.data/`` (git-ignored), removed afterwards."""
    DATA_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA_DIR, prefix="run-") as name:
        yield Path(name)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _text(rnd: random.Random, words: int) -> str:
    return " ".join(rnd.choice(_WORDS) for _ in range(words)).capitalize() + "."


def make_message(i: int, rnd: random.Random, start: datetime) -> dict[str, Any]:
    """Message ``i`` shaped like ST 1.18 writes it: user turns and streamed replies."""
    when = start + timedelta(seconds=40 * i)
    if i % 2:
        return {
            "name": "User",
            "is_user": True,
            "is_system": False,
            "send_date": _iso(when),
            "mes": _text(rnd, rnd.randrange(5, 30)),
            "extra": {"isSmallSys": False, "reasoning": ""},
            "force_avatar": "/thumbnail?type=persona&file=user-default.png",
        }
    mes = _text(rnd, rnd.randrange(15, 60))
    started, finished = when - timedelta(seconds=4), when + timedelta(milliseconds=341)
    extra = {
        "api": "custom",
        "model": "mock-model",
        "reasoning": "",
        "reasoning_duration": None,
        "reasoning_signature": None,
        "time_to_first_token": 77,
    }
    return {
        "extra": extra,
        "name": "Alice",
        "is_user": False,
        "send_date": _iso(when),
        "mes": mes,
        "title": "",
        "gen_started": _iso(started),
        "gen_finished": _iso(finished),
        "swipes": [mes],
        "swipe_id": 0,
        "swipe_info": [
            {
                "send_date": _iso(when),
                "gen_started": _iso(started),
                "gen_finished": _iso(finished),
                "extra": extra,
            }
        ],
    }


def chat_lines(messages: int, seed: int = 0) -> list[bytes]:
    """A header and ``messages`` realistic message lines (100,000 messages are about 60 MB)."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    header = {
        "chat_metadata": {"integrity": "08004772-6082-4421-a982-db52db216ce4", "tainted": True},
        "user_name": "unused",
        "character_name": "unused",
    }
    lines = [header] + [make_message(i, rnd, start) for i in range(messages)]
    return [json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode() for o in lines]


def real_png() -> bytes:
    """A 1024x1024 PNG of about 1.4 MB, as image APIs answer: noise over a gradient compresses
    like a rendered picture, not like a flat colour (or a 1x1 image)."""
    import io

    from PIL import Image

    noise = Image.effect_noise((1024, 1024), 12).convert("L")
    gradient = Image.linear_gradient("L").resize((1024, 1024))
    picture = Image.merge("RGB", (noise, gradient, Image.blend(noise, gradient, 0.5)))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def write_chat(path: Path, lines: list[bytes]) -> int:
    data = b"\n".join(lines)
    path.write_bytes(data)
    return len(data)


def copy_file(src: Path, dst: Path) -> None:
    """Baseline: a plain copy of ``src`` to ``dst`` (removed again)."""
    shutil.copyfile(src, dst)
    dst.unlink()


def copy_file_durably(src: Path, dst: Path) -> None:
    """Baseline: :func:`copy_file`, the copy fsynced before it is removed."""
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dst.unlink()


def best_of(fn: Callable[[], object], *, repeat: int = 5, number: int = 1) -> float:
    """The best time of ``repeat`` runs of ``number`` calls, per call, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def best_of_pair(
    a: Callable[[], object], b: Callable[[], object], *, repeat: int = 9, number: int = 200
) -> tuple[float, float]:
    """Best per-call times of ``a`` and ``b``, measured alternately so that load from other
    processes hits both alike."""
    best_a = best_b = float("inf")
    for _ in range(repeat):
        best_a = min(best_a, best_of(a, repeat=1, number=number))
        best_b = min(best_b, best_of(b, repeat=1, number=number))
    return best_a, best_b


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def check(label: str, value: float, target: str, ok: bool) -> bool:
    """Print one ratio against its target; returns ``ok``."""
    print(f"  {label:<52} {value:>10.1f}x   target {target:<8} {'ok' if ok else 'MISSED'}")
    return ok


def check_at_most(label: str, seconds: float, base: float, target: float) -> bool:
    """Print ``seconds / base`` against the target "at most ``target``x"; returns whether met."""
    return check(label, seconds / base, f"<= {target}x", seconds <= target * base)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd and Docker stop the daemon; SIGKILL if it is not gone in 30 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
