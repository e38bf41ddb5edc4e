"""A small Dockerfile reader for the tests: the final stage's ENV, ENTRYPOINT, CMD, HEALTHCHECK.

Enough of the syntax for our own Dockerfile (continuations, comments, JSON-array forms,
``ENV a=b c=d``); anything else it does not understand makes it fail loudly, never guess.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ImageSpec", "parse_dockerfile"]

_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class ImageSpec:
    """What ``docker run`` would use from the final stage."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    stopsignal: str = "SIGTERM"
    user: str = ""
    volumes: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> list[str]:
        """ENTRYPOINT + CMD, as Docker combines the two exec forms."""
        return [*self.entrypoint, *self.cmd]

    def option_seconds(self, name: str) -> float:
        match = _DURATION.match(self.healthcheck_options[name])
        if not match:
            raise ValueError(f"unparsed duration {self.healthcheck_options[name]!r}")
        return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _instructions(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    if current:
        raise ValueError("Dockerfile ends inside a line continuation")
    return out


def _exec_form(value: str, what: str) -> list[str]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"{what} must use the JSON exec form, got {value!r}") from None
    if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
        raise ValueError(f"{what} must be a JSON list of strings, got {value!r}")
    return parsed


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def parse_dockerfile(path: Path) -> ImageSpec:
    """The final stage of ``path``."""
    spec = ImageSpec()
    for keyword, rest in _instructions(path.read_text(encoding="utf-8")):
        if keyword == "FROM":
            spec = ImageSpec(
                args=dict(spec.args)
            )  # a new stage starts clean (ARGs before FROM stay)
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            spec.args[name] = default
        elif keyword == "ENV":
            for item in shlex.split(rest):
                name, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"ENV must use the key=value form: {rest!r}")
                spec.env[name] = _expand(value, spec.env)
        elif keyword == "ENTRYPOINT":
            spec.entrypoint = _exec_form(rest, "ENTRYPOINT")
            spec.cmd = []  # Docker resets CMD when ENTRYPOINT is set
        elif keyword == "CMD":
            spec.cmd = _exec_form(rest, "CMD")
        elif keyword == "HEALTHCHECK":
            words = rest.split()
            while words and words[0].startswith("--"):
                name, _, value = words.pop(0)[2:].partition("=")
                spec.healthcheck_options[name] = value
            if not words or words[0] != "CMD":
                raise ValueError(f"HEALTHCHECK must be followed by CMD: {rest!r}")
            spec.healthcheck = _exec_form(" ".join(words[1:]), "HEALTHCHECK CMD")
        elif keyword == "STOPSIGNAL":
            spec.stopsignal = rest
        elif keyword == "USER":
            spec.user = _expand(rest, spec.args)
        elif keyword == "VOLUME":
            spec.volumes = _exec_form(rest, "VOLUME")
    return spec
