"""``st-imagegen generate``: choosing the chat and the message, queueing, waiting, the CLI.

Images come from the fake chat+images API of ``tests/engine/conftest.py`` (a local server).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image, PngImagePlugin

from daemon.cli.commands import main
from daemon.cli.generate import cmd_generate
from daemon.config import Config
from daemon.engine.jobs.manual import pick_message, resolve_chat_spec
from daemon.engine.process.notify import Heartbeat
from daemon.engine.store import Job, JobState, Store
from daemon.errors import JobError, MessageNotFoundError, UnsafePathError
from daemon.tavern.chat import Chat, parse_chat, read_chat
from tests.engine.conftest import FakeAPI
from tests.stsim import STSim

USER = "default-user"
ALICE_CHAT = "Alice - 2026-11-23@21h30m23s969ms"
BOB_OLD = "Bob - 2026-11-22@21h30m23s969ms"
BOB_NEW = "Bob - 2026-11-23@21h30m28s969ms"
GROUP_ID = "1795473024643"

MakeConfig = Callable[..., Config]


def _card(path: Path, name: str) -> None:
    """A minimal ST card: a PNG with a ``chara`` tEXt chunk (base64 JSON)."""
    card = {"spec": "chara_card_v2", "data": {"name": name, "description": "", "scenario": ""}}
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps(card).encode()).decode())
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG", pnginfo=info)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def _touch(path: Path, age: float) -> None:
    when = time.time() - age
    os.utime(path, (when, when))


def _chats(root: Path) -> Path:
    return root / USER / "chats"


@pytest.fixture
def root(st_root_latest: Path) -> Path:
    """The 1.18 fixture, with mtimes that make Bob's newer chat the most recent one."""
    for i, path in enumerate(sorted(st_root_latest.glob(f"{USER}/**/*.jsonl"))):
        _touch(path, 1000 + 10 * i)
    _touch(_chats(st_root_latest) / "Bob" / f"{BOB_NEW}.jsonl", 5)
    return st_root_latest


# --- choosing the chat -------------------------------------------------------------------------


def test_no_chat_means_the_most_recently_saved(root: Path) -> None:
    assert resolve_chat_spec(root, [USER], None).chat_id == BOB_NEW
    _touch(root / USER / "group chats" / f"{GROUP_ID}.jsonl", 1)
    assert resolve_chat_spec(root, [USER], None).chat_id == GROUP_ID


