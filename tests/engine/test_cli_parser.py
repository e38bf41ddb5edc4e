"""The parser built for one command (daemon.cli.parser's ``only``) parses, helps and refuses
exactly as the full parser does, and a plain command line read by hand (daemon.cli.fastargs)
gives argparse's own namespace or is left to argparse: the start-up shortcuts never change
what the user sees."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from daemon.cli.fastargs import plain_args
from daemon.cli.parser import COMMANDS, build_parser, command_of

CASES = [
    ["list"],
    ["list", "--json", "--limit", "3", "--state", "pending"],
    ["list", "--state", "nonsense"],
    ["list", "--limit", "x"],
    ["list", "--help"],
    ["list", "-h"],
    ["list", "--frobnicate"],
    ["list", "--version"],
    ["list", "extra"],
    ["list", "--jso"],  # an abbreviation argparse accepts
    ["show"],
    ["show", "01ABC", "--json", "--config", "/x/c.toml", "--debug", "--data-root", "/d"],
    ["show", "--help"],
    ["status"],
    ["status", "--json", "--config", "c.toml"],
    ["status", "--help"],
    ["status", "now"],
    ["accept"],
    ["accept", "01ABC"],
    ["accept", "01ABC", "--keep", "1,3"],
    ["accept", "01ABC", "--keep", "one"],
    ["accept", "01ABC", "--keep", "0"],
    ["accept", "--help"],
    ["generate", "--mesid", "-1"],
    ["genimage", "--wait", "--timeout", "5"],
    ["character", "set", "Alice", "--references", "on"],
    ["style", "use", "ink"],
    ["users", "token", "alice"],
    ["config", "get", "image.model"],
    ["config", "set"],
    ["extension", "install", "--user", "a", "--all-users"],
]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: object = vars(parser.parse_args(argv))
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_one_commands_parser_answers_as_the_full_one(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the same help width for both
    only = command_of(argv)
    assert only == argv[0]
    full = _parse(build_parser(), argv)
    assert _parse(build_parser(only), argv) == full
    assert full[1] or full[2] or isinstance(full[0], dict)  # it said or parsed something


def test_the_command_is_only_taken_from_the_first_word() -> None:
    assert command_of([]) is None
    assert command_of(["--help"]) is None
    assert command_of(["--version", "list"]) is None  # the full parser decides
    assert command_of(["lis"]) is None
    assert command_of(["--config", "list"]) is None
    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == COMMANDS  # every command has its adder, and only those
    for name in COMMANDS:
        slim = next(
            a for a in build_parser(name)._actions if isinstance(a, argparse._SubParsersAction)
        )
        assert name in slim.choices and len(slim.choices) <= 2  # (character and style: both)


PLAIN = [
    ["list"],
    ["list", "--json"],
    ["list", "--state", "pending", "--limit", "3"],
    ["list", "--limit=7", "--state=failed", "--json", "--debug"],
    ["list", "--limit", " 12 "],
    ["list", "--config", "/x/c.toml", "--data-root", "/d"],
    ["list", "--config=", "--data-root=rel/d"],
    ["show", "01ABC"],
    ["show", "--json", "01ABC", "--config", "c.toml"],
    ["show", "", "--debug"],
    ["show", "a b=c"],
    ["status"],
    ["status", "--json", "--data-root", "~/st"],
    ["accept", "01ABC"],
    ["accept", "--keep", "3,1", "01abc"],
    ["accept", "01ABC", "--keep=1, 3,", "--debug", "--config", "x"],
]
NOT_PLAIN = [
    [],
    ["--version"],
    ["--help"],
    ["list", "--help"],
    ["list", "-h"],
    ["list", "--jso"],  # an abbreviation: argparse's to read
    ["list", "--json", "--json"],
    ["list", "--json=yes"],
    ["list", "--limit", "x"],
    ["list", "--limit", "-5"],
    ["list", "--limit"],
    ["list", "--state", "nonsense"],
    ["list", "--state", "pending", "--state", "failed"],
    ["list", "--keep", "1"],
    ["list", "extra"],
    ["list", "--", "x"],
    ["list", "--version"],
    ["show"],
    ["show", "-5"],
    ["show", "a", "b"],
    ["show", "a", "--keep", "1"],
    ["status", "x"],
    ["accept"],
    ["accept", "01ABC", "--keep", "one"],
    ["accept", "01ABC", "--keep", "0"],
    ["accept", "01ABC", "--json"],
    ["accept", "01ABC", "--config"],
    ["accept", "01ABC", "--config", "--debug"],
    ["reject", "01ABC"],
    ["lis"],
]


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_a_plain_command_line_reads_as_argparse_reads_it(argv: list[str]) -> None:
    mine = plain_args(argv)
    assert mine is not None
    assert mine == build_parser().parse_args(argv)


@pytest.mark.parametrize("argv", NOT_PLAIN, ids=lambda a: " ".join(a) or "(nothing)")
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert plain_args(argv) is None
