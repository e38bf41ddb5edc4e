"""The simulated ST writer is faithful: it re-saves real client-saved chats byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.stsim import IntegrityRefusedError, STSim, js_stringify, texts_of

FIXTURES = Path(__file__).parent.parent / "fixtures"

# Chats whose last writer was the real web client (tests/fixtures/README.md).
CLIENT_SAVED = [
    ("1.12", "st-1.12/default-user/chats/Alice/Alice - 2026-11-23@20h55m47s.jsonl", False),
    ("1.12", "st-1.12/default-user/chats/Bob/Bob - 2026-11-23@20h55m52s.jsonl", False),
    ("1.12", "st-1.12/default-user/chats/Bob/Bob - 2026-11-22@20h55m47s.jsonl", False),
    ("1.12", "st-1.12/default-user/group chats/2026-11-23@22h55m48s.jsonl", True),
    ("1.14", "st-1.14/default-user/chats/Alice/Alice - 2026-11-23@20h53m10s.jsonl", False),
    ("1.14", "st-1.14/default-user/chats/Bob/Bob - 2026-11-23@20h53m15s.jsonl", False),
    ("1.14", "st-1.14/default-user/chats/Bob/Bob - 2026-11-22@20h53m10s.jsonl", False),
    ("1.14", "st-1.14/default-user/group chats/2026-11-23@22h53m10s.jsonl", True),
    ("1.18", "st-1.18/default-user/chats/Bob/Bob - 2026-11-23@21h30m28s969ms.jsonl", False),
    ("1.18", "st-1.18/default-user/group chats/1795473024643.jsonl", True),
]


@pytest.mark.parametrize(("version", "rel", "group"), CLIENT_SAVED)
def test_resaving_a_client_saved_chat_is_byte_identical(
    tmp_path: Path, version: str, rel: str, group: bool
) -> None:
    original = (FIXTURES / rel).read_bytes()
    path = tmp_path / Path(rel).name
    path.write_bytes(original)
    tab = STSim.open(path, version=version, group=group)
    assert tab.serialize() == original
    inode = path.stat().st_ino
    tab.save()
    assert path.read_bytes() == original
    assert path.stat().st_ino != inode  # a rename, like write-file-atomic


def test_loading_an_api_written_chat_changes_it_like_the_browser(tmp_path: Path) -> None:
    rel = "st-1.18/default-user/chats/Bob/Bob - 2026-11-22@21h30m23s969ms.jsonl"
    path = tmp_path / "bob.jsonl"
    path.write_bytes((FIXTURES / rel).read_bytes())
    STSim.open(path).save()
    lines = [json.loads(line) for line in path.read_bytes().split(b"\n")]
    for message in lines[1:]:
        if not message["is_user"]:
            assert message["swipes"] == [message["mes"]] and message["swipe_id"] == 0
            assert message["swipe_info"][0]["extra"] == message["extra"]
    legacy = lines[3]["extra"]  # the legacy image line (§5.3): image dropped, media appended
    assert "image" not in legacy
    assert legacy["media"] == [
        {"type": "image", "url": "/user/images/Bob/Bob_2026-11-23@22h30m24s562ms.png"}
    ]
    assert list(legacy)[-1] == "media" and legacy["inline_image"] is False


def test_save_mechanics(tmp_path: Path) -> None:
    path = tmp_path / "Alice - x.jsonl"
    tab = STSim.create(path)
    path.chmod(0o600)
    seen: list[list[str]] = []
    tab.before_rename = lambda data: seen.append(sorted(p.name for p in tmp_path.iterdir()))
    tab.send_user("hi").save()
    assert len(seen) == 1
    temp = [n for n in seen[0] if n != path.name]
    assert len(temp) == 1 and re.fullmatch(r"Alice - x\.jsonl\.\d+", temp[0])
    assert int(temp[0].rsplit(".", 1)[1]) < 2**32
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert path.stat().st_mode & 0o777 == 0o600
    data = path.read_bytes()
    assert not data.endswith(b"\n") and data.count(b"\n") == 2


def test_save_follows_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    link = tmp_path / "link.jsonl"
    STSim.create(real)
    link.symlink_to(real)
    STSim.open(link).narrator("via link").save()
    assert link.is_symlink()
    assert texts_of(real)[-1] == "via link"


def test_integrity_check_like_the_server(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path)
    other = STSim.create(tmp_path / "d.jsonl")
    path.write_bytes((tmp_path / "d.jsonl").read_bytes())  # replaced by another chat
    before = path.read_bytes()
    with pytest.raises(IntegrityRefusedError, match="integrity"):
        tab.send_user("lost").save()
    assert path.read_bytes() == before
    tab.save(force=True)  # the user typed OVERWRITE
    assert texts_of(path)[-1] == "lost"
    assert other.integrity != tab.integrity
    # 1.12.6 and pre-1.15 group chats have no slug and no check.
    old = STSim.create(tmp_path / "old.jsonl", version="1.12")
    assert old.integrity is None and "integrity" not in (tmp_path / "old.jsonl").read_text()
    group = STSim.create(tmp_path / "g.jsonl", version="1.14", group=True)
    group.reply("Bob", "hi").save()
    assert json.loads((tmp_path / "g.jsonl").read_bytes().split(b"\n")[0])["is_group"] is True


def test_js_stringify_matches_json_stringify() -> None:
    assert js_stringify({"a": "\ud83d", "b": "\ud83d\ude00", "c": "\u2028é"}) == (
        '{"a":"\\ud83d","b":"😀","c":"\u2028é"}'
    )
    assert js_stringify([1.0, 1.5, float("nan"), float("inf"), 2**60]) == (
        "[1,1.5,null,null,1152921504606846976]"
    )
    assert js_stringify({"q": 'say "hi"\n\t\\'}) == '{"q":"say \\"hi\\"\\n\\t\\\\"}'


def test_load_drops_bad_lines_like_st(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    STSim.create(path).send_user("kept").save()
    path.write_bytes(path.read_bytes() + b"\n{broken\n\xff\xfe")
    tab = STSim.open(path)
    assert tab.texts() == ["Hello there, User.", "kept"]
    tab.save()
    assert b"broken" not in path.read_bytes()


def test_actions_shape_messages_like_st(tmp_path: Path) -> None:
    tab = STSim.create(tmp_path / "c.jsonl")
    tab.send_user("hi").reply("Alice", "one")
    user, reply = tab.messages[-2], tab.messages[-1]
    assert user["extra"]["reasoning"] == ""  # saveReply
    assert "is_system" not in reply and reply["gen_started"] < reply["gen_finished"]
    assert reply["swipe_info"][0]["gen_started"] == reply["gen_started"]
    first_date = reply["send_date"]

    tab.swipe("two")
    assert reply["swipes"] == ["one", "two"] and reply["swipe_id"] == 1
    assert reply["mes"] == "two" and reply["send_date"] != first_date
    assert len(reply["swipe_info"]) == 2
    tab.swipe_to(0)
    assert reply["mes"] == "one" and reply["send_date"] == first_date
    tab.continue_(" more")
    assert reply["mes"] == "one more" and reply["swipes"][0] == "one more"
    tab.edit(-1, "edited")
    assert reply["mes"] == "edited" and reply["swipes"][0] == "edited"

    tab.hide()
    assert reply["is_system"] is True
    tab.unhide()
    assert tab.messages[-1]["is_system"] is False
    tab.regenerate("again")
    assert tab.texts()[-1] == "again" and len(tab.messages) == 3
    tab.narrator("rain")
    narrator = tab.messages[-1]
    assert narrator["is_system"] == "" and narrator["extra"]["type"] == "narrator"
    assert narrator["swipes"] == ["rain"]
    tab.delete(-1)
    assert tab.texts()[-1] == "again"
    tab.set_metadata(note_prompt="note")
    tab.save()
    header = json.loads((tmp_path / "c.jsonl").read_bytes().split(b"\n")[0])
    assert header["chat_metadata"]["note_prompt"] == "note"
    assert header["user_name"] == "unused"


def test_group_replies_and_legacy_dates(tmp_path: Path) -> None:
    tab = STSim.create(tmp_path / "g.jsonl", group=True)
    tab.reply("Bob", "hi", avatar="Bob1.png")
    bob = tab.messages[-1]
    assert bob["force_avatar"] == "/thumbnail?type=avatar&file=Bob1.png"
    assert bob["original_avatar"] == "Bob1.png"
    assert isinstance(bob["extra"]["gen_id"], int)
    assert bob["send_date"].endswith("Z")
    legacy = STSim.create(tmp_path / "l.jsonl", version="1.14")
    legacy.reply("Alice", "x")
    assert re.fullmatch(
        r"[A-Z][a-z]+ \d{1,2}, \d{4} \d{1,2}:\d{2}(am|pm)", legacy.messages[-1]["send_date"]
    )
    header = json.loads(legacy.serialize().split(b"\n")[0])
    assert list(header) == ["user_name", "character_name", "create_date", "chat_metadata"]


def test_stale_tab_only_knows_its_memory(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    tab = STSim.create(path)
    other = STSim.open(path)
    other.send_user("from the other tab").save()
    tab.narrator("stale save").save()
    assert "from the other tab" not in texts_of(path)
    assert path.exists()
