"""Reference images: which pictures of a character go to the image API with a job.

A character's references are the images the user chose (``character ref add NAME FILE``,
copied into ``<state_dir>/references/<name>/``), else its card (the avatar ST shows). They are
sent only when the character's switch is on (``character set NAME --references on``), else when
``[image] reference_images`` is; the backend decides whether the API can take them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from daemon.config import Config
from daemon.engine.look.appearance import CharacterStore, _safe_key
from daemon.errors import JobError
from daemon.providers.backend import ReferenceImage
from daemon.providers.decode import ImageRejected, check_image
from daemon.tavern import layout

__all__ = [
    "MAX_REFERENCES",
    "MAX_REFERENCE_BYTES",
    "add_reference",
    "clear_references",
    "load_references",
    "reference_paths",
]

MAX_REFERENCES = 4
"""At most this many images per job (gpt-image takes up to 16; gateways often fewer)."""
MAX_REFERENCE_BYTES = 20 * 1024 * 1024


def add_reference(store: CharacterStore, name: str, source: Path) -> Path:
    """Copy ``source`` (a checked image) into the character's reference folder."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise JobError(f"cannot read {str(source)!r}: {exc.strerror}") from None
    if len(data) > MAX_REFERENCE_BYTES:
        raise JobError(f"{source.name!r} is over {MAX_REFERENCE_BYTES // 2**20} MB")
    try:
        image = check_image(data, 64_000_000)
    except ImageRejected as exc:
        raise JobError(f"{source.name!r} is not a usable image: {exc}") from None
    profile = store.get(name)
    existing = profile.references if profile else ()
    folder = store.references_dir / _safe_key(name)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(existing) + 1
    while (folder / f"ref-{n}.{image.ext}").exists():
        n += 1
    target = folder / f"ref-{n}.{image.ext}"
    temp = folder / f".{target.name}.tmp"
    temp.write_bytes(data)
    temp.replace(target)
    store.update(name, references=(*existing, target.name))
    return target


def clear_references(store: CharacterStore, name: str) -> int:
    profile = store.get(name)
    if profile is None or not profile.references:
        return 0
    shutil.rmtree(store.references_dir / _safe_key(profile.name), ignore_errors=True)
    store.update(name, references=())
    return len(profile.references)


def reference_paths(
    config: Config, store: CharacterStore, root: Path, user: str, names: list[tuple[str, str]]
) -> list[str]:
    """The reference files for ``names`` (``(card stem, display name)``, speaker first) whose
    switch is on: chosen images, else the card. Absolute paths, at most :data:`MAX_REFERENCES`."""
    out: list[str] = []
    for stem, display in names:
        profile = store.get(stem, display)
        enabled = config.image.reference_images
        if profile is not None and profile.use_references is not None:
            enabled = profile.use_references
        if not enabled:
            continue
        chosen = store.reference_files(profile) if profile else []
        if chosen:
            out.extend(str(p) for p in chosen)
        elif stem:
            card = layout.card_path(root, user, stem)
            if card.is_file():
                out.append(str(card))
    return out[:MAX_REFERENCES]


def load_references(paths: list[str]) -> tuple[ReferenceImage, ...]:
    """The images at ``paths`` (blocking); unreadable ones are skipped."""
    images: list[ReferenceImage] = []
    for text in paths:
        path = Path(text)
        try:
            data = path.read_bytes()
            checked = check_image(data[: MAX_REFERENCE_BYTES + 1], 64_000_000)
        except (OSError, ImageRejected):
            continue
        images.append(ReferenceImage(data=data, mime=checked.mime, name=path.name))
    return tuple(images)
