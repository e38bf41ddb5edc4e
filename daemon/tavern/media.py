"""Image swipes on an image message, in the shapes every ST version reads.

ST 1.14+ shows ``extra.media`` (a list of attachments) and the one at ``extra.media_index``;
ST 1.12-1.13 shows ``extra.image`` and swipes through ``extra.image_swipes``. Adding variants
appends to both and selects the first new one (as ST's own "generate another" does), so the
user sees the new image and can swipe back to the earlier ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.tavern.chat import encode_message

__all__ = ["SWIPES_KEY", "add_image_swipes", "swipe_jobs", "swipe_urls"]

SWIPES_KEY = "st_imagegen_swipes"
"""``extra`` key listing the jobs whose images were added as swipes (so a retry adds none)."""


def swipe_urls(message: Mapping[str, Any]) -> list[str]:
    """Every image URL of the message, in swipe order (media first, then older fields)."""
    extra = message.get("extra")
    if not isinstance(extra, Mapping):
        return []
    urls: list[str] = []
    media = extra.get("media")
    if isinstance(media, list):
        urls += [
            m["url"] for m in media if isinstance(m, Mapping) and isinstance(m.get("url"), str)
        ]
    swipes = extra.get("image_swipes")
    if isinstance(swipes, list):
        urls += [u for u in swipes if isinstance(u, str)]
    if isinstance(extra.get("image"), str):
        urls.append(extra["image"])
    return list(dict.fromkeys(u for u in urls if u))


def swipe_jobs(message: Mapping[str, Any]) -> list[str]:
    extra = message.get("extra")
    jobs = extra.get(SWIPES_KEY) if isinstance(extra, Mapping) else None
    return [j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else []


def add_image_swipes(
    message: Mapping[str, Any],
    urls: Sequence[str],
    *,
    prompt: str,
    job_id: str,
    negative: str = "",
) -> dict[str, Any]:
    """A copy of ``message`` with ``urls`` added as image swipes (selected); unchanged copy
    if ``job_id``'s swipes are already there."""
    out: dict[str, Any] = copy.deepcopy(dict(message))
    if not urls or job_id in swipe_jobs(out):
        return out
    extra = out.get("extra")
    if not isinstance(extra, dict):
        extra = out["extra"] = {}
    before = swipe_urls(out)
    media = extra.get("media")
    if not isinstance(media, list):
        media = [{"url": u, "type": "image", "title": extra.get("title", "")} for u in before]
    new = [u for u in urls if u not in before]
    for url in new:
        item: dict[str, Any] = {"url": url, "type": "image", "title": prompt, "source": "generated"}
        if negative:
            item["negative"] = negative
        media.append(item)
    extra["media"] = media
    if new:
        extra["media_index"] = len(media) - len(new)
        extra["image"] = new[0]
        extra["title"] = prompt
    extra["image_swipes"] = [*before, *new]
    extra.setdefault("media_display", "gallery")
    extra[SWIPES_KEY] = [*swipe_jobs(out), job_id]
    # Exactly what gets written (lone surrogates replaced), like build_image_message.
    scrubbed: dict[str, Any] = json.loads(encode_message(out))
    return scrubbed
