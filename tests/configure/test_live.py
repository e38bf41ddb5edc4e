"""Configuration applied live: the daemon re-reads its file when it is written."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from daemon.cli.commands import main
from daemon.cli.screens import cmd_status
from daemon.config import ConfigSource
from daemon.configure.writer import ConfigWriter
from daemon.engine.store import JobState
from tests.configure.conftest import live_service
from tests.engine.conftest import WATCHDOG_RACE, FakeAPI, async_wait_for, config_toml
from tests.engine.test_service import jobs_of, new_chat, replied, started_chat, wait_state

pytestmark = [pytest.mark.anyio, WATCHDOG_RACE]

RELOAD_TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    from tests.engine.test_commit_support import new_data_root

    return new_data_root(tmp_path)


def write_config(tmp_path: Path, root: Path, api: FakeAPI, **extra: object) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(config_toml(root, tmp_path / "state", api, dict(extra)), encoding="utf-8")
    return path


async def reloaded(service: object, count: int) -> None:
    from daemon.engine.process.service import Service

    assert isinstance(service, Service) and service.live is not None
    live = service.live

    async def check() -> bool:
        return live.reloads >= count or live.problem is not None

    await async_wait_for(check, within=RELOAD_TIMEOUT)


async def test_a_style_added_while_running_is_used_by_the_next_job(
    tmp_path: Path, root: Path, fake_api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's silent-ignore bug: [styles.noir] appended and `style use noir` while the
    daemon runs; Bob's next image had no style."""
    path = write_config(tmp_path, root, fake_api)
    async with live_service(path) as service:
        with path.open("a", encoding="utf-8") as fh:
            fh.write('\n[styles.noir]\nprefix = "film noir, black and white"\n')
        await reloaded(service, 1)
        assert "noir" in service.config.styles
        code = main(["style", "use", "noir", "--character", "Alice", "--config", str(path)])
        assert code == 0, capsys.readouterr().err
        _, job = await replied(service, new_chat(root), "Hello?", "*She waves.* Hi there.")
        assert job.meta.get("style") == "noir"
        assert "film noir, black and white" in fake_api.prompts()[-1]


async def test_a_model_change_reaches_the_next_job_not_the_running_one(
    tmp_path: Path, root: Path, fake_api: FakeAPI
) -> None:
    path = write_config(tmp_path, root, fake_api)
    fake_api.image_delay = 1.0
    async with live_service(path) as service:
        chat = new_chat(root)
        tab = await started_chat(service, chat, character="Alice")
        tab.send_user("Draw the harbour.").save()
        tab.reply("Alice", "*She points at the boats.* The harbour, at dusk.").save()

        async def imaging() -> object:
            jobs = await jobs_of(service, chat)
            return jobs and jobs[0].state is JobState.IMAGING and jobs[0]

        first = await async_wait_for(imaging, within=RELOAD_TIMEOUT)
        ConfigWriter(ConfigSource.find(path, environ={})).apply({"image.model": "other-image"})
        await reloaded(service, 1)
        assert service.config.image.model == "other-image"
        done = await wait_state(service, first.id, JobState.PENDING)
        assert done.meta["image_model"] == "fake-image"  # started before: finished with its own
        fake_api.image_delay = 0.0
        tab.send_user("And now?").save()
        tab.reply("Alice", "*She smiles.* Now the lighthouse.").save()

        async def second() -> object:
            jobs = await jobs_of(service, chat)
            return len(jobs) > 1 and jobs[1].state is JobState.PENDING and jobs[1]

        later = await async_wait_for(second, within=RELOAD_TIMEOUT)
        assert later.meta["image_model"] == "other-image"
        bodies = [r.body for r in fake_api.requests if r.path.endswith("images/generations")]
        assert bodies[-1]["model"] == "other-image"


async def test_a_broken_file_keeps_the_last_good_config_and_says_where(
    tmp_path: Path, root: Path, fake_api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, root, fake_api)
    good = path.read_text(encoding="utf-8")
    async with live_service(path) as service:
        before = service.config
        path.write_text(good + "[styles.noir]\nprefix = 'a'\n[styles.noir]\n", encoding="utf-8")
        await reloaded(service, 99)
        live = service.live
        assert live is not None and live.problem is not None
        lines = path.read_text(encoding="utf-8").splitlines()
        assert live.problem.line == len(lines)
        assert "twice" in live.problem.message and f"line {len(lines)}" in live.problem.message
        assert service.config is before
        # status (another process) reads it from the heartbeat
        heartbeat = json.loads((tmp_path / "state" / "heartbeat").read_text(encoding="utf-8"))
        assert heartbeat["config"]["problem"]["line"] == len(lines)
        capsys.readouterr()
        await anyio.to_thread.run_sync(cmd_status, before, False)
        out = capsys.readouterr().out
        assert "config: NOT APPLIED" in out and f"line {len(lines)}" in out
        # a wrong value: named with its line too, and still nothing applied
        path.write_text(good.replace('"fake-image"', '"fake-image"\nn = 99'), encoding="utf-8")

        async def value_refused() -> bool:
            return live.problem is not None and "image.n" in live.problem.message

        await async_wait_for(value_refused, within=RELOAD_TIMEOUT)
        assert live.problem is not None and live.problem.line is not None
        assert service.config.image.n == 1
        # fixed: applied, the problem gone
        path.write_text(good.replace('"fake-image"', '"fixed-image"'), encoding="utf-8")

        async def fixed() -> bool:
            return live.problem is None

        await async_wait_for(fixed, within=RELOAD_TIMEOUT)
        assert service.config.image.model == "fixed-image"


