"""``st-imagegen character ...`` and ``st-imagegen style ...``: profiles, references, styles.

They only edit ``<state_dir>/characters.json`` (and copy reference images next to it); the
daemon reads the file for every job, so no restart is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from daemon.cli.characters_args import SWITCH
from daemon.config import Config
from daemon.engine.look.appearance import (
    CharacterProfile,
    CharacterStore,
    profile_key,
    resolve_look,
)
from daemon.engine.look.styles import NO_STYLE, all_styles, check_style, choose
from daemon.errors import CardError, ConfigError, JobError, StImagegenError
from daemon.tavern import cards, layout
from daemon.tavern.settings import read_user_settings

__all__ = ["cmd_character", "cmd_style"]

# --- character ---------------------------------------------------------------------------------


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


def _show(config: Config, store: CharacterStore, name: str) -> dict[str, Any]:
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


def cmd_character(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    store = CharacterStore(config.state_dir)
    action = args.character_command
    if action == "set":
        changes: dict[str, Any] = {}
        for key in ("appearance", "negative"):
            value = getattr(args, key)
            if value is not None:
                changes[key] = value
        if args.style is not None:
            changes["style"] = check_style(config, args.style) if args.style.strip() else ""
        if args.references is not None:
            changes["use_references"] = SWITCH[args.references]
        if not changes:
            raise JobError("nothing to set: give --appearance, --negative, --style or --references")
        profile = store.update(args.name, **changes)
        print(f"saved {profile.name}: {_summary(profile)}", file=out)
        return 0
    if action == "list":
        profiles = store.profiles()
        if args.json:
            print(
                json.dumps([p.to_json() for p in profiles], ensure_ascii=False, indent=2), file=out
            )
            return 0
        if not profiles:
            print(
                "no character profiles (st-imagegen character set NAME --appearance ...)", file=out
            )
        for p in profiles:
            print(f"{p.name}: {_summary(p)}", file=out)
        return 0
    if action == "show":
        shown = _show(config, store, args.name)
        if args.json:
            print(json.dumps(shown, ensure_ascii=False, indent=2), file=out)
            return 0
        for key, value in shown.items():
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            print(f"{key:16} {value if value not in ('', None) else '-'}", file=out)
        return 0
    if action == "remove":
        if not store.remove(args.name):
            raise JobError(f"no profile for {args.name!r}")
        print(f"removed the profile of {args.name}", file=out)
        return 0
    if action == "ref":
        from daemon.engine.look.references import add_reference, clear_references

        if args.ref_command == "add":
            path = add_reference(store, args.name, args.file)
            print(f"added {path.name} as a reference of {args.name}", file=out)
            return 0
        if args.ref_command == "clear":
            count = clear_references(store, args.name)
            print(f"removed {count} reference image(s) of {args.name}", file=out)
            return 0
        raise ConfigError("choose an action: character ref add NAME FILE | clear NAME")
    raise ConfigError("choose an action: character set | list | show | remove | ref")


def _summary(profile: CharacterProfile) -> str:
    parts = []
    if profile.appearance:
        parts.append(f"appearance {profile.appearance!r}")
    if profile.negative:
        parts.append(f"negative {profile.negative!r}")
    if profile.style:
        parts.append(f"style {profile.style}")
    if profile.references:
        parts.append(f"{len(profile.references)} reference image(s)")
    if profile.use_references is not None:
        parts.append(f"references {'on' if profile.use_references else 'off'}")
    return ", ".join(parts) or "(empty)"


# --- style -------------------------------------------------------------------------------------


def _chat_rel(config: Config, spec: str) -> str:
    from daemon.engine.jobs.manual import resolve_chat_spec

    if config.data_root is None:
        raise ConfigError("data_root is not set (config file, ST_IMAGEGEN_DATA_ROOT, --data-root)")
    root = layout.resolve_data_root(config.data_root)
    users = layout.list_users(root, config.detect.users)
    return resolve_chat_spec(root, users, spec).rel


def cmd_style(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    store = CharacterStore(config.state_dir)
    action = args.style_command
    if action == "list":
        styles = all_styles(config)
        chats = store.chat_choices()
        users_of: dict[str, list[str]] = {}
        for rel, choice in chats.items():
            if isinstance(choice.get("style"), str):
                users_of.setdefault(choice["style"], []).append(f"chat {rel}")
        for p in store.profiles():
            if p.style:
                users_of.setdefault(p.style, []).append(f"character {p.name}")
        for name in sorted(styles):
            style = styles[name]
            mark = " (default)" if name == config.default_style.strip().lower() else ""
            origin = "config" if name in {k.lower() for k in config.styles} else "shipped"
            print(f"{name}{mark} [{origin}]", file=out)
            for label, value in (
                ("prefix", style.prefix),
                ("suffix", style.suffix),
                ("negative", style.negative),
                ("size", style.size),
                ("model", style.model),
            ):
                if value:
                    print(f"    {label:9} {value}", file=out)
            for used in users_of.get(name, []):
                print(f"    used by  {used}", file=out)
        return 0
    if action == "use":
        name = check_style(config, args.style)
        if args.chat is not None:
            rel = _chat_rel(config, args.chat)
            store.set_chat_style(rel, None if args.clear else name)
            print(
                f"{'cleared the style of' if args.clear else f'style {name} for'} chat {rel}",
                file=out,
            )
            return 0
        profile = store.update(args.character, style="" if args.clear else name)
        what = "cleared the style of" if args.clear else f"style {name} for"
        print(f"{what} character {profile.name}", file=out)
        return 0
    raise ConfigError("choose an action: style list | use NAME --chat CHAT | --character NAME")
