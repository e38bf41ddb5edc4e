"""Styles: shipped and configured ones, and which one a job gets (chat > character > default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.engine.look.appearance import CharacterStore
from daemon.engine.look.consistency import plan_look
from daemon.engine.look.styles import SHIPPED, all_styles, check_style, choose
from daemon.errors import ConfigError
from tests.engine.looks import config_with, job_of, write_card

CHAT = "default-user/chats/alice/alice - 1.jsonl"
OTHER = "default-user/chats/alice/alice - 2.jsonl"

STYLES = """default_style = "painterly"
[styles.anime]
prefix = "my anime"
size = "832x1216"
[styles.noir]
prefix = "film noir"
negative = "color"
model = "noir-xl"
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "default-user" / "chats").mkdir(parents=True)
    return root


def test_shipped_styles_and_overrides(tmp_path: Path, root: Path) -> None:
    assert {"anime", "painterly", "photographic"} <= set(SHIPPED)
    config = config_with(tmp_path, root, STYLES)
    styles = all_styles(config)
    assert styles["anime"].prefix == "my anime" and styles["anime"].size == "832x1216"
    assert styles["photographic"] == SHIPPED["photographic"]
    assert styles["noir"].model == "noir-xl"
    assert check_style(config, " Noir ") == "noir"
    assert check_style(config, "none") == "none"
    with pytest.raises(ConfigError, match=r"no style 'vapor'.*anime"):
        check_style(config, "vapor")


def test_chat_over_character_over_default(tmp_path: Path, root: Path) -> None:
    config = config_with(tmp_path, root, STYLES)
    store = CharacterStore(config.state_dir)
    who = ("alice", "Alice")
    got = choose(config, store, chat=CHAT, characters=who)
    assert (got.name, got.source) == ("painterly", "default")
    store.update("Alice", style="noir")
    got = choose(config, store, chat=CHAT, characters=who)
    assert (got.name, got.source) == ("noir", "character")
    store.set_chat_style(CHAT, "anime")
    got = choose(config, store, chat=CHAT, characters=who)
    assert (got.name, got.source) == ("anime", "chat")
    # Another chat of the same character keeps the character's style.
    assert choose(config, store, chat=OTHER, characters=who).name == "noir"
    # "none" turns styles off for that chat.
    store.set_chat_style(CHAT, "none")
    got = choose(config, store, chat=CHAT, characters=who)
    assert (got.style, got.source) == (None, "chat")
    store.set_chat_style(CHAT, None)
    assert choose(config, store, chat=CHAT, characters=who).name == "noir"


def test_a_choice_of_a_removed_style_falls_through(tmp_path: Path, root: Path) -> None:
    config = config_with(tmp_path, root, STYLES)
    store = CharacterStore(config.state_dir)
    store.set_chat_style(CHAT, "gone")
    got = choose(config, store, chat=CHAT, characters=("alice",))
    assert (got.name, got.source) == ("painterly", "default")
    plain = config_with(tmp_path, root)
    assert choose(plain, store, chat=OTHER, characters=("alice",)).style is None


def test_the_job_meta_carries_the_style_size_and_model(tmp_path: Path, root: Path) -> None:
    write_card(root, "alice", "Alice", positive="silver hair")
    config = config_with(tmp_path, root, STYLES)
    CharacterStore(config.state_dir).set_chat_style(CHAT, "noir")
    look = plan_look(job_of(CHAT), "Alice smiles.", config, root)
    assert look.meta()["style"] == "noir" and look.meta()["style_model"] == "noir-xl"
    fields = look.prompt_fields()
    assert fields["style_prefix"] == "film noir" and fields["negative"] == "color"
    assert fields["appearance"] == (("Alice", "silver hair"),)


def test_an_unknown_default_style_is_refused_at_start_and_by_doctor(
    tmp_path: Path, root: Path
) -> None:
    import anyio

    from daemon.doctor import check_config
    from daemon.engine.look.styles import check_default_style
    from daemon.engine.process.service import serve

    config = config_with(tmp_path, root, 'default_style = "noir-typo"\n')
    with pytest.raises(ConfigError, match=r"default_style: no style 'noir-typo'.*painterly"):
        check_default_style(config)
    result = check_config(config)
    assert result.status == "FAIL" and "noir-typo" in result.detail
    with pytest.raises(ConfigError, match="default_style"):
        anyio.run(serve, config)  # before anything starts
    assert not (tmp_path / "state" / "state.db").exists()
    check_default_style(config_with(tmp_path, root, 'default_style = "Painterly"\n'))
