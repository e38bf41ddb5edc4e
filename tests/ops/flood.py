"""A connection flood, run as its own process (``python -m tests.ops.flood PORT COUNT SECONDS
[REOPEN_AFTER]``): ``COUNT`` connections to 127.0.0.1:PORT that send half a request head and then
nothing; each one the server closes is opened again ``REOPEN_AFTER`` seconds later (1 s by
default, the way slowloris tools refill their pool; 0: at once). Prints how many connections it
opened in all."""

from __future__ import annotations

import contextlib
import errno
import resource
import selectors
import socket
import sys
import time

HALF_HEAD = b"GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def flood(port: int, count: int, seconds: float, reopen_after: float = 1.0) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 100)), hard))
    sel = selectors.DefaultSelector()
    opened = 0

    def open_one() -> None:
        nonlocal opened
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            sock.close()
            return
        sel.register(sock, selectors.EVENT_WRITE, "connecting")
        opened += 1

    for _ in range(count):
        open_one()
    end = time.monotonic() + seconds
    reopen: list[float] = []  # when each closed connection is opened again
    while time.monotonic() < end:
        now = time.monotonic()
        while reopen and reopen[0] <= now:
            reopen.pop(0)
            open_one()
        for key, _events in sel.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "connecting":
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    with contextlib.suppress(OSError):
                        sock.send(HALF_HEAD)
                    sel.modify(sock, selectors.EVENT_READ, "open")
                    continue
            else:
                with contextlib.suppress(OSError):
                    if sock.recv(4096):
                        continue
            sel.unregister(sock)
            sock.close()
            reopen.append(time.monotonic() + reopen_after)
    return opened


if __name__ == "__main__":
    after = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    print(flood(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), after), flush=True)
