"""Resolving a path the kernel's way: the same answers as ``os.path.realpath(strict=True)``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.tavern import files
from daemon.tavern.files import real_path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data" / "user" / "chats" / "Alice").mkdir(parents=True)
    chat = tmp_path / "data" / "user" / "chats" / "Alice" / "Alice - 1.jsonl"
    chat.write_text("{}\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.jsonl").write_text("{}\n")
    (tmp_path / "link-dir").symlink_to(tmp_path / "data" / "user")
    (tmp_path / "link-file.jsonl").symlink_to(chat)
    (tmp_path / "chain.jsonl").symlink_to(tmp_path / "link-file.jsonl")
    (tmp_path / "data" / "user" / "chats" / "Alice" / "out.jsonl").symlink_to(
        tmp_path / "elsewhere" / "x.jsonl"
    )
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    os.mkfifo(tmp_path / "fifo.jsonl")
    return tmp_path


RESOLVABLE = [
    "data/user/chats/Alice/Alice - 1.jsonl",
    "link-dir/chats/Alice/Alice - 1.jsonl",
    "link-file.jsonl",
    "chain.jsonl",
    "data/user/chats/Alice/out.jsonl",
    "data/user/chats/../chats/Alice/Alice - 1.jsonl",
    "data",
    "fifo.jsonl",  # resolved without being opened: no hang
]


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("name", RESOLVABLE)
def test_same_answer_as_realpath(
    tree: Path, name: str, kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not kernel:
        monkeypatch.setattr(files, "_O_PATH", 0)
    assert real_path(tree / name) == os.path.realpath(tree / name, strict=True)
    assert real_path(str(tree / name)) == os.path.realpath(tree / name, strict=True)


@pytest.mark.parametrize("kernel", [True, False])
def test_a_relative_path_resolves_from_the_working_folder(
    tree: Path, kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not kernel:
        monkeypatch.setattr(files, "_O_PATH", 0)
    monkeypatch.chdir(tree / "link-dir")
    assert real_path(Path("chats/Alice/Alice - 1.jsonl")) == str(
        tree / "data" / "user" / "chats" / "Alice" / "Alice - 1.jsonl"
    )


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("missing.jsonl", FileNotFoundError),
        ("dangling.jsonl", FileNotFoundError),
        ("data/user/chats/Alice/Alice - 1.jsonl/below", NotADirectoryError),
        ("loop-a", OSError),
    ],
)
def test_what_cannot_be_resolved_raises_like_realpath(
    tree: Path, name: str, error: type[OSError], kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not kernel:
        monkeypatch.setattr(files, "_O_PATH", 0)
    with pytest.raises(error):
        os.path.realpath(tree / name, strict=True)
    with pytest.raises(error):
        real_path(tree / name)


def test_without_proc_the_portable_way_answers(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A system without ``/proc`` (or one that hides it): the readlink fails, realpath answers."""
    monkeypatch.setattr(files, "_PROC_FD", str(tree / "no-proc") + "/")
    name = tree / "link-dir" / "chats" / "Alice" / "Alice - 1.jsonl"
    assert real_path(name) == os.path.realpath(name, strict=True)
