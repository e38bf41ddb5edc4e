"""The style catalogue: the shipped styles, the config's own, and the checks of a style name.

Part of the configuration (the config's ``[styles.*]`` and ``default_style`` are validated with
it wherever a config is loaded or written); which style a job gets is the engine's
(:mod:`daemon.engine.look.styles`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from daemon.config import Config, StyleSettings
from daemon.errors import ConfigError

__all__ = [
    "NO_STYLE",
    "SHIPPED",
    "Style",
    "all_styles",
    "check_default_style",
    "check_style",
]

NO_STYLE = "none"


@dataclass(frozen=True, slots=True)
class Style:
    name: str
    prefix: str = ""
    suffix: str = ""
    negative: str = ""
    size: str = ""
    model: str = ""

    @classmethod
    def of(cls, name: str, settings: StyleSettings) -> Style:
        return cls(
            name=name,
            prefix=settings.prefix.strip(),
            suffix=settings.suffix.strip(),
            negative=settings.negative.strip(),
            size=settings.size.strip(),
            model=settings.model.strip(),
        )


_COMMON_NEGATIVE = "lowres, blurry, bad anatomy, extra fingers, watermark, signature, text"

SHIPPED: Mapping[str, Style] = MappingProxyType(
    {
        s.name: s
        for s in (
            Style(
                "anime",
                prefix="anime style, cel shading, clean lineart, vibrant colors",
                suffix="detailed background, masterpiece, best quality",
                negative=f"photo, realistic, 3d render, {_COMMON_NEGATIVE}",
            ),
            Style(
                "painterly",
                prefix="digital painting, painterly brushstrokes, rich colors",
                suffix="dramatic lighting, concept art, artstation",
                negative=f"photo, flat colors, {_COMMON_NEGATIVE}",
            ),
            Style(
                "photographic",
                prefix="photograph, realistic, natural skin texture",
                suffix="35mm lens, soft natural light, shallow depth of field, high detail",
                negative=f"anime, cartoon, illustration, painting, drawing, {_COMMON_NEGATIVE}",
            ),
            Style(
                "watercolor",
                prefix="watercolor illustration, soft washes, paper texture",
                suffix="delicate linework, pastel palette",
                negative=f"photo, 3d render, harsh shadows, {_COMMON_NEGATIVE}",
            ),
            Style(
                "comic",
                prefix="comic book art, bold ink outlines, halftone shading",
                suffix="dynamic composition, vivid flat colors",
                negative=f"photo, realistic, blurry, {_COMMON_NEGATIVE}",
            ),
            Style(
                "pixel-art",
                prefix="pixel art, 16-bit, limited palette",
                suffix="crisp pixels, retro game scene",
                negative=f"photo, realistic, smooth gradients, {_COMMON_NEGATIVE}",
            ),
        )
    }
)


def all_styles(config: Config) -> dict[str, Style]:
    """Shipped styles overlaid with the config's, by name."""
    styles = dict(SHIPPED)
    for name, settings in config.styles.items():
        styles[name.strip().lower()] = Style.of(name.strip().lower(), settings)
    return styles


def check_default_style(config: Config) -> None:
    """ConfigError when ``default_style`` names no style (jobs would silently get none)."""
    if config.default_style.strip():
        try:
            check_style(config, config.default_style)
        except ConfigError as exc:
            raise ConfigError(f"default_style: {exc}") from None


def check_style(config: Config, name: str) -> str:
    """``name`` normalised, or ConfigError listing the styles there are."""
    wanted = name.strip().lower()
    if wanted == NO_STYLE or wanted in all_styles(config):
        return wanted
    known = ", ".join(sorted(all_styles(config)))
    raise ConfigError(f"no style {name!r}: the styles are {known} (or {NO_STYLE})")
