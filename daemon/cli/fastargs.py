"""The command lines of ``list``, ``show``, ``status`` and ``accept`` read without building a
parser, when they are plain.

Building even one command's argparse parser costs a read-only command about a third of its
start-up (each option is formatted and translated as it is added). A plain command line (the
command first, then only its own options spelled out in full, as ``--opt value`` or
``--opt=value``, and its one job id) is read here into the very namespace argparse would make;
anything else (help, a typo, an abbreviation, a value argparse would refuse or read in its own
way: any word starting with ``-``) returns None, and the parser answers as always.
``tests/engine/test_cli_parser.py`` holds the two to the same result.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon.cli.parser import STATES, keep_list

__all__ = ["plain_args"]


def _state(text: str) -> str:
    if text not in STATES:
        raise ValueError(text)
    return text


_COMMON: dict[str, tuple[str, Callable[[str], object]]] = {
    "--config": ("config", Path),
    "--data-root": ("data_root", Path),
}
_VALUES: dict[str, dict[str, tuple[str, Callable[[str], object]]]] = {
    "list": {"--state": ("state", _state), "--limit": ("limit", int)},
    "show": {},
    "status": {},
    "accept": {"--keep": ("keep", keep_list)},
}
_FLAGS: dict[str, dict[str, str]] = {
    "list": {"--json": "json"},
    "show": {"--json": "json"},
    "status": {"--json": "json"},
    "accept": {},
}
_DEFAULTS: dict[str, dict[str, object]] = {
    "list": {"state": None, "json": False, "limit": 50},
    "show": {"json": False},
    "status": {"json": False},
    "accept": {"keep": None},
}
_JOB = ("show", "accept")  # the commands with one JOB


def plain_args(argv: Sequence[str]) -> argparse.Namespace | None:
    """The namespace argparse would make of ``argv``, or None when it is not plain (above)."""
    if not argv or argv[0] not in _VALUES:
        return None
    command = argv[0]
    values = _COMMON | _VALUES[command]
    flags = {"--debug": "debug", **_FLAGS[command]}
    found: dict[str, object] = {}
    jobs: list[str] = []
    words = iter(argv[1:])
    for word in words:
        if not word.startswith("-"):
            jobs.append(word)
            continue
        name, equals, given = word.partition("=")
        if name in flags and not equals and flags[name] not in found:
            found[flags[name]] = True
            continue
        if name not in values or values[name][0] in found:
            return None  # unknown, abbreviated, or given twice: argparse's to read
        text = given if equals else next(words, None)
        if text is None or text.startswith("-"):
            return None
        dest, convert = values[name]
        try:
            found[dest] = convert(text)
        except (ValueError, argparse.ArgumentTypeError):
            return None  # argparse says what is wrong with it
    if len(jobs) != (command in _JOB):
        return None
    args = {"version": False, "command": command, "config": None, "debug": False}
    args |= {"data_root": None, **_DEFAULTS[command], **found}
    if jobs:
        args["job"] = jobs[0]
    return argparse.Namespace(**args)
