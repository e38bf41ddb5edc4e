from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.errors import ConfigError


def test_env_overrides_file_and_secrets_stay_secret(tmp_path: Path) -> None:
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text('mode = "auto"\n[image]\nmodel = "m1"\napi_key = "from-file"\n')
    cfg = load_config(
        cfg_file,
        environ={"ST_IMAGEGEN_IMAGE__MODEL": "m2", "ST_IMAGEGEN_DETECT__CATCHUP_MAX_AGE": "2h"},
    )
    assert cfg.image.model == "m2"
    assert cfg.detect.catchup_max_age == 7200.0
    assert cfg.image.api_key.get_secret_value() == "from-file"
    assert "from-file" not in repr(cfg)


def test_api_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-secret\n")
    cfg = load_config(_write(tmp_path, f'[text]\napi_key_file = "{key}"\n'), environ={})
    assert cfg.text.api_key.get_secret_value() == "sk-secret"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("bogus = 1\n", {}, "unknown key 'bogus'"),
        ("[image]\nsizes = 1\n", {}, "unknown key 'image.sizes'"),
        ("[text]\ntemperature = 3\n", {}, "text.temperature"),
        ("mode = 'sometimes'\n", {}, "mode"),
        ("", {"ST_IMAGEGEN_MODEE": "auto"}, "ST_IMAGEGEN_MODEE"),
        ("", {"ST_IMAGEGEN_LIMITS__CONCURRENCY": "0"}, "limits.concurrency"),
        ("[detect]\ncatchup_max_age = 'soon'\n", {}, "catchup_max_age"),
        ("this is = not toml [", {}, "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, text: str, env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ=env)
    assert needle in str(info.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})
