"""The prompt writer: a character reply (plus card and context) in, one image prompt out.

``llm`` mode asks an OpenAI-compatible chat completions API; ``template`` mode fills a template and
needs no network. Either way the result gets the configured prefix, suffix and length cap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import structlog

from daemon.config import LimitsSettings, TextSettings
from daemon.errors import BadResponseError, ContentRefusedError
from daemon.providers.cleanup import (
    ThinkingUnfinished,
    cap_at_word,
    clean_answer,
    clean_reply,
    collapse,
    is_refusal,
    join_prompt,
    join_tags,
)
from daemon.providers.http import (
    BearerAuth,
    Clock,
    Endpoint,
    RetryPolicy,
    SystemClock,
    call_timeout,
    endpoint_url,
    error_fields,
    error_from_response,
    error_from_transport,
    read_capped,
    scrubbed,
    with_retries,
)

__all__ = [
    "CardInfo",
    "PromptInput",
    "PromptWriter",
    "WrittenPrompt",
    "build_messages",
    "extract_answer",
    "fill_template",
]

log = structlog.get_logger(__name__)

MAX_ANSWER_BYTES = 4 * 1024 * 1024
MAX_CONTEXT_MESSAGE_CHARS = 2000
FINAL_INSTRUCTION = (
    "Write the image prompt for the MESSAGE TO ILLUSTRATE above now. Follow the instruction "
    "you were given; do not continue the roleplay. Output only the prompt."
)
_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_]+)\s*\}\}")
_NOT_TEXT_PARTS = {"reasoning", "thinking", "thought", "redacted_thinking", "reasoning_text"}


@dataclass(frozen=True)
class CardInfo:
    """The character card fields the prompt may use."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""


@dataclass(frozen=True)
class PromptInput:
    """One reply to illustrate. ``context`` is ``(speaker, text)`` pairs, oldest first."""

    reply: str
    speaker: str
    card: CardInfo | None = None
    context: Sequence[tuple[str, str]] = ()
    user: str = ""  # the user's persona name, for {{user}}
    # ``(name, tags)`` of the characters in the picture: the LLM is told them, and they are
    # prefixed to its prompt so it cannot drop them.
    appearance: Sequence[tuple[str, str]] = ()
    persona: str = ""  # the user persona's description, when the reply involves the user
    style_prefix: str = ""  # the job's style, around the configured prefix and suffix
    style_suffix: str = ""
    negative: str = ""  # the style's and the characters' negatives, added to the configured one


@dataclass(frozen=True)
class WrittenPrompt:
    """The final prompt (prefix and suffix applied, capped) and the negative prompt."""

    prompt: str
    negative: str


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """``{{name}}`` placeholders (case-insensitive) replaced; unknown ones are left visible."""

    def one(match: re.Match[str]) -> str:
        return values.get(match.group(1).lower(), match.group(0))

    return _PLACEHOLDER.sub(one, template)


def _macros(text: str, item: PromptInput) -> str:
    """ST's ``{{char}}``/``{{user}}`` macros inside card fields, resolved."""
    name = item.card.name if item.card and item.card.name else item.speaker
    return fill_template(text, {"char": name, "user": item.user or "the user"})


