"""The settings page's characters (admin only, same rules as the rest of ``/api/v1``): each
character of the data root with its avatar, the appearance tags the next job uses and where they
come from, its style and reference images; changed through the engine's character store (the
same as ``st-imagegen character set``). Uploaded reference images come as JSON (base64,
:class:`~daemon.web.bodies.ReferenceBody`), capped in bytes and pixels and decoded before they
are kept."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from daemon.errors import ConfigError, JobError
from daemon.tavern import layout
from daemon.web.api import ApiError, _ctx, caller
from daemon.web.bodies import (
    MAX_UPLOAD_BYTES,
    UPLOAD_LIMIT,
    CharacterBody,
    EmptyBody,
    ReferenceBody,
    parsed,
)
from daemon.web.context import WebContext

__all__ = ["MAX_UPLOAD_BYTES", "routes"]

MAX_CHARACTERS = 300
_NAME = re.compile(r"^[^/\\\x00]{1,200}$")
_HANDLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _admin(request: Request) -> WebContext:
    if not caller(request).admin:
        raise ApiError(403, "admin_only", "only the admin's token changes the characters")
    return _ctx(request)


def _cards(ctx: WebContext) -> list[tuple[str, str]]:
    """``(user, stem)`` of every character card, sorted, at most :data:`MAX_CHARACTERS`."""
    out: list[tuple[str, str]] = []
    for user in layout.list_users(ctx.root, ctx.config.detect.users):
        folder = ctx.root / user / "characters"
        try:
            stems = sorted(p.stem for p in folder.glob("*.png") if p.is_file())
        except OSError:
            continue
        out.extend((user, stem) for stem in stems)
    return out[:MAX_CHARACTERS]


def _describe_all(ctx: WebContext) -> list[dict[str, Any]]:
    rows = []
    for user, stem in _cards(ctx):
        described = ctx.engine.describe_character(stem)
        described["user"] = user
        described["stem"] = stem
        described["avatar"] = f"/api/v1/characters/{user}/{stem}/avatar"
        described["references"] = len(described.get("references") or [])
        rows.append(described)
    return rows


async def list_characters(request: Request) -> Response:
    ctx = _admin(request)
    rows = await anyio.to_thread.run_sync(_describe_all, ctx)
    return JSONResponse({"characters": rows}, headers={"Cache-Control": "no-store"})


async def avatar(request: Request) -> Response:
    ctx = _admin(request)
    user = str(request.path_params["user"])
    stem = str(request.path_params["stem"])
    if not _HANDLE.match(user) or not _NAME.match(stem) or stem.startswith("."):
        raise ApiError(400, "bad_name", "not a character")
    path = layout.card_path(ctx.root, user, stem)
    if (user, stem) not in await anyio.to_thread.run_sync(_cards, ctx) or not path.is_file():
        raise ApiError(404, "not_found", f"no character {stem!r}")
    try:
        thumb = await anyio.to_thread.run_sync(ctx.thumbs.get, path, ctx.config.image.max_pixels)
    except (OSError, ValueError):  # ImageRejected is a ValueError
        raise ApiError(415, "not_an_image", "the card cannot be read as an image") from None
    return FileResponse(
        thumb, media_type=ctx.thumbs.media_type, headers={"Cache-Control": "private, max-age=60"}
    )


async def update_character(request: Request) -> Response:
    ctx = _admin(request)
    name = str(request.path_params["name"])
    if not _NAME.match(name):
        raise ApiError(400, "bad_name", "not a character name")
    body = await parsed(request, CharacterBody.parse)
    changes: dict[str, Any] = {}
    if body.appearance is not None:
        changes["appearance"] = body.appearance
    if body.negative is not None:
        changes["negative"] = body.negative
    if body.style is not None:
        try:
            changes["style"] = ctx.engine.check_style(body.style) if body.style.strip() else ""
        except ConfigError as exc:
            raise ApiError(422, "invalid", str(exc), key="style") from None
    if body.references is not None:
        refs = body.references
        changes["use_references"] = None if refs == "default" else refs == "on"
    try:
        await anyio.to_thread.run_sync(lambda: ctx.engine.characters.update(name, **changes))
    except JobError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    described = await anyio.to_thread.run_sync(ctx.engine.describe_character, name)
    return JSONResponse(described)


async def add_reference(request: Request) -> Response:
    """``{"data_base64": "…"}``: one reference image, checked (bytes, pixels, decodes) and kept
    in the character's reference folder."""
    ctx = _admin(request)
    name = str(request.path_params["name"])
    if not _NAME.match(name):
        raise ApiError(400, "bad_name", "not a character name")
    body = await parsed(request, ReferenceBody.parse, limit=UPLOAD_LIMIT)

    def keep() -> str:
        with tempfile.TemporaryDirectory(dir=ctx.config.state_dir) as folder:
            upload = Path(folder) / "upload"
            upload.write_bytes(body.image)
            return ctx.engine.add_reference(name, upload).name

    try:
        kept = await anyio.to_thread.run_sync(keep)
    except JobError as exc:
        raise ApiError(422, "not_an_image", str(exc).replace("'upload' ", "the image ")) from None
    described = await anyio.to_thread.run_sync(ctx.engine.describe_character, name)
    return JSONResponse({"kept": kept, **described}, status_code=201)


async def clear_references(request: Request) -> Response:
    ctx = _admin(request)
    name = str(request.path_params["name"])
    if not _NAME.match(name):
        raise ApiError(400, "bad_name", "not a character name")
    await parsed(request, EmptyBody.parse)
    removed = await anyio.to_thread.run_sync(ctx.engine.clear_references, name)
    return JSONResponse({"removed": removed})


def routes() -> list[Route]:
    base = "/api/v1/characters"
    return [
        Route(base, list_characters, methods=["GET"]),
        Route(base + "/{user}/{stem}/avatar", avatar, methods=["GET"]),
        Route(base + "/{name}", update_character, methods=["POST"]),
        Route(base + "/{name}/references", add_reference, methods=["POST"]),
        Route(base + "/{name}/references/clear", clear_references, methods=["POST"]),
    ]
