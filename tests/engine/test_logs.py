"""Logging setup: JSON off a terminal, console on one, secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from daemon import logs
from daemon.config import LogSettings, load_config
from daemon.jobstate import Job, JobState, ReplyKey
from daemon.logs import (
    REDACTED,
    configure_logging,
    is_secret_key,
    job_log,
    redact,
    register_config_secrets,
    register_secret,
)

KEY = "sk-live-3f9a8b7c6d5e4f3a2b1c"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if handler.get_name() == logs.HANDLER_NAME:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()
    logs._forget_secrets()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="auto"), stream=out)
    structlog.get_logger("st_imagegen.test").info("hello", chat="a/b.jsonl", n=3)
    logging.getLogger("some.library").warning("stdlib %s", "routed")
    first, second = json_lines(out)
    assert first["event"] == "hello" and first["chat"] == "a/b.jsonl" and first["n"] == 3
    assert first["level"] == "info" and first["logger"] == "st_imagegen.test"
    assert datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert second["event"] == "stdlib routed" and second["level"] == "warning"
    assert second["logger"] == "some.library"


def test_console_on_a_tty() -> None:
    out = FakeTTY()
    configure_logging(LogSettings(format="auto"), stream=out)
    structlog.get_logger("st_imagegen.test").info("hello there", chat="x.jsonl")
    text = out.getvalue()
    assert "hello there" in text and "chat" in text and "x.jsonl" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.parametrize(("fmt", "is_json"), [("json", True), ("console", False)])
def test_explicit_format_wins(fmt: str, is_json: bool) -> None:
    out = FakeTTY() if is_json else io.StringIO()
    configure_logging(LogSettings(format=fmt), stream=out)
    structlog.get_logger().info("x")
    line = out.getvalue().splitlines()[0]
    assert line.startswith("{") is is_json
    if not is_json:
        assert "\x1b[" not in line  # no colours off a terminal


def test_level_filters() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="warning"), stream=out)
    log = structlog.get_logger("st_imagegen.test")
    log.info("quiet")
    log.debug("quieter")
    log.warning("loud")
    logging.getLogger("httpx").warning("also loud")
    logging.getLogger("httpx").info("HTTP Request: POST https://api.example/v1?key=abc")
    assert [e["event"] for e in json_lines(out)] == ["loud", "also loud"]


def test_reconfigure_replaces_the_handler() -> None:
    out1, out2 = io.StringIO(), io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out1)
    configure_logging(LogSettings(format="json"), stream=out2)
    structlog.get_logger().info("once")
    assert out1.getvalue() == "" and len(json_lines(out2)) == 1


@pytest.mark.parametrize("render", ["json", "console"])
def test_registered_secret_is_redacted_everywhere(render: str) -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format=render), stream=out, secrets=[SecretStr(KEY)])
    log = structlog.get_logger("st_imagegen.test")
    log.info(f"message with {KEY} inside")
    log.info("positional %s arg", KEY)
    log.info("fields", url=f"https://x/?q={KEY}", nested={"list": [KEY, 1]}, obj=("a", KEY))
    logging.getLogger("lib").error("stdlib %s args", KEY)
    try:
        raise RuntimeError(f"the API said no to {KEY}")
    except RuntimeError:
        log.exception("structlog exception")
        logging.getLogger("lib").exception("stdlib exception")
    log.info("as error value", error=ValueError(f"bad key {KEY}"))
    text = out.getvalue()
    assert KEY not in text
    assert text.count(REDACTED) >= 9
    assert "the API said no to" in text and "Traceback" in text
    assert "positional [redacted] arg" in text and "stdlib [redacted] args" in text


def test_secret_keys_and_values_are_redacted_without_registration() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    structlog.get_logger().info(
        "request",
        api_key="abc-unregistered",
        headers={"Authorization": "Bearer abcdefghijkl", "Accept": "json"},
        key=SecretStr("s3cr3t-value"),
        note="sent Bearer zyxwvu987654 to the server",
        url="https://api.example/v1/images?key=AIzaSyXYZ&size=1",
        max_tokens=300,
        access_token="tok-123456",
    )
    [event] = json_lines(out)
    assert event["api_key"] == REDACTED and event["access_token"] == REDACTED
    assert event["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert event["key"] == REDACTED
    assert event["note"] == f"sent Bearer {REDACTED} to the server"
    assert event["url"] == f"https://api.example/v1/images?key={REDACTED}&size=1"
    assert event["max_tokens"] == 300  # a count, not a secret
    assert "abcdefghijkl" not in out.getvalue() and "s3cr3t" not in out.getvalue()


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("API-Key", True),
        ("apikey", True),
        ("Authorization", True),
        ("client_secret", True),
        ("password", True),
        ("token", True),
        ("refresh_token", True),
        ("max_tokens", False),
        ("prompt_tokens", False),
        ("chat", False),
        ("key", False),
    ],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_helper_and_short_values() -> None:
    register_secret("ab")  # too short to register: would garble every log line
    register_secret(None)
    register_secret("longer-secret-1")
    assert redact("ab longer-secret-1 ab") == f"ab {REDACTED} ab"
    assert redact({"a": ["longer-secret-1"]}) == {"a": [REDACTED]}
    assert redact(5) == 5 and redact(None) is None


def test_register_config_secrets(tmp_path: Any) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    config = load_config(
        None,
        environ={
            "ST_IMAGEGEN_TEXT__API_KEY": "text-key-0123456789",
            "ST_IMAGEGEN_IMAGE__API_KEY_FILE": str(tmp_path / "key"),
        },
    )
    register_config_secrets(config)
    assert redact(f"{KEY} and text-key-0123456789") == f"{REDACTED} and {REDACTED}"


def _job() -> Job:
    when = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    return Job(
        id="01JCZ0000000000000000000AB",
        key="k",
        reply=ReplyKey("default-user", "default-user/chats/Alice/a.jsonl", "Alice", "d", "0:aa"),
        character="Alice",
        is_group=False,
        speaker="Alice",
        message_index=7,
        excerpt="",
        source="auto",
        state=JobState.PENDING,
        attempts=0,
        last_error=None,
        prompt="p",
        images=(),
        created_at=when,
        updated_at=when,
        next_attempt_at=None,
        meta={},
    )


def test_job_log_one_line_per_step() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out, secrets=[KEY])
    job_log(_job(), "image", duration=1.23456, images=2)
    job_log(_job(), "failed", level="warning", error=f"401 for key {KEY}")
    first, second = json_lines(out)
    assert first["event"] == "job image" and first["level"] == "info"
    assert first["job"] == "01JCZ0000000000000000000AB" and first["user"] == "default-user"
    assert first["chat"] == "default-user/chats/Alice/a.jsonl" and first["mesid"] == 7
    assert first["state"] == "pending" and first["duration"] == 1.235 and first["images"] == 2
    assert second["level"] == "warning" and second["error"] == f"401 for key {REDACTED}"
    assert "duration" not in second


def test_without_a_stream_it_writes_to_the_current_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the handler kept the stderr object of its set-up; once that was closed (a
    test's captured stderr), every later line failed with "I/O operation on closed file"."""
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging(LogSettings(level="info", format="json"))
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    structlog.get_logger("st_imagegen.test").warning("still heard", card="Alice.png")
    assert json.loads(second.getvalue())["event"] == "still heard"
