"""The safe writer: round-trip, checked before writing, secrets in key files, env pinning;
and the `config` commands built on it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from daemon.cli.commands import config_example, main
from daemon.config import ConfigSource, load_config
from daemon.configure.keys import mask
from daemon.configure.writer import ConfigWriter, coerce
from daemon.errors import ConfigError

HAND_WRITTEN = """\
# my setup, written by hand
data_root = "/srv/st"   # the ST folder

[image]
# I like this one
model = "dall-e-3"
future_key_of_a_newer_version = 1

[styles.noir]
prefix = "film noir"  # moody
"""


def source(path: Path, **env: str) -> ConfigSource:
    return ConfigSource.find(path, environ=env)


def test_changes_keep_comments_order_and_unknown_text(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN.replace("future_key_of_a_newer_version = 1\n", ""))
    ConfigWriter(source(path)).apply(
        {"image.model": "gpt-image-1", "mode": "manual", "styles.noir.suffix": "grain"}
    )
    text = path.read_text(encoding="utf-8")
    assert "# my setup, written by hand" in text and "# I like this one" in text
    assert '"/srv/st"   # the ST folder' in text and 'prefix = "film noir"  # moody' in text
    assert 'model = "gpt-image-1"' in text and 'suffix = "grain"' in text
    assert text.index("mode") < text.index("[image]")  # a top-level key stays top level
    loaded = load_config(path, environ={})
    assert loaded.mode == "manual" and loaded.styles["noir"].suffix == "grain"


def test_an_invalid_value_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN.replace("future_key_of_a_newer_version = 1\n", ""))
    before = path.read_bytes()
    writer = ConfigWriter(source(path))
    for change in ({"image.n": 99}, {"mode": "sometimes"}, {"default_style": "nope"}):
        with pytest.raises(ConfigError):
            writer.apply(change)
    with pytest.raises(ConfigError, match="unknown key"):
        writer.apply({"image.colour": "red"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temp file left


def test_a_file_with_an_unknown_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN)
    with pytest.raises(ConfigError) as caught:
        ConfigWriter(source(path)).apply({"mode": "manual"})
    assert "image.future_key_of_a_newer_version" in str(caught.value)
    with pytest.raises(ConfigError) as loaded:
        load_config(path, environ={})
    assert loaded.value.line == 7 and "(line 7)" in str(loaded.value)


def test_secrets_go_to_a_0600_key_file_never_into_the_toml(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.toml"
    key = "sk-test-0123456789abcdefWXYZ"
    change = ConfigWriter(source(path)).apply(
        {"image.api_url": "https://api.example.com/v1"}, secrets_given={"image.api_key": key}
    )
    text = path.read_text(encoding="utf-8")
    assert key not in text and "api_key_file" in text
    key_file = Path(load_config(path, environ={}).image.api_key_file or "")
    assert key_file.is_absolute() and key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert change.config.image.api_key.get_secret_value() == key
    assert mask(change.config.image.api_key) == {"set": True, "last4": "WXYZ"}
    # cleared: the file goes, the key is not set
    ConfigWriter(source(path)).apply({}, secrets_given={"image.api_key": ""})
    assert not key_file.exists()
    assert load_config(path, environ={}).image.api_key.get_secret_value() == ""
    with pytest.raises(ConfigError, match="secret"):
        ConfigWriter(source(path)).apply({"image.api_key": key})


def test_settings_pinned_by_the_environment_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    pinned = source(path, ST_IMAGEGEN_IMAGE__MODEL="env-model", ST_IMAGEGEN_MODE="manual")
    assert pinned.pinned() == {
        "image.model": "ST_IMAGEGEN_IMAGE__MODEL",
        "mode": "ST_IMAGEGEN_MODE",
    }
    with pytest.raises(ConfigError, match="ST_IMAGEGEN_IMAGE__MODEL"):
        ConfigWriter(pinned).apply({"image.model": "other"})
    with pytest.raises(ConfigError, match="config file"):
        ConfigWriter(pinned).apply({"web.host": "0.0.0.0"})  # the page may not
    assert not path.exists()


def test_coerce_reads_text_keys_as_text_and_the_rest_as_toml() -> None:
    assert coerce("image.model", "1") == "1"
    assert coerce("image.n", "2") == 2
    assert coerce("detect.greetings", "true") is True
    assert coerce("detect.exclude_characters", '["Bob"]') == ["Bob"]
    assert coerce("mode", "manual") == "manual"
    with pytest.raises(ConfigError):
        coerce("image.nope", "1")


def test_config_example_takes_a_later_styles_table(tmp_path: Path) -> None:
    """The issue: appending the README's [styles.noir] to `config example` broke every
    command ("Cannot declare ('styles', 'noir') twice") because of a `styles = {}` line."""
    text = config_example()
    assert "styles = {}" not in text
    path = tmp_path / "config.toml"
    path.write_text(text + '\n[styles.noir]\nprefix = "film noir"\n', encoding="utf-8")
    assert load_config(path, environ={}).styles["noir"].prefix == "film noir"


def test_config_example_write_creates_the_folder_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new" / "folder" / "config.toml"
    assert main(["config", "example", "--write", "--config", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == config_example()
    path.write_text("# mine\n", encoding="utf-8")
    assert main(["config", "example", "--write", "--config", str(path)]) == 1
    assert "not overwritten" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == "# mine\n"


def test_config_set_and_get(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# keep me\n", encoding="utf-8")
    assert main(["config", "set", "image.model", "gpt-image-1", "--config", str(path)]) == 0
    assert main(["config", "set", "detect.every_nth", "3", "--config", str(path)]) == 0
    assert main(["config", "set", "web.port", "9000", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "restart to apply" in out
    assert main(["config", "set", "detect.every_nth", "zero", "--config", str(path)]) == 1
    assert "every_nth" in capsys.readouterr().err
    key = "sk-cli-secret-abcdefghijkl9876"
    assert main(["config", "set", "text.api_key", key, "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert key not in out and "9876" in out
    assert main(["config", "get", "detect.every_nth", "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "3"
    assert main(["config", "get", "text.api_key", "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "set (ends in 9876)"
    assert main(["config", "get", "image.nope", "--config", str(path)]) == 1
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# keep me\n") and key not in text
    assert json.dumps("gpt-image-1") in text


def test_a_toml_syntax_error_names_and_shows_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('mode = "auto"\n[image]\nmodel = "a\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.line == 3 and 'line 3 (model = "a)' in str(caught.value)


def test_a_chosen_style_that_no_longer_exists_is_said_not_silently_skipped(
    tmp_path: Path,
) -> None:
    from structlog.testing import capture_logs

    from daemon.config import Config
    from daemon.engine.look.appearance import CharacterStore
    from daemon.engine.look.styles import choose

    store = CharacterStore(tmp_path)
    store.update("Bob", style="noir")  # chosen while [styles.noir] existed
    with capture_logs() as logs:
        chosen = choose(Config(state_dir=tmp_path), store, chat="c.jsonl", characters=("Bob",))
    assert chosen.style is None
    record = logs[-1]
    assert record["event"] == "style not found: skipped" and record["style"] == "noir"
    assert "anime" in record["known"] and record["chosen_for"] == "character"


def test_the_settings_view_shows_pinned_keys_and_never_a_secret(tmp_path: Path) -> None:
    from daemon.configure.fields import settings_view

    key = "sk-view-test-abcdefghijklmnop-WXYZ"
    path = tmp_path / "config.toml"
    path.write_text("# empty\n", encoding="utf-8")
    pinned = source(path, ST_IMAGEGEN_IMAGE__MODEL="env-model", ST_IMAGEGEN_TEXT__API_KEY=key)
    view = settings_view(pinned.load(), pinned, backends=["openai"], styles=["anime"])
    fields = {f["key"]: f for g in view["groups"] for f in g["fields"]}
    assert fields["image.model"]["pinned_by"] == "ST_IMAGEGEN_IMAGE__MODEL"
    assert fields["image.model"]["value"] == "env-model"
    assert fields["text.api_key"]["pinned_by"] == "ST_IMAGEGEN_TEXT__API_KEY"
    assert fields["text.api_key"]["value"] == {"set": True, "last4": "WXYZ"}
    assert key not in json.dumps(view)
    advanced = {row["key"]: row for row in view["advanced"]}
    assert advanced["web.host"]["file_only"] and advanced["web.port"]["restart"]
