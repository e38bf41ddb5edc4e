"""``st-imagegen users``: the web inbox's user tokens, each bound to SillyTavern handles.

``users token alice`` prints a new token for alice once (only its hash is kept);
``users list`` shows every token without its secret; ``users revoke ID`` ends one at once,
also in a running daemon.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from daemon.errors import ConfigError

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = ["add_parser", "cmd_users"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    users = sub.add_parser(
        "users", parents=[common], help="web tokens for SillyTavern users (each sees their own)"
    )
    usub = users.add_subparsers(dest="users_command", metavar="ACTION")
    make = usub.add_parser("token", parents=[common], help="make a token for ST user handles")
    make.add_argument("handles", nargs="+", metavar="HANDLE", help="ST user handle(s)")
    make.add_argument("--label", default="", help="a note to tell tokens apart")
    usub.add_parser(
        "list", parents=[common], help="the user tokens (never their secret)"
    ).add_argument("--json", action="store_true", help="JSON output")
    revoke = usub.add_parser("revoke", parents=[common], help="end a user token at once")
    revoke.add_argument("token_id", metavar="ID", help="the id `users list` shows")


def cmd_users(config: Config, args: argparse.Namespace) -> int:
    from daemon.web.access import UserTokens  # only when the command runs: --help stays fast

    tokens = UserTokens(config.state_dir)
    action = getattr(args, "users_command", None)
    if action == "token":
        record, secret = tokens.create(args.handles, args.label)
        print(secret)
        print(
            f"user token {record.id} for {', '.join(record.handles)}: shown only now; give it "
            "to that user (the ST extension's Token field, or the inbox link with ?token=)",
            file=sys.stderr,
        )
        return 0
    if action == "list":
        found = tokens.tokens()
        if args.json:
            print(json.dumps([t.to_json() for t in found], indent=2))
            return 0
        if not found:
            print("no user tokens (`st-imagegen users token HANDLE` makes one)")
        for t in found:
            made = time.strftime("%Y-%m-%d", time.localtime(t.created))
            label = f"  {t.label}" if t.label else ""
            print(f"{t.id}  {', '.join(t.handles)}  made {made}{label}")
        return 0
    if action == "revoke":
        gone = tokens.revoke(args.token_id)
        if gone is None:
            raise ConfigError(f"no user token {args.token_id!r} (see `st-imagegen users list`)")
        print(f"revoked user token {gone.id} ({', '.join(gone.handles)})")
        return 0
    raise ConfigError("say what to do: users token HANDLE | users list | users revoke ID")
