"""Push messages to the phone (issue 24): Apprise talking to a fake ntfy server on loopback. One
message per batch, quiet hours honoured, a link to each job, no token in any message or log."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from daemon.config import NotifySettings
from daemon.engine.process.push import Pusher, QuietHours
from daemon.engine.store import Job, JobState
from daemon.jobstate import ReplyKey
from tests.engine.conftest import FakeAPI, MakeConfig, job_for, running, write_chat
from tests.engine.test_commit_support import new_data_root
from tests.web.conftest import FAST

PASSWORD = "tk-very-secret-push-token-0042"


@dataclass
class Ntfy:
    """What a ntfy server was sent: one JSON document per message."""

    port: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def url(self, topic: str = "st-inbox") -> str:
        return f"ntfy://reader:{PASSWORD}@127.0.0.1:{self.port}/{topic}"


@pytest.fixture
def ntfy() -> Iterator[Ntfy]:
    seen = Ntfy()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.messages.append(json.loads(raw))
            seen.auth.append(self.headers.get("Authorization", ""))
            body = b'{"id":"x","event":"message"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            seen.arrived.set()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def a_job(n: int, state: JobState = JobState.PENDING, **over: Any) -> Job:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    job = Job(
        id=f"01M98PUSH{n:017d}",
        key=f"k{n}",
        reply=ReplyKey(
            "default-user", f"default-user/chats/Alice/Alice - c{n}.jsonl", "Alice", f"d{n}", "0:x"
        ),
        character="Alice",
        is_group=False,
        speaker="Alice",
        message_index=2 * n + 1,
        excerpt="",
        source="auto",
        state=state,
        attempts=0,
        last_error=None,
        prompt="p",
        images=("image-1.png", "image-2.png"),
        created_at=at,
        updated_at=at,
        next_attempt_at=None,
        meta={},
    )
    return replace(job, **over)


def pusher(ntfy: Ntfy, clock: Clock, **settings: Any) -> Pusher:
    notify = NotifySettings(urls=[SecretStr(ntfy.url())], **settings)
    return Pusher(notify, "http://inbox.local:8765", None, clock=clock)


@pytest.mark.anyio
async def test_one_message_per_batch_with_links_and_no_token(ntfy: Ntfy) -> None:
    clock = Clock(datetime(2026, 12, 1, 12, 0).astimezone())
    push = pusher(ntfy, clock, batch_seconds=60)
    with capture_logs() as logs:
        for n in range(3):
            push.job_changed(a_job(n), JobState.IMAGING)
            clock.at += timedelta(seconds=10)
        # One of them is accepted before the message leaves: it is not mentioned.
        push.job_changed(a_job(1, JobState.ACCEPTED), JobState.PENDING)
        assert await push.flush() is False  # 30 s into the batch
        clock.at += timedelta(seconds=31)
        assert await push.flush() is True
        assert await push.flush() is False  # nothing left
    assert len(ntfy.messages) == 1
    message = ntfy.messages[0]
    assert message["topic"] == "st-inbox"
    assert message["title"] == "4 pictures wait in 2 jobs"
    body = message["message"]
    assert "http://inbox.local:8765/jobs/" + a_job(0).id in body
    assert "http://inbox.local:8765/jobs/" + a_job(2).id in body
    assert a_job(1).id not in body
    assert "Alice - c0" in body
    # The token reaches only the service, as its credential: never a message or a log line.
    assert ntfy.auth == ["Basic " + base64.b64encode(f"reader:{PASSWORD}".encode()).decode()]
    assert PASSWORD not in json.dumps(ntfy.messages)
    assert PASSWORD not in repr(logs)
    assert any(entry["event"] == "push sent" for entry in logs)


@pytest.mark.anyio
async def test_quiet_hours_hold_the_message_until_they_end(ntfy: Ntfy) -> None:
    clock = Clock(datetime(2026, 12, 1, 23, 0).astimezone())
    push = pusher(ntfy, clock, batch_seconds=60, quiet_hours="22:00-07:00")
    push.job_changed(a_job(7), JobState.IMAGING)
    push.job_changed(a_job(8, JobState.FAILED, last_error="image: refused"), JobState.IMAGING)
    clock.at += timedelta(minutes=5)
    assert await push.flush() is False
    due = push.due_at()
    assert due is not None and (due.hour, due.minute) == (7, 0) and due.day == 2
    clock.at = due
    assert await push.flush() is True
    assert len(ntfy.messages) == 1
    assert ntfy.messages[0]["title"] == "2 pictures wait in 1 jobs; 1 failed"
    assert "failed: image: refused" in ntfy.messages[0]["message"]


def test_quiet_hours_within_one_day_and_across_midnight() -> None:
    night = QuietHours("22:00-07:00")
    day = QuietHours("13:00-14:30")
    at = datetime(2026, 12, 1, 6, 59).astimezone()
    assert night.quiet(at) and not night.quiet(at.replace(hour=7, minute=0))
    assert day.quiet(at.replace(hour=14, minute=29)) and not day.quiet(
        at.replace(hour=14, minute=30)
    )
    assert not QuietHours("").quiet(at)


@pytest.mark.anyio
async def test_the_daemon_pushes_when_a_job_is_pending(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI, ntfy: Ntfy
) -> None:
    root = new_data_root(tmp_path)
    config = make_config(
        root,
        mode="manual",
        web={"enabled": False},
        notify={"urls": [ntfy.url()], "batch_seconds": 0, "link_url": "http://phone.example/"},
    )
    with capture_logs() as logs:
        async with running(config, FAST) as service:
            path = await anyio.to_thread.run_sync(write_chat, service.root, "push", ["Waves."])
            job = await job_for(service.deps, path)
            service.runner.wake()
            arrived = await anyio.to_thread.run_sync(ntfy.arrived.wait, 20.0)
            assert arrived, "no message reached the fake ntfy server"
    assert len(ntfy.messages) == 1
    assert f"http://phone.example/jobs/{job.id}" in ntfy.messages[0]["message"]
    assert PASSWORD not in repr(logs)
