"""Image answer -> pending folder: how many full decodes of the image the daemon pays.

A real-sized image (1024x1024 PNG of about 1.4 MB or more, not 1x1) goes the way an API answer
goes between the bytes arriving and ``pending/<job>/``: the check (``check_image``: sniff, size
limits, ``verify()``, which only checks the chunks' CRCs, then ``load()``) and the PNG text
chunks (``with_text_chunks``, inserted without re-encoding). Their CPU against one full decode
of the same image with Pillow (``Image.open(...).load()``) measured in the same run; the pending
folder's write (``Approval.write_pending``: file writes and fsyncs) is printed for information.
Target: at most 1.2 decodes.

Run: ``python -m bench decode``.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bench.common import real_png, workdir

if TYPE_CHECKING:
    from daemon.providers.decode import GeneratedImage

TARGET = 1.2
REPEAT = 7


def _cpu(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    from PIL import Image

    from daemon.engine.jobs.approval import Approval
    from daemon.engine.store import Job, JobState, ReplyKey, new_job_id
    from daemon.providers.decode import check_image
    from daemon.providers.pngtext import with_text_chunks

    data = real_png()
    now = datetime.now(UTC)

    def decode() -> None:
        with Image.open(io.BytesIO(data)) as image:
            image.load()

    def checked_and_stamped() -> GeneratedImage:
        checked = check_image(data, 64_000_000)
        stamped = with_text_chunks(checked.data, {"parameters": "a glade at dawn"})
        return dataclasses.replace(checked, data=stamped)

    with workdir() as tmp:
        approval = Approval(tmp / "state")
        ready = checked_and_stamped()

        def pending() -> None:
            job = Job(
                id=new_job_id(),
                key="k",
                reply=ReplyKey("default-user", "default-user/chats/A/A - 1.jsonl", "A", "d", "r"),
                character="A",
                is_group=False,
                speaker="A",
                message_index=1,
                excerpt="",
                source="auto",
                state=JobState.IMAGING,
                attempts=0,
                last_error=None,
                prompt="a glade at dawn",
                images=(),
                created_at=now,
                updated_at=now,
                next_attempt_at=None,
                meta={},
            )
            approval.write_pending(job, [ready])

        base = _cpu(decode)
        work = _cpu(checked_and_stamped)
        write = _cpu(pending)
    ratio = work / base
    ok = ratio <= TARGET
    size = len(data) / 1e6
    print(f"image answer -> pending/, a {size:.1f} MB 1024x1024 PNG (CPU, best of {REPEAT})")
    print(f"  one full decode (Image.open + load; baseline)   {base * 1000:7.1f} ms")
    print(f"  check_image (verify + load) + text chunks       {work * 1000:7.1f} ms")
    print(f"  the pending folder's write (information: I/O)   {write * 1000:7.1f} ms")
    print(
        f"  {'decodes between the answer and pending/':<52} {ratio:>8.2f}    "
        f"target <= {TARGET:g}   {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
