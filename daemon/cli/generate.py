"""``st-imagegen generate`` (alias ``genimage``, like ST's slash command): an image for one reply.

The ``--chat`` and ``--mesid`` forms are in :mod:`daemon.engine.jobs.manual`. State changes go to
stderr, with a spinner when both streams are terminals; the result (the pending folder or the
committed image files) goes to stdout.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import TextIO

import anyio

from daemon.config import Config
from daemon.engine.front import FINAL_STATES, WAIT_STOP_STATES, Engine, Job, JobState

__all__ = ["DEFAULT_WAIT_SECONDS", "cmd_generate"]

DEFAULT_WAIT_SECONDS = 600.0
"""How long ``--wait`` follows a job before giving up (the job itself keeps going)."""

SPINNER_SECONDS = 0.1
WAIT_POLL_SECONDS = 0.25
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

STOP_STATES = WAIT_STOP_STATES
"""Where ``--wait`` stops: the images wait for the user, or the job is done."""


class _Progress:
    """State changes on ``err``; a spinner too when both streams are terminals."""

    def __init__(self, out: TextIO, err: TextIO, first: Job) -> None:
        self.err = err
        self.spin = _isatty(out) and _isatty(err)
        self._frames = itertools.cycle(_SPINNER)
        self._drawn = False
        self._started = time.monotonic()
        self._last = first.state
        self._held: object = None

    def say(self, text: str) -> None:
        self.clear()
        print(text, file=self.err, flush=True)

    def watch(self, job: Job) -> None:
        """Each look at the job: a line when its state changed, a spinner frame."""
        if job.state is not self._last:
            self.say(f"job {job.short_id}: {self._last.value} -> {job.state.value}")
            self._last = job.state
        held = job.meta.get("held") if job.state is JobState.QUEUED else None
        if held and held != self._held:
            # A spend cap: no call is made until it allows one; say why and what to do.
            self.say(f"job {job.short_id} waits: {held}; {job.meta.get('held_fix') or ''}")
        self._held = held
        self.tick(job.state, job.meta.get("progress"))

    def tick(self, state: JobState, told: object = None) -> None:
        """One spinner frame; ``told`` is the job's ``meta["progress"]`` (A1111, ComfyUI)."""
        if not self.spin:
            return
        elapsed = time.monotonic() - self._started
        text = state.value
        if state is JobState.IMAGING and isinstance(told, dict) and told.get("text"):
            text = f"{text}: {told['text']}"
        self.err.write(f"\r{next(self._frames)} {text} ({elapsed:.0f} s)\x1b[K")
        self.err.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _report(job: Job, config: Config, out: TextIO, err: TextIO) -> int:
    if job.state is JobState.PENDING:
        folder = config.pending_dir / job.id
        print(f"job {job.id} is waiting for approval: {folder}", file=out)
        for name in job.images:
            print(f"  {folder / name}", file=out)
        print(f"accept with: st-imagegen accept {job.short_id}", file=out)
        return 0
    if job.state is JobState.COMMITTED:
        files = job.meta.get("committed_files")
        print(f"job {job.id} committed into {job.chat}", file=out)
        for path in files if isinstance(files, list) else []:
            print(f"  {path}", file=out)
        return 0
    why = f": {job.last_error}" if job.last_error else ""
    print(f"st-imagegen: error: job {job.id} is {job.state.value}{why}", file=err)
    return 1


def _said(job: Job, created: bool, where: str, out: TextIO, err: TextIO) -> int | None:
    """Say what ``generate`` found or made; an exit code when that ends the command."""
    if created and job.state is JobState.QUEUED:
        print(f"queued job {job.id} for {where}", file=out)
        return None
    if created:
        print(f"job {job.id} for {where} is back: {job.state.value} (its images)", file=out)
        return None
    reason = f" ({job.last_error})" if job.last_error else ""
    print(f"job {job.id} already exists for {where}: {job.state.value}{reason}", file=out)
    if job.state is JobState.SUPERSEDED:
        # Not revivable (a regen replaced it): doing nothing is not success.
        print(
            f"st-imagegen: error: job {job.id} was replaced; use --force for a new one",
            file=err,
        )
        return 1
    if job.state in FINAL_STATES and job.state is not JobState.COMMITTED:
        print("use --force to make a new job for it", file=out)
    return None


async def _generate(
    config: Config,
    chat: str | None,
    mesid: int | None,
    wait: bool,
    force: bool,
    limit: float,
    out: TextIO,
    err: TextIO,
) -> int:
    async with Engine.open(config) as engine:
        made = await engine.generate(chat, mesid, force=force)
        job = made.job
        ended = _said(job, made.created, made.where, out, err)
        if ended is not None:
            return ended
        if not wait:
            if made.created and not await engine.daemon_running():
                print(
                    "the daemon is not running: the job runs when it starts "
                    "(st-imagegen run), or now with --wait",
                    file=out,
                )
            return 0
        if job.state in STOP_STATES:
            return _report(job, config, out, err)
        progress = _Progress(out, err, job)
        try:
            final = await engine.follow(
                job,
                limit,
                progress.watch,
                poll=SPINNER_SECONDS if progress.spin else WAIT_POLL_SECONDS,
                running_here=lambda: progress.say(
                    "the daemon is not running: running the job in this process"
                ),
            )
        finally:
            progress.clear()
        if final.state not in STOP_STATES:
            print(
                f"st-imagegen: error: job {final.id} is still {final.state.value} after "
                f"{limit:.0f} s; it keeps going (see: st-imagegen show {final.short_id})",
                file=err,
            )
            return 1
        return _report(final, config, out, err)


def cmd_generate(
    config: Config,
    chat: str | None,
    mesid: int | None,
    wait: bool,
    *,
    force: bool = False,
    timeout: float = DEFAULT_WAIT_SECONDS,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Queue (and with ``wait``, follow) a job for one reply. Exit 0, or 1 with the reason on
    stderr. Errors of the daemon's hierarchy propagate for the CLI to print."""
    return anyio.run(
        _generate,
        config,
        chat,
        mesid,
        wait,
        force,
        timeout,
        out or sys.stdout,
        err or sys.stderr,
    )
