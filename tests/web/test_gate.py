"""The inbox's door under load, on a real socket: the header timeout, the cap with a complete
request winning over idle connections, event streams per token, rate-limited log lines, and the
limits the units and the compose example set."""

from __future__ import annotations

import configparser
import errno
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import yaml

from daemon.web.gate import RateLimitFilter, connection_cap
from tests.engine.conftest import FakeAPI, MakeConfig, async_wait_for
from tests.web.conftest import Inbox, inbox_for, web_config

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
HALF_HEAD = b"GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
CLOSED_WITHIN = 10.0  # generous: the header timeout is 0.5 s


@pytest.fixture
async def tight(make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI) -> AsyncIterator[Inbox]:
    web = {"header_timeout_seconds": 0.5, "max_connections": 8, "max_streams_per_token": 2}
    async with inbox_for(web_config(make_config, tmp_path, fake_api, web=web)) as found:
        yield found


@pytest.fixture
async def capped(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> AsyncIterator[Inbox]:
    """A cap of 8 and a header timeout far longer than the test (idle connections stay)."""
    web = {"header_timeout_seconds": 120.0, "max_connections": 8}
    async with inbox_for(web_config(make_config, tmp_path, fake_api, web=web)) as found:
        yield found


def _port(inbox: Inbox) -> int:
    return int(inbox.url.rsplit(":", 1)[1])


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


async def test_a_request_head_never_finished_is_cut_off(tight: Inbox) -> None:
    slow = socket.create_connection(("127.0.0.1", _port(tight)))
    with slow:
        slow.sendall(HALF_HEAD)
        await async_wait_for(lambda: _true(_closed(slow)), within=CLOSED_WITHIN)
    assert tight.ctx.gate is not None and tight.ctx.gate.timed_out >= 1


async def _true(value: bool) -> bool:
    return value


async def test_at_the_cap_a_complete_request_pushes_out_an_idle_connection(
    capped: Inbox,
) -> None:
    gate = capped.ctx.gate
    assert gate is not None and gate.cap == 8
    port = _port(capped)
    kept = [socket.create_connection(("127.0.0.1", port)) for _ in range(gate.cap)]
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]

    def _ask(sock: socket.socket) -> bytes:
        sock.sendall(b"GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(CLOSED_WITHIN)
        return sock.recv(12)

    try:
        for sock in kept:  # one answered request each, then idle (keep-alive)
            assert (await anyio.to_thread.run_sync(_ask, sock)).startswith(b"HTTP/1.1 200")
        for sock in slow:  # heads never finished: they wait as bare sockets, no protocol
            sock.sendall(HALF_HEAD)
        await async_wait_for(lambda: _true(len(gate.waiting) == 20), within=CLOSED_WITHIN)
        assert len(gate.open) == gate.cap
        async with capped.client() as client:
            for _ in range(3):  # each on a fresh connection
                answer = await client.get("/api/v1/jobs", headers={"Connection": "close"})
                assert answer.status_code == 200
        assert gate.pushed_out >= 1  # an idle keep-alive gave its place
        assert len(gate.open) <= gate.cap
    finally:
        for sock in kept + slow:
            sock.close()


async def test_event_streams_are_capped_per_token(tight: Inbox) -> None:
    async with tight.client() as client, anyio.create_task_group() as tg:
        opened = anyio.Event()
        count = 0

        async def hold() -> None:
            nonlocal count
            async with client.stream("GET", "/api/v1/events") as stream:
                async for _line in stream.aiter_lines():
                    count += 1
                    if count == 2:
                        opened.set()
                    await anyio.sleep_forever()

        tg.start_soon(hold)
        tg.start_soon(hold)
        with anyio.fail_after(CLOSED_WITHIN):
            await opened.wait()
        third = await client.get("/api/v1/events")
        assert third.status_code == 429 and "max_streams_per_token" in third.text
        tg.cancel_scope.cancel()
    await async_wait_for(lambda: _true(not tight.ctx.streams), within=CLOSED_WITHIN)
    # Closed streams give their places back.
    async with tight.client() as client, client.stream("GET", "/api/v1/events") as stream:
        assert stream.status_code == 200


def test_a_repeated_log_line_passes_once_per_episode_with_the_count() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.gate.flood")
    logger.propagate = False
    logger.addHandler(Keep())
    limit = RateLimitFilter(episode=3600.0)
    logger.addFilter(limit)
    for _ in range(1000):
        logger.error("socket.accept() out of system resource\nsocket: <fd=7>")
    logger.error("another message")
    assert len(records) == 2
    limit._last.clear()  # the episode is over
    logger.error("socket.accept() out of system resource\nsocket: <fd=7>")
    assert records[-1].endswith("(999 more like it in the last episode not logged)")


def test_the_cap_leaves_descriptors_to_the_engine() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = connection_cap(1_000_000)
    assert cap < soft and soft - cap >= min(256, soft // 4)
    assert connection_cap(16) == 16


def test_units_raise_the_descriptor_limit_and_compose_rotates_its_logs() -> None:
    for unit in ("st-imagegen.service", "st-imagegen-user.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(REPO / "systemd" / unit)
        assert int(parser["Service"]["LimitNOFILE"]) >= 65536, unit
    compose = yaml.safe_load((REPO / "examples" / "compose.yaml").read_text(encoding="utf-8"))
    ours = compose["services"]["st-imagegen"]
    assert ours["logging"]["options"]["max-size"] and int(ours["logging"]["options"]["max-file"])
    assert ours["ulimits"]["nofile"]["soft"] >= 65536


async def test_a_client_that_leaves_mid_body_is_no_traceback(
    tight: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    job = await tight.pending()
    sock = socket.create_connection(("127.0.0.1", _port(tight)))
    with sock:
        sock.sendall(
            f"POST /api/v1/jobs/{job.id}/accept HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
    async with tight.client() as client:  # the daemon is fine, and said nothing
        assert (await client.get("/api/v1/jobs")).status_code == 200
    assert "web request failed" not in caplog.text
    assert (await tight.job(job.id)).state.value == "pending"


class _ShortOfDescriptors(socket.socket):
    """A real listening socket whose next ``failures`` accepts fail the way they do when the
    process is out of descriptors."""

    failures = 0

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


async def test_accept_errors_are_logged_once_per_episode_with_their_count() -> None:
    import asyncio
    import io

    from daemon.config import LogSettings
    from daemon.logs import configure_logging
    from daemon.web.gate import Gate

    # Our own stream, whatever logging an earlier test in this process set up.
    stream = io.StringIO()
    configure_logging(LogSettings(level="info", format="json"), stream=stream)

    listener = _ShortOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.failures = 200
    gate = Gate(cap=8, header_timeout=5.0)
    gate.episode_gap, gate.accept_pause = 0.5, 0.005
    gate.serve(asyncio.get_running_loop(), listener, asyncio.Protocol)
    port = listener.getsockname()[1]
    clients: list[socket.socket] = []
    try:
        clients.append(socket.create_connection(("127.0.0.1", port)))
        await async_wait_for(lambda: _true(listener.failures == 0), within=CLOSED_WITHIN)
        await async_wait_for(
            lambda: _true(gate.arriving == 0 and len(gate.open) + len(gate.waiting) <= 1),
            within=CLOSED_WITHIN,
        )
        await anyio.sleep(0.6)  # the episode is over: the next accept says how it went
        clients.append(socket.create_connection(("127.0.0.1", port)))
        out = ""

        async def _told() -> bool:
            nonlocal out
            out = stream.getvalue()
            return "accepts again" in out

        await async_wait_for(_told, within=CLOSED_WITHIN)
    finally:
        gate.close()
        listener.close()
        for client in clients:
            client.close()
    assert gate.accept_errors == 200
    assert out.count("cannot accept connections") == 1
    assert '"failed_accepts": 200' in out
