"""The extension's job vocabulary: its defaults (used until the daemon's own arrives from
``GET /api/v1/meta``) are the daemon's (daemon/jobstate.py), so an old daemon and a new tab, or
the other way round, still agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

from daemon.jobstate import LABELS, vocabulary

PROTOCOL = Path(__file__).resolve().parents[2] / "extension" / "lib" / "protocol.js"


def _js_array(source: str, name: str) -> list[str]:
    found = re.search(rf"export const {name} = \[([^\]]*)\];", source)
    assert found, f"{name} not found in protocol.js"
    return [s.strip().strip("'\"") for s in found.group(1).split(",") if s.strip()]


def _js_labels(source: str) -> dict[str, str]:
    found = re.search(r"export const STATE_LABELS = \{([^}]*)\};", source)
    assert found, "STATE_LABELS not found in protocol.js"
    pairs = re.findall(r"(\w+): '([^']*)'", found.group(1))
    return dict(pairs)


def test_the_extension_defaults_are_the_daemons_vocabulary() -> None:
    source = PROTOCOL.read_text(encoding="utf-8")
    groups = vocabulary()["groups"]
    assert _js_array(source, "RUNNING_STATES") == groups["active"]
    assert _js_array(source, "FINAL_STATES") == groups["final"]
    labels = _js_labels(source)
    by_name = {state.value: text for state, text in LABELS.items()}
    assert labels and all(by_name[state] == text for state, text in labels.items())
    json.dumps(vocabulary())  # what /api/v1/meta serves is plain JSON
