"""Text cleaning for the prompt writer: what goes in (a reply) and what comes back (an answer).

Pure functions, no I/O. The answer rules follow providers.md §1.3: reasoning blocks, chatty
preambles, labels, quotes and fences never reach the image prompt, and a refusal is never a prompt.
"""

from __future__ import annotations

import html
import re

__all__ = [
    "ThinkingUnfinished",
    "cap_at_word",
    "clean_answer",
    "clean_reply",
    "collapse",
    "is_refusal",
    "join_prompt",
    "join_tags",
    "strip_html",
    "strip_think",
]

_THINK_TAGS = "think|thinking|reasoning"
_THINK_BLOCK = re.compile(rf"<({_THINK_TAGS})\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_THINK_CLOSE = re.compile(rf"</(?:{_THINK_TAGS})\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(rf"<(?:{_THINK_TAGS})\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9:-]*(?:\s[^<>]*)?/?\s*>")
_BLOCK_TAG = re.compile(r"<\s*(?:br|/p|/div|/li|/h[1-6])\b[^>]*>", re.IGNORECASE)
_DROP_ELEMENTS = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\r?\n?(.*?)(?:```|\Z)", re.DOTALL)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|okay|ok|certainly|of course|absolutely|alright|here(?:'s|’s| is| are)|"
    r"below is)\b[^\n:]{0,100}:\s*",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\s*(?:\*\*|__)?\s*(?:final\s+|image\s+|positive\s+|stable diffusion\s+|sd\s+)?"
    r"prompt\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_NOTE = re.compile(
    r"^\s*\(?\s*(?:\*\*)?(?:note|notes|explanation|negative prompt|negative)\s*(?:\*\*)?\s*:",
    re.IGNORECASE,
)
_QUOTES = (
    ("**", "**"),
    ("__", "__"),
    ('"', '"'),
    ("'", "'"),
    ("“", "”"),
    ("‘", "’"),
    ("«", "»"),
    ("„", "“"),
    ("`", "`"),
)
_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:no|')t|i can’t|i cannot|"
    r"i'?m (?:not able|unable)|i am (?:not able|unable)|i won'?t|i won’t|i will not|"
    r"as an ai\b|i must decline|i'?m not comfortable|unfortunately,? i can)",
    re.IGNORECASE,
)


class ThinkingUnfinished(ValueError):
    """The answer opens a reasoning block and never closes it: there is no prompt."""


def strip_think(text: str, *, unclosed_is_error: bool) -> str:
    """``text`` without reasoning blocks.

    Complete ``<think>…</think>`` blocks go; a stray closing tag (a prefill opened the block)
    keeps only what follows the last one; an unclosed opening tag drops everything after it,
    and if nothing came before it, raises :class:`ThinkingUnfinished` when ``unclosed_is_error``.
    """
    text = _THINK_BLOCK.sub(" ", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:
        before = text[: opened.start()]
        if not before.strip() and unclosed_is_error:
            raise ThinkingUnfinished("the model never finished its reasoning block")
        text = before
    return text


def strip_html(text: str) -> str:
    """``text`` with HTML tags removed (block tags become line breaks) and entities decoded."""
    text = _DROP_ELEMENTS.sub(" ", text)
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def collapse(text: str) -> str:
    """All whitespace runs (newlines included) as single spaces, trimmed."""
    return " ".join(text.split())


def clean_reply(text: str) -> str:
    """A character reply made fit to send: no reasoning, no HTML, tidy paragraphs."""
    text = strip_think(text, unclosed_is_error=False)
    text = strip_html(text)
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _unquote(text: str) -> str:
    text = text.strip()
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for left, right in _QUOTES:
            inner = text[len(left) : -len(right)]
            if text.startswith(left) and text.endswith(right) and left not in inner.strip(left):
                text = inner.strip()
                changed = True
                break
    return text


def _unfence(text: str) -> str:
    match = _FENCE.search(text)
    if match and match.group(1).strip():
        return match.group(1)
    return text.replace("```", "")


def _strip_lead(text: str) -> str:
    """Preambles ("Sure, here's the prompt:") and labels ("Prompt:"), repeatedly."""
    while True:
        new = _LABEL.sub("", _PREAMBLE.sub("", text, count=1), count=1)
        if new == text:
            return text
        text = new


def clean_answer(text: str) -> str:
    """The image prompt inside a model's answer, or "" if there is none.

    Raises :class:`ThinkingUnfinished` when the answer is an unclosed reasoning block.
    """
    text = strip_think(text, unclosed_is_error=True)
    text = _unfence(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    # A first line that is only a preamble or a label ("Here is your prompt:") goes.
    while len(lines) > 1 and not _strip_lead(lines[0]).strip(" *_:"):
        lines.pop(0)
    if lines:
        lines[0] = _strip_lead(lines[0])
    # Several alternatives ("1. …", "2. …"): keep the first one.
    if len(lines) > 1 and all(_NUMBERED.match(line) for line in lines[:2]):
        lines = [_NUMBERED.sub("", lines[0])]
    # Trailing notes or explanations are not part of the prompt.
    kept: list[str] = []
    for line in lines:
        if kept and _NOTE.match(line):
            break
        kept.append(line)
    text = collapse(_join_lines(kept))
    text = _unquote(_strip_lead(_unquote(text)))
    return text.strip()


def _join_lines(lines: list[str]) -> str:
    """Lines as one: a line break becomes ", " unless the line already ends a phrase."""
    out = ""
    for line in lines:
        if out:
            out += " " if out.rstrip()[-1:] in ",.;:!?" else ", "
        out += line
    return out


def is_refusal(text: str) -> bool:
    """Does the answer open like a refusal ("I can't help with that")?"""
    return bool(_REFUSAL.match(text.replace("’", "'")))


def cap_at_word(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    space = cut.rfind(" ")
    # Only back off to a space if that keeps most of the budget (one giant "word" is cut hard).
    cut = cut[:space] if space >= limit // 2 else text[:limit]
    return cut.rstrip(" ,;:-")


_SEPARATORS = ",;:."


def join_prompt(prefix: str, core: str, suffix: str) -> str:
    """Prefix, prompt and suffix joined the way a user writes tags.

    A part that brings its own separator keeps it ("anime style," + core; core + ", soft light",
    with no space before the comma); other parts are joined with ", ", the separator of image
    prompts. Empty parts vanish.
    """
    out = core.strip()
    if prefix := prefix.strip():
        out = f"{prefix} {out}" if prefix[-1] in _SEPARATORS else f"{prefix}, {out}"
    if suffix := suffix.strip():
        if suffix[0] in _SEPARATORS:
            out = out.rstrip(_SEPARATORS + " ") + suffix
        else:
            out = f"{out}, {suffix}"
    return out


def join_tags(*parts: str) -> str:
    """Tag groups joined like :func:`join_prompt` joins a prefix: empty groups vanish, a group
    ending in its own separator keeps it, and a tag group already there is not added twice."""
    out = ""
    seen: set[str] = set()
    for part in parts:
        part = collapse(part)
        key = part.strip(_SEPARATORS + " ").casefold()
        if not key or key in seen:
            continue
        seen.add(key)
        out = join_prompt(out, part, "") if out else part
    return out.strip()
