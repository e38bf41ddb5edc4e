"""What the look of one character resolves to now (``st-imagegen character show``): its
profile, its card, ST's own settings and the style rules, as the next job would see them."""

from __future__ import annotations

from typing import Any

from daemon.config import Config
from daemon.engine.look.appearance import CharacterStore, profile_key, resolve_look
from daemon.engine.look.styles import NO_STYLE, choose
from daemon.errors import CardError, StImagegenError
from daemon.tavern import cards, layout
from daemon.tavern.settings import read_user_settings

__all__ = ["describe_character"]


def _find_card(config: Config, name: str) -> tuple[str, str, cards.Card] | None:
    """``(user, stem, card)`` of the first card whose stem or name is ``name``."""
    if config.data_root is None:
        return None
    try:
        root = layout.resolve_data_root(config.data_root)
    except (OSError, StImagegenError):  # show works without a data root
        return None
    wanted = profile_key(name)
    for user in layout.list_users(root, config.detect.users):
        folder = root / user / "characters"
        try:
            files = sorted(p for p in folder.glob("*.png") if p.is_file())
        except OSError:
            continue
        files.sort(key=lambda p: profile_key(p.stem) != wanted)
        for path in files:
            try:
                card = cards.read_card(path)
            except CardError:
                continue
            if wanted in (profile_key(path.stem), profile_key(card.name)):
                return user, path.stem, card
    return None


def describe_character(config: Config, store: CharacterStore, name: str) -> dict[str, Any]:
    """The resolved look of ``name`` (card stem or name): where each part comes from."""
    found = _find_card(config, name)
    profile = store.get(found[1], found[2].name, name) if found else store.get(name)
    settings: dict[str, Any] = {}
    if found is not None and config.data_root is not None:
        settings = read_user_settings(layout.resolve_data_root(config.data_root), found[0])
    look = resolve_look(
        (found[2].name if found else "") or name,
        found[1] if found else "",
        profile=profile,
        card=found[2] if found else None,
        st_settings=settings,
    )
    keys = tuple(k for k in ((found[1], found[2].name) if found else (name,)) if k)
    style = choose(config, store, chat="", characters=keys)
    refs = [str(p) for p in store.reference_files(profile)] if profile else []
    use = profile.use_references if profile else None
    return {
        "name": look.name,
        "card": f"{found[0]}/characters/{found[1]}.png" if found else None,
        "appearance": look.tags,
        "appearance_from": look.source,
        "negative": look.negative,
        "negative_from": look.negative_source,
        "style": style.name or NO_STYLE,
        "style_from": style.source,
        "references": refs,
        "use_references": config.image.reference_images if use is None else use,
    }
