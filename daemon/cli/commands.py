"""The command line: ``st-imagegen <command>`` (see ``st-imagegen --help``).

Exit codes: 0 success, 1 a failure the user must act on (one line on stderr), 2 a usage error.
Each command imports what it needs when it runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.config import Config, ConfigSource
    from daemon.engine.front import Engine

from daemon.cli.fastargs import plain_args
from daemon.cli.jobview import print_accepted, print_job, print_jobs
from daemon.cli.parser import PROG, STATES, build_parser, command_of
from daemon.configure.example import config_example

__all__ = ["STATES", "build_parser", "config_example", "main"]


class CommandError(Exception):
    """A failure to report on one line of stderr with exit code 1."""


# --- entry -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = plain_args(given)  # a plain list, show, status or accept: no parser to build
    if args is None:
        parser = build_parser(command_of(given))
        try:
            args = parser.parse_args(given)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            return int(exc.code) if isinstance(exc.code, int) else 2
        if args.command is None and not args.version:
            parser.print_help(sys.stderr)
            return 2
    if args.version:
        from daemon import __version__

        print(__version__)
        return 0
    if args.command == "config":
        if args.config_command not in ("example", "get", "set"):
            print(
                f"{PROG} config: choose an action: example | get KEY | set KEY VALUE",
                file=sys.stderr,
            )
            return 2
        if args.config_command == "example" and not args.write:
            sys.stdout.write(config_example())
            return 0
        from daemon.cli.config_cmd import cmd_config

        try:
            return cmd_config(args, example=config_example())
        except BaseException as exc:
            return _exit_for(exc)
    try:
        return _dispatch(args)
    except BaseException as exc:  # every failure becomes one line (or a traceback with --debug)
        if getattr(args, "debug", False) and not isinstance(exc, KeyboardInterrupt):
            raise
        return _exit_for(exc)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order; the task group wraps them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _exit_for(exc: BaseException) -> int:
    """The exit code for a failure, after printing it as one line on stderr."""
    from daemon.errors import StImagegenError

    leaves = _leaves(exc)
    if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
        # `st-imagegen list | head -1`: the reader has gone; say nothing, as `ls | head` does.
        # Point stdout at /dev/null so the interpreter's final flush does not complain either.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return 130
    known = [leaf for leaf in leaves if isinstance(leaf, CommandError | StImagegenError | OSError)]
    if known:
        return _fail(_describe(known[0]))
    first = leaves[0]
    if isinstance(first, SystemExit) and isinstance(first.code, int):
        return first.code
    return _fail(
        f"unexpected {type(first).__name__}: {first} (a bug: run the same command with --debug "
        "for the details and report it)"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, CommandError):
        # The state dir or a file we need is not usable (permissions, disk full, ...).
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _load(args: argparse.Namespace) -> Config:
    from daemon.config import load_config

    overrides: dict[str, Any] = {}
    if getattr(args, "data_root", None) is not None:
        overrides["data_root"] = args.data_root
    return load_config(args.config, overrides=overrides)


def _setup_logging(config: Config, *, quiet: bool = False) -> None:
    """Logs to stderr; ``quiet`` (one-shot commands): warnings and errors only, so the output
    stays clean for ``--json`` and progress lines."""
    from daemon.logs import configure_logging

    settings = config.log
    if quiet and settings.level in ("debug", "info"):
        settings = settings.model_copy(update={"level": "warning"})
    configure_logging(settings, secrets=(config.text.api_key, config.image.api_key))


def _source(args: argparse.Namespace) -> ConfigSource:
    from daemon.config import ConfigSource

    overrides: dict[str, Any] = {}
    if getattr(args, "data_root", None) is not None:
        overrides["data_root"] = args.data_root
    return ConfigSource.find(args.config, overrides=overrides)


def _dispatch(args: argparse.Namespace) -> int:
    from daemon.cli.quick import QUICK_COMMANDS, overrides_of, quick
    from daemon.configure import locate
    from daemon.errors import ConfigError

    command: str = args.command
    if command in QUICK_COMMANDS:
        done = quick(args)  # read-only, without the engine, when the config is known valid
        if done is not None:
            return done
    before = locate.snapshot(args.config, os.environ, overrides_of(args))
    if command == "status":
        # A broken file must not hide the daemon's state: status says what is wrong with it.
        source = _source(args)
        try:
            config, problem = source.load(), None
        except ConfigError as exc:
            config, problem = source.fallback(), str(exc)
        _setup_logging(config, quiet=True)
        from daemon.cli.screens import cmd_status

        try:
            return cmd_status(config, args.json, config_error=problem)
        finally:
            if problem is None:
                _remember(before, config)
    config = _load(args)
    if command == "run":
        return _cmd_run(config, _source(args))
    _setup_logging(config, quiet=True)
    try:
        return _job_command(command, config, args)
    finally:
        _remember(before, config)  # after the command: its state dir exists by now


def _remember(before: tuple[Path, bool, bytes | None, bytes], config: Config) -> None:
    """The config validated: the next read-only command may skip building it (daemon.cli.quick)."""
    from daemon.configure import locate
    from daemon.configure.viewof import view_of

    locate.remember(before, config.state_dir, lambda: view_of(config))


def _job_command(command: str, config: Config, args: argparse.Namespace) -> int:
    jobs: dict[str, Callable[[Engine, argparse.Namespace], Awaitable[int]]] = {
        "list": _cmd_list,
        "show": _cmd_show,
        "spend": _cmd_spend,
        "accept": _cmd_accept,
        "reject": _cmd_reject,
        "regen": _cmd_regen,
        "restore": _cmd_restore,
        "cancel": _cmd_cancel,
    }
    action = jobs.get(command)
    if action is not None:
        return _with_engine(config, lambda engine: action(engine, args))
    if command in ("pause", "resume"):
        return _with_engine(config, lambda engine: _cmd_pause(engine, args, command == "pause"))
    return _tool_command(command, config, args)


def _tool_command(command: str, config: Config, args: argparse.Namespace) -> int:
    """The commands that are not one job action (each imports what it needs)."""
    if command in ("generate", "genimage"):
        from daemon.cli.generate import cmd_generate

        return cmd_generate(
            config, args.chat, args.mesid, args.wait, force=args.force, timeout=args.timeout
        )
    if command == "why":
        from daemon.cli.screens import cmd_why

        return cmd_why(config, args.chat, args.mesid)
    if command in ("doctor", "healthcheck"):
        from daemon.doctor import cmd_doctor, cmd_healthcheck

        if command == "doctor":
            return cmd_doctor(config, args.skip_image)
        return cmd_healthcheck(config)
    if command == "web-url":
        return _cmd_web_url(config)
    if command == "extension":
        from daemon.extension import cmd_extension

        return cmd_extension(
            config,
            args.action,
            user=args.user,
            all_users=args.all_users,
            st_folder=args.st_folder,
        )
    if command == "users":
        from daemon.cli.users import cmd_users

        return cmd_users(config, args)
    if command in ("character", "style"):
        from daemon.cli.characters import cmd_character, cmd_style

        return (cmd_character if command == "character" else cmd_style)(config, args)
    raise CommandError(f"unknown command {command!r}")  # pragma: no cover - argparse checks


def _cmd_run(config: Config, source: ConfigSource) -> int:
    import anyio

    from daemon.config import systemd_env
    from daemon.engine.process.service import serve
    from daemon.web.server import serve_web

    _setup_logging(config)
    systemd = systemd_env()

    async def _main() -> int:
        # Composed here, from the top: the daemon knows nothing of the web layer it serves.
        return await serve(config, systemd=systemd, web=serve_web, source=source)

    return anyio.run(_main)


def _cmd_web_url(config: Config) -> int:
    from daemon.web.server import web_url

    if not config.web.enabled:
        raise CommandError("the web inbox is off (web.enabled = false)")
    url, up = web_url(config)
    print(url)
    if not up:
        print(f"{PROG}: the daemon's inbox is not running (st-imagegen run)", file=sys.stderr)
    return 0


def _with_engine(config: Config, action: Callable[[Engine], Awaitable[int]]) -> int:
    """Run ``action`` on this process's engine (it wakes a running daemon after a change)."""
    import anyio

    from daemon.engine.front import Engine

    async def _main() -> int:
        async with Engine.open(config) as engine:
            return await action(engine)

    return anyio.run(_main)


