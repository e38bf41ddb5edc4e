"""doctor with the native image backends: A1111 lists its models and samplers and names a
missing one; ComfyUI's workflow is checked on its own line and /system_stats must answer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import Config, load_config
from daemon.doctor import cmd_doctor
from daemon.providers.comfyui import load_workflow
from tests.ops.fakeapi import GOOD_KEY, FakeAPI, closed_port, fake_api
from tests.providers.fake_a1111 import FakeA1111, serve_a1111
from tests.providers.fake_comfyui import CHECKPOINTS, FakeComfy, serve_comfy


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with fake_api() as served:
        yield served


@pytest.fixture
def a1111() -> Iterator[FakeA1111]:
    with serve_a1111() as served:
        yield served


@pytest.fixture
def comfy() -> Iterator[FakeComfy]:
    with serve_comfy() as served:
        yield served


def _config(tmp: Path, root: Path, api: FakeAPI, image: dict[str, Any]) -> Config:
    lines = [
        f"data_root = {json.dumps(str(root))}",
        f"state_dir = {json.dumps(str(tmp / 'state'))}",
        "[text]",
        f"api_url = {json.dumps(api.base_url)}",
        f"api_key = {json.dumps(GOOD_KEY)}",
        "[image]",
        *(f"{key} = {json.dumps(value)}" for key, value in image.items()),
    ]
    path = tmp / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path, environ={})


def _doctor(config: Config) -> tuple[int, str]:
    out = io.StringIO()
    return cmd_doctor(config, False, out=out), out.getvalue()


def _line(output: str, name: str) -> str:
    found = [line for line in output.splitlines() if f"  {name}:" in line]
    assert len(found) == 1, output
    return found[0]


def test_a1111_lists_models_and_samplers(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI, a1111: FakeA1111
) -> None:
    image = {"backend": "a1111", "api_url": a1111.url, "model": "v1-5-pruned-emaonly"}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 0, output
    line = _line(output, "image API")
    assert line.startswith("PASS") and "(a1111)" in line
    assert "v1-5-pruned-emaonly.safetensors [6ce0161689]" in line and "Euler a" in line
    assert "ComfyUI workflow" not in output
    assert a1111.bodies() == []  # no generation: it might take minutes


def test_a1111_names_the_missing_sampler(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI, a1111: FakeA1111
) -> None:
    image = {"backend": "a1111", "api_url": a1111.url, "sampler": "DDIM Turbo"}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 1
    line = _line(output, "image API")
    assert line.startswith("FAIL") and "sampler 'DDIM Turbo'" in line and "DPM++ 2M" in line


def test_a1111_behind_api_auth(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI, a1111: FakeA1111
) -> None:
    a1111.auth = "sd:correct-horse"
    image = {"backend": "a1111", "api_url": a1111.url, "api_auth": "sd:wrong-horse"}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 1 and "api_auth" in _line(output, "image API")
    assert "wrong-horse" not in output
    image["api_auth"] = "sd:correct-horse"
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 0, output


def test_an_a1111_that_is_not_running(st_root_latest: Path, tmp_path: Path, api: FakeAPI) -> None:
    image = {"backend": "a1111", "api_url": f"http://127.0.0.1:{closed_port()}"}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 1 and "cannot be reached" in _line(output, "image API")
    fix = output.split(_line(output, "image API"), 1)[1].splitlines()[1]
    assert "started with --api" in fix and "/v1" not in fix  # the advice for this backend


def test_comfyui_workflow_and_system_stats(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI, comfy: FakeComfy
) -> None:
    image = {"backend": "comfyui", "api_url": comfy.url, "model": CHECKPOINTS[0]}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 0, output
    workflow = _line(output, "ComfyUI workflow")
    assert workflow.startswith("PASS") and "shipped default" in workflow and "%prompt%" in workflow
    line = _line(output, "image API")
    assert line.startswith("PASS") and "ComfyUI 0.3.40" in line and "2 checkpoint(s)" in line
    assert ("GET", "/system_stats", None) in comfy.requests
    assert comfy.seen("POST", "/prompt") == []


def test_comfyui_workflow_without_prompt_fails_its_line(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI, comfy: FakeComfy
) -> None:
    nodes = load_workflow(None).nodes
    nodes["6"]["inputs"]["text"] = "a fixed text"
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(nodes), encoding="utf-8")
    image = {"backend": "comfyui", "api_url": comfy.url, "comfy_workflow": str(path)}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 1
    assert _line(output, "ComfyUI workflow").startswith("FAIL")
    assert "%prompt%" in _line(output, "ComfyUI workflow")


def test_comfyui_workflow_warnings(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI, comfy: FakeComfy
) -> None:
    nodes = load_workflow(None).nodes
    nodes["3"]["inputs"]["seed"] = 1234
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(nodes), encoding="utf-8")
    image = {"backend": "comfyui", "api_url": comfy.url, "comfy_workflow": str(path)}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 0, output
    line = _line(output, "ComfyUI workflow")
    assert line.startswith("WARN") and "%seed%" in line


def test_comfyui_missing_checkpoint(
    st_root_latest: Path, tmp_path: Path, api: FakeAPI, comfy: FakeComfy
) -> None:
    image = {"backend": "comfyui", "api_url": comfy.url, "model": "flux1-dev.safetensors"}
    code, output = _doctor(_config(tmp_path, st_root_latest, api, image))
    assert code == 1
    line = _line(output, "image API")
    assert "model 'flux1-dev.safetensors'" in line and CHECKPOINTS[0] in line
