"""Tail scan cost: a 100,000-message chat (about 60 MB) against a 10-message chat, and against
a full parse of the big chat. Targets: big/small <= 2x, full parse / scan >= 100x."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.common import best_of, best_of_pair, chat_lines, check, fmt_time, workdir, write_chat
from daemon.tavern.chat import Cursor, read_chat
from daemon.tavern.scan import tail_scan

BIG = 100_000
SMALL = 10


def _prepare(folder: Path, count: int) -> tuple[Path, Cursor, Cursor]:
    """A chat of ``count`` messages, a cursor from before its last message was appended, and
    one from before its last reply was swiped (same line, new text)."""
    lines = chat_lines(count)
    path = folder / f"chat-{count}.jsonl"
    write_chat(path, lines[:-1])
    before_append = tail_scan(path, None).cursor
    write_chat(path, lines)
    current = tail_scan(path, None).cursor
    # The last message edited in place (a swipe or continue): same identity, new revision.
    identity, revision = current.recent[-1]
    before_swipe = Cursor(
        (*current.recent[:-1], (identity, type(revision)(revision.swipe_id, "0" * 16))),
        current.message_count,
        current.size,
    )
    return path, before_append, before_swipe


def _scanner(path: Path, cursor: Cursor) -> Callable[[], object]:
    return lambda: tail_scan(path, cursor)


def main() -> int:
    ok = True
    with workdir() as folder:
        big, big_append, big_swipe = _prepare(folder, BIG)
        small, small_append, small_swipe = _prepare(folder, SMALL)
        size = big.stat().st_size
        print(f"  big chat: {BIG:,} messages, {size / 1e6:.1f} MB; small chat: {SMALL} messages")

        result = tail_scan(big, big_append)
        assert len(result.new) == 1 and not result.cursor_gone, "scan found the wrong messages"
        assert len(tail_scan(big, big_swipe).changed) == 1
        print(f"  one scan of the big chat reads {result.bytes_read:,} bytes")

        for label, big_cursor, small_cursor in (
            ("append", big_append, small_append),
            ("swipe", big_swipe, small_swipe),
        ):
            t_big, t_small = best_of_pair(
                _scanner(big, big_cursor), _scanner(small, small_cursor), repeat=15, number=100
            )
            print(f"  scan after {label}: big {fmt_time(t_big)}, small {fmt_time(t_small)}")
            ok &= check(
                f"scan big / scan small ({label})", t_big / t_small, "<= 2x", t_big <= 2 * t_small
            )

        t_full = best_of(lambda: read_chat(big)[0].messages, repeat=2)  # chats parse lazily
        t_scan = best_of(lambda: tail_scan(big, big_append), repeat=9, number=200)
        print(f"  full parse of the big chat: {fmt_time(t_full)}; tail scan: {fmt_time(t_scan)}")
        ok &= check(
            "full parse / tail scan (big chat)", t_full / t_scan, ">= 100x", t_full >= 100 * t_scan
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