async def test_keys_that_cannot_change_live_say_restart_pending(
    tmp_path: Path, root: Path, fake_api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, root, fake_api)
    async with live_service(path) as service:
        port = service.config.web.port
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace("port = 0", "port = 18999").replace('"fake-llm"', '"other-llm"')
            + '\n[notify]\nquiet_hours = "22:00-07:00"\n',
            encoding="utf-8",
        )
        await reloaded(service, 1)
        assert service.live is not None
        # Push settings are taken at start too: said, never silently ignored.
        assert service.live.restart_pending == ("web.port", "notify")
        assert service.config.web.port == port  # kept
        assert service.config.text.model == "other-llm"  # the rest applied
        capsys.readouterr()
        await anyio.to_thread.run_sync(cmd_status, service.config, False)
        assert "restart pending (web.port" in capsys.readouterr().out


async def test_unconfigured_daemon_notes_replies_and_runs_them_once_set_up(
    tmp_path: Path, root: Path, fake_api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f"data_root = {json.dumps(str(root))}\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n"
        "[detect]\nsettle_seconds = 0.2\n[web]\nport = 0\n",
        encoding="utf-8",
    )
    async with live_service(path) as service:
        assert service.runner.setup_hold is not None
        capsys.readouterr()
        await anyio.to_thread.run_sync(cmd_status, service.config, False)
        out = capsys.readouterr().out
        assert "setup: not set up yet (image service, prompt writer): open http://" in out
        chat = new_chat(root)
        tab = await started_chat(service, chat, character="Alice")
        tab.send_user("Hello?").save()
        tab.reply("Alice", "*She looks up from the map.* You found me.").save()

        async def queued() -> object:
            jobs = await jobs_of(service, chat)
            return jobs and jobs[0]

        job = await async_wait_for(queued, within=RELOAD_TIMEOUT)
        assert job.state is JobState.QUEUED and fake_api.requests == []
        writer = ConfigWriter(ConfigSource.find(path, environ={}))
        writer.apply({"image.api_url": fake_api.base_url, "image.response_format": "b64_json"})
        writer.apply({"text.api_url": fake_api.base_url, "text.model": "fake-llm"})
        done = await wait_state(service, job.id, JobState.PENDING, within=RELOAD_TIMEOUT)
        assert done.images and service.runner.setup_hold is None


