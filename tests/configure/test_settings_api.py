"""The settings and characters API of a running daemon: the same rules as the rest of /api/v1,
checked writes, keys never returned, file-only and pinned keys refused, uploads capped and
decoded."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.engine.process.service import Service
from tests.configure.conftest import live_service
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, config_toml, tiny_png

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]

KEY = "sk-api-test-0123456789abcdef-LAST"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write(tmp_path: Path, root: Path, api: FakeAPI) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "# mine\n"
        f"data_root = {json.dumps(str(root))}\n"
        f"state_dir = {json.dumps(str(tmp_path / 'state'))}\n"
        f'[text]\napi_url = "{api.base_url}"\n'
        f'[image]\napi_url = "{api.base_url}"\nresponse_format = "b64_json"\n'
        "[web]\nport = 0\n",
        encoding="utf-8",
    )
    return path


def client(service: Service) -> httpx.AsyncClient:
    assert service.web is not None
    return httpx.AsyncClient(base_url=service.web.url.rstrip("/"), timeout=30.0)


async def test_settings_round_trip_and_refusals(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI
) -> None:
    path = write(tmp_path, st_root_latest, fake_api)
    async with live_service(path) as service, client(service) as http:
        view = (await http.get("/api/v1/settings")).json()
        fields = {f["key"]: f for g in view["groups"] for f in g["fields"]}
        assert fields["image.api_key"]["value"] == {"set": False, "last4": ""}
        assert {p["name"] for p in view["presets"]["text"]} >= {"openai", "template"}
        saved = await http.post(
            "/api/v1/settings",
            json={"changes": {"detect.every_nth": 2}, "secrets": {"image.api_key": KEY}},
        )
        assert saved.status_code == 200, saved.text
        assert KEY not in saved.text and '"last4":"LAST"' in saved.text.replace(" ", "")
        assert service.config.detect.every_nth == 2  # applied at once
        assert service.config.image.api_key.get_secret_value() == KEY
        assert KEY not in path.read_text(encoding="utf-8")
        # Refused, nothing written: a bad value (named), the web server's own keys, a folder.
        before = path.read_bytes()
        for change, key in (
            ({"detect.every_nth": 0}, "detect.every_nth"),
            ({"web.host": "0.0.0.0"}, None),
            ({"web.require_token": False}, None),
            ({"state_dir": "/tmp/elsewhere"}, None),
        ):
            answer = await http.post("/api/v1/settings", json={"changes": change})
            assert answer.status_code == 422, change
            assert answer.json()["error"].get("key") == key or key is None
        assert path.read_bytes() == before
        # Same rules as the rest of the API: JSON only, a foreign Origin refused.
        form = await http.post("/api/v1/settings", content=b"mode=manual")
        assert form.status_code == 415
        foreign = await http.post(
            "/api/v1/settings",
            json={"changes": {"mode": "manual"}},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403 and service.config.mode == "auto"
        # Test and models on unsaved values: the key given in the form is used, not returned.
        tested = await http.post(
            "/api/v1/settings/test", json={"section": "text", "changes": {"text.model": "x"}}
        )
        assert tested.json()["ok"] is True
        models = await http.post("/api/v1/settings/models", json={"section": "text"})
        assert models.json()["models"] == sorted(fake_api.models)
        preview = await http.post(
            "/api/v1/settings/preview", json={"style": {"prefix": "ink wash", "negative": "x"}}
        )
        assert preview.json()["prompt"].startswith("ink wash, ")


async def test_characters_with_avatars_tags_and_checked_uploads(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI
) -> None:
    path = write(tmp_path, st_root_latest, fake_api)
    async with live_service(path) as service, client(service) as http:
        listed = (await http.get("/api/v1/characters")).json()["characters"]
        assert {c["stem"] for c in listed} == {"Alice", "Bob"}
        alice = next(c for c in listed if c["stem"] == "Alice")
        avatar = await http.get(alice["avatar"])
        assert avatar.status_code == 200 and avatar.headers["content-type"].startswith("image/")
        assert (await http.get("/api/v1/characters/default-user/..%2Fx/avatar")).status_code in (
            400,
            404,
        )
        saved = await http.post(
            "/api/v1/characters/Alice",
            json={"appearance": "red hair, green eyes", "style": "anime", "references": "on"},
        )
        assert saved.status_code == 200, saved.text
        body = saved.json()
        assert body["appearance"].startswith("red hair") and body["appearance_from"] == "profile"
        assert body["style"] == "anime" and body["use_references"] is True
        bad_style = await http.post("/api/v1/characters/Alice", json={"style": "noir"})
        assert bad_style.status_code == 422 and "anime" in bad_style.json()["error"]["message"]
        png = base64.b64encode(tiny_png(size=16)).decode()
        kept = await http.post("/api/v1/characters/Alice/references", json={"data_base64": png})
        assert kept.status_code == 201 and len(kept.json()["references"]) == 1
        junk = base64.b64encode(b"not an image at all" * 10).decode()
        refused = await http.post("/api/v1/characters/Alice/references", json={"data_base64": junk})
        assert refused.status_code == 422
        huge = base64.b64encode(b"\0" * (8 * 1024 * 1024 + 1)).decode()
        too_big = await http.post("/api/v1/characters/Alice/references", json={"data_base64": huge})
        assert too_big.status_code == 413
        cleared = await http.post("/api/v1/characters/Alice/references/clear", json={})
        assert cleared.json()["removed"] == 1
        assert service.engine.characters.get("Alice") is not None


async def test_pause_one_chat_by_its_st_chat_id(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI
) -> None:
    """The extension knows the open chat by ST's chat id: the pause switch takes that too."""
    path = write(tmp_path, st_root_latest, fake_api)
    chat = next((st_root_latest / "default-user" / "chats" / "Alice").glob("*.jsonl"))
    rel = chat.relative_to(st_root_latest).as_posix()
    async with live_service(path) as service, client(service) as http:
        paused = await http.post("/api/v1/pause", json={"paused": True, "chat_file": chat.stem})
        assert paused.status_code == 200 and paused.json()["chats"] == [rel]
        status = (await http.get("/api/v1/status")).json()
        assert status["paused"]["chats"] == [rel]
        resumed = await http.post("/api/v1/pause", json={"paused": False, "chat_file": chat.stem})
        assert resumed.json()["chats"] == []
        missing = await http.post("/api/v1/pause", json={"paused": True, "chat_file": "nope"})
        assert missing.status_code == 404


