"""The JSON API under ``/api/v1/`` (docs/http-api.md): the inbox page and the ST extension use it.

Every action goes through the daemon's :class:`~daemon.engine.front.Engine`, the same front door
the CLI and the drop folders use: there is no second path to the store or the chats. The job is
looked up (404/400) and the body checked (422) first; the engine's typed errors then choose the
status: ``NotFoundError`` 404, ``AmbiguousError`` 400, any other ``JobError`` (the job's state
does not allow the action) 409, which is what the loser of two clients acting at once gets.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from daemon.config import Config
from daemon.engine.front import PROGRESS_TEXT, Job, JobState, hold_for_a_user, vocabulary
from daemon.errors import (
    AmbiguousError,
    ChatReadError,
    ConfigError,
    JobError,
    MessageNotFoundError,
    NotFoundError,
    UnsafePathError,
)
from daemon.providers.decode import ImageRejected
from daemon.tavern import layout
from daemon.web.access import ADMIN, Caller, UserTokens, is_token_id
from daemon.web.bodies import (
    AcceptBody,
    BodyError,
    CancelQueuedBody,
    EmptyBody,
    GenerateBody,
    PauseBody,
    RegenBody,
    UserTokenBody,
    parsed,
)
from daemon.web.context import WebContext
from daemon.web.events import Event, stream_events
from daemon.web.security import CALLER

__all__ = ["ApiError", "job_json", "routes"]

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A write failed for lack of room."""

MAX_LIMIT = 500
STATUS_CACHE_SECONDS = 5.0
_JOB_REF = re.compile(r"^[0-9A-Za-z]{1,26}$")
_IMAGE_NAME = re.compile(r"^image-\d{1,4}\.[a-z0-9]{1,5}$")
_MEDIA = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
}
_FOLDER_STATES = (JobState.PENDING, JobState.ACCEPTED)


T = TypeVar("T")

ApiError = BodyError
"""An answer ``{"error": {"code", "message"}}`` with ``status`` (the bodies' own error type;
``key``: the setting an "invalid" answer is about)."""