async def test_replies_seen_before_the_setup_follow_the_catch_up_rule(
    tmp_path: Path, root: Path, fake_api: FakeAPI
) -> None:
    """Replies older than detect.catchup_max_age when the setup is saved are not drawn (as
    after downtime); the newer ones are."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"data_root = {json.dumps(str(root))}\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n"
        '[detect]\nsettle_seconds = 0.2\ncatchup_max_age = "1s"\n[web]\nport = 0\n',
        encoding="utf-8",
    )
    async with live_service(path) as service:
        chat = new_chat(root)
        tab = await started_chat(service, chat, character="Alice")
        tab.send_user("Hello?").save()
        tab.reply("Alice", "*She waves from the pier.* Over here!").save()

        async def queued() -> object:
            jobs = await jobs_of(service, chat)
            return jobs and jobs[0]

        old = await async_wait_for(queued, within=RELOAD_TIMEOUT)
        await anyio.sleep(1.2)  # the reply ages past catchup_max_age (time passing, not a wait)
        writer = ConfigWriter(ConfigSource.find(path, environ={}))
        writer.apply(
            {
                "image.api_url": fake_api.base_url,
                "image.response_format": "b64_json",
                "text.api_url": fake_api.base_url,
            }
        )
        gone = await wait_state(service, old.id, JobState.SUPERSEDED, within=RELOAD_TIMEOUT)
        assert gone.last_error and "catchup_max_age" in gone.last_error
        assert fake_api.count("images/generations") == 0
        tab.send_user("And now?").save()
        tab.reply("Alice", "*She laughs.* Now you are set up.").save()

        async def second() -> object:
            jobs = await jobs_of(service, chat)
            return len(jobs) > 1 and jobs[1]

        new = await async_wait_for(second, within=RELOAD_TIMEOUT)
        await wait_state(service, new.id, JobState.PENDING, within=RELOAD_TIMEOUT)


async def test_a_filter_change_applies_to_the_next_reply(
    tmp_path: Path, root: Path, fake_api: FakeAPI
) -> None:
    path = write_config(tmp_path, root, fake_api)
    async with live_service(path) as service:
        chat = new_chat(root)
        tab = await started_chat(service, chat, character="Alice")
        ConfigWriter(ConfigSource.find(path, environ={})).apply({"detect.min_length": 500})
        await reloaded(service, 1)
        assert service.config.detect.min_length == 500
        before = service.processed
        tab.send_user("Short?").save()
        tab.reply("Alice", "Yes.").save()

        rel = chat.relative_to(root).as_posix()

        async def read() -> bool:  # the daemon has read the chat up to its end
            record = await service.store.get_chat(rel)
            done = record is not None and record.cursor.size == chat.stat().st_size
            return service.processed > before and done

        await async_wait_for(read, within=RELOAD_TIMEOUT)
        assert await jobs_of(service, chat) == []  # too short under the new rule
        ConfigWriter(ConfigSource.find(path, environ={})).apply({"detect.min_length": 0})
        await reloaded(service, 2)
        tab.send_user("And this?").save()
        tab.reply("Alice", "Fine.").save()

        async def made() -> object:
            jobs = await jobs_of(service, chat)
            return jobs and jobs[0]

        job = await async_wait_for(made, within=RELOAD_TIMEOUT)
        assert job.excerpt.startswith("Fine")


async def test_a_key_file_edited_in_place_reaches_the_next_job(
    tmp_path: Path, root: Path, fake_api: FakeAPI
) -> None:
    """A key file (``<config dir>/keys/<secret>``, 0600) rewritten by hand in place, the TOML
    untouched: the next job calls with the new key."""
    old, new = "sk-old-key-0000000000000000", "sk-new-key-1111111111111111"
    path = write_config(tmp_path, root, fake_api)
    ConfigWriter(ConfigSource.find(path, environ={})).apply(
        {}, secrets_given={"image.api_key": old, "text.api_key": old}
    )
    fake_api.key = old
    toml_before = path.read_bytes()
    async with live_service(path) as service:
        assert service.config.image.api_key.get_secret_value() == old
        fake_api.key = new  # the service's key was rotated: the old one is refused
        for secret in ("image.api_key", "text.api_key"):
            key_file = path.parent / "keys" / secret
            inode = key_file.stat().st_ino
            with key_file.open("r+", encoding="utf-8") as fh:  # in place, as an editor may
                fh.truncate(0)
                fh.write(new + "\n")
            assert key_file.stat().st_ino == inode
        assert path.read_bytes() == toml_before

        async def both_keys_read() -> bool:
            config = service.config
            return (
                config.image.api_key.get_secret_value() == new
                and config.text.api_key.get_secret_value() == new
            )

        await async_wait_for(both_keys_read, within=RELOAD_TIMEOUT)
        chat = new_chat(root)
        tab = await started_chat(service, chat, character="Alice")
        tab.send_user("Draw the harbour.").save()
        tab.reply("Alice", "*She points at the boats.* The harbour, at dusk.").save()

        async def pending() -> object:
            jobs = await jobs_of(service, chat)
            return jobs and jobs[0].state is JobState.PENDING and jobs[0]

        await async_wait_for(pending, within=RELOAD_TIMEOUT)
        assert fake_api.count("images/generations") == 1


async def test_a_key_file_first_written_while_running_is_watched_too(
    tmp_path: Path, root: Path, fake_api: FakeAPI
) -> None:
    """No key folder at start (none is made for it: a config mount may be read-only); the
    first key saved while running makes one, and a later hand edit of that key is noticed."""
    old, new = "sk-first-key-000000000000000", "sk-second-key-11111111111111"
    path = write_config(tmp_path, root, fake_api)
    async with live_service(path) as service:
        assert not (path.parent / "keys").exists()
        ConfigWriter(ConfigSource.find(path, environ={})).apply(
            {}, secrets_given={"image.api_key": old}
        )

        async def has(key: str) -> bool:
            return service.config.image.api_key.get_secret_value() == key

        await async_wait_for(lambda: has(old), within=RELOAD_TIMEOUT)
        key_file = path.parent / "keys" / "image.api_key"
        with key_file.open("r+", encoding="utf-8") as fh:
            fh.truncate(0)
            fh.write(new + "\n")
        await async_wait_for(lambda: has(new), within=RELOAD_TIMEOUT)