async def test_only_the_admin_reads_or_changes_settings(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI
) -> None:
    from daemon.web.access import UserTokens

    path = write(tmp_path, st_root_latest, fake_api)
    (st_root_latest / "alice" / "chats").mkdir(parents=True)  # two users: tokens needed
    _, alice = UserTokens(tmp_path / "state").create(["alice"], "alice's tab")
    async with live_service(path) as service, client(service) as http:
        admin = (tmp_path / "state" / "web-token").read_text(encoding="utf-8").strip()
        assert (await http.get("/api/v1/settings")).status_code == 401
        as_alice = {"Authorization": f"Bearer {alice}"}
        for method, route, body in (
            ("GET", "/api/v1/settings", None),
            ("POST", "/api/v1/settings", {"changes": {"mode": "manual"}}),
            ("POST", "/api/v1/settings/test", {"section": "text"}),
            ("GET", "/api/v1/characters", None),
            ("POST", "/api/v1/characters/Alice", {"appearance": "x"}),
        ):
            answer = await http.request(method, route, json=body, headers=as_alice)
            assert answer.status_code == 403, route
        assert service.config.mode == "auto"
        as_admin = {"Authorization": f"Bearer {admin}"}
        done = await http.post(
            "/api/v1/settings", json={"changes": {"mode": "manual"}}, headers=as_admin
        )
        after = service.config  # read again: the page's save swapped it
        assert done.status_code == 200 and after.mode == "manual"
        status = (await http.get("/api/v1/status", headers=as_alice)).json()
        assert status["config_problem"] is None and status["setup_needed"] == []


