"""systemd's notify protocol, by hand, and the heartbeat file.

The protocol is one datagram per message on the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means the Linux abstract namespace). No libsystemd is needed. The environment is
read by :mod:`daemon.config` (:func:`daemon.config.systemd_env`); this module gets the values.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.engine.process.heartbeat import read_heartbeat

__all__ = ["Heartbeat", "Notifier", "read_heartbeat"]

log = structlog.get_logger("st_imagegen.notify")


@dataclass(frozen=True, slots=True)
class Notifier:
    """Sends READY/STOPPING/WATCHDOG/STATUS to systemd; a no-op without a socket.

    ``watchdog_usec`` is ``$WATCHDOG_USEC`` (0 when systemd does not watch us); the main loop
    pings at half of it.
    """

    socket_path: str = ""
    watchdog_usec: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.socket_path)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings, or ``None`` when no watchdog is configured."""
        if not self.enabled or self.watchdog_usec <= 0:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value``) in one datagram; never raises (logs instead)."""
        if not self.socket_path:
            return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(payload)
        except OSError as exc:
            log.warning("systemd notify failed", socket=self.socket_path, error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        fields = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            fields.append(f"STATUS={_one_line(status)}")
        return self.send(*fields)

    def stopping(self, status: str = "draining") -> bool:
        return self.send("STOPPING=1", f"STATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Heartbeat:
    """The file ``state_dir/heartbeat``: JSON ``{pid, time, watching, version, state}``.

    Written atomically (temp + rename) so a reader never sees half of it, whenever what it says
    changes. A beat that changes nothing else only sets the file's modification time: one
    system call, where a rewrite creates a file and frees the old one (on a disk mounted with
    ``discard`` that free waits for the device, in the event loop). ``status`` and the Docker
    health check judge liveness by the newer of ``time`` and that modification time (the
    record says ``"touched": true``).
    """

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self._written: dict[str, object] | None = None  # the record on disk, but its time

    def write(self, *, watching: int, state: str = "running", **extra: object) -> None:
        record: dict[str, object] = {
            "pid": os.getpid(),
            "watching": watching,
            "version": self.version,
            "state": state,
            **extra,
        }
        if record == self._written:
            try:
                os.utime(self.path)
                return
            except OSError:
                pass  # removed or unwritable: write it whole
        self._written = None
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            # "touched": this file's modification time is a beat too (for the readers).
            full = {**record, "time": time.time(), "touched": True}
            tmp.write_text(json.dumps(full), encoding="utf-8")
            tmp.replace(self.path)
            self._written = record
        except OSError as exc:
            log.warning("heartbeat not written", path=str(self.path), error=str(exc))
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        self._written = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("heartbeat not removed", path=str(self.path), error=str(exc))
