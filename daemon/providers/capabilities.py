"""What an image backend can do, as plain data the engine, ``doctor`` and a settings page read.

Every backend declares one :class:`Capabilities` record (see ``registry.BackendInfo``): which
sizes it takes (any WxH, or a list of aspect ratios a WxH is mapped to), how many images one
call makes, whether it takes a negative prompt, a seed, steps and a sampler, how many reference
images, whether it reports progress, can cancel provider-side, and how its cost is known.
Nothing outside ``daemon.providers`` tests a backend's name: it asks these records instead.

The helpers here turn a configured size into what such a backend sends
(:func:`nearest_aspect_ratio`) and a wanted ``n`` into calls (:func:`batches`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from daemon.errors import ConfigError

__all__ = [
    "COMMON_ASPECT_RATIOS",
    "Capabilities",
    "CostReport",
    "SizeMode",
    "batches",
    "nearest_aspect_ratio",
    "parse_wxh",
]


class SizeMode(StrEnum):
    """How a backend takes an image's size."""

    PIXELS = "pixels"  # any WxH (rounded to ``size_multiple``), within ``max_pixels``
    ASPECT = "aspect"  # one of ``aspect_ratios``; a WxH is mapped to the nearest one
    NONE = "none"  # the service decides (a size is not sent)


class CostReport(StrEnum):
    """How the price of a call is known."""

    FREE = "free"  # a local server, or a free service: nothing to count
    REPORTED = "reported"  # the answer says what it cost (OpenRouter usage.cost, Horde kudos)
    ESTIMATED = "estimated"  # from a per-model price (shipped defaults, or the user's own)


COMMON_ASPECT_RATIOS: tuple[str, ...] = (
    "1:1",
    "2:3",
    "3:2",
    "3:4",
    "4:3",
    "4:5",
    "5:4",
    "9:16",
    "16:9",
    "21:9",
)
"""The ratios Gemini and OpenRouter's image_config take (the Gemini image models' list)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One backend's abilities. Plain, frozen data: ``as_dict()`` gives JSON for a page."""

    size_mode: SizeMode = SizeMode.PIXELS
    aspect_ratios: tuple[str, ...] = ()  # for ASPECT: the accepted "W:H" ratios
    size_multiple: int = 1  # for PIXELS: width and height are rounded to a multiple of this
    max_n_per_call: int = 1  # more images than this are asked for in several calls
    negative_prompt: bool = False
    seed: bool = False  # a seed can be chosen (and so recorded with the image)
    steps: bool = False  # sampling steps, CFG scale
    sampler: bool = False
    max_references: int = 0  # reference images one call takes (0: none)
    progress: bool = False  # reports how far a generation is while it runs
    cancel: bool = False  # a given-up generation is cancelled at the provider
    cost: CostReport = CostReport.FREE
    cost_unit: str = "USD"  # what a reported cost counts ("USD", "kudos", "Anlas")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values, tuples as lists."""
        out = asdict(self)
        out["size_mode"] = self.size_mode.value
        out["cost"] = self.cost.value
        out["aspect_ratios"] = list(self.aspect_ratios)
        return out


_SIZE = re.compile(r"^\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*$", re.IGNORECASE)
_RATIO = re.compile(r"^\s*(\d{1,3})\s*:\s*(\d{1,3})\s*$")


def parse_wxh(size: str) -> tuple[int, int] | None:
    """``(width, height)`` from "WxH", or None when ``size`` is not one."""
    match = _SIZE.match(size or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def _ratio(text: str) -> float:
    match = _RATIO.match(text)
    if not match or int(match.group(2)) == 0:
        raise ConfigError(f"{text!r} is not an aspect ratio (W:H, e.g. 16:9)")
    return int(match.group(1)) / int(match.group(2))


def nearest_aspect_ratio(size: str, ratios: tuple[str, ...] = COMMON_ASPECT_RATIOS) -> str:
    """The ratio of ``ratios`` closest to ``size``.

    ``size`` may be a WxH ("832x1216" -> "2:3") or already a ratio ("16:9", kept when listed).
    Closeness is measured on the log of the ratio, so 2:1 is as far from 1:1 as 1:2 is.
    Raises ConfigError for a size that is neither.
    """
    if not ratios:
        raise ConfigError("no aspect ratios to choose from")
    text = size.strip()
    if _RATIO.match(text):
        if text.replace(" ", "") in ratios:
            return text.replace(" ", "")
        wanted = _ratio(text)
    else:
        parsed = parse_wxh(text)
        if parsed is None:
            raise ConfigError(f"[image] size {size!r} is not WIDTHxHEIGHT or W:H (e.g. 832x1216)")
        wanted = parsed[0] / parsed[1]
    return min(ratios, key=lambda r: abs(math.log(_ratio(r)) - math.log(wanted)))


def batches(n: int, max_per_call: int) -> list[int]:
    """How many images each call asks for so that ``n`` are made: ``batches(5, 2) == [2, 2, 1]``."""
    per_call = max(1, max_per_call)
    full, rest = divmod(max(0, n), per_call)
    return [per_call] * full + ([rest] if rest else [])
