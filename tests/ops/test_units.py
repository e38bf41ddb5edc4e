"""scripts/check-units: the real units pass; a warning or weak hardening fails the check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = "st-imagegen.service"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing (.ci/run installs Debian's systemd package for it)",
)


def _checkout(tmp_path: Path) -> Path:
    """The checker and the units in a scratch tree that uses this venv."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "check-units", tree / "scripts" / "check-units")
    shutil.copytree(REPO / "systemd", tree / "systemd")
    (tree / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return tree


def _check(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tree / "scripts" / "check-units")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_units_pass(tmp_path: Path) -> None:
    result = _check(_checkout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("printed nothing") == 2
    assert result.stdout.count("(threshold 2.5)") == 2


def test_any_verify_warning_fails(tmp_path: Path) -> None:
    tree = _checkout(tmp_path)
    unit = tree / "systemd" / UNIT
    unit.write_text(
        unit.read_text(encoding="utf-8").replace("[Service]\n", "[Service]\nRestartSecs=5\n"),
        encoding="utf-8",
    )
    result = _check(tree)
    assert result.returncode == 1
    assert f"FAIL {UNIT}: systemd-analyze verify" in result.stderr
    assert "RestartSecs" in result.stderr


def test_weak_hardening_fails_the_exposure_threshold(tmp_path: Path) -> None:
    tree = _checkout(tmp_path)
    unit = tree / "systemd" / UNIT
    kept = [
        line
        for line in unit.read_text(encoding="utf-8").splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall"))
    ]
    unit.write_text("\n".join(kept) + "\n", encoding="utf-8")
    result = _check(tree)
    assert result.returncode == 1
    assert f"FAIL {UNIT}: systemd-analyze security exposure" in result.stderr
