"""doctor with the hosted image backends: each one's own free check proves the key, a bad key
names the key to fix (never showing it), an unknown backend or section is a clear FAIL, and
NovelAI's account line says what it may render."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from tests.ops.fakeapi import FakeAPI, fake_api
from tests.ops.test_doctor_backends import _config, _doctor, _line
from tests.providers.fake_gemini import FakeGemini
from tests.providers.fake_novelai import FakeNovelAI
from tests.providers.fake_openrouter import FakeOpenRouter
from tests.providers.fake_queues import FakeHorde
from tests.providers.fake_service import serve


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with fake_api() as served:
        yield served


def test_openrouter_key_and_model(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    with serve(FakeOpenRouter()) as fake:
        image: dict[str, Any] = {
            "backend": "openrouter",
            "api_url": fake.url + "/api/v1",
            "api_key": fake.key,
            "model": "google/gemini-2.5-flash-image",
        }
        code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
        assert code == 0, output
        assert _line(output, "image API").startswith("PASS")
        assert fake.seen("GET", "/api/v1/key") and not fake.seen("POST", "/api/v1/images")
        image["api_key"] = "sk-or-v1-revoked-key"
        code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
        assert code == 1 and "api_key" in output and "revoked" not in output


def test_gemini_unknown_model_fails(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    with serve(FakeGemini()) as fake:
        image = {
            "backend": "gemini",
            "api_url": fake.url + "/v1beta",
            "api_key": fake.key,
            "model": "gemini-9-ultra-image",
        }
        code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
        assert code == 1 and _line(output, "image API").startswith("FAIL")


def test_novelai_and_horde_pass(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    with serve(FakeNovelAI()) as nai, serve(FakeHorde()) as horde:
        # NovelAI's account API lives on another host; the fake serves both.
        _config(
            tmp_path,
            st_root_latest,
            api,
            {"backend": "novelai", "api_url": nai.url, "api_key": nai.key},
        )
        config_file = tmp_path / "config.toml"
        config_file.write_text(
            config_file.read_text() + f'[image.novelai]\naccount_url = "{nai.url}"\n'
        )
        code, output = _doctor(load_config(config_file, environ={}))
        assert code == 0, output
        assert "10000 Anlas" in _line(output, "image API")
        image = {"backend": "horde", "api_url": horde.url + "/api"}
        code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
        assert code == 0, output
        assert horde.seen("GET", "/api/v2/find_user")


def test_an_unknown_backend_or_section(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    code, output = _doctor(_config(tmp_path, st_root_latest, api, {"backend": "midjourney"}))
    assert code == 1 and "known:" in _line(output, "image API")
    config_file = tmp_path / "config.toml"
    _config(tmp_path, st_root_latest, api, {"backend": "openrouter"})
    config_file.write_text(config_file.read_text() + "[image.openroutr]\nendpoint = 'chat'\n")
    code, output = _doctor(load_config(config_file, environ={}))
    assert code == 1 and "image.openroutr" in _line(output, "image API")


def test_spend_line_names_the_price_the_caps_count(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI
) -> None:
    from daemon.doctor import check_spend

    config = _config(tmp_path, st_root_latest, api, {"model": "gpt-image-1", "profile": "openai"})
    result = check_spend(config)
    assert result is not None and result.status == "PASS" and "0.042 USD" in result.detail
    config_file = tmp_path / "config.toml"
    _config(tmp_path, st_root_latest, api, {"model": "mystery-model"})
    config_file.write_text(config_file.read_text() + "[limits]\ndaily_budget = 2.0\n")
    capped = check_spend(load_config(config_file, environ={}))
    assert capped is not None and capped.status == "WARN" and "[prices]" in capped.fix
    config_file.write_text(config_file.read_text() + '[prices]\n"mystery-model" = 0.07\n')
    priced = check_spend(load_config(config_file, environ={}))
    assert priced is not None and "0.070 USD per image (config)" in priced.detail
    local = _config(tmp_path, st_root_latest, api, {"backend": "a1111"})
    assert check_spend(local) is None  # no cap, nothing paid: nothing to say
