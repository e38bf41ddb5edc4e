"""Change the config file safely: round-trip (comments, order and formatting kept), checked by
the same models as at start before anything is written, written through a temp file and a
rename. Secrets go to their own 0600 key files, never into the TOML.

One path for every writer: ``config set``, the settings API and the setup screen.
"""

from __future__ import annotations

import copy
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import tomlkit
import tomlkit.exceptions
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from tomlkit.container import Container
from tomlkit.items import Table

from daemon.config import Config, ConfigSource, toml_error
from daemon.configure.keys import (
    SECRET_FILES,
    file_only,
    key_file_path,
    remove_key_file,
    write_key_file,
)
from daemon.configure.styles import check_default_style
from daemon.errors import ConfigError

__all__ = ["Change", "ConfigWriter", "coerce", "field_for", "plan"]


def field_for(key: str) -> FieldInfo | None:
    """The pydantic field of a dotted key (``image.size``, ``styles.noir.prefix``)."""
    from daemon.config import StyleSettings

    parts = key.split(".")
    model: type[BaseModel] = Config
    field: FieldInfo | None = None
    i = 0
    while i < len(parts):
        field = model.model_fields.get(parts[i])
        if field is None:
            return None
        annotation = field.annotation
        i += 1
        if i == len(parts):
            return field
        if parts[i - 1] == "styles" and model is Config:
            if i + 1 >= len(parts):
                return None  # styles.<name> is a table, not a value
            model, i = StyleSettings, i + 1
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        return None
    return field


def _table_key(key: str, value: Any) -> bool:
    """A whole style removed (``styles.<name>`` = None), or a key of a backend's own table
    (``image.<backend>.<key>``: its model checks it when the config is validated)."""
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "styles":
        return value is None
    return len(parts) == 3 and parts[0] == "image" and field_for(".".join(parts[:2])) is None


def _is_text(field: FieldInfo) -> bool:
    return _text_type(field.annotation)


def _text_type(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Literal:
        return all(isinstance(o, str) for o in get_args(annotation))
    if origin in (Union, UnionType):
        return any(_text_type(a) for a in get_args(annotation) if a is not type(None))
    return annotation in (str, Path, SecretStr)


def coerce(key: str, raw: str) -> Any:
    """A command line's text as the value for ``key``: text keys take it as it is; the others
    are read as a TOML value (``3``, ``true``, ``["a", "b"]``)."""
    field = field_for(key)
    if field is None:
        raise ConfigError(f"unknown key {key!r}")
    if _is_text(field):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


@dataclass(frozen=True)
class Change:
    """What :meth:`ConfigWriter.apply` did."""

    config: Config  # the file's configuration now (environment and overrides applied)
    changed: tuple[str, ...]  # dotted keys written (secrets by their name)
    path: Path


def _table_at(doc: Container | Table, parts: list[str], create: bool) -> Container | Table | None:
    node: Container | Table = doc
    for part in parts:
        child = node.get(part)
        if child is None:
            if not create:
                return None
            child = tomlkit.table()
            node[part] = child
        if not isinstance(child, Table | Container):
            # A dotted key or inline table holds it: rewrite as a real table, values kept.
            table = tomlkit.table()
            for k, v in dict(child).items():
                table[k] = v
            node[part] = table
            child = node[part]
        node = child
    return node


def _set(doc: tomlkit.TOMLDocument, key: str, value: Any) -> None:
    *parents, name = key.split(".")
    if value is None:
        table = _table_at(doc, parents, create=False)
        if table is not None and name in table:
            del table[name]
        return
    table = _table_at(doc, parents, create=True)
    assert table is not None
    table[name] = value


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def plan(
    source: ConfigSource,
    changes: Mapping[str, Any],
    *,
    secrets_given: Mapping[str, str] | None = None,
    allow_file_only: bool = False,
) -> tuple[str, tomlkit.TOMLDocument, dict[str, str | None], Config]:
    """The new file text, its document, the key files to write (``None``: remove) and the
    configuration they make; ConfigError (naming the key) when any of it is invalid."""
    secrets_given = dict(secrets_given or {})
    pinned = source.pinned()
    for key in [*changes, *secrets_given]:
        if key in SECRET_FILES:
            if key not in secrets_given:
                raise ConfigError(f"{key} is a secret: it is given as a key, never as a value")
        elif field_for(key) is None and not _table_key(key, changes.get(key)):
            raise ConfigError(f"unknown key {key!r}")
        if not allow_file_only and file_only(key):
            raise ConfigError(f"{key} can only be changed in the config file ({source.path})")
        who = pinned.get(key) or pinned.get(SECRET_FILES.get(key, ""))
        if who:
            raise ConfigError(
                f"{key} is set by {who}; change it there (the file's value is not used)"
            )
    try:
        text = source.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(
            f"config file {str(source.path)!r} cannot be read: {exc.strerror}"
        ) from None
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError:
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise toml_error(source.path, text, exc) from None
        raise ConfigError(f"config file {str(source.path)!r} cannot be edited safely") from None
    for key, value in changes.items():
        _set(doc, key, value)
    key_files: dict[str, str | None] = {}
    check = copy.deepcopy(_plain(doc))
    for secret, value in secrets_given.items():
        file_key = SECRET_FILES[secret]
        path = key_file_path(source.path.absolute(), secret)
        _set(doc, secret, None)  # never in the TOML
        section, name = secret.split(".")
        check.setdefault(section, {}).pop(name, None)
        if value.strip():
            if "\n" in value.strip() or len(value) > 4096:
                raise ConfigError(f"{secret}: that does not look like a key (one line, please)")
            _set(doc, file_key, str(path))
            key_files[str(path)] = value.strip()
            # Validated with the key as given (the file is not written yet; a key given inline
            # wins over its file), naming the file it will be in.
            check[section][name] = value.strip()
            check[section][file_key.split(".")[1]] = str(path)
        else:
            _set(doc, file_key, None)
            check[section].pop(file_key.split(".")[1], None)
            key_files[str(path)] = None
    new_text = tomlkit.dumps(doc)
    config = source.build(check)
    check_default_style(config)
    return new_text, doc, key_files, config


class ConfigWriter:
    """Applies changes to ``source``'s file (which is created, with its folder, if missing)."""

    def __init__(self, source: ConfigSource) -> None:
        self.source = source

    def apply(
        self,
        changes: Mapping[str, Any],
        *,
        secrets_given: Mapping[str, str] | None = None,
        allow_file_only: bool = False,
    ) -> Change:
        text, _, key_files, config = plan(
            self.source,
            changes,
            secrets_given=secrets_given,
            allow_file_only=allow_file_only,
        )
        for name, value in key_files.items():
            if value is None:
                remove_key_file(Path(name))
            else:
                write_key_file(Path(name), value)
        write_text_atomic(self.source.path, text)
        return Change(config, (*changes, *(secrets_given or {})), self.source.path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file in the same folder, fsync, rename; the file keeps its mode
    (a new one is 0600: it may name key files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        temp.replace(path)
    except OSError:  # a full disk: no half-written temp file left behind
        temp.unlink(missing_ok=True)
        raise
