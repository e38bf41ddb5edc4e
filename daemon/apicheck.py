"""The two API checks (``doctor`` and the settings page's Test button): one request each, the
answer judged in plain words with the fix. Kept apart from :mod:`daemon.doctor` so the web
settings can run them without importing everything ``doctor`` looks at."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio
import httpx

from daemon.config import Config
from daemon.errors import (
    AuthError,
    ConfigError,
    PermanentProviderError,
    RateLimitedError,
    StImagegenError,
    TransientProviderError,
)
from daemon.providers.backend import ImageBackend
from daemon.providers.factory import make_image_backend
from daemon.providers.http import RetryPolicy, make_client
from daemon.providers.registry import backend_info, check_settings, image_api_url
from daemon.providers.text import PromptWriter

__all__ = [
    "API_CHECK_GRACE_SECONDS",
    "ONE_ATTEMPT",
    "CheckResult",
    "check_image_api",
    "check_prompt_api",
]

ONE_ATTEMPT = RetryPolicy(attempts=1)
"""doctor sends exactly one request per API and reports the first failure as it is."""

API_CHECK_GRACE_SECONDS = 5.0
"""Added to a section's timeout_seconds for doctor's one request (connect and teardown)."""

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]


@dataclass(frozen=True)
class CheckResult:
    """One check: what was looked at, what was found and, on failure, how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def render(self) -> str:
        line = f"{self.status}  {self.name}: {self.detail}"
        return f"{line}\n      fix: {self.fix}" if self.fix and self.status != "PASS" else line


def _pass(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "PASS", detail)


def _fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "FAIL", detail, fix)


def _warn(name: str, detail: str, fix: str = "") -> CheckResult:
    return CheckResult(name, "WARN", detail, fix)


def _skip(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "SKIP", detail)


# --- the two APIs ------------------------------------------------------------------------------


_OPENAI_URL_FORM = "a base URL must end in /v1"


def _api_failure(
    name: str, section: str, url: str, exc: BaseException, form: str = _OPENAI_URL_FORM
) -> CheckResult:
    env = f"ST_IMAGEGEN_{section.upper()}__API_KEY"
    if isinstance(exc, AuthError):
        return _fail(
            name,
            f"{url} refused the key (HTTP {exc.status}): {exc}",
            f"check {section}.api_key (or {env}, or {section}.api_key_file): it must be a valid "
            f"key for {url}",
        )
    if isinstance(exc, RateLimitedError):
        return _fail(
            name,
            f"{url} answered 429 Too Many Requests: {exc}",
            "the key works but is over its rate limit or out of credit: wait, check your plan, "
            "or lower limits.concurrency",
        )
    if isinstance(exc, TransientProviderError) and exc.status is None:
        return _fail(
            name,
            f"{url} cannot be reached: {exc}",
            f"check {section}.api_url (host, port, http/https; {form}) and "
            "that the server is running and reachable from this machine",
        )
    if isinstance(exc, TransientProviderError):
        return _fail(
            name,
            f"{url} failed (HTTP {exc.status}): {exc}",
            "the service has trouble right now: try again later",
        )
    if isinstance(exc, PermanentProviderError) and exc.status == 404:
        return _fail(
            name,
            f"{url} answered 404 Not Found: {exc}",
            f"check {section}.api_url (the full endpoint URL or {form}) and {section}.model"
            if form == _OPENAI_URL_FORM
            else f"check {section}.api_url ({form}) and {section}.model",
        )
    if isinstance(exc, ConfigError):
        return _fail(name, str(exc), f"fix {section}.api_url in the config file or environment")
    if isinstance(exc, TimeoutError):
        return _fail(
            name,
            f"{url} did not answer in time",
            f"check {section}.api_url; a slow service needs a larger {section}.timeout_seconds",
        )
    return _fail(name, f"{url}: {exc}", f"check the [{section}] settings (api_url, model, api_key)")


def _check_api(
    name: str,
    section: str,
    api_url: str,
    model: str,
    timeout: float,
    check: Callable[[httpx.AsyncClient], Awaitable[str | None]],
    form: str = _OPENAI_URL_FORM,
) -> CheckResult:
    """One request through ``check`` (a provider's own check, one attempt), judged."""
    if not api_url:
        env = f"ST_IMAGEGEN_{section.upper()}__API_URL"
        return _fail(name, f"{section}.api_url is not set", f"set {section}.api_url ({env})")

    async def run() -> str | None:
        async with make_client() as client:
            with anyio.fail_after(timeout + API_CHECK_GRACE_SECONDS):
                return await check(client)

    try:
        warning = anyio.run(run)
    except (StImagegenError, httpx.HTTPError, OSError, TimeoutError) as exc:
        return _api_failure(name, section, api_url, exc, form)
    if warning:
        return _warn(name, f"{api_url} answered, but {warning}", f"check {section}.model")
    return _pass(name, f"{api_url} answered (model {model})")


def check_prompt_api(config: Config) -> CheckResult:
    text = config.text
    if text.mode == "template":
        return _skip("prompt API", "not used (text.mode = template)")

    async def check(client: httpx.AsyncClient) -> str | None:
        await PromptWriter(text, client, limits=config.limits, retry=ONE_ATTEMPT).check()
        return None

    return _check_api("prompt API", "text", text.api_url, text.model, text.timeout_seconds, check)


def check_image_api(config: Config, *, skip: bool) -> CheckResult:
    image = config.image
    if skip:
        return _skip("image API", "skipped (--skip-image)")
    try:
        check_settings(image)
    except ConfigError as exc:
        return _fail("image API", str(exc), "fix the [image] settings in the config file")
    info = backend_info(image.backend)
    built: list[ImageBackend] = []

    async def check(client: httpx.AsyncClient) -> str | None:
        backend = make_image_backend(image, client, limits=config.limits, retry=ONE_ATTEMPT)
        built.append(backend)
        return await backend.check()

    model = image.model or info.default_model or "the server's default"
    api_url = image_api_url(image)
    result = _check_api(
        "image API", "image", api_url, model, image.timeout_seconds, check, info.url_hint
    )
    # Local servers say what they have (models, samplers, GPU): worth a line when it works.
    summary = str(getattr(built[0], "summary", "")) if built else ""
    if summary and result.status == "PASS":
        return _pass("image API", f"{api_url} ({image.backend}) answered: {summary}")
    return result
