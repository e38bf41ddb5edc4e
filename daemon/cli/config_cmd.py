"""``st-imagegen config example --write | get KEY | set KEY VALUE``: the config file from the
command line, through the same checked writer as the settings page."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr

from daemon.config import ConfigSource
from daemon.configure.keys import SECRET_FILES, mask, needs_restart
from daemon.configure.writer import ConfigWriter, coerce, field_for, write_text_atomic
from daemon.errors import ConfigError

__all__ = ["cmd_config"]


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _secret_text(value: SecretStr) -> str:
    shown = mask(value)
    if not shown["set"]:
        return "not set"
    return f"set (ends in {shown['last4']})" if shown["last4"] else "set"


def cmd_config(args: argparse.Namespace, *, example: str, out: TextIO | None = None) -> int:
    """``example``: the text ``config example --write`` writes."""
    out = out or sys.stdout
    source = ConfigSource.find(args.config)
    action = args.config_command
    if action == "example":
        if source.path.exists():
            raise ConfigError(
                f"{source.path} exists; not overwritten (`config example` prints the example "
                "to stdout)"
            )
        write_text_atomic(source.path, example)
        print(f"wrote {source.path}", file=out)
        return 0
    key: str = args.key.strip()
    if key not in SECRET_FILES and field_for(key) is None:
        raise ConfigError(f"unknown key {key!r} (`st-imagegen config example` lists them)")
    if action == "get":
        config = source.load()
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        text = _secret_text(node) if isinstance(node, SecretStr) else _shown(node)
        who = source.pinned().get(key)
        print(text + (f"   (set by {who})" if who else ""), file=out)
        return 0
    raw: str = args.value
    if key in SECRET_FILES:
        change = ConfigWriter(source).apply({}, secrets_given={key: raw}, allow_file_only=True)
        print(f"{key}: {_secret_text(SecretStr(raw))}, kept in its own key file", file=out)
    else:
        change = ConfigWriter(source).apply({key: coerce(key, raw)}, allow_file_only=True)
        print(f"{key} = {_shown(_value_of(change.config, key))} in {change.path}", file=out)
    if needs_restart(key):
        print("restart to apply: a running daemon keeps the old value until then", file=out)
    return 0


def _value_of(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node
