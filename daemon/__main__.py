"""``python -m daemon`` runs the command line."""

from daemon.cli.commands import main

raise SystemExit(main())
