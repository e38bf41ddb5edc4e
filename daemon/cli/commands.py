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
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from daemon.config import Config, ConfigSource
    from daemon.engine.front import Engine, Job

from daemon.cli.jobview import job_dict as _job_dict
from daemon.cli.jobview import one_line as _one_line
from daemon.cli.jobview import print_jobs
from daemon.configure.example import config_example

__all__ = ["build_parser", "config_example", "main"]

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
the engine); ``tests/ops/test_structure.py`` holds it to :class:`daemon.jobstate.JobState`."""

T = TypeVar("T")


class CommandError(Exception):
    """A failure to report on one line of stderr with exit code 1."""


# --- parser ------------------------------------------------------------------------------------


def _keep_list(text: str) -> list[int]:
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


def _add_job_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The commands on jobs: list, show, spend, accept, reject, restore, cancel, pause, resume,
    regen."""
    lst = sub.add_parser("list", parents=[common], help="jobs, newest first")
    lst.add_argument("--state", choices=STATES, help="only jobs in this state")
    lst.add_argument("--json", action="store_true", help="JSON output")
    lst.add_argument("--limit", type=int, default=50, help="at most this many jobs (50)")

    show = sub.add_parser("show", parents=[common], help="one job in detail")
    show.add_argument("job", metavar="JOB", help="job id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="JSON output")

    spend = sub.add_parser("spend", parents=[common], help="today's and this month's spend")
    spend.add_argument("action", nargs="?", choices=["approve"], help="approve: allow a held job")
    spend.add_argument("job", nargs="?", metavar="JOB", help="the held job to allow once")
    spend.add_argument("--json", action="store_true", help="JSON output")

    acc = sub.add_parser("accept", parents=[common], help="accept a pending job's images")
    acc.add_argument("job", metavar="JOB")
    acc.add_argument("--keep", type=_keep_list, metavar="1,3", help="keep only these images")

    rej = sub.add_parser("reject", parents=[common], help="reject a pending job")
    rej.add_argument("job", metavar="JOB")

    restore = sub.add_parser("restore", parents=[common], help="undo a reject (from the trash)")
    restore.add_argument("job", metavar="JOB")

    cancel = sub.add_parser("cancel", parents=[common], help="stop a queued or running job")
    cancel.add_argument("job", metavar="JOB", nargs="?", help="the job (or --all-queued)")
    cancel.add_argument("--all-queued", action="store_true", help="every queued job")
    cancel.add_argument("--chat", help="with --all-queued: only this chat's")

    for name, text in (("pause", "start no new jobs until resumed"), ("resume", "end a pause")):
        switch = sub.add_parser(name, parents=[common], help=text)
        switch.add_argument("--chat", help="only this chat (default: every chat)")

    regen = sub.add_parser("regen", parents=[common], help="new images for a job's reply")
    regen.add_argument("job", metavar="JOB")
    regen.add_argument("--prompt", help="use this prompt instead of the job's")


def build_parser() -> argparse.ArgumentParser:
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
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Illustrates SillyTavern chats: new character replies become images.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("run", parents=[common], help="run the daemon (foreground)")

    for name in ("generate", "genimage"):
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

    _add_job_parsers(sub, common)

    status = sub.add_parser("status", parents=[common], help="daemon, chats and jobs")
    status.add_argument("--json", action="store_true", help="JSON output")

    why = sub.add_parser("why", parents=[common], help="why a message has or has no job")
    why.add_argument("--chat", help="chat path, or character name [and chat name], or group")
    why.add_argument("--mesid", type=_non_negative, help="message number (default: the last)")

    doctor = sub.add_parser("doctor", parents=[common], help="check the setup")
    doctor.add_argument(
        "--skip-image", action="store_true", help="skip the image API check (it may cost money)"
    )

    sub.add_parser("healthcheck", parents=[common], help="exit 0 when the daemon is alive")

    sub.add_parser(
        "web-url", parents=[common], help="the web inbox's address (with its token if needed)"
    )

    from daemon.cli.characters_args import add_parsers

    add_parsers(sub, common)

    from daemon.cli.users import add_parser as add_users_parser

    add_users_parser(sub, common)

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
    return parser


# --- entry -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    if args.version:
        from daemon import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
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
    from daemon.errors import ConfigError

    command: str = args.command
    if command == "list":
        return _list_command(args)
    if command == "status":
        # A broken file must not hide the daemon's state: status says what is wrong with it.
        source = _source(args)
        try:
            config, problem = source.load(), None
        except ConfigError as exc:
            config, problem = source.fallback(), str(exc)
        _setup_logging(config, quiet=True)
        from daemon.cli.screens import cmd_status

        return cmd_status(config, args.json, config_error=problem)
    config = _load(args)
    if command == "run":
        return _cmd_run(config, _source(args))
    _setup_logging(config, quiet=True)
    jobs: dict[str, Callable[[Engine, argparse.Namespace], Awaitable[int]]] = {
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


def _list_command(args: argparse.Namespace) -> int:
    """``list``: answered from the store alone when the config is known valid (daemon.cli.quick),
    else through the engine like every job command."""
    from daemon.cli.quick import overrides_of, quick
    from daemon.configure import locate

    done = quick(args)
    if done is not None:
        return done
    before = locate.snapshot(args.config, os.environ, overrides_of(args))
    config = _load(args)
    _setup_logging(config, quiet=True)
    code = _with_engine(config, lambda engine: _cmd_list(engine, args))
    # The config validated: the next list may skip building it (daemon.cli.quick).
    locate.remember(before, config.state_dir)
    return code


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
    folder = found if found is not None else engine.config.pending_dir / job.id
    if args.json:
        record = _job_dict(job)
        record["folder"] = str(found) if found is not None else None
        print(json.dumps(record, ensure_ascii=False, indent=2))
        return 0
    rows = [
        ("job", job.id),
        ("state", job.state.value),
        ("chat", f"{job.user}/{job.chat}" if not job.chat.startswith(job.user) else job.chat),
        ("chat name", await engine.chat_title(job.chat)),
        ("character", job.character + (" (group id)" if job.is_group else "")),
        ("speaker", job.speaker),
        ("message", f"#{job.message_index}: {_one_line(job.excerpt, 100)}"),
        ("source", job.source),
        ("created", job.created_at.astimezone().isoformat(timespec="seconds")),
        ("updated", job.updated_at.astimezone().isoformat(timespec="seconds")),
        ("attempts", str(job.attempts)),
    ]
    if job.next_attempt_at and job.state.value == "queued":
        rows.append(("next try", job.next_attempt_at.astimezone().isoformat(timespec="seconds")))
    if job.last_error:
        rows.append(("last error", job.last_error))
    if job.state.value == "queued" and job.meta.get("held"):
        rows.append(("held", f"{job.meta['held']}; {job.meta.get('held_fix') or ''}"))
    if job.meta.get("cost"):
        rows.append(("cost", str(job.meta["cost"])))
    rows.append(("spend", (await engine.spend()).line()))
    rows.append(("prompt", job.prompt or "(not written yet)"))
    rows.extend(_look_rows(job))
    for key, value in rows:
        print(f"{key + ':':<12} {value}")
    if job.images:
        print("images:")
        for n, name in enumerate(job.images, 1):
            path = folder / name
            print(f"  {n}. {path if path.exists() else name}")
    return 0


def _look_rows(job: Job) -> list[tuple[str, str]]:
    """What made the picture besides the prompt: negative prompt, style, seed, references."""
    meta = job.meta
    rows: list[tuple[str, str]] = []
    if isinstance(meta.get("negative"), str) and meta["negative"]:
        rows.append(("negative", str(meta["negative"])))
    if meta.get("style"):
        source = f" (from {meta['style_from']})" if meta.get("style_from") else ""
        rows.append(("style", f"{meta['style']}{source}"))
    if meta.get("seed") is not None:
        rows.append(("seed", str(meta["seed"])))
    references = meta.get("references")
    if isinstance(references, list) and references:
        rows.append(("references", ", ".join(str(r) for r in references)))
    if meta.get("regen_of"):
        rows.append(("regen of", str(meta["regen_of"])))
    if meta.get("cancelled") is True:
        rows.append(("cancelled", "yes (stopped before its images were on offer)"))
    return rows


async def _cmd_accept(engine: Engine, args: argparse.Namespace) -> int:
    job = await engine.accept(args.job, args.keep)
    print(f"accepted {job.id} ({len(job.images)} image{'s' if len(job.images) != 1 else ''})")
    return 0


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
