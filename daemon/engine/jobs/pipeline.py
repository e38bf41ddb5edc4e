"""The job runner: prompt, then image, then pending (then commit when accepted).

Every step is guarded by the job's state in the store, so a job that runs twice (crash, two
processes) does no harm, and a job superseded while it runs stops at its next transition (and
is cancelled at once when the superseding happens in this process). Transient failures go back
to the store with a backoff (``next_attempt_at``), never into an in-memory sleep; permanent ones
are marked failed with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus

from daemon.config import Config
from daemon.configure.ready import setup_missing
from daemon.engine.jobs.accepting import (
    accept_blocking,
    check_actionable,
    raise_state,
    state_message,
)
from daemon.engine.jobs.approval import TRASH_DAYS, Approval
from daemon.engine.jobs.budget import APPROVED_KEY, HELD_KEY, Budget, Hold
from daemon.engine.jobs.order import Attention, order
from daemon.engine.jobs.swipes import carry_images, earlier_images, new_variant_job
from daemon.engine.look.consistency import plan_look, stamp_images
from daemon.engine.look.references import load_references
from daemon.engine.process.pause import read_pause
from daemon.engine.store import ACTIVE_STATES, Job, JobState, States, Store
from daemon.errors import (
    CardError,
    ChatConflictError,
    ChatReadError,
    ChatWriteError,
    ConfigError,
    JobError,
    JobStateError,
    MessageNotFoundError,
    PermanentProviderError,
    RateLimitedError,
    StoreError,
    TransientProviderError,
)
from daemon.jobstate import REJECTABLE_STATES, RUNNING_STATES
from daemon.logs import job_log
from daemon.providers.backend import (
    ImageBackend,
    ImageRequest,
    Progress,
    ProgressCallback,
    SceneCharacter,
)
from daemon.providers.factory import make_image_backend
from daemon.providers.images import GeneratedImage
from daemon.providers.native import pick_seed
from daemon.providers.pricing import Charge, charge_for, price_per_image
from daemon.providers.registry import capabilities
from daemon.providers.text import CardInfo, PromptInput, PromptWriter
from daemon.tavern import cards, layout
from daemon.tavern.chat import Chat, Message, is_header, parse_line, read_chat

if TYPE_CHECKING:
    from daemon.engine.commit.apply import Committer

__all__ = [
    "DRAIN_TIMEOUT",
    "POLL_INTERVAL",
    "JobDeps",
    "Runner",
    "accept_job",
    "backoff_delay",
    "open_job_deps",
    "regen_job",
    "reject_job",
    "revive_job",
    "run_job_once",
]

log = structlog.get_logger("st_imagegen.jobs")

DRAIN_TIMEOUT = 7.0
"""Default seconds running steps may take to finish on shutdown before they are cancelled (and
requeued); the daemon uses ``limits.drain_seconds``, sized to fit the service manager's stop
timeout."""

LAST_STARTED_KEPT = 4096
"""Chats whose last start time the runner remembers (for the round-robin)."""

POLL_INTERVAL = 300.0
"""Seconds between the runner's safety-net store polls. It is woken directly otherwise: by the
detector, the web API and folder actions in this process, by the CLI through the wake folder,
and by a timer at the next job's due (retry) time."""

STORE_RETRY_DELAY = 5.0
"""Seconds before a job whose bookkeeping hit a store error is looked at again."""

PROGRESS_WRITE_INTERVAL = 0.5
"""Least seconds between two stored progress reports of one job (samplers report every step)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class JobDeps:
    """What running a job needs; built by :func:`open_job_deps` (or by tests).

    A new configuration makes a new ``JobDeps`` (:meth:`with_config`): a job keeps the one it
    started with, so a change never reaches a job half way through."""

    config: Config
    root: Path
    store: Store
    approval: Approval
    prompts: PromptWriter
    images: ImageBackend
    committer: Committer | None = None
    clock: Callable[[], datetime] = _now
    rng: random.Random = field(default_factory=random.Random)
    client: httpx.AsyncClient | None = None  # shared by the providers; rebuilt ones reuse it
    # Made on first use and kept by with_config: the reservations of running calls span
    # configuration changes (each check reads the caps of the job's own config).
    budget: Budget | None = None

    def spend_budget(self) -> Budget:
        if self.budget is None:
            self.budget = Budget(self.store, self.clock)
        return self.budget

    def with_config(self, config: Config) -> JobDeps:
        """The same store, folders and client with providers built for ``config``; raises
        ConfigError (and changes nothing) when they cannot be built."""
        if self.client is None:
            raise ConfigError("these job dependencies cannot be rebuilt (no shared client)")
        prompts, images = build_providers(config, self.client)
        return dataclasses.replace(
            self, config=config, prompts=prompts, images=images, budget=self.spend_budget()
        )


class NotSetUp:
    """The image backend until an image service is configured: the runner holds every job
    meanwhile, so this only answers a direct call (``generate --wait`` with no daemon)."""

    async def generate(
        self, request: ImageRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        raise PermanentProviderError(NOT_SET_UP)

    async def check(self) -> str | None:
        raise ConfigError(NOT_SET_UP)


NOT_SET_UP = "not set up yet: open the inbox's setup screen (st-imagegen web-url)"


def prompt_writer(config: Config, client: httpx.AsyncClient) -> PromptWriter:
    """The prompt writer jobs use for ``config`` (a template one until an LLM is set up); the
    settings page's preview shows what this one sends."""
    text = config.text
    if "prompt writer" in setup_missing(config):
        text = text.model_copy(update={"mode": "template"})
    return PromptWriter(text, client, limits=config.limits)


