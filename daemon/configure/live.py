"""The configuration a running daemon uses, swapped whole when the file changes.

:class:`LiveConfig` holds the frozen :class:`~daemon.config.Config` in effect. :meth:`reload`
reads the file again (the daemon calls it when the file is written, by the settings page or by
hand): a valid file replaces the config at once for everything that starts afterwards (jobs
already running keep the one they started with); an invalid one changes nothing and is kept as
:attr:`LiveConfig.problem` (file, line, what is wrong) for ``status``, the inbox and the log.
Keys that cannot change while running (:data:`~daemon.configure.keys.RESTART_KEYS`) keep their
start value and are listed in :attr:`LiveConfig.restart_pending`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from daemon.config import Config, ConfigSource
from daemon.configure.keys import RESTART_KEYS, SECRET_FILES, key_file_path
from daemon.configure.ready import setup_missing
from daemon.configure.styles import check_default_style
from daemon.errors import ConfigError
from daemon.logs import register_config_secrets

__all__ = ["ConfigProblem", "LiveConfig", "changed_keys"]

log = structlog.get_logger("st_imagegen.config")


@dataclass(frozen=True)
class ConfigProblem:
    """Why the file on disk is not the configuration in effect."""

    file: str
    message: str
    line: int | None = None
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message, "at": self.at}


def _get(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "extra_body":
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ (secrets compared, never shown)."""
    a, b = _flat(old.model_dump()), _flat(new.model_dump())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _with(config: Config, key: str, value: Any) -> Config:
    head, _, rest = key.partition(".")
    if not rest:
        return config.model_copy(update={head: value})
    section = getattr(config, head)
    return config.model_copy(update={head: section.model_copy(update={rest: value})})


def _value(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


Applier = Callable[[Config, Config], None]
"""Takes the new config in (``new``, ``old``): builds what it needs first and raises
ConfigError, changing nothing, when it cannot; else switches over."""


class LiveConfig:
    """The configuration in effect, and why it may differ from the file."""

    def __init__(self, source: ConfigSource, config: Config) -> None:
        self.source = source
        self._started = config  # the values of the restart-only keys stay these
        self._config = config
        self._lock = threading.Lock()
        self._digest = self._file_digest()
        self.problem: ConfigProblem | None = None
        self.restart_pending: tuple[str, ...] = ()
        self.reloads = 0
        self._appliers: list[Applier] = []
        self._watchers: list[Callable[[], None]] = []

    @property
    def current(self) -> Config:
        return self._config

    @property
    def setup_needed(self) -> list[str]:
        return setup_missing(self._config)

    def on_apply(self, applier: Applier) -> None:
        """``applier`` takes each new config in, in registration order."""
        self._appliers.append(applier)

    def on_state(self, watcher: Callable[[], None]) -> None:
        """``watcher`` is told after every reload attempt (applied or refused)."""
        self._watchers.append(watcher)

    def key_files(self) -> list[Path]:
        """The key files a hand edit of which changes the config: those the current config
        names and the ones the settings page writes (``<config dir>/keys/<secret>``)."""
        files = {key_file_path(self.source.path, secret) for secret in SECRET_FILES}
        for key_file_key in SECRET_FILES.values():
            named = _value(self._config, key_file_key)
            if isinstance(named, Path):
                files.add(named)
        return sorted(files)

    def watched_files(self) -> list[Path]:
        """What the daemon watches to reload: the config file and its key files."""
        return [self.source.path, *self.key_files()]

    def _file_digest(self) -> str:
        # The key files count: a key edited in place (no change to the TOML) must still reach
        # the next job, and an unchanged digest would skip the reload.
        digest = hashlib.sha256()
        for path in self.watched_files():
            try:
                data = path.read_bytes()
            except OSError:
                data = b"\x00missing"
            digest.update(str(path).encode("utf-8", "surrogateescape") + b"\x00")
            digest.update(hashlib.sha256(data).digest())
        return digest.hexdigest()

    def read(self, *, force: bool = False) -> Config | ConfigError | None:
        """Read and validate the file (blocking: call it from a worker thread): the new config,
        the error that makes it unusable, or ``None`` when it has not changed."""
        digest = self._file_digest()
        if digest == self._digest and not force:
            return None
        self._digest = digest
        try:
            new = self.source.load()
            check_default_style(new)
        except ConfigError as exc:
            return exc
        return new

    def take(self, result: Config | ConfigError) -> bool:
        """Apply what :meth:`read` gave (on the event loop: the appliers switch the daemon
        over); ``True`` when a changed config now runs."""
        with self._lock:
            if isinstance(result, ConfigError):
                return self._refuse(result)
            return self._adopt(result)

    def reload(self, *, force: bool = False) -> bool:
        """:meth:`read` and :meth:`take` in one (tests, the CLI)."""
        result = self.read(force=force)
        return False if result is None else self.take(result)

    def adopt(self, new: Config) -> bool:
        """Apply ``new`` (already validated, e.g. by the writer) without reading the file."""
        with self._lock:
            self._digest = self._file_digest()
            return self._adopt(new)

    def _refuse(self, exc: ConfigError) -> bool:
        self.problem = ConfigProblem(str(self.source.path), str(exc), exc.line)
        log.error(
            "config file not applied: the last good configuration keeps running",
            file=str(self.source.path),
            line=exc.line,
            error=str(exc),
        )
        self._tell()
        return False

    def _adopt(self, loaded: Config) -> bool:
        effective = loaded
        pending: list[str] = []
        for key in RESTART_KEYS:
            started = _value(self._started, key)
            if _value(loaded, key) != started:
                pending.append(key)
                effective = _with(effective, key, started)
        old = self._config
        changed = changed_keys(old, effective)
        register_config_secrets(effective)  # before anything can log a new key
        try:
            for applier in self._appliers:
                applier(effective, old)
        except ConfigError as exc:
            return self._refuse(exc)
        self._config = effective
        self.problem = None
        self.restart_pending = tuple(pending)
        self.reloads += 1
        if changed:
            log.info("config applied", changed=changed, file=str(self.source.path))
        if pending:
            log.warning(
                "config: restart to apply",
                keys=list(pending),
                hint="these keys keep their start values until the daemon restarts",
            )
        self._tell()
        return bool(changed)

    def _tell(self) -> None:
        for watcher in self._watchers:
            try:
                watcher()
            except Exception:  # a display must never stop a reload
                log.exception("config state listener failed")

    def state(self) -> dict[str, Any]:
        """What ``status``, the heartbeat and the pages show."""
        return {
            "file": str(self.source.path),
            "problem": self.problem.to_json() if self.problem else None,
            "restart_pending": list(self.restart_pending),
            "setup_needed": self.setup_needed,
            "reloads": self.reloads,
        }
