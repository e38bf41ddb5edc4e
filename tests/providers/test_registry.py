"""The backend registry and the capability records: plain data, and what drives a request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from daemon.config import ImageSettings
from daemon.errors import ConfigError
from daemon.providers.capabilities import (
    COMMON_ASPECT_RATIOS,
    Capabilities,
    SizeMode,
    batches,
    nearest_aspect_ratio,
)
from daemon.providers.images import build_body
from daemon.providers.profiles import resolve_profile
from daemon.providers.registry import (
    BACKENDS,
    backend_info,
    capabilities,
    check_settings,
    describe,
    image_api_url,
    make_backend,
)


def test_every_backend_describes_itself_as_json() -> None:
    described = describe()
    assert [d["name"] for d in described] == list(BACKENDS)
    text = json.dumps(described)  # plain data: a settings page can serve it as is
    for entry in json.loads(text):
        caps = entry["capabilities"]
        assert set(caps) >= {"size_mode", "max_n_per_call", "negative_prompt", "seed", "cost"}
        assert entry["url_hint"] and entry["title"]
        for preset in entry["presets"]:
            assert "api_key" not in preset["image"]  # presets never carry a key


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ("1024x1024", "1:1"),
        ("832x1216", "2:3"),
        ("1216x832", "3:2"),
        ("1920x1080", "16:9"),
        ("1080x1920", "9:16"),
        ("2560x1080", "21:9"),
        ("1024x768", "4:3"),
        ("16:9", "16:9"),
        ("7:4", "16:9"),  # not listed: the nearest listed one
    ],
)
def test_a_wxh_maps_to_the_nearest_aspect_ratio(size: str, ratio: str) -> None:
    assert nearest_aspect_ratio(size, COMMON_ASPECT_RATIOS) == ratio


def test_a_size_that_is_no_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        nearest_aspect_ratio("big")


@pytest.mark.parametrize(
    ("n", "per_call", "calls"),
    [(1, 1, [1]), (3, 1, [1, 1, 1]), (5, 2, [2, 2, 1]), (4, 10, [4]), (0, 3, [])],
)
def test_n_becomes_calls_of_at_most_the_per_call_limit(
    n: int, per_call: int, calls: list[int]
) -> None:
    assert batches(n, per_call) == calls


def test_capabilities_follow_the_configured_profile() -> None:
    dalle3 = capabilities(ImageSettings(profile="openai", model="dall-e-3"))
    assert dalle3.max_n_per_call == 1 and not dalle3.negative_prompt
    gpt_image = capabilities(ImageSettings(profile="openai", model="gpt-image-1"))
    assert gpt_image.max_references > 0
    xai = capabilities(ImageSettings(profile="xai"))
    assert xai.size_mode is SizeMode.ASPECT and "16:9" in xai.aspect_ratios
    local = capabilities(ImageSettings(backend="a1111"))
    assert local.seed and local.steps and local.progress and local.cost.value == "free"
    assert isinstance(capabilities(ImageSettings(backend="comfyui")), Capabilities)


def test_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: .*a1111.*comfyui"):
        backend_info("dalle-local")
    with pytest.raises(ConfigError, match="not known"):
        make_backend(ImageSettings(backend="nope"), httpx.AsyncClient())


def test_a_section_for_no_backend_is_refused() -> None:
    settings = ImageSettings.model_validate({"backend": "openai", "nosuch": {"a": 1}})
    with pytest.raises(ConfigError, match=r"unknown key 'image\.nosuch'"):
        check_settings(settings)


def test_a_scalar_unknown_key_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match=r"unknown key 'image\.sizes'"):
        ImageSettings.model_validate({"sizes": 1})


def _body(**settings: Any) -> dict[str, Any]:
    image = ImageSettings(**settings)
    return build_body(image, resolve_profile(image), "a cat", "blurry", image.n)


def test_presets_shape_the_request() -> None:
    together = _body(api_url="https://api.together.xyz/v1", size="1024x768", model="flux")
    assert together["width"] == 1024 and together["height"] == 768 and "size" not in together
    assert together["response_format"] == "base64" and together["negative_prompt"] == "blurry"
    xai = _body(profile="xai", size="1920x1080", model="grok-imagine-image")
    assert xai["aspect_ratio"] == "16:9" and "size" not in xai
    assert xai["response_format"] == "b64_json" and "negative_prompt" not in xai
    nano = _body(api_url="https://nano-gpt.com/v1", response_format="url")
    assert nano["response_format"] == "b64_json"  # its URLs expire: never asked for
    assert _body(profile="pollinations")["response_format"] == "b64_json"


def test_a_preset_without_an_api_url_uses_its_service() -> None:
    assert image_api_url(ImageSettings(backend="a1111")) == "http://127.0.0.1:7860"
    built = make_backend(ImageSettings(profile="pollinations"), httpx.AsyncClient())
    assert "gen.pollinations.ai/v1/images/generations" in repr(built)