async def test_the_style_preview_is_what_the_pipeline_sends(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI
) -> None:
    """The preview's LLM request is the very body the jobs' prompt writer posts (captured by
    the fake LLM), and its image prompt around the answer is what that writer makes of the
    LLM's real answer; with a template, the whole image prompt is the one sent."""
    from daemon.config import ConfigSource
    from daemon.configure.writer import ConfigWriter
    from daemon.engine.jobs.pipeline import prompt_writer
    from daemon.web.settings_api import ANSWER_MARK, SAMPLE_REPLY, sample_input

    path = tmp_path / "config.toml"
    path.write_text(
        config_toml(
            st_root_latest,
            tmp_path / "state",
            fake_api,
            {"text": {"prefix": "masterpiece", "suffix": "8k", "negative_prompt": "lowres"}},
        ),
        encoding="utf-8",
    )
    style = {"prefix": "ink wash", "suffix": "grainy", "negative": "colour"}
    async with live_service(path) as service, client(service) as http:
        answer = await http.post("/api/v1/settings/preview", json={"style": style})
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        assert shown["llm"] is True and shown["answer_mark"] == ANSWER_MARK
        body = shown["request"]["body"]
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["messages"][0]["content"] == service.config.text.system_prompt
        sent_text = body["messages"][1]["content"]
        assert SAMPLE_REPLY.split("*")[1] in sent_text and "Character Information" in sent_text
        # The pipeline's own writer, same inputs, against the fake LLM on loopback.
        item = sample_input(style, SAMPLE_REPLY)
        written = await service.deps.prompts.write(item)
        posted = [r for r in fake_api.requests if r.path.endswith("chat/completions")]
        assert posted and posted[-1].body == body
        assert shown["request"]["url"] == fake_api.base_url + "/chat/completions"
        llm_answer = written.prompt[
            len(shown["before"]) : len(written.prompt) - len(shown["after"])
        ]
        assert llm_answer and shown["before"] + llm_answer + shown["after"] == written.prompt
        assert llm_answer.startswith("a picture of ")  # the fake LLM's own words
        assert shown["before"].startswith("ink wash, masterpiece, ")
        assert shown["after"].endswith("8k, grainy") and shown["negative"] == written.negative
        assert written.negative == "lowres, colour"
        # A template prompt writer: the whole image prompt, no LLM request.
        ConfigWriter(ConfigSource.find(path, environ={})).apply(
            {"text.mode": "template", "text.template": "{{char}} in the rain: {{message}}"}
        )
        assert service.live is not None
        service.live.reload(force=True)
        templ = (await http.post("/api/v1/settings/preview", json={"style": style})).json()
        assert templ["llm"] is False and templ["request"] is None
        async with httpx.AsyncClient() as spare:
            sent = await prompt_writer(service.config, spare).write(item)
        assert templ["prompt"] == sent.prompt and templ["negative"] == sent.negative
        assert (
            templ["prompt"].startswith("ink wash, masterpiece, ")
            and "Mira in the rain" in (templ["prompt"])
        )


ADMIN_ROUTES = (
    "/api/v1/settings",
    "/api/v1/settings/test",
    "/api/v1/settings/models",
    "/api/v1/settings/preview",
    "/api/v1/characters/Alice",
    "/api/v1/characters/Alice/references",
    "/api/v1/characters/Alice/references/clear",
)


