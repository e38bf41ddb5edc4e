"""``list``, ``show`` and ``status`` without the engine (daemon.cli.quick): the same output as
the full path in every state, the full path whenever the config is not the one stamped, and an
import graph free of the heavy modules (the guard against start-up creeping back)."""

from __future__ import annotations

import difflib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from daemon.cli import quick as quick_module
from daemon.config import load_config
from daemon.configure import locate
from daemon.engine.jobs import accepting
from daemon.engine.store import JobState, Store
from daemon.jobstate import ReplyKey
from tests.engine.test_cli import cfg_path, cli, get_job, make_jobs  # noqa: F401 - the fixture

HEAVY = (
    "anyio",
    "structlog",
    "pydantic",
    "pydantic_settings",
    "platformdirs",
    "httpx",
    "watchdog",
    "PIL",
    "daemon.config",
    "daemon.logs",
    "daemon.web",
    "daemon.engine.front",
    "daemon.engine.store.db",
    "daemon.engine.store.jobs",
    "daemon.engine.jobs.approval",
    "daemon.engine.jobs.pipeline",
    "daemon.engine.process.status",
    "daemon.configure.viewof",
    "daemon.providers.registry",
    "daemon.tavern.chat",
)
"""What a read-only query must not load: the engine, its config models, logging, the web."""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ST_IMAGEGEN_")}


def test_list_gives_the_full_paths_output(
    cfg_path: Path,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("ST_IMAGEGEN_")]:
        monkeypatch.delenv(key)
    jobs = make_jobs(cfg_path, 3)
    capsys.readouterr()  # the store's log lines
    c = ["--config", str(cfg_path)]
    state_dir = cfg_path.parent / "state"
    stamp = state_dir / locate.STAMP_FILE
    assert not stamp.exists()
    commands = [["list"], ["list", "--json"], ["list", "--state", "pending", "--limit", "2"]]
    commands += [["list", "--state", "committed"]]
    taken: list[str] = []
    original = quick_module.quick

    def spy(args: object) -> int | None:
        result = original(args)  # type: ignore[arg-type]
        taken.append("quick" if result is not None else "full")
        return result

    monkeypatch.setattr(quick_module, "quick", spy)
    full, fast = [], []
    for argv in commands:
        stamp.unlink(missing_ok=True)
        full.append(cli(capsys, *argv, *c))  # validates the config, then stamps it
        assert stamp.is_file()
        fast.append(cli(capsys, *argv, *c))
    assert taken == ["full", "quick"] * len(commands)
    assert all(code == 0 for code, _, _ in full)
    assert fast == full
    assert json.loads(fast[1][1])[0]["id"] == jobs[-1].id  # newest first
    assert "Alice · Alice - cli" in fast[0][1]  # the chat's title, as the full path names it

    # Any change to what the config depends on means the full path (and its errors).
    taken.clear()
    text = cfg_path.read_text(encoding="utf-8")
    cfg_path.write_text(text.replace("[detect]\n", "[detect]\nsettle_secs = 3\n"), "utf-8")
    code, out, err = cli(capsys, "list", *c)
    assert taken == ["full"] and code == 1 and "settle_secs" in err and out == ""
    cfg_path.write_text(text, encoding="utf-8")
    assert cli(capsys, "list", *c)[0] == 0 and cli(capsys, "list", *c)[0] == 0
    assert taken == ["full", "quick", "quick"]  # restored: the stamped bytes again
    monkeypatch.setenv("ST_IMAGEGEN_MODE", "manual")
    assert cli(capsys, "list", *c)[0] == 0
    assert taken[-1] == "full"
    code, _, err = cli(capsys, "show", *c, "ZZZZZZZZ")
    assert code == 1 and "no job" in err


