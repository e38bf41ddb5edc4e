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
from daemon.engine.front import CharacterProfile, Engine
from daemon.errors import ConfigError, JobError

__all__ = ["cmd_character", "cmd_style"]

# --- character ---------------------------------------------------------------------------------


def cmd_character(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    actions = {
        "set": _character_set,
        "list": _character_list,
        "show": _character_show,
        "remove": _character_remove,
        "ref": _character_ref,
    }
    action = actions.get(args.character_command)
    if action is None:
        raise ConfigError("choose an action: character set | list | show | remove | ref")
    return action(Engine(config), args, out or sys.stdout)


def _character_set(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    changes: dict[str, Any] = {}
    for key in ("appearance", "negative"):
        value = getattr(args, key)
        if value is not None:
            changes[key] = value
    if args.style is not None:
        changes["style"] = engine.check_style(args.style) if args.style.strip() else ""
    if args.references is not None:
        changes["use_references"] = SWITCH[args.references]
    if not changes:
        raise JobError("nothing to set: give --appearance, --negative, --style or --references")
    profile = engine.characters.update(args.name, **changes)
    print(f"saved {profile.name}: {_summary(profile)}", file=out)
    return 0


def _character_list(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    profiles = engine.characters.profiles()
    if args.json:
        print(json.dumps([p.to_json() for p in profiles], ensure_ascii=False, indent=2), file=out)
        return 0
    if not profiles:
        print("no character profiles (st-imagegen character set NAME --appearance ...)", file=out)
    for p in profiles:
        print(f"{p.name}: {_summary(p)}", file=out)
    return 0


def _character_show(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    shown = engine.describe_character(args.name)
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2), file=out)
        return 0
    for key, value in shown.items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key:16} {value if value not in ('', None) else '-'}", file=out)
    return 0


def _character_remove(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    if not engine.characters.remove(args.name):
        raise JobError(f"no profile for {args.name!r}")
    print(f"removed the profile of {args.name}", file=out)
    return 0


def _character_ref(engine: Engine, args: argparse.Namespace, out: TextIO) -> int:
    if args.ref_command == "add":
        path = engine.add_reference(args.name, args.file)
        print(f"added {path.name} as a reference of {args.name}", file=out)
        return 0
    if args.ref_command == "clear":
        count = engine.clear_references(args.name)
        print(f"removed {count} reference image(s) of {args.name}", file=out)
        return 0
    raise ConfigError("choose an action: character ref add NAME FILE | clear NAME")


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


def cmd_style(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    engine = Engine(config)
    store = engine.characters
    action = args.style_command
    if action == "list":
        styles = engine.styles()
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
        name = engine.check_style(args.style)
        if args.chat is not None:
            rel = engine.find_chat(args.chat)
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