async def test_bad_bodies_get_a_clear_error_and_change_nothing(
    tmp_path: Path, st_root_latest: Path, fake_api: FakeAPI
) -> None:
    """Each settings and characters route refuses a body of the wrong shape (not an object, a
    form, too big, a field of the wrong type or size, a field missing) with its status and
    ``{"error": {"code", "message"}}``, and the config file, the running config and the
    characters stay as they were; fields a route does not know are ignored."""
    path = write(tmp_path, st_root_latest, fake_api)
    async with live_service(path) as service, client(service) as http:
        file_before = path.read_bytes()
        config_before = service.config
        characters_before = (await http.get("/api/v1/characters")).json()
        state_before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "state").rglob("*"))

        async def refused(route: str, status: int, words: str, **send: Any) -> None:
            answer = await http.post(route, **send)
            assert answer.status_code == status, (route, send.keys(), answer.text)
            error = answer.json()["error"]
            assert error["code"] and words in error["message"], (route, error)

        for route in ADMIN_ROUTES:
            json_type = {"Content-Type": "application/json"}
            await refused(route, 400, "JSON object", content=b"[1, 2]", headers=json_type)
            await refused(route, 400, "not valid JSON", content=b"{nope", headers=json_type)
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            await refused(route, 415, "application/json", content=b"mode=manual", headers=form)
            await refused(route, 413, "larger than", json={"pad": "x" * (12 * 1024 * 1024)})
        too_long = "x" * 20_001
        for route, body, status, words in (
            # wrong types
            ("/api/v1/settings", {"changes": ["mode", "manual"]}, 422, "JSON objects"),
            ("/api/v1/settings", {"secrets": {"image.api_key": 42}}, 422, "not a key"),
            ("/api/v1/settings/test", {"section": 1}, 422, "image or text"),
            ("/api/v1/settings/preview", {"style": "ink wash"}, 422, "style is an object"),
            ("/api/v1/settings/preview", {"style": {"prefix": ["ink"]}}, 422, "prefix"),
            ("/api/v1/characters/Alice", {"appearance": 3}, 422, "appearance is a text"),
            ("/api/v1/characters/Alice", {"references": True}, 422, "on, off or default"),
            ("/api/v1/characters/Alice/references", {"data_base64": 7}, 422, "holds the image"),
            # missing fields
            ("/api/v1/settings/test", {"changes": {}}, 422, "image or text"),
            ("/api/v1/settings/models", {}, 422, "image or text"),
            ("/api/v1/characters/Alice/references", {}, 422, "holds the image"),
            # huge values
            ("/api/v1/settings", {"changes": {"mode": too_long}}, 422, "longer than"),
            ("/api/v1/settings", {"changes": {f"k{n}": 1 for n in range(201)}}, 413, "at most"),
            ("/api/v1/settings/preview", {"reply": "x" * 4001}, 422, "at most 4000"),
            ("/api/v1/characters/Alice", {"negative": "x" * 4001}, 422, "at most 4000"),
            # a bad value among good ones: nothing of it is kept
            ("/api/v1/settings", {"changes": {"mode": "manual", "x.y": 1}}, 422, "x.y"),
            ("/api/v1/characters/Alice", {"appearance": "red", "references": "?"}, 422, "on,"),
        ):
            await refused(route, status, words, json=body)
        assert path.read_bytes() == file_before
        assert service.config is config_before and service.config.mode == "auto"
        assert (await http.get("/api/v1/characters")).json() == characters_before
        after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "state").rglob("*"))
        assert [p for p in after if p not in state_before and "log" not in p.name] == []
        # Fields a route does not know are ignored, as everywhere in the API.
        ignored = await http.post("/api/v1/characters/Alice", json={"mood": "sunny"})
        assert (
            ignored.status_code == 200
            and ignored.json()["appearance"]
            == next(c for c in characters_before["characters"] if c["stem"] == "Alice")[
                "appearance"
            ]
        )
        extra = await http.post(
            "/api/v1/settings", json={"changes": {"mode": "manual"}, "colour": "red"}
        )
        assert extra.status_code == 200 and extra.json()["saved"] == ["mode"]
        assert "colour" not in path.read_text(encoding="utf-8")
