"""What keeps a job's characters recognisable: their tags, the style, the user's persona.

:func:`plan_look` gathers them for one reply (blocking: it reads cards, ``settings.json`` and
the character profiles; run it in a worker thread). The job runner passes the result to the
prompt writer (:meth:`JobLook.prompt_fields`) and stores what was used in the job's meta
(:meth:`JobLook.meta`), which the image step and the PNG metadata read back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.engine.look.appearance import (
    CharacterStore,
    Look,
    chat_members,
    looks_for_reply,
    mentions,
)
from daemon.engine.look.references import reference_paths
from daemon.engine.look.styles import ChosenStyle, choose
from daemon.engine.store import Job
from daemon.providers.backend import ImageRequest
from daemon.providers.cleanup import join_tags
from daemon.providers.decode import GeneratedImage
from daemon.providers.pngtext import OURS, PARAMETERS, a1111_parameters, with_text_chunks
from daemon.providers.registry import capabilities
from daemon.tavern.settings import Persona, persona_for, read_user_settings

__all__ = ["JobLook", "plan_look", "stamp_images"]


@dataclass(frozen=True, slots=True)
class JobLook:
    looks: tuple[Look, ...]
    style: ChosenStyle
    persona: Persona | None  # included in the prompt (the reply involves the user)
    user_name: str = ""  # the persona's name, for {{user}}
    references: tuple[str, ...] = ()  # reference image files for the image step (switch on)

    def prompt_fields(self) -> dict[str, Any]:
        """Keyword arguments for :class:`daemon.providers.text.PromptInput`."""
        style = self.style.style
        return {
            "appearance": tuple((look.name, look.tags) for look in self.looks if look.tags),
            "persona": self.persona.description if self.persona else "",
            "user": self.user_name,
            "style_prefix": style.prefix if style else "",
            "style_suffix": style.suffix if style else "",
            "negative": join_tags(
                style.negative if style else "", *(look.negative for look in self.looks)
            ),
        }

    def meta(self) -> dict[str, Any]:
        """What the job remembers: shown by ``show``, used by the image step and PNG text."""
        style = self.style.style
        return {
            "style": self.style.name,
            "style_from": self.style.source,
            "style_size": style.size if style else "",
            "style_model": style.model if style else "",
            "appearance": [look.describe() for look in self.looks],
            "persona": self.persona.name if self.persona else "",
            "references": list(self.references),
        }


def _involves_user(config: Config, persona: Persona, reply: str) -> bool:
    mode = config.text.include_persona
    if mode == "always":
        return True
    if mode == "never":
        return False
    return "{{user}}" in reply.lower() or (bool(persona.name) and mentions(reply, persona.name))


def plan_look(job: Job, reply: str, config: Config, root: Path) -> JobLook:
    """The looks, style and persona for ``job`` whose reply text is ``reply``."""
    store = CharacterStore(config.state_dir)
    st_settings = read_user_settings(root, job.user)
    members = chat_members(root, job.user, job.chat, job.character, job.is_group)
    looks = looks_for_reply(
        members, job.speaker, reply, store, st_settings=st_settings, solo=not job.is_group
    )
    speaker_keys = tuple(k for k in ((job.character if not job.is_group else ""), job.speaker) if k)
    if job.is_group:
        stems = [m.stem for m in members if m.name == job.speaker]
        speaker_keys = (*stems, job.speaker)
    style = choose(config, store, chat=job.chat, characters=speaker_keys)
    persona = persona_for(st_settings)
    user_name = persona.name if persona else ""
    included: Persona | None = None
    if persona is not None and _involves_user(config, persona, reply):
        included = persona
        profile = store.get(persona.name) if persona.name else None
        if profile is not None and (profile.appearance or profile.negative):
            # The user's own fixed tags, when they gave their persona a profile.
            looks.append(
                Look(
                    persona.name,
                    " ".join((profile.appearance or "").split()),
                    " ".join((profile.negative or "").split()),
                    "profile",
                )
            )
    # The speaker first, then the members the reply names (whose tags are in the prompt too).
    named = {look.name for look in looks}
    if job.is_group:
        who = [(m.stem, m.name) for m in members if m.name == job.speaker]
        who += [(m.stem, m.name) for m in members if m.name != job.speaker and m.name in named]
    else:
        who = [(job.character, job.speaker)]
    references = reference_paths(config, store, root, job.user, who)
    return JobLook(tuple(looks), style, included, user_name, tuple(references))


def stamp_images(
    images: Sequence[GeneratedImage], job: Job, config: Config, request: ImageRequest
) -> list[GeneratedImage]:
    """The images with their prompt, style, tags and seed in their PNG text chunks."""
    image = config.image
    native = capabilities(image).steps  # steps, sampler and CFG scale mean something there
    seed = request.seed if request.seed is not None else (image.seed if image.seed >= 0 else None)
    looks = job.meta.get("appearance") or []
    out: list[GeneratedImage] = []
    for generated in images:
        if generated.format != "png":
            out.append(generated)
            continue
        settings: list[tuple[str, Any]] = []
        if native:
            settings += [
                ("Steps", image.steps),
                ("Sampler", image.sampler),
                ("Schedule type", image.scheduler),
                ("CFG scale", image.cfg_scale),
            ]
        settings += [
            ("Seed", seed),
            ("Size", f"{generated.width}x{generated.height}"),
            ("Model", request.model or image.model),
            ("Style", job.meta.get("style") or ""),
            ("Characters", "; ".join(str(look.get("name", "")) for look in looks)),
            ("Generator", f"st-imagegen ({image.backend})"),
        ]
        details = {
            "prompt": request.prompt,
            "negative": request.negative,
            "seed": seed,
            "model": request.model or image.model,
            "backend": image.backend,
            "style": job.meta.get("style") or "",
            "appearance": looks,
            "job": job.id,
        }
        texts = {
            PARAMETERS: a1111_parameters(request.prompt, request.negative, settings=settings),
            OURS: json.dumps(details, ensure_ascii=False, sort_keys=True),
        }
        out.append(replace(generated, data=with_text_chunks(generated.data, texts)))
    return out