def build_providers(config: Config, client: httpx.AsyncClient) -> tuple[PromptWriter, ImageBackend]:
    """The prompt writer and image backend for ``config``; placeholders for what is not set up
    (a template writer, :class:`NotSetUp`) so an unconfigured daemon still starts."""
    missing = setup_missing(config)
    prompts = prompt_writer(config, client)
    images: ImageBackend
    if "image service" in missing:
        images = NotSetUp()
    else:
        images = make_image_backend(config.image, client, limits=config.limits)
    return prompts, images


@contextlib.asynccontextmanager
async def open_job_deps(
    config: Config, *, store: Store | None = None, root: Path | None = None, strict: bool = False
) -> AsyncIterator[JobDeps]:
    """Open the store (unless given), one shared HTTP client, both providers and the committer.

    ``strict``: what is not set up is a ConfigError naming it (a job run here and now, as by
    ``generate --wait`` with no daemon), not a placeholder that holds the daemon's jobs."""
    from daemon.engine.commit.apply import Committer
    from daemon.providers.http import make_client

    if root is None:
        if config.data_root is None:
            raise ConfigError("data_root is not set (config file, ST_IMAGEGEN_DATA_ROOT)")
        root = layout.resolve_data_root(config.data_root)
    async with contextlib.AsyncExitStack() as stack:
        if store is None:
            config.state_dir.mkdir(parents=True, exist_ok=True)
            store = await Store.open(config.db_path)
            stack.push_async_callback(store.close)
        client = make_client()
        stack.push_async_callback(client.aclose)
        approval = Approval(config.state_dir)
        if strict:
            prompts = PromptWriter(config.text, client, limits=config.limits)
            images = make_image_backend(config.image, client, limits=config.limits)
        else:
            prompts, images = build_providers(config, client)
        deps = JobDeps(
            config=config,
            root=root,
            store=store,
            approval=approval,
            prompts=prompts,
            images=images,
            client=client,
        )
        deps.committer = Committer(config, store, approval, root)
        yield deps


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, capped, plus up to 25%."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    return min(cap, delay + rng.uniform(0, delay / 4))


def _retry_delay(job: Job, exc: Exception, deps: JobDeps) -> float:
    limits = deps.config.limits
    delay = backoff_delay(
        job.attempts + 1, limits.retry_base_seconds, limits.retry_max_seconds, deps.rng
    )
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, limits.max_retry_after_seconds))
    return delay


class _Gone(Exception):
    """The reply (or the chat) the job illustrates is gone or changed: supersede the job."""


# --- reading what the prompt needs -----------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    message: Message
    context: list[tuple[str, str]]
    card: CardInfo | None


def _read_source(job: Job, deps: JobDeps) -> _Source:
    """Read the chat and find the job's reply (blocking; run in a worker thread).

    Only the reply's line and the context lines above it are parsed (the line view), so a job
    on a 100k-message chat costs a read, not a full parse.
    """
    path = deps.root / job.chat
    try:
        chat, _ = read_chat(path)
    except ChatReadError as exc:
        if not path.exists():
            raise _Gone(f"the chat is gone (deleted or renamed): {job.chat}") from exc
        raise
    found = chat.find_line(job.identity)
    if found is None:
        raise _Gone("the reply is gone (deleted, or replaced by a regenerate)")
    message = found.message
    if str(message.revision) != job.revision and job.prompt is None:
        raise _Gone("the reply changed (swipe, continue or edit) before its image was made")
    context = _context(chat, found.start, deps.config.text.context_messages)
    card = _read_card(job, deps) if deps.config.text.include_character_card else None
    return _Source(message, context, card)


