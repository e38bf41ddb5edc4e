"""The command line: ``st-imagegen`` and its screens."""

from daemon.cli.commands import main

__all__ = ["main"]
