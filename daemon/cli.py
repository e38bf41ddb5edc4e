"""The command line (skeleton; the engine-runtime work fills in every command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="st-imagegen")
    parser.add_argument("--version", action="store_true")
    args = parser.parse_args(argv)
    if args.version:
        from daemon import __version__

        print(__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
