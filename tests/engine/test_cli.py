"""The command line, called in-process (and once as a real subprocess for --help speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import structlog

from daemon.cli import commands as cli_module
from daemon.cli.commands import config_example, main
from daemon.config import Config, load_config
from daemon.engine.jobs.approval import Approval
from daemon.engine.store import Job, JobState, Store
from daemon.jobstate import ReplyKey
from tests.engine.conftest import FakeAPI, config_toml, tiny_png, write_chat


@dataclass(frozen=True)
class Img:
    data: bytes
    format: str = "png"
    width: int = 8
    height: int = 8


@pytest.fixture
def cfg_path(tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(config_toml(st_root_latest, tmp_path / "state", fake_api), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_jobs(cfg_path: Path, count: int, images: int = 2) -> list[Job]:
    """``count`` pending jobs with ``images`` images each, through the real store and folders."""
    config = load_config(cfg_path, environ={})

    async def _make() -> list[Job]:
        store = await Store.open(config.db_path)
        approval = Approval(config.state_dir)
        made = []
        try:
            for n in range(count):
                job = await store.create_job(
                    reply=ReplyKey(
                        "default-user",
                        "default-user/chats/Alice/Alice - cli.jsonl",
                        "Alice",
                        f"2026-11-23T12:00:{n:02d}.000Z",
                        "0:abc",
                    ),
                    character="Alice",
                    is_group=False,
                    speaker="Alice",
                    message_index=2 * n + 1,
                    excerpt=f"reply number {n}",
                    prompt=f"prompt {n}",
                )
                assert job is not None
                moved = await store.transition(job.id, JobState.QUEUED, JobState.IMAGING)
                assert moved is not None
                approval.write_pending(moved, [Img(tiny_png()) for _ in range(images)], {})
                names = tuple(p.name for p in approval.kept_images(job.id))
                pending = await store.transition(
                    job.id, JobState.IMAGING, JobState.PENDING, images=names
                )
                assert pending is not None
                made.append(pending)
        finally:
            await store.close()
        return made

    return anyio.run(_make)


def get_job(cfg_path: Path, job_id: str) -> Job:
    config = load_config(cfg_path, environ={})

    async def _get() -> Job:
        store = await Store.open(config.db_path)
        try:
            return await store.get_job(job_id)
        finally:
            await store.close()

    return anyio.run(_get)


def test_config_example_parses_back_to_the_defaults(tmp_path: Path) -> None:
    text = config_example()
    path = tmp_path / "example.toml"
    path.write_text(text, encoding="utf-8")
    loaded = load_config(path, environ={})
    assert loaded.model_dump() == Config().model_dump()
    # Every key of every section is documented in it.
    for name, field in Config.model_fields.items():
        assert name in text
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            assert f"[{name}]" in text
            for key in annotation.model_fields:
                assert f"{key} = " in text, key
                assert f"ST_IMAGEGEN_{name.upper()}__{key.upper()}" in text


def test_config_example_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "config", "example")
    assert code == 0 and out == config_example() and err == ""
    code, out, err = cli(capsys, "config")
    assert code == 2


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "frobnicate")[0] == 2
    assert cli(capsys, "accept")[0] == 2
    code, _, err = cli(capsys, "accept", "X", "--keep", "one")
    assert code == 2 and "--keep" in err
    assert cli(capsys, "generate", "--mesid", "-1")[0] == 2
    assert cli(capsys)[0] == 2
    assert cli(capsys, "--help")[0] == 0
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip()


def test_bad_config_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[detect]\nsettle_secs = 3\n", encoding="utf-8")
    code, out, err = cli(capsys, "list", "--config", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "settle_secs" in err and err.startswith("st-imagegen: error:")
    code, _, err = cli(capsys, "list", "--config", str(tmp_path / "missing.toml"))
    assert code == 1 and "does not exist" in err


def test_run_with_a_wrong_data_root(
    cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        capsys, "run", "--config", str(cfg_path), "--data-root", str(tmp_path / "nowhere")
    )
    assert code == 1 and "does not exist" in err and err.count("\n") == 1


def test_list_show_accept_reject_regen(cfg_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ["--config", str(cfg_path)]
    code, out, _ = cli(capsys, "list", *c)
    assert code == 0 and "no jobs" in out
    jobs = make_jobs(cfg_path, 3)

    code, out, _ = cli(capsys, "list", *c, "--json")
    listed = json.loads(out)
    assert code == 0 and [j["id"] for j in listed] == [j.id for j in reversed(jobs)]  # newest 1st
    code, out, _ = cli(capsys, "list", *c)
    lines = out.splitlines()
    assert lines[0].startswith("JOB") and len(lines) == 4 and jobs[2].id[:12] in lines[1]

    code, out, _ = cli(capsys, "show", *c, jobs[0].id[:10])
    assert code == 0 and "prompt 0" in out and "image-2.png" in out and "pending" in out
    code, out, _ = cli(capsys, "show", *c, jobs[0].id, "--json")
    assert json.loads(out)["folder"]

    state_dir = load_config(cfg_path, environ={}).state_dir
    (state_dir / "pending" / jobs[0].id).rename(state_dir / "accepted" / jobs[0].id)
    code, out, _ = cli(capsys, "show", *c, jobs[0].id)  # moved, not yet acted on
    assert str(state_dir / "accepted" / jobs[0].id / "image-2.png") in out
    code, out, _ = cli(capsys, "show", *c, jobs[0].id, "--json")
    assert json.loads(out)["folder"] == str(state_dir / "accepted" / jobs[0].id)

    code, out, _ = cli(capsys, "accept", *c, jobs[0].id, "--keep", "2")
    assert code == 0 and "accepted" in out
    assert get_job(cfg_path, jobs[0].id).images == ("image-2.png",)
    code, _, err = cli(capsys, "accept", *c, jobs[0].id)
    assert code == 1 and "accepted" in err and err.count("\n") == 1

    code, out, _ = cli(capsys, "reject", *c, jobs[1].id)
    assert code == 0 and get_job(cfg_path, jobs[1].id).state is JobState.REJECTED

    code, out, _ = cli(capsys, "regen", *c, jobs[2].id, "--prompt", "a brighter sky")
    assert code == 0 and "queued" in out
    new_id = out.split()[1]
    new = get_job(cfg_path, new_id)
    assert new.state is JobState.QUEUED and new.prompt == "a brighter sky"
    old = get_job(cfg_path, jobs[2].id)
    assert old.state is JobState.SUPERSEDED
    code, out, _ = cli(capsys, "list", *c, "--state", "superseded")
    assert jobs[2].id[:12] in out and "regenerated as" in out  # the reason is shown

    code, _, err = cli(capsys, "show", *c, "ZZZZZZZZZZ")
    assert code == 1 and "no job" in err
    code, _, err = cli(capsys, "accept", *c, "")
    assert code == 1


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, daemon.cli.commands as c; c.build_parser();"
        "heavy = [m for m in ('daemon.engine.process.service', 'httpx', 'watchdog',"
        " 'daemon.engine.store')"
        " if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_command_has_config(capsys: pytest.CaptureFixture[str]) -> None:
    commands: dict[str, list[str]] = {
        "run": [],
        "generate": [],
        "genimage": [],
        "list": [],
        "show": ["J"],
        "accept": ["J"],
        "reject": ["J"],
        "regen": ["J"],
        "restore": ["J"],
        "cancel": ["J"],
        "pause": [],
        "resume": [],
        "status": [],
        "doctor": [],
        "healthcheck": [],
    }
    for command, rest in commands.items():
        assert main([command, *rest, "--help"]) == 0
        out, _ = capsys.readouterr()
        assert "--config" in out, command


def test_unusable_state_dir_is_one_line_exit_1(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = tmp_path / "config.toml"
    path.write_text(config_toml(st_root_latest, blocker / "state", fake_api), encoding="utf-8")
    code, out, err = cli(capsys, "list", "--config", str(path))
    assert code == 1 and out == "" and err.count("\n") == 1 and "a-file" in err


def test_log_lines_never_carry_the_api_keys(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Plain words, so only the keys the CLI hands to the logger (not a pattern) can hide them.
    text_key, image_key = "plain-text-words-h10", "plain-image-words-h10"
    path = tmp_path / "config.toml"
    extra = {"text": {"api_key": text_key}, "image": {"api_key": image_key}}
    path.write_text(
        config_toml(st_root_latest, tmp_path / "state", fake_api, extra), encoding="utf-8"
    )
    config = load_config(path, environ={})
    for quiet in (False, True):  # the daemon's setup and the one-shot commands'
        cli_module._setup_logging(config, quiet=quiet)
        structlog.get_logger("st_imagegen.test").warning(
            "provider said", body=f"bad key {text_key}", echo=[image_key]
        )
        _, err = capsys.readouterr()
        assert "provider said" in err and "bad key" in err
        assert text_key not in err and image_key not in err


def test_list_into_a_closed_pipe_exits_quietly(cfg_path: Path) -> None:
    """Regression: `st-imagegen list | head -1` printed "error: Broken pipe"."""
    make_jobs(cfg_path, 3)
    binary = str(Path(sys.executable).parent / "st-imagegen")
    proc = subprocess.Popen(
        [binary, "list", "--config", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written, as `head` ends
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as `ls | head` reports under pipefail
    assert err == b""


def test_an_unexpected_failure_is_one_line_unless_debug(
    capsys: pytest.CaptureFixture[str], cfg_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> int:
        raise ExceptionGroup("task group", [ZeroDivisionError("division by zero")])

    monkeypatch.setattr(cli_module, "_cmd_list", broken)
    code, out, err = cli(capsys, "list", "--config", str(cfg_path))
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "st-imagegen: error: unexpected ZeroDivisionError: division by zero (a bug: run the same "
        "command with --debug for the details and report it)"
    ]
    with pytest.raises(ExceptionGroup):
        main(["list", "--debug", "--config", str(cfg_path)])


def test_a_known_error_inside_a_task_group_is_its_own_line(
    capsys: pytest.CaptureFixture[str], cfg_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.errors import StoreError

    def broken(*_: object) -> int:
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [StoreError("the disk is gone")])])

    monkeypatch.setattr(cli_module, "_cmd_list", broken)
    code, _, err = cli(capsys, "list", "--config", str(cfg_path))
    assert code == 1
    assert err == "st-imagegen: error: the disk is gone\n"


def make_queued(cfg_path: Path, count: int, chat: str = "Alice - cli") -> list[Job]:
    """``count`` queued jobs in one chat (no daemon runs them)."""
    config = load_config(cfg_path, environ={})

    async def _make() -> list[Job]:
        store = await Store.open(config.db_path)
        made = []
        try:
            for n in range(count):
                job = await store.create_job(
                    reply=ReplyKey(
                        "default-user",
                        f"default-user/chats/Alice/{chat}.jsonl",
                        "Alice",
                        f"2026-11-24T12:00:{n:02d}.000Z",
                        "0:abc",
                    ),
                    character="Alice",
                    is_group=False,
                    speaker="Alice",
                    message_index=2 * n + 1,
                    excerpt=f"queued reply {n}",
                )
                assert job is not None
                made.append(job)
        finally:
            await store.close()
        return made

    return anyio.run(_make)


def test_cancel_restore_pause_and_show_details(
    cfg_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ["--config", str(cfg_path)]
    config = load_config(cfg_path, environ={})
    pending = make_jobs(cfg_path, 1)[0]
    here = make_queued(cfg_path, 2)
    there = make_queued(cfg_path, 1, chat="Alice - elsewhere")
    assert config.data_root is not None
    for name in ("cli", "elsewhere"):  # --chat names a chat that exists
        write_chat(Path(config.data_root), name, ["A reply."])

    # A reject goes to the trash; restore brings the job back with its images.
    code, out, _ = cli(capsys, "reject", *c, pending.id)
    assert code == 0 and f"st-imagegen restore {pending.short_id}" in out
    assert (config.state_dir / ".trash" / pending.id / "image-1.png").is_file()
    code, out, _ = cli(capsys, "restore", *c, pending.id[:12])
    assert code == 0 and "pending again (2 images)" in out
    back = get_job(cfg_path, pending.id)
    assert back.state is JobState.PENDING and back.images == ("image-1.png", "image-2.png")
    assert (config.pending_dir / pending.id / "image-2.png").is_file()
    code, _, err = cli(capsys, "restore", *c, pending.id)
    assert code == 1 and "not rejected" in err

    # Cancel one job; then every queued job of one chat; the other chat's stays queued.
    code, out, _ = cli(capsys, "cancel", *c, here[0].id)
    assert code == 0 and "cancelled" in out
    cancelled = get_job(cfg_path, here[0].id)
    assert cancelled.state is JobState.REJECTED and cancelled.meta["cancelled"] is True
    code, _, err = cli(capsys, "cancel", *c, pending.id)
    assert code == 1 and "only queued and running jobs" in err
    code, _, err = cli(capsys, "cancel", *c)
    assert code == 1 and "--all-queued" in err
    code, out, err = cli(capsys, "cancel", *c, "--all-queued", "--chat", "Alice/Alice - cli")
    assert code == 0, err
    assert "cancelled 1 queued job in Alice · Alice - cli" in out
    assert get_job(cfg_path, here[1].id).state is JobState.REJECTED
    assert get_job(cfg_path, there[0].id).state is JobState.QUEUED
    code, out, _ = cli(capsys, "cancel", *c, "--all-queued")
    assert code == 0 and "cancelled 1 queued job" in out
    assert get_job(cfg_path, there[0].id).state is JobState.REJECTED

    # Pause and resume, all chats or one.
    code, out, _ = cli(capsys, "pause", *c)
    assert code == 0 and "no new job starts in any chat" in out
    assert json.loads((config.state_dir / "paused.json").read_text())["all"] is True
    code, out, _ = cli(capsys, "resume", *c)
    assert code == 0 and "not paused" in out
    code, out, _ = cli(capsys, "pause", *c, "--chat", "Alice/Alice - elsewhere")
    assert code == 0 and "paused chats: Alice · Alice - elsewhere" in out
    code, out, _ = cli(capsys, "resume", *c, "--chat", "Alice/Alice - elsewhere")
    assert code == 0 and "not paused" in out

    code, out, _ = cli(capsys, "show", *c, cancelled.id)
    assert "cancelled:" in out and "chat name:   Alice · Alice - cli" in out


def test_why_names_a_group_chat_by_its_group(
    cfg_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "why", "--config", str(cfg_path), "--chat", "Lighthouse Garden")
    assert code == 0, err
    assert "group chats/" in out and "(Lighthouse Garden · " in out.splitlines()[0]
