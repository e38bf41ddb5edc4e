"""The models a service offers, for a settings page's dropdown: asked from the service where it
can tell (``/models``, A1111's checkpoints, ComfyUI's checkpoint loader), else the backend's
known list (its presets' models). One GET each, a short deadline, never a secret in a message.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx

from daemon.config import ImageSettings, TextSettings
from daemon.errors import ConfigError, StImagegenError
from daemon.providers.http import BearerAuth, endpoint_url
from daemon.providers.native import native_auth, native_base_url
from daemon.providers.profiles import resolve_profile
from daemon.providers.registry import backend_info, image_api_url

__all__ = ["MODELS_TIMEOUT", "ModelsError", "image_models", "text_models"]

MODELS_TIMEOUT = 15.0
"""Seconds one model list may take (a dropdown waits for it)."""


class ModelsError(StImagegenError):
    """The list could not be had; the message says why in plain words."""


async def _get(client: httpx.AsyncClient, url: str, auth: httpx.Auth | None) -> Any:
    try:
        with anyio.fail_after(MODELS_TIMEOUT):
            response = await client.get(url, auth=auth, headers={"Accept": "application/json"})
    except TimeoutError:
        raise ModelsError(f"{url} did not answer within {MODELS_TIMEOUT:.0f} s") from None
    except httpx.HTTPError as exc:
        raise ModelsError(f"cannot connect to {url} ({type(exc).__name__})") from None
    if response.status_code in (401, 403):
        raise ModelsError(f"{url} refused the key (HTTP {response.status_code})")
    if response.status_code >= 400:
        raise ModelsError(f"{url} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ModelsError(f"{url} did not answer with JSON") from None


def _ids(payload: Any) -> list[str]:
    entries = payload.get("data") if isinstance(payload, dict) else payload
    out: list[str] = []
    for entry in entries if isinstance(entries, list) else ():
        name = entry.get("id") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name and name not in out:
            out.append(name)
    return sorted(out)


async def text_models(settings: TextSettings, client: httpx.AsyncClient) -> list[str]:
    """The prompt writer's models (``GET …/models`` of its OpenAI-compatible API)."""
    base = endpoint_url(settings.api_url, "chat/completions", "text")
    url = base.rsplit("/chat/completions", 1)[0] + "/models"
    return _ids(await _get(client, url, BearerAuth(settings.api_key)))


def _known(settings: ImageSettings) -> list[str]:
    info = backend_info(settings.backend)
    names = [str(p.image.get("model")) for p in info.presets if p.image.get("model")]
    if info.default_model:
        names.append(info.default_model)
    return sorted(dict.fromkeys(names))


async def image_models(settings: ImageSettings, client: httpx.AsyncClient) -> list[str]:
    """The image service's models (checkpoints for local servers); the backend's known list
    where the service has no list to give."""
    backend = settings.backend
    if backend == "a1111":
        base = native_base_url(image_api_url(settings), "AUTOMATIC1111", ("/sdapi/v1/txt2img",))
        payload = await _get(client, base + "/sdapi/v1/sd-models", native_auth(settings))
        titles = [
            m.get("title") or m.get("model_name") for m in payload or [] if isinstance(m, dict)
        ]
        return sorted(str(t) for t in titles if t)
    if backend == "comfyui":
        base = native_base_url(image_api_url(settings), "ComfyUI", ("/prompt",))
        payload = await _get(
            client, base + "/object_info/CheckpointLoaderSimple", native_auth(settings)
        )
        try:
            names = payload["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        except (KeyError, IndexError, TypeError):
            raise ModelsError("ComfyUI's checkpoint loader lists no checkpoints") from None
        return sorted(str(n) for n in names if isinstance(n, str))
    if backend == "openrouter":
        from daemon.providers.registry import make_backend

        built = make_backend(settings, client)
        lister = getattr(built, "models", None)
        if lister is not None:
            try:
                return sorted(await lister())
            except StImagegenError as exc:
                raise ModelsError(str(exc)) from None
    if backend == "openai":
        url = settings.api_url.strip() or resolve_profile(settings).default_url
        try:
            base = endpoint_url(url, "images/generations", "image")
        except ConfigError as exc:
            raise ModelsError(str(exc)) from None
        listed = _ids(
            await _get(
                client,
                base.rsplit("/images/generations", 1)[0] + "/models",
                BearerAuth(settings.api_key),
            )
        )
        return listed or _known(settings)
    return _known(settings)
