"""Ready-made choices for the setup screen: image services (the backends' own presets, from the
registry) and prompt writers (the LLM services below). A preset is plain data: the keys it sets,
whether a key and an address are needed, where to get a key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SetupPreset", "image_presets", "text_presets"]


@dataclass(frozen=True)
class SetupPreset:
    name: str
    title: str
    section: str  # "image" or "text"
    values: dict[str, Any] = field(default_factory=dict)  # dotted keys to set
    needs_key: bool = True
    needs_url: bool = False  # the user types the address (a custom or local service)
    key_url: str = ""
    notes: str = ""
    local: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "section": self.section,
            "values": self.values,
            "needs_key": self.needs_key,
            "needs_url": self.needs_url,
            "key_url": self.key_url,
            "notes": self.notes,
            "local": self.local,
        }


def _flat(prefix: str, values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dict(values).items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def image_presets() -> list[SetupPreset]:
    """Every image backend's presets, then "any OpenAI-compatible service"."""
    from daemon.providers.profiles import PROFILES
    from daemon.providers.registry import BACKENDS

    out: list[SetupPreset] = []
    for info in BACKENDS.values():
        for preset in info.presets:
            values = _flat("image", preset.image)
            profile = PROFILES.get(str(preset.image.get("profile", "")))
            needs_key = info.key_required if profile is None else profile.key_required
            has_url = bool(values.get("image.api_url") or info.default_url)
            has_url = has_url or bool(profile is not None and profile.default_url)
            out.append(
                SetupPreset(
                    name=preset.name,
                    title=preset.title,
                    section="image",
                    values=values,
                    needs_key=needs_key,
                    needs_url=not has_url,
                    key_url=preset.key_url,
                    notes=preset.notes,
                    local=not needs_key
                    and str(values.get("image.api_url", "")).startswith("http://127."),
                )
            )
    # Free hosted services first (a first picture with nothing to sign up for), then the
    # services that want a key, then servers on this machine.
    out.sort(key=lambda p: (p.local, p.needs_key))
    out.append(
        SetupPreset(
            name="custom",
            title="Any OpenAI-compatible images API",
            section="image",
            values={"image.backend": next(iter(BACKENDS)), "image.profile": "generic"},
            needs_key=False,
            needs_url=True,
            notes="its address ends in /v1; a key only if it wants one",
        )
    )
    return out


def text_presets() -> list[SetupPreset]:
    """The prompt writer: an OpenAI-compatible chat API, or no LLM at all."""
    return [
        SetupPreset(
            "openai",
            "OpenAI",
            "text",
            {
                "text.mode": "llm",
                "text.api_url": "https://api.openai.com/v1",
                "text.model": "gpt-4o-mini",
            },
            key_url="https://platform.openai.com/api-keys",
        ),
        SetupPreset(
            "openrouter",
            "OpenRouter",
            "text",
            {
                "text.mode": "llm",
                "text.api_url": "https://openrouter.ai/api/v1",
                "text.model": "google/gemini-2.5-flash",
            },
            key_url="https://openrouter.ai/settings/keys",
        ),
        SetupPreset(
            "gemini",
            "Google Gemini",
            "text",
            {
                "text.mode": "llm",
                "text.api_url": "https://generativelanguage.googleapis.com/v1beta/openai",
                "text.model": "gemini-2.5-flash",
            },
            key_url="https://aistudio.google.com/apikey",
        ),
        SetupPreset(
            "pollinations",
            "Pollinations (free, no key)",
            "text",
            {
                "text.mode": "llm",
                "text.api_url": "https://gen.pollinations.ai/v1",
                "text.model": "openai",
            },
            needs_key=False,
            key_url="https://enter.pollinations.ai",
        ),
        SetupPreset(
            "ollama",
            "Ollama on this machine",
            "text",
            {"text.mode": "llm", "text.api_url": "http://127.0.0.1:11434/v1"},
            needs_key=False,
            local=True,
        ),
        SetupPreset(
            "koboldcpp",
            "KoboldCpp / LM Studio / llama.cpp on this machine",
            "text",
            {"text.mode": "llm", "text.api_url": "http://127.0.0.1:5001/v1"},
            needs_key=False,
            needs_url=True,
            local=True,
            notes="KoboldCpp :5001, LM Studio :1234, llama.cpp :8080 (each ends in /v1)",
        ),
        SetupPreset(
            "custom",
            "Any OpenAI-compatible chat API",
            "text",
            {"text.mode": "llm"},
            needs_key=False,
            needs_url=True,
            notes="its address ends in /v1; a key only if it wants one",
        ),
        SetupPreset(
            "template",
            "No language model (the reply itself is the prompt)",
            "text",
            {"text.mode": "template"},
            needs_key=False,
            notes="cheaper and faster, but the pictures follow the reply's words literally",
        ),
    ]
