"""The settings a person changes, grouped the way they use them (not the way the file is laid
out), and everything else shown read-only. Values come from the config in effect; a secret only
says whether it is set (and its last 4 characters); a key pinned by the environment names its
variable and cannot be changed here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr

from daemon.config import DEFAULT_SYSTEM_PROMPT, Config, ConfigSource
from daemon.configure.keys import SECRET_FILES, file_only, mask, needs_restart
from daemon.configure.writer import field_for

__all__ = ["GROUPS", "Setting", "settings_view"]

Kind = Literal["text", "textarea", "number", "bool", "choice", "list", "secret"]


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    kind: Kind = "text"
    help: str = ""
    choices: tuple[str, ...] = ()
    default: Any = None  # offered by "reset to default"


GROUPS: tuple[tuple[str, str, tuple[Setting, ...]], ...] = (
    (
        "image",
        "Image service",
        (
            Setting("image.backend", "Service type", "choice"),
            Setting("image.api_url", "Address", help="empty: the service's own address"),
            Setting("image.api_key", "Key", "secret"),
            Setting("image.model", "Model"),
            Setting("image.size", "Size", help="width x height, e.g. 1024x1024"),
            Setting("image.n", "Pictures per reply", "number"),
            Setting(
                "image.reference_images",
                "Send the character's avatar as a reference",
                "bool",
                help="where the service takes reference images",
            ),
        ),
    ),
    (
        "text",
        "Prompt writer",
        (
            Setting("text.mode", "How prompts are written", "choice"),
            Setting("text.api_url", "Address"),
            Setting("text.api_key", "Key", "secret"),
            Setting("text.model", "Model"),
            Setting("text.system_prompt", "Instruction", "textarea", default=DEFAULT_SYSTEM_PROMPT),
            Setting("text.temperature", "Temperature", "number", help="0 (plain) to 2 (wild)"),
            Setting("text.include_character_card", "Send the character card", "bool"),
            Setting("text.include_persona", "Send your persona", "choice"),
            Setting("text.context_messages", "Earlier messages sent as context", "number"),
            Setting("text.prefix", "Always before the prompt"),
            Setting("text.suffix", "Always after the prompt"),
            Setting("text.negative_prompt", "Never in the picture (negative prompt)"),
        ),
    ),
    (
        "detect",
        "What gets illustrated",
        (
            Setting(
                "mode",
                "Which replies",
                "choice",
                help="auto: every new reply; manual: only the ones you ask for",
            ),
            Setting(
                "approval",
                "Approval",
                "choice",
                help="manual: you accept each picture; auto: it goes into the chat at once",
            ),
            Setting("detect.every_nth", "Every Nth reply", "number"),
            Setting("detect.min_length", "Skip replies shorter than (characters)", "number"),
            Setting("detect.include_characters", "Only these characters", "list"),
            Setting("detect.exclude_characters", "Never these characters", "list"),
            Setting("detect.greetings", "Illustrate a new chat's greeting", "bool"),
        ),
    ),
    (
        "styles",
        "Default style",
        (Setting("default_style", "Style of chats and characters without their own", "choice"),),
    ),
)

EDITABLE = frozenset(s.key for _, _, settings in GROUPS for s in settings)


def _choices(key: str) -> tuple[str, ...]:
    field = field_for(key)
    if field is None:
        return ()
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return tuple(str(a) for a in get_args(annotation))
    return ()


def _value(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return mask(value)
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        for key, sub in value:
            _flat(f"{prefix}.{key}" if prefix else key, sub, out)
    else:
        out[prefix] = _plain(value)


def settings_view(
    config: Config,
    source: ConfigSource,
    *,
    backends: list[str],
    styles: list[str],
) -> dict[str, Any]:
    """The settings page's data: the groups with their values, the read-only rest."""
    pinned = source.pinned()
    groups = []
    for group_id, title, settings in GROUPS:
        fields = []
        for s in settings:
            value = _value(config, s.key)
            choices = s.choices or _choices(s.key)
            if s.key == "image.backend":
                choices = tuple(backends)
            if s.key == "default_style":
                choices = ("", *styles)
            who = pinned.get(s.key) or pinned.get(SECRET_FILES.get(s.key, ""))
            fields.append(
                {
                    "key": s.key,
                    "label": s.label,
                    "kind": s.kind,
                    "help": s.help,
                    "choices": list(choices),
                    "value": _plain(value),
                    "default": s.default,
                    "pinned_by": who,
                    "restart": needs_restart(s.key),
                }
            )
        groups.append({"id": group_id, "title": title, "fields": fields})
    everything: dict[str, Any] = {}
    _flat("", config, everything)
    advanced = [
        {
            "key": key,
            "value": value,
            "pinned_by": pinned.get(key),
            "file_only": file_only(key),
            "restart": needs_restart(key),
        }
        for key, value in sorted(everything.items())
        if key not in EDITABLE and key != "styles" and not key.startswith("styles.")
    ]
    return {"groups": groups, "advanced": advanced, "file": str(source.path)}
