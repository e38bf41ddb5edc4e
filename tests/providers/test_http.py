"""Transport pieces: URLs, error mapping, Retry-After, backoff, pacing, the client."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from pydantic import SecretStr

from daemon.config import LimitsSettings
from daemon.errors import (
    AuthError,
    ConfigError,
    ContentRefusedError,
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from daemon.providers.http import (
    BearerAuth,
    Endpoint,
    IntervalGate,
    RetryPolicy,
    call_timeout,
    endpoint_url,
    error_from_response,
    error_from_transport,
    make_client,
    parse_retry_after,
    redact,
    with_retries,
)
from tests.providers.conftest import FakeClock

ENDPOINT = Endpoint("image API", "https://img.example.com/v1/images/generations", "image", "sk-k1")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h.example/v1", "https://h.example/v1/chat/completions"),
        ("https://h.example/v1/", "https://h.example/v1/chat/completions"),
        ("https://h.example/v1/chat/completions", "https://h.example/v1/chat/completions"),
        ("https://h.example/v1/chat/completions//", "https://h.example/v1/chat/completions"),
        ("http://127.0.0.1:5001", "http://127.0.0.1:5001/v1/chat/completions"),
        ("http://127.0.0.1:5001/", "http://127.0.0.1:5001/v1/chat/completions"),
        ("https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1/chat/completions"),
        (" https://h.example/v1beta/openai ", "https://h.example/v1beta/openai/chat/completions"),
    ],
)
def test_endpoint_url(url: str, expected: str) -> None:
    assert endpoint_url(url, "chat/completions", "text") == expected


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "[image] api_url is empty"),
        ("ftp://h.example/v1", "not an http(s) URL"),
        ("h.example/v1", "not an http(s) URL"),
        ("https://user:pw@h.example/v1", "credentials"),
        ("https://h.example/v1?key=abc", "query"),
    ],
)
def test_endpoint_url_refuses(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        endpoint_url(url, "images/generations", "image")
    assert words in str(info.value)


def test_parse_retry_after() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None


def response_error(status: int, body: bytes = b"", **headers: str) -> Exception:
    return error_from_response(ENDPOINT, status, body, httpx.Headers(headers), FakeClock())


def test_error_mapping() -> None:
    assert isinstance(response_error(401), AuthError)
    assert isinstance(response_error(403), AuthError)
    for status in (408, 500, 502, 503, 504):
        assert isinstance(response_error(status), TransientProviderError)
    limited = response_error(429, b"", **{"retry-after": "9"})
    assert isinstance(limited, RateLimitedError)
    assert limited.retry_after == 9.0
    assert "retry after 9 s" in str(limited)
    for status in (400, 404, 409, 422):
        err = response_error(status)
        assert isinstance(err, PermanentProviderError)
        assert not err.transient
    policy = response_error(
        400,
        b'{"error":{"code":"content_policy_violation","message":"Your request was rejected '
        b'as a result of our safety system."}}',
    )
    assert isinstance(policy, ContentRefusedError)
    moderation = response_error(400, b'{"error":{"code":"moderation_blocked","message":"x"}}')
    assert isinstance(moderation, ContentRefusedError)


def test_error_message_is_actionable_and_carries_context() -> None:
    err = response_error(401, b'{"error":{"message":"Incorrect API key provided: sk-k1"}}')
    assert str(err) == (
        "the image API at img.example.com answered 401 (Incorrect API key provided: ***): "
        "check [image] api_key (and that it may use this model)"
    )
    assert isinstance(err, AuthError)
    assert err.provider == "the image API at img.example.com"
    assert err.status == 401
    assert "sk-k1" not in err.body
    assert "***" in err.body


def test_error_body_excerpt_is_short() -> None:
    err = response_error(500, b"x" * 10_000)
    assert isinstance(err, TransientProviderError)
    assert len(err.body) <= 300


def test_transport_errors_are_transient() -> None:
    connect = error_from_transport(ENDPOINT, httpx.ConnectError("refused"))
    assert "cannot connect to the image API at img.example.com" in str(connect)
    assert "check [image] api_url" in str(connect)
    assert "did not answer in time" in str(error_from_transport(ENDPOINT, TimeoutError()))
    broken = error_from_transport(ENDPOINT, httpx.RemoteProtocolError("eof"))
    assert broken.transient


def test_redact() -> None:
    assert redact("key sk-abcdef in text sk-abcdef", "sk-abcdef") == "key *** in text ***"
    assert redact("abc", "") == "abc"


def test_backoff_is_exponential_capped_and_jittered() -> None:
    draws = iter([0.0, 1.0, 0.5, 0.0, 1.0])
    policy = RetryPolicy(attempts=10, base=2.0, cap=10.0, rng=lambda: next(draws))
    transient = TransientProviderError("x")
    assert policy.delay(1, transient) == 1.0  # ceiling 2: [1, 2]
    assert policy.delay(2, transient) == 4.0  # ceiling 4: upper end
    assert policy.delay(3, transient) == 6.0  # ceiling 8: middle
    assert policy.delay(4, transient) == 5.0  # ceiling capped at 10: lower end
    assert policy.delay(5, transient) == 10.0
    assert policy.delay(10, transient) is None  # attempts used up
    assert policy.delay(1, PermanentProviderError("x")) is None
    assert policy.delay(1, AuthError("x")) is None


def test_retry_after_wins_over_backoff_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=3, base=1.0, max_retry_after=60.0, rng=lambda: 0.0)
    assert policy.delay(1, RateLimitedError("x", retry_after=30.0)) == 30.0
    assert policy.delay(1, RateLimitedError("x", retry_after=61.0)) is None
    assert policy.delay(1, RateLimitedError("x")) == 0.5


def test_policy_from_limits() -> None:
    policy = RetryPolicy.from_limits(
        LimitsSettings(provider_attempts=4, retry_base_seconds=2, max_retry_after_seconds=9)
    )
    assert (policy.attempts, policy.base, policy.max_retry_after) == (4, 2.0, 9.0)


@pytest.mark.anyio
async def test_with_retries_runs_until_success() -> None:
    clock = FakeClock()
    seen: list[int] = []

    async def flaky(attempt: int) -> str:
        seen.append(attempt)
        if attempt < 3:
            raise TransientProviderError("again")
        return "done"

    policy = RetryPolicy(attempts=3, base=1.0, rng=lambda: 1.0)
    assert await with_retries(flaky, policy, clock, what="test") == "done"
    assert seen == [1, 2, 3]
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.anyio
async def test_interval_gate_spaces_calls() -> None:
    clock = FakeClock()
    gate = IntervalGate(5.0, clock)
    await gate.wait()
    assert clock.sleeps == []
    clock.now += 2.0
    await gate.wait()
    assert clock.sleeps == [3.0]
    clock.now += 10.0
    await gate.wait()
    assert clock.sleeps == [3.0]
    await IntervalGate(0.0, clock).wait()
    assert clock.sleeps == [3.0]


@pytest.mark.anyio
async def test_make_client_has_explicit_timeouts_and_no_redirects() -> None:
    async with make_client(connect_timeout=3, read_timeout=7, write_timeout=5, pool_timeout=2) as c:
        assert c.timeout == httpx.Timeout(connect=3, read=7, write=5, pool=2)
        assert c.follow_redirects is False


def test_bearer_auth_hides_the_key() -> None:
    auth = BearerAuth(SecretStr("sk-hidden"))
    assert "sk-hidden" not in repr(auth)
    request = httpx.Request("GET", "https://h.example/")
    flow = auth.auth_flow(request)
    assert next(flow).headers["authorization"] == "Bearer sk-hidden"
    empty = BearerAuth(SecretStr(""))
    assert "authorization" not in next(empty.auth_flow(httpx.Request("GET", "https://h/"))).headers
    assert "sk-k1" not in repr(ENDPOINT)


def test_a_redirecting_api_names_the_fix() -> None:
    err = response_error(308, b"", location="https://img.example.com/api/v1/images/generations")
    assert isinstance(err, PermanentProviderError)
    assert "redirects to https://img.example.com/api/v1/images/generations" in str(err)
    assert "set [image] api_url to the final URL" in str(err)


def test_call_timeout_caps_connect_by_the_deadline() -> None:
    long, short = call_timeout(180.0), call_timeout(3.0)
    assert (long.connect, long.read, long.write, long.pool) == (10.0, 180.0, 180.0, 180.0)
    assert (short.connect, short.read) == (3.0, 3.0)
