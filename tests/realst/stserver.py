"""Real SillyTavern servers from the npm registry, for the real-ST tests.

``.ci/run`` installs the pinned versions from the npm registry (``npm pack
sillytavern@<version>``, unpacked, ``npm install --omit=dev`` inside it: ST's dependencies in its
own folder, as in a git checkout; 1.12's file-URL fetch guard refuses wasm files outside it, so
a plain ``npm install sillytavern`` crashes 1.12 at startup) into a cache folder outside the
clone and exports it as ``REAL_SILLYTAVERN``. Each server runs from
``<cache>/<version>/sillytavern``
with a fresh data root, on a free loopback port, configured only through ST's own command line
and environment (``SILLYTAVERN_<KEY>``): nothing in the install is edited.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ENV_VAR = "REAL_SILLYTAVERN"
"""The cache folder with ``<version>/node_modules/sillytavern`` (set by ``.ci/run``)."""

VERSIONS = ("1.19.0", "1.12.14")
"""Pinned: the newest release, and the oldest that has the chat integrity check."""

START_TIMEOUT = 420.0
"""Seconds a server may take to answer (1.19 compiles its frontend libraries first: ~40 s
alone, several minutes on a busy 2-core machine)."""

STOP_TIMEOUT = 20.0
"""Seconds a server has to exit after SIGTERM before it is killed."""

# Things that phone home or need what a test machine lacks, off; the rest is ST's default.
ENVIRONMENT = {
    "SILLYTAVERN_SKIPCONTENTCHECK": "false",  # the default content is what a new user gets
    "SILLYTAVERN_ENABLEDOWNLOADABLETOKENIZERS": "false",  # no tokenizer downloads
    "SILLYTAVERN_EXTENSIONS_MODELS_AUTODOWNLOAD": "false",  # no transformers.js model downloads
    "SILLYTAVERN_WHITELISTMODE": "true",  # loopback only (the default whitelist)
    "SILLYTAVERN_BROWSERLAUNCH_ENABLED": "false",
    "SILLYTAVERN_AUTORUN": "false",
}


def cache_dir() -> Path | None:
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def server_dir(cache: Path, version: str) -> Path:
    """``<cache>/<version>/sillytavern`` (unpacked from npm, its dependencies installed inside:
    the layout of a git checkout, which ST 1.12's file-URL fetch guard needs)."""
    return cache / version / "sillytavern"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (a killed pytest must not
    leave ST servers behind; they run in their own session, out of its process group)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class STServer:
    """One SillyTavern server process over its own data root."""

    version: str
    folder: Path  # node_modules/sillytavern
    data_root: Path
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0  # seconds from spawn to the first answer
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def user_dir(self) -> Path:
        return self.data_root / "default-user"

    def start(self) -> None:
        """Spawn the server (call :meth:`wait_ready` next)."""
        # 1.12 writes its cookie secret into the data root without creating the folder.
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {**os.environ, **ENVIRONMENT, **self.extra_env}
        args = ["node", "server.js", "--dataRoot", str(self.data_root)]
        args += ["--listen", "false", "--port", str(self.port)]
        if self.version.startswith("1.12."):
            args += ["--autorun", "false"]
        else:
            args += ["--browserLaunchEnabled", "false"]
            args += ["--configPath", str(self.data_root.parent / f"config-{self.version}.yaml")]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self._started = time.monotonic()
        self.process = subprocess.Popen(
            args,
            cwd=self.folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends node's children too
            preexec_fn=_die_with_parent,  # only prctl before exec (thread-safe enough)
        )
        log.close()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until ``/`` answers 200; raises with the log's tail when it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"SillyTavern {self.version} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/", timeout=5) as answer:  # noqa: S310
                    if answer.status == 200:
                        self.started_in = time.monotonic() - self._started
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"SillyTavern {self.version} did not answer within {timeout:.0f} s:\n"
                    + self.log_tail()
                )
            time.sleep(0.5)  # polling a process we do not control: nothing to wait on

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if not line.startswith("Content file")]
        return "\n".join(kept[-lines:])
