"""Named styles: prefix, suffix, negative, optional size and model.

Shipped styles (:data:`SHIPPED`) are always there; ``[styles.<name>]`` in the config adds styles
or replaces a shipped one of the same name (the catalogue: :mod:`daemon.configure.styles`).
Which style a job gets, first match wins:

1. the chat's choice (``st-imagegen style use NAME --chat CHAT``);
2. the character's choice (``st-imagegen style use NAME --character NAME``), the speaker's;
3. ``default_style`` from the config;
4. none (only ``[text] prefix``/``suffix``/``negative_prompt`` apply).

The name ``none`` chosen for a chat or character turns styles off there.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from daemon.config import Config
from daemon.configure.styles import (
    NO_STYLE,
    SHIPPED,
    Style,
    all_styles,
    check_default_style,
    check_style,
)
from daemon.engine.look.appearance import CharacterStore

__all__ = [
    "NO_STYLE",
    "SHIPPED",
    "ChosenStyle",
    "Style",
    "all_styles",
    "check_default_style",
    "check_style",
    "choose",
]

log = structlog.get_logger("st_imagegen.styles")


@dataclass(frozen=True, slots=True)
class ChosenStyle:
    """The style of one job and why (``source``: chat, character, default or none)."""

    style: Style | None
    source: str

    @property
    def name(self) -> str:
        return self.style.name if self.style else ""


def choose(
    config: Config, store: CharacterStore, *, chat: str, characters: tuple[str, ...]
) -> ChosenStyle:
    """The style for a job in ``chat`` spoken by ``characters`` (card stem, display name).

    A choice naming a style that no longer exists is skipped (a style removed from the config
    must not stop every job of that chat), with a warning saying so: never silently;
    ``default_style`` is checked whenever the config is loaded.
    """
    styles = all_styles(config)
    profile = store.get(*characters)
    for source, name in (
        ("chat", store.chat_style(chat)),
        ("character", profile.style if profile else None),
        ("default", config.default_style),
    ):
        if not name:
            continue
        name = name.strip().lower()
        if name == NO_STYLE:
            return ChosenStyle(None, source)
        if name in styles:
            return ChosenStyle(styles[name], source)
        log.warning(
            "style not found: skipped",
            style=name,
            chosen_for=source,
            chat=chat,
            known=sorted(styles),
            fix="add [styles.<name>] to the config (or the settings page), or choose another "
            "with `st-imagegen style use`",
        )
    return ChosenStyle(None, "none")
