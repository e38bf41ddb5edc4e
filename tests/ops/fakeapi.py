"""The engine tests' fake OpenAI-compatible server, with key checking, for the ops tests.

It serves ``POST /v1/chat/completions``, ``GET /v1/models`` and ``POST /v1/images/generations``,
answers 401 to a wrong ``Authorization`` header, and records every request. A thread in the test
process, so a daemon started as a subprocess reaches it too.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from tests.engine.conftest import FakeAPI, serve_fake_api

__all__ = ["GOOD_KEY", "FakeAPI", "closed_port", "fake_api"]

GOOD_KEY = "sk-good-test-key"


@contextmanager
def fake_api(*, key: str = GOOD_KEY, image_delay: float = 0.0) -> Iterator[FakeAPI]:
    """Serve a :class:`FakeAPI` that wants ``key`` until the block ends."""
    with serve_fake_api(FakeAPI(key=key, image_delay=image_delay)) as api:
        yield api


def closed_port() -> int:
    """A local TCP port with nothing listening (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
