"""``st-imagegen doctor`` and ``healthcheck`` against real files and a real local HTTP API."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.config import Config, load_config
from daemon.doctor import CheckResult, cmd_doctor, cmd_healthcheck, run_checks
from daemon.jobstate import ReplyKey
from tests.ops.fakeapi import GOOD_KEY, FakeAPI, closed_port, fake_api

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "st-1.18"
NOBODY = 65534


def _config(
    tmp: Path, data_root: Path, api_url: str, *, key: str = GOOD_KEY, **extra: str
) -> Config:
    path = tmp / "config.toml"
    path.write_text(
        f'data_root = "{data_root}"\nstate_dir = "{tmp / "state"}"\n'
        f'[text]\napi_url = "{api_url}"\napi_key = "{key}"\n'
        f'[image]\napi_url = "{api_url}"\napi_key = "{key}"\n',
        encoding="utf-8",
    )
    return load_config(path, environ=extra)


def _doctor(config: Config, *, skip_image: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = cmd_doctor(config, skip_image, out=out)
    return code, out.getvalue()


def _line(output: str, name: str) -> str:
    found = [line for line in output.splitlines() if f"  {name}:" in line]
    assert len(found) == 1, output
    return found[0]


def _fix_after(output: str, name: str) -> str:
    lines = output.splitlines()
    index = lines.index(_line(output, name))
    assert lines[index + 1].lstrip().startswith("fix:"), output
    return lines[index + 1]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with fake_api() as served:
        yield served


def test_good_setup_passes_every_check_and_changes_nothing(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI
) -> None:
    before = _tree(st_root_latest)
    config = _config(tmp_path, st_root_latest, api.base_url)
    code, output = _doctor(config)
    assert code == 0, output
    assert "FAIL" not in output and output.rstrip().endswith("All checks passed.")
    assert "1 user (default-user), 4 chats (1 group chat)" in _line(output, "data root")
    assert "all 4 chats can be read" in _line(output, "read chats")
    assert _line(output, "write chats").startswith("PASS")
    assert _line(output, "write images").startswith("PASS")
    assert _line(output, "state dir").startswith("PASS")
    assert _line(output, "watch limit").startswith(("PASS", "SKIP"))
    # Exactly one tiny request per API.
    assert api.seen() == [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    # The probes left nothing behind and no chat byte changed.
    assert _tree(st_root_latest) == before
    assert GOOD_KEY not in output


def test_skip_image_sends_no_image_request(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI
) -> None:
    code, output = _doctor(_config(tmp_path, st_root_latest, api.base_url), skip_image=True)
    assert code == 0, output
    assert _line(output, "image API").startswith("SKIP")
    assert api.seen() == [("POST", "/v1/chat/completions")]


def test_wrong_data_root_fails_with_the_reason_and_a_fix(tmp_path: Path, api: FakeAPI) -> None:
    wrong = tmp_path / "Documents"
    (wrong / "notes").mkdir(parents=True)
    code, output = _doctor(_config(tmp_path, wrong, api.base_url))
    assert code == 1
    line = _line(output, "data root")
    assert line.startswith("FAIL") and "is not a SillyTavern data root" in line
    assert "point data_root at the SillyTavern folder" in _fix_after(output, "data root")
    for dependent in ("read chats", "write chats", "write images"):
        assert _line(output, dependent).startswith("SKIP")
    assert output.rstrip().endswith("check(s) failed.")


def test_data_root_given_as_the_install_folder_is_accepted(tmp_path: Path, api: FakeAPI) -> None:
    install = tmp_path / "SillyTavern"
    shutil.copytree(FIXTURE, install / "data")
    code, output = _doctor(_config(tmp_path, install, api.base_url))
    assert code == 0, output
    assert str(install / "data") in _line(output, "data root")


def test_bad_key_is_reported_as_a_refused_key(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI
) -> None:
    wrong_key = "sk-wrong-secret-123"
    code, output = _doctor(_config(tmp_path, st_root_latest, api.base_url, key=wrong_key))
    assert code == 1
    for name, section in (("prompt API", "TEXT"), ("image API", "IMAGE")):
        line = _line(output, name)
        assert line.startswith("FAIL") and "refused the key (HTTP 401)" in line
        assert f"ST_IMAGEGEN_{section}__API_KEY" in _fix_after(output, name)
    assert wrong_key not in output
    # The file checks are unaffected.
    assert _line(output, "read chats").startswith("PASS")


def test_unreachable_api_fails_fast_with_one_attempt(st_root_latest: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()
    code, output = _doctor(_config(tmp_path, st_root_latest, url))
    assert time.monotonic() - started < 10, "doctor must not retry with backoff"
    assert code == 1
    for name, section in (("prompt API", "text"), ("image API", "image")):
        assert "cannot be reached" in _line(output, name)
        assert f"check {section}.api_url" in _fix_after(output, name)


def test_missing_api_url_and_template_mode(st_root_latest: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, st_root_latest, "", ST_IMAGEGEN_TEXT__MODE="template")
    code, output = _doctor(config)
    assert code == 1
    assert _line(output, "prompt API").startswith("SKIP")
    assert "image.api_url is not set" in _line(output, "image API")
    assert "ST_IMAGEGEN_IMAGE__API_URL" in _fix_after(output, "image API")


def test_too_few_inotify_watches(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    limit = tmp_path / "max_user_watches"
    limit.write_text("16\n", encoding="ascii")
    results = run_checks(
        _config(tmp_path, st_root_latest, api.base_url), skip_image=True, watches_file=limit
    )
    watch = _result(results, "watch limit")
    assert watch.status == "FAIL" and "max_user_watches is 16" in watch.detail
    assert "sysctl" in watch.fix


def test_unknown_user_filter_fails(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    config = _config(tmp_path, st_root_latest, api.base_url, ST_IMAGEGEN_DETECT__USERS='["alice"]')
    result = _result(run_checks(config, skip_image=True), "data root")
    assert result.status == "FAIL" and "alice" in result.detail
    assert "default-user" in result.fix


def _result(results: list[CheckResult], name: str) -> CheckResult:
    (found,) = [r for r in results if r.name == name]
    return found


# --- permissions, checked as an unprivileged user -------------------------------------------------


@contextmanager
def _world_dir() -> Iterator[Path]:
    """A folder outside pytest's root-only tmp tree, so another user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="st-imagegen-doctor-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _as_nobody(config: Config) -> Iterator[None]:
    """Run the block with effective uid/gid nobody when root (root bypasses permissions).

    The interpreter may live under a folder only root can read (``/root/.pyenv`` here), so a
    first doctor run as root loads every module and codec before privileges are dropped.
    """
    if os.geteuid() != 0:
        yield
        return
    _doctor(config, skip_image=True)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def _give_to_runner(path: Path) -> None:
    """Make ``path`` (recursively) belong to, and be writable by, the user the test runs as."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
        if os.geteuid() == 0:
            os.chown(p, NOBODY, NOBODY, follow_symlinks=False)


def test_unreadable_chat_and_unlistable_folder_fail_as_the_daemon_user(api: FakeAPI) -> None:
    with _world_dir() as world:
        root = world / "data"
        shutil.copytree(FIXTURE, root)
        (world / "state").mkdir()
        _give_to_runner(world)
        chat = next((root / "default-user" / "chats").rglob("*.jsonl"))
        # Owned by someone else and private: the daemon's user cannot read it.
        if os.geteuid() == 0:
            os.chown(chat, 0, 0)
        chat.chmod(0o000)
        group_chats = root / "default-user" / "group chats"
        group_chats.chmod(0o000)
        config = _config(world, root, api.base_url)
        with _as_nobody(config):
            code, output = _doctor(config, skip_image=True)
        group_chats.chmod(0o755)
        assert code == 1, output
        line = _line(output, "read chats")
        assert line.startswith("FAIL")
        assert chat.relative_to(root).as_posix() in line and "Permission denied" in line
        assert str(group_chats) in line
        assert "run st-imagegen as the user that owns" in _fix_after(output, "read chats")
        # It may still write beside the chats: that check passes on its own.
        assert _line(output, "write chats").startswith("PASS")
        assert _line(output, "state dir").startswith("PASS")


def test_read_only_chat_folders_fail_the_write_check(api: FakeAPI) -> None:
    with _world_dir() as world:
        root = world / "data"
        shutil.copytree(FIXTURE, root)
        (world / "state").mkdir()
        _give_to_runner(world / "state")  # only the state dir belongs to the daemon's user
        for folder in (root / "default-user" / "chats").iterdir():
            folder.chmod(0o555)  # root-owned under root; read-only for us otherwise
        config = _config(world, root, api.base_url)
        with _as_nobody(config):
            code, output = _doctor(config, skip_image=True)
        assert code == 1, output
        assert _line(output, "read chats").startswith("PASS")
        line = _line(output, "write chats")
        assert line.startswith("FAIL") and "Permission denied" in line
        assert "ReadWritePaths" in _fix_after(output, "write chats")
        assert list(root.rglob("*st-imagegen-doctor*")) == []


# --- the command line and the health check --------------------------------------------------------


def test_cli_doctor_exit_codes(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    _config(tmp_path, st_root_latest, api.base_url)
    cli = [sys.executable, "-m", "daemon", "doctor", "--config", str(tmp_path / "config.toml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
    good = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    (tmp_path / "empty").mkdir()
    env["ST_IMAGEGEN_DATA_ROOT"] = str(tmp_path / "empty")  # the environment wins over the file
    bad = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert bad.returncode == 1
    assert "FAIL  data root:" in bad.stdout


def _heartbeat(config: Config, *, age: float, state: str = "running") -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "time": time.time() - age, "watching": 4, "state": state}
    config.heartbeat_path.write_text(json.dumps(record), encoding="utf-8")


def test_healthcheck_judges_the_heartbeat(st_root_latest: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, st_root_latest, "http://127.0.0.1:9/v1")
    out = io.StringIO()
    assert cmd_healthcheck(config, out=out) == 1
    assert "no heartbeat" in out.getvalue()
    _heartbeat(config, age=1.0)
    out = io.StringIO()
    assert cmd_healthcheck(config, out=out) == 0
    assert out.getvalue().startswith("healthy")
    _heartbeat(config, age=600.0)
    out = io.StringIO()
    assert cmd_healthcheck(config, out=out) == 1
    assert out.getvalue().startswith("unhealthy") and "last heartbeat 10 min ago" in out.getvalue()
    config.heartbeat_path.write_text("{half a reco", encoding="utf-8")
    assert cmd_healthcheck(config, out=io.StringIO()) == 1


def test_malformed_api_url_is_a_failed_check_not_a_crash(
    st_root_latest: Path, tmp_path: Path
) -> None:
    code, output = _doctor(_config(tmp_path, st_root_latest, "api.example.com/v1"))
    assert code == 1
    assert "is not an http(s) URL" in _line(output, "prompt API")
    assert "fix text.api_url" in _fix_after(output, "prompt API")
    assert _line(output, "read chats").startswith("PASS")  # the other checks still ran


def test_a_model_missing_from_the_list_is_a_warning_not_a_failure(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI
) -> None:
    """Regression: doctor failed on gateways that list only some of their models."""
    config = _config(
        tmp_path, st_root_latest, api.base_url, ST_IMAGEGEN_IMAGE__MODEL="unlisted-model"
    )
    code, output = _doctor(config)
    assert code == 0, output
    line = _line(output, "image API")
    assert line.startswith("WARN") and "'unlisted-model' is not in" in line
    assert "check image.model" in _fix_after(output, "image API")
    assert ("GET", "/v1/models/unlisted-model") in api.seen()


def test_a_damaged_state_database_fails_with_the_way_out(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI
) -> None:
    config = _config(tmp_path, st_root_latest, api.base_url)
    code, output = _doctor(config, skip_image=True)
    assert code == 0 and "does not exist yet" in _line(output, "state database"), output
    _damage_state_db(config)
    code, output = _doctor(config, skip_image=True)
    assert code == 1
    assert "is damaged" in _line(output, "state database")
    assert "move state.db" in _fix_after(output, "state database")


def _damage_state_db(config: Config) -> None:
    """A real state DB with a few thousand jobs, its middle pages overwritten."""
    import anyio

    from daemon.engine.store import Store

    async def fill() -> None:
        store = await Store.open(config.db_path)
        for n in range(3000):
            await store.create_job(
                reply=ReplyKey(
                    "default-user", f"default-user/chats/A/c{n}.jsonl", "A", f"d{n}", f"r{n}"
                ),
                character="A",
                is_group=False,
                speaker="A",
                message_index=n,
                excerpt="x" * 200,
            )
        await store.close()

    anyio.run(fill)
    size = config.db_path.stat().st_size
    with config.db_path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\x07" * (size // 8))


def test_run_on_a_damaged_state_database_is_one_clear_line(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI
) -> None:
    """Regression: `run` ended in an 80-line ExceptionGroup traceback (or ran on broken state)."""
    config = _config(tmp_path, st_root_latest, api.base_url)
    _damage_state_db(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}
    run = [str(Path(sys.executable).parent / "st-imagegen"), "run"]
    args = ["--config", str(tmp_path / "config.toml")]
    done = subprocess.run(run + args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "is damaged" in lines[0] and "never chat data" in lines[0]
    assert "Traceback" not in done.stderr
    debug = subprocess.run(
        [*run, "--debug", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
