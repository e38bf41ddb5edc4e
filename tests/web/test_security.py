"""Who may use the inbox: token, cookie login, Origin, Host, CORS, hostile paths, web-url."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from daemon.cli.commands import main
from daemon.config import load_config
from daemon.engine.store import JobState
from daemon.errors import ConfigError
from daemon.web.app import build_app
from daemon.web.security import COOKIE, is_loopback, load_token, token_required
from tests.engine.conftest import FakeAPI, MakeConfig
from tests.web.conftest import Inbox, inbox_for, web_config

pytestmark = pytest.mark.anyio

TOKEN = "test-token-0123456789abcdef"
ST = "http://127.0.0.1:8000"


def _asgi(
    inbox: Inbox, token: str | None = TOKEN, host: str = "127.0.0.1:8765"
) -> httpx.AsyncClient:
    app = build_app(inbox.ctx, token)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"http://{host}", timeout=10.0
    )


async def test_without_the_token_nothing_is_served(inbox: Inbox) -> None:
    job = await inbox.pending()
    async with _asgi(inbox) as c:
        for path in ("/api/v1/jobs", f"/api/v1/jobs/{job.id}/images/1", "/api/v1/events"):
            answer = await c.get(path)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
        wrong = await c.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        page = await c.get("/")
        assert page.status_code == 401 and "web-url" in page.text
        refused = await c.post(f"/api/v1/jobs/{job.id}/accept", json={})
        assert refused.status_code == 401
        assert (await inbox.job(job.id)).state is JobState.PENDING
        assert (await c.get("/static/app.css")).status_code == 200  # no secrets in assets
        ok = await c.get("/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["jobs"][0]["id"] == job.id


async def test_the_token_link_sets_a_strict_cookie_and_drops_the_token(inbox: Inbox) -> None:
    async with _asgi(inbox) as c:
        bad = await c.get("/?token=wrong")
        assert bad.status_code == 401
        login = await c.get(f"/history?token={TOKEN}&state=failed")
        assert login.status_code == 303
        assert login.headers["location"] == "/history?state=failed"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert login.headers["referrer-policy"] == "no-referrer"
        c.cookies.set(COOKIE, TOKEN)
        page = await c.get("/history?state=failed")
        assert page.status_code == 200 and "History" in page.text
        assert (await c.get("/api/v1/status")).status_code == 200


async def test_foreign_origins_cannot_act_and_get_no_cors(inbox: Inbox) -> None:
    job = await inbox.pending()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with _asgi(inbox) as c:
        evil = {**auth, "Origin": "http://evil.example"}
        refused = await c.post(f"/api/v1/jobs/{job.id}/reject", json={}, headers=evil)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden_origin"
        assert (await inbox.job(job.id)).state is JobState.PENDING
        read = await c.get("/api/v1/jobs", headers=evil)
        assert "access-control-allow-origin" not in read.headers
        preflight = await c.options(
            f"/api/v1/jobs/{job.id}/reject",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 403
        assert "access-control-allow-origin" not in preflight.headers

        ok = await c.options(
            f"/api/v1/jobs/{job.id}/reject",
            headers={"Origin": ST, "Access-Control-Request-Method": "POST"},
        )
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == ST
        assert ok.headers["access-control-allow-credentials"] == "true"
        assert "Authorization" in ok.headers["access-control-allow-headers"]
        own = {**auth, "Origin": "http://127.0.0.1:8765"}
        listed = await c.get("/api/v1/jobs", headers={**auth, "Origin": ST})
        assert listed.headers["access-control-allow-origin"] == ST
        done = await c.post(f"/api/v1/jobs/{job.id}/reject", json={}, headers=own)
        assert done.status_code == 200 and done.json()["state"] == "rejected"


async def test_post_bodies_must_be_json_so_forms_cannot_act(inbox: Inbox) -> None:
    job = await inbox.pending()
    async with _asgi(inbox, token=None) as c:
        form = await c.post(f"/api/v1/jobs/{job.id}/accept", data={"keep": "1"})
        assert form.status_code == 415
        assert (await inbox.job(job.id)).state is JobState.PENDING


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8765", "localhost.evil.example", "", "[::1"]
)
async def test_foreign_host_headers_are_refused(inbox: Inbox, host: str) -> None:
    async with _asgi(inbox, token=None) as c:
        answer = await c.get("/api/v1/jobs", headers={"Host": host})
        assert answer.status_code in (400, 421)
        assert answer.json()["error"]["code"] == "misdirected"


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "10.0.0.5"])
async def test_own_and_ip_hosts_are_served(inbox: Inbox, host: str) -> None:
    async with _asgi(inbox, token=None) as c:
        answer = await c.get("/api/v1/jobs", headers={"Host": host})
        assert answer.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/..%2F..%2Fstate.db/images/1",
        "/api/v1/jobs/%2e%2e/images/1",
        "/api/v1/jobs/%00/images/1",
        "/api/v1/jobs/" + "A" * 5000 + "/images/1",
        "/api/v1/jobs/{id}/images/..%2F..%2Fstate.db",
        "/api/v1/jobs/{id}/images/1%00",
        "/api/v1/jobs/{id}/images/99999",
        "/static/..%2F..%2Fapi.py",
        "/static/../api.py",
    ],
)
async def test_hostile_paths_serve_nothing(inbox: Inbox, path: str) -> None:
    job = await inbox.pending()
    before = sorted(p.name for p in inbox.config.state_dir.iterdir())
    async with inbox.client() as c:
        answer = await c.get(path.replace("{id}", job.id))
    assert answer.status_code in (400, 404), answer.text
    assert b"SQLite" not in answer.content and b"import" not in answer.content
    assert sorted(p.name for p in inbox.config.state_dir.iterdir()) == before


async def test_a_reply_with_html_stays_text(inbox: Inbox) -> None:
    job = await inbox.pending("xss", ["<script>alert('x')</script><img src=x onerror=alert(1)>"])
    await inbox.service.store.transition(job.id, JobState.PENDING, JobState.FAILED)
    async with inbox.client() as c:
        history = await c.get("/history")
        inbox_page = await c.get("/")
    assert "<script>alert" not in history.text and "&lt;script&gt;alert" in history.text
    assert "<img src=x" not in history.text
    assert "<script>alert" not in inbox_page.text and "\\u003cscript\\u003e" in inbox_page.text
    assert "script-src 'self'" in inbox_page.headers["content-security-policy"]


def test_token_rules_and_file(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[web]\nhost = "0.0.0.0"\n')
    config = load_config(cfg, environ={})
    assert token_required(config.web)
    token = load_token(config)
    path = tmp_path / "state" / "web-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
    assert load_token(config) == token
    missing = load_config(cfg, environ={"ST_IMAGEGEN_WEB__TOKEN_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="token_file"):
        load_token(missing)


async def test_a_token_daemon_serves_with_its_token_and_web_url_prints_it(
    make_config: MakeConfig,
    tmp_path: Path,
    fake_api: FakeAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = web_config(make_config, tmp_path, fake_api, web={"require_token": True})
    async with inbox_for(config) as inbox:
        token = (config.state_dir / "web-token").read_text().strip()
        address = (config.state_dir / "web.json").read_text()
        assert token not in address
        async with inbox.client() as c:
            assert (await c.get("/api/v1/jobs")).status_code == 401
            headers = {"Authorization": f"Bearer {token}"}
            assert (await c.get("/api/v1/jobs", headers=headers)).status_code == 200
        assert main(["web-url", "--config", str(tmp_path / "config.toml")]) == 0
        out = capsys.readouterr().out.strip().splitlines()[-1]  # the daemon logs there too
        assert out == f"{inbox.url}/?token={token}"
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=True) as c:
            login = await c.get(out)
            assert login.status_code == 200 and "Inbox" in login.text  # followed the 303
    assert not (config.state_dir / "web.json").exists()  # gone when the daemon stops
    assert main(["web-url", "--config", str(tmp_path / "config.toml")]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("http://127.0.0.1:8765/?token=")
    assert "not running" in captured.err
    assert os.environ.get("ST_IMAGEGEN_WEB__TOKEN_FILE") is None


def test_compose_publishes_the_inbox_on_the_hosts_loopback(tmp_path: Path) -> None:
    import yaml

    compose = Path(__file__).resolve().parents[2] / "examples" / "compose.yaml"
    ours = yaml.safe_load(compose.read_text(encoding="utf-8"))["services"]["st-imagegen"]
    assert "127.0.0.1:8765:8765" in ours["ports"]
    env = {k: str(v) for k, v in ours["environment"].items() if k.startswith("ST_IMAGEGEN_WEB__")}
    config_file = tmp_path / "config.toml"
    config_file.write_text("", encoding="utf-8")
    web = load_config(config_file, environ=env).web
    assert web.host == "0.0.0.0" and token_required(web)  # reachable only with the token


def test_web_url_does_not_believe_an_address_left_by_a_killed_daemon(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: after kill -9, web.json stayed and web-url printed the dead address."""
    from daemon.engine.process.lock import hold_state_lock

    config = web_config(make_config, tmp_path, fake_api)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    stale = {"url": "http://127.0.0.1:45678/", "host": "127.0.0.1", "port": 45678}
    (config.state_dir / "web.json").write_text(json.dumps(stale), encoding="utf-8")
    args = ["web-url", "--config", str(tmp_path / "config.toml")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "45678" not in captured.out and "not running" in captured.err
    with hold_state_lock(config.state_dir):  # a live daemon: its address is believed
        assert main(args) == 0
        assert capsys.readouterr().out.strip() == stale["url"]
