"""Clear answers, never a traceback: every route walked with the probes' hostile inputs, a lone
surrogate, a thumbnail of a hostile file, and a state dir that is really full (a small tmpfs)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from daemon.engine.store import JobState
from daemon.web import api, characters_api, pages, settings_api
from daemon.web.server import read_address
from tests.engine.conftest import FakeAPI, MakeConfig, config_toml
from tests.web.conftest import Inbox, inbox_for, web_config

pytestmark = pytest.mark.anyio

DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "application/json"),
    ("object", b"{}", "application/json"),
    ("not json", b"{nope", "application/json"),
    ("deep", DEEP.encode(), "application/json"),
    (
        "surrogate",
        b'{"prompt": "\\ud800", "chat": "\\udfff", "label": "\\ud83d"}',
        "application/json",
    ),
    ("surrogate key", b'{"\\ud800": 1}', "application/json"),
    (
        "wrong types",
        b'{"keep": "x", "prompt": 5, "chat": [], "mesid": -1, "handles": 3, '
        b'"paused": "yes", "force": "no", "chat_file": {}}',
        "application/json",
    ),
    ("huge", b'{"prompt": "' + b"a" * 70_000 + b'"}', "application/json"),
    ("form", b"a=1", "application/x-www-form-urlencoded"),
    ("nul", b'{"chat": "a\\u0000b", "prompt": "x\\u0000"}', "application/json"),
    ("array", b"[1, 2]", "application/json"),
    ("bad utf-8", b'{"prompt": "\xff\xfe"}', "application/json"),
]


def _paths(route_path: str, job_id: str) -> list[str]:
    """``route_path`` with its parameters filled the ways a prober would."""
    if "{" not in route_path:
        return [route_path]
    filled: list[str] = []
    for job in (job_id, "0" * 26, "Z" * 27, "..%2F..", "%F0%9F"):
        for n in ("1", "0", "99999", "x"):
            for token in ("deadbeef", "../x"):
                filled.append(
                    route_path.replace("{job_id}", job)
                    .replace("{n}", n)
                    .replace("{token_id}", token)
                )
    return sorted(set(filled))


async def test_every_route_answers_hostile_input_without_a_500(
    inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    job = await inbox.pending()
    seen: list[tuple[str, str, int]] = []
    async with inbox.client() as client:
        for route in [*api.routes(), *pages.routes()]:
            for method in sorted(route.methods or {"GET"}):
                if method == "HEAD":
                    continue
                for path in _paths(route.path, job.id):
                    queries = [
                        "",
                        "?limit=0",
                        "?limit=abc&state=nope&before=..",
                        "?size=huge",
                        "?chat=%ED%A0%80&user=%00",
                        "?job=" + "9" * 40,
                    ]
                    for query in queries:
                        if method == "GET" and path == "/api/v1/events":
                            async with client.stream("GET", path + query) as stream:
                                seen.append((method, path + query, stream.status_code))
                                assert stream.status_code < 500
                            continue
                        if method == "GET":
                            answer = await client.get(path + query)
                            seen.append((method, path + query, answer.status_code))
                            assert answer.status_code < 500, (path + query, answer.text[:300])
                            continue
                        for name, body, kind in HOSTILE_BODIES:
                            answer = await client.post(
                                path + query, content=body, headers={"Content-Type": kind}
                            )
                            seen.append((method, f"{path}{query} {name}", answer.status_code))
                            assert answer.status_code < 500, (path, name, answer.text[:300])
                            if path.startswith("/api/") and answer.status_code >= 400:
                                assert answer.json()["error"]["message"], (path, name)
    assert len(seen) > 500
    assert "Traceback" not in caplog.text and "web request failed" not in caplog.text


async def test_a_lone_surrogate_is_a_422_that_says_why(inbox: Inbox) -> None:
    job = await inbox.pending()
    async with inbox.client() as client:
        answer = await client.post(
            f"/api/v1/jobs/{job.id}/regen",
            content=b'{"prompt": "a fox \\ud83d"}',
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 422 and "surrogate" in answer.json()["error"]["message"]
    assert (await inbox.job(job.id)).state is JobState.PENDING


async def test_a_hostile_image_in_a_job_folder_gets_a_415_thumbnail(inbox: Inbox) -> None:
    job = await inbox.pending()
    folder = await inbox.service.engine.job_folder(job.id)
    assert folder is not None
    image = folder / job.images[0]
    await anyio.to_thread.run_sync(lambda: Image.new("L", (20000, 20000)).save(image, format="PNG"))
    async with inbox.client() as client:
        thumb = await client.get(f"/api/v1/jobs/{job.id}/images/1?size=thumb")
        assert thumb.status_code == 415 and "thumbnail" in thumb.json()["error"]["message"]
        other = await client.get(f"/api/v1/jobs/{job.id}/images/2?size=thumb")
        assert other.status_code == 200


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("a real full disk needs a tmpfs mount (root)")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the disk of ``folder`` to the last byte (unbuffered writes: nothing left over)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        while True:  # and the room for new small files
            (folder / f"f{os.urandom(4).hex()}").write_bytes(b"x" * 512)
    return filler


async def test_a_full_state_dir_is_a_507_that_says_where(
    make_config: MakeConfig, tmp_path: Path, fake_api: FakeAPI
) -> None:
    state = tmp_path / "state"
    with small_disk(state, "24m"):
        config = web_config(make_config, tmp_path, fake_api)
        async with inbox_for(config) as inbox:
            jobs = [await inbox.pending(f"chat {n}") for n in range(2)]
            filler = await anyio.to_thread.run_sync(_fill, state)
            refused: list[Any] = []
            async with inbox.client() as client:
                for action, body in (
                    ("regen", {"prompt": "a fox"}),
                    ("accept", {}),
                    ("reject", {}),
                ):
                    answer = await client.post(f"/api/v1/jobs/{jobs[0].id}/{action}", json=body)
                    refused.append((action, answer.status_code, answer.text[:200]))
                full = [r for r in refused if r[1] == 507]
                assert full, refused
                assert all(r[1] < 500 or r[1] == 507 for r in refused), refused
                assert all(str(state) in r[2] and "full" in r[2] for r in full)
                # Room again: the same job can be acted on, nothing was lost.
                await anyio.to_thread.run_sync(filler.unlink)
                for extra in state.glob("f*"):
                    extra.unlink()
                answer = await client.post(f"/api/v1/jobs/{jobs[1].id}/accept", json={})
                assert answer.status_code == 200, answer.text
            await inbox.wait_state(jobs[1].id, JobState.COMMITTED, within=30)


def test_errno_of_a_full_disk_is_known() -> None:
    assert errno.ENOSPC in api.FULL_ERRNOS and errno.EDQUOT in api.FULL_ERRNOS


ADMIN_BODIES: list[tuple[str, bytes, str]] = [
    *HOSTILE_BODIES,
    ("surrogate value", b'{"changes": {"image.model": "\\ud800"}}', "application/json"),
    ("surrogate secret", b'{"secrets": {"image.api_key": "k\\udfff"}}', "application/json"),
    (
        "surrogate style",
        b'{"style": {"prefix": "\\ud83d"}, "reply": "\\ud800"}',
        "application/json",
    ),
    ("surrogate section", b'{"section": "image", "changes": {"\\ud800": 1}}', "application/json"),
    ("unknown key", b'{"changes": {"nope.nope": 1}}', "application/json"),
    ("file-only key", b'{"changes": {"web.port": 1}}', "application/json"),
    ("bad value", b'{"changes": {"image.n": "many"}, "section": "text"}', "application/json"),
    ("base64", b'{"data_base64": "!!!", "appearance": 5, "references": "x"}', "application/json"),
    ("not an image", b'{"data_base64": "aGVsbG8="}', "application/json"),
]
"""The probes plus what the settings and characters routes read."""


def _admin_paths(route_path: str) -> list[str]:
    filled: list[str] = []
    for user in ("default-user", "..", "%00", "nobody"):
        for name in ("Alice", "..%2F..", "%ED%A0%80", "x" * 300, ".hidden"):
            filled.append(
                route_path.replace("{user}", user).replace("{stem}", name).replace("{name}", name)
            )
    return sorted(set(filled))


@contextlib.asynccontextmanager
async def _live_inbox(tmp_path: Path, fake_api: FakeAPI, disk: Path | None = None) -> Any:
    """A daemon with its config file watched (the settings routes need one); its state dir
    and config file on ``disk`` when given."""
    from tests.configure.conftest import live_service
    from tests.engine.test_commit_support import new_data_root

    root = new_data_root(tmp_path)
    card = root / "default-user" / "characters" / "Alice.png"
    Image.new("RGB", (8, 8)).save(card, format="PNG")
    home = disk or tmp_path
    path = home / "conf" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_toml(root, home / "state", fake_api), encoding="utf-8")
    async with live_service(path) as service:
        address = read_address(service.config.state_dir)
        assert address is not None
        yield service, str(address["url"]).rstrip("/")


async def test_every_admin_route_answers_hostile_input_without_a_500(
    tmp_path: Path, fake_api: FakeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """The settings and characters routes (admin only) walked like the others: the probes'
    bodies, a lone surrogate anywhere (422), broken JSON (400), hostile names in the path."""
    seen: list[tuple[str, str, int]] = []
    async with _live_inbox(tmp_path, fake_api) as (service, url):
        config_before = service.live.source.path.read_bytes()
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            for route in [*settings_api.routes(), *characters_api.routes()]:
                for method in sorted(route.methods or {"GET"}):
                    if method == "HEAD":
                        continue
                    for path in _admin_paths(route.path):
                        if method == "GET":
                            answer = await client.get(path)
                            seen.append((method, path, answer.status_code))
                            assert answer.status_code < 500, (path, answer.text[:300])
                            continue
                        for name, body, kind in ADMIN_BODIES:
                            answer = await client.post(
                                path, content=body, headers={"Content-Type": kind}
                            )
                            seen.append((method, f"{path} {name}", answer.status_code))
                            assert answer.status_code < 500, (path, name, answer.text[:300])
                            if answer.status_code >= 400:
                                assert answer.json()["error"]["message"], (path, name)
                            if answer.status_code in (400, 404) and "bad_name" in answer.text:
                                continue  # refused by its path before the body is read
                            if answer.status_code == 404 and "Not Found" in answer.text:
                                continue  # no such route (an encoded slash)
                            if "surrogate" in name:
                                assert answer.status_code == 422, (path, name, answer.text)
                            if name == "not json":
                                assert answer.status_code == 400, (path, answer.text)
        assert service.live.source.path.read_bytes() == config_before  # nothing odd written
    assert len(seen) > 300
    assert "Traceback" not in caplog.text and "web request failed" not in caplog.text


def _png() -> bytes:
    import base64
    import io

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="PNG")
    return base64.b64encode(out.getvalue())


async def test_a_full_disk_under_the_admin_routes_is_a_507_and_nothing_half_written(
    tmp_path: Path, fake_api: FakeAPI
) -> None:
    """The settings save (config file), a character's change and a reference upload (state
    dir) on a really full disk: 507 naming where, no temp file left, the same calls work once
    there is room."""
    disk = tmp_path / "disk"
    with small_disk(disk, "24m"):
        async with _live_inbox(tmp_path, fake_api, disk) as (service, url):
            config_file = service.live.source.path
            before = config_file.read_bytes()
            calls: list[tuple[str, bytes]] = [
                ("/api/v1/settings", b'{"changes": {"image.model": "other-image"}}'),
                (
                    "/api/v1/settings",
                    b'{"secrets": {"image.api_key": "sk-full-disk-000000000000"}}',
                ),
                ("/api/v1/characters/Alice/references", b'{"data_base64": "' + _png() + b'"}'),
            ]
            filler = await anyio.to_thread.run_sync(_fill, disk)
            answers = []
            async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
                for path, body in calls:
                    answer = await client.post(
                        path, content=body, headers={"Content-Type": "application/json"}
                    )
                    answers.append((path, answer.status_code, answer.text[:300]))
                assert all(a[1] == 507 for a in answers), answers
                assert all("full" in a[2] and str(disk) in a[2] for a in answers), answers
                assert config_file.read_bytes() == before
                left = [p.name for p in config_file.parent.rglob(".*.tmp")]
                assert left == [], left
                await anyio.to_thread.run_sync(filler.unlink)
                for extra in disk.glob("f*"):
                    extra.unlink()
                for path, body in calls:
                    answer = await client.post(
                        path, content=body, headers={"Content-Type": "application/json"}
                    )
                    assert answer.status_code in (200, 201), (path, answer.text)
            assert service.config.image.model == "other-image"
