"""``st-imagegen config example``: a complete commented ``config.toml`` from the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["config_example"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + (" " + inner + " " if inner else "") + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _default_of(field: Any) -> Any:
    from pydantic import SecretStr
    from pydantic_core import PydanticUndefined

    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:  # pragma: no cover - every key has a default
        value = None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value


def _env_name(section: str | None, key: str) -> str:
    from daemon.config import ENV_PREFIX

    name = f"{section}__{key}" if section else key
    return ENV_PREFIX + name.upper()


def _key_lines(section: str | None, key: str, field: Any) -> list[str]:
    from pydantic import BaseModel

    lines: list[str] = []
    description = field.description or ""
    default = _default_of(field)
    if isinstance(default, BaseModel):  # pragma: no cover - sections handled by the caller
        return lines
    env = _env_name(section, key)
    if description:
        lines.append(f"# {description}")
    lines.append(f"# env: {env}")
    if default is None and key == "data_root":
        lines.append('# data_root = "/path/to/SillyTavern"   (required; or --data-root)')
    elif default is None and str(field.annotation) in ("float | None", "int | None"):
        lines.append(f"# {key} = 2   (an example; not set: no limit)")  # a number that loads
    elif default is None:
        lines.append(f'# {key} = ""   (not set)')
    elif key == "prices" and section is None:
        # A table of numbers, not of tables: one line per model.
        lines.append("# [prices]")
        lines.append('# "gpt-image-1" = 0.042   (USD per image; one line per model)')
    elif isinstance(default, dict) and not default and section is None:
        # A table of tables ([styles.<name>]): an empty `styles = {}` line here would make a
        # later [styles.noir] table a TOML error ("cannot declare twice"), so only an example.
        lines.append(f"# [{key}.<name>]   (one table per entry, e.g. [{key}.noir])")
    elif key == "state_dir" and section is None:
        lines.append(f"# default: the platform state dir, here {_toml_value(default)}")
        lines.append(f"# {key} = {_toml_value(default)}")
    else:
        text = _toml_value(default)
        if "\n" in text:  # pragma: no cover - json.dumps escapes newlines
            text = text.replace("\n", "\\n")
        lines.append(f"{key} = {text}")
    return lines


def config_example() -> str:
    """A complete commented ``config.toml``: every key with its default and description."""
    from pydantic import BaseModel

    from daemon.config import Config

    out = [
        "# st-imagegen configuration. Every key shows its default; delete what you do not change.",
        "# Each key can also be set by an environment variable (shown as `env:`); for API keys",
        "# prefer api_key_file (a file holding only the key, e.g. a Docker secret).",
        "",
    ]
    sections: list[tuple[str, Any]] = []
    for key, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((key, field))
            continue
        out.extend(_key_lines(None, key, field))
        out.append("")
    for name, field in sections:
        model = field.annotation
        doc = (model.__doc__ or "").strip().splitlines()
        out.append(f"[{name}]" + (f"  # {doc[0]}" if doc else ""))
        for key, sub in model.model_fields.items():
            out.extend(_key_lines(name, key, sub))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