def _read_card(job: Job, deps: JobDeps) -> CardInfo | None:
    candidates: list[Path] = []
    if job.is_group:
        chat_id = Path(job.chat).stem
        group = layout.group_for_chat(deps.root, job.user, chat_id)
        if group is not None:
            candidates = [
                layout.card_path(deps.root, job.user, Path(member).stem) for member in group.members
            ]
    elif job.character:
        candidates = [layout.card_path(deps.root, job.user, job.character)]
    for path in candidates:
        try:
            card = cards.read_card(path)
        except CardError as exc:
            log.warning("character card not readable", job=job.id, card=path.name, error=str(exc))
            continue
        if not job.is_group or card.name == job.speaker or len(candidates) == 1:
            return CardInfo(
                name=card.name or job.speaker,
                description=card.description,
                personality=card.personality,
                scenario=card.scenario,
            )
    return None


def _context(chat: Chat, before: int, count: int) -> list[tuple[str, str]]:
    """Up to ``count`` visible messages above the line starting at ``before`` (oldest first)."""
    earlier: list[tuple[str, str]] = []
    if count <= 0:
        return earlier
    for start, end in chat.lines_backwards(before=before):
        obj = parse_line(chat.data[start:end])
        if obj is None or (start == 0 and is_header(obj)):
            continue
        previous = Message(-1, obj, b"")
        if previous.is_system or previous.marker is not None or not previous.mes.strip():
            continue
        earlier.append((previous.name, previous.mes))
        if len(earlier) >= count:
            break
    earlier.reverse()
    return earlier


# --- one job ---------------------------------------------------------------------------------


async def run_job_once(job: Job, deps: JobDeps) -> Job:
    """Take ``job`` from its current state to the next wait: pending (or committed with
    ``approval = "auto"``), or a rescheduled, failed or superseded job. An ACCEPTED job is
    committed. Usable outside the daemon (``generate --wait`` with no daemon running).

    Cancellation (drain, supersede) puts a running job back to QUEUED unless it was superseded.
    """
    if job.state is JobState.ACCEPTED:
        return await _commit(job, deps)
    if job.state is not JobState.QUEUED:
        return job
    try:
        current = await _pipeline(job, deps)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            back = await deps.store.transition(job.id, RUNNING_STATES, JobState.QUEUED)
            if back is not None:
                job_log(back, "requeued after cancel", logger=log)
            elif (await deps.store.get_job(job.id)).state in (
                JobState.SUPERSEDED,
                JobState.REJECTED,
            ):
                # Cancelled by a supersede or the user, maybe just after its pending folder was
                # written: the result is dropped.
                await anyio.to_thread.run_sync(deps.approval.finish, job.id)
        raise
    if current.state is JobState.ACCEPTED:
        return await _commit(current, deps)
    return current


def scene_characters(appearance: Any) -> tuple[SceneCharacter, ...]:
    """The characters of a job's look (``meta["appearance"]``), for backends that caption
    each character (their tags) apart from the scene."""
    out = []
    for look in appearance if isinstance(appearance, list) else ():
        if isinstance(look, dict) and look.get("name"):
            out.append(
                SceneCharacter(
                    str(look["name"]), str(look.get("tags") or ""), str(look.get("negative") or "")
                )
            )
    return tuple(out)


