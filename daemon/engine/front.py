"""The front door: the one way the faces (the CLI, the web API, the drop folders, ``generate
--wait``) act on or read jobs.

An :class:`Engine` is opened once per process from the :class:`~daemon.config.Config`. It owns
the job store, the approval folders, the character/style store and the duty to wake the runner
after a change: in the daemon it is built on the daemon's own store with the runner's ``wake``;
in a one-shot process (the CLI) it opens the store on first use and wakes a running daemon
through its wake folder. The same request therefore has the same outcome from every face.

Errors are typed (:mod:`daemon.errors`): ``NotFoundError`` (no such job or chat),
``AmbiguousError`` (a prefix or name matching several), ``JobStateError`` (the job's state does
not allow the action) and ``JobError`` for any other refusal.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from daemon.config import Config
from daemon.engine.intake.watchmode import choose as watch_mode
from daemon.engine.intake.why import Explanation, explain
from daemon.engine.jobs import manual
from daemon.engine.jobs.accepting import wait_for_commit
from daemon.engine.jobs.approval import Approval
from daemon.engine.jobs.budget import (
    APPROVED_KEY,
    HELD_KEY,
    SpendSummary,
    hold_for_a_user,
    spend_summary,
)
from daemon.engine.look.appearance import CharacterProfile, CharacterStore
from daemon.engine.look.styles import SHIPPED as SHIPPED_STYLES
from daemon.engine.look.styles import Style, all_styles, check_default_style, check_style
from daemon.engine.process.lock import daemon_running
from daemon.engine.process.pause import Paused, read_pause, set_pause
from daemon.engine.process.status import (
    HEARTBEAT_STALE_SECONDS,
    StatusReport,
    daemon_status,
    gather_status,
    plain_age,
)
from daemon.engine.process.wake import notify_daemon
from daemon.engine.store import Store
from daemon.engine.store.schema import damage_found
from daemon.errors import (
    AmbiguousError,
    ConfigError,
    JobStateError,
    NotFoundError,
    StImagegenError,
)
from daemon.jobstate import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    CHOICE_STATES,
    FINAL_STATES,
    HISTORY_STATES,
    INBOX_STATES,
    PROGRESS_TEXT,
    WAIT_STOP_STATES,
    WORKING_STATES,
    Job,
    JobState,
    vocabulary,
)
from daemon.tavern import layout

if TYPE_CHECKING:
    import httpx

    from daemon.configure.live import LiveConfig
    from daemon.engine.jobs.order import Attention
    from daemon.providers.text import PromptWriter

__all__ = [
    "ACTIVE_STATES",
    "CANCELLABLE_STATES",
    "CHOICE_STATES",
    "FINAL_STATES",
    "HEARTBEAT_STALE_SECONDS",
    "HISTORY_STATES",
    "INBOX_STATES",
    "PROGRESS_TEXT",
    "SHIPPED_STYLES",
    "WAIT_STOP_STATES",
    "WORKING_STATES",
    "CharacterProfile",
    "Engine",
    "Explanation",
    "Generated",
    "Job",
    "JobListener",
    "JobState",
    "Paused",
    "StatusReport",
    "all_styles",
    "check_default_style",
    "daemon_running",
    "daemon_status",
    "damage_found",
    "hold_for_a_user",
    "plain_age",
    "prompt_writer",
    "vocabulary",
    "wait_for_commit",
    "watch_mode",
]

# The health checks the faces and the doctor read without acting on jobs (re-exported above):
# ``daemon_status`` (the heartbeat), ``daemon_running`` (the state dir's lock),
# ``damage_found`` (the store file), ``check_default_style`` (the config's style),
# ``watch_mode`` (inotify or polling for a data root, as the daemon decides),
# ``wait_for_commit`` (a running daemon's commit of an accepted job, read-only, blocking).

JobListener = Callable[[Job, JobState | None], None]
"""Told ``(job, previous state or None)`` after each change this process makes or learns of."""


@dataclass(frozen=True, slots=True)
class Generated:
    """What :meth:`Engine.generate` did: the job, whether it is new (or revived), and where."""

    job: Job
    created: bool
    chat: str  # the chat path relative to the data root

    @property
    def where(self) -> str:
        return f"{self.job.speaker}'s message {self.job.message_index} in {self.chat}"


class Engine:
    """Jobs for every face: open with :meth:`open` (one-shot processes) or build it on the
    daemon's own store (``store``, ``approval``, ``wake`` given)."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        approval: Approval | None = None,
        root: Path | None = None,
        wake: Callable[[], None] | None = None,
        stop_running: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._owns_store = False
        self._approval = approval
        self._root = root
        self._wake = wake
        self._stop_running = stop_running
        self._characters: CharacterStore | None = None
        self._lock = anyio.Lock()
        self.live: LiveConfig | None = None  # the daemon's: config changed by file or page
        # The daemon's: which chats a person is looking at (the runner serves them first).
        self.attention: Attention | None = None
        self._config_listeners: list[Callable[[dict[str, Any]], None]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: Config) -> AsyncIterator[Engine]:
        """An engine for one process; its store (opened on first use) is closed after."""
        engine = cls(config)
        try:
            yield engine
        finally:
            await engine.close()

    async def close(self) -> None:
        if self._owns_store and self._store is not None:
            store, self._store = self._store, None
            await store.close()

    # --- what it owns --------------------------------------------------------------------

    async def store(self) -> Store:
        """The job store (opened on first use). Engine rooms only: faces use the methods."""
        async with self._lock:
            if self._store is None:
                state_dir = self.config.state_dir
                await anyio.to_thread.run_sync(lambda: state_dir.mkdir(parents=True, exist_ok=True))
                self._store = await Store.open(self.config.db_path)
                self._owns_store = True
            return self._store

    async def approval(self) -> Approval:
        """The approval folders (created on first use)."""
        if self._approval is None:
            self._approval = await anyio.to_thread.run_sync(Approval, self.config.state_dir)
        return self._approval

    async def root(self) -> Path:
        """The resolved SillyTavern data root; ConfigError when none is set."""
        if self._root is None:
            if self.config.data_root is None:
                raise ConfigError(
                    "data_root is not set (config file, ST_IMAGEGEN_DATA_ROOT or --data-root)"
                )
            self._root = await anyio.to_thread.run_sync(
                layout.resolve_data_root, self.config.data_root
            )
        return self._root

    @property
    def characters(self) -> CharacterStore:
        """Character profiles and chat styles (``<state_dir>/characters.json``)."""
        if self._characters is None:
            self._characters = CharacterStore(self.config.state_dir)
        return self._characters

    def styles(self) -> dict[str, Style]:
        """Every style by name: the shipped ones and the config's own."""
        return all_styles(self.config)

    def check_style(self, name: str) -> str:
        """The style's canonical name; ConfigError naming the known ones when there is none."""
        return check_style(self.config, name)

    def describe_character(self, name: str) -> dict[str, Any]:
        """What the next job would use for ``name`` (blocking: reads its card)."""
        from daemon.engine.look.describe import describe_character

        return describe_character(self.config, self.characters, name)

    def add_reference(self, name: str, file: Path) -> Path:
        """Copy ``file`` in as a reference image of character ``name`` (blocking)."""
        from daemon.engine.look.references import add_reference

        return add_reference(self.characters, name, file)

    def clear_references(self, name: str) -> int:
        """Remove every reference image of ``name`` (blocking); how many went."""
        from daemon.engine.look.references import clear_references

        return clear_references(self.characters, name)

    async def chat_for_file(self, chat_file: str, *, users: Collection[str] | None = None) -> str:
        """The chat path of ST's chat id ``chat_file`` (NotFoundError, AmbiguousError), among
        ``users``' chats (None: everyone's)."""
        root = await self.root()
        listed = layout.list_users(root, self.config.detect.users)
        visible = [u for u in listed if users is None or u in users]
        return await anyio.to_thread.run_sync(_chat_by_file, root, visible, chat_file)

    def find_chat(self, spec: str | None) -> str:
        """The chat ``spec`` names (``generate --chat`` forms), relative to the data root
        (blocking: lists the chats)."""
        if self.config.data_root is None:
            raise ConfigError(
                "data_root is not set (config file, ST_IMAGEGEN_DATA_ROOT, --data-root)"
            )
        root = self._root or layout.resolve_data_root(self.config.data_root)
        users = layout.list_users(root, self.config.detect.users)
        return manual.resolve_chat_spec(root, users, spec).rel

    def wake(self) -> None:
        """Tell the runner that jobs changed: this process's, or a daemon's in another one."""
        if self._wake is not None:
            self._wake()
        else:
            notify_daemon(self.config.state_dir)

    def on_config_changed(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener`` with the config state (problem, restart pending, setup) after
        every reload attempt of the daemon's config file; returns remove."""
        self._config_listeners.append(listener)
        return lambda: self._config_listeners.remove(listener)

    def config_changed(self) -> None:
        """The daemon's config was reloaded (applied or refused): tell the listeners."""
        state = self.config_state()
        for listener in list(self._config_listeners):
            listener(state)

    def config_state(self) -> dict[str, Any]:
        """The config file's state: its path, a problem with it (file, line, message), the
        keys waiting for a restart, what is not set up yet."""
        from daemon.configure.ready import setup_missing

        if self.live is not None:
            return self.live.state()
        return {
            "file": None,
            "problem": None,
            "restart_pending": [],
            "setup_needed": setup_missing(self.config),
            "reloads": 0,
        }

    def on_job_changed(self, listener: JobListener) -> Callable[[], None]:
        """Call ``listener`` after every job change (needs the store open); returns remove."""
        if self._store is None:
            raise RuntimeError("the engine's store is not open yet")
        return self._store.add_job_listener(listener)

    # --- reading -------------------------------------------------------------------------

    async def job(self, ref: str, *, users: Collection[str] | None = None) -> Job:
        """One job by id or unique prefix (NotFoundError, AmbiguousError); ``users``: as seen
        by someone who sees only these ST handles' jobs (None: everyone's)."""
        return await (await self.store()).get_job(ref, users=users)

    async def jobs(
        self,
        *,
        states: Iterable[JobState] = (),
        chat: str | None = None,
        chat_file: str | None = None,
        user: str | None = None,
        users: Collection[str] | None = None,
        before: str | None = None,
        limit: int = 50,
        character: str | None = None,
    ) -> list[Job]:
        """Jobs newest first, filtered (any of ``states``; all when empty); ``users``: only
        these ST handles' jobs (a web user's view); ``character``: a card stem or group id."""
        store = await self.store()
        return await store.query_jobs(
            states=states,
            chat=chat,
            chat_file=chat_file,
            user=user,
            users=users,
            before=before,
            limit=limit,
            character=character,
        )

    async def chat_counts(
        self, states: Iterable[JobState], *, users: Collection[str] | None = None
    ) -> dict[str, int]:
        """How many jobs in ``states`` each chat has (for the inbox's chat filter)."""
        return await (await self.store()).chat_counts(states, users=users)

    async def counts(self, *, users: Collection[str] | None = None) -> dict[JobState, int]:
        return await (await self.store()).counts(users=users)

    async def known_chats(self) -> set[str]:
        return await (await self.store()).known_chats()

    async def committed_message(self, job_id: str) -> dict[str, Any] | None:
        """The image message a committed job wrote into its chat, as it was written."""
        entry = await (await self.store()).ledger_get(job_id)
        return entry.message if entry is not None else None

    async def job_folder(self, job_id: str) -> Path | None:
        """The job's image folder wherever it is now (pending/ or a drop folder), or None."""
        approval = await self.approval()
        return await anyio.to_thread.run_sync(approval.find, job_id)

    async def chat_title(self, chat: str) -> str:
        """What the user calls ``chat``: a group chat by its group's name (see
        ``layout.chat_title``); the path's own parts when the data root is not usable."""
        try:
            root: Path | None = await self.root()
        except (ConfigError, StImagegenError, OSError):
            root = None
        return await anyio.to_thread.run_sync(layout.chat_title, root, chat)

    async def trash_folder(self, job_id: str) -> Path:
        """Where a rejected job's images wait for a restore (may be gone)."""
        return (await self.approval()).trash_path(job_id)

    async def status(self, *, config_error: str | None = None) -> StatusReport:
        """Daemon, chats and jobs. With no store yet none is created (the report says so);
        ``config_error``: why the config file could not be used by this process."""
        store, error = self._store, None
        if store is None and await anyio.to_thread.run_sync(self.config.db_path.exists):
            try:
                store = await self.store()
            except StImagegenError as exc:
                error = str(exc)
        return await gather_status(self.config, store, store_error=error, config_error=config_error)

    async def daemon_running(self) -> bool:
        found = await anyio.to_thread.run_sync(daemon_status, self.config.heartbeat_path)
        return found.running

    async def why(self, chat: str | None, mesid: int | None) -> Explanation:
        """The jobs of one message, or why it has none."""
        root = await self.root()
        return await explain(self.config, await self.store(), root, chat, mesid)

    # --- acting --------------------------------------------------------------------------

    async def generate(
        self,
        chat: str | None = None,
        mesid: int | None = None,
        *,
        chat_file: str | None = None,
        force: bool = False,
        users: Collection[str] | None = None,
    ) -> Generated:
        """The job for one reply: an existing one (revived when it was swiped away and back),
        or a new one (always with ``force``). ``chat_file`` is ST's chat id (the file stem),
        alone or under the character/group ``chat`` names. ``users``: asked by someone who
        sees only these ST handles' chats; another's chat is "not found", never "forbidden"."""
        root = await self.root()
        sel = await anyio.to_thread.run_sync(self._select, root, chat, chat_file, mesid, users)
        job, created = await manual.create_for(
            await self.store(),
            sel,
            force,
            await self.approval(),
            auto_accept=self.config.approval == "auto",
        )
        if created:
            self.wake()
        return Generated(job, created, sel.chat.rel)

    def _select(
        self,
        root: Path,
        chat: str | None,
        chat_file: str | None,
        mesid: int | None,
        users: Collection[str] | None,
    ) -> manual.Selection:
        """The chat and message asked for (blocking: lists and reads chats)."""
        every = layout.list_users(root, self.config.detect.users)
        visible = every if users is None else [u for u in every if u in users]
        spec = chat
        if chat_file is not None:
            if chat is None:
                spec = _chat_by_file(root, visible, chat_file)
            elif not chat.endswith(".jsonl"):
                spec = f"{chat}/{chat_file}"
        if users is not None:
            # A path straight to another user's chat resolves whoever asks: as if it did not
            # exist (checked before the chat is read, so no error tells anything about it).
            if spec is None and not visible:
                raise NotFoundError("no chats of yours found")
            first = (spec or "").replace("\\", "/").split("/", 1)[0]
            if first in every and first not in users:
                raise NotFoundError("no such chat")
            ref = manual.resolve_chat_spec(root, visible, spec)
            if ref.user not in users:
                raise NotFoundError("no such chat")
            spec = ref.rel
        return manual.select(root, visible, spec, mesid)

    async def accept(self, ref: str, keep: Sequence[int] | None = None) -> Job:
        """PENDING -> ACCEPTED, keeping images ``keep`` (1-based) or every one still there."""
        from daemon.engine.jobs.pipeline import accept_job

        done = await accept_job(await self.store(), await self.approval(), ref, keep)
        self.wake()
        return done

    async def reject(self, ref: str) -> Job:
        """PENDING, ACCEPTED (not yet committed) or FAILED -> REJECTED; the images go."""
        from daemon.engine.jobs.pipeline import reject_job

        done = await reject_job(
            await self.store(),
            await self.approval(),
            ref,
            trash_days=self.config.limits.trash_days,
        )
        self.wake()
        return done

    async def restore(self, ref: str) -> Job:
        """Undo a reject: back to PENDING with its images from the trash (see ``restore_job``)."""
        from daemon.engine.jobs.pipeline import restore_job

        done = await restore_job(await self.store(), await self.approval(), ref)
        self.wake()
        return done

    async def cancel_queued(
        self, *, chat: str | None = None, users: Collection[str] | None = None
    ) -> list[Job]:
        """Cancel every queued job (of one ``chat``); running ones go on. Returns the cancelled."""
        store = await self.store()
        done: list[Job] = []
        for job in await store.query_jobs(
            states=[JobState.QUEUED], chat=chat, users=users, limit=100_000
        ):
            try:
                done.append(await self.cancel(job.id))
            except JobStateError:
                continue  # it started or finished meanwhile
        return done

    async def paused(self) -> Paused:
        """The pause switch: no new job starts in a paused chat (or anywhere)."""
        return await anyio.to_thread.run_sync(read_pause, self.config.state_dir)

    async def pause(self, paused: bool, chat: str | None = None) -> Paused:
        """Pause (or resume) every chat, or one ``chat``; a resume wakes the runner."""
        after = await anyio.to_thread.run_sync(set_pause, self.config.state_dir, paused, chat)
        self.wake()
        return after

    async def regen(self, ref: str, prompt: str | None = None) -> Job:
        """A new job for the job's reply (its prompt, or ``prompt``); see ``regen_job``."""
        from daemon.engine.jobs.pipeline import regen_job

        new = await regen_job(await self.store(), await self.approval(), ref, prompt)
        self.wake()
        return new

    async def spend(self, users: Collection[str] | None = None) -> SpendSummary:
        """Today's and this month's spend and images, with the caps; only in the chats of ST
        handles ``users`` when given (a user's own, without the daemon's caps)."""
        return await spend_summary(self.config, await self.store(), datetime.now(UTC), users=users)

    async def approve_spend(self, ref: str) -> Job:
        """Let one job held by a spend cap make its call now, once (the caps stay)."""
        store = await self.store()
        job = await store.get_job(ref)
        if job.state is not JobState.QUEUED or not job.meta.get(HELD_KEY):
            raise JobStateError(
                f"job {job.id} is not held by a spend cap (it is {job.state.value})"
            )
        moved = await store.transition(
            job.id,
            JobState.QUEUED,
            JobState.QUEUED,
            next_attempt_at=datetime.now(UTC),
            meta_update={APPROVED_KEY: True},
        )
        if moved is None:
            now = await store.get_job(job.id)
            raise JobStateError(f"job {now.id} is no longer held (it is {now.state.value})")
        self.wake()
        return moved

    async def cancel(self, ref: str) -> Job:
        """A queued or running job -> REJECTED (``meta["cancelled"]``), before any image is
        on offer. A running job is stopped here when this process runs it; a daemon running it
        stops at its next step and drops the result (its state no longer allows it)."""
        store = await self.store()
        job = await store.get_job(ref)
        if job.state not in CANCELLABLE_STATES:
            raise JobStateError(
                f"cannot cancel job {job.id}: it is {job.state.value} "
                "(only queued and running jobs can be cancelled)"
            )
        moved = await store.transition(
            job.id,
            CANCELLABLE_STATES,
            JobState.REJECTED,
            last_error="cancelled",
            next_attempt_at=None,
            meta_update={"cancelled": True, "progress": None},
        )
        if moved is None:
            now = await store.get_job(job.id)
            raise JobStateError(f"cannot cancel job {now.id}: it is {now.state.value}")
        if self._stop_running is not None:
            self._stop_running(job.id, "cancelled")
        approval = await self.approval()
        await anyio.to_thread.run_sync(approval.finish, job.id)
        self.wake()
        return moved

    async def follow(
        self,
        job: Job,
        limit: float,
        watch: Callable[[Job], None],
        *,
        poll: float = manual.WAIT_POLL_SECONDS,
        running_here: Callable[[], None] | None = None,
    ) -> Job:
        """``generate --wait``: until ``job`` is pending, committed or final, or ``limit``
        seconds. With no daemon running the job runs in this process (``running_here`` is told);
        ``watch`` sees the job at every look. Returns the job as last seen."""
        return await manual.follow(
            self.config,
            await self.store(),
            await self.root(),
            job,
            limit,
            watch,
            poll=poll,
            running_here=running_here,
        )


def _chat_by_file(root: Path, users: Sequence[str], chat_file: str) -> str:
    found = [ref.rel for ref in layout.iter_chats(root, users) if ref.chat_id == chat_file]
    if not found:
        raise NotFoundError(f"no chat {chat_file!r}")
    if len(found) > 1:
        raise AmbiguousError(f"chat {chat_file!r} is ambiguous: {found[:5]}")
    return found[0]


def prompt_writer(config: Config, client: httpx.AsyncClient) -> PromptWriter:
    """The prompt writer jobs use for ``config`` (the settings page's preview shows what it
    sends)."""
    from daemon.engine.jobs.pipeline import prompt_writer as jobs_writer

    return jobs_writer(config, client)
