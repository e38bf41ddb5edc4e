"""The daemon: one top-level task group that starts, serves and drains.

start: open the store, resume jobs a crash left running, remove our stale temp files, start the
observer, then a stat scan of every chat (chats changed while we were down are caught up from
their stored cursor). serve: watcher hints -> tail scan at once -> detect -> store -> runner
(an edit or a swipe back waits for quiet: docs/reaction.md); drop-folder moves -> approval
actions; a store poll picks up jobs other processes queued; after each change of a chat with open
ledger entries, reconcile it. drain: on SIGTERM/SIGINT stop taking jobs, let running steps finish
within the grace period, then stop.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from daemon.config import Config, ConfigSource, SystemdEnv
from daemon.configure.live import LiveConfig
from daemon.configure.ready import setup_missing
from daemon.engine.front import Engine
from daemon.engine.intake import detect, watchmode
from daemon.engine.intake.poll import Poller
from daemon.engine.intake.watch import Hint, HintKind, Settler, StatIndex, Watcher
from daemon.engine.jobs.order import Attention
from daemon.engine.jobs.pipeline import POLL_INTERVAL, JobDeps, Runner, revive_job
from daemon.engine.look.styles import check_default_style
from daemon.engine.process.lock import hold_state_lock
from daemon.engine.process.notify import Heartbeat, Notifier
from daemon.engine.process.push import Pusher, push_link
from daemon.engine.process.wake import WAKE_DIR
from daemon.engine.store import Job, JobState, Store
from daemon.engine.store.schema import damaged_message
from daemon.errors import ChatReadError, ConfigError, JobError, StImagegenError, StoreError
from daemon.jobstate import ReplyKey
from daemon.logs import job_log
from daemon.tavern import layout, write
from daemon.tavern.chat import Cursor
from daemon.tavern.layout import ChatRef
from daemon.tavern.scan import ScanResult, tail_scan

__all__ = ["HEARTBEAT_INTERVAL", "Face", "Service", "ServiceTimings", "serve"]

log = structlog.get_logger("st_imagegen.service")

HEARTBEAT_INTERVAL = 20.0
"""Seconds between heartbeat file writes (``status`` and ``healthcheck`` call a daemon dead
after 3 missed; Docker's HEALTHCHECK looks every 30 s). The systemd watchdog is pinged at the
interval systemd asks for, which may be more often."""

DROP_SETTLE = 2.0
"""Seconds a folder copied (not moved) into a drop folder must be unchanged before it counts."""


_WAKE_OVERLAP = timedelta(seconds=2)  # clocks of two processes, stamps of one transaction
_ANNOUNCED_KEPT = 2000

MISSED_CHANGE_AGE = 5.0
"""Seconds a change must predate a rescan to count as missed by inotify (not in flight)."""

CONFIG_SETTLE = 0.2
"""Seconds the config file must be quiet before it is read again (an editor's save may be
several writes; our own writer's is one rename)."""

IDLE_WAKE_SECONDS = 3600.0
"""Longest the settle loop sleeps with no chat waiting (a hint wakes it at once)."""


RETENTION_FIRST = 60.0
"""Seconds after start before the first retention pass (not during the start's own work)."""

RETENTION_EVERY = 86400.0
"""The retention tick: daily."""


@dataclass(frozen=True)
class ServiceTimings:
    """Intervals the tests shorten; production uses the defaults."""

    heartbeat: float = HEARTBEAT_INTERVAL
    poll: float = POLL_INTERVAL
    drain_grace: float | None = None  # None: limits.drain_seconds
    drop_settle: float = DROP_SETTLE
    retention_first: float = RETENTION_FIRST  # after start
    retention_every: float = RETENTION_EVERY


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _now() -> datetime:
    return datetime.now(UTC)


class Face(Protocol):
    """A face served inside the daemon (the web inbox), composed from the top (``run``): it
    acts through the daemon's :class:`Engine`, refuses actions while ``draining()``, reports
    its state through ``task_status`` once up, and runs until cancelled."""

    async def __call__(
        self,
        engine: Engine,
        *,
        draining: Callable[[], bool],
        task_status: TaskStatus[Any],
    ) -> None: ...


class Service:
    """The running daemon's state; :func:`serve` builds and runs it."""

    def __init__(
        self,
        config: Config,
        root: Path,
        deps: JobDeps,
        *,
        notifier: Notifier | None = None,
        timings: ServiceTimings | None = None,
        web: Face | None = None,
        live: LiveConfig | None = None,
    ) -> None:
        from daemon import __version__

        self._config = config
        self.live = live
        self.root = root
        self.deps = deps
        self.store: Store = deps.store
        self.notifier = notifier or Notifier()
        self.timings = timings or ServiceTimings(drain_grace=config.limits.drain_seconds)
        self.heartbeat = Heartbeat(config.heartbeat_path, __version__)
        self.watcher = Watcher(
            root,
            [config.state_dir / name for name in ("accepted", "rejected", "regenerate")],
            wake_dirs=[config.state_dir / WAKE_DIR],
            config_files=live.watched_files() if live is not None else [],
        )
        self.index = StatIndex(root, config.detect.users)
        self.poller = Poller(self.index)
        self.watch_choice: watchmode.WatchChoice | None = None
        self._polling = anyio.Event()
        self._hinted: set[str] = set()  # chats hinted since the last rescan
        self.settler = Settler()
        self.saved_at: dict[str, float] = {}  # chat rel -> time.monotonic() of its latest save
        self.attention = Attention()
        self.runner = Runner(deps, poll_interval=self.timings.poll, attention=self.attention)
        self.engine = Engine(
            config,
            store=deps.store,
            approval=deps.approval,
            root=root,
            wake=self.runner.wake,
            stop_running=self.runner.cancel,
        )
        self.engine.live = live
        self.engine.attention = self.attention
        self.pusher: Pusher | None = None  # with notify.urls: messages to the user's phone
        self.exit_code = 0
        self.processed = 0
        self.rescans = 0
        self._startup: set[str] = set()
        self._catching_up: set[str] = set()  # changed while we were down, not read yet
        self._hint = anyio.Event()
        self._rescan = anyio.Event()
        self._drop = anyio.Event()
        self._woken = anyio.Event()
        self._config_hint = anyio.Event()
        self._tg: TaskGroup | None = None
        self._dead = False
        self._counts_stale = True
        self._announced: dict[str, datetime] = {}
        deps.store.add_job_listener(self._job_changed)
        self._stopping = False
        self._cancel: anyio.CancelScope | None = None
        self._web_face = web
        self.web: Any = None  # what the web face reported when it started (its context)
        self.runner.setup_hold = _hold_reason(config)
        if live is not None:
            live.on_apply(self._apply_config)
            live.on_state(self._config_state_changed)

    @property
    def config(self) -> Config:
        """The configuration in effect (the live one: it changes when the file does)."""
        return self.live.current if self.live is not None else self._config

    # --- configuration -------------------------------------------------------------------

    def _apply_config(self, new: Config, old: Config) -> None:
        """Switch to ``new`` for everything that starts from now on; running jobs keep the
        dependencies they started with. Raises ConfigError (changing nothing) when the new
        providers cannot be built."""
        deps = self.deps.with_config(new) if self.deps.client is not None else None
        if deps is not None:
            self.deps = deps
            self.runner.deps = deps
        if self.deps.committer is not None:
            self.deps.committer.config = new
        self.engine.config = new
        was_held, self.runner.setup_hold = self.runner.setup_hold, _hold_reason(new)
        if was_held and self.runner.setup_hold is None:
            log.info("set up: jobs start now")
            if self._tg is not None:
                # Held a moment more: the catch-up rule goes over the waiting jobs first.
                self.runner.setup_hold = _CATCHING_UP
                self._tg.start_soon(self._expire_before_setup, new.detect.catchup_max_age)
        self.runner.wake()
        self._rescan.set()  # the rescan interval may have changed

    async def _expire_before_setup(self, max_age: float) -> None:
        """The catch-up rule for replies seen while the daemon was not set up: those older
        than ``detect.catchup_max_age`` are not drawn now (as after downtime); the ones asked
        for by hand (``generate``) are."""
        cutoff = _now() - timedelta(seconds=max_age)
        try:
            waiting = await self.store.jobs_in([JobState.QUEUED], limit=10_000)
            for job in waiting:
                if job.source == "manual" or job.created_at >= cutoff:
                    continue
                reason = "seen before the setup, older than detect.catchup_max_age"
                gone = await self.store.transition(
                    job.id,
                    JobState.QUEUED,
                    JobState.SUPERSEDED,
                    last_error=reason,
                    next_attempt_at=None,
                )
                if gone is not None:
                    job_log(gone, "superseded", logger=log, reason=reason)
        except StoreError as exc:
            log.warning("store error while expiring jobs seen before the setup", error=str(exc))
        finally:
            if self.runner.setup_hold == _CATCHING_UP:
                self.runner.setup_hold = _hold_reason(self.config)
            self.runner.wake()

    def _config_state_changed(self) -> None:
        if self.live is not None:  # a new config may name other key files
            self.watcher.watch_config_files(self.live.watched_files())
        self._counts_stale = True
        self.heartbeat.write(watching=len(self.index), **self._heartbeat_extra())
        self.engine.config_changed()

    def _heartbeat_extra(self) -> dict[str, Any]:
        return {"config": self.live.state()} if self.live is not None else {}

    async def _config_loop(self) -> None:
        """Reload the config file when it is written (after a short quiet time: an editor's
        save is often several writes)."""
        live = self.live
        if live is None:
            return
        while True:
            await self._config_hint.wait()
            await anyio.sleep(CONFIG_SETTLE)
            self._config_hint = anyio.Event()
            result = await anyio.to_thread.run_sync(live.read)
            if result is not None:
                before = self.config
                live.take(result)
                after = self.config
                if (before.limits, before.prices) != (after.limits, after.prices):
                    # A raised spend cap lets held jobs through now, not at the window's end.
                    released = await self.store.release_held()
                    if released:
                        log.info("held jobs are checked again", count=released)
                        self.runner.wake()

    # --- start ---------------------------------------------------------------------------

    async def start(self) -> None:
        resumed = await self.store.resume_after_crash()
        if resumed:
            log.info("resumed jobs left running by a crash", count=resumed)
        held = await self.store.release_held()
        if held:
            log.info("held jobs are checked again", count=held)
        removed = await anyio.to_thread.run_sync(self._cleanup_temps)
        removed += await anyio.to_thread.run_sync(self.deps.approval.cleanup_temps)
        if removed:
            log.info("removed stale temp files", count=removed)
        choice = await anyio.to_thread.run_sync(
            watchmode.choose, self.config.detect.watch, self.root
        )
        self.watch_choice = choice
        self.watcher.watch_root = choice.mode == "inotify"
        self.watcher.start()
        if choice.mode == "poll":
            self._polling.set()
        log.info("watching", root=str(self.root), mode=choice.mode, why=choice.why)
        changed = await anyio.to_thread.run_sync(self.index.scan)
        known = await self.store.known_chats()
        now = time.monotonic()
        for rel in changed:
            self._startup.add(rel)
            if rel in known and await self._unchanged_since_cursor(rel):
                continue
            self._catching_up.add(rel)
            self.settler.due_now(self.index.ref(rel), now)
        log.info(
            "startup scan",
            chats=len(self.index),
            to_read=len(self.settler),
            known=len(known),
            root=str(self.root),
        )

    async def _unchanged_since_cursor(self, rel: str) -> bool:
        # Cheap catch-up test: a chat of the size the cursor saw, not modified since the cursor
        # was stored, is not re-read at start. The time catches a same-size edit (one word
        # swapped) made while we were down.
        record = await self.store.get_chat(rel)
        mtime_ns = self.index.mtime_ns(rel)
        if record is None or mtime_ns is None or record.cursor.size != self.index.size(rel):
            return False
        stored_ns = (record.updated_at - _EPOCH) // _MICROSECOND * 1000
        return mtime_ns <= stored_ns

    def _cleanup_temps(self) -> int:
        folders = {
            chat.path.parent for chat in layout.iter_chats(self.root, self.config.detect.users)
        }
        removed = 0
        for folder in folders:
            try:
                removed += write.cleanup_stale_temps(folder)
            except OSError as exc:
                log.warning("temp cleanup failed", folder=str(folder), error=str(exc))
        return removed

    # --- serve ---------------------------------------------------------------------------

    async def run(self, *, ready: Callable[[], None] | None = None) -> int:
        try:
            async with anyio.create_task_group() as tg:
                self._cancel = tg.cancel_scope
                self._tg = tg
                tg.start_soon(self._signal_loop, tg.cancel_scope)  # SIGTERM during start drains
                await tg.start(self.runner.run)
                await self.start()
                if self._web_face is not None and self.config.web.enabled:
                    self.web = await tg.start(self._serve_web, self._web_face)
                await tg.start(self.watcher.run)
                tg.start_soon(self._pump)
                tg.start_soon(self._settle_loop)
                tg.start_soon(self._rescan_loop)
                tg.start_soon(self._poll_loop)
                tg.start_soon(self._drop_loop)
                tg.start_soon(self._wake_loop, tg.cancel_scope)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._retention_loop)
                tg.start_soon(self._config_loop)
                if self.config.notify.urls:
                    self.pusher = Pusher(self.config.notify, push_link(self.config), self.root)
                    self.engine.on_job_changed(self.pusher.job_changed)
                    tg.start_soon(self.pusher.run)
                self.heartbeat.write(watching=len(self.index), **self._heartbeat_extra())
                self.notifier.ready(f"watching {len(self.index)} chats")
                log.info("ready", chats=len(self.index), pid=os.getpid())
                if self.runner.setup_hold is not None:
                    log.warning(
                        "not set up yet: replies are noted, no image is made until the image "
                        "service is set up",
                        missing=setup_missing(self.config),
                        open=getattr(self.web, "url", None),
                    )
                if ready is not None:
                    ready()
        finally:
            with anyio.CancelScope(shield=True):
                await self.watcher.aclose()
        self.heartbeat.remove()
        log.info("stopped", code=self.exit_code)
        return self.exit_code

    async def stop(self, reason: str, cancel: anyio.CancelScope, code: int = 0) -> None:
        """Drain and end the task group (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        self.exit_code = code
        log.info("stopping", reason=reason, running=self.runner.running)
        self.notifier.stopping(f"draining: {reason}")
        with anyio.CancelScope(shield=True):
            self.heartbeat.write(watching=len(self.index), state="draining")
            await self.watcher.aclose()
            grace = self.timings.drain_grace
            await self.runner.drain(self.config.limits.drain_seconds if grace is None else grace)
        cancel.cancel()

    async def shutdown(self, reason: str = "requested", code: int = 0) -> None:
        """Drain and stop a running service (from another task in the same loop)."""
        if self._cancel is not None:
            await self.stop(reason, self._cancel, code)

    async def _serve_web(
        self, face: Face, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await face(self.engine, draining=lambda: self._stopping, task_status=task_status)

    async def _signal_loop(self, cancel: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                await self.stop(signal.Signals(signum).name, cancel)
                return

    async def _pump(self) -> None:
        """Watcher hints into the settler (or rescans / drop checks)."""
        try:
            async for hint in self.watcher.receive:
                self._take(hint)
        except anyio.ClosedResourceError:
            return  # the watcher was stopped (drain)

    def _take(self, hint: Hint) -> None:
        if hint.kind is HintKind.CHAT and hint.chat is not None:
            self._hinted.add(hint.chat.rel)
            if self._wanted(hint.chat):
                self.saved_at[hint.chat.rel] = hint.at or time.monotonic()
                self.attention.saved(hint.chat.rel, hint.at or None)
                self.settler.touch(hint.chat, time.monotonic())
                self._hint.set()
        elif hint.kind is HintKind.DROP:
            self._drop.set()
        elif hint.kind is HintKind.WAKE:
            self._woken.set()
        elif hint.kind is HintKind.CONFIG:
            self._config_hint.set()
        elif hint.kind is HintKind.DEAD:
            if not self._stopping and self._cancel is not None:
                log.error(
                    "the file watcher thread died; exiting so the service manager restarts us"
                )
                self._dead = True
                self._woken.set()
        else:
            self._rescan.set()

    def _job_changed(self, job: Job, previous: JobState | None) -> None:
        self._counts_stale = True

    def _wanted(self, chat: ChatRef) -> bool:
        users = self.config.detect.users
        return not users or chat.user in users

    async def _settle_loop(self) -> None:
        while True:
            deadline = self.settler.next_deadline()
            wait = IDLE_WAKE_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            if wait > 0:
                with anyio.move_on_after(wait):
                    await self._hint.wait()
                self._hint = anyio.Event()
            for chat in self.settler.pop_due(time.monotonic()):
                await self.process_chat(chat)

    async def _rescan_loop(self) -> None:
        while not self._polling.is_set():
            with anyio.move_on_after(self.config.detect.rescan_seconds):
                await self._rescan.wait()
            if self._polling.is_set():
                return  # the poll loop walks the tree from now on
            self._rescan = anyio.Event()
            overflowed = self.watcher.rescan_needed
            self.watcher.clear_rescan()
            hinted, self._hinted = self._hinted, set()
            known = set(self.index.rels())
            started = time.time()
            try:
                changed = await anyio.to_thread.run_sync(self.index.scan)
            except Exception:  # the next rescan tries again; the daemon keeps serving
                log.exception("rescan failed")
                continue
            now = time.monotonic()
            for rel in changed:
                self.settler.touch(self.index.ref(rel), now)
            if changed:
                log.debug("rescan found changes", count=len(changed))
                self._hint.set()
            if not overflowed and self.config.detect.watch == "auto":
                self._check_missed(changed, known, hinted, started)
            self.rescans += 1

    def _check_missed(
        self, changed: list[str], known: set[str], hinted: set[str], started: float
    ) -> None:
        """A known chat changed well before this rescan and no event said so: inotify does not
        see this folder's writes (a share written from elsewhere). Poll from now on."""
        quiet_before_ns = int((started - MISSED_CHANGE_AGE) * 1e9)
        missed = [
            rel
            for rel in changed
            if rel in known
            and rel not in hinted
            and (self.index.mtime_ns(rel) or quiet_before_ns) < quiet_before_ns
        ]
        if not missed:
            return
        why = f"a change of {missed[0]} raised no inotify event"
        self.watch_choice = watchmode.WatchChoice("poll", why)
        self.watcher.stop_root()
        self._polling.set()
        log.warning("switching to polling", root=str(self.root), mode="poll", why=why)

    async def _poll_loop(self) -> None:
        """The data root by stat (no inotify there): recently saved chats every 0.5 s, the
        rest every few seconds (:mod:`daemon.engine.intake.poll`)."""
        await self._polling.wait()
        poller = self.poller
        while True:
            try:
                changed = await anyio.to_thread.run_sync(poller.poll, time.monotonic())
            except Exception:  # the next beat tries again; the daemon keeps serving
                log.exception("poll failed")
                changed = []
            now = time.monotonic()
            for rel in changed:
                chat = self.index.ref(rel)
                if self._wanted(chat):
                    self.saved_at[rel] = now
                    self.attention.saved(rel, now)
                    self.settler.touch(chat, now)
            if changed:
                self._hint.set()
            wait = max(0.0, poller.next_at(now) - time.monotonic())
            with anyio.move_on_after(wait):
                await self._rescan.wait()
            if self._rescan.is_set():
                self._rescan = anyio.Event()
                poller.full_due()

    async def _drop_loop(self) -> None:
        """Drop folders, when the watcher reports a move into one (and once at start); a folder
        still being copied in is looked at again when it has settled, by a timer."""
        approval = self.deps.approval
        while True:
            try:
                await self.handle_drops()
            except Exception:  # e.g. a drop folder removed by hand; the next event retries
                log.exception("drop folder check failed")
            ripe = approval.settling_until
            wait = IDLE_WAKE_SECONDS if ripe is None else max(0.05, ripe - time.time())
            with anyio.move_on_after(wait):
                await self._drop.wait()
            self._drop = anyio.Event()

    async def _wake_loop(self, cancel: anyio.CancelScope) -> None:
        """Another process changed jobs (or the watcher died): wake the runner, and tell this
        process's listeners (the web inbox) of the jobs changed meanwhile."""
        since = _now()
        while True:
            await self._woken.wait()
            self._woken = anyio.Event()
            if self._dead:
                await self.stop("file watcher died", cancel, code=1)
                return
            self.runner.wake()
            self._counts_stale = True
            try:
                changed = await self.store.changed_since(since - _WAKE_OVERLAP)
            except StoreError as exc:
                log.warning("store error after a wake-up", error=str(exc))
                continue
            for job in changed:
                if job.meta.get("cancelled") and job.state is JobState.REJECTED:
                    self.runner.cancel(job.id, "cancelled")  # by another process (the CLI)
                if self._announced.get(job.id) != job.updated_at:
                    self._announced[job.id] = job.updated_at
                    self.store.announce(job)
            if changed:
                since = max(since, changed[-1].updated_at)
            while len(self._announced) > _ANNOUNCED_KEPT:
                self._announced.pop(next(iter(self._announced)))

    async def _retention_loop(self) -> None:
        """Prune the state dir at start (after a moment) and then daily
        (:mod:`daemon.engine.process.retention`)."""
        from daemon.engine.process.retention import prune_state

        await anyio.sleep(self.timings.retention_first)
        while True:
            try:
                await prune_state(self.config, self.store, self.deps.approval)
            except (StoreError, OSError) as exc:
                log.warning("retention pass failed; next one tomorrow", error=str(exc))
            await anyio.sleep(self.timings.retention_every)

    async def _heartbeat_loop(self) -> None:
        ping = self.notifier.watchdog_interval
        interval = min(self.timings.heartbeat, ping) if ping else self.timings.heartbeat
        last_beat = 0.0
        last_status = ""
        counts: dict[str, int] = {}
        while True:
            now = time.monotonic()
            if now - last_beat >= self.timings.heartbeat:
                if self._counts_stale:
                    # Only after a job changed: an idle daemon runs no query at all.
                    self._counts_stale = False
                    counts = await self._safe_counts()
                self.heartbeat.write(
                    watching=len(self.index), jobs=counts, **self._heartbeat_extra()
                )
                last_beat = now
                jobs = ", ".join(f"{n} {state}" for state, n in counts.items()) or "none"
                status = f"watching {len(self.index)} chats; jobs: {jobs}"
                if status != last_status and not self._stopping:
                    self.notifier.status(status)
                    last_status = status
            if ping:
                self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _safe_counts(self) -> dict[str, int]:
        try:
            counts = await self.store.counts()
        except StoreError:
            return {}
        return {state.value: n for state, n in counts.items() if n}

    # --- one chat ------------------------------------------------------------------------

    async def process_chat(self, chat: ChatRef) -> None:
        """Read what is new in ``chat`` and turn it into jobs and supersedes (never raises)."""
        try:
            await self._process(chat)
        except StoreError as exc:
            log.error("store error while reading a chat", chat=chat.rel, error=str(exc))
        except StImagegenError as exc:
            log.warning("chat skipped", chat=chat.rel, error=str(exc))
        except Exception:
            log.exception("chat processing failed", chat=chat.rel)
        finally:
            self.processed += 1

    async def _process(self, chat: ChatRef) -> None:
        store = self.store
        record = await store.get_chat(chat.rel)
        cursor = record.cursor if record else None
        data = record.data if record else None
        try:
            result, ctx = await anyio.to_thread.run_sync(self._read, chat, cursor, data)
        except ChatReadError:
            if not chat.path.exists():
                self.index.note(chat)
                log.debug("chat gone before it was read", chat=chat.rel)
                return
            raise
        first_sight = record is None
        created_while_running = first_sight and chat.rel not in self._startup
        live = chat.rel not in self._catching_up
        decision = detect.decide(
            result,
            ctx,
            self.config.detect,
            self.config.mode,
            _now(),
            first_sight=first_sight,
            created_while_running=created_while_running,
            live=live,
        )
        if decision.hold:
            # An edit or a swipe back: more such saves tend to follow within seconds. Act on
            # the state the chat settles in (read again then), not on each step of it.
            quiet_at = self.saved_at.get(chat.rel, 0.0) + self.config.detect.settle_seconds
            if time.monotonic() < quiet_at:
                self.settler.due_at(chat, quiet_at)
                self._hint.set()
                log.debug("held until the chat is quiet", chat=chat.rel)
                return
        self._catching_up.discard(chat.rel)
        _log_skips(chat.rel, decision.skipped)
        for identity, keep, reason in decision.supersede:
            # keep: the reply's text now (its jobs stay); None: the reply is gone, all go.
            reply = ReplyKey(chat.user, chat.rel, identity.name, identity.first_date, keep or "")
            gone = await store.supersede(reply, reason, keep=keep is not None)
            for old in gone:
                self.runner.cancel(old.id, reason)
                if old.state is JobState.SUPERSEDED:
                    # Shelved, not deleted: a swipe back to this text brings the images back.
                    await anyio.to_thread.run_sync(self.deps.approval.shelve, old.id)
                job_log(old, "superseded", logger=log, reason=reason)
        created = 0
        for spec in decision.new_jobs:
            fields = spec.fields()
            job = await store.create_job(**fields)
            if job is None:
                job = await self._revive(fields)
            if job is not None:
                created += 1
                job_log(job, job.state.value, logger=log, speaker=job.speaker, source=job.source)
        await store.set_cursor(chat.rel, result.cursor, data=decision.state)
        self.index.note(chat)
        if created:
            self.runner.wake()
        await self._reconcile(chat)

    async def _revive(self, fields: dict[str, Any]) -> Job | None:
        """The job this reply's revision already had, back from superseded (a swipe back)."""
        existing = await self.store.find_job(fields["reply"].key())
        if existing is None or existing.state is not JobState.SUPERSEDED:
            return None
        revived = await revive_job(
            self.store,
            self.deps.approval,
            existing,
            auto_accept=self.config.approval == "auto",
        )
        if revived is not None:
            log.info("job revived", job=revived.id, chat=revived.chat, state=revived.state.value)
        return revived

    def _read(
        self, chat: ChatRef, cursor: Cursor | None, data: dict[str, Any] | None
    ) -> tuple[ScanResult, detect.ChatContext]:
        """The blocking part of reading a chat (run in a worker thread)."""
        result = tail_scan(chat.path, cursor)
        return result, detect.ChatContext.for_chat(self.root, chat, data, previous=cursor)

    async def _reconcile(self, chat: ChatRef) -> None:
        committer = self.deps.committer
        if committer is None:
            return
        added = await committer.reconcile_chat(chat)  # reads the chat only with open entries
        if added:
            log.info(
                "re-inserted image messages dropped by a stale tab", chat=chat.rel, count=added
            )

    # --- drop folders --------------------------------------------------------------------

    async def handle_drops(self) -> int:
        """Act on job folders moved into accepted/ rejected/ regenerate/."""
        approval = self.deps.approval
        actions = await anyio.to_thread.run_sync(
            functools.partial(approval.drop_actions, settle=self.timings.drop_settle)
        )
        done = 0
        for job_id, action in actions:
            try:
                job = await self._drop_action(job_id, str(action))
            except JobError as exc:
                log.warning("folder action refused", job=job_id, action=str(action), error=str(exc))
                await anyio.to_thread.run_sync(approval.refuse_drop, job_id, str(exc))
                continue
            done += 1
            log.info("folder action", job=job_id, action=str(action), state=job.state.value)
        if done:
            self.runner.wake()
        return done

    async def _drop_action(self, job_id: str, action: str) -> Job:
        approval = self.deps.approval
        done = await self._already_done(job_id, action)
        if done is not None:
            return done
        if action == "accept":
            return await self.engine.accept(job_id)
        if action == "reject":
            return await self.engine.reject(job_id)
        prompt = await anyio.to_thread.run_sync(approval.drop_prompt, job_id)
        return await self.engine.regen(job_id, prompt)

    async def _already_done(self, job_id: str, action: str) -> Job | None:
        """The job when its state says ``action`` was already taken, else ``None``.

        A restarted daemon sees every folder in the drop folders as new, including those it
        acted on just before it stopped (the folder goes only after the commit, or after the
        state change): refusing them would move them back to pending/ with a wrong note.
        """
        job = await self.store.get_job(job_id)
        if action == "accept" and job.state is JobState.ACCEPTED:
            return job  # the commit still reads the kept images from the folder
        done = (
            (action == "accept" and job.state is JobState.COMMITTED)
            or (action == "reject" and job.state is JobState.REJECTED)
            or (action == "regenerate" and await self._regenerated(job))
        )
        if not done:
            return None
        await anyio.to_thread.run_sync(self.deps.approval.finish, job.id)
        log.info("folder action already done", job=job.id, action=action, state=job.state.value)
        return job

    async def _regenerated(self, job: Job) -> bool:
        if job.state is not JobState.SUPERSEDED:
            return False
        same = await self.store.jobs_for(job.reply)
        return any(other.meta.get("regen_of") == job.id for other in same)


_CATCHING_UP = "applying the catch-up rule to replies seen before the setup"


def _hold_reason(config: Config) -> str | None:
    missing = setup_missing(config)
    return f"not set up yet ({', '.join(missing)})" if missing else None


def _log_skips(chat: str, skipped: list[tuple[int, detect.Skip]]) -> None:
    """One ``skipped`` line per message that got no job; the history a chat had when first
    seen is one line for all of it (a chat may hold thousands)."""
    history = [index for index, why in skipped if why is detect.Skip.HISTORY]
    for index, why in skipped:
        if why is not detect.Skip.HISTORY:
            log.info("skipped", chat=chat, mesid=index, reason=why.value)
    if history:
        log.info(
            "skipped",
            chat=chat,
            mesid=f"{min(history)}-{max(history)}" if len(history) > 1 else history[0],
            count=len(history),
            reason=detect.Skip.HISTORY.value,
        )


async def serve(
    config: Config,
    *,
    ready: Callable[[], None] | None = None,
    systemd: SystemdEnv | None = None,
    timings: ServiceTimings | None = None,
    web: Face | None = None,
    source: ConfigSource | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT (0) or a fatal problem (1); ``web``: the inbox,
    served beside it when ``web.enabled``."""
    from daemon.engine.jobs.pipeline import open_job_deps

    if config.data_root is None:
        raise ConfigError(
            "data_root is not set: put data_root in the config file, set "
            "ST_IMAGEGEN_DATA_ROOT, or pass --data-root"
        )
    check_default_style(config)  # a typo would give every job no style, silently
    root = layout.resolve_data_root(config.data_root)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    notifier = Notifier(systemd.notify_socket, systemd.watchdog_usec) if systemd else Notifier()
    with hold_state_lock(config.state_dir):
        async with open_job_deps(config, root=root) as deps:
            # A damaged file is found here, before any job runs, not as odd failures mid-run.
            if problems := await deps.store.integrity_problems():
                raise StoreError(damaged_message(config.db_path, problems))
            live = LiveConfig(source, config) if source is not None else None
            service = Service(
                config, root, deps, notifier=notifier, timings=timings, web=web, live=live
            )
            return await service.run(ready=ready)
