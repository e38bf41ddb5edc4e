"""``list`` without the engine (daemon.cli.quick): the same output as the full path, the full
path whenever the config is not the one stamped, and an import graph free of the heavy modules
(the guard against start-up creeping back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import quick as quick_module
from daemon.configure import locate
from tests.engine.test_cli import cfg_path, cli, make_jobs  # noqa: F401 - the fixture

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
    assert b"sk-very" not in stamp and len(stamp) == 65


def test_list_imports_nothing_heavy(cfg_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """The guard: a heavy module creeping into ``list``'s import graph fails this test."""
    job = make_jobs(cfg_path, 2)[-1]
    assert cli(capsys, "list", "--config", str(cfg_path))[0] == 0  # stamps the config
    code = (
        "import sys\n"
        "from daemon.cli.commands import main\n"
        f"status = main(['list', '--config', {str(cfg_path)!r}])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', status, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, job.id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_env(),
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last == "HEAVY 0 []", result.stdout + result.stderr
    assert job.id[:12] in result.stdout
