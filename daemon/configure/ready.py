"""Is the daemon set up? What is missing before a job can run."""

from __future__ import annotations

from daemon.config import Config, ImageSettings
from daemon.errors import ConfigError

__all__ = ["image_url", "setup_missing"]


def image_url(image: ImageSettings) -> str:
    """Where images will be asked for: ``[image] api_url``, else the chosen backend's or
    profile's own address (a preset's service, a local server's usual port); "" when none."""
    from daemon.providers.profiles import resolve_profile
    from daemon.providers.registry import image_api_url

    try:
        return image_api_url(image) or resolve_profile(image).default_url
    except (ConfigError, KeyError):
        return ""


def setup_missing(config: Config) -> list[str]:
    """What still has to be set up (empty: ready): the image service, and the prompt writer
    when it is an LLM."""
    missing = []
    if not image_url(config.image):
        missing.append("image service")
    if config.text.mode == "llm" and not config.text.api_url.strip():
        missing.append("prompt writer")
    return missing