# --- job commands ------------------------------------------------------------------------------


async def _cmd_list(engine: Engine, args: argparse.Namespace) -> int:
    from daemon.engine.front import JobState

    states = [JobState(args.state)] if args.state else []
    jobs = await engine.jobs(states=states, limit=max(1, args.limit))
    titles = {chat: await engine.chat_title(chat) for chat in {j.chat for j in jobs}}
    return print_jobs(jobs, args, titles)


async def _cmd_spend(engine: Engine, args: argparse.Namespace) -> int:
    if args.action == "approve":
        if not args.job:
            raise CommandError("spend approve needs the held job's id (see status)")
        job = await engine.approve_spend(args.job)
        print(f"job {job.id} may make its call once; it runs now")
        return 0
    summary = await engine.spend()
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
        return 0
    print(summary.line())
    return 0


async def _cmd_show(engine: Engine, args: argparse.Namespace) -> int:
    job = await engine.job(args.job)
    found = await engine.job_folder(job.id)  # pending/, or a drop folder it was moved into
    if args.json:
        return print_job(job, found, engine.config.pending_dir, as_json=True)
    title = await engine.chat_title(job.chat)
    spend = (await engine.spend()).line()
    return print_job(job, found, engine.config.pending_dir, title=title, spend=spend)


async def _cmd_accept(engine: Engine, args: argparse.Namespace) -> int:
    import anyio.to_thread

    from daemon.engine.front import wait_for_commit

    job = await engine.accept(args.job, args.keep)
    running = await engine.daemon_running()
    db = engine.config.db_path
    # The wait is blocking (the quick path's own): run the printing in a worker thread.
    return await anyio.to_thread.run_sync(
        print_accepted, job, running, lambda: wait_for_commit(db, job.id)
    )


