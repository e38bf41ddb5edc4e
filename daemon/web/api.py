"""The JSON API under ``/api/v1/`` (docs/http-api.md): the inbox page and the ST extension use it.

Every action calls the engine functions the CLI calls (``accept_job``, ``reject_job``,
``regen_job``, manual ``select`` + ``create_for``): there is no second path to the store or
the chats. The job is looked up (404/400) and the body checked (422) first; a JobError from the
engine itself then means the job's state does not allow the action (409), which is what the
loser of two clients acting at once gets.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from daemon.config import Config
from daemon.engine.jobs import manual
from daemon.engine.jobs.pipeline import (
    CANCELLABLE,
    accept_job,
    cancel_job,
    regen_job,
    reject_job,
    restore_job,
)
from daemon.engine.process.pause import read_pause, set_pause
from daemon.engine.process.status import gather_status
from daemon.engine.store import Job, JobState
from daemon.errors import (
    ChatReadError,
    JobError,
    MessageNotFoundError,
    UnsafePathError,
)
from daemon.tavern import layout
from daemon.web.context import WebContext
from daemon.web.events import stream_events

__all__ = ["ApiError", "job_json", "routes"]

MAX_BODY = 64 * 1024
MAX_LIMIT = 500
MAX_PROMPT = 8000
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
PROGRESS_TEXT = {
    JobState.QUEUED: "waiting for its turn",
    JobState.PROMPTING: "writing the prompt",
    JobState.IMAGING: "drawing",
    JobState.ACCEPTED: "writing into the chat",
}


class ApiError(Exception):
    """An answer ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


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
    chat_file, chat_folder = _chat_parts(job.chat)
    if not job.is_group:
        return f"{chat_folder or job.character} · {chat_file}"
    name = group_name(root, job)
    return f"{name} · {chat_file}" if name and name != chat_file else (name or f"group {chat_file}")


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


def job_json(job: Job, config: Config, root: Path | None = None) -> dict[str, Any]:
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
        "identity": {"name": job.identity_name, "send_date": job.identity_date},
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
    try:
        return await _ctx(request).store.get_job(ref)
    except JobError as exc:
        if "ambiguous" in str(exc):
            raise ApiError(400, "ambiguous_id", str(exc)) from None
        raise ApiError(404, "not_found", f"no job {ref}") from None


async def _body(request: Request) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "json_required", "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return data


def _check_actions(request: Request) -> WebContext:
    ctx = _ctx(request)
    if ctx.draining():
        raise ApiError(503, "draining", "the daemon is stopping; try again when it is back")
    return ctx


def _int_field(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, "invalid", f"{key} must be a whole number")
    return value


# --- routes ---------------------------------------------------------------------------------


async def status(request: Request) -> Response:
    ctx = _ctx(request)
    cache = ctx.status_cache
    now = time.monotonic()
    at = cache.get("at")
    if not isinstance(at, float) or now - at > STATUS_CACHE_SECONDS:
        report = await gather_status(ctx.config)  # walks the chat folders: kept a moment
        cache["at"] = now
        cache["data"] = report.to_json()
    data = dict(cache["data"])  # type: ignore[call-overload]
    # Job counts change with every event the page gets: always fresh from the store.
    counts = {s.value: n for s, n in (await ctx.store.counts()).items()}
    paused = await anyio.to_thread.run_sync(read_pause, ctx.config.state_dir)
    data.update(
        jobs=counts,
        counts=counts,
        version=ctx.version,
        chats_watched=data["chats"],
        paused=paused.to_json(),
    )
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
    jobs = await ctx.store.query_jobs(
        states=states,
        chat=query.get("chat") or None,
        chat_file=query.get("chat_file") or None,
        user=query.get("user") or None,
        character=query.get("character") or None,
        before=before.upper() if before else None,
        limit=limit,
    )
    next_id = jobs[-1].id if len(jobs) == limit else None
    return JSONResponse(
        {"jobs": [job_json(j, ctx.config, ctx.root) for j in jobs], "next": next_id},
        headers={"Cache-Control": "no-store"},
    )


