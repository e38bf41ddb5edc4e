"""The command line's parser: ``st-imagegen --help``, every command's options and usage errors.

Building every command's parser costs more than a read-only command's whole work (argparse
formats and translates each option as it is added), so :func:`build_parser` can build only the
command named first on the command line (:func:`command_of`): its options, help and errors are
the same ones, since a command's parser never looks at its siblings; the top-level ``--help``
and anything else (no command, an option first, an unknown name) get the full parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "PROG", "STATES", "build_parser", "command_of", "keep_list"]

PROG = "st-imagegen"
STATES = (
    "queued",
    "prompting",
    "imaging",
    "pending",
    "accepted",
    "committed",
    "rejected",
    "superseded",
    "failed",
)
"""The job states ``list --state`` takes: spelled out so ``--help`` stays fast (no import of
the engine); ``tests/engine/test_jobstate.py`` holds it to :class:`daemon.jobstate.JobState`."""


def keep_list(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--keep wants image numbers like 1,3 (got {text!r})"
        ) from None
    if not numbers or any(n < 1 for n in numbers):
        raise argparse.ArgumentTypeError(f"--keep wants image numbers from 1 (got {text!r})")
    return numbers


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a message number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"message numbers start at 0 (got {value})")
    return value


# --- one adder per command, in the order --help lists them ------------------------------------


def _run(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser("run", parents=[common], help="run the daemon (foreground)")


def _generate(sub: Any, common: argparse.ArgumentParser, name: str) -> None:
    gen = sub.add_parser(
        name,
        parents=[common],
        help="queue an image for a reply (manual mode)"
        if name == "generate"
        else "alias of generate",
    )
    gen.add_argument("--chat", help="chat path, or character name [and chat name], or group")
    gen.add_argument("--mesid", type=_non_negative, help="message number (first is 0)")
    gen.add_argument("--wait", action="store_true", help="wait for the images")
    gen.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long --wait waits (600); the job keeps going after it",
    )
    gen.add_argument(
        "--force",
        action="store_true",
        help="a new job even if this reply already has one (like regen)",
    )


def _list(sub: Any, common: argparse.ArgumentParser) -> None:
    lst = sub.add_parser("list", parents=[common], help="jobs, newest first")
    lst.add_argument("--state", choices=STATES, help="only jobs in this state")
    lst.add_argument("--json", action="store_true", help="JSON output")
    lst.add_argument("--limit", type=int, default=50, help="at most this many jobs (50)")


def _show(sub: Any, common: argparse.ArgumentParser) -> None:
    show = sub.add_parser("show", parents=[common], help="one job in detail")
    show.add_argument("job", metavar="JOB", help="job id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="JSON output")


def _spend(sub: Any, common: argparse.ArgumentParser) -> None:
    spend = sub.add_parser("spend", parents=[common], help="today's and this month's spend")
    spend.add_argument("action", nargs="?", choices=["approve"], help="approve: allow a held job")
    spend.add_argument("job", nargs="?", metavar="JOB", help="the held job to allow once")
    spend.add_argument("--json", action="store_true", help="JSON output")


def _accept(sub: Any, common: argparse.ArgumentParser) -> None:
    acc = sub.add_parser("accept", parents=[common], help="accept a pending job's images")
    acc.add_argument("job", metavar="JOB")
    acc.add_argument("--keep", type=keep_list, metavar="1,3", help="keep only these images")


def _reject(sub: Any, common: argparse.ArgumentParser) -> None:
    rej = sub.add_parser("reject", parents=[common], help="reject a pending job")
    rej.add_argument("job", metavar="JOB")


def _restore(sub: Any, common: argparse.ArgumentParser) -> None:
    restore = sub.add_parser("restore", parents=[common], help="undo a reject (from the trash)")
    restore.add_argument("job", metavar="JOB")


def _cancel(sub: Any, common: argparse.ArgumentParser) -> None:
    cancel = sub.add_parser("cancel", parents=[common], help="stop a queued or running job")
    cancel.add_argument("job", metavar="JOB", nargs="?", help="the job (or --all-queued)")
    cancel.add_argument("--all-queued", action="store_true", help="every queued job")
    cancel.add_argument("--chat", help="with --all-queued: only this chat's")


def _switch(sub: Any, common: argparse.ArgumentParser, name: str) -> None:
    text = "start no new jobs until resumed" if name == "pause" else "end a pause"
    switch = sub.add_parser(name, parents=[common], help=text)
    switch.add_argument("--chat", help="only this chat (default: every chat)")


def _regen(sub: Any, common: argparse.ArgumentParser) -> None:
    regen = sub.add_parser("regen", parents=[common], help="new images for a job's reply")
    regen.add_argument("job", metavar="JOB")
    regen.add_argument("--prompt", help="use this prompt instead of the job's")


def _status(sub: Any, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser("status", parents=[common], help="daemon, chats and jobs")
    status.add_argument("--json", action="store_true", help="JSON output")


def _why(sub: Any, common: argparse.ArgumentParser) -> None:
    why = sub.add_parser("why", parents=[common], help="why a message has or has no job")
    why.add_argument("--chat", help="chat path, or character name [and chat name], or group")
    why.add_argument("--mesid", type=_non_negative, help="message number (default: the last)")


def _doctor(sub: Any, common: argparse.ArgumentParser) -> None:
    doctor = sub.add_parser("doctor", parents=[common], help="check the setup")
    doctor.add_argument(
        "--skip-image", action="store_true", help="skip the image API check (it may cost money)"
    )


def _healthcheck(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser("healthcheck", parents=[common], help="exit 0 when the daemon is alive")


def _web_url(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser(
        "web-url", parents=[common], help="the web inbox's address (with its token if needed)"
    )


def _characters(sub: Any, common: argparse.ArgumentParser) -> None:
    from daemon.cli.characters_args import add_parsers

    add_parsers(sub, common)  # character and style


def _users(sub: Any, common: argparse.ArgumentParser) -> None:
    from daemon.cli.users import add_parser as add_users_parser

    add_users_parser(sub, common)


def _extension(sub: Any, common: argparse.ArgumentParser) -> None:
    ext = sub.add_parser(
        "extension", parents=[common], help="install the SillyTavern extension (live images)"
    )
    ext.add_argument("action", choices=("install", "uninstall"), metavar="install|uninstall")
    who = ext.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="HANDLE", help="only this ST user (default: every user)")
    who.add_argument(
        "--all-users",
        action="store_true",
        help="into ST's public/scripts/extensions/third-party/ (every user at once)",
    )
    ext.add_argument(
        "--st-folder",
        type=Path,
        metavar="PATH",
        help="the SillyTavern install folder, for --all-users (default: found from data_root)",
    )


def _config(sub: Any, common: argparse.ArgumentParser) -> None:
    cfg = sub.add_parser("config", help="configuration helpers")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    example = cfg_sub.add_parser("example", help="print a complete commented config.toml")
    example.add_argument(
        "--write",
        action="store_true",
        help="write it to the config file (--config, $ST_IMAGEGEN_CONFIG or the default); "
        "never overwrites one",
    )
    example.add_argument("--config", type=Path, metavar="PATH", help="the file --write writes")
    get = cfg_sub.add_parser("get", help="one setting's value (keys show only set / not set)")
    get.add_argument("key", metavar="KEY", help="dotted key, e.g. image.model")
    get.add_argument("--config", type=Path, metavar="PATH", help="the config file")
    put = cfg_sub.add_parser(
        "set", help="change one setting in the config file (checked first; comments kept)"
    )
    put.add_argument("key", metavar="KEY", help="dotted key, e.g. image.model")
    put.add_argument("value", metavar="VALUE", help="the new value (TOML or plain text)")
    put.add_argument("--config", type=Path, metavar="PATH", help="the config file")


Adder = Callable[[Any, argparse.ArgumentParser], None]


def _named(adder: Callable[[Any, argparse.ArgumentParser, str], None], name: str) -> Adder:
    return lambda sub, common: adder(sub, common, name)


_ADDERS: tuple[tuple[tuple[str, ...], Adder], ...] = (
    (("run",), _run),
    (("generate",), _named(_generate, "generate")),
    (("genimage",), _named(_generate, "genimage")),
    (("list",), _list),
    (("show",), _show),
    (("spend",), _spend),
    (("accept",), _accept),
    (("reject",), _reject),
    (("restore",), _restore),
    (("cancel",), _cancel),
    (("pause",), _named(_switch, "pause")),
    (("resume",), _named(_switch, "resume")),
    (("regen",), _regen),
    (("status",), _status),
    (("why",), _why),
    (("doctor",), _doctor),
    (("healthcheck",), _healthcheck),
    (("web-url",), _web_url),
    (("character", "style"), _characters),
    (("users",), _users),
    (("extension",), _extension),
    (("config",), _config),
)

COMMANDS = frozenset(name for names, _ in _ADDERS for name in names)
"""Every command's name (as typed; argparse takes no abbreviation of a command)."""


def command_of(argv: Sequence[str]) -> str | None:
    """The command when the command line starts with one (``list --json``); None otherwise
    (nothing, ``--help``, ``--version``, an option before the command, an unknown word)."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="config file (default: $ST_IMAGEGEN_CONFIG, then ~/.config/st-imagegen/config.toml)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an unexpected failure",
    )
    common.add_argument(
        "--data-root",
        type=Path,
        metavar="PATH",
        help="SillyTavern folder, its data/ folder or the data root (overrides the config)",
    )
    return common


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` that one (see the module's docstring)."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Illustrates SillyTavern chats: new character replies become images.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for names, adder in _ADDERS:
        if only is None or only in names:
            adder(sub, common)
    return parser