def build_messages(settings: TextSettings, item: PromptInput) -> list[dict[str, str]]:
    """The system instruction and one user turn with clearly delimited parts.

    The instruction is repeated at the end of the user turn: RP-tuned models and jailbreak
    presets follow the last user turn better than a system prompt (providers.md R2).
    """
    parts: list[str] = []
    card = item.card if settings.include_character_card else None
    if card is not None:
        lines = ["--- Character Information ---", f"Name: {card.name or item.speaker}"]
        for label, value in (
            ("Description", card.description),
            ("Personality", card.personality),
            ("Scenario", card.scenario),
        ):
            cleaned = clean_reply(_macros(value, item))
            if cleaned:
                lines.append(f"{label}: {cleaned}")
        lines.append("--- End of Character Information ---")
        parts.append("\n".join(lines))
    n = settings.context_messages
    context = list(item.context)[-n:] if n > 0 else []
    if context:
        lines = ["--- Earlier Messages (context only; do not illustrate them) ---"]
        for speaker, text in context:
            cleaned = cap_at_word(clean_reply(text), MAX_CONTEXT_MESSAGE_CHARS)
            if cleaned:
                lines.append(f"{speaker}: {cleaned}")
        lines.append("--- End of Earlier Messages ---")
        parts.append("\n".join(lines))
    looks = [(name, collapse(tags)) for name, tags in item.appearance if tags.strip()]
    if looks:
        lines = [
            "--- Character Appearance (fixed tags, already added to the prompt: keep the picture "
            "consistent with them, never contradict them, do not repeat them) ---"
        ]
        lines += [f"{name}: {tags}" for name, tags in looks]
        lines.append("--- End of Character Appearance ---")
        parts.append("\n".join(lines))
    if item.persona.strip():
        who = item.user or "the user"
        parts.append(
            f"--- The User ({who}; describe them like this if they are in the picture) ---\n"
            f"{clean_reply(_macros(item.persona, item))}\n--- End of The User ---"
        )
    parts.append(
        f"--- MESSAGE TO ILLUSTRATE (from {item.speaker}) ---\n"
        f"{clean_reply(item.reply)}\n--- End of Message ---"
    )
    parts.append(FINAL_INSTRUCTION)
    return [
        {"role": "system", "content": settings.system_prompt},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def _content_text(content: Any) -> str:
    """Text of ``content``: a string, or an array of parts minus reasoning/thought parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict):
                continue
            kind = str(part.get("type") or "text").lower()
            if kind in _NOT_TEXT_PARTS or part.get("thought") is True:
                continue
            if kind in ("text", "output_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return ""


def _first_choice(payload: Any, bad: Callable[[str], BadResponseError]) -> dict[str, Any]:
    """The first choice of a chat completions answer (some proxies wrap it in ``data``)."""
    if (
        isinstance(payload, dict)
        and "choices" not in payload
        and isinstance(payload.get("data"), dict)
    ):
        payload = payload["data"]
    if not isinstance(payload, dict):
        raise bad("the answer is not a JSON object")
    if "error" in payload and not payload.get("choices"):
        err_text, _code, _param = error_fields(json.dumps(payload).encode())
        raise bad(f"the answer is an error: {err_text or 'no message'}")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad("the answer has no choices")
    first: dict[str, Any] = choices[0]
    return first


def extract_answer(payload: Any, endpoint: Endpoint, budget: str) -> str:
    """The cleaned prompt from a chat completions answer, or a clear error.

    ``budget`` describes the token budget ("max_tokens=300") for the "reasoning ate it" message.
    """

    def bad(text: str) -> BadResponseError:
        return BadResponseError(
            f"{endpoint.label}: {text}", provider=endpoint.label, status=200, body=raw
        )

    raw = json.dumps(payload)[:2000] if payload is not None else ""
    choice = _first_choice(payload, bad)
    message: Any = choice.get("message")
    if not isinstance(message, dict):
        message = {"content": choice.get("text")} if isinstance(choice.get("text"), str) else {}
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        raise ContentRefusedError(
            f"{endpoint.label}: the model refused: {collapse(refusal)[:200]}",
            provider=endpoint.label,
            status=200,
            body=raw,
        )
    text = _content_text(message.get("content"))
    if not text.strip() and isinstance(message.get("text"), str):
        text = message["text"]
    finish = str(choice.get("finish_reason") or "")
    reasoning = any(message.get(k) for k in ("reasoning_content", "reasoning", "thinking"))
    if not text.strip():
        if finish == "length":
            raise bad(
                f"the model used the whole token budget ({budget}) on reasoning and wrote no "
                "prompt: raise [text] max_tokens (thinking models need about 1000-4000) or use "
                "a model without reasoning"
            )
        if finish == "content_filter":
            raise ContentRefusedError(
                f"{endpoint.label}: the answer was blocked by a content filter",
                provider=endpoint.label,
                status=200,
                body=raw,
            )
        if reasoning:
            raise bad("the model answered only with reasoning and no prompt")
        raise bad("the model's answer is empty")
    try:
        prompt = clean_answer(text)
    except ThinkingUnfinished:
        hint = f" (the token budget {budget} ran out)" if finish == "length" else ""
        raise bad(
            f"the model never finished reasoning{hint}: raise [text] max_tokens or use a "
            "model without reasoning"
        ) from None
    if is_refusal(prompt):
        raise ContentRefusedError(
            f"{endpoint.label}: the model refused instead of writing a prompt: {prompt[:200]}",
            provider=endpoint.label,
            status=200,
            body=raw,
        )
    if not prompt:
        raise bad("the model's answer held no prompt after cleanup")
    return prompt


_REJECTION = re.compile(
    r"unsupported|not supported|does not support|unknown|unrecognized|not allowed|"
    r"not permitted|extra (?:inputs|fields)|only the default|invalid (?:param|argument|field)|"
    r"use '?max_completion_tokens|use '?max_tokens",
    re.IGNORECASE,
)


def _rejects(body: bytes, name: str, *, strict: bool) -> bool:
    """Does a 400 answer reject the request field ``name``?

    With ``strict``, only the field itself ("unsupported parameter"), not its value: "max_tokens
    is too large" gets no fallback, the user sees the API's message instead.
    """
    message, code, param = error_fields(body)
    named = (
        param == name
        if param
        else bool(re.search(rf"(?<![a-z_]){re.escape(name)}(?![a-z_])", message))
    )
    if not named:
        return False
    if not strict or not message:
        return True
    return bool(_REJECTION.search(message) or _REJECTION.search(code))


class PromptWriter:
    """Writes image prompts. One instance per run: it remembers which fallbacks the API needed."""

    def __init__(
        self,
        settings: TextSettings,
        client: httpx.AsyncClient,
        *,
        limits: LimitsSettings | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        limits = limits or LimitsSettings()
        self._settings = settings
        self._client = client
        self._clock = clock or SystemClock()
        self._retry = retry or RetryPolicy.from_limits(limits)
        self._limiter = anyio.CapacityLimiter(limits.text_concurrency)
        self._auth = BearerAuth(settings.api_key)
        self._url = ""
        if settings.mode == "llm":
            self._url = endpoint_url(settings.api_url, "chat/completions", "text")
        self._endpoint = Endpoint(
            "prompt API", self._url, "text", settings.api_key.get_secret_value()
        )
        # Learned from the API's own 400s, kept for the rest of the run.
        self.budget_field: str = settings.max_tokens_field
        self.send_temperature = True

    def __repr__(self) -> str:
        return f"PromptWriter(mode={self._settings.mode!r}, url={self._url!r})"

    async def write(self, item: PromptInput) -> WrittenPrompt:
        """The prompt for ``item``; raises ``ProviderError`` subclasses."""
        if self._settings.mode == "template":
            core = self._from_template(item)
        else:
            core = await self._ask(build_messages(self._settings, item))
        return self._finish(core, item)

    @property
    def llm(self) -> bool:
        """Does an LLM write the prompts (else a template)?"""
        return self._settings.mode == "llm"

    @property
    def max_prompt_chars(self) -> int:
        return self._settings.max_prompt_chars

    @property
    def url(self) -> str:
        """Where :meth:`write` posts (empty in template mode)."""
        return self._url

    def request_body(self, item: PromptInput) -> dict[str, Any]:
        """The JSON body :meth:`write` posts to the prompt API for ``item`` (its first attempt:
        a fallback learned from a 400 changes only the token-budget field or drops the
        temperature). What the settings page's preview shows."""
        return self._body(build_messages(self._settings, item), None)

    def template_core(self, item: PromptInput) -> str:
        """What template mode writes for ``item`` before :meth:`finish`."""
        return self._from_template(item)

    def finish(self, core: str, item: PromptInput) -> WrittenPrompt:
        """The image prompt made of the prompt writer's ``core`` (an LLM's answer or the
        template's text): prefixes, style, appearance tags, suffixes and the negative."""
        return self._finish(core, item)

    async def check(self) -> None:
        """One tiny request (for ``doctor``); template mode needs no API and passes."""
        if self._settings.mode == "template":
            return
        messages = [{"role": "user", "content": "Reply with the single word OK."}]
        await self._ask(messages, max_tokens=16, parse=False)

    def _from_template(self, item: PromptInput) -> str:
        card = item.card or CardInfo(name=item.speaker)
        values = {
            "char": card.name or item.speaker,
            "message": collapse(clean_reply(item.reply)),
            "description": collapse(clean_reply(_macros(card.description, item))),
            "personality": collapse(clean_reply(_macros(card.personality, item))),
            "scenario": collapse(clean_reply(_macros(card.scenario, item))),
            "user": item.user,
            "appearance": ", ".join(collapse(t) for _n, t in item.appearance if t.strip()),
            "persona": collapse(clean_reply(item.persona)),
        }
        return collapse(fill_template(self._settings.template, values))

    def _finish(self, core: str, item: PromptInput | None = None) -> WrittenPrompt:
        s = self._settings
        item = item or PromptInput(reply="", speaker="")
        tags = [t for _name, t in item.appearance]
        prefix = join_tags(item.style_prefix, s.prefix, *tags)
        suffix = join_tags(s.suffix, item.style_suffix)
        room = s.max_prompt_chars - (len(join_prompt(prefix, "x", suffix)) - 1)
        core = cap_at_word(core, max(room, 0)) if room > 0 else ""
        prompt = join_prompt(prefix, core, suffix) if core else ""
        prompt = cap_at_word(prompt, s.max_prompt_chars)
        if not core:
            raise BadResponseError(
                "the written prompt is empty (check [text] template, prefix, suffix and "
                "max_prompt_chars)",
                provider=self._endpoint.label,
            )
        return WrittenPrompt(prompt=prompt, negative=join_tags(s.negative_prompt, item.negative))

    def _body(self, messages: list[dict[str, str]], max_tokens: int | None) -> dict[str, Any]:
        s = self._settings
        body: dict[str, Any] = {"model": s.model, "messages": messages}
        if self.send_temperature:
            body["temperature"] = s.temperature
        body[self.budget_field] = max_tokens or s.max_tokens
        for key, value in s.extra_body.items():
            if key == "temperature" and not self.send_temperature:
                continue  # the API refused it once: extra_body does not bring it back
            body[key] = value
        return body

    async def _ask(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None, parse: bool = True
    ) -> str:
        async def attempt(n: int) -> str:
            return await self._attempt(messages, max_tokens, parse)

        with scrubbed(self._endpoint.secret):
            async with self._limiter:
                return await with_retries(attempt, self._retry, self._clock, what="prompt API")

    async def _attempt(
        self, messages: list[dict[str, str]], max_tokens: int | None, parse: bool
    ) -> str:
        adjusted: set[str] = set()
        while True:
            body = self._body(messages, max_tokens)
            status, headers, raw = await self._post(body)
            if 200 <= status < 300:
                break
            if status == 400 and self._fallback(raw, adjusted):
                continue
            raise error_from_response(self._endpoint, status, raw, headers, self._clock)
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadResponseError(
                f"{self._endpoint.label} answered with something that is not JSON: check "
                "[text] api_url points at a chat completions API",
                provider=self._endpoint.label,
                status=status,
                body=raw,
            ) from None
        if not parse:
            return ""
        budget = f"{self.budget_field}={max_tokens or self._settings.max_tokens}"
        return extract_answer(payload, self._endpoint, budget)

    def _fallback(self, raw: bytes, adjusted: set[str]) -> bool:
        """Adapt to a 400 that names a field we sent; True if the request should be re-sent."""
        field = self.budget_field
        if field not in adjusted and _rejects(raw, field, strict=True):
            other = "max_completion_tokens" if field == "max_tokens" else "max_tokens"
            adjusted.add(field)
            adjusted.add(other)
            self.budget_field = other
            log.info("prompt_api_fallback", api=self._endpoint.host, rejected=field, using=other)
            return True
        if (
            self.send_temperature
            and "temperature" not in adjusted
            and _rejects(raw, "temperature", strict=False)
        ):
            adjusted.add("temperature")
            self.send_temperature = False
            log.info("prompt_api_fallback", api=self._endpoint.host, rejected="temperature")
            return True
        return False

    async def _post(self, body: dict[str, Any]) -> tuple[int, httpx.Headers, bytes]:
        timeout = self._settings.timeout_seconds
        log.debug("prompt_request", api=self._endpoint.host, model=self._settings.model)
        try:
            with anyio.fail_after(timeout):
                async with self._client.stream(
                    "POST",
                    self._url,
                    json=body,
                    auth=self._auth,
                    timeout=call_timeout(timeout),
                ) as response:
                    raw = await read_capped(response, MAX_ANSWER_BYTES + 1)
                    if len(raw) > MAX_ANSWER_BYTES and response.is_success:
                        raise BadResponseError(
                            f"{self._endpoint.label} answered with more than {MAX_ANSWER_BYTES} "
                            "bytes: check [text] api_url points at a chat completions API",
                            provider=self._endpoint.label,
                            status=response.status_code,
                        )
                    return response.status_code, response.headers, raw[:MAX_ANSWER_BYTES]
        except (TimeoutError, httpx.TransportError) as exc:
            raise error_from_transport(self._endpoint, exc) from exc
