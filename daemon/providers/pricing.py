"""What an image costs: the price a service reported, or an estimate from a per-model price.

:data:`SHIPPED_PRICES` are estimates of list prices in USD for one image of about 1024x1024 at
the default quality (late 2026), labelled as estimates wherever they are shown; ``[prices]`` in
the config adds to or overrides them. A backend whose capability record says its images are free
(a local server, AI Horde) costs nothing in USD; a price a service reports (OpenRouter's
``usage.cost``) wins over any estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from daemon.config import ImageSettings
from daemon.providers.capabilities import CostReport
from daemon.providers.decode import GeneratedImage
from daemon.providers.registry import backend_info, capabilities

__all__ = ["SHIPPED_PRICES", "Charge", "Price", "charge_for", "price_per_image"]

SHIPPED_PRICES: Mapping[str, float] = MappingProxyType(
    {
        "gpt-image-1": 0.042,
        "gpt-image-1-mini": 0.011,
        "gpt-image-1.5": 0.034,
        "dall-e-3": 0.04,
        "dall-e-2": 0.02,
        "gemini-2.5-flash-image": 0.039,
        "gemini-2.5-flash-image-preview": 0.039,
        "gemini-3-pro-image-preview": 0.134,
        "gemini-3.1-flash-image-preview": 0.045,
        "imagen-4.0-fast-generate-001": 0.02,
        "imagen-4.0-generate-001": 0.04,
        "grok-imagine-image": 0.02,
        "flux-2-klein": 0.014,
        "fal-ai/flux/schnell": 0.003,
        "fal-ai/flux/dev": 0.025,
        "black-forest-labs/flux.1-schnell": 0.003,
        "black-forest-labs/flux-1-schnell": 0.003,
        "black-forest-labs/flux.2-pro": 0.03,
        "seedream-4.5": 0.04,
        "nai-diffusion-4-5-full": 0.0,  # within an Opus subscription (free_only)
        "nai-diffusion-4-5-curated": 0.0,
    }
)
"""Estimated USD per image, by model id (a provider prefix such as ``google/`` is ignored)."""


@dataclass(frozen=True)
class Price:
    """The USD price of one image, and where it comes from."""

    usd: float
    source: str  # "free" | "config" | "shipped estimate" | "unknown"

    @property
    def known(self) -> bool:
        return self.source != "unknown"


def price_per_image(
    settings: ImageSettings, model: str, overrides: Mapping[str, float] | None = None
) -> Price:
    """What one image of ``model`` costs on the configured backend (an estimate)."""
    caps = capabilities(settings)
    if caps.cost is CostReport.FREE or (
        caps.cost is CostReport.REPORTED and caps.cost_unit != "USD"
    ):
        return Price(0.0, "free")  # a local server, or paid in the service's own unit (kudos)
    model = model or settings.model or backend_info(settings.backend).default_model
    names = [model, model.rsplit("/", 1)[-1]] if model else []
    for table, source in ((overrides or {}, "config"), (SHIPPED_PRICES, "shipped estimate")):
        for name in names:
            if name in table:
                return Price(float(table[name]), source)
            lowered = name.lower()
            if lowered in table:
                return Price(float(table[lowered]), source)
    return Price(0.0, "unknown")


@dataclass(frozen=True)
class Charge:
    """What one image call cost: USD (reported or estimated) and any other units."""

    usd: float
    images: int
    estimated: bool
    units: Mapping[str, float] = field(default_factory=dict)  # "kudos": 12.0

    def describe(self) -> str:
        text = f"{self.usd:.4f} USD" + (" (estimate)" if self.estimated else "")
        for unit, amount in self.units.items():
            text += f", {amount:g} {unit}"
        return text


def charge_for(images: Sequence[GeneratedImage], price: Price) -> Charge:
    """The charge for ``images``: their reported USD cost if the service gave one, else the
    price estimate; costs in other units (kudos) are kept apart."""
    reported = [i.cost for i in images if i.cost is not None and i.cost_unit == "USD"]
    units: dict[str, float] = {}
    for image in images:
        if image.cost is not None and image.cost_unit != "USD":
            units[image.cost_unit] = units.get(image.cost_unit, 0.0) + image.cost
    if reported:
        return Charge(sum(reported), len(images), False, units)
    return Charge(price.usd * len(images), len(images), price.source != "free", units)
