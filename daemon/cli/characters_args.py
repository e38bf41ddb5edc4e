"""The ``character`` and ``style`` command lines (argparse only, so ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["SWITCH", "add_parsers"]

NO_STYLE = "none"
SWITCH = {"on": True, "off": False, "default": None}


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``character`` and ``style`` commands (``sub`` is the main parser's subparsers)."""
    char = sub.add_parser(
        "character", parents=[common], help="per-character appearance, style and references"
    )
    csub = char.add_subparsers(dest="character_command", metavar="ACTION")
    cset = csub.add_parser("set", parents=[common], help="set a character's profile")
    cset.add_argument("name", metavar="NAME", help="card name or file stem (any case)")
    cset.add_argument("--appearance", metavar="TAGS", help='fixed tags ("" clears)')
    cset.add_argument("--negative", metavar="TAGS", help='negative tags ("" clears)')
    cset.add_argument("--style", metavar="STYLE", help='this character\'s style ("" clears)')
    cset.add_argument(
        "--references",
        choices=sorted(SWITCH),
        help="send reference images for this character (default: [image] reference_images)",
    )
    csub.add_parser("list", parents=[common], help="characters with a profile").add_argument(
        "--json", action="store_true", help="JSON output"
    )
    cshow = csub.add_parser("show", parents=[common], help="a character's tags and their source")
    cshow.add_argument("name", metavar="NAME")
    cshow.add_argument("--json", action="store_true", help="JSON output")
    crm = csub.add_parser("remove", parents=[common], help="forget a character's profile")
    crm.add_argument("name", metavar="NAME")
    cref = csub.add_parser("ref", parents=[common], help="reference images")
    rsub = cref.add_subparsers(dest="ref_command", metavar="ACTION")
    radd = rsub.add_parser("add", parents=[common], help="add a reference image")
    radd.add_argument("name", metavar="NAME")
    radd.add_argument("file", metavar="FILE", type=Path)
    rclear = rsub.add_parser("clear", parents=[common], help="remove the chosen images")
    rclear.add_argument("name", metavar="NAME")

    style = sub.add_parser("style", parents=[common], help="image styles")
    ssub = style.add_subparsers(dest="style_command", metavar="ACTION")
    ssub.add_parser("list", parents=[common], help="the styles and where they are used")
    use = ssub.add_parser("use", parents=[common], help="choose a style for a chat or character")
    use.add_argument("style", metavar="NAME", help=f"a style, or {NO_STYLE} for no style")
    where = use.add_mutually_exclusive_group(required=True)
    where.add_argument("--chat", help="chat path, or character name [and chat name], or group")
    where.add_argument("--character", metavar="NAME", help="a character (every chat of it)")
    use.add_argument("--clear", action="store_true", help="remove the choice instead")