def error_response(status: int, code: str, message: str, key: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if key:
        error["key"] = key
    return JSONResponse(
        {"error": error},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def caller(request: Request) -> Caller:
    """Who asks (set by the Guard); no caller is no access."""
    found = request.scope.get(CALLER)
    if not isinstance(found, Caller):
        raise ApiError(401, "unauthorized", "a valid token is needed")
    return found


# --- the job object -------------------------------------------------------------------------


def _iso(job_time: Any) -> str:
    return str(job_time.isoformat().replace("+00:00", "Z"))


def _chat_parts(chat: str) -> tuple[str, str]:
    """``(chat_file, chat_folder)`` of a chat path (``""`` folder for group chats)."""
    parts = chat.split("/")
    stem = parts[-1].removesuffix(".jsonl")
    folder = parts[2] if len(parts) == 4 and parts[1] == layout.CHATS_DIR else ""
    return stem, folder


def image_names(job: Job) -> list[str]:
    """What ``images/{n}`` can serve: the pending folder's images, or the committed files."""
    if job.state in (JobState.PENDING, JobState.ACCEPTED):
        return list(job.images)
    if job.state is JobState.REJECTED and job.meta.get("trashed_at"):
        return list(job.images)  # in the trash for a while: History shows them (Restore)
    if job.state is JobState.COMMITTED:
        files = job.meta.get("committed_files")
        return [Path(str(f)).name for f in files] if isinstance(files, list) else []
    return []


def chat_title(root: Path | None, job: Job) -> str:
    """What the user calls the chat: the group's name for group chats (its id when the group
    file is gone), else the character folder; the chat file follows."""
    return layout.chat_title(root, job.chat)


def group_name(root: Path | None, job: Job) -> str:
    """The group's own name (``groups/<id>.json``), or "" when it cannot be read."""
    if root is None or not job.is_group:
        return ""
    try:
        info = layout.group_for_chat(root, job.user, _chat_parts(job.chat)[0])
    except (UnsafePathError, OSError):
        return ""
    return info.name if info is not None and info.name else ""


def _image_sets(job: Job, names: list[str]) -> list[dict[str, Any]]:
    """Which images a regeneration brought over from the job before (``earlier``), each with
    the prompt that made it: the inbox marks them and does not pick them by default."""
    prompts = job.meta.get("image_prompts")
    own = [str(p) for p in prompts] if isinstance(prompts, list) else []
    earlier = job.meta.get("earlier_count")
    count = earlier if isinstance(earlier, int) and not isinstance(earlier, bool) else 0
    out: list[dict[str, Any]] = []
    for i, _ in enumerate(names):  # the new images come first, the earlier ones after them
        prompt = own[i] if i < len(own) else (job.prompt or "")
        out.append({"earlier": i >= len(names) - count, "prompt": prompt})
    return out


_REGENERATED = re.compile(r"^regenerated as job ([0-9A-Z]{26})$")


def _regenerated_as(job: Job) -> str | None:
    """The job that replaced this one by a regenerate (a link in History, not an error)."""
    if job.state is not JobState.SUPERSEDED or not job.last_error:
        return None
    found = _REGENERATED.match(job.last_error)
    return found.group(1) if found else None


def job_json(
    job: Job, config: Config, root: Path | None = None, who: Caller = ADMIN
) -> dict[str, Any]:
    chat_file, chat_folder = _chat_parts(job.chat)
    base = f"/api/v1/jobs/{job.id}/images"
    names = image_names(job)
    sets = _image_sets(job, names) if job.state is JobState.PENDING else [{}] * len(names)
    images = [
        {
            "index": n,
            "name": name,
            "thumb": f"{base}/{n}?size=thumb",
            "full": f"{base}/{n}",
            "earlier": bool(sets[n - 1].get("earlier")),
            "prompt": sets[n - 1].get("prompt") or job.prompt or "",
        }
        for n, name in enumerate(names, 1)
    ]
    progress: dict[str, Any] | None = None
    if job.state in PROGRESS_TEXT:
        progress = {"step": job.state.value, "fraction": None, "text": PROGRESS_TEXT[job.state]}
        held = job.meta.get("held")  # why a queued job waits (a spend cap, limits.max_pending)
        if job.state is JobState.QUEUED and isinstance(held, str) and held:
            progress["text"] = held if who.admin else hold_for_a_user(held)
        told = job.meta.get("progress")  # what an A1111/ComfyUI backend last reported
        if job.state is JobState.IMAGING and isinstance(told, dict):
            fraction = told.get("fraction")
            if isinstance(fraction, int | float) and not isinstance(fraction, bool):
                progress["fraction"] = min(1.0, max(0.0, float(fraction)))
            if isinstance(told.get("text"), str) and told["text"]:
                progress["text"] = str(told["text"])
    not_kept = job.meta.get("not_kept")
    return {
        "id": job.id,
        "short_id": job.short_id,
        "state": job.state.value,
        "user": job.user,
        "chat": job.chat,
        "chat_file": chat_file,
        "chat_folder": chat_folder,
        "is_group": job.is_group,
        "chat_name": chat_title(root, job),
        "group_name": group_name(root, job) or None,
        "character": job.character,
        "speaker": job.speaker,
        "mesid": job.message_index,
        "identity": {"name": job.reply.name, "send_date": job.reply.date},
        "revision": job.revision,
        "excerpt": job.excerpt,
        "source": job.source,
        "prompt": job.prompt,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "images": images,
        "not_kept": not_kept if isinstance(not_kept, list) else [],
        "regen_of": job.meta.get("regen_of"),
        "regenerated_as": _regenerated_as(job),
        "cancelled": job.meta.get("cancelled") is True,
        "restorable": job.state is JobState.REJECTED
        and bool(job.meta.get("trashed_at"))
        and job.meta.get("cancelled") is not True,
        "progress": progress,
        "st_url": config.web.sillytavern_url or None,
    }


# --- reading requests -----------------------------------------------------------------------


async def _job(request: Request) -> Job:
    ref = request.path_params["job_id"]
    if not isinstance(ref, str) or not _JOB_REF.match(ref):
        raise ApiError(400, "bad_id", "not a job id (letters and digits, at most 26)")
    who = caller(request)
    try:
        # Another user's job does not exist for this caller: 404, never 403 (no confirmation).
        return await _ctx(request).engine.job(ref, users=who.handles)
    except AmbiguousError as exc:
        raise ApiError(400, "ambiguous_id", str(exc)) from None
    except NotFoundError:
        raise ApiError(404, "not_found", f"no job {ref}") from None


def _check_actions(request: Request) -> WebContext:
    ctx = _ctx(request)
    if ctx.draining():
        raise ApiError(503, "draining", "the daemon is stopping; try again when it is back")
    return ctx


# --- routes ---------------------------------------------------------------------------------


async def status(request: Request) -> Response:
    ctx = _ctx(request)
    cache = ctx.status_cache
    now = time.monotonic()
    at = cache.get("at")
    if not isinstance(at, float) or now - at > STATUS_CACHE_SECONDS:
        report = await ctx.engine.status()  # walks the chat folders: kept a moment
        cache["at"] = now
        cache["data"] = report.to_json()
    data = dict(cache["data"])  # type: ignore[call-overload]
    who = caller(request)
    # Live, not cached: a save on the settings page must show at once.
    state = ctx.engine.config_state()
    data["setup_needed"] = state["setup_needed"]
    data["setup_url"] = (ctx.url or "/") + "setup" if state["setup_needed"] else None
    data["restart_pending"] = state["restart_pending"]
    data["config_problem"] = state["problem"]
    if not who.admin:
        data = await _status_for_user(ctx, who, data)
        data["config_problem"] = None  # the file's path and contents are the admin's
    # Job counts change with every event the page gets: always fresh from the store.
    counts = {s.value: n for s, n in (await ctx.engine.counts(users=who.handles)).items()}
    paused = await ctx.engine.paused()
    data.update(
        jobs=counts,
        counts=counts,
        version=ctx.version,
        chats_watched=data["chats"],
        paused=_pause_for(who, paused.to_json()),
    )
    # So is the spend: an image made a moment ago counts at once (two sums over an index).
    # A user sees the spend of their own chats only; the admin everyone's, with the caps.
    spend = await ctx.engine.spend(users=who.handles)
    data["spend"] = {**spend.to_json(), "line": spend.line()}
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


async def _status_for_user(ctx: WebContext, who: Caller, data: dict[str, Any]) -> dict[str, Any]:
    """The status a user may see: the daemon's health, their own chats, errors and counts;
    nothing of other users' and no paths of the host."""
    mine = who.visible_users(data.get("users") or [])

    def _count() -> tuple[int, int]:
        total = groups = 0
        for ref in layout.iter_chats(ctx.root, mine):
            total += 1
            groups += ref.is_group
        return total, groups

    chats, group_chats = await anyio.to_thread.run_sync(_count)
    own = tuple(f"{u}/" for u in mine)
    data.update(
        users=mine,
        chats=chats,
        group_chats=group_chats,
        data_root=None,
        data_root_error=None,
        state_dir="",
        config_error=None,
        errors=[e for e in data.get("errors", []) if str(e.get("chat", "")).startswith(own)],
        waiting_chats=[c for c in data.get("waiting_chats", []) if str(c).startswith(own)],
        held=[
            {**h, "reason": hold_for_a_user(str(h.get("reason", "")))}
            for h in data.get("held", [])
            if str(h.get("chat", "")).startswith(own)
        ],
    )
    data["waiting_messages"] = len(data["waiting_chats"])
    data.pop("spend", None)  # everyone's together: the caller's own is added by the route
    data["state_dir_bytes"] = None
    return data


async def meta(request: Request) -> Response:
    """The job vocabulary every client uses (daemon/jobstate.py): states, groups, labels."""
    data = {"api": 1, "version": _ctx(request).version, **vocabulary()}
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


async def list_jobs(request: Request) -> Response:
    ctx = _ctx(request)
    query = request.query_params
    states: list[JobState] = []
    for raw in query.getlist("state"):
        for name in raw.split(","):
            if not name:
                continue
            try:
                states.append(JobState(name))
            except ValueError:
                raise ApiError(
                    422, "invalid", f"no state {name!r}; one of {', '.join(JobState)}"
                ) from None
    limit_text = query.get("limit", "50")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise ApiError(422, "invalid", f"limit must be 1 to {MAX_LIMIT}")
    limit = int(limit_text)
    before = query.get("before")
    if before is not None and not _JOB_REF.match(before):
        raise ApiError(400, "bad_id", "before must be a job id")
    if (opened := query.get("chat_file")) and ctx.engine.attention is not None:
        ctx.engine.attention.viewed(opened)  # the extension's tab has this chat open
    jobs = await ctx.engine.jobs(
        states=states,
        chat=query.get("chat") or None,
        chat_file=query.get("chat_file") or None,
        user=query.get("user") or None,
        users=caller(request).handles,
        character=query.get("character") or None,
        before=before.upper() if before else None,
        limit=limit,
    )
    next_id = jobs[-1].id if len(jobs) == limit else None
    return JSONResponse(
        {
            "jobs": [job_json(j, ctx.config, ctx.root, caller(request)) for j in jobs],
            "next": next_id,
        },
        headers={"Cache-Control": "no-store"},
    )


async def one_job(request: Request) -> Response:
    job = await _job(request)
    return JSONResponse(
        job_json(job, _ctx(request).config, _ctx(request).root, caller(request)),
        headers={"Cache-Control": "no-store"},
    )


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _image_path(ctx: WebContext, job: Job, n: int, folder: Path | None) -> Path | None:
    """The file of image ``n`` of ``job`` (blocking); only its ``folder`` (pending/ or a drop
    folder) and committed files."""
    if job.state in (JobState.PENDING, JobState.ACCEPTED):
        if not 1 <= n <= len(job.images) or not _IMAGE_NAME.match(job.images[n - 1]):
            return None
        if folder is None:
            return None
        path = folder / job.images[n - 1]
        return path if _regular_file(path) else None
    if job.state is JobState.REJECTED:
        if not 1 <= n <= len(job.images) or not _IMAGE_NAME.match(job.images[n - 1]):
            return None
        if folder is None:
            return None
        path = folder / job.images[n - 1]
        return path if _regular_file(path) else None
    if job.state is JobState.COMMITTED:
        files = job.meta.get("committed_files")
        if not isinstance(files, list) or not 1 <= n <= len(files):
            return None
        images = os.path.realpath(ctx.root / job.user / "user" / "images")
        path = Path(os.path.realpath(str(files[n - 1])))
        if os.path.commonpath([images, str(path)]) != images or not path.is_file():
            return None
        return path
    return None


async def image(request: Request) -> Response:
    ctx = _ctx(request)
    job = await _job(request)
    raw = request.path_params["n"]
    if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 4:
        raise ApiError(400, "bad_index", "the image number is 1, 2, …")
    size = request.query_params.get("size", "full")
    if size not in ("thumb", "full"):
        raise ApiError(422, "invalid", "size is thumb or full")
    folder = await ctx.engine.job_folder(job.id) if job.state in _FOLDER_STATES else None
    if job.state is JobState.REJECTED:
        folder = await ctx.engine.trash_folder(job.id)
    path = await anyio.to_thread.run_sync(_image_path, ctx, job, int(raw), folder)
    if path is None:
        raise ApiError(404, "not_found", f"job {job.id} has no image {raw} to show")
    cache = {"Cache-Control": "private, max-age=3600"}
    if size == "thumb":
        try:
            thumb = await anyio.to_thread.run_sync(
                ctx.thumbs.get, path, ctx.config.image.max_pixels
            )
        except ImageRejected as exc:
            raise ApiError(415, "not_an_image", f"image {raw} has no thumbnail: {exc}") from None
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                raise  # the state dir is full: the app's answer for that (507)
            raise ApiError(404, "not_found", f"image {raw} cannot be read") from None
        return FileResponse(thumb, media_type=ctx.thumbs.media_type, headers=cache)
    ext = path.suffix.lstrip(".").lower()
    return FileResponse(path, media_type=_MEDIA.get(ext, "application/octet-stream"), headers=cache)


async def message(request: Request) -> Response:
    ctx = _ctx(request)
    job = await _job(request)
    if job.state is not JobState.COMMITTED:
        raise ApiError(409, "not_committed", f"job {job.id} is {job.state.value}, not committed")
    written = await ctx.engine.committed_message(job.id)
    if written is None:
        raise ApiError(404, "not_found", f"job {job.id} has no message in the ledger")
    after = {"name": job.reply.name, "send_date": job.reply.date, "mesid": job.message_index}
    return JSONResponse({"message": written, "after": after})


async def accept(request: Request) -> Response:
    ctx = _check_actions(request)
    job = await _job(request)
    body = await parsed(request, AcceptBody.parse)
    # Only a pending job's numbers are the user's mistake: a job another client accepted a
    # moment ago holds only the images it kept, and the engine answers its state (409).
    if job.state is JobState.PENDING:
        body.check_against(job.id, len(job.images))
    try:
        done = await ctx.engine.accept(job.id, body.keep)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JSONResponse(job_json(done, ctx.config, ctx.root, caller(request)))


async def reject(request: Request) -> Response:
    ctx = _check_actions(request)
    job = await _job(request)
    await parsed(request, EmptyBody.parse)
    try:
        done = await ctx.engine.reject(job.id)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JSONResponse(job_json(done, ctx.config, ctx.root, caller(request)))


async def restore(request: Request) -> Response:
    """Undo a reject: the job is back in the inbox with its images from the trash."""
    ctx = _check_actions(request)
    job = await _job(request)
    await parsed(request, EmptyBody.parse)
    try:
        done = await ctx.engine.restore(job.id)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JSONResponse(job_json(done, ctx.config, ctx.root, caller(request)))


async def cancel(request: Request) -> Response:
    """Stop a queued or running job (no image is made, or the one being made is dropped)."""
    ctx = _check_actions(request)
    job = await _job(request)
    await parsed(request, EmptyBody.parse)
    try:
        done = await ctx.engine.cancel(job.id)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JSONResponse(job_json(done, ctx.config, ctx.root, caller(request)))


async def cancel_queued(request: Request) -> Response:
    """Cancel every queued job (of one chat with ``{"chat": path}``); running ones go on."""
    ctx = _check_actions(request)
    body = await parsed(request, CancelQueuedBody.parse)
    done = await ctx.engine.cancel_queued(chat=body.chat, users=caller(request).handles)
    return JSONResponse({"cancelled": [j.id for j in done]})


def _pause_for(who: Caller, state: dict[str, Any]) -> dict[str, Any]:
    """The pause switch as a user sees it: only their own chats named."""
    if who.admin:
        return state
    chats = [c for c in state.get("chats", []) if who.sees(str(c).split("/", 1)[0])]
    return {**state, "chats": chats}


def _still_valid(ctx: WebContext, who: Caller) -> bool:
    """Is ``who``'s token still good (a user token may have been revoked since)?"""
    if who.admin or ctx.users is None:
        return True
    return any(t.id == who.token_id for t in ctx.users.tokens())


def _event_for(who: Caller, event: Event) -> Event | None:
    """What ``who`` gets of ``event``: another user's job event is nothing; the pause switch
    names only their own chats."""
    if who.admin:
        return event
    if event.user is not None:
        if not who.sees(event.user):
            return None
        if event.name == "job":  # a held job's reason, without the daemon-wide spend
            data = json.loads(event.data)
            progress = (data.get("job") or {}).get("progress")
            if isinstance(progress, dict) and isinstance(progress.get("text"), str):
                progress["text"] = hold_for_a_user(progress["text"])
                return Event(
                    event.seq, event.name, json.dumps(data, ensure_ascii=False), event.user
                )
        return event
    if event.name == "pause":
        data = _pause_for(who, json.loads(event.data))
        return Event(event.seq, event.name, json.dumps(data, ensure_ascii=False))
    return event


async def pause(request: Request) -> Response:
    """``GET``: the pause switch. ``POST {"paused": bool, "chat"?: path}``: set it."""
    ctx = _ctx(request)
    who = caller(request)
    if request.method == "GET":
        now = await ctx.engine.paused()
        data = _pause_for(who, now.to_json())
        return JSONResponse(data, headers={"Cache-Control": "no-store"})
    _check_actions(request)
    body = await parsed(request, PauseBody.parse)
    chat = body.chat
    if chat is None and body.chat_file is not None:  # ST's chat id (the extension knows it so)
        try:
            chat = await ctx.engine.chat_for_file(body.chat_file, users=who.handles)
        except NotFoundError:
            raise ApiError(404, "not_found", "no such chat") from None
        except AmbiguousError as exc:
            raise ApiError(400, "ambiguous_chat", str(exc)) from None
    if not who.admin and chat is None:
        raise ApiError(403, "forbidden", "only the admin pauses every chat; name your chat")
    if chat is not None and not who.sees(chat.split("/", 1)[0]):
        raise ApiError(404, "not_found", "no such chat")
    after = await ctx.engine.pause(body.paused, chat)
    ctx.hub.publish("pause", after.to_json())
    return JSONResponse(_pause_for(who, after.to_json()))


async def regen(request: Request) -> Response:
    ctx = _check_actions(request)
    job = await _job(request)
    body = await parsed(request, RegenBody.parse)
    try:
        new = await ctx.engine.regen(job.id, body.prompt)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JSONResponse(job_json(new, ctx.config, ctx.root, caller(request)), status_code=201)


async def generate(request: Request) -> Response:
    ctx = _check_actions(request)
    body = await parsed(request, GenerateBody.parse)
    try:
        made = await ctx.engine.generate(
            body.chat,
            body.mesid,
            chat_file=body.chat_file,
            force=body.force,
            users=caller(request).handles,
        )
    except UnsafePathError as exc:
        raise ApiError(400, "bad_chat", str(exc)) from None
    except ChatReadError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except MessageNotFoundError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except AmbiguousError as exc:
        raise ApiError(400, "ambiguous_chat", str(exc)) from None
    except NotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    status = 201 if made.created else 200
    return JSONResponse(
        job_json(made.job, ctx.config, ctx.root, caller(request)), status_code=status
    )


async def events(request: Request) -> Response:
    ctx = _ctx(request)
    who = caller(request)
    cap = ctx.config.web.max_streams_per_token
    if ctx.streams.get(who.token_id, 0) >= cap:
        raise ApiError(
            429,
            "too_many_streams",
            f"this token has {cap} event streams open already (web.max_streams_per_token); "
            "close a tab",
        )
    hello = {"version": ctx.version, "api": 1}
    body = _counted(
        ctx.streams,
        who.token_id,
        stream_events(
            ctx.hub,
            # A reconnecting EventSource sends Last-Event-ID; a page's first connection says
            # where the jobs it was rendered with were read (``?after=``).
            request.headers.get("last-event-id") or request.query_params.get("after"),
            hello,
            ping_seconds=ctx.ping_seconds,
            view=lambda event: _event_for(who, event),
            alive=lambda: _still_valid(ctx, who),
        ),
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- user tokens (the admin only) -------------------------------------------------------------


def _admin_tokens(request: Request) -> UserTokens:
    if not caller(request).admin:
        raise ApiError(403, "admin_only", "only the admin's token manages user tokens")
    users = _ctx(request).users
    if users is None:
        raise ApiError(404, "not_found", "user tokens are not served here")
    return users


async def list_user_tokens(request: Request) -> Response:
    users = _admin_tokens(request)
    found = await anyio.to_thread.run_sync(users.tokens)
    return JSONResponse(
        {"tokens": [t.to_json() for t in found]}, headers={"Cache-Control": "no-store"}
    )


async def create_user_token(request: Request) -> Response:
    users = _admin_tokens(request)
    body = await parsed(request, UserTokenBody.parse)
    try:
        record, secret = await anyio.to_thread.run_sync(
            users.create, list(body.handles), body.label
        )
    except ConfigError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    answer = {**record.to_json(), "token": secret}
    return JSONResponse(answer, status_code=201, headers={"Cache-Control": "no-store"})


async def revoke_user_token(request: Request) -> Response:
    users = _admin_tokens(request)
    token_id = request.path_params["token_id"]
    if not isinstance(token_id, str) or not is_token_id(token_id):
        raise ApiError(404, "not_found", "no such user token")
    await parsed(request, EmptyBody.parse)
    gone = await anyio.to_thread.run_sync(users.revoke, token_id)
    if gone is None:
        raise ApiError(404, "not_found", f"no user token {token_id}")
    return JSONResponse({**gone.to_json(), "revoked": True})


async def _counted(
    streams: dict[str, int], key: str, body: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """``body``, counted in ``streams[key]`` while it runs."""
    streams[key] = streams.get(key, 0) + 1
    try:
        async for chunk in body:
            yield chunk
    finally:
        left = streams.get(key, 1) - 1
        if left > 0:
            streams[key] = left
        else:
            streams.pop(key, None)


def routes() -> list[Route]:
    job = "/api/v1/jobs/{job_id}"
    return [
        Route("/api/v1/status", status, methods=["GET"]),
        Route("/api/v1/meta", meta, methods=["GET"]),
        Route("/api/v1/jobs", list_jobs, methods=["GET"]),
        Route(job, one_job, methods=["GET"]),
        Route(job + "/images/{n}", image, methods=["GET"]),
        Route(job + "/message", message, methods=["GET"]),
        Route(job + "/accept", accept, methods=["POST"]),
        Route(job + "/reject", reject, methods=["POST"]),
        Route(job + "/regen", regen, methods=["POST"]),
        Route(job + "/restore", restore, methods=["POST"]),
        Route(job + "/cancel", cancel, methods=["POST"]),
        Route("/api/v1/cancel", cancel_queued, methods=["POST"]),
        Route("/api/v1/pause", pause, methods=["GET", "POST"]),
        Route("/api/v1/generate", generate, methods=["POST"]),
        Route("/api/v1/events", events, methods=["GET"]),
        Route("/api/v1/users", list_user_tokens, methods=["GET"]),
        Route("/api/v1/users", create_user_token, methods=["POST"]),
        Route("/api/v1/users/{token_id}/revoke", revoke_user_token, methods=["POST"]),
    ]