async def one_job(request: Request) -> Response:
    job = await _job(request)
    return JSONResponse(
        job_json(job, _ctx(request).config, _ctx(request).root),
        headers={"Cache-Control": "no-store"},
    )


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _image_path(ctx: WebContext, job: Job, n: int) -> Path | None:
    """The file of image ``n`` of ``job`` (blocking); only job folders and committed files."""
    if job.state in (JobState.PENDING, JobState.ACCEPTED):
        if not 1 <= n <= len(job.images) or not _IMAGE_NAME.match(job.images[n - 1]):
            return None
        folder = ctx.approval.find(job.id)
        if folder is None:
            return None
        path = folder / job.images[n - 1]
        return path if _regular_file(path) else None
    if job.state is JobState.REJECTED:
        if not 1 <= n <= len(job.images) or not _IMAGE_NAME.match(job.images[n - 1]):
            return None
        path = ctx.approval.trash_path(job.id) / job.images[n - 1]
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
    path = await anyio.to_thread.run_sync(_image_path, ctx, job, int(raw))
    if path is None:
        raise ApiError(404, "not_found", f"job {job.id} has no image {raw} to show")
    cache = {"Cache-Control": "private, max-age=3600"}
    if size == "thumb":
        try:
            thumb = await anyio.to_thread.run_sync(ctx.thumbs.get, path)
        except (OSError, ValueError, SyntaxError):
            raise ApiError(415, "not_an_image", f"image {raw} cannot be read") from None
        return FileResponse(thumb, media_type=ctx.thumbs.media_type, headers=cache)
    ext = path.suffix.lstrip(".").lower()
    return FileResponse(path, media_type=_MEDIA.get(ext, "application/octet-stream"), headers=cache)


async def message(request: Request) -> Response:
    ctx = _ctx(request)
    job = await _job(request)
    if job.state is not JobState.COMMITTED:
        raise ApiError(409, "not_committed", f"job {job.id} is {job.state.value}, not committed")
    entry = await ctx.store.ledger_get(job.id)
    if entry is None:
        raise ApiError(404, "not_found", f"job {job.id} has no message in the ledger")
    after = {"name": job.identity_name, "send_date": job.identity_date, "mesid": job.message_index}
    return JSONResponse({"message": entry.message, "after": after})


async def accept(request: Request) -> Response:
    ctx = _check_actions(request)
    job = await _job(request)
    data = await _body(request)
    keep = data.get("keep")
    if keep is not None:
        if (
            not isinstance(keep, list)
            or not keep
            or any(isinstance(n, bool) or not isinstance(n, int) for n in keep)
        ):
            raise ApiError(422, "invalid", "keep is a list of image numbers, like [1, 3]")
        bad = [n for n in keep if not 1 <= n <= len(job.images)]
        if bad and job.images:
            raise ApiError(
                422, "invalid", f"job {job.id} has images 1..{len(job.images)}; no image {bad[0]}"
            )
    try:
        done = await accept_job(ctx.store, ctx.approval, job.id, keep)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    ctx.wake()
    return JSONResponse(job_json(done, ctx.config, ctx.root))


async def reject(request: Request) -> Response:
    ctx = _check_actions(request)
    job = await _job(request)
    await _body(request)
    try:
        done = await reject_job(
            ctx.store, ctx.approval, job.id, trash_days=ctx.config.limits.trash_days
        )
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JSONResponse(job_json(done, ctx.config, ctx.root))


async def restore(request: Request) -> Response:
    """Undo a reject: the job is back in the inbox with its images from the trash."""
    ctx = _check_actions(request)
    job = await _job(request)
    await _body(request)
    try:
        done = await restore_job(ctx.store, ctx.approval, job.id)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JSONResponse(job_json(done, ctx.config, ctx.root))


async def cancel(request: Request) -> Response:
    """Stop a queued or running job (no image is made, or the one being made is dropped)."""
    ctx = _check_actions(request)
    job = await _job(request)
    await _body(request)
    try:
        done = await cancel_job(ctx.store, ctx.approval, job.id, ctx.stop_running)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    ctx.wake()
    return JSONResponse(job_json(done, ctx.config, ctx.root))


async def cancel_queued(request: Request) -> Response:
    """Cancel every queued job (of one chat with ``{"chat": path}``); running ones go on."""
    ctx = _check_actions(request)
    data = await _body(request)
    chat = data.get("chat")
    if chat is not None and (not isinstance(chat, str) or not chat):
        raise ApiError(422, "invalid", "chat must be a chat path")
    running = data.get("running", False)
    if not isinstance(running, bool):
        raise ApiError(422, "invalid", "running is true or false")
    states = CANCELLABLE if running else {JobState.QUEUED}
    jobs = await ctx.store.query_jobs(states=states, chat=chat, limit=10000)
    done: list[str] = []
    for job in jobs:
        try:
            await cancel_job(ctx.store, ctx.approval, job.id, ctx.stop_running)
        except JobError:
            continue  # it started or finished meanwhile: not queued any more
        done.append(job.id)
    ctx.wake()
    return JSONResponse({"cancelled": done})


