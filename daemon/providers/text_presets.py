"""Ready-made ``[text]`` settings for chat APIs that also draw, so one key serves both.

Plain data for a settings page and the README: each :class:`TextPreset` gives the ``[text]``
keys to set (never a key) and names the image preset (``registry``) that uses the same key.
The prompt writer works with any OpenAI-compatible chat API; these only save typing the right
address, a sensible model and the knobs that keep a thinking model's answer within
``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["TEXT_PRESETS", "TextPreset", "describe_text_presets"]


@dataclass(frozen=True)
class TextPreset:
    name: str
    title: str
    text: Mapping[str, Any]  # [text] keys to set
    image_preset: str  # the image preset using the same key ("" when none)
    notes: str = ""
    key_url: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "text": dict(self.text),
            "image_preset": self.image_preset,
            "notes": self.notes,
            "key_url": self.key_url,
        }


TEXT_PRESETS: Mapping[str, TextPreset] = MappingProxyType(
    {
        p.name: p
        for p in (
            TextPreset(
                "openrouter",
                "OpenRouter (chat completions)",
                {
                    "mode": "llm",
                    "api_url": "https://openrouter.ai/api/v1",
                    "model": "google/gemini-2.5-flash",
                    "max_tokens": 300,
                    # A reasoning model would spend the answer budget thinking: keep it short.
                    "extra_body": {"reasoning": {"effort": "low", "exclude": True}},
                },
                image_preset="openrouter-nano-banana",
                notes="the same OpenRouter key draws with backend = openrouter",
                key_url="https://openrouter.ai/settings/keys",
            ),
            TextPreset(
                "gemini-openai",
                "Google Gemini (OpenAI-compatible endpoint)",
                {
                    "mode": "llm",
                    "api_url": "https://generativelanguage.googleapis.com/v1beta/openai",
                    "model": "gemini-2.5-flash",
                    "max_tokens": 300,
                    # Gemini 2.5 Flash thinks by default, inside max_tokens: turn it off.
                    "extra_body": {"reasoning_effort": "none"},
                },
                image_preset="gemini-flash-image",
                notes="the same AI Studio key draws with backend = gemini (free tier for both)",
                key_url="https://aistudio.google.com/apikey",
            ),
        )
    }
)


def describe_text_presets() -> list[dict[str, Any]]:
    """Every prompt-writer preset as JSON-ready data."""
    return [p.as_dict() for p in TEXT_PRESETS.values()]
