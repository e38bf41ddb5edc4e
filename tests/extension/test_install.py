"""`st-imagegen extension install|uninstall` and doctor's check, on real folders laid out the
way SillyTavern has them (data/<user>/extensions/, public/scripts/extensions/third-party/)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from daemon import __version__
from daemon.cli.commands import main
from daemon.config import Config, load_config
from daemon.doctor import check_extension
from daemon.errors import ExtensionError
from daemon.extension import (
    EXTENSION_NAME,
    INSTALLED_FILE,
    cmd_extension,
    find_installs,
    install,
    shipped_files,
    shipped_version,
    source_dir,
    uninstall,
)

REPO = Path(__file__).resolve().parents[2]


def st_install(tmp_path: Path, users: tuple[str, ...] = ("default-user", "alice")) -> Path:
    """An ST install folder: server.js, public/scripts/extensions/, data/<user>/chats/."""
    folder = tmp_path / "SillyTavern"
    (folder / "public" / "scripts" / "extensions" / "third-party").mkdir(parents=True)
    (folder / "server.js").write_text("// ST", encoding="utf-8")
    for user in users:
        (folder / "data" / user / "chats").mkdir(parents=True)
    return folder


def config_for(tmp_path: Path, data_root: Path, **web: object) -> Config:
    path = tmp_path / "config.toml"
    lines = [f"data_root = {json.dumps(str(data_root))}", f'state_dir = "{tmp_path / "state"}"']
    if web:
        lines.append("[web]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in web.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path, environ={})


def test_shipped_files_are_the_extension_and_match_the_daemon_version() -> None:
    source = source_dir()
    assert source.resolve() == (REPO / "extension").resolve()
    files = {str(p) for p in shipped_files()}
    assert {"manifest.json", "index.js", "style.css", "lib/protocol.js"} <= files
    assert not any(f.startswith("test/") or f == "package.json" for f in files)
    assert shipped_version() == __version__  # bump both together
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["display_name"] == EXTENSION_NAME
    for key in ("js", "css", "loading_order", "author", "homepage", "version"):
        assert key in manifest
    assert (source / manifest["js"]).is_file() and (source / manifest["css"]).is_file()


def test_install_every_user_then_update_then_uninstall(tmp_path: Path) -> None:
    st = st_install(tmp_path)
    config = config_for(tmp_path, st)
    out = io.StringIO()
    assert cmd_extension(config, "install", out=out) == 0
    for user in ("default-user", "alice"):
        target = st / "data" / user / "extensions" / EXTENSION_NAME
        for rel in shipped_files():
            if rel != INSTALLED_FILE:
                assert (target / rel).read_bytes() == (source_dir() / rel).read_bytes()
        assert not (target / "test").exists()
    text = out.getvalue()
    assert f"{EXTENSION_NAME} {__version__} installed for user alice" in text
    assert "Reload SillyTavern" in text and "http://127.0.0.1:8000" in text

    # An older copy is replaced whole (a file the new version no longer has goes too).
    target = st / "data" / "alice" / "extensions" / EXTENSION_NAME
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    (target / "manifest.json").write_text(json.dumps({**manifest, "version": "0.0.1"}))
    (target / "lib" / "gone.js").write_text("old")
    out = io.StringIO()
    assert cmd_extension(config, "install", user="alice", out=out) == 0
    assert "updated from 0.0.1 for user alice" in out.getvalue()
    assert not (target / "lib" / "gone.js").exists()
    assert [p.name for p in target.parent.iterdir()] == [EXTENSION_NAME]  # no temp folders left

    out = io.StringIO()
    assert cmd_extension(config, "uninstall", out=out) == 0
    assert not target.exists()
    assert "removed for user default-user" in out.getvalue()
    assert cmd_extension(config, "uninstall", user="alice", out=out) == 0
    assert "not installed for user alice" in out.getvalue()


def test_all_users_goes_into_third_party_of_the_install_folder(tmp_path: Path) -> None:
    st = st_install(tmp_path)
    for data_root in (st, st / "data"):  # the install folder or its data/ folder
        config = config_for(tmp_path, data_root)
        assert cmd_extension(config, "install", all_users=True, out=io.StringIO()) == 0
        target = st / "public" / "scripts" / "extensions" / "third-party" / EXTENSION_NAME
        assert (target / "index.js").is_file()
        (installed,) = find_installs(config)
        assert installed.user is None and installed.version == __version__
        assert uninstall(target) and not target.exists()


def test_all_users_needs_the_install_folder(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "default-user" / "chats").mkdir(parents=True)
    config = config_for(tmp_path, root)
    with pytest.raises(ExtensionError, match="--st-folder"):
        cmd_extension(config, "install", all_users=True, out=io.StringIO())
    st = st_install(tmp_path / "elsewhere")
    assert cmd_extension(config, "install", all_users=True, st_folder=st, out=io.StringIO()) == 0
    assert (st / "public/scripts/extensions/third-party" / EXTENSION_NAME / "index.js").is_file()


def test_never_replaces_or_removes_a_folder_that_is_not_ours(tmp_path: Path) -> None:
    st = st_install(tmp_path)
    target = st / "data" / "alice" / "extensions" / EXTENSION_NAME
    target.mkdir(parents=True)
    (target / "manifest.json").write_text('{"display_name": "something else"}')
    with pytest.raises(ExtensionError, match="not st-imagegen's extension"):
        install(target)
    with pytest.raises(ExtensionError, match="left alone"):
        uninstall(target)
    assert (target / "manifest.json").read_text() == '{"display_name": "something else"}'
    shutil.rmtree(target)
    install(target)
    (target / ".git").mkdir()
    with pytest.raises(ExtensionError, match="git checkout"):
        install(target)


def test_unknown_user_names_the_users(tmp_path: Path) -> None:
    config = config_for(tmp_path, st_install(tmp_path))
    with pytest.raises(ExtensionError, match=r"no SillyTavern user 'bob'.*alice, default-user"):
        cmd_extension(config, "install", user="bob", out=io.StringIO())


def test_cli_install_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    st = st_install(tmp_path, users=("default-user",))
    monkeypatch.setenv("ST_IMAGEGEN_STATE_DIR", str(tmp_path / "state"))
    args = ["extension", "install", "--data-root", str(st), "--config", str(tmp_path / "no.toml")]
    (tmp_path / "no.toml").write_text("", encoding="utf-8")
    assert main(args) == 0
    assert (st / "data/default-user/extensions" / EXTENSION_NAME / "manifest.json").is_file()
    assert "installed for user default-user" in capsys.readouterr().out
    assert main([*args, "--user", "x", "--all-users"]) == 2  # one or the other
    assert main([*args[:1], "upgrade"]) == 2
    assert main([*args, "--user", "nobody"]) == 1
    assert "no SillyTavern user 'nobody'" in capsys.readouterr().err


def test_doctor_reports_missing_same_and_other_versions(tmp_path: Path) -> None:
    st = st_install(tmp_path)
    config = config_for(tmp_path, st)
    result = check_extension(config)
    assert result.status == "SKIP" and "extension install" in result.detail
    cmd_extension(config, "install", user="alice", out=io.StringIO())
    result = check_extension(config)
    assert result.status == "PASS"
    assert result.detail == f"{__version__} installed for user alice ({__version__})"
    manifest = st / "data/alice/extensions" / EXTENSION_NAME / "manifest.json"
    manifest.write_text(json.dumps({"display_name": EXTENSION_NAME, "version": "0.0.1"}))
    result = check_extension(config)
    assert result.status == "WARN" and "user alice has another version" in result.detail
    assert "extension install" in result.fix


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed (the CI installs it)")
@pytest.mark.parametrize(
    ("web", "token"), [({"port": 18320}, False), ({"require_token": True}, True)]
)
def test_installed_copy_calls_the_daemon_at_its_real_address(
    tmp_path: Path, web: dict[str, object], token: bool
) -> None:
    """The copy's settings default to the daemon's configured address (not the built-in :8765),
    and the output names that address and, with a token, exactly what to paste where."""
    st = st_install(tmp_path, users=("default-user",))
    config = config_for(tmp_path, st / "data", **web)
    out = io.StringIO()
    assert cmd_extension(config, "install", out=out) == 0
    port = web.get("port", 8765)
    address = f"http://127.0.0.1:{port}"
    text = out.getvalue()
    assert f"calls the daemon at {address} " in text and "(the default)" not in text
    assert ("paste the part after `?token=` into Extensions → st-imagegen → Token" in text) is token
    target = st / "data" / "default-user" / "extensions" / EXTENSION_NAME
    assert "token" not in (target / INSTALLED_FILE).read_text(encoding="utf-8").lower()
    # What the extension itself makes of it, in Node: a fresh user, an old stored default, and
    # an address the user typed (kept).
    script = (
        "const m = await import(process.argv[1]);"
        "const fresh = m.loadSettings({});"
        "const old = m.loadSettings({'st-imagegen': {address: 'http://127.0.0.1:8765'}});"
        "const typed = m.loadSettings("
        "{'st-imagegen': {address: 'http://box:1', addressEdited: true}});"
        "console.log(JSON.stringify([fresh.address, old.address, typed.address]));"
    )
    settings_js = (target / "lib" / "settings.js").as_uri()
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script, settings_js],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == [address, address, "http://box:1"]


@pytest.mark.skipif(NODE is None, reason="node is not installed (the CI installs it)")
def test_each_users_install_holds_that_users_own_token(tmp_path: Path) -> None:
    """Several ST users: each per-user copy gets a user token bound to that user (a reinstall
    replaces it, the old one revoked); the extension takes it unless the user typed one."""
    from daemon.web.access import UserTokens

    st = st_install(tmp_path)  # default-user and alice: tokens needed even on loopback
    config = config_for(tmp_path, st / "data")
    out = io.StringIO()
    assert cmd_extension(config, "install", user="alice", out=out) == 0
    assert "holds its own user's token" in out.getvalue()
    target = st / "data" / "alice" / "extensions" / EXTENSION_NAME
    text = (target / INSTALLED_FILE).read_text(encoding="utf-8")
    token = json.loads(text.split("freeze(", 1)[1].rsplit(")", 1)[0])["token"]
    tokens = UserTokens(config.state_dir)
    found = tokens.find(token)
    assert found is not None and found.handles == ("alice",)
    assert not (st / "data" / "default-user" / "extensions" / EXTENSION_NAME).exists()

    assert cmd_extension(config, "install", user="alice", out=io.StringIO()) == 0
    again = (target / INSTALLED_FILE).read_text(encoding="utf-8")
    assert token not in again and tokens.find(token) is None  # the old copy's token is revoked
    assert len(tokens.tokens()) == 1

    script = (
        "const m = await import(process.argv[1]);"
        "const fresh = m.loadSettings({});"
        "const typed = m.loadSettings({'st-imagegen': {token: 'mine', tokenEdited: true}});"
        "console.log(JSON.stringify([fresh.token, typed.token]));"
    )
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script, (target / "lib" / "settings.js").as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    newer = json.loads(again.split("freeze(", 1)[1].rsplit(")", 1)[0])["token"]
    assert json.loads(done.stdout) == [newer, "mine"]

    single = st_install(tmp_path / "one", users=("default-user",))
    one = config_for(tmp_path / "one", single / "data")
    assert cmd_extension(one, "install", user="default-user", out=io.StringIO()) == 0
    copy = single / "data" / "default-user" / "extensions" / EXTENSION_NAME / INSTALLED_FILE
    assert "token" not in copy.read_text(encoding="utf-8")  # one user on loopback: none needed
