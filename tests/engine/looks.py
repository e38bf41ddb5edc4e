"""Helpers for the appearance and style tests: real character cards and ST settings on disk."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from daemon.config import Config, load_config
from daemon.engine.store import Job, JobState
from daemon.jobstate import ReplyKey


def card_png(name: str, *, positive: str = "", negative: str = "", **data: Any) -> bytes:
    """A SillyTavern card (v2 ``chara`` chunk), with the image extension's shared prompt."""
    fields: dict[str, Any] = {"name": name, "description": f"{name} is a character.", **data}
    if positive or negative:
        fields["extensions"] = {"sd_character_prompt": {"positive": positive, "negative": negative}}
    obj = {"spec": "chara_card_v2", "spec_version": "2.0", "data": fields}
    info = PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps(obj).encode()).decode())
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 140, 200)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def write_card(
    root: Path, stem: str, name: str | None = None, user: str = "default-user", **kw: Any
) -> Path:
    path = root / user / "characters" / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(card_png(name or stem, **kw))
    return path


def write_settings(root: Path, obj: dict[str, Any], user: str = "default-user") -> Path:
    path = root / user / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_group(
    root: Path, group_id: str, chat_id: str, members: list[str], user: str = "default-user"
) -> Path:
    path = root / user / "groups" / f"{group_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "id": group_id,
                "name": "The group",
                "members": members,
                "chat_id": chat_id,
                "chats": [chat_id],
            }
        ),
        encoding="utf-8",
    )
    return path


def config_with(tmp_path: Path, root: Path, text: str = "") -> Config:
    """A config over ``root`` with state in ``tmp_path/state`` plus the TOML ``text``."""
    path = tmp_path / "looks.toml"
    head = (
        f"data_root = {json.dumps(str(root))}\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n"
    )
    path.write_text(head + text, encoding="utf-8")
    return load_config(path, environ={})


def job_of(
    chat: str,
    *,
    character: str = "alice",
    speaker: str = "Alice",
    is_group: bool = False,
    **over: Any,
) -> Job:
    """A job record (not stored) for a reply of ``chat``."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": "01JOBAAAAAAAAAAAAAAAAAAAAA",
        "key": "k",
        "reply": ReplyKey("default-user", chat, speaker, "d", "r"),
        "character": character,
        "is_group": is_group,
        "speaker": speaker,
        "message_index": 3,
        "excerpt": "",
        "source": "auto",
        "state": JobState.QUEUED,
        "attempts": 0,
        "last_error": None,
        "prompt": None,
        "images": (),
        "created_at": now,
        "updated_at": now,
        "next_attempt_at": None,
        "meta": {},
    }
    fields.update(over)
    return Job(**fields)
