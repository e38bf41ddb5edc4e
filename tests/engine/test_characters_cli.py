"""``st-imagegen character ...`` and ``style ...`` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cli.commands import main
from daemon.engine.look.appearance import CharacterStore
from tests.engine.conftest import FakeAPI, config_toml, tiny_png
from tests.engine.looks import write_card


@pytest.fixture
def cfg(tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI) -> Path:
    write_card(st_root_latest, "Cara", "Cara", positive="blue hair, freckles", negative="red hair")
    text = config_toml(st_root_latest, tmp_path / "state", fake_api, {"default_style": "anime"})
    path = tmp_path / "config.toml"
    path.write_text(text + '[styles.noir]\nprefix = "film noir"\n', encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_character_set_list_show(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(cfg)
    code, out, _ = run(capsys, "character", "show", "cara", "--json", "--config", c)
    shown = json.loads(out)
    assert code == 0
    assert (shown["appearance"], shown["appearance_from"]) == ("blue hair, freckles", "card")
    assert (shown["negative"], shown["style"], shown["style_from"]) == (
        "red hair",
        "anime",
        "default",
    )
    assert shown["card"] == "default-user/characters/Cara.png"

    code, out, _ = run(
        capsys,
        "character",
        "set",
        "Cara",
        "--appearance",
        "green hair",
        "--style",
        "noir",
        "--config",
        c,
    )
    assert code == 0 and "green hair" in out and "style noir" in out
    shown = json.loads(run(capsys, "character", "show", "CARA", "--json", "--config", c)[1])
    assert (shown["appearance"], shown["appearance_from"]) == ("green hair", "profile")
    assert (shown["negative"], shown["negative_from"]) == ("red hair", "card")
    assert (shown["style"], shown["style_from"]) == ("noir", "character")

    code, out, _ = run(capsys, "character", "list", "--config", c)
    assert code == 0 and out.startswith("Cara: appearance 'green hair'")
    listed = json.loads(run(capsys, "character", "list", "--json", "--config", c)[1])
    assert listed == [{"name": "Cara", "appearance": "green hair", "style": "noir"}]

    code, _, err = run(capsys, "character", "set", "Cara", "--style", "vapor", "--config", c)
    assert code == 1 and "no style 'vapor'" in err
    code, _, err = run(capsys, "character", "set", "Cara", "--config", c)
    assert code == 1 and "nothing to set" in err


def test_style_use_for_a_chat_and_a_character(
    cfg: Path, st_root_latest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(cfg)
    code, out, err = run(capsys, "style", "use", "painterly", "--chat", "Alice", "--config", c)
    assert code == 0 and out.startswith("style painterly for chat default-user/chats/Alice/"), err
    code, out, _ = run(capsys, "style", "use", "noir", "--character", "Bob", "--config", c)
    assert code == 0 and out.strip() == "style noir for character Bob"
    store = CharacterStore(cfg.parent / "state")
    (rel,) = store.chat_choices()
    assert store.chat_style(rel) == "painterly"
    code, out, _ = run(capsys, "style", "list", "--config", c)
    assert code == 0
    assert "anime (default) [shipped]" in out and "noir [config]" in out
    assert f"used by  chat {rel}" in out and "used by  character Bob" in out
    code, out, _ = run(
        capsys, "style", "use", "painterly", "--chat", "Alice", "--clear", "--config", c
    )
    assert code == 0 and store.chat_style(rel) is None
    code, _, _ = run(capsys, "style", "use", "noir", "--config", c)
    assert code == 2  # --chat or --character is required


def test_character_ref_add_copies_a_checked_image(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = str(cfg)
    source = tmp_path / "portrait.png"
    source.write_bytes(tiny_png())
    code, out, _ = run(capsys, "character", "ref", "add", "Cara", str(source), "--config", c)
    assert code == 0 and "ref-1.png" in out
    source.unlink()  # the daemon keeps its own copy
    shown = json.loads(run(capsys, "character", "show", "Cara", "--json", "--config", c)[1])
    assert len(shown["references"]) == 1 and Path(shown["references"][0]).is_file()
    assert shown["use_references"] is False
    run(capsys, "character", "set", "Cara", "--references", "on", "--config", c)
    shown = json.loads(run(capsys, "character", "show", "Cara", "--json", "--config", c)[1])
    assert shown["use_references"] is True
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "character", "ref", "add", "Cara", str(bad), "--config", c)
    assert code == 1 and "not a usable image" in err