def test_chat_by_path(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _chats(root) / "Alice" / f"{ALICE_CHAT}.jsonl"
    assert resolve_chat_spec(root, [USER], str(full)).path == full
    rel = f"{USER}/chats/Alice/{ALICE_CHAT}.jsonl"
    assert resolve_chat_spec(root, [USER], rel).rel == rel  # relative to the data root
    monkeypatch.chdir(full.parent)
    assert resolve_chat_spec(root, [USER], f"./{ALICE_CHAT}.jsonl").path == full
    with pytest.raises(UnsafePathError, match="outside the data root"):
        resolve_chat_spec(root, [USER], str(root.parent / "x.jsonl"))


def test_chat_by_character_and_name(root: Path) -> None:
    assert resolve_chat_spec(root, [USER], "Alice").chat_id == ALICE_CHAT
    assert resolve_chat_spec(root, [USER], "bob").chat_id == BOB_NEW  # any case; newest
    assert resolve_chat_spec(root, [USER], f"Bob/{BOB_OLD}").chat_id == BOB_OLD
    assert resolve_chat_spec(root, [USER], f"Bob:{BOB_OLD}.jsonl").chat_id == BOB_OLD
    assert resolve_chat_spec(root, [USER], "Bob:Bob - 2026-11-22").chat_id == BOB_OLD  # prefix
    assert resolve_chat_spec(root, [USER], f"Bob/{BOB_OLD}.jsonl").chat_id == BOB_OLD


def test_chat_by_display_name(root: Path) -> None:
    _card(root / USER / "characters" / "Alice.png", "Alice Liddell: in Wonderland/2")
    chat = _chats(root) / "Alice" / "second.jsonl"
    STSim.create(chat, character="Alice Liddell")
    ref = resolve_chat_spec(root, [USER], "Alice Liddell: in Wonderland/2")
    assert ref.chat_id == "second"  # newest of the card's chats
    named = resolve_chat_spec(root, [USER], f"alice liddell: in wonderland/2:{ALICE_CHAT}")
    assert named.chat_id == ALICE_CHAT  # display names may hold ':' and '/': last one splits


def test_group_by_name_or_id(root: Path) -> None:
    for spec in ("Lighthouse Garden", GROUP_ID, f"Lighthouse Garden/{GROUP_ID}"):
        ref = resolve_chat_spec(root, [USER], spec)
        assert ref.is_group and ref.chat_id == GROUP_ID


def test_helpful_errors(root: Path) -> None:
    with pytest.raises(JobError, match=r"no character, group or chat file matches 'Zed'.*Alice"):
        resolve_chat_spec(root, [USER], "Zed")
    with pytest.raises(JobError, match=r"has no chat 'nope'; its chats: Bob - 2026-11-22"):
        resolve_chat_spec(root, [USER], "Bob/nope")
    with pytest.raises(JobError, match=r"ambiguous: Bob - 2026-11-22.*Bob - 2026-11-23"):
        resolve_chat_spec(root, [USER], "Bob/Bob - 2026")
    # The same character in two users: ask for a path.
    other = root / "second-user" / "chats" / "Alice"
    STSim.create(other / "Alice - x.jsonl")
    with pytest.raises(JobError, match=r"'Alice' is ambiguous: .*default-user.*second-user"):
        resolve_chat_spec(root, [USER, "second-user"], "Alice")
    assert resolve_chat_spec(root, [USER], "Alice").user == USER  # only watched users


# --- choosing the message ------------------------------------------------------------------------


def test_pick_message(root: Path) -> None:
    chat, _ = read_chat(_chats(root) / "Alice" / f"{ALICE_CHAT}.jsonl")
    assert pick_message(chat, None, "c").index == 8  # the last character reply
    assert pick_message(chat, 2, "c").name == "Alice"
    cases = {
        1: "message 1 in c is the user's message",
        4: "message 4 in c is the user's message",
        7: "message 7 in c is hidden",
        9: "there is no message 9 in c: it has messages 0 to 8",
    }
    for mesid, text in cases.items():
        with pytest.raises(MessageNotFoundError, match=text):
            pick_message(chat, mesid, "c")
    bob, _ = read_chat(_chats(root) / "Bob" / f"{BOB_NEW}.jsonl")
    with pytest.raises(MessageNotFoundError, match="is a narrator line"):
        pick_message(bob, len(bob.messages) - 1, "c")
    assert pick_message(bob, None, "c").name == "Bob"  # skips the narrator line


def _chat_ending_with(path: Path, mes: str, extra: dict[str, Any]) -> Chat:
    """Greeting, user message, reply (index 2), then a line of Alice's with ``extra`` (3)."""
    tab = STSim.create(path)
    tab.send_user("Hi.").reply("Alice", "Hello.")
    line = {"name": "Alice", "is_user": False, "is_system": False, "mes": mes, "extra": extra}
    tab.append_raw(line).save()
    chat, _ = read_chat(path)
    return chat


def test_our_own_image_message_is_refused(tmp_path: Path) -> None:
    marker = {"st_imagegen_job": "01ABC", "image": "/user/images/Alice/a.png"}
    chat = _chat_ending_with(tmp_path / "c.jsonl", "[pic]", marker)
    with pytest.raises(MessageNotFoundError, match="image message written by st-imagegen"):
        pick_message(chat, 3, "c")
    assert pick_message(chat, None, "c").index == 2


def test_a_sendas_line_can_be_asked_for(tmp_path: Path) -> None:
    # Detection skips lines typed with /sendas (nothing was generated); generate is the way.
    typed = {"api": "manual", "model": "slash command"}
    chat = _chat_ending_with(tmp_path / "c.jsonl", "Alice waves a lantern (typed).", typed)
    assert chat.messages[3].is_slash_command
    assert pick_message(chat, 3, "c").mes.startswith("Alice waves")
    assert pick_message(chat, None, "c").index == 3


# --- the command ---------------------------------------------------------------------------------


async def _jobs(config: Config) -> list[Job]:
    store = await Store.open(config.db_path)
    try:
        return await store.list_jobs()
    finally:
        await store.close()


def test_generate_queues_once_and_force_makes_another(root: Path, make_config: MakeConfig) -> None:
    config = make_config(root, mode="manual")
    out = io.StringIO()
    assert cmd_generate(config, "Alice", None, False, out=out) == 0
    text = out.getvalue()
    assert text.startswith("queued job ")
    assert f"Alice's message 8 in {USER}/chats/Alice/{ALICE_CHAT}.jsonl" in text
    assert "the daemon is not running: the job runs when it starts" in text
    [job] = anyio.run(_jobs, config)
    assert job.state is JobState.QUEUED and job.source == "manual"
    assert (job.message_index, job.speaker, job.character) == (8, "Alice", "Alice")

    again = io.StringIO()
    assert cmd_generate(config, "Alice", 8, False, out=again) == 0
    assert f"job {job.id} already exists for Alice's message 8" in again.getvalue()
    assert "queued" in again.getvalue()
    assert len(anyio.run(_jobs, config)) == 1

    forced = io.StringIO()
    assert cmd_generate(config, "Alice", 8, False, force=True, out=forced) == 0
    jobs = anyio.run(_jobs, config)
    assert len(jobs) == 2 and {j.regen for j in jobs} == {0, 1}


def test_generate_names_the_forced_job_after_the_first_was_rejected(
    root: Path, make_config: MakeConfig
) -> None:
    """Rejected, then forced and committed: asking again names the committed job (the reply
    has its image), not the first job's "rejected", which would make the extension pay again."""
    config = make_config(root, mode="manual")
    assert cmd_generate(config, "Alice", 8, False, out=io.StringIO()) == 0
    [first] = anyio.run(_jobs, config)
    assert cmd_generate(config, "Alice", 8, False, force=True, out=io.StringIO()) == 0
    [forced] = [j for j in anyio.run(_jobs, config) if j.id != first.id]

    async def settle() -> None:
        store = await Store.open(config.db_path)
        try:
            await store.transition(first.id, JobState.QUEUED, JobState.REJECTED, check=False)
            await store.transition(forced.id, JobState.QUEUED, JobState.COMMITTED, check=False)
        finally:
            await store.close()

    anyio.run(settle)
    out = io.StringIO()
    assert cmd_generate(config, "Alice", 8, False, out=out) == 0
    assert f"job {forced.id} already exists" in out.getvalue()
    assert len(anyio.run(_jobs, config)) == 2


def test_generate_in_a_group_chat(root: Path, make_config: MakeConfig) -> None:
    config = make_config(root)
    assert cmd_generate(config, "Lighthouse Garden", None, False, out=io.StringIO()) == 0
    [job] = anyio.run(_jobs, config)
    assert job.is_group and job.character == GROUP_ID
    assert job.chat == f"{USER}/group chats/{GROUP_ID}.jsonl"


def test_wait_without_daemon_runs_here_until_pending(root: Path, make_config: MakeConfig) -> None:
    config = make_config(root, mode="manual")
    out, err = io.StringIO(), io.StringIO()
    assert cmd_generate(config, "Alice", 5, True, timeout=60, out=out, err=err) == 0
    assert "the daemon is not running: running the job in this process" in err.getvalue()
    [job] = anyio.run(_jobs, config)
    assert job.state is JobState.PENDING
    folder = config.pending_dir / job.id
    text = out.getvalue()
    assert f"job {job.id} is waiting for approval: {folder}" in text
    assert f"accept with: st-imagegen accept {job.short_id}" in text
    images = [folder / name for name in job.images]
    assert images and all(p.is_file() for p in images)
    assert all(f"  {p}" in text for p in images)


def test_wait_with_auto_approval_commits(root: Path, make_config: MakeConfig) -> None:
    config = make_config(root, approval="auto")
    path = _chats(root) / "Alice" / f"{ALICE_CHAT}.jsonl"
    before = path.read_bytes()
    out = io.StringIO()
    assert cmd_generate(config, f"Alice:{ALICE_CHAT}", None, True, timeout=60, out=out) == 0
    [job] = anyio.run(_jobs, config)
    assert job.state is JobState.COMMITTED
    chat = parse_chat(path.read_bytes())
    ours = chat.find_marker(job.id)
    assert ours is not None and ours.index == 9  # right after message 8
    assert path.read_bytes().startswith(before)
    files = job.meta["committed_files"]
    assert files and all(Path(f).is_file() for f in files)
    assert all(f"  {f}" in out.getvalue() for f in files)
    assert f"job {job.id} committed into {job.chat}" in out.getvalue()


def test_wait_for_a_daemon_that_does_not_come(root: Path, make_config: MakeConfig) -> None:
    config = make_config(root)
    config.state_dir.mkdir(parents=True)
    Heartbeat(config.heartbeat_path, "0.1.0").write(watching=1)  # "running", but idle
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    assert cmd_generate(config, "Alice", None, True, timeout=0.6, out=out, err=err) == 1
    assert time.monotonic() - started < 10
    assert "is still queued after 1 s; it keeps going" in err.getvalue()
    assert [j.state for j in anyio.run(_jobs, config)] == [JobState.QUEUED]


def test_cli_generate_and_alias(
    root: Path, make_config: MakeConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_config(root)
    cfg = str(tmp_path / "config.toml")
    assert main(["generate", "--config", cfg, "--chat", "Alice", "--mesid", "1"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "message 1 in" in lines[0] and "user's message" in lines[0]
    assert main(["genimage", "--config", cfg, "--chat", "Bob", "--mesid", "2"]) == 0
    assert "queued job" in capsys.readouterr().out
    assert main(["genimage", "--config", cfg, "--chat", "Bob", "--mesid", "2"]) == 0
    assert "already exists" in capsys.readouterr().out
    assert main(["generate", "--config", cfg, "--chat", "Bob", "--mesid", "2", "--force"]) == 0
    assert "queued job" in capsys.readouterr().out
    config = make_config(root)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    Heartbeat(config.heartbeat_path, "0.1.0").write(watching=1)  # a daemon that does nothing
    args = ["generate", "--config", cfg, "--chat", "Alice", "--wait", "--timeout", "0.3"]
    assert main(args) == 1
    assert "is still queued after 0 s" in capsys.readouterr().err
    assert main(["generate", "--config", cfg, "--chat", "Nobody"]) == 1
    assert "no character, group or chat file matches 'Nobody'" in capsys.readouterr().err
    assert main(["generate", "--config", cfg, "--mesid", "-1"]) == 2  # usage error


def test_wait_without_daemon_and_without_api_says_so(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running the job here needs the APIs: what is missing is one clear line, exit 1, and the
    job stays queued for the daemon (not failed)."""
    cfg = tmp_path / "bare.toml"
    cfg.write_text(f'data_root = "{root}"\nstate_dir = "{tmp_path / "bare-state"}"\n')
    assert main(["generate", "--config", str(cfg), "--chat", "Alice", "--wait"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "st-imagegen: error: not set up yet (image service, prompt writer): start the daemon "
        "(st-imagegen run) and open its address, or set them in the config file"
    )
    assert main(["list", "--config", str(cfg), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["state"] == "queued"
    assert "Traceback" not in "\n".join(err)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal(root: Path, make_config: MakeConfig, fake_api: FakeAPI) -> None:
    """On a terminal: state changes and a spinner on stderr; the result alone on stdout."""
    fake_api.image_delay = 0.5  # long enough to be seen imaging
    config = make_config(root)
    out, err = _Terminal(), _Terminal()
    assert cmd_generate(config, "Alice", None, True, timeout=60, out=out, err=err) == 0
    progress = err.getvalue()
    assert "-> imaging" in progress and "-> pending" in progress
    assert "\r" in progress and "imaging (" in progress  # the spinner line
    assert progress.endswith("\r\x1b[K") or "\x1b[K" in progress  # cleared at the end
    assert "\r" not in out.getvalue() and "is waiting for approval" in out.getvalue()


async def _supersede(config: Config, job: Job, *, shelve: bool) -> None:
    """As a swipe away does: the job superseded, its pending folder shelved."""
    from daemon.engine.jobs.approval import Approval

    store = await Store.open(config.db_path)
    try:
        gone = await store.supersede(job.reply, "reply changed", keep=False)
        assert [g.id for g in gone] == [job.id]
        if shelve:
            assert Approval(config.state_dir).shelve(job.id)
    finally:
        await store.close()


def test_generate_brings_back_a_superseded_job_of_the_shown_text(
    root: Path, make_config: MakeConfig, fake_api: FakeAPI
) -> None:
    """Regression: `generate` said "already exists ... superseded" and exited 0 doing nothing."""
    config = make_config(root, mode="manual")
    assert cmd_generate(config, "Alice", 5, True, timeout=60, out=io.StringIO()) == 0
    [job] = anyio.run(_jobs, config)
    assert job.state is JobState.PENDING
    calls = fake_api.count("images/generations")

    anyio.run(lambda: _supersede(config, job, shelve=True))
    assert not (config.pending_dir / job.id).exists()
    out = io.StringIO()
    assert cmd_generate(config, "Alice", 5, False, out=out) == 0
    assert (
        f"job {job.id} for Alice's message 5" in out.getvalue()
        and "is back: pending" in out.getvalue()
    )
    [back] = anyio.run(_jobs, config)
    assert back.state is JobState.PENDING and back.images == job.images
    assert all((config.pending_dir / job.id / n).is_file() for n in job.images)
    assert fake_api.count("images/generations") == calls  # its images, not new ones

    # Without shelved images it runs again (its prompt kept).
    anyio.run(lambda: _supersede(config, back, shelve=False))
    out = io.StringIO()
    assert cmd_generate(config, "Alice", 5, False, out=out) == 0
    assert out.getvalue().startswith(f"queued job {job.id}")
    [again] = anyio.run(_jobs, config)
    assert again.state is JobState.QUEUED and again.prompt == job.prompt


def test_generate_on_a_job_replaced_by_a_regen_is_an_error(
    root: Path, make_config: MakeConfig
) -> None:
    from daemon.engine.jobs.approval import Approval
    from daemon.engine.jobs.pipeline import regen_job

    config = make_config(root, mode="manual")
    assert cmd_generate(config, "Alice", 5, False, out=io.StringIO()) == 0
    [job] = anyio.run(_jobs, config)

    async def regen() -> None:
        store = await Store.open(config.db_path)
        try:
            await store.transition(
                job.id, JobState.QUEUED, JobState.PENDING, prompt="a cat", check=False
            )
            await regen_job(store, Approval(config.state_dir), job.id)
        finally:
            await store.close()

    anyio.run(regen)
    out, err = io.StringIO(), io.StringIO()
    assert cmd_generate(config, "Alice", 5, False, out=out, err=err) == 1
    assert "superseded" in out.getvalue() and "use --force" in err.getvalue()
