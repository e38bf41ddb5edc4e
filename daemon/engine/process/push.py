"""Push messages to the user's phone when pictures wait for a decision (Apprise: ntfy, Telegram,
Discord, Pushover, email, …; ``[notify] urls``).

Jobs that become pending (or failed, with ``notify.failed``) are collected; one message goes out
per batch, ``notify.batch_seconds`` after the first job of it, never in ``notify.quiet_hours``
(held until they end, then sent as one). A job the user already acted on before its message left
is not mentioned. Each message names the jobs and links to each in the inbox (``/jobs/<id>``).

The Apprise URLs hold tokens, so they follow the API keys' rules: registered as secrets for the
log, never put in a message or an error, and Apprise's own logging (which prints request headers
at debug level) is silenced; a failure is logged as "n of m services" only.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from daemon.config import Config, NotifySettings
from daemon.engine.store import Job, JobState
from daemon.logs import register_secret
from daemon.tavern import layout

__all__ = ["Pusher", "QuietHours", "Waiting", "apprise_send", "push_link"]

log = structlog.get_logger("st_imagegen.push")

SEND_TIMEOUT = 60.0
"""At most this long for one message to every service (Apprise's own timeouts are shorter)."""
MAX_LISTED = 8
"""Jobs named one by one in a message; the rest are counted."""

Sender = Callable[[Sequence[str], str, str], bool]
"""``(urls, title, body) -> every service took it`` (blocking)."""


def local_now() -> datetime:
    return datetime.now().astimezone()


@dataclass(frozen=True, slots=True)
class Waiting:
    """One job in a batch, as the message tells it."""

    job_id: str
    speaker: str
    mesid: int
    chat: str
    images: int
    failed: bool
    error: str


class QuietHours:
    """``"22:00-07:00"`` (local time; may span midnight); empty: never quiet."""

    def __init__(self, text: str) -> None:
        found = re.match(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$", text or "")
        self.span: tuple[int, int] | None = None
        if found:
            h1, m1, h2, m2 = (int(g) for g in found.groups())
            self.span = (h1 * 60 + m1, h2 * 60 + m2)

    def quiet(self, now: datetime) -> bool:
        if self.span is None or self.span[0] == self.span[1]:
            return False
        start, end = self.span
        minute = now.hour * 60 + now.minute
        return start <= minute < end if start < end else minute >= start or minute < end

    def end_after(self, now: datetime) -> datetime:
        """When the quiet time ``now`` is in ends (``now`` when it is not quiet)."""
        if self.span is None or not self.quiet(now):
            return now
        end = now.replace(hour=self.span[1] // 60, minute=self.span[1] % 60, second=0)
        end = end.replace(microsecond=0)
        return end if end > now else end + timedelta(days=1)


def push_link(config: Config) -> str:
    """The inbox's address for links in messages: ``notify.link_url``, else the web's own."""
    if config.notify.link_url:
        return config.notify.link_url
    host = config.web.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard bind: the machine itself
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.web.port}"


def secret_parts(url: str) -> list[str]:
    """The URL and the pieces of it that may be a token (for the log's redaction)."""
    rest = url.split("://", 1)[-1]
    parts = [url, rest, *re.split(r"[/:@?&=#]", rest)]
    return [p for p in parts if len(p) >= 8]


def apprise_send(urls: Sequence[str], title: str, body: str) -> bool:
    """Send one message to every URL with Apprise (blocking)."""
    with warnings.catch_warnings():  # its plugins import the deprecated imghdr (Python 3.11)
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        logging.getLogger("apprise").setLevel(logging.CRITICAL)  # its debug lines hold tokens
        sender = apprise.Apprise()
        known = sum(1 for url in urls if sender.add(url))
        if known < len(urls):
            log.warning(
                "notify.urls: some are not URLs Apprise knows", known=known, given=len(urls)
            )
        if not known:
            return False
        return bool(sender.notify(title=title, body=body))


class Pusher:
    """Collects the jobs worth a message and sends them in batches (see the module doc).

    ``job_changed`` is a job listener (the engine's); :meth:`run` sends until cancelled.
    """

    def __init__(
        self,
        settings: NotifySettings,
        link_base: str,
        root: Path | None,
        *,
        clock: Callable[[], datetime] = local_now,
        send: Sender = apprise_send,
    ) -> None:
        self.settings = settings
        self.urls = [u.get_secret_value() for u in settings.urls if u.get_secret_value()]
        for url in self.urls:
            for part in secret_parts(url):
                register_secret(part)
        self.link_base = link_base.rstrip("/")
        self.root = root
        self.clock = clock
        self.send = send
        self.quiet = QuietHours(settings.quiet_hours)
        self._batch: dict[str, Waiting] = {}
        self._first: datetime | None = None
        self._changed = anyio.Event()
        self.sent = 0

    def job_changed(self, job: Job, previous: JobState | None) -> None:
        if job.state is previous:
            return
        failed = job.state is JobState.FAILED
        if job.state is JobState.PENDING or (failed and self.settings.failed):
            self._batch[job.id] = Waiting(
                job.id,
                job.speaker or job.character,
                job.message_index,
                job.chat,
                len(job.images),
                failed,
                job.last_error or "",
            )
            if self._first is None:
                self._first = self.clock()
        elif job.id in self._batch:
            del self._batch[job.id]  # acted on already: nothing to tell
            if not self._batch:
                self._first = None
        self._changed.set()

    def due_at(self) -> datetime | None:
        """When the batch goes out (after the batch time, outside quiet hours); None: empty."""
        if self._first is None or not self._batch:
            return None
        due = self._first + timedelta(seconds=self.settings.batch_seconds)
        at = max(due, self.clock())
        return self.quiet.end_after(at) if self.quiet.quiet(at) else due

    async def flush(self) -> bool:
        """Send the batch if it is due now; True if a message went out."""
        due = self.due_at()
        now = self.clock()
        if due is None or now < due or self.quiet.quiet(now):
            return False
        items = list(self._batch.values())
        self._batch.clear()
        self._first = None
        title, body = await anyio.to_thread.run_sync(self.compose, items)
        with anyio.move_on_after(SEND_TIMEOUT):
            ok = await anyio.to_thread.run_sync(
                self.send, self.urls, title, body, abandon_on_cancel=True
            )
            self.sent += 1
            if ok:
                log.info("push sent", jobs=len(items), services=len(self.urls))
            else:
                log.warning("push not taken by every service", jobs=len(items))
            return True
        log.warning("push timed out", jobs=len(items), after=SEND_TIMEOUT)
        return False

    def compose(self, items: Sequence[Waiting]) -> tuple[str, str]:
        """The message: a title and one line per job with its link (blocking: group names)."""
        ready = [w for w in items if not w.failed]
        failed = [w for w in items if w.failed]
        pictures = sum(w.images for w in ready)
        if len(items) == 1:
            one = items[0]
            title = (
                f"{one.speaker}'s #{one.mesid} failed"
                if one.failed
                else f"{one.images} picture{'s' if one.images != 1 else ''} for "
                f"{one.speaker}'s #{one.mesid}"
            )
        else:
            words = []
            if ready:
                words.append(f"{pictures} pictures wait in {len(ready)} jobs")
            if failed:
                words.append(f"{len(failed)} failed")
            title = "; ".join(words)
        lines = []
        for w in items[:MAX_LISTED]:
            where = layout.chat_title(self.root, w.chat)
            what = f"failed: {w.error[:120]}" if w.failed else f"{w.images} to choose from"
            lines.append(
                f"{w.speaker} #{w.mesid} ({where}): {what}\n{self.link_base}/jobs/{w.job_id}"
            )
        if len(items) > MAX_LISTED:
            lines.append(f"and {len(items) - MAX_LISTED} more: {self.link_base}/")
        return title, "\n".join(lines)

    async def run(self) -> None:
        """Send each batch when it is due, until cancelled."""
        if not self.urls:
            return
        while True:
            due = self.due_at()
            wait = 3600.0 if due is None else max(0.0, (due - self.clock()).total_seconds())
            with anyio.move_on_after(wait):
                await self._changed.wait()
            self._changed = anyio.Event()
            try:
                await self.flush()
            except Exception:  # a push problem never stops the daemon
                log.exception("push failed")
