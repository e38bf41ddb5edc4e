"""Data root layout: resolution, enumeration, path classification, names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.errors import NotADataRootError, UnsafePathError
from daemon.tavern.layout import (
    ChatRef,
    PathKind,
    card_path,
    classify,
    describe_data_root,
    group_for_chat,
    image_folder,
    iter_chats,
    list_users,
    our_temp_name,
    resolve_chat,
    resolve_data_root,
    sanitize_filename,
)

GROUP_IDS = {
    "st-1.12": ("1795474548304", "2026-11-23@22h55m48s"),
    "st-1.14": ("1795474390742", "2026-11-23@22h53m10s"),
    "st-1.18": ("1795473024643", "1795473024643"),
}


def version_of(root: Path) -> str:
    group = next((root / "default-user" / "groups").iterdir()).stem
    return next(v for v, (gid, _) in GROUP_IDS.items() if gid == group)


# --- data root ------------------------------------------------------------------------------------


def test_resolve_install_data_and_root(
    st_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_data_root(st_root) == st_root.resolve()
    install = tmp_path / "SillyTavern"
    install.mkdir()
    (install / "server.js").write_text("//")
    st_root.rename(install / "data")
    data = (install / "data").resolve()
    assert resolve_data_root(install) == data
    assert resolve_data_root(install / "data") == data
    # A pre-1.12 install may still hold public/characters: data/ wins in an install folder.
    (install / "public" / "characters").mkdir(parents=True)
    assert resolve_data_root(install) == data
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root(Path("~/SillyTavern")) == data


def test_resolve_explains_what_it_found(st_root: Path, tmp_path: Path) -> None:
    with pytest.raises(NotADataRootError, match="does not exist"):
        resolve_data_root(tmp_path / "nope")
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    with pytest.raises(NotADataRootError, match="is a file"):
        resolve_data_root(afile)
    with pytest.raises(NotADataRootError, match="give its parent"):
        resolve_data_root(st_root / "default-user")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotADataRootError, match="no user folder"):
        resolve_data_root(empty)
    install = tmp_path / "install"
    install.mkdir()
    (install / "package.json").write_text("{}")
    with pytest.raises(NotADataRootError, match="looks like a SillyTavern install"):
        resolve_data_root(install)
    fresh = tmp_path / "fresh"
    (fresh / "_storage").mkdir(parents=True)
    with pytest.raises(NotADataRootError, match="start SillyTavern once"):
        resolve_data_root(fresh)


def test_users_skip_internal_folders_and_non_users(st_root: Path) -> None:
    for name in ("_storage", "_uploads", "_cache"):
        (st_root / name / "chats").mkdir(parents=True)
    (st_root / "random-folder").mkdir()
    (st_root / "cookie-secret.txt").write_text("s")
    (st_root / "alice").mkdir()
    (st_root / "alice" / "settings.json").write_text("{}")
    assert list_users(st_root) == ["alice", "default-user"]
    assert list_users(st_root, ["default-user", "ghost"]) == ["default-user"]
    assert describe_data_root(st_root) == ("2 users (alice, default-user), 4 chats (1 group chat)")


# --- chats ----------------------------------------------------------------------------------------


def test_iter_chats_on_every_version(st_root: Path) -> None:
    refs = list(iter_chats(st_root))
    groups = [r for r in refs if r.is_group]
    singles = [r for r in refs if not r.is_group]
    gid, chat_id = GROUP_IDS[version_of(st_root)]
    assert [g.chat_id for g in groups] == [chat_id]
    assert groups[0].rel == f"default-user/group chats/{chat_id}.jsonl"
    assert groups[0].owner == "" and groups[0].path.is_file()
    assert sorted({r.owner for r in singles}) == ["Alice", "Bob"]
    for ref in refs:
        assert ref.path == st_root / ref.rel and ref.user == "default-user"
        assert classify(st_root, ref.path) == classify(st_root, Path(ref.rel))
        assert classify(st_root, ref.path).chat == ref
    # backups are never chats
    assert all("backups" not in r.rel for r in refs)
    info = group_for_chat(st_root, "default-user", chat_id)
    assert info is not None and info.id == gid and info.name == "Lighthouse Garden"
    assert info.members == ["Alice.png", "Bob.png"]


def test_iter_chats_skips_oddities(st_root: Path, tmp_path: Path) -> None:
    alice = st_root / "default-user" / "chats" / "Alice"
    (alice / "folder.jsonl").mkdir()
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}")
    (alice / "link.jsonl").symlink_to(outside)
    (alice / "notes.txt").write_text("x")
    (alice / "x.jsonl.12345").write_text("{}")
    (st_root / "default-user" / "chats" / "stray.jsonl").write_text("{}")
    weird = alice / "Weird \"quoted\" 'name' ünïcode .. dots.jsonl"
    weird.write_text("{}")
    names = {r.path.name for r in iter_chats(st_root)}
    assert weird.name in names
    found = classify(st_root, weird).chat
    assert found is not None and found.chat_id == weird.name[:-6]
    assert not names & {"folder.jsonl", "link.jsonl", "x.jsonl.12345", "stray.jsonl", "notes.txt"}


def chat_path(root: Path, name: str = "Alice - 1.jsonl", owner: str | None = "Alice") -> Path:
    base = root / "default-user"
    return base / "group chats" / name if owner is None else base / "chats" / owner / name


@pytest.mark.parametrize("owner", ["Alice", None])
def test_classify_kinds(st_root_latest: Path, owner: str | None) -> None:
    root = st_root_latest
    chat = chat_path(root, owner=owner)
    found = classify(root, chat)  # need not exist: a delete or rename still names it
    assert found.kind is PathKind.CHAT and found.chat is not None
    assert found.chat.is_group == (owner is None) and found.chat.chat_id == "Alice - 1"
    st_temp = classify(root, chat.with_name(chat.name + ".3409781854"))
    assert st_temp.kind is PathKind.ST_TEMP and st_temp.chat == found.chat
    ours = our_temp_name(chat)
    assert ours.parent == chat.parent and not ours.name.endswith(".jsonl")
    mine = classify(root, ours)
    assert mine.kind is PathKind.OUR_TEMP and mine.chat == found.chat
    backup = root / "default-user" / "backups" / "chat_alice_20261123-223024.jsonl"
    assert classify(root, backup).kind is PathKind.BACKUP
    for ignored in (
        root / "default-user" / "characters" / "Alice.png",
        root / "default-user" / "chats" / "Alice" / "notes.txt",
        root / "default-user" / "chats" / "Alice" / "sub" / "deep.jsonl",
        root / "default-user" / "chats" / "top.jsonl",
        root / "_storage" / "chats" / "Alice" / "x.jsonl",
        root / "default-user" / "user" / "images" / "Alice" / "a.png",
        root / "default-user",
        root,
    ):
        assert classify(root, ignored).kind is PathKind.IGNORE, ignored


def test_classify_rejects_hostile_paths(st_root_latest: Path, tmp_path: Path) -> None:
    root = st_root_latest
    alice = root / "default-user" / "chats" / "Alice"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.jsonl").write_text("{}")
    (root / "default-user" / "chats" / "Escape").symlink_to(elsewhere)
    (root / "default-user" / "chats" / "AliasAlice").symlink_to(alice)
    (alice / "link.jsonl").symlink_to(elsewhere / "x.jsonl")
    (alice / "dir.jsonl").mkdir()
    for hostile in (
        alice / ".." / ".." / ".." / ".." / "etc" / "passwd.jsonl",
        alice / ".." / "Bob" / "x.jsonl",
        tmp_path / "elsewhere" / "x.jsonl",
        root / "default-user" / "chats" / "Escape" / "x.jsonl",
        root / "default-user" / "chats" / "AliasAlice" / "Alice - 2026-11-23@21h30m23s969ms.jsonl",
        alice / "link.jsonl",
        alice / "dir.jsonl",
        Path("/etc/passwd"),
    ):
        assert classify(root, hostile).kind is PathKind.IGNORE, hostile


def test_resolve_chat_for_user_given_paths(st_root_latest: Path, tmp_path: Path) -> None:
    root = st_root_latest
    ref = next(iter_chats(root))
    assert resolve_chat(root, ref.rel) == ref
    assert resolve_chat(root, str(ref.path)) == ref
    alice = root / "default-user" / "chats" / "Alice"
    (alice / "link.jsonl").symlink_to(ref.path)
    (alice / "dir.jsonl").mkdir()
    cases = {
        "default-user/chats/Alice/../../../x.jsonl": "'..'",
        str(tmp_path / "x.jsonl"): "outside the data root",
        "default-user/chats/Alice/link.jsonl": "symlink",
        "default-user/chats/Alice/dir.jsonl": "folder",
        "default-user/characters/Alice.png": "is not a chat",
        "": "not a chat path",
        "a\x00b": "not a chat path",
    }
    for given, message in cases.items():
        with pytest.raises(UnsafePathError, match=message):
            resolve_chat(root, given)


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Alice", "Alice"),
        (
            "the quick brown fox jumped over the lazy dog",
            "the quick brown fox jumped over the lazy dog",
        ),
        ('a/b\\c?d<e>f:g*h|i"j', "abcdefghij"),
        ("ctrl\x00\x07\x1f\x80\x9fend", "ctrlend"),
        ("trailing dots... ", "trailing dots"),
        (".", ""),
        ("..", ""),
        ("...", ""),
        ("con", ""),
        ("COM1", ""),
        ("lpt9.txt", ""),
        ("nul.tar.gz", ""),
        ("console", "console"),
        (".hidden", ".hidden"),
        ("Zoë 🌸 東京", "Zoë 🌸 東京"),
        ("../../etc/passwd", "....etcpasswd"),
    ],
)
def test_sanitize_filename_like_npm(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_sanitize_truncates_to_255_utf8_bytes() -> None:
    assert sanitize_filename("a" * 300) == "a" * 255
    out = sanitize_filename("ä" * 200)  # 2 bytes each: never split a character
    assert out == "ä" * 127 and len(out.encode()) == 254
    emoji = sanitize_filename("🌸" * 100)  # 4 bytes each
    assert len(emoji.encode()) == 252


def test_image_folder_card_path_and_guards(tmp_path: Path) -> None:
    root = tmp_path
    assert image_folder(root, "default-user", "Alice") == (
        root / "default-user" / "user" / "images" / "Alice"
    )
    assert image_folder(root, "u", 'Dr. "Who": Part 1?').name == "Dr. Who Part 1"
    assert image_folder(root, "u", "1795473024643").name == "1795473024643"
    with pytest.raises(UnsafePathError, match="empty"):
        image_folder(root, "u", "..")
    assert card_path(root, "default-user", "Alice") == (
        root / "default-user" / "characters" / "Alice.png"
    )
    for user, stem in (("../x", "Alice"), ("_storage", "Alice"), ("u", "../Bob"), ("u", "")):
        with pytest.raises(UnsafePathError):
            card_path(root, user, stem)


def test_our_temp_name_stays_under_name_max(tmp_path: Path) -> None:
    long = tmp_path / ("ü" * 100 + "x" * 49 + ".jsonl")  # 255 bytes
    assert len(long.name.encode()) == 255
    temp = our_temp_name(long)
    assert len(temp.name.encode()) <= 255 and not temp.name.endswith(".jsonl")
    temp.write_text("ok")  # the file system accepts it
    assert our_temp_name(long) != temp


def test_group_lookup_by_chats_list_and_broken_files(st_root_latest: Path) -> None:
    groups = st_root_latest / "default-user" / "groups"
    (groups / "broken.json").write_text("{not json")
    (groups / "list.json").write_text(json.dumps(["not", "an", "object"]))
    (groups / "9999.json").write_text(
        json.dumps(
            {
                "id": "9999",
                "name": "Other",
                "members": ["C.png", 5],
                "chat_id": "b",
                "chats": ["a", "b"],
            }
        )
    )
    found = group_for_chat(st_root_latest, "default-user", "a")
    assert found is not None and found.id == "9999" and found.members == ["C.png"]
    assert group_for_chat(st_root_latest, "default-user", "zzz") is None
    assert group_for_chat(st_root_latest, "nobody", "a") is None
    # an edited group file is re-read
    (groups / "9999.json").write_text(json.dumps({"id": "9999", "name": "Renamed", "chats": ["a"]}))
    found = group_for_chat(st_root_latest, "default-user", "a")
    assert found is not None and found.name == "Renamed"


def test_chatref_is_hashable_store_key(st_root_latest: Path) -> None:
    refs = list(iter_chats(st_root_latest))
    assert len({r.rel for r in refs}) == len(refs) == len(set(refs))
    assert all(isinstance(r, ChatRef) and "\\" not in r.rel for r in refs)
