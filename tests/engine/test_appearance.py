"""Appearance profiles: where a character's tags come from, group chats, the profile file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from daemon.engine.look.appearance import (
    CharacterStore,
    Member,
    looks_for_reply,
    mentions,
    resolve_look,
)
from daemon.engine.look.consistency import plan_look
from daemon.tavern import cards
from daemon.tavern.settings import avatar_of, persona_for
from tests.engine.looks import config_with, job_of, write_card, write_group, write_settings

CHAT = "default-user/chats/alice/alice - 1.jsonl"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "default-user" / "chats").mkdir(parents=True)
    return root


def card(root: Path, stem: str, name: str, **kw: str) -> cards.Card:
    return cards.read_card(write_card(root, stem, name, **kw))


def test_card_sd_character_prompt_is_read(root: Path) -> None:
    found = card(root, "alice", "Alice", positive="silver hair, red eyes", negative="short hair")
    assert cards.sd_character_prompt(found) == ("silver hair, red eyes", "short hair")
    assert cards.sd_character_prompt(card(root, "bob", "Bob")) == ("", "")


def test_order_profile_then_st_settings_then_card_then_nothing(root: Path, tmp_path: Path) -> None:
    store = CharacterStore(tmp_path / "state")
    alice = card(root, "alice", "Alice", positive="card tags", negative="card negative")
    settings = {"extension_settings": {"sd": {"character_prompts": {"alice": "settings tags"}}}}

    look = resolve_look("Alice", "alice", profile=None, card=alice)
    assert (look.tags, look.source, look.negative, look.negative_source) == (
        "card tags",
        "card",
        "card negative",
        "card",
    )
    look = resolve_look("Alice", "alice", profile=None, card=alice, st_settings=settings)
    assert (look.tags, look.source) == ("settings tags", "st-settings")
    # The ST settings have no negative: the card's still applies (field by field).
    assert (look.negative, look.negative_source) == ("card negative", "card")

    profile = store.update("ALICE", appearance="profile tags")
    look = resolve_look("Alice", "alice", profile=profile, card=alice, st_settings=settings)
    assert (look.tags, look.source) == ("profile tags", "profile")
    assert look.negative == "card negative"

    profile = store.update("alice", negative="profile negative")
    look = resolve_look("Alice", "alice", profile=profile, card=alice)
    assert (look.negative, look.negative_source) == ("profile negative", "profile")

    nothing = resolve_look("Bob", "bob", profile=None, card=card(root, "bob", "Bob"))
    assert (nothing.tags, nothing.negative, nothing.source) == ("", "", "none")


def test_profile_file_round_trip_and_clearing(tmp_path: Path) -> None:
    store = CharacterStore(tmp_path / "state")
    store.update("Seraphina", appearance="  pink hair,\n  amber eyes ", style="anime")
    again = CharacterStore(tmp_path / "state")
    found = again.get("nobody", "seraphina")
    assert found is not None
    assert (found.name, found.appearance, found.style) == (
        "Seraphina",
        "pink hair,\n  amber eyes",
        "anime",
    )
    store.update("seraphina", appearance="")
    cleared = store.get("Seraphina")
    assert cleared is not None and cleared.appearance is None and cleared.style == "anime"
    doc = json.loads((tmp_path / "state" / "characters.json").read_text())
    assert doc["characters"]["seraphina"] == {"name": "Seraphina", "style": "anime"}
    assert store.remove("SERAPHINA") and store.get("Seraphina") is None


def test_concurrent_updates_are_not_lost(tmp_path: Path) -> None:
    store = CharacterStore(tmp_path / "state")

    def write(n: int) -> None:
        CharacterStore(tmp_path / "state").update(f"char {n}", appearance=f"tags {n}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in store.profiles()) == sorted(f"char {n}" for n in range(12))


def test_a_broken_profile_file_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "characters.json").write_text("{not json")
    assert CharacterStore(tmp_path / "state").profiles() == []


def test_mentions_whole_words_and_first_names() -> None:
    assert mentions("She hands Bob the lamp.", "Bob")
    assert mentions("Marcus Aurelius nods.", "Marcus Aurelius")
    assert mentions("marcus nods.", "Marcus Aurelius")
    assert not mentions("Bobby waves.", "Bob")
    assert not mentions("anything", "")


def test_group_chat_speaker_first_then_named_members(root: Path, tmp_path: Path) -> None:
    store = CharacterStore(tmp_path / "state")
    members = [
        Member("alice", card(root, "alice", "Alice", positive="alice tags")),
        Member("bob", card(root, "bob", "Bob", positive="bob tags")),
        Member("carol", card(root, "carol", "Carol", positive="carol tags")),
    ]
    store.update("Carol", appearance="carol's own tags")
    looks = looks_for_reply(members, "Bob", "Bob turns to Carol and laughs.", store, solo=False)
    assert [(look.name, look.tags) for look in looks] == [
        ("Bob", "bob tags"),
        ("Carol", "carol's own tags"),
    ]
    # Alice is neither speaking nor named: her tags stay out.
    looks = looks_for_reply(members, "Alice", "The rain keeps falling.", store, solo=False)
    assert [look.name for look in looks] == ["Alice"]


def test_plan_look_for_a_group_reply(root: Path, tmp_path: Path) -> None:
    write_card(root, "alice", "Alice", positive="alice tags", negative="alice neg")
    write_card(root, "bob", "Bob", positive="bob tags")
    write_group(root, "g1", "g1 chat", ["alice.png", "bob.png"])
    config = config_with(tmp_path, root)
    job = job_of(
        "default-user/group chats/g1 chat.jsonl", character="g1", speaker="Bob", is_group=True
    )
    look = plan_look(job, "Bob waves at Alice.", config, root)
    fields = look.prompt_fields()
    assert fields["appearance"] == (("Bob", "bob tags"), ("Alice", "alice tags"))
    assert fields["negative"] == "alice neg"
    meta = look.meta()
    assert meta["appearance"][0] == {
        "name": "Bob",
        "tags": "bob tags",
        "negative": "",
        "from": "card",
    }
    assert meta["style"] == "" and meta["style_from"] == "none"


def test_persona_from_settings(root: Path, tmp_path: Path) -> None:
    settings = {
        "user_avatar": "me.png",
        "power_user": {
            "personas": {"me.png": "Rowan", "other.png": "Other"},
            "persona_descriptions": {"me.png": {"description": "Rowan is tall, red scarf."}},
        },
    }
    found = persona_for(settings)
    assert found is not None and (found.name, found.description) == (
        "Rowan",
        "Rowan is tall, red scarf.",
    )
    assert persona_for(settings, "other.png") is None  # no description: nothing to add
    assert avatar_of("/thumbnail?type=persona&file=me%20two.png") == "me two.png"
    assert avatar_of("User Avatars/me.png") == "me.png"

    write_card(root, "alice", "Alice", positive="alice tags")
    write_settings(root, settings)
    CharacterStore(tmp_path / "state").update("Rowan", appearance="rowan tags")
    config = config_with(tmp_path, root)
    job = job_of(CHAT)
    named = plan_look(job, "Alice hugs Rowan.", config, root)
    assert named.prompt_fields()["persona"] == "Rowan is tall, red scarf."
    assert named.prompt_fields()["appearance"] == (("Alice", "alice tags"), ("Rowan", "rowan tags"))
    assert named.prompt_fields()["user"] == "Rowan"
    alone = plan_look(job, "Alice waters the plants.", config, root)
    assert alone.prompt_fields()["persona"] == ""
    assert alone.prompt_fields()["appearance"] == (("Alice", "alice tags"),)
    always = config_with(tmp_path, root, '[text]\ninclude_persona = "always"\n')
    assert plan_look(job, "Alice waters the plants.", always, root).persona is not None