async def _cmd_reject(engine: Engine, args: argparse.Namespace) -> int:
    job = await engine.reject(args.job)
    days = engine.config.limits.trash_days
    if job.images:
        print(
            f"rejected {job.id}; its images stay in the trash for {days:g} days "
            f"(st-imagegen restore {job.short_id})"
        )
    else:
        print(f"rejected {job.id}")
    return 0


async def _cmd_restore(engine: Engine, args: argparse.Namespace) -> int:
    job = await engine.restore(args.job)
    print(f"restored {job.id}: {job.state.value} again ({len(job.images)} images)")
    return 0


async def _cmd_cancel(engine: Engine, args: argparse.Namespace) -> int:
    if args.all_queued == (args.job is not None):
        raise CommandError("give a JOB or --all-queued (not both)")
    if args.chat is not None and not args.all_queued:
        raise CommandError("--chat goes with --all-queued")
    if args.job is not None:
        job = await engine.cancel(args.job)
        print(f"cancelled {job.id} (no image will be made for it)")
        return 0
    import anyio.to_thread

    chat = await anyio.to_thread.run_sync(engine.find_chat, args.chat) if args.chat else None
    done = await engine.cancel_queued(chat=chat)
    where = f" in {await engine.chat_title(chat)}" if chat else ""
    print(f"cancelled {len(done)} queued job{'s' if len(done) != 1 else ''}{where}")
    for job in done:
        print(f"  {job.id}  {job.speaker} #{job.message_index}")
    return 0


async def _cmd_pause(engine: Engine, args: argparse.Namespace, paused: bool) -> int:
    import anyio.to_thread

    chat = await anyio.to_thread.run_sync(engine.find_chat, args.chat) if args.chat else None
    after = await engine.pause(paused, chat)
    if after.everything:
        print("paused: no new job starts in any chat (st-imagegen resume)")
    elif after.chats:
        titles = [await engine.chat_title(c) for c in sorted(after.chats)]
        print("paused chats: " + "; ".join(titles))
    else:
        print("not paused: jobs start as usual")
    return 0


async def _cmd_regen(engine: Engine, args: argparse.Namespace) -> int:
    job = await engine.regen(args.job, args.prompt)
    print(f"queued {job.id} (regenerating {job.meta.get('regen_of', args.job)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