def _progress_writer(job: Job, deps: JobDeps) -> ProgressCallback:
    """Stores a backend's progress as ``meta["progress"]`` (``generate --wait``, the inbox)."""
    last = -PROGRESS_WRITE_INTERVAL

    async def report(progress: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_WRITE_INTERVAL and progress.fraction < 1.0:
            return
        last = now
        shown = {"fraction": round(progress.fraction, 3), "text": progress.text}
        try:
            await deps.store.transition(
                job.id, JobState.IMAGING, JobState.IMAGING, meta_update={"progress": shown}
            )
        except StoreError as exc:  # only a display: never fail the image over it
            log.debug("progress not stored", job=job.id, error=str(exc))

    return report


PENDING_RECHECK = timedelta(seconds=15)
"""How soon a job held by ``limits.max_pending`` looks again (a decision also wakes the runner)."""

TOO_MANY_PENDING = "paused: too many images waiting for a decision"


async def _too_many_pending(job: Job, deps: JobDeps) -> Job | None:
    """``job`` held back (still queued, nothing paid) while ``limits.max_pending`` images wait
    for a decision; None when it may go on."""
    cap = deps.config.limits.max_pending
    if cap <= 0:
        return None
    waiting = (await deps.store.counts()).get(JobState.PENDING, 0)
    if waiting < cap:
        return None
    reason = f"{TOO_MANY_PENDING} ({waiting} of limits.max_pending = {cap})"
    already = str(job.meta.get(HELD_KEY) or "").startswith(TOO_MANY_PENDING)
    moved = await deps.store.transition(
        job.id,
        JobState.QUEUED,
        JobState.QUEUED,
        next_attempt_at=datetime.now(UTC) + PENDING_RECHECK,
        meta_update={
            HELD_KEY: reason,
            "held_fix": "accept or reject some in the inbox (or raise limits.max_pending)",
        },
    )
    after = moved or await deps.store.get_job(job.id)
    if not already:  # once per job, not at every look
        job_log(after, "held", logger=log, reason=reason)
    return after


@dataclass
class _Step:
    """Where one run of the pipeline is: its step's name and start, the job as last moved."""

    job: Job
    name: str = "prompt"
    started: float = field(default_factory=time.monotonic)

    def begin(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()


class _Moved(Exception):
    """The job left the state this step expects (superseded, cancelled, another process):
    the run stops, leaving the job as it is."""


@dataclass(frozen=True)
class _Made:
    """What the image step made, and with which request and seed."""

    images: list[GeneratedImage]
    request: ImageRequest
    seed: int | None
    charge: Charge | None  # what the call cost (None: nothing known)


async def _pipeline(job: Job, deps: JobDeps) -> Job:
    """QUEUED -> (PROMPTING ->) IMAGING -> PENDING (or ACCEPTED), one function per step; a
    failure of any step is judged by :func:`_after_failure`."""
    held = await _too_many_pending(job, deps)
    if held is not None:
        return held
    if str(job.meta.get(HELD_KEY) or "").startswith(TOO_MANY_PENDING):
        cleared = await deps.store.transition(
            job.id, JobState.QUEUED, JobState.QUEUED, meta_update={HELD_KEY: None}
        )
        job = cleared or job
    step = _Step(job)
    try:
        step.job = await _prompt_step(job, deps, step.started)
        step.begin("image")
        made = await _image_step(step.job, deps)
        step.name = "pending"  # the images' log line times the image step and this one
        return await _offer_step(step.job, made, deps, step.started)
    except _Moved:
        return await deps.store.get_job(job.id)
    except (StoreError, anyio.get_cancelled_exc_class()):
        raise
    except Exception as exc:
        return await _after_failure(job.id, step, exc, deps)


async def _move(deps: JobDeps, job: Job, expected: States, new: JobState, **fields: Any) -> Job:
    """The store's guarded move; :class:`_Moved` when the job is no longer in ``expected``."""
    moved = await deps.store.transition(job.id, expected, new, **fields)
    if moved is None:
        raise _Moved(job.id)
    return moved


async def _prompt_step(job: Job, deps: JobDeps, started: float) -> Job:
    """QUEUED -> PROMPTING -> IMAGING with the written prompt; a job that has one (a regen,
    an edited prompt) goes straight to IMAGING."""
    if job.prompt is not None:
        return await _move(
            deps, job, JobState.QUEUED, JobState.IMAGING, meta_update={"progress": None}
        )
    current = await _move(deps, job, JobState.QUEUED, JobState.PROMPTING)
    source = await anyio.to_thread.run_sync(_read_source, current, deps)
    look = await anyio.to_thread.run_sync(
        plan_look, current, source.message.mes, deps.config, deps.root
    )
    item = PromptInput(
        reply=source.message.mes,
        speaker=source.message.name or current.speaker,
        card=source.card,
        context=source.context,
        **look.prompt_fields(),
    )
    written = await deps.prompts.write(item)
    current = await _move(
        deps,
        current,
        JobState.PROMPTING,
        JobState.IMAGING,
        prompt=written.prompt,
        meta_update={"negative": written.negative, "progress": None, **look.meta()},
    )
    job_log(current, "prompt", started=started, logger=log)
    return current


async def _image_step(job: Job, deps: JobDeps) -> _Made:
    """The image call, with the job's prompt, style and references; the images stamped."""
    assert job.prompt is not None
    negative = str(job.meta.get("negative", deps.config.text.negative_prompt))
    paths = [str(p) for p in job.meta.get("references") or () if isinstance(p, str)]
    references = await anyio.to_thread.run_sync(load_references, paths) if paths else ()
    seed: int | None = None
    if capabilities(deps.config.image).seed:
        # Chosen here rather than by the server, so the PNG text and the job can say which
        # (a backend that takes no seed gets none, and none is recorded).
        seed = pick_seed(None, deps.config.image.seed)
    request = ImageRequest(
        prompt=job.prompt,
        negative=negative,
        size=str(job.meta.get("style_size") or "") or None,
        model=str(job.meta.get("style_model") or "") or None,
        seed=seed,
        references=references,
        characters=scene_characters(job.meta.get("appearance")),
    )
    generated, charge = await _paid_call(job, request, deps)
    if not generated:
        raise PermanentProviderError("the image API returned no images")
    stamped = await anyio.to_thread.run_sync(stamp_images, generated, job, deps.config, request)
    return _Made(list(stamped), request, seed, charge)


async def _paid_call(
    job: Job, request: ImageRequest, deps: JobDeps
) -> tuple[list[GeneratedImage], Charge | None]:
    """The image call within the spend caps: its cost reserved first (a cap that does not allow
    it holds the job, :class:`_Moved`), recorded after, whatever happens."""
    image = deps.config.image
    price = price_per_image(image, request.model or image.model, deps.config.prices)
    wanted = image.n
    reserved = await deps.spend_budget().reserve(
        job, price.usd * wanted, wanted, deps.config.limits
    )
    if isinstance(reserved, Hold):
        await _hold(job, reserved, deps, time.monotonic())
        raise _Moved(job.id)
    charge: Charge | None = None
    try:
        generated = await deps.images.generate(request, progress=_progress_writer(job, deps))
        charge = charge_for(generated, price)
    finally:
        with anyio.CancelScope(shield=True):
            if charge is not None:
                await deps.store.record_spend(
                    job.id,
                    job.user,
                    job.chat,
                    usd=charge.usd,
                    images=charge.images,
                    estimated=charge.estimated,
                    units=charge.units,
                    now=deps.clock(),
                )
            await deps.spend_budget().release(reserved)
    return list(generated), charge


async def _offer_step(job: Job, made: _Made, deps: JobDeps, started: float) -> Job:
    """The images into the job's pending folder (with earlier ones carried), then IMAGING ->
    PENDING, or ACCEPTED with ``approval = "auto"``."""
    assert job.prompt is not None
    earlier, earlier_prompts = await anyio.to_thread.run_sync(
        earlier_images, deps.approval, job, deps.config.image.max_pixels
    )
    # New images first: the user looks at what they asked for; the earlier set follows.
    folder = await _write_pending(job, [*made.images, *earlier], deps)
    kept = await anyio.to_thread.run_sync(deps.approval.kept_images, job.id)
    names = tuple(p.name for p in kept)
    target = JobState.ACCEPTED if deps.config.approval == "auto" else JobState.PENDING
    moved = await deps.store.transition(
        job.id,
        JobState.IMAGING,
        target,
        images=names,
        last_error=None,
        next_attempt_at=None,
        meta_update={
            "image_model": deps.config.image.model,
            "text_model": deps.config.text.model,
            "image_prompts": [*[job.prompt] * len(made.images), *earlier_prompts],
            "earlier_count": len(earlier),
            "seed": made.seed,
            "cost": made.charge.describe() if made.charge is not None else None,
            HELD_KEY: None,
            APPROVED_KEY: None,  # approval covers one call
        },
    )
    if moved is None:
        # Superseded or cancelled while the image was being made: its folder must not linger.
        await anyio.to_thread.run_sync(deps.approval.finish, job.id)
        raise _Moved(job.id)
    job_log(moved, "images", started=started, logger=log, images=len(names), folder=str(folder))
    return moved


async def _after_failure(job_id: str, step: _Step, exc: Exception, deps: JobDeps) -> Job:
    """A step failed: the reply is gone (superseded), a transient problem (retried later with
    a backoff), a permanent one (failed), or a bug (failed, with its traceback logged)."""
    store = deps.store
    if isinstance(exc, _Gone):
        gone = await store.transition(
            job_id, ACTIVE_STATES, JobState.SUPERSEDED, last_error=str(exc), next_attempt_at=None
        )
        after = gone or await store.get_job(job_id)
        job_log(
            after, "superseded", started=step.started, logger=log, during=step.name, reason=str(exc)
        )
        return after
    if isinstance(exc, TransientProviderError | ChatReadError | ChatWriteError | OSError):
        return await _retry_later(job_id, step, exc, deps)
    if isinstance(exc, PermanentProviderError):
        return await _failed(
            job_id, step.name, f"{step.name}: {exc}", step.started, store, "warning"
        )
    # A bug, not the user's setup: fail the job visibly instead of retrying forever.
    log.error("job crashed", job=job_id, during=step.name, exc_info=exc)
    reason = f"{step.name}: internal error: {exc!r}"
    return await _failed(job_id, step.name, reason, step.started, store, "error")


async def _retry_later(job_id: str, step: _Step, exc: Exception, deps: JobDeps) -> Job:
    delay = _retry_delay(step.job, exc, deps)
    reason = f"{step.name}: {exc}"
    again = await deps.store.reschedule(
        job_id, reason, delay, max_attempts=deps.config.limits.max_attempts
    )
    after = again or await deps.store.get_job(job_id)
    retry_in = round(delay, 1) if after.state is JobState.QUEUED else None
    job_log(
        after,
        "step failed",
        started=step.started,
        level="warning",
        logger=log,
        during=step.name,
        error=reason,
        retry_in=retry_in,
    )
    return after


async def _hold(job: Job, hold: Hold, deps: JobDeps, started: float) -> Job:
    """Back to the queue until the cap's window ends, saying why (no call was made)."""
    moved = await deps.store.transition(
        job.id,
        JobState.IMAGING,
        JobState.QUEUED,
        next_attempt_at=hold.until,
        meta_update={HELD_KEY: hold.reason, "held_fix": hold.fix, "progress": None},
    )
    after = moved or await deps.store.get_job(job.id)
    job_log(after, "held", started=started, logger=log, reason=hold.reason, until=str(hold.until))
    return after


async def _failed(
    job_id: str, step: str, reason: str, started: float, store: Store, level: str
) -> Job:
    failed = await store.fail(job_id, reason, expected=ACTIVE_STATES)
    after = failed or await store.get_job(job_id)
    job_log(after, "failed", started=started, level=level, logger=log, during=step, error=reason)
    return after


async def _write_pending(job: Job, generated: Sequence[GeneratedImage], deps: JobDeps) -> Path:
    info = {
        "provider": deps.config.image.profile,
        "model": deps.config.image.model,
        "text_model": deps.config.text.model if deps.config.text.mode == "llm" else "template",
    }
    return await anyio.to_thread.run_sync(deps.approval.write_pending, job, list(generated), info)


async def _commit(job: Job, deps: JobDeps) -> Job:
    """Commit an ACCEPTED job; on a write problem keep it ACCEPTED and retry later."""
    if deps.committer is None:
        return job  # nothing to commit with (a runner built without one): it waits in the store
    started = time.monotonic()
    try:
        with anyio.CancelScope(shield=True):  # never abandon a commit half way through
            done = await deps.committer.commit_job(job)
    except (ChatConflictError, ChatWriteError, ChatReadError, MessageNotFoundError, OSError) as exc:
        attempts = job.attempts + 1
        limits = deps.config.limits
        delay = backoff_delay(
            attempts, limits.retry_base_seconds, limits.retry_max_seconds, deps.rng
        )
        kept = await deps.store.transition(
            job.id,
            JobState.ACCEPTED,
            JobState.ACCEPTED,
            attempts=attempts,
            last_error=f"commit: {exc}",
            next_attempt_at=deps.clock() + timedelta(seconds=delay),
        )
        after = kept or await deps.store.get_job(job.id)
        job_log(
            after,
            "commit failed",
            started=started,
            level="warning",
            logger=log,
            error=str(exc),
            retry_in=round(delay, 1),
        )
        return after
    job_log(done, "commit", started=started, logger=log)
    return done


# --- user actions (CLI and drop folders) ------------------------------------------------------


async def accept_job(
    store: Store, approval: Approval, job_ref: str, keep: Sequence[int] | None = None
) -> Job:
    """PENDING -> ACCEPTED, keeping only images ``keep`` (1-based, in the user's order) when
    given, else every image still in the job's folder (see
    :func:`~daemon.engine.jobs.accepting.accept_blocking`), in one worker-thread trip."""
    step = partial(accept_blocking, store.blocking, approval.state_dir, job_ref, keep)
    moved, previous = await anyio.to_thread.run_sync(step)
    store.announce(moved, previous)
    return moved


async def reject_job(
    store: Store, approval: Approval, job_ref: str, *, trash_days: float = TRASH_DAYS
) -> Job:
    """PENDING (or ACCEPTED, not yet committed, or FAILED) -> REJECTED; the images go to the
    trash for ``trash_days`` (:func:`restore_job` brings the job back)."""
    job = await store.get_job(job_ref)
    if job.state not in REJECTABLE_STATES:
        check_actionable(job, "reject")
    moved = await store.transition(
        job.id,
        REJECTABLE_STATES,
        JobState.REJECTED,
        next_attempt_at=None,
        meta_update={"rejected_from": job.state.value, "trashed_at": _now().isoformat()},
    )
    if moved is None:
        return raise_state(await store.get_job(job.id), "reject")
    await anyio.to_thread.run_sync(partial(approval.trash, job.id, days=trash_days))
    return moved


async def restore_job(store: Store, approval: Approval, job_ref: str) -> Job:
    """Undo a reject: REJECTED -> PENDING with its images from the trash (FAILED for a
    dismissed failed job). Refused when the images are gone or the job was cancelled."""
    job = await store.get_job(job_ref)
    if job.state is not JobState.REJECTED:
        raise JobError(f"cannot restore job {job.id}: it is {job.state.value}, not rejected")
    back = job.meta.get("rejected_from")
    if back == JobState.FAILED.value:
        moved = await store.transition(
            job.id, JobState.REJECTED, JobState.FAILED, meta_update={"trashed_at": None}
        )
        return moved or raise_state(await store.get_job(job.id), "restore")
    if back not in (JobState.PENDING.value, JobState.ACCEPTED.value):
        raise JobError(f"cannot restore job {job.id}: it was not rejected from the inbox")
    if not await anyio.to_thread.run_sync(approval.untrash, job.id):
        raise JobError(f"cannot restore job {job.id}: its images are no longer in the trash")
    present = [p.name for p in await anyio.to_thread.run_sync(approval.kept_images, job.id)]
    images = tuple(n for n in job.images if n in present) or tuple(present)
    moved = await store.transition(
        job.id,
        JobState.REJECTED,
        JobState.PENDING,
        images=images,
        last_error=None,
        meta_update={"trashed_at": None},
    )
    if moved is None:
        await anyio.to_thread.run_sync(partial(approval.trash, job.id))
        return raise_state(await store.get_job(job.id), "restore")
    return moved


async def regen_job(
    store: Store, approval: Approval, job_ref: str, prompt: str | None = None
) -> Job:
    """A new job for the same reply (new id, next regen counter), same prompt unless edited.

    The old job is marked superseded ("regenerated as <id>") and its pending folder removed;
    a pending job's images are carried into the new job (offered next to its new ones). A
    committed job gets a variant job instead, whose images become swipes of its message.
    """
    job = await store.get_job(job_ref)
    if prompt is not None and not prompt.strip():
        raise JobError("the new prompt is empty")
    if job.state is JobState.SUPERSEDED:
        raise JobStateError(state_message(job, "regenerate"))
    if job.state is JobState.COMMITTED:  # more variants of the message: image swipes
        return await new_variant_job(store, job, prompt.strip() if prompt else None)
    if job.state is JobState.PENDING:  # its images stay on offer in the new job
        carried = await anyio.to_thread.run_sync(carry_images, approval, job)
        if carried is not None:
            await store.transition(job.id, JobState.PENDING, JobState.PENDING, meta_update=carried)
    new = await store.regenerate(job.id, prompt=prompt.strip() if prompt else None)
    await anyio.to_thread.run_sync(approval.finish, job.id)
    return new


async def revive_job(
    store: Store, approval: Approval, job: Job, *, auto_accept: bool
) -> Job | None:
    """A superseded job whose reply shows its text again (a swipe back, an undone edit).

    With its images still on the shelf it returns to PENDING (ACCEPTED with ``auto_accept``)
    with no API call; without them it is QUEUED to run again (its prompt kept). ``None`` when it
    cannot come back: not superseded, or replaced by a regen (the user's newer choice).
    """
    if job.state is not JobState.SUPERSEDED:
        return None
    same = await store.jobs_for(job.reply)
    if any(other.meta.get("regen_of") == job.id for other in same):
        return None
    restored = await anyio.to_thread.run_sync(approval.unshelve, job.id)
    present = [p.name for p in await anyio.to_thread.run_sync(approval.kept_images, job.id)]
    images = tuple(n for n in job.images if n in present) or tuple(present)
    if restored and images:
        moved = await store.transition(
            job.id, JobState.SUPERSEDED, JobState.PENDING, images=images, last_error=None
        )
        if moved is not None and auto_accept:
            return await accept_job(store, approval, moved.id)
        return moved
    if restored:
        await anyio.to_thread.run_sync(approval.finish, job.id)
    return await store.transition(
        job.id,
        JobState.SUPERSEDED,
        JobState.QUEUED,
        images=(),
        attempts=0,
        last_error=None,
        next_attempt_at=_now(),
    )


# --- the runner ------------------------------------------------------------------------------


@dataclass
class _Running:
    job: Job
    scope: anyio.CancelScope


class Runner:
    """Runs due jobs: at most ``limits.concurrency`` at once, one per chat; commits first, then
    queued jobs in :func:`daemon.engine.jobs.order.order`'s order (the chat a person is looking
    at first, newest first, round-robin across chats, none waiting past ``STARVE_AFTER``).

    A job waiting out a retry backoff does not hold back the later jobs of its chat: each job
    illustrates its own reply, so order only matters between jobs that are due.

    Jobs come from the store (polled every :data:`POLL_INTERVAL` and on :meth:`wake`), so jobs
    queued by another process are picked up. :meth:`cancel` stops a running job (supersede);
    :meth:`drain` stops taking jobs and waits for running steps, then cancels them.
    """

    def __init__(
        self,
        deps: JobDeps,
        *,
        poll_interval: float = POLL_INTERVAL,
        on_done: Callable[[Job], None] | None = None,
        attention: Attention | None = None,
    ) -> None:
        self.deps = deps
        self.attention = attention or Attention()
        self._last_started: dict[str, float] = {}  # chat -> time.monotonic() of its last start
        self.order = order  # the bench swaps in the old first-in-first-out order to compare
        self.poll_interval = poll_interval
        self.on_done = on_done
        self._running: dict[str, _Running] = {}
        self._busy_chats: set[str] = set()
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._draining = False
        self._tg: TaskGroup | None = None
        self.setup_hold: str | None = None  # why no job may start now ("not set up yet")
        self.started = 0
        self.max_in_flight = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str, reason: str = "superseded") -> bool:
        """Cancel a running job's scope (after the store already marked it superseded)."""
        running = self._running.get(job_id)
        if running is None:
            return False
        log.info("cancelling running job", job=job_id, reason=reason)
        running.scope.cancel()
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            while not self._draining:
                try:
                    await self.fill()
                except StoreError as exc:
                    log.error("store error while polling jobs", error=str(exc))
                except Exception:  # a bug must not stop the runner; the next poll retries
                    log.exception("job poll failed")
                with anyio.move_on_after(await self._sleep_for()):
                    await self._wake.wait()
                self._wake = anyio.Event()
            # Draining: the task group waits for the running jobs (cancelled by drain()).

    async def _sleep_for(self) -> float:
        """Until the next job is due (a retry's time), at most the safety-net poll interval.
        A due job that could not start (limits, a busy chat) waits for a running one's end,
        which wakes the runner."""
        if self.setup_hold is not None:
            return self.poll_interval  # released by a wake() when the hold ends
        try:
            when = await self.deps.store.next_wake_at()
        except StoreError:
            return STORE_RETRY_DELAY
        if when is None:
            return self.poll_interval
        delay = (when - self.deps.clock()).total_seconds()
        if delay <= 0:
            # Due but not startable now; a running job's end wakes us. Stop a busy loop.
            return self.poll_interval if self._running else STORE_RETRY_DELAY
        return min(delay, self.poll_interval)

    async def fill(self) -> int:
        """Start as many due jobs as the limits allow; returns how many started."""
        if self._draining or self._tg is None or self.setup_hold is not None:
            return 0
        free = self.deps.config.limits.concurrency - len(self._running)
        if free <= 0:
            return 0
        now = self.deps.clock()
        candidates: list[Job] = []
        if self.deps.committer is not None:
            accepted = await self.deps.store.jobs_in([JobState.ACCEPTED], limit=200)
            candidates.extend(
                j for j in accepted if j.next_attempt_at is None or j.next_attempt_at <= now
            )
        candidates.sort(key=lambda j: j.id)
        # The newest due jobs (the ones a person waits for) and the oldest (none starves).
        queued = {j.id: j for j in await self.deps.store.due_jobs(now, limit=500, newest=True)}
        for job in await self.deps.store.due_jobs(now, limit=50):
            queued.setdefault(job.id, job)
        paused = await anyio.to_thread.run_sync(read_pause, self.deps.config.state_dir)
        attention, clock = self.attention, time.monotonic()
        candidates.extend(  # commits still go while paused
            self.order(
                [j for j in queued.values() if not paused.holds(j.chat)],
                now=now,
                looked_at=lambda chat: attention.looked_at(chat, clock),
                last_started=self._last_started,
            )
        )
        started = 0
        for job in candidates:
            if started >= free or self._draining:
                break
            if job.id in self._running or job.chat in self._busy_chats:
                continue
            self._start(job)
            started += 1
        return started

    def _start(self, job: Job) -> None:
        assert self._tg is not None
        scope = anyio.CancelScope()
        self._running[job.id] = _Running(job, scope)
        self._busy_chats.add(job.chat)
        self._last_started.pop(job.chat, None)
        self._last_started[job.chat] = time.monotonic()
        while len(self._last_started) > LAST_STARTED_KEPT:
            self._last_started.pop(next(iter(self._last_started)))
        self.started += 1
        self.max_in_flight = max(self.max_in_flight, len(self._running))
        self._idle = anyio.Event()
        self._tg.start_soon(self._run_one, job, scope, name=f"job {job.id}")

    async def _run_one(self, job: Job, scope: anyio.CancelScope) -> None:
        result: Job | None = None
        try:
            with scope:
                result = await run_job_once(job, self.deps)
        except StoreError as exc:
            log.error("store error while running a job", job=job.id, error=str(exc))
        except Exception:
            log.exception("job runner error", job=job.id)
        finally:
            self._running.pop(job.id, None)
            self._busy_chats.discard(job.chat)
            if not self._running:
                self._idle.set()
            self._wake.set()  # the chat is free: its next job may start
        if result is not None and self.on_done is not None:
            try:
                self.on_done(result)
            except Exception:
                log.exception("job callback error", job=job.id)

    async def drain(self, grace: float = DRAIN_TIMEOUT) -> int:
        """Stop taking jobs; wait up to ``grace`` seconds for running ones, then cancel them.

        Returns how many were cancelled (they go back to QUEUED and resume at the next start).
        """
        self._draining = True
        self._wake.set()
        if not self._running:
            return 0
        with anyio.move_on_after(grace):
            await self._idle.wait()
        cancelled = 0
        for running in list(self._running.values()):
            running.scope.cancel()
            cancelled += 1
        if cancelled:
            log.info("drain timeout: cancelled running jobs", count=cancelled, grace=grace)
        return cancelled