async def pause(request: Request) -> Response:
    """``GET``: the pause switch. ``POST {"paused": bool, "chat"?: path}``: set it."""
    ctx = _ctx(request)
    if request.method == "GET":
        now = await anyio.to_thread.run_sync(read_pause, ctx.config.state_dir)
        return JSONResponse(now.to_json(), headers={"Cache-Control": "no-store"})
    _check_actions(request)
    data = await _body(request)
    paused = data.get("paused")
    chat = data.get("chat")
    if not isinstance(paused, bool):
        raise ApiError(422, "invalid", "paused is true or false")
    if chat is not None and (not isinstance(chat, str) or not chat or len(chat) > 1000):
        raise ApiError(422, "invalid", "chat must be a chat path")
    after = await anyio.to_thread.run_sync(set_pause, ctx.config.state_dir, paused, chat)
    ctx.hub.publish("pause", after.to_json())
    ctx.wake()
    return JSONResponse(after.to_json())


async def regen(request: Request) -> Response:
    ctx = _check_actions(request)
    job = await _job(request)
    data = await _body(request)
    prompt = data.get("prompt")
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(422, "invalid", "prompt must be a non-empty text")
        if len(prompt) > MAX_PROMPT:
            raise ApiError(422, "invalid", f"prompt is longer than {MAX_PROMPT} characters")
    try:
        new = await regen_job(ctx.store, ctx.approval, job.id, prompt)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    ctx.wake()
    return JSONResponse(job_json(new, ctx.config, ctx.root), status_code=201)


def _chat_by_file(ctx: WebContext, users: list[str], chat_file: str) -> str:
    found = [ref.rel for ref in layout.iter_chats(ctx.root, users) if ref.chat_id == chat_file]
    if not found:
        raise ApiError(404, "not_found", f"no chat {chat_file!r}")
    if len(found) > 1:
        raise ApiError(400, "ambiguous_chat", f"chat {chat_file!r} is ambiguous: {found[:5]}")
    return found[0]


def _select(ctx: WebContext, chat: str | None, chat_file: str | None, mesid: int | None) -> Any:
    users = layout.list_users(ctx.root, ctx.config.detect.users)
    spec = chat
    if chat_file is not None:
        if chat is None:
            spec = _chat_by_file(ctx, users, chat_file)
        elif not chat.endswith(".jsonl"):
            spec = f"{chat}/{chat_file}"
    if spec is not None and (Path(spec).is_absolute() or spec.startswith(("~", "."))):
        raise ApiError(400, "bad_chat", "give the chat relative to the data root, or a name")
    return manual.select(ctx.root, users, spec, mesid)


async def generate(request: Request) -> Response:
    ctx = _check_actions(request)
    data = await _body(request)
    chat = data.get("chat")
    chat_file = data.get("chat_file")
    for key, value in (("chat", chat), ("chat_file", chat_file)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ApiError(422, "invalid", f"{key} must be a non-empty text")
        if isinstance(value, str) and ("\x00" in value or len(value) > 1000):
            raise ApiError(400, "bad_chat", f"{key} is not a chat name")
    mesid = _int_field(data, "mesid")
    if mesid is not None and mesid < 0:
        raise ApiError(422, "invalid", "mesid starts at 0")
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(422, "invalid", "force is true or false")
    try:
        sel = await anyio.to_thread.run_sync(_select, ctx, chat, chat_file, mesid)
    except UnsafePathError as exc:
        raise ApiError(400, "bad_chat", str(exc)) from None
    except ChatReadError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except MessageNotFoundError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except JobError as exc:
        if "ambiguous" in str(exc):
            raise ApiError(400, "ambiguous_chat", str(exc)) from None
        raise ApiError(404, "not_found", str(exc)) from None
    try:
        job, created = await manual.create_for(ctx.store, sel, force)
    except JobError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    if created:
        ctx.wake()
    return JSONResponse(job_json(job, ctx.config, ctx.root), status_code=201 if created else 200)


async def events(request: Request) -> Response:
    ctx = _ctx(request)
    hello = {"version": ctx.version, "api": 1}
    body = stream_events(
        ctx.hub, request.headers.get("last-event-id"), hello, ping_seconds=ctx.ping_seconds
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def routes() -> list[Route]:
    job = "/api/v1/jobs/{job_id}"
    return [
        Route("/api/v1/status", status, methods=["GET"]),
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
    ]