def test_the_stamp_holds_no_secret(cfg_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    text = cfg_path.read_text(encoding="utf-8")
    cfg_path.write_text(
        text.replace("[text]\n", '[text]\napi_key = "sk-very-secret-key"\n'), encoding="utf-8"
    )
    assert cli(capsys, "list", "--config", str(cfg_path))[0] == 0
    stamp = (cfg_path.parent / "state" / locate.STAMP_FILE).read_bytes()
    assert b"sk-very" not in stamp
    digest, view = stamp.split(b"\n", 1)
    assert len(digest) == 64 and json.loads(view)["state_dir"] == str(cfg_path.parent / "state")


def _seed_states(cfg_path: Path) -> dict[str, str]:  # noqa: F811 - not the fixture
    """Jobs in the states ``show`` and ``status`` print differently, through the real store:
    pending with images, failed, queued and held by a cap, committed with its message not yet
    seen by ST (an open ledger entry), and spend today."""
    pending = make_jobs(cfg_path, 3)
    config = load_config(cfg_path, environ={})

    async def _seed() -> dict[str, str]:
        store = await Store.open(config.db_path)
        try:
            failed = await store.fail(pending[0].id, "the image API said 500 (server error)")
            assert failed is not None
            held = await store.create_job(
                reply=ReplyKey(
                    "default-user",
                    "default-user/chats/Alice/Alice - cli.jsonl",
                    "Alice",
                    "2026-11-23T13:00:00.000Z",
                    "0:def",
                ),
                character="Alice",
                is_group=False,
                speaker="Alice",
                message_index=41,
                excerpt="a held reply",
                meta={"held": "daily budget reached: 2.00 of 2.00 USD", "held_fix": "raise it"},
            )
            assert held is not None
            done = await store.transition(
                pending[1].id, JobState.PENDING, JobState.COMMITTED, check=False
            )
            assert done is not None
            await store.ledger_add(
                job_id=done.id,
                reply=done.reply,
                message={"name": "Alice", "is_system": True, "mes": ""},
            )
            await store.record_spend(
                pending[2].id, "default-user", pending[2].chat, usd=0.04, images=1, estimated=True
            )
            return {
                "failed": failed.id,
                "held": held.id,
                "committed": done.id,
                "pending": pending[2].id,
            }
        finally:
            await store.close()

    return anyio.run(_seed)


_CLOCK = re.compile(r"\b\d+ (s|min|h|days)\b( ago)?")


def _steady(text: str) -> str:
    """The output without what the clock changes between two runs (ages)."""
    if text.startswith(("{", "[")):

        def drop(value: object) -> object:
            if isinstance(value, dict):
                return {k: drop(v) for k, v in value.items() if k != "age_seconds"}
            if isinstance(value, list):
                return [drop(v) for v in value]
            return value

        return json.dumps(drop(json.loads(text)), indent=1)
    return _CLOCK.sub("AGE", text)


def _heartbeat(cfg_path: Path, **config: object) -> None:  # noqa: F811 - not the fixture
    """A running daemon's heartbeat (this process's pid, fresh), as the service writes it."""
    from daemon import __version__
    from daemon.engine.process.notify import Heartbeat

    path = cfg_path.parent / "state" / "heartbeat"
    Heartbeat(path, __version__).write(watching=3, config=config)


def test_show_and_status_give_the_full_paths_output(
    cfg_path: Path,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("ST_IMAGEGEN_")]:
        monkeypatch.delenv(key)
    ids = _seed_states(cfg_path)
    capsys.readouterr()
    c = ["--config", str(cfg_path)]
    stamp = cfg_path.parent / "state" / locate.STAMP_FILE
    taken: list[str] = []
    original = quick_module.quick

    forced = [False]  # the full path asked for, with the stamp in place (same state dir)

    def spy(args: object) -> int | None:
        if forced[0]:
            taken.append("full")
            return None
        try:
            result = original(args)  # type: ignore[arg-type]
        except Exception:
            taken.append("quick")  # it answered, with the same error as the full path
            raise
        taken.append("quick" if result is not None else "full")
        return result

    monkeypatch.setattr(quick_module, "quick", spy)
    assert cli(capsys, "list", *c)[0] == 0 and stamp.is_file()  # validates, then stamps
    commands = [["show", ids[name]] for name in ("failed", "held", "committed", "pending")]
    commands += [["show", ids["pending"][:20].lower(), "--json"], ["show", ids["failed"], "--json"]]
    commands += [["status"], ["status", "--json"]]

    def both(argv: list[str]) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        taken.clear()
        forced[0] = True
        full = cli(capsys, *argv, *c)
        forced[0] = False
        fast = cli(capsys, *argv, *c)
        assert taken == ["full", "quick"], argv
        return full, fast

    def same(argv: list[str]) -> str:
        full, fast = both(argv)
        assert full[0] == 0 and full[2] == "", full
        diff = "\n".join(
            difflib.unified_diff(_steady(full[1]).split("\n"), _steady(fast[1]).split("\n"))
        )
        assert (fast[0], _steady(fast[1]), fast[2]) == (full[0], _steady(full[1]), full[2]), diff
        return fast[1]

    outs = {" ".join(argv): same(argv) for argv in commands}
    assert "the image API said 500" in outs[f"show {ids['failed']}"]
    assert "held:" in outs[f"show {ids['held']}"] and "0.04 USD" in outs["status"]
    assert "held back: 1 job" in outs["status"] and "last errors:" in outs["status"]
    assert "waiting for SillyTavern: 1 image message" in outs["status"]
    assert "daemon: not running" in outs["status"]

    # A running daemon: its heartbeat, and its word on the config (restart pending, a problem
    # with the file it keeps running without).
    _heartbeat(cfg_path, restart_pending=["web.port"], setup_needed=[])
    out = same(["status"])
    assert "daemon: running (pid" in out and "config: restart pending (web.port" in out
    same(["status", "--json"])
    problem = {"file": str(cfg_path), "line": 3, "message": "unknown key 'x'"}
    _heartbeat(cfg_path, problem=problem, restart_pending=[], setup_needed=["image service"])
    out = same(["status"])
    assert "config: NOT APPLIED" in out and "not set up yet (image service)" in out

    # The data root gone (a drive not mounted): both say so, and still show the jobs.
    root = cfg_path.parent / "data"
    root.rename(cfg_path.parent / "elsewhere")
    out = same(["status"])
    assert "data root: problem:" in out and "jobs: " in out
    assert "Alice" in same(["show", ids["failed"]])  # the chat named from its path alone
    same(["status", "--json"])
    (cfg_path.parent / "elsewhere").rename(root)

    # Unknown and ambiguous jobs: the same one-line error, exit 1, from either path.
    full, fast = both(["show", "ZZZZZZZZ"])
    assert full == fast and full[0] == 1 and "no job" in full[2]
    full, fast = both(["show", "0"])
    assert full == fast and full[0] == 1 and "ambiguous" in full[2]

    # A broken config: status takes the full path and says what is wrong; no stamp for it.
    (cfg_path.parent / "state" / "heartbeat").unlink()  # the daemon stopped
    text = cfg_path.read_text(encoding="utf-8")
    cfg_path.write_text(text.replace("[detect]\n", "[detect]\nsettle_secs = 3\n"), "utf-8")
    taken.clear()
    code, out, _ = cli(capsys, "status", *c)
    assert code == 0 and taken == ["full"] and "config: problem" in out and "settle_secs" in out
    code, out, _ = cli(capsys, "status", *c)
    assert taken == ["full", "full"]
    cfg_path.write_text(text, encoding="utf-8")

    # No store, or one of another schema: the full path (which creates or migrates it).
    db = cfg_path.parent / "state" / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 1")
    taken.clear()
    code, out, _ = cli(capsys, "status", *c)
    assert code == 0 and taken == ["full"] and "jobs: " in out


def test_accept_gives_the_full_paths_output_and_outcome(
    cfg_path: Path,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each case runs on two jobs alike: the full path on one, the quick one on the other;
    the output (ids aside), the exit code, the job and its folder end the same."""
    for key in [k for k in os.environ if k.startswith("ST_IMAGEGEN_")]:
        monkeypatch.delenv(key)
    jobs = make_jobs(cfg_path, 12, images=3)
    capsys.readouterr()
    c = ["--config", str(cfg_path)]
    state_dir = cfg_path.parent / "state"
    assert cli(capsys, "list", *c)[0] == 0  # validates the config, then stamps it
    taken: list[str] = []
    forced = [False]
    original = quick_module.quick

    def spy(args: object) -> int | None:
        if forced[0]:
            taken.append("full")
            return None
        try:
            result = original(args)  # type: ignore[arg-type]
        except Exception:
            taken.append("quick")  # it answered, with an error
            raise
        taken.append("quick" if result is not None else "full")
        return result

    monkeypatch.setattr(quick_module, "quick", spy)
    ping = state_dir / "wake" / "ping"

    def run(job_id: str, extra: list[str], full: bool) -> tuple[int, str, str]:
        forced[0] = full
        ping.unlink(missing_ok=True)
        code, out, err = cli(capsys, "accept", job_id, *extra, *c)
        assert ping.is_file() == (code == 0)  # a running daemon is woken after a change
        return (
            code,
            out.replace(job_id, "JOB"),
            err.replace(job_id, "JOB").replace(job_id[:10], "JOB"),
        )

    def outcome(job_id: str) -> tuple[object, ...]:
        job = get_job(cfg_path, job_id)
        folder = state_dir / "pending" / job_id
        files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        return job.state, job.images, job.meta.get("not_kept"), files

    pairs = iter(zip(jobs[0::2], jobs[1::2], strict=True))

    def same(extra: list[str], before: Callable[[str], None] = lambda _: None) -> str:
        full_job, fast_job = next(pairs)
        before(full_job.id)
        before(fast_job.id)
        taken.clear()
        full = run(full_job.id, extra, True)
        fast = run(fast_job.id, extra, False)
        assert taken == ["full", "quick"]
        assert fast == full
        assert outcome(fast_job.id) == outcome(full_job.id)
        # Twice: refused the same way by both (the job is accepted).
        again = run(full_job.id, extra, True), run(fast_job.id, extra, False)
        assert again[0] == again[1] and again[0][0] == 1 and "it is accepted" in again[0][2]
        return full[1] + full[2]

    said = same([])
    assert "accepted JOB (3 images)" in said and "the daemon is not running" in said
    assert "accepted JOB (2 images)" in same(["--keep", "3,1"])

    def delete_one(job_id: str) -> None:
        (state_dir / "pending" / job_id / "image-2.png").unlink()

    assert "accepted JOB (2 images)" in same([], delete_one)  # a deleted image is not kept

    def fail(job_id: str) -> None:
        async def _fail() -> None:
            store = await Store.open(load_config(cfg_path, environ={}).db_path)
            try:
                assert await store.fail(job_id, "the API said no") is not None
            finally:
                await store.close()

        anyio.run(_fail)

    full_job, fast_job = next(pairs)
    for job in (full_job, fast_job):
        fail(job.id)
    taken.clear()
    full, fast = run(full_job.id, [], True), run(fast_job.id, [], False)
    assert full == fast and full[0] == 1 and "it is failed (the API said no)" in full[2]
    assert taken == ["full", "quick"]
    full, fast = run(jobs[-1].id, ["--keep", "7"], True), run(jobs[-1].id, ["--keep", "7"], False)
    assert full == fast and full[0] == 1 and "no image 7 to keep" in full[2]
    full, fast = run("ZZZZZZZZ", [], True), run("ZZZZZZZZ", [], False)
    assert full == fast and full[0] == 1 and "no job" in full[2]

    # A daemon's fresh heartbeat, but nothing commits: each waits, then says it is to come.
    monkeypatch.setattr(accepting, "COMMIT_WAIT_SECONDS", 0.3)
    _heartbeat(cfg_path)
    said = same([])
    assert "has not written job JOB into its chat yet; it will" in said
    assert "not running" not in said


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--json"],
        ["show", "JOB"],
        ["show", "JOB", "--json"],
        ["status"],
        ["accept", "JOB"],
    ],
    ids=" ".join,
)
def test_read_only_commands_import_nothing_heavy(
    argv: list[str],
    cfg_path: Path,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The guard: a heavy module creeping into a read-only command's import graph fails this
    test (``list``, ``show``, ``status``, ``accept``; and it must really take the quick
    path)."""
    job = make_jobs(cfg_path, 2)[-1]
    assert cli(capsys, "list", "--config", str(cfg_path))[0] == 0  # stamps the config
    argv = [job.id if a == "JOB" else a for a in argv]
    code = (
        "import sys\n"
        "from daemon.cli import quick\n"
        "from daemon.cli.commands import main\n"
        "taken = []\n"
        "original = quick.quick\n"
        "quick.quick = lambda args: taken.append(original(args)) or taken[-1]\n"
        f"status = main({[*argv, '--config', str(cfg_path)]!r})\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', status, taken != [None], heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_env(),
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last == "HEAVY 0 True []", result.stdout + result.stderr
    assert job.id[: 26 if argv[0] == "accept" else 12] in result.stdout or argv == ["status"]


def test_the_default_folders_are_found_without_platformdirs(
    tmp_path: Path,
    cfg_path: Path,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No ``--config`` and no ``state_dir``: the platform's folders, found as platformdirs finds
    them on Linux without loading it (the guard: a third of the start-up otherwise)."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    for key in [k for k in os.environ if k.startswith("ST_IMAGEGEN_")]:
        monkeypatch.delenv(key)
    default = home / "config" / "st-imagegen" / "config.toml"
    default.parent.mkdir(parents=True)
    text = cfg_path.read_text(encoding="utf-8")
    default.write_text(
        "".join(line for line in text.splitlines(True) if not line.startswith("state_dir")),
        encoding="utf-8",
    )
    import platformdirs

    assert locate.default_config_path() == default
    assert locate.default_state_dir() == home / "state" / "st-imagegen"
    for named in ("", "relative/path", str(home / "other")):  # as platformdirs reads them
        monkeypatch.setenv("XDG_STATE_HOME", named)
        guess = locate._xdg_guess(os.environ, "XDG_STATE_HOME", "~/.local/state")
        assert guess == Path(platformdirs.user_state_dir("st-imagegen"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    job = make_jobs(default, 1)[0]
    assert cli(capsys, "list")[0] == 0  # validates the config, then stamps it
    code = (
        "import sys\n"
        "from daemon.cli import quick\n"
        "from daemon.cli.commands import main\n"
        "taken = []\n"
        "original = quick.quick\n"
        "quick.quick = lambda args: taken.append(original(args)) or taken[-1]\n"
        "status = main(['list'])\n"
        "print('HEAVY', status, taken != [None], 'platformdirs' in sys.modules)\n"
    )
    env = _env() | {"XDG_CONFIG_HOME": str(home / "config"), "XDG_STATE_HOME": str(home / "state")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.stdout.strip().splitlines()[-1] == "HEAVY 0 True False", result
    assert job.id[:12] in result.stdout
